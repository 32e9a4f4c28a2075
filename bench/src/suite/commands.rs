//! The command scenarios, with the projector stopped: `CreateUser` and
//! `UpdateOrderStatus` against their ceilings, our handler as a library
//! against the peer, and what each part of a create costs the store.

use super::*;

/// Measures both command scenarios at every client count, writes their
/// tables to `out`, and returns their rows (`CreateUser`,
/// `UpdateOrderStatus`).
pub(super) async fn measure_all(
    system: &System,
    args: &SuiteArgs,
    out: &mut String,
) -> anyhow::Result<(Vec<Row>, Vec<Row>)> {
    let command_url = system.command_url()?;
    // Sizes of real messages, for the transport ceiling.
    let create_user = ops::create_user_request();
    let create_user_sizes = Sizes {
        request: create_user.encoded_len(),
        response: CommandServiceClient::new(ops::connect(&command_url).await?)
            .create_user(create_user)
            .await?
            .into_inner()
            .encoded_len(),
    };

    report::push_heading(out, 3, "Commands");
    let _ = write!(
        out,
        "The projector is stopped while commands are measured, so that ours, the storage \
         ceiling and the peer append under the same conditions (the peer has no projection). \
         Updates run on orders the command service created moments before: the steady state \
         of its aggregate cache. The service, our library and the storage ceiling all append \
         through `EventStore::append`, so in all three the appends of concurrent clients share \
         transactions (group commit, at most {} outstanding); the peer sends each command's \
         own.\n\n",
        dynabridge_event_store::EventStore::DEFAULT_MAX_IN_FLIGHT,
    );
    out.push_str(
        "Each scenario has three ceilings. The storage ceiling sends the scenario's DynamoDB \
         calls from this process through the library's own store and read-model code. The \
         transport ceiling is a bare tonic echo service in its own process, with messages as \
         large as the real ones. The transport + storage ceiling is that echo service making \
         the storage ceiling's calls before it answers: what the service would reach if gRPC \
         and its storage calls were all it did, so our ratio to it is what the service's own \
         work costs.\n\n",
    );
    let mut create_rows = Vec::new();
    let mut update_rows = Vec::new();
    for &clients in &args.clients {
        let limits = args.limits(clients);
        eprintln!("CreateUser, {clients} clients");
        create_rows.push(
            create_user_row(system, &command_url, &create_user_sizes, clients, limits).await?,
        );
        eprintln!("UpdateOrderStatus, {clients} clients");
        update_rows
            .push(update_order_status_row(system, args, &command_url, clients, limits).await?);
    }
    report::push_heading(out, 4, "CreateUser");
    out.push_str(&scenario_table(&create_rows));
    out.push('\n');
    report::push_heading(out, 4, "UpdateOrderStatus");
    out.push_str(&scenario_table(&update_rows));
    out.push('\n');
    report::push_heading(out, 4, "Against the peer");
    out.push_str(
        "The peer is a library: cqrs-es and dynamo-es, called from the load generator's own \
         tasks, with no transport and no process of its own. So ours is measured the same way \
         too: the command service's `CommandHandler` with its aggregate cache, called from the \
         same tasks, against the same store, with the same concurrency. The service's own rate \
         (behind gRPC, in its own process) is beside it. A library's CPU per operation is this \
         process's (the load and the library); the store's is the store process's.\n\n",
    );
    report::push_heading(out, 5, "CreateUser");
    out.push_str(&versus_table(&create_rows));
    out.push('\n');
    report::push_heading(out, 5, "UpdateOrderStatus");
    out.push_str(&versus_table(&update_rows));
    out.push('\n');
    if let Some(last) = create_rows.last() {
        out.push_str(&store_time_on_create(system, args, last).await?);
    }

    Ok((create_rows, update_rows))
}

