//! No oversell, ever: K concurrent purchases of one product with S < K
//! units, the binaries as processes, the process manager and the command
//! service killed with SIGKILL at random moments and restarted. Then: every
//! purchase ends COMPLETED or REJECTED, exactly S units are sold (S
//! purchases completed, S orders placed), a rejected purchase holds no
//! stock, and the stock is never negative, in the events (folded one by
//! one) or in the read model.
//!
//! The moments come from a seed, printed, and taken from
//! `DYNABRIDGE_FAULT_SEED` when set, to replay a failing run.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dynabridge::pb;
use dynabridge::pb::command_service_client::CommandServiceClient;
use dynabridge::pb::query_service_client::QueryServiceClient;
use dynabridge::schema::Tables;
use dynabridge_domain::{Event, PurchaseId};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::faults::Rng;
use crate::{LEASE_DURATION_MS, spawn_projector, spawn_service};
use dynabridge_testkit::processes::{Proc, spawn};

/// The product's units.
const STOCK: i64 = 150;
/// Purchases of one unit each: more than there are units. The clients buy
/// until every kill is done, so that every kill meets purchases in flight
/// (at the command service) and undecided (at the process manager), and at
/// least this many, at most the maximum.
const MIN_PURCHASES: usize = 200;
const MAX_PURCHASES: usize = 2000;
/// Clients buying at once.
const CLIENTS: usize = 4;
/// Kills of the process manager, and of the command service.
const PROCESS_KILLS: usize = 3;
const COMMAND_KILLS: usize = 2;
/// The purchases' time limit, and the process's to decide them all.
const LOAD_LIMIT: Duration = Duration::from_secs(60);
const DECIDE_LIMIT: Duration = Duration::from_secs(90);
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

fn spawn_process_manager(endpoint: &str, prefix: &str) -> Proc {
    spawn(
        "process-manager",
        prefix,
        &[
            "--endpoint-url",
            endpoint,
            "--health-listen",
            "127.0.0.1:0",
            "--idle-poll-max-ms",
            "20",
            "--lease-duration-ms",
            LEASE_DURATION_MS,
        ],
        &[],
    )
}

