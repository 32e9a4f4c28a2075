//! The scenarios over gRPC, as a user's client makes them: one HTTP/2
//! connection per concurrent client, a fresh idempotency key per command.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use dynabridge::pb::command_service_client::CommandServiceClient;
use dynabridge::pb::query_service_client::QueryServiceClient;
use dynabridge::pb::{
    CreateOrderRequest, CreateUserRequest, GetOrderRequest, GetUserProfileRequest,
    ListOrdersByUserRequest, Money, OrderItem, OrderStatus, UpdateOrderStatusRequest,
};
use tonic::transport::{Channel, Endpoint};
use uuid::Uuid;

use crate::load::{self, Limits, Outcome, Step};

/// The order statuses an order moves through, one update each.
pub const STATUS_PATH: [OrderStatus; 3] = [
    OrderStatus::Processing,
    OrderStatus::Shipped,
    OrderStatus::Delivered,
];

/// One connection to a gRPC endpoint.
pub async fn connect(url: &str) -> anyhow::Result<Channel> {
    Endpoint::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .with_context(|| format!("connecting to {url}"))
}

/// `n` connections to `url`.
pub async fn connections(url: &str, n: usize) -> anyhow::Result<Arc<Vec<Channel>>> {
    let mut channels = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        channels.push(connect(url).await?);
    }
    Ok(Arc::new(channels))
}

pub fn create_user_request() -> CreateUserRequest {
    let id = Uuid::new_v4();
    CreateUserRequest {
        request_id: id.to_string(),
        correlation_id: String::new(),
        email: format!("bench-{}@example.com", id.simple()),
        name: "Bench User".to_owned(),
    }
}

/// A two-line order, the shape the seed's walkthrough uses.
pub fn create_order_request(user_id: &str) -> CreateOrderRequest {
    let money = |amount_minor: i64| Money {
        currency_code: "USD".to_owned(),
        amount_minor,
    };
    CreateOrderRequest {
        request_id: Uuid::new_v4().to_string(),
        correlation_id: String::new(),
        user_id: user_id.to_owned(),
        items: vec![
            OrderItem {
                sku: "SKU-BOOK-001".to_owned(),
                quantity: 2,
                unit_price: Some(money(1250)),
            },
            OrderItem {
                sku: "SKU-PEN-042".to_owned(),
                quantity: 1,
                unit_price: Some(money(300)),
            },
        ],
        total: None,
        shipping_address: None,
    }
}

pub fn update_order_status_request(
    order_id: &str,
    status: OrderStatus,
) -> UpdateOrderStatusRequest {
    UpdateOrderStatusRequest {
        request_id: Uuid::new_v4().to_string(),
        correlation_id: String::new(),
        order_id: order_id.to_owned(),
        expected_version: None,
        status: status.into(),
    }
}

