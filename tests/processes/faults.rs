//! Faults at random moments: the three binaries as processes under a
//! bounded load, the command service and the projector killed with SIGKILL
//! several times while calls are in flight, and restarted. Then a checker:
//! every acknowledged command is in the event store with the events it was
//! answered with, no request has events twice, every retry of a request is
//! answered as the first acknowledgement was, every read model is at its
//! aggregate's last version, and every event is published.
//!
//! The moments come from a seed, printed, and taken from
//! `DYNABRIDGE_FAULT_SEED` when set, to replay a failing run.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use dynabridge::pb;
use dynabridge::pb::command_service_client::CommandServiceClient;
use dynabridge::pb::query_service_client::QueryServiceClient;
use dynabridge::schema::{Tables, event_store};
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::Code;

use crate::{order_at, published_ids, spawn_projector, spawn_service, user_at};

/// Client tasks writing at once.
const CLIENTS: usize = 4;
/// Kills of each of the two binaries.
const KILLS_EACH: usize = 3;
/// The load goes on until every kill is done (and the client finished its
/// user), so that every kill meets calls in flight; this many users per
/// client at most.
const MAX_USERS_PER_CLIENT: usize = 400;
/// The whole load's time limit.
const LOAD_LIMIT: Duration = Duration::from_secs(90);
/// How long one call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// A small xorshift generator: the moments and the victims.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    /// From `DYNABRIDGE_FAULT_SEED` when set, to replay a failing run, else
    /// from the clock; printed either way.
    pub(crate) fn seeded() -> Self {
        let seed = std::env::var("DYNABRIDGE_FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("fault seed: {seed} (DYNABRIDGE_FAULT_SEED={seed} replays it)");
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One command as the client sent it and as it was first acknowledged.
#[derive(Clone, Debug)]
struct Acked {
    call: Call,
    aggregate_id: String,
    version: i64,
    event_ids: Vec<String>,
}

#[derive(Clone, Debug)]
enum Call {
    CreateUser(pb::CreateUserRequest),
    Rename(pb::UpdateUserProfileRequest),
    CreateOrder(pb::CreateOrderRequest),
    Move(pb::UpdateOrderStatusRequest),
}

impl Call {
    fn request_id(&self) -> &str {
        match self {
            Self::CreateUser(r) => &r.request_id,
            Self::Rename(r) => &r.request_id,
            Self::CreateOrder(r) => &r.request_id,
            Self::Move(r) => &r.request_id,
        }
    }

    /// Sends it once: the aggregate id, version and event ids it was
    /// answered with.
    async fn send(
        &self,
        client: &mut CommandServiceClient<tonic::transport::Channel>,
    ) -> Result<(String, i64, Vec<String>), tonic::Status> {
        fn timed<T>(message: T) -> tonic::Request<T> {
            let mut request = tonic::Request::new(message);
            request.set_timeout(CALL_TIMEOUT);
            request
        }
        Ok(match self {
            Self::CreateUser(r) => {
                let out = client.create_user(timed(r.clone())).await?.into_inner();
                (out.user_id, out.version, out.event_ids)
            }
            Self::Rename(r) => {
                let out = client
                    .update_user_profile(timed(r.clone()))
                    .await?
                    .into_inner();
                (out.user_id, out.version, out.event_ids)
            }
            Self::CreateOrder(r) => {
                let out = client.create_order(timed(r.clone())).await?.into_inner();
                (out.order_id, out.version, out.event_ids)
            }
            Self::Move(r) => {
                let out = client
                    .update_order_status(timed(r.clone()))
                    .await?
                    .into_inner();
                (out.order_id, out.version, out.event_ids)
            }
        })
    }
}

/// A client of whichever command service is running now.
struct Client {
    addr: watch::Receiver<SocketAddr>,
    connected: Option<(SocketAddr, CommandServiceClient<tonic::transport::Channel>)>,
    /// Calls that were not answered and were sent again, by every client.
    resent: Arc<AtomicUsize>,
}

impl Client {
    /// Sends `call` until it is acknowledged, the same request each time,
    /// as a client retrying an answer it did not get. A refusal is a
    /// failure: every call of the load is valid.
    async fn until_acked(&mut self, call: Call, deadline: Instant) -> Acked {
        for attempt in 0.. {
            assert!(
                Instant::now() < deadline,
                "{} never acknowledged",
                call.request_id()
            );
            if attempt > 0 {
                self.resent.fetch_add(1, Ordering::Relaxed);
            }
            let addr = *self.addr.borrow();
            if self.connected.as_ref().is_none_or(|(a, _)| *a != addr) {
                self.connected = CommandServiceClient::connect(format!("http://{addr}"))
                    .await
                    .ok()
                    .map(|c| (addr, c));
            }
            if let Some((_, client)) = &mut self.connected {
                match call.send(client).await {
                    Ok((aggregate_id, version, event_ids)) => {
                        return Acked {
                            call,
                            aggregate_id,
                            version,
                            event_ids,
                        };
                    }
                    Err(status) => assert!(
                        matches!(
                            status.code(),
                            Code::Unavailable
                                | Code::Unknown
                                | Code::DeadlineExceeded
                                | Code::Cancelled
                                | Code::Internal
                        ) && !status.message().contains("internal error"),
                        "{} refused: {status:?}",
                        call.request_id()
                    ),
                }
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        unreachable!("the loop ends with an answer or a panic")
    }
}

/// One client's load: users created, renamed twice, each with an order
/// created and moved to PROCESSING, then SHIPPED.
async fn client_load(
    n: usize,
    mut client: Client,
    kills_done: watch::Receiver<bool>,
    acked: Arc<Mutex<Vec<Acked>>>,
    deadline: Instant,
) {
    for u in 0..MAX_USERS_PER_CLIENT {
        if *kills_done.borrow() || Instant::now() > deadline {
            return;
        }
        let key = format!("c{n}-u{u}");
        let user = client
            .until_acked(
                Call::CreateUser(pb::CreateUserRequest {
                    request_id: format!("{key}-create"),
                    email: format!("{key}@example.com"),
                    name: format!("User {key}"),
                    ..Default::default()
                }),
                deadline,
            )
            .await;
        let user_id = user.aggregate_id.clone();
        let mut done = vec![user];
        for r in 1..=2 {
            done.push(
                client
                    .until_acked(
                        Call::Rename(pb::UpdateUserProfileRequest {
                            request_id: format!("{key}-rename{r}"),
                            user_id: user_id.clone(),
                            name: format!("User {key} ({r})"),
                            update_mask: Some(pbjson_types::FieldMask {
                                paths: vec!["name".into()],
                            }),
                            ..Default::default()
                        }),
                        deadline,
                    )
                    .await,
            );
        }
        let order = client
            .until_acked(
                Call::CreateOrder(pb::CreateOrderRequest {
                    request_id: format!("{key}-order"),
                    user_id: user_id.clone(),
                    items: vec![pb::OrderItem {
                        sku: "sku-1".into(),
                        quantity: 2,
                        unit_price: Some(pb::Money {
                            currency_code: "EUR".into(),
                            amount_minor: 250,
                        }),
                    }],
                    ..Default::default()
                }),
                deadline,
            )
            .await;
        let order_id = order.aggregate_id.clone();
        done.push(order);
        for (step, status) in [pb::OrderStatus::Processing, pb::OrderStatus::Shipped]
            .into_iter()
            .enumerate()
        {
            done.push(
                client
                    .until_acked(
                        Call::Move(pb::UpdateOrderStatusRequest {
                            request_id: format!("{key}-move{step}"),
                            order_id: order_id.clone(),
                            status: status as i32,
                            ..Default::default()
                        }),
                        deadline,
                    )
                    .await,
            );
        }
        acked.lock().unwrap().extend(done);
    }
}

/// Every event in the store: (aggregate id, version, event id, request id).
async fn stored_events(
    dynamo: &aws_sdk_dynamodb::Client,
    tables: &Tables,
) -> Vec<(String, i64, String, String)> {
    let mut events = Vec::new();
    let mut start = None;
    loop {
        let page = dynamo
            .scan()
            .table_name(tables.event_store())
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        for item in page.items() {
            let s = |name: &str| match item.get(name) {
                Some(AttributeValue::S(s)) => s.clone(),
                Some(AttributeValue::N(n)) => n.clone(),
                other => panic!("{name}: {other:?}"),
            };
            events.push((
                s(event_store::AGGREGATE_ID),
                s(event_store::VERSION).parse().unwrap(),
                s(event_store::EVENT_ID),
                s(event_store::COMMAND_ID),
            ));
        }
        match page.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => return events,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_random_moments_nothing_acknowledged_is_lost_or_applied_twice() {
    let mut rng = Rng::seeded();

    let crate::Store {
        endpoint,
        prefix,
        tables,
        dynamo,
    } = crate::Store::start("f").await;
    let dir = tempfile::tempdir().unwrap();
    let sink = dir.path().join("published.jsonl");

    let spawn = |name: &'static str| {
        let (endpoint, prefix, sink) = (endpoint.clone(), prefix.clone(), sink.clone());
        tokio::task::spawn_blocking(move || match name {
            "projector" => spawn_projector(&endpoint, &prefix, &sink),
            service => spawn_service(service, &endpoint, &prefix),
        })
    };
    let mut command = spawn("command-service").await.unwrap();
    let query = spawn("query-service").await.unwrap();
    let mut projector = spawn("projector").await.unwrap();
    let (addr_tx, addr) = watch::channel(command.addr);
    let (kills_tx, kills_done) = watch::channel(false);
    let acked = Arc::new(Mutex::new(Vec::new()));
    let resent = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + LOAD_LIMIT;

    let clients: Vec<_> = (0..CLIENTS)
        .map(|n| {
            let client = Client {
                addr: addr.clone(),
                connected: None,
                resent: resent.clone(),
            };
            tokio::spawn(client_load(
                n,
                client,
                kills_done.clone(),
                acked.clone(),
                deadline,
            ))
        })
        .collect();

    // The kills, at random moments while the clients write: each binary
    // KILLS_EACH times, in a random order, each restarted at once.
    let mut victims: Vec<&str> =
        [["command-service"; KILLS_EACH], ["projector"; KILLS_EACH]].concat();
    for i in (1..victims.len()).rev() {
        victims.swap(i, rng.below(i as u64 + 1) as usize);
    }
    for victim in &victims {
        tokio::time::sleep(Duration::from_millis(100 + rng.below(500))).await;
        if *victim == "projector" {
            projector.kill();
            projector = spawn("projector").await.unwrap();
        } else {
            command.kill();
            command = spawn("command-service").await.unwrap();
            addr_tx.send_replace(command.addr);
        }
        eprintln!("killed and restarted the {victim}");
    }
    kills_tx.send_replace(true);
    for client in clients {
        client.await.unwrap();
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    let resent = resent.load(Ordering::Relaxed);
    assert!(
        resent > 0,
        "no call was cut by a kill: the kills missed the load"
    );
    assert!(
        acked.len() >= CLIENTS * 6,
        "the load ran: {} commands",
        acked.len()
    );

    // Every retry of an acknowledged request is answered as it was.
    let mut client = Client {
        addr: addr.clone(),
        connected: None,
        resent: Arc::default(),
    };
    for first in &acked {
        let again = client
            .until_acked(first.call.clone(), Instant::now() + Duration::from_secs(30))
            .await;
        assert_eq!(
            (&again.aggregate_id, again.version, &again.event_ids),
            (&first.aggregate_id, first.version, &first.event_ids),
            "the retry of {} answered differently",
            first.call.request_id()
        );
    }

    // The event store holds exactly the acknowledged events: each request's
    // events once, each aggregate's versions 1..n.
    let stored = stored_events(&dynamo, &tables).await;
    let mut by_request: HashMap<&str, Vec<&str>> = HashMap::new();
    let mut versions: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for (aggregate, version, event_id, request_id) in &stored {
        by_request.entry(request_id).or_default().push(event_id);
        versions.entry(aggregate).or_default().push(*version);
    }
    for (aggregate, mut v) in versions {
        v.sort_unstable();
        assert_eq!(
            v,
            (1..=v.len() as i64).collect::<Vec<_>>(),
            "versions of {aggregate}"
        );
    }
    let mut last: HashMap<&str, (i64, bool)> = HashMap::new();
    for a in &acked {
        let mut stored_ids = by_request
            .remove(a.call.request_id())
            .unwrap_or_else(|| panic!("{} acknowledged, not stored", a.call.request_id()));
        stored_ids.sort_unstable();
        let mut answered: Vec<&str> = a.event_ids.iter().map(String::as_str).collect();
        answered.sort_unstable();
        assert_eq!(stored_ids, answered, "{}", a.call.request_id());
        let is_user = matches!(a.call, Call::CreateUser(_) | Call::Rename(_));
        let entry = last.entry(&a.aggregate_id).or_insert((0, is_user));
        entry.0 = entry.0.max(a.version);
    }
    assert!(
        by_request.is_empty(),
        "events of requests never acknowledged: {by_request:?}"
    );

    // Every read model reaches its aggregate's last version, and every event
    // is published.
    let mut queries = QueryServiceClient::connect(format!("http://{}", query.addr))
        .await
        .unwrap();
    for (id, (version, is_user)) in &last {
        if *is_user {
            assert_eq!(user_at(&mut queries, id, *version).await.version, *version);
        } else {
            assert_eq!(order_at(&mut queries, id, *version).await.version, *version);
        }
    }
    let all: HashSet<String> = stored.into_iter().map(|(_, _, id, _)| id).collect();
    crate::wait_for("every event published", || {
        let published = published_ids(&sink);
        let missing = all.difference(&published).count();
        async move { missing == 0 }
    })
    .await;
    eprintln!(
        "{} commands acknowledged ({resent} sent again), {} events, through {} kills",
        acked.len(),
        all.len(),
        victims.len()
    );
    command.terminate();
    projector.terminate();
    query.terminate();
}
