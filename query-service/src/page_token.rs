//! The order listings' page tokens: the runtime's signed tokens
//! ([`dynabridge_runtime::page_token`]), resuming after a key of one of the
//! order indexes.

use dynabridge_runtime::page_token::Listing;
pub use dynabridge_runtime::page_token::{PageTokenError, PageTokens};

use crate::reader::{OrderListing, PageKey, ProductListing};

impl Listing for OrderListing {
    type Key = PageKey;

    fn fingerprint(&self) -> String {
        OrderListing::fingerprint(self)
    }

    fn accepts(&self, key: &PageKey) -> bool {
        OrderListing::accepts(self, key)
    }
}

impl Listing for ProductListing {
    type Key = PageKey;

    fn fingerprint(&self) -> String {
        ProductListing::fingerprint(self)
    }

    fn accepts(&self, key: &PageKey) -> bool {
        ProductListing::accepts(self, key)
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
        let token = tokens().issue(&listing, &key);
        assert_eq!(tokens().open(&listing, &token), Ok(key));
    }

    #[test]
    fn a_token_of_another_user_is_refused() {
        let user = UserId::new_random();
        let token = tokens().issue(&OrderListing::ByUser(user), &key_for(user));
        let other = OrderListing::ByUser(UserId::new_random());
        assert_eq!(
            tokens().open(&other, &token),
            Err(PageTokenError::OtherQuery)
        );
    }

    #[test]
    fn a_token_of_another_method_is_refused() {
        let user = UserId::new_random();
        let token = tokens().issue(&OrderListing::ByUser(user), &key_for(user));
        let other = OrderListing::ByStatus(OrderStatus::Created);
        assert_eq!(
            tokens().open(&other, &token),
            Err(PageTokenError::OtherQuery)
        );
    }

    #[test]
    fn a_signed_key_outside_the_listing_is_refused() {
        // Signed by us with the right fingerprint, but a key for another
        // partition: only a bug could issue it, and it must not leak rows.
        let user = UserId::new_random();
        let listing = OrderListing::ByUser(user);
        let token = tokens().issue(&listing, &key_for(UserId::new_random()));
        assert_eq!(
            tokens().open(&listing, &token),
            Err(PageTokenError::OtherQuery)
        );
    }
}
