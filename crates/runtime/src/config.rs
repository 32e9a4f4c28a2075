//! Flags and environment shared by every binary.

use dynabridge::schema::Tables;
use dynabridge_aws::AwsArgs;

/// Where the tables are. Every binary takes these.
#[derive(Clone, Debug, clap::Args)]
pub struct StoreArgs {
    /// Prefix of every table name (`<prefix>-event-store`, ...), so that
    /// several deployments can share one account or one local store.
    #[arg(long, env = "DYNABRIDGE_TABLE_PREFIX", default_value = "dynabridge")]
    pub table_prefix: String,
    #[command(flatten)]
    pub aws: AwsArgs,
}

impl StoreArgs {
    pub fn tables(&self) -> Tables {
        Tables::new(self.table_prefix.clone())
    }

    /// Checks what can be checked before binding a port.
    pub fn validate(&self) -> Result<(), String> {
        let p = &self.table_prefix;
        if p.is_empty()
            || p.len() > 200
            || !p
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(format!(
                "table prefix {p:?} must be 1 to 200 characters of A-Z, a-z, 0-9, '-', '_' or '.'"
            ));
        }
        Ok(())
    }
}
