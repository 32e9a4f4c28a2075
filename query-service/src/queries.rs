//! What each query does, over the read models: reading your own writes with
//! `min_version`, and paging with signed tokens. Knows nothing of gRPC.

use std::future::Future;
use std::time::Duration;

use dynabridge::pb::ErrorReason as Reason;
use dynabridge_domain::Version;
use dynabridge_read_models::{OrderSummaryRow, ProductRow, PurchaseRow, UserProfileRow};
use dynabridge_runtime::error::AppError;
use tokio::time::Instant;

use crate::page_token::PageTokens;
use crate::reader::ReadModelReader;
use crate::request::{
    Freshness, GetOrder, GetProduct, GetPurchase, GetUserByEmail, GetUserProfile, ListOrders,
    ListProducts,
};

/// The first pause between two reads of a row that is behind; it doubles up
/// to [`MAX_POLL_DELAY`].
const FIRST_POLL_DELAY: Duration = Duration::from_millis(5);
const MAX_POLL_DELAY: Duration = Duration::from_millis(50);

/// The most a wait stops short of the call's deadline.
const MAX_DEADLINE_MARGIN: Duration = Duration::from_millis(100);

/// One page of orders, and the token of the next (empty on the last page).
#[derive(Debug)]
pub struct OrdersPage {
    pub rows: Vec<OrderSummaryRow>,
    pub next_page_token: String,
}

/// One page of products, and the token of the next (empty on the last
/// page).
#[derive(Debug)]
pub struct ProductsPage {
    pub rows: Vec<ProductRow>,
    pub next_page_token: String,
}

/// The queries of the read side.
#[derive(Clone, Debug)]
pub struct Queries {
    read_models: ReadModelReader,
    tokens: PageTokens,
    /// The longest a `min_version` read waits, whatever the call's deadline.
    max_wait: Duration,
}

impl Queries {
    pub fn new(read_models: ReadModelReader, tokens: PageTokens, max_wait: Duration) -> Self {
        Self {
            read_models,
            tokens,
            max_wait,
        }
    }

    /// `call_deadline` is when the client stops waiting, if it said.
    pub async fn user_profile(
        &self,
        query: GetUserProfile,
        call_deadline: Option<Instant>,
    ) -> Result<UserProfileRow, AppError> {
        let GetUserProfile { user_id, freshness } = query;
        let what = format!("user {user_id}");
        let read = || self.read_models.user_profile(user_id);
        match freshness {
            Freshness::Latest => read()
                .await?
                .ok_or_else(|| not_found("user", &user_id.to_string())),
            Freshness::AtLeast(awaited) => {
                let until = self.wait_until(call_deadline);
                wait_for_version(&what, awaited, until, |row| row.version, read).await
            }
        }
    }

    pub async fn user_by_email(&self, query: GetUserByEmail) -> Result<UserProfileRow, AppError> {
        let GetUserByEmail { email } = query;
        self.read_models
            .user_by_email(&email)
            .await?
            .ok_or_else(|| {
                AppError::refused(
                    Reason::AggregateNotFound,
                    format!("user with email {email} not found"),
                )
                .with("aggregate_type", "user")
            })
    }

    /// `call_deadline` is when the client stops waiting, if it said.
    pub async fn order(
        &self,
        query: GetOrder,
        call_deadline: Option<Instant>,
    ) -> Result<OrderSummaryRow, AppError> {
        let GetOrder {
            order_id,
            freshness,
        } = query;
        let what = format!("order {order_id}");
        let read = || self.read_models.order(order_id);
        match freshness {
            Freshness::Latest => read()
                .await?
                .ok_or_else(|| not_found("order", &order_id.to_string())),
            Freshness::AtLeast(awaited) => {
                let until = self.wait_until(call_deadline);
                wait_for_version(&what, awaited, until, |row| row.version, read).await
            }
        }
    }

    pub async fn orders(&self, query: ListOrders) -> Result<OrdersPage, AppError> {
        let ListOrders {
            listing,
            page_size,
            page_token,
        } = query;
        let start = if page_token.is_empty() {
            None
        } else {
            Some(
                self.tokens
                    .open(&listing, &page_token)
                    .map_err(|e| AppError::Invalid(e.into()))?,
            )
        };
        let page = self
            .read_models
            .orders(&listing, page_size.get(), start)
            .await?;
        Ok(OrdersPage {
            rows: page.rows,
            next_page_token: page
                .next
                .map(|key| self.tokens.issue(&listing, &key))
                .unwrap_or_default(),
        })
    }

