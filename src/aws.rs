//! AWS SDK configuration shared by every binary.
//!
//! There is one storage code path: the DynamoDB API through the AWS SDK. The
//! endpoint decides where it goes: AWS by default, or any DynamoDB-compatible
//! endpoint (the embedded store, moto) through `AWS_ENDPOINT_URL` or
//! `--endpoint-url`. Nothing else in the code knows which.

use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig, retry::RetryConfig, timeout::TimeoutConfig};

/// Where the AWS clients connect, from flags and the environment.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct AwsArgs {
    /// Endpoint for every AWS service, for a local store or an emulator. The
    /// SDK's own `AWS_ENDPOINT_URL` works too.
    #[arg(long = "endpoint-url", env = "DYNABRIDGE_ENDPOINT_URL")]
    pub endpoint_url: Option<String>,
    /// AWS region; falls back to the SDK's chain (`AWS_REGION`, profile), then
    /// to us-east-1.
    #[arg(long, env = "AWS_REGION")]
    pub region: Option<String>,
}

/// Fixed credentials, for embedding the services beside a local store.
#[derive(Clone, Debug)]
pub struct StaticCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl StaticCredentials {
    /// Credentials a local store accepts; they grant nothing on AWS.
    pub fn local() -> Self {
        Self {
            access_key_id: "dynabridge-local".into(),
            secret_access_key: "dynabridge-local".into(),
        }
    }
}

/// Loads the SDK configuration: the standard chain (environment, profile,
/// web identity for IRSA, instance metadata), with our timeouts and retries.
pub async fn load_sdk_config(args: &AwsArgs, credentials: Option<StaticCredentials>) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::standard().with_max_attempts(3))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(2))
                .operation_attempt_timeout(Duration::from_secs(5))
                .operation_timeout(Duration::from_secs(15))
                .build(),
        );
    if let Some(endpoint) = &args.endpoint_url {
        loader = loader.endpoint_url(endpoint);
    }
    if let Some(region) = &args.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(creds) = credentials {
        loader = loader.credentials_provider(aws_credential_types::Credentials::from_keys(
            creds.access_key_id,
            creds.secret_access_key,
            None,
        ));
    }
    let config = loader.load().await;
    if config.region().is_some() {
        return config;
    }
    config
        .into_builder()
        .region(Region::from_static("us-east-1"))
        .build()
}
