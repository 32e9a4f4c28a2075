//! Page tokens: opaque to clients, signed by the server.
//!
//! A token is `base64url(payload) "." base64url(tag)`, where the payload is
//! JSON holding where the next page starts and the fingerprint of the query
//! that issued it, and the tag is HMAC-SHA256 over the encoded payload. The
//! signature keeps clients from steering a query to keys of their choice
//! (another user's orders, say); the fingerprint keeps a token of one query
//! from being replayed on another.
//!
//! What a page resumes after is the query's own [`Listing::Key`]; the query
//! service's order listings and the admin service's history and event
//! listings each have theirs.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use dynabridge_domain::ValidationError;
use hmac::{Hmac, Mac};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Bumped when the payload changes shape; older tokens are then refused as
/// malformed, which clients handle by starting over.
const PAYLOAD_VERSION: u32 = 1;

/// The shortest secret accepted: the output size of SHA-256.
pub const MIN_SECRET_LEN: usize = 32;

/// A paged query: what names it, and where its pages resume.
pub trait Listing {
    /// Where a page resumes.
    type Key: Serialize + DeserializeOwned;

    /// Names the query (method and arguments), so that a token is only
    /// accepted by the query that issued it.
    fn fingerprint(&self) -> String;

    /// Whether `key` can be where a page of this query resumes. A key that
    /// only a bug could have signed must not leak rows of another query.
    fn accepts(&self, key: &Self::Key) -> bool;
}

/// Why a page token was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PageTokenError {
    #[error("is not a page token")]
    Malformed,
    #[error("was altered, or was issued by another deployment")]
    BadSignature,
    #[error("was issued for another query")]
    OtherQuery,
}

impl From<PageTokenError> for ValidationError {
    fn from(err: PageTokenError) -> Self {
        ValidationError::single("page_token", err.to_string())
    }
}

/// The signing key could not be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid page token key: {0}")]
pub struct KeyError(#[from] hmac::digest::InvalidLength);

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Payload<K> {
    v: u32,
    /// [`Listing::fingerprint`] of the query that issued the token.
    q: String,
    /// Where the next page starts.
    k: K,
}

/// A request's `page_size`: `0` means `default`; otherwise 1 to `max`.
pub fn page_size(raw: i32, default: usize, max: usize) -> Result<usize, ValidationError> {
    match usize::try_from(raw) {
        Ok(0) => Ok(default),
        Ok(n) if n <= max => Ok(n),
        _ => Err(ValidationError::single(
            "page_size",
            format!("must be between 1 and {max} (0 means {default})"),
        )),
    }
}

/// The page token flag every binary with paged calls shares.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct PageTokenArgs {
    /// Key that signs page tokens, at least 32 bytes. Replicas behind one
    /// load balancer need the same key; without one, a random key is made at
    /// start-up and tokens do not survive a restart.
    #[arg(long, env = "DYNABRIDGE_PAGE_TOKEN_SECRET", hide_env_values = true)]
    pub page_token_secret: Option<String>,
}

impl PageTokenArgs {
    pub fn validate(&self) -> Result<(), String> {
        match &self.page_token_secret {
            Some(secret) if secret.len() < MIN_SECRET_LEN => Err(format!(
                "the page token secret must be at least {MIN_SECRET_LEN} bytes"
            )),
            _ => Ok(()),
        }
    }

    /// The tokens of the configured key, or of a random one (with a
    /// warning).
    pub fn tokens(&self) -> Result<PageTokens, KeyError> {
        match &self.page_token_secret {
            Some(secret) => PageTokens::new(secret.as_bytes()),
            None => {
                tracing::warn!(
                    "no page token secret configured: using a random key, so page tokens \
                     will not survive a restart nor work across replicas"
                );
                PageTokens::random()
            }
        }
    }
}

/// Issues and opens page tokens with one key.
#[derive(Clone)]
pub struct PageTokens {
    /// Keyed once; cloned per token, which is cheaper than keying again.
    mac: HmacSha256,
}

impl std::fmt::Debug for PageTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs.
        f.debug_struct("PageTokens").finish_non_exhaustive()
    }
}

impl PageTokens {
    pub fn new(secret: &[u8]) -> Result<Self, KeyError> {
        Ok(Self {
            mac: <HmacSha256 as Mac>::new_from_slice(secret)?,
        })
    }

    /// With a random key: tokens are valid only on this process, until it
    /// stops.
    pub fn random() -> Result<Self, KeyError> {
        Self::new(&rand::random::<[u8; 32]>())
    }

    /// A token for the page of `listing` that starts after `key`.
    pub fn issue<L: Listing>(&self, listing: &L, key: &L::Key) -> String {
        let payload = Payload {
            v: PAYLOAD_VERSION,
            q: listing.fingerprint(),
            k: key,
        };
        // Keys are plain data: strings, numbers and maps with string keys,
        // which always serialise.
        let json = serde_json::to_vec(&payload).unwrap_or_default();
        let encoded = URL_SAFE_NO_PAD.encode(json);
        let tag = self.mac.clone().chain_update(encoded.as_bytes()).finalize();
        format!("{encoded}.{}", URL_SAFE_NO_PAD.encode(tag.into_bytes()))
    }