    /// `call_deadline` is when the client stops waiting, if it said.
    pub async fn product(
        &self,
        query: GetProduct,
        call_deadline: Option<Instant>,
    ) -> Result<ProductRow, AppError> {
        let product_id = query.product_id();
        let GetProduct { sku, freshness } = query;
        let what = format!("product {}", sku.as_str());
        let read = || self.read_models.product(product_id);
        match freshness {
            Freshness::Latest => read()
                .await?
                .ok_or_else(|| not_found("product", sku.as_str())),
            Freshness::AtLeast(awaited) => {
                let until = self.wait_until(call_deadline);
                wait_for_version(&what, awaited, until, |row| row.version, read).await
            }
        }
    }

    /// A purchase, at `min_version` or later when asked; with
    /// `wait_for_outcome`, once decided or when the wait runs out, as it is
    /// then.
    pub async fn purchase(
        &self,
        query: GetPurchase,
        call_deadline: Option<Instant>,
    ) -> Result<PurchaseRow, AppError> {
        let GetPurchase {
            purchase_id,
            freshness,
            wait_for_outcome,
        } = query;
        let what = format!("purchase {purchase_id}");
        let read = || self.read_models.purchase(purchase_id);
        let until = self.wait_until(call_deadline);
        // Waiting for the outcome waits for the purchase to show first: a
        // client asks right after PurchaseProducts, before the projector
        // may have written its row.
        let freshness = match freshness {
            Freshness::Latest if wait_for_outcome => Freshness::AtLeast(1),
            other => other,
        };
        let row = match freshness {
            Freshness::Latest => read()
                .await?
                .ok_or_else(|| not_found("purchase", &purchase_id.to_string()))?,
            Freshness::AtLeast(awaited) => {
                wait_for_version(&what, awaited, until, |row| row.version, read).await?
            }
        };
        if !wait_for_outcome || row.is_decided() {
            return Ok(row);
        }
        // At least version 1 by now: wait for any later one that decides.
        let decided = wait_for_version(
            &what,
            row.version + 1,
            until,
            |r: &PurchaseRow| r.version,
            || async { Ok(read().await?.filter(PurchaseRow::is_decided)) },
        )
        .await;
        match decided {
            Ok(row) => Ok(row),
            Err(err) if err.reason() == Some(Reason::NotYetVisible) => Ok(row),
            Err(err) => Err(err),
        }
    }

    pub async fn products(&self, query: ListProducts) -> Result<ProductsPage, AppError> {
        let ListProducts {
            listing,
            page_size,
            page_token,
        } = query;
        let start = if page_token.is_empty() {
            None
        } else {
            Some(
                self.tokens
                    .open(&listing, &page_token)
                    .map_err(|e| AppError::Invalid(e.into()))?,
            )
        };
        let page = self
            .read_models
            .products(listing, page_size.get(), start)
            .await?;
        Ok(ProductsPage {
            rows: page.rows,
            next_page_token: page
                .next
                .map(|key| self.tokens.issue(&listing, &key))
                .unwrap_or_default(),
        })
    }

    fn wait_until(&self, call_deadline: Option<Instant>) -> Instant {
        let now = Instant::now();
        now + wait_budget(
            self.max_wait,
            call_deadline.map(|d| d.saturating_duration_since(now)),
        )
    }
}

fn not_found(kind: &'static str, id: &str) -> AppError {
    AppError::refused(Reason::AggregateNotFound, format!("{kind} {id} not found"))
        .with("aggregate_type", kind)
        .with("aggregate_id", id)
}

/// How long a `min_version` read may wait: the server's cap, or less when
/// the call's deadline comes first. It stops a little short of that
/// deadline, because a client whose own timer fires first sees a bare
/// CANCELLED instead of our DEADLINE_EXCEEDED with the versions in it.
fn wait_budget(max_wait: Duration, call_remaining: Option<Duration>) -> Duration {
    match call_remaining {
        None => max_wait,
        Some(remaining) => {
            let margin = (remaining / 10).min(MAX_DEADLINE_MARGIN);
            max_wait.min(remaining.saturating_sub(margin))
        }
    }
}