/// `CreateUser` at `clients`: ours, the three ceilings, our library and
/// the peer.
async fn create_user_row(
    system: &System,
    command_url: &str,
    create_user_sizes: &Sizes,
    clients: usize,
    limits: Limits,
) -> anyhow::Result<Row> {
    let ours = measure(Some(&system.command), &system.store, async {
        ops::run_create_user(command_url, limits).await
    })
    .await?;
    let storage = measure(None, &system.store, async {
        Ok(ceiling::run_create_user(&system.storage, limits).await)
    })
    .await?;
    let (transport, both) = echo_ceilings(system, create_user_sizes, limits, |_, _| {
        Some(Some(StorageCall::CreateUser(true)))
    })
    .await?;
    let library = measure(None, &system.store, async {
        Ok(library::run_create_user(&system.library, limits).await)
    })
    .await?;
    let peer = measure(
        None,
        &system.store,
        run_peer_create_user(&system.peer, limits),
    )
    .await?;
    Ok(Row {
        clients,
        ours,
        storage,
        transport,
        both,
        versus: Some(Versus { library, peer }),
    })
}

/// `UpdateOrderStatus` at `clients`, each on orders created moments before
/// (the steady state of the aggregate cache).
async fn update_order_status_row(
    system: &System,
    args: &SuiteArgs,
    command_url: &str,
    clients: usize,
    limits: Limits,
) -> anyhow::Result<Row> {
    let orders_needed = (args.max_ops as usize)
        .div_ceil(ops::STATUS_PATH.len())
        .max(clients);
    let (orders, _) = ops::order_pool(command_url, orders_needed).await?;
    let request = ops::update_order_status_request(&orders[0], ops::STATUS_PATH[0]);
    let sizes = Sizes {
        request: request.encoded_len(),
        // The response names the order, the version, one event id and the
        // correlation id, as a real one does.
        response: dynabridge::pb::UpdateOrderStatusResponse {
            order_id: orders[0].clone(),
            version: 2,
            event_ids: vec![uuid::Uuid::new_v4().to_string()],
            correlation_id: uuid::Uuid::new_v4().to_string(),
        }
        .encoded_len(),
    };
    let ours = measure(Some(&system.command), &system.store, async {
        ops::run_update_order_status(command_url, &orders, limits).await
    })
    .await?;
    let ceiling_orders = ceiling::create_orders(&system.storage, orders_needed, 16).await?;
    let storage = measure(None, &system.store, async {
        Ok(ceiling::run_update_order_status(&system.storage, &ceiling_orders, limits).await)
    })
    .await?;
    let both_orders = ceiling::create_orders(&system.storage, orders_needed, 16).await?;
    let (transport, both) = echo_ceilings(
        system,
        &sizes,
        limits,
        ceiling::update_calls(&both_orders, limits.concurrency),
    )
    .await?;
    let library_orders = library::create_orders(&system.library, orders_needed, 16).await?;
    let library = measure(None, &system.store, async {
        Ok(library::run_update_order_status(&system.library, &library_orders, limits).await)
    })
    .await?;
    let peer_orders = peer_orders(&system.peer, orders_needed).await?;
    let peer = measure(
        None,
        &system.store,
        run_peer_update(&system.peer, &peer_orders, limits),
    )
    .await?;
    Ok(Row {
        clients,
        ours,
        storage,
        transport,
        both,
        versus: Some(Versus { library, peer }),
    })
}

