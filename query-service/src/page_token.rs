//! Page tokens: opaque to clients, signed by the server.
//!
//! A token is `base64url(payload) "." base64url(tag)`, where the payload is
//! JSON holding the key the next page starts after and the fingerprint of the
//! query that issued it, and the tag is HMAC-SHA256 over the encoded payload.
//! The signature keeps clients from steering a query to keys of their choice
//! (another user's orders, say); the fingerprint keeps a token of one query
//! from being replayed on another.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use dynabridge_domain::ValidationError;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::reader::{OrderListing, PageKey};

type HmacSha256 = Hmac<Sha256>;

/// Bumped when the payload changes shape; older tokens are then refused as
/// malformed, which clients handle by starting over.
const PAYLOAD_VERSION: u32 = 1;

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
struct Payload {
    v: u32,
    /// [`OrderListing::fingerprint`] of the query that issued the token.
    q: String,
    /// Where the next page starts.
    k: PageKey,
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
    pub fn issue(&self, listing: &OrderListing, key: PageKey) -> String {
        let payload = Payload {
            v: PAYLOAD_VERSION,
            q: listing.fingerprint(),
            k: key,
        };
        // A struct of strings and a map with string keys always serialises.
        let json = serde_json::to_vec(&payload).unwrap_or_default();
        let encoded = URL_SAFE_NO_PAD.encode(json);
        let tag = self.mac.clone().chain_update(encoded.as_bytes()).finalize();
        format!("{encoded}.{}", URL_SAFE_NO_PAD.encode(tag.into_bytes()))
    }

    /// The key a token of `listing` resumes after.
    pub fn open(&self, listing: &OrderListing, token: &str) -> Result<PageKey, PageTokenError> {
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
        let payload: Payload =
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
    use dynabridge::schema::{order_summaries, read_model};
    use dynabridge_domain::{OrderStatus, UserId};

    fn key_for(user: UserId) -> PageKey {
        PageKey::from([
            (
                order_summaries::ORDER_ID.to_owned(),
                uuid::Uuid::new_v4().to_string(),
            ),
            (order_summaries::USER_ID.to_owned(), user.to_string()),
            (
                read_model::CREATED_AT.to_owned(),
                "2026-01-02T03:04:05.000006Z".to_owned(),
            ),
        ])
    }

    fn tokens() -> PageTokens {
        PageTokens::new(b"a test key that is long enough for hmac-sha256").unwrap()
    }

    #[test]
    fn round_trip() {
        let user = UserId::new_random();
        let listing = OrderListing::ByUser(user);
        let key = key_for(user);
        let token = tokens().issue(&listing, key.clone());
        assert_eq!(tokens().open(&listing, &token), Ok(key));
    }

    #[test]
    fn every_single_byte_change_is_refused() {
        let user = UserId::new_random();
        let listing = OrderListing::ByUser(user);
        let token = tokens().issue(&listing, key_for(user));
        let tokens = tokens();
        let mut tried = 0;
        for i in 0..token.len() {
            // Tokens travel in proto strings, so only text can arrive.
            for b in (0x20u8..0x7f).filter(|b| *b != token.as_bytes()[i]) {
                let mut bytes = token.clone().into_bytes();
                bytes[i] = b;
                let tampered = String::from_utf8(bytes).unwrap();
                assert!(
                    tokens.open(&listing, &tampered).is_err(),
                    "byte {i} changed to {:?} was accepted",
                    b as char
                );
                tried += 1;
            }
        }
        assert!(tried > 1000);
        // Cut short or lengthened, too.
        assert!(tokens.open(&listing, &token[..token.len() - 1]).is_err());
        assert!(tokens.open(&listing, &format!("{token}A")).is_err());
        assert!(tokens.open(&listing, "").is_err());
    }

    #[test]
    fn a_token_of_another_user_is_refused() {
        let user = UserId::new_random();
        let token = tokens().issue(&OrderListing::ByUser(user), key_for(user));
        let other = OrderListing::ByUser(UserId::new_random());
        assert_eq!(
            tokens().open(&other, &token),
            Err(PageTokenError::OtherQuery)
        );
    }

    #[test]
    fn a_token_of_another_method_is_refused() {
        let user = UserId::new_random();
        let token = tokens().issue(&OrderListing::ByUser(user), key_for(user));
        let other = OrderListing::ByStatus(OrderStatus::Created);
        assert_eq!(
            tokens().open(&other, &token),
            Err(PageTokenError::OtherQuery)
        );
    }

    #[test]
    fn a_token_signed_with_another_key_is_refused() {
        let user = UserId::new_random();
        let listing = OrderListing::ByUser(user);
        let token = PageTokens::random().unwrap().issue(&listing, key_for(user));
        assert_eq!(
            tokens().open(&listing, &token),
            Err(PageTokenError::BadSignature)
        );
    }

    #[test]
    fn a_signed_key_outside_the_listing_is_refused() {
        // Signed by us with the right fingerprint, but a key for another
        // partition: only a bug could issue it, and it must not leak rows.
        let user = UserId::new_random();
        let listing = OrderListing::ByUser(user);
        let token = tokens().issue(&listing, key_for(UserId::new_random()));
        assert_eq!(
            tokens().open(&listing, &token),
            Err(PageTokenError::OtherQuery)
        );
    }

    #[test]
    fn errors_name_the_page_token_field() {
        let err = ValidationError::from(PageTokenError::Malformed);
        assert_eq!(err.violations[0].field, "page_token");
    }
}