/// Reads a row until it has reached version `awaited`, or `until` passes.
/// The projector usually catches up within milliseconds, so polls start
/// close together and back off. A missing row counts as version 0.
async fn wait_for_version<R, F, Fut>(
    what: &str,
    awaited: Version,
    until: Instant,
    version_of: impl Fn(&R) -> Version,
    mut read: F,
) -> Result<R, AppError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<R>, AppError>>,
{
    let mut seen: Version = 0;
    let mut delay = FIRST_POLL_DELAY;
    loop {
        // A read still running when the wait runs out is abandoned: the cap
        // holds even when the store is slow.
        let Ok(row) = tokio::time::timeout_at(until, read()).await else {
            break;
        };
        if let Some(row) = row? {
            seen = version_of(&row);
            if seen >= awaited {
                return Ok(row);
            }
        }
        let now = Instant::now();
        if now >= until {
            break;
        }
        tracing::debug!(seen, awaited, "read model behind, waiting");
        tokio::time::sleep(delay.min(until - now)).await;
        delay = (delay * 2).min(MAX_POLL_DELAY);
    }
    tracing::info!(seen, awaited, "read model did not catch up in time");
    Err(AppError::refused(
        Reason::NotYetVisible,
        format!(
            "{what} is at version {seen}, not yet at version {awaited}; the read model is behind, retry later"
        ),
    )
    .with("current_version", seen)
    .with("min_version", awaited))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[test]
    fn budget_is_the_cap_without_a_deadline() {
        assert_eq!(
            wait_budget(Duration::from_secs(5), None),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn budget_stops_short_of_the_call_deadline() {
        let cap = Duration::from_secs(5);
        assert_eq!(
            wait_budget(cap, Some(Duration::from_millis(500))),
            Duration::from_millis(450)
        );
        assert_eq!(
            wait_budget(cap, Some(Duration::from_secs(3))),
            Duration::from_millis(2900)
        );
        assert_eq!(wait_budget(cap, Some(Duration::from_secs(60))), cap);
        assert_eq!(wait_budget(cap, Some(Duration::ZERO)), Duration::ZERO);
    }

    /// A read that yields the versions of `script` in turn, then the last
    /// one forever, and records when it was called.
    fn scripted(
        script: Vec<Option<Version>>,
        calls: &RefCell<Vec<Duration>>,
        start: Instant,
    ) -> impl FnMut() -> std::future::Ready<Result<Option<Version>, AppError>> + '_ {
        let mut i = 0;
        move || {
            calls.borrow_mut().push(start.elapsed());
            let v = script[i.min(script.len() - 1)];
            i += 1;
            std::future::ready(Ok(v))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn waits_with_backoff_until_the_version_arrives() {
        let calls = RefCell::new(Vec::new());
        let start = Instant::now();
        let read = scripted(vec![None, Some(1), Some(1), Some(2)], &calls, start);
        let got = wait_for_version("user u", 2, start + Duration::from_secs(5), |v| *v, read).await;
        assert_eq!(got.unwrap(), 2);
        let ms: Vec<u128> = calls.borrow().iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [0, 5, 15, 35]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_current_row_is_returned_at_once() {
        let calls = RefCell::new(Vec::new());
        let start = Instant::now();
        let read = scripted(vec![Some(7)], &calls, start);
        let got =
            wait_for_version("order o", 3, start + Duration::from_secs(5), |v| *v, read).await;
        assert_eq!(got.unwrap(), 7);
        assert_eq!(calls.borrow().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_at_the_deadline_saying_what_it_saw() {
        let calls = RefCell::new(Vec::new());
        let start = Instant::now();
        let read = scripted(vec![Some(1)], &calls, start);
        let until = start + Duration::from_millis(200);
        let err = wait_for_version("user u", 4, until, |v| *v, read)
            .await
            .unwrap_err();
        let AppError::Refused(refusal) = err else {
            panic!("expected a refusal, got {err:?}");
        };
        assert_eq!(refusal.reason, Reason::NotYetVisible);
        assert_eq!(refusal.get("current_version"), Some("1"));
        assert_eq!(refusal.get("min_version"), Some("4"));
        let message = refusal.message;
        assert!(message.contains("at version 1"), "{message}");
        assert!(message.contains("version 4"), "{message}");
        assert_eq!(start.elapsed(), Duration::from_millis(200));
        let ms: Vec<u128> = calls.borrow().iter().map(Duration::as_millis).collect();
        // Delays 5, 10, 20, 40, then 50 at most, the last cut to the deadline.
        assert_eq!(ms, [0, 5, 15, 35, 75, 125, 175, 200]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_missing_row_counts_as_version_0() {
        let calls = RefCell::new(Vec::new());
        let start = Instant::now();
        let read = scripted(vec![None], &calls, start);
        let err = wait_for_version(
            "order o",
            1,
            start + Duration::from_millis(30),
            |v| *v,
            read,
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("at version 0"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn store_errors_end_the_wait() {
        let start = Instant::now();
        let read = || {
            std::future::ready(Err::<Option<Version>, _>(AppError::Unavailable(
                "down".into(),
            )))
        };
        let err = wait_for_version("user u", 1, start + Duration::from_secs(5), |v| *v, read)
            .await
            .unwrap_err();
        assert!(matches!(err, AppError::Unavailable(_)), "{err:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_read_does_not_outlast_the_wait() {
        let start = Instant::now();
        let read = || std::future::pending::<Result<Option<Version>, AppError>>();
        let err = wait_for_version("user u", 1, start + Duration::from_millis(80), |v| *v, read)
            .await
            .unwrap_err();
        assert_eq!(err.reason(), Some(Reason::NotYetVisible), "{err:?}");
        assert_eq!(start.elapsed(), Duration::from_millis(80));
    }
}