fn status_error(status: tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

/// Creates `n` users from `concurrency` clients; their ids, in no order.
pub async fn create_users(
    command: &str,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<Vec<String>> {
    let channels = connections(command, concurrency).await?;
    load::collect("creating users", n, concurrency, move |worker, _| {
        let mut client = CommandServiceClient::new(channels[worker].clone());
        async move {
            let response = client
                .create_user(create_user_request())
                .await
                .map_err(status_error)?;
            Ok(response.into_inner().user_id)
        }
    })
    .await
}

/// Creates `per_user` orders for each of `users` from `concurrency`
/// clients; each order's id and its user's, in no order.
pub async fn create_orders(
    command: &str,
    users: &[String],
    per_user: usize,
    concurrency: usize,
) -> anyhow::Result<Vec<(String, String)>> {
    let n = users.len() * per_user;
    let channels = connections(command, concurrency).await?;
    // Workers make unequal numbers of calls: users are dealt out across
    // them, so every user gets exactly `per_user` orders.
    let users = Arc::new(Dealer::new(users.to_vec()));
    load::collect("creating orders", n, concurrency, move |worker, _| {
        let mut client = CommandServiceClient::new(channels[worker].clone());
        let user = users.next();
        async move {
            let response = client
                .create_order(create_order_request(&user))
                .await
                .map_err(status_error)?;
            Ok((response.into_inner().order_id, user))
        }
    })
    .await
}

/// Hands out its items in turn, round and round, to any number of callers.
#[derive(Debug)]
pub struct Dealer<T> {
    items: Vec<T>,
    dealt: AtomicUsize,
}

impl<T: Clone> Dealer<T> {
    /// `items` must not be empty.
    pub fn new(items: Vec<T>) -> Self {
        assert!(!items.is_empty(), "nothing to deal");
        Self {
            items,
            dealt: AtomicUsize::new(0),
        }
    }

    pub fn next(&self) -> T {
        let n = self.dealt.fetch_add(1, Ordering::Relaxed);
        self.items[n % self.items.len()].clone()
    }
}

/// Waits, up to ten minutes, until the query service shows `order_id` at
/// `version`. Each `min_version` read waits at most the server's cap, so it
/// asks again while the answer is DEADLINE_EXCEEDED.
pub async fn await_order(query: &str, order_id: &str, version: i64) -> anyhow::Result<()> {
    let client = QueryServiceClient::new(connect(query).await?);
    let deadline = Instant::now() + Duration::from_secs(600);
    ask_until_visible(deadline, || {
        let request = GetOrderRequest {
            order_id: order_id.to_owned(),
            min_version: version,
        };
        let mut client = client.clone();
        async move {
            client
                .get_order(min_version_request(request))
                .await
                .map(drop)
        }
    })
    .await
    .with_context(|| format!("waiting for order {order_id} at version {version}"))
}

/// A `min_version` read that waits at most 30 s on the server.
fn min_version_request<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(Duration::from_secs(30));
    request
}

/// Asks `ask` (a `min_version` read) again while it answers
/// DEADLINE_EXCEEDED, until `deadline`.
async fn ask_until_visible<Ask, Fut>(deadline: Instant, mut ask: Ask) -> anyhow::Result<()>
where
    Ask: FnMut() -> Fut,
    Fut: Future<Output = Result<(), tonic::Status>>,
{
    loop {
        match ask().await {
            Ok(()) => return Ok(()),
            Err(status)
                if status.code() == tonic::Code::DeadlineExceeded && Instant::now() < deadline => {}
            Err(status) => return Err(anyhow::anyhow!(status_error(status))),
        }
    }
}

/// Waits, up to ten minutes, until the query service has the profile of
/// every one of `users` and lists at least `orders` orders for each (their
/// first page, of that size). The projector writes the rows of a page
/// concurrently, so one row being visible does not make the others of its
/// page visible.
pub async fn await_read_models(query: &str, users: &[String], orders: i32) -> anyhow::Result<()> {
    let mut client = QueryServiceClient::new(connect(query).await?);
    let deadline = Instant::now() + Duration::from_secs(600);
    for user in users {
        ask_until_visible(deadline, || {
            let request = GetUserProfileRequest {
                user_id: user.clone(),
                min_version: 1,
            };
            let mut client = client.clone();
            async move {
                client
                    .get_user_profile(min_version_request(request))
                    .await
                    .map(drop)
            }
        })
        .await
        .with_context(|| format!("waiting for the profile of user {user}"))?;
        loop {
            let listed = client
                .list_orders_by_user(ListOrdersByUserRequest {
                    user_id: user.clone(),
                    page_size: orders,
                    page_token: String::new(),
                })
                .await
                .map_err(|status| anyhow::anyhow!(status_error(status)))
                .with_context(|| format!("listing the orders of user {user}"))?
                .into_inner()
                .orders
                .len();
            if listed >= orders as usize {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "user {user} still lists {listed} of {orders} orders after ten minutes"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(())
}

/// The orders of worker `w` of `workers`: every `workers`-th one.
pub fn partition<T: Clone>(items: &[T], workers: usize) -> Vec<Vec<T>> {
    let mut parts = vec![Vec::new(); workers.max(1)];
    for (i, item) in items.iter().enumerate() {
        parts[i % workers.max(1)].push(item.clone());
    }
    parts
}

/// `CreateUser` in a closed loop.
pub async fn run_create_user(command: &str, limits: Limits) -> anyhow::Result<Outcome> {
    let channels = connections(command, limits.concurrency).await?;
    Ok(load::closed_loop(limits, move |worker, _| {
        let mut client = CommandServiceClient::new(channels[worker].clone());
        async move {
            client
                .create_user(create_user_request())
                .await
                .map_err(status_error)?;
            Ok(Step::Done)
        }
    })
    .await)
}

/// The order a worker's `i`-th update goes to, and which step of
/// [`STATUS_PATH`] it takes: the worker's orders one after another, then
/// all of them again for the next step; `None` once every order of `mine`
/// is delivered.
pub fn nth_update<T: Clone>(mine: &[T], i: u64) -> Option<(T, usize)> {
    if mine.is_empty() {
        return None;
    }
    let round = i as usize / mine.len();
    (round < STATUS_PATH.len()).then(|| (mine[i as usize % mine.len()].clone(), round))
}

/// Orders of new users, `n` of them, 20 to a user; and one of those users.
pub async fn order_pool(command: &str, n: usize) -> anyhow::Result<(Vec<String>, String)> {
    let users = create_users(command, n.div_ceil(20).max(1), 16).await?;
    let orders = create_orders(command, &users, 20, 16)
        .await?
        .into_iter()
        .map(|(order, _)| order)
        .take(n)
        .collect();
    Ok((orders, users[0].clone()))
}

/// `UpdateOrderStatus` in a closed loop. Each worker owns its share of
/// `orders` and moves each along [`STATUS_PATH`], one order after another,
/// so that no two calls race on one order; a worker whose orders are all
/// delivered stops.
pub async fn run_update_order_status(
    command: &str,
    orders: &[String],
    limits: Limits,
) -> anyhow::Result<Outcome> {
    let channels = connections(command, limits.concurrency).await?;
    let parts = Arc::new(partition(orders, limits.concurrency));
    Ok(load::closed_loop(limits, move |worker, i| {
        let mut client = CommandServiceClient::new(channels[worker].clone());
        let mine = &parts[worker];
        let next = nth_update(mine, i).map(|(order, round)| (order, STATUS_PATH[round]));
        async move {
            let Some((order, status)) = next else {
                return Ok(Step::Exhausted);
            };
            client
                .update_order_status(update_order_status_request(&order, status))
                .await
                .map_err(status_error)?;
            Ok(Step::Done)
        }
    })
    .await)
}

/// `GetUserProfile` over `users`, round robin.
pub async fn run_get_user_profile(
    query: &str,
    users: &[String],
    limits: Limits,
) -> anyhow::Result<Outcome> {
    let channels = connections(query, limits.concurrency).await?;
    let users = Arc::new(users.to_vec());
    Ok(load::closed_loop(limits, move |worker, i| {
        let mut client = QueryServiceClient::new(channels[worker].clone());
        let user = users[(worker + i as usize * limits.concurrency) % users.len()].clone();
        async move {
            let response = client
                .get_user_profile(GetUserProfileRequest {
                    user_id: user,
                    min_version: 0,
                })
                .await
                .map_err(status_error)?;
            if response.into_inner().user.is_none() {
                return Err("a profile without a user".into());
            }
            Ok(Step::Done)
        }
    })
    .await)
}

/// `ListOrdersByUser`, first page of `page_size`, over `users`.
pub async fn run_list_orders_by_user(
    query: &str,
    users: &[String],
    page_size: i32,
    limits: Limits,
) -> anyhow::Result<Outcome> {
    let channels = connections(query, limits.concurrency).await?;
    let users = Arc::new(users.to_vec());
    Ok(load::closed_loop(limits, move |worker, i| {
        let mut client = QueryServiceClient::new(channels[worker].clone());
        let user = users[(worker + i as usize * limits.concurrency) % users.len()].clone();
        async move {
            let response = client
                .list_orders_by_user(ListOrdersByUserRequest {
                    user_id: user,
                    page_size,
                    page_token: String::new(),
                })
                .await
                .map_err(status_error)?;
            let got = response.into_inner().orders.len();
            if got != page_size as usize {
                return Err(format!("a page of {got} orders, not {page_size}"));
            }
            Ok(Step::Done)
        }
    })
    .await)
}

/// Measures how long a command takes to become visible: sends
/// `UpdateOrderStatus`, then reads the order through the query service every
/// `poll` until it shows the new version. Returns (send → visible,
/// acknowledged → visible).
pub async fn visible_after(
    command: &mut CommandServiceClient<Channel>,
    query: &mut QueryServiceClient<Channel>,
    order_id: &str,
    status: OrderStatus,
    poll: Duration,
) -> Result<(Duration, Duration), String> {
    let sent = Instant::now();
    let version = command
        .update_order_status(update_order_status_request(order_id, status))
        .await
        .map_err(status_error)?
        .into_inner()
        .version;
    let acked = Instant::now();
    let deadline = acked + Duration::from_secs(60);
    loop {
        let seen = query
            .get_order(GetOrderRequest {
                order_id: order_id.to_owned(),
                min_version: 0,
            })
            .await
            .map(|r| r.into_inner().order.map_or(0, |o| o.version));
        match seen {
            Ok(seen) if seen >= version => {
                let now = Instant::now();
                return Ok((now - sent, now - acked));
            }
            // Not yet projected: the order may not even be there.
            Ok(_) | Err(_) if Instant::now() < deadline => tokio::time::sleep(poll).await,
            Ok(seen) => return Err(format!("order {order_id} still at {seen}, not {version}")),
            Err(status) => return Err(status_error(status)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_order_takes_every_step_once_then_the_worker_is_done() {
        let mine = ["a", "b"];
        let steps: Vec<_> = (0..7).map(|i| nth_update(&mine, i)).collect();
        assert_eq!(
            steps,
            vec![
                Some(("a", 0)),
                Some(("b", 0)),
                Some(("a", 1)),
                Some(("b", 1)),
                Some(("a", 2)),
                Some(("b", 2)),
                None
            ]
        );
        assert_eq!(nth_update::<&str>(&[], 0), None);
    }

    /// Fixtures made by workers of unequal speed: each user still gets
    /// exactly its share. Dealing by worker and call number, as the orders
    /// fixture once did, gives the fast worker's users more.
    #[tokio::test]
    async fn a_dealer_shares_out_evenly_among_workers_of_unequal_speed() {
        let users: Vec<usize> = (0..8).collect();
        let dealer = Arc::new(Dealer::new(users.clone()));
        let made = load::collect("dealt", users.len() * 5, 4, move |worker, _| {
            let user = dealer.next();
            async move {
                // Worker 0 is quick; the others take a scheduler turn or ten.
                for _ in 0..worker * 10 {
                    tokio::task::yield_now().await;
                }
                Ok(user)
            }
        })
        .await
        .unwrap();
        for user in users {
            assert_eq!(
                made.iter().filter(|&&u| u == user).count(),
                5,
                "user {user}"
            );
        }
    }

    #[test]
    fn partitions_deal_items_round_robin() {
        assert_eq!(
            partition(&[1, 2, 3, 4, 5], 2),
            vec![vec![1, 3, 5], vec![2, 4]]
        );
    }
}