/// Asks for one purchase until the command service acknowledges it: the
/// same request each time, as a client retrying an answer it did not get.
/// Returns the purchase's id, and how many times it was sent again.
async fn purchase_until_acked(
    addr: &watch::Receiver<SocketAddr>,
    request: pb::PurchaseProductsRequest,
    deadline: Instant,
) -> (String, usize) {
    let mut resent = 0;
    let mut connected: Option<(SocketAddr, CommandServiceClient<tonic::transport::Channel>)> = None;
    loop {
        assert!(
            Instant::now() < deadline,
            "{} never acknowledged",
            request.request_id
        );
        let at = *addr.borrow();
        if connected.as_ref().is_none_or(|(a, _)| *a != at) {
            connected = CommandServiceClient::connect(format!("http://{at}"))
                .await
                .ok()
                .map(|c| (at, c));
        }
        if let Some((_, client)) = &mut connected {
            let mut call = tonic::Request::new(request.clone());
            call.set_timeout(CALL_TIMEOUT);
            match client.purchase_products(call).await {
                Ok(answer) => return (answer.into_inner().purchase_id, resent),
                Err(status) => assert!(
                    matches!(
                        status.code(),
                        tonic::Code::Unavailable
                            | tonic::Code::DeadlineExceeded
                            | tonic::Code::Cancelled
                            | tonic::Code::Unknown
                            | tonic::Code::Internal
                    ),
                    "a valid purchase refused: {status:?}"
                ),
            }
            connected = None;
        }
        resent += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How many events aggregate `id` has now.
async fn product_events_now(dynamo: &aws_sdk_dynamodb::Client, tables: &Tables, id: &str) -> i64 {
    let out = dynamo
        .query()
        .table_name(tables.event_store())
        .key_condition_expression("#id = :id")
        .expression_attribute_names("#id", dynabridge::schema::event_store::AGGREGATE_ID)
        .expression_attribute_values(
            ":id",
            aws_sdk_dynamodb::types::AttributeValue::S(id.to_owned()),
        )
        .select(aws_sdk_dynamodb::types::Select::Count)
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    i64::from(out.count)
}

/// Every event of the event store, decoded, by aggregate, in version order.
async fn events_by_aggregate(
    dynamo: &aws_sdk_dynamodb::Client,
    tables: &Tables,
) -> BTreeMap<String, Vec<dynabridge_domain::StoredEvent>> {
    let mut by_aggregate: BTreeMap<String, Vec<dynabridge_domain::StoredEvent>> = BTreeMap::new();
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
            let event = dynabridge_event_store::codec::event_from_item(item).unwrap();
            by_aggregate
                .entry(event.event.aggregate_id().to_string())
                .or_default()
                .push(event);
        }
        match page.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => break,
        }
    }
    for events in by_aggregate.values_mut() {
        events.sort_by_key(|e| e.version);
    }
    by_aggregate
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_oversell_when_the_process_manager_and_command_service_die_at_random_moments() {
    let mut rng = Rng::seeded();

    let crate::Store {
        endpoint,
        prefix,
        tables,
        dynamo,
    } = crate::Store::start("o").await;
    let dir = tempfile::tempdir().unwrap();
    let sink = dir.path().join("published.jsonl");
    let spawn_named = |name: &'static str| {
        let (endpoint, prefix, sink) = (endpoint.clone(), prefix.clone(), sink.clone());
        tokio::task::spawn_blocking(move || match name {
            "projector" => spawn_projector(&endpoint, &prefix, &sink),
            "process-manager" => spawn_process_manager(&endpoint, &prefix),
            service => spawn_service(service, &endpoint, &prefix),
        })
    };
    let mut command = spawn_named("command-service").await.unwrap();
    let query = spawn_named("query-service").await.unwrap();
    let projector = spawn_named("projector").await.unwrap();
    let mut process = spawn_named("process-manager").await.unwrap();

    // A buyer, and the hot product.
    let mut commands = CommandServiceClient::connect(format!("http://{}", command.addr))
        .await
        .unwrap();
    let user = commands
        .create_user(pb::CreateUserRequest {
            request_id: "buyer".into(),
            email: "buyer@example.com".into(),
            name: "Buyer".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let product = commands
        .create_product(pb::CreateProductRequest {
            request_id: "hot".into(),
            sku: "HOT".into(),
            name: "Hot".into(),
            unit_price: Some(pb::Money {
                currency_code: "EUR".into(),
                amount_minor: 100,
            }),
            initial_stock: STOCK,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    // The purchases, from CLIENTS clients at once, while the kills go on.
    let (addr_tx, addr) = watch::channel(command.addr);
    let (kills_tx, kills_done) = watch::channel(false);
    let deadline = Instant::now() + LOAD_LIMIT;
    let next = Arc::new(AtomicUsize::new(0));
    let asked = Arc::new(Mutex::new(Vec::new()));
    let resent = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (addr, next, asked, resent) =
                (addr.clone(), next.clone(), asked.clone(), resent.clone());
            let kills_done = kills_done.clone();
            let user_id = user.user_id.clone();
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let enough = *kills_done.borrow() && n >= MIN_PURCHASES;
                    if enough || n >= MAX_PURCHASES {
                        return;
                    }
                    let request = pb::PurchaseProductsRequest {
                        request_id: format!("buy-{n}"),
                        user_id: user_id.clone(),
                        items: vec![pb::PurchaseItem {
                            sku: "HOT".into(),
                            quantity: 1,
                        }],
                        ..Default::default()
                    };
                    let (id, again) = purchase_until_acked(&addr, request, deadline).await;
                    resent.fetch_add(again, Ordering::Relaxed);
                    asked.lock().unwrap().push(id);
                }
            })
        })
        .collect();
    let mut victims: Vec<&str> = [
        vec!["process-manager"; PROCESS_KILLS],
        vec!["command-service"; COMMAND_KILLS],
    ]
    .concat();
    for i in (1..victims.len()).rev() {
        victims.swap(i, rng.below(i as u64 + 1) as usize);
    }
    // How many units were sold when each process manager was killed: the
    // product's events then, less its creation.
    let mut sold_at_kills = Vec::new();
    for victim in &victims {
        tokio::time::sleep(Duration::from_millis(20 + rng.below(150))).await;
        if *victim == "process-manager" {
            sold_at_kills.push(product_events_now(&dynamo, &tables, &product.product_id).await - 1);
            process.kill();
            process = spawn_named("process-manager").await.unwrap();
        } else {
            command.kill();
            command = spawn_named("command-service").await.unwrap();
            addr_tx.send_replace(command.addr);
        }
        eprintln!("killed and restarted the {victim}");
    }
    kills_tx.send_replace(true);
    eprintln!("units sold when the process manager was killed: {sold_at_kills:?}");
    assert!(
        sold_at_kills.iter().any(|sold| (0..STOCK).contains(sold)),
        "no kill of the process manager came before the stock ran out: {sold_at_kills:?}"
    );
    for client in clients {
        client.await.unwrap();
    }
    let asked: Vec<String> = std::mem::take(&mut *asked.lock().unwrap());
    let purchases = asked.len();
    assert!(purchases >= MIN_PURCHASES, "{purchases} purchases");
    assert_eq!(
        asked.iter().collect::<HashSet<_>>().len(),
        purchases,
        "each a purchase of its own"
    );
    assert!(
        purchases < MAX_PURCHASES && resent.load(Ordering::Relaxed) > 0,
        "no purchase was cut by a kill: the kills missed the load"
    );

    // Every purchase decided: COMPLETED or REJECTED, never left pending.
    let mut queries = QueryServiceClient::connect(format!("http://{}", query.addr))
        .await
        .unwrap();
    let decide_by = Instant::now() + DECIDE_LIMIT;
    let mut outcomes = HashMap::new();
    for id in &asked {
        let purchase = loop {
            assert!(Instant::now() < decide_by, "purchase {id} never decided");
            let mut request = tonic::Request::new(pb::GetPurchaseRequest {
                purchase_id: id.clone(),
                min_version: 1,
                wait_for_outcome: true,
            });
            request.set_timeout(Duration::from_secs(5));
            if let Ok(answer) = queries.get_purchase(request).await
                && let Some(purchase) = answer.into_inner().purchase
                && purchase.status != pb::PurchaseStatus::Pending as i32
            {
                break purchase;
            }
        };
        outcomes.insert(id.clone(), purchase);
    }
    let completed: HashSet<&String> = outcomes
        .iter()
        .filter(|(_, p)| p.status == pb::PurchaseStatus::Completed as i32)
        .map(|(id, _)| id)
        .collect();
    let rejected: Vec<&pb::Purchase> = outcomes
        .values()
        .filter(|p| p.status == pb::PurchaseStatus::Rejected as i32)
        .collect();
    assert_eq!(completed.len() + rejected.len(), purchases);
    assert_eq!(completed.len() as i64, STOCK, "exactly the stock sold");
    for purchase in &rejected {
        let rejection = purchase.rejection.as_ref().unwrap();
        assert_eq!(
            (
                rejection.reason,
                rejection.sku.as_str(),
                rejection.quantity_left
            ),
            (pb::PurchaseRejectionReason::OutOfStock as i32, "HOT", 0)
        );
    }

    // The events: the product's stock never below zero, folded one by one;
    // one reservation per completed purchase and none for a rejected one;
    // nothing released; one order per completed purchase.
    let events = events_by_aggregate(&dynamo, &tables).await;
    let product_events = &events[&product.product_id];
    let mut stock = 0_i64;
    let mut reserved_for = Vec::new();
    for (n, stored) in product_events.iter().enumerate() {
        assert_eq!(stored.version, n as i64 + 1, "the product's versions");
        match &stored.event {
            Event::ProductCreated { initial_stock, .. } => stock = initial_stock.get(),
            Event::StockReserved {
                purchase_id,
                quantity,
                ..
            } => {
                stock -= quantity.get();
                reserved_for.push(purchase_id.to_string());
            }
            other => panic!("unexpected product event {other:?}"),
        }
        assert!(stock >= 0, "stock {stock} at version {}", stored.version);
    }
    assert_eq!(stock, 0, "every unit sold");
    let reserved: HashSet<&String> = reserved_for.iter().collect();
    assert_eq!(reserved_for.len(), reserved.len(), "one reservation each");
    assert_eq!(
        reserved, completed,
        "reserved for the completed purchases alone"
    );
    let mut orders = 0;
    for (aggregate, stream) in &events {
        if let Some(Event::OrderCreated { purchase_id, .. }) = stream.first().map(|e| &e.event) {
            let purchase_id = purchase_id.expect("a purchase's order");
            assert!(completed.contains(&purchase_id.to_string()), "{aggregate}");
            orders += 1;
        }
        // Each purchase's steps once: requested then reserved then
        // completed, or requested then rejected.
        let types: Vec<&str> = stream.iter().map(|e| e.event.event_type()).collect();
        if types.first() == Some(&"PurchaseRequested") {
            assert!(
                types == ["PurchaseRequested", "PurchaseReserved", "PurchaseCompleted"]
                    || types == ["PurchaseRequested", "PurchaseRejected"],
                "purchase {aggregate}: {types:?}"
            );
            let id = PurchaseId::parse("purchase_id", aggregate).unwrap();
            assert!(asked.contains(&id.to_string()));
        }
    }
    assert_eq!(orders as i64, STOCK, "one order per unit sold");

    // The read model: nothing left, every unit held by its purchase.
    let row = queries
        .get_product(pb::GetProductRequest {
            sku: "HOT".into(),
            min_version: product_events.len() as i64,
        })
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap();
    assert_eq!((row.stock, row.reserved), (0, STOCK));
    eprintln!(
        "{purchases} purchases of {STOCK} units ({} sent again) through {} kills: {} completed, {} rejected",
        resent.load(Ordering::Relaxed),
        victims.len(),
        completed.len(),
        rejected.len()
    );
    for proc in [command, query, projector, process] {
        proc.terminate();
    }
}