/// Parts of `CreateUser`'s transaction sent alone, at the largest client
/// count, priced by the store's CPU, beside the peer's create from `peer_row`.
async fn store_time_on_create(
    system: &System,
    args: &SuiteArgs,
    peer_row: &Row,
) -> anyhow::Result<String> {
    let clients = peer_row.clients;
    eprintln!("store time on a create, {clients} clients");
    let mut table = Table::new(&[
        "sent from the harness",
        "items per call",
        "creates/s",
        "store CPU µs per create",
        "vs the whole transaction",
    ]);
    let mut measured = Vec::new();
    for shape in Shape::ALL {
        let run = measure(None, &system.store, async {
            Ok(shapes::run(
                &system.storage,
                shape,
                &system.unindexed,
                args.limits(clients),
            )
            .await)
        })
        .await?;
        measured.push((shape, run));
    }
    let whole = measured
        .iter()
        .find(|(shape, _)| *shape == Shape::Transaction)
        .map_or(0.0, |(_, run)| run.store_cpu_us);
    for (shape, run) in &measured {
        let creates = shape.creates() as f64;
        table.row(vec![
            shape.describe().to_owned(),
            shape.item_count().to_string(),
            int(run.outcome.rate() * creates),
            int(run.store_cpu_us / creates),
            ratio(run.store_cpu_us / creates, whole),
        ]);
    }
    if let Some(versus) = &peer_row.versus {
        table.row(vec![
            "the peer's create: a consistent `Query`, then the event alone, to a table with a \
             stream and no index (the peer's own calls, from the run above)"
                .to_owned(),
            "1".to_owned(),
            int(versus.peer.outcome.rate()),
            int(versus.peer.store_cpu_us),
            ratio(versus.peer.store_cpu_us, whole),
        ]);
    }
    let mut out = String::new();
    report::push_heading(&mut out, 5, "Where the store's time goes on a create");
    let _ = write!(
        out,
        "The store answers one request at a time, so at {clients} clients its CPU per create \
         bounds the rate. `CreateUser`'s own transaction, cut to its first items and sent \
         from the harness at {clients} clients (each run at most {} operations or {} s), \
         against the peer's create:\n\n",
        args.max_ops, args.seconds
    );
    out.push_str(&table.render());
    out.push('\n');
    Ok(out)
}

pub(super) async fn run_peer_create_user(peer: &Peer, limits: Limits) -> anyhow::Result<Outcome> {
    let peer = peer.clone();
    Ok(load::closed_loop(limits, move |_, _| {
        let peer = peer.clone();
        async move {
            let id = uuid::Uuid::new_v4().simple().to_string();
            peer.create_user(&format!("peer-{id}@example.com"), "Bench User")
                .await
                .map_err(|e| format!("{e:#}"))?;
            Ok(Step::Done)
        }
    })
    .await)
}

pub(super) async fn peer_orders(peer: &Peer, n: usize) -> anyhow::Result<Vec<String>> {
    let user = peer
        .create_user("peer-orders@example.com", "Bench User")
        .await?;
    let lines = [
        ("SKU-BOOK-001".to_owned(), 2, 1250),
        ("SKU-PEN-042".to_owned(), 1, 300),
    ];
    let (peer, user, lines) = (peer.clone(), Arc::new(user), Arc::new(lines));
    load::collect("creating the peer's orders", n, 16, move |_, _| {
        let (peer, user, lines) = (peer.clone(), user.clone(), lines.clone());
        async move {
            peer.create_order(&user, &lines[..], "USD")
                .await
                .map_err(|e| format!("{e:#}"))
        }
    })
    .await
}

pub(super) async fn run_peer_update(
    peer: &Peer,
    orders: &[String],
    limits: Limits,
) -> anyhow::Result<Outcome> {
    let peer = peer.clone();
    let parts = Arc::new(ops::partition(orders, limits.concurrency));
    Ok(load::closed_loop(limits, move |worker, i| {
        let peer = peer.clone();
        let mine = &parts[worker];
        let next = ops::nth_update(mine, i).map(|(order, round)| (order, ops::STATUS_PATH[round]));
        async move {
            let Some((order, status)) = next else {
                return Ok(Step::Exhausted);
            };
            peer.update_order_status(&order, status_name(status))
                .await
                .map_err(|e| format!("{e:#}"))?;
            Ok(Step::Done)
        }
    })
    .await)
}

fn status_name(status: dynabridge::pb::OrderStatus) -> &'static str {
    use dynabridge::pb::OrderStatus as S;
    match status {
        S::Processing => "PROCESSING",
        S::Shipped => "SHIPPED",
        S::Delivered => "DELIVERED",
        S::Cancelled => "CANCELLED",
        S::Created | S::Unspecified => "CREATED",
    }
}