    /// The key a token of `listing` resumes after.
    pub fn open<L: Listing>(&self, listing: &L, token: &str) -> Result<L::Key, PageTokenError> {
        let (encoded, tag) = token.split_once('.').ok_or(PageTokenError::Malformed)?;
        // The decoder refuses non-canonical trailing bits, so no two
        // spellings of one tag are accepted.
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| PageTokenError::Malformed)?;
        // Nothing of the payload is looked at before its signature holds;
        // `verify_slice` compares in constant time.
        self.mac
            .clone()
            .chain_update(encoded.as_bytes())
            .verify_slice(&tag)
            .map_err(|_| PageTokenError::BadSignature)?;
        let json = URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|_| PageTokenError::Malformed)?;
        let payload: Payload<L::Key> =
            serde_json::from_slice(&json).map_err(|_| PageTokenError::Malformed)?;
        if payload.v != PAYLOAD_VERSION {
            return Err(PageTokenError::Malformed);
        }
        if payload.q != listing.fingerprint() || !listing.accepts(&payload.k) {
            return Err(PageTokenError::OtherQuery);
        }
        Ok(payload.k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listing of one partition, resuming after a (partition, position)
    /// key.
    struct Partition(&'static str);

    impl Listing for Partition {
        type Key = (String, u64);

        fn fingerprint(&self) -> String {
            format!("List/{}", self.0)
        }

        fn accepts(&self, key: &Self::Key) -> bool {
            key.0 == self.0
        }
    }

    fn key(partition: &str) -> (String, u64) {
        (partition.to_owned(), 42)
    }

    fn tokens() -> PageTokens {
        PageTokens::new(b"a test key that is long enough for hmac-sha256").unwrap()
    }

    #[test]
    fn round_trip() {
        let token = tokens().issue(&Partition("a"), &key("a"));
        assert_eq!(tokens().open(&Partition("a"), &token), Ok(key("a")));
    }

    #[test]
    fn every_single_byte_change_is_refused() {
        let token = tokens().issue(&Partition("a"), &key("a"));
        let tokens = tokens();
        let mut tried = 0;
        for i in 0..token.len() {
            // Tokens travel in proto strings, so only text can arrive.
            for b in (0x20u8..0x7f).filter(|b| *b != token.as_bytes()[i]) {
                let mut bytes = token.clone().into_bytes();
                bytes[i] = b;
                let tampered = String::from_utf8(bytes).unwrap();
                assert!(
                    tokens.open(&Partition("a"), &tampered).is_err(),
                    "byte {i} changed to {:?} was accepted",
                    b as char
                );
                tried += 1;
            }
        }
        assert!(tried > 1000);
        // Cut short or lengthened, too.
        assert!(
            tokens
                .open(&Partition("a"), &token[..token.len() - 1])
                .is_err()
        );
        assert!(tokens.open(&Partition("a"), &format!("{token}A")).is_err());
        assert!(tokens.open(&Partition("a"), "").is_err());
    }

    #[test]
    fn a_token_of_another_query_is_refused() {
        let token = tokens().issue(&Partition("a"), &key("a"));
        assert_eq!(
            tokens().open(&Partition("b"), &token),
            Err(PageTokenError::OtherQuery)
        );
    }

    #[test]
    fn a_token_signed_with_another_key_is_refused() {
        let token = PageTokens::random()
            .unwrap()
            .issue(&Partition("a"), &key("a"));
        assert_eq!(
            tokens().open(&Partition("a"), &token),
            Err(PageTokenError::BadSignature)
        );
    }

    #[test]
    fn a_signed_key_outside_the_listing_is_refused() {
        // Signed by us with the right fingerprint, but a key of another
        // partition: only a bug could issue it, and it must not leak rows.
        let token = tokens().issue(&Partition("a"), &key("b"));
        assert_eq!(
            tokens().open(&Partition("a"), &token),
            Err(PageTokenError::OtherQuery)
        );
    }

    #[test]
    fn a_key_of_another_shape_is_malformed() {
        struct Numbers;
        impl Listing for Numbers {
            type Key = Vec<u64>;
            fn fingerprint(&self) -> String {
                "List/a".into()
            }
            fn accepts(&self, _: &Self::Key) -> bool {
                true
            }
        }
        let token = tokens().issue(&Partition("a"), &key("a"));
        assert_eq!(
            tokens().open(&Numbers, &token),
            Err(PageTokenError::Malformed)
        );
    }

    #[test]
    fn short_secrets_are_refused() {
        let args = |secret: &str| PageTokenArgs {
            page_token_secret: Some(secret.to_owned()),
        };
        assert!(args("short").validate().is_err());
        args(&"k".repeat(MIN_SECRET_LEN)).validate().unwrap();
        PageTokenArgs::default().validate().unwrap();
    }

    #[test]
    fn page_sizes_default_and_are_bounded() {
        assert_eq!(page_size(0, 20, 100), Ok(20));
        assert_eq!(page_size(100, 20, 100), Ok(100));
        for bad in [-1, 101, i32::MIN] {
            let err = page_size(bad, 20, 100).unwrap_err();
            assert_eq!(err.violations[0].field, "page_size");
        }
    }

    #[test]
    fn errors_name_the_page_token_field() {
        let err = ValidationError::from(PageTokenError::Malformed);
        assert_eq!(err.violations[0].field, "page_token");
    }
}
