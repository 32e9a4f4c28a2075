//! What each operation costs in DynamoDB calls and capacity, counted
//! exactly.

use super::commands::{peer_orders, run_peer_create_user, run_peer_update};
use super::*;

/// DynamoDB calls and capacity per operation, counted exactly.
pub(super) async fn cost_per_operation(
    system: &mut System,
    args: &SuiteArgs,
) -> anyhow::Result<String> {
    let n = args.cost_ops.max(1);
    let command_url = system.command_url()?;
    let query_url = system.query_url()?;
    let limits = Limits {
        concurrency: 4,
        max_ops: n,
        max_duration: Duration::from_secs(120),
    };
    let mut table = Table::new(&[
        "operation",
        "DynamoDB calls per op",
        "by kind",
        "capacity units per op",
    ]);
    let row = |name: &str, before: &Scrape, after: &Scrape, ops: u64| -> Vec<String> {
        let calls = before.delta(
            after,
            "dynabridge_aws_calls_total",
            &[("service", "dynamodb")],
        );
        let mut kinds = Vec::new();
        for op in [
            "Query",
            "GetItem",
            "TransactWriteItems",
            "PutItem",
            "UpdateItem",
        ] {
            let c = before.delta(after, "dynabridge_aws_calls_total", &[("operation", op)]);
            if c > 0.0 {
                kinds.push(format!("{op} {:.2}", c / ops as f64));
            }
        }
        let units = before.delta(after, "dynabridge_dynamodb_capacity_units_total", &[]);
        vec![
            name.to_owned(),
            format!("{:.2}", calls / ops as f64),
            kinds.join(", "),
            format!("{:.2}", units / ops as f64),
        ]
    };
    let command_metrics = system.command.addr("metrics")?;

    eprintln!("cost: commands");
    let before = Scrape::fetch(&command_metrics).await?;
    let outcome = ops::run_create_user(&command_url, limits).await?;
    let after = Scrape::fetch(&command_metrics).await?;
    table.row(row("CreateUser", &before, &after, outcome.ops));

    let users = ops::create_users(&command_url, 4, 4).await?;
    let before = Scrape::fetch(&command_metrics).await?;
    let orders: Vec<String> = ops::create_orders(&command_url, &users, n.div_ceil(4) as usize, 4)
        .await?
        .into_iter()
        .map(|(o, _)| o)
        .collect();
    let after = Scrape::fetch(&command_metrics).await?;
    table.row(row("CreateOrder", &before, &after, orders.len() as u64));

    let one_round = Limits {
        max_ops: orders.len() as u64,
        ..limits
    };
    let before = Scrape::fetch(&command_metrics).await?;
    let outcome = ops::run_update_order_status(
        &command_url,
        &orders,
        Limits {
            concurrency: 1,
            ..one_round
        },
    )
    .await?;
    let after = Scrape::fetch(&command_metrics).await?;
    table.row(row(
        "UpdateOrderStatus, aggregate in this instance's cache",
        &before,
        &after,
        outcome.ops,
    ));

    // A restarted command service has seen none of them.
    let old = std::mem::replace(&mut system.command, spawn_command(&system.dynamodb).await?);
    old.stop().await?;
    let command_url = system.command_url()?;
    let command_metrics = system.command.addr("metrics")?;
    let before = Scrape::fetch(&command_metrics).await?;
    // The second status of each order: PROCESSING is done.
    let cold = run_second_status(&command_url, &orders).await?;
    let after = Scrape::fetch(&command_metrics).await?;
    table.row(row(
        "UpdateOrderStatus, first command after a restart (cold cache)",
        &before,
        &after,
        cold,
    ));

    eprintln!("cost: queries");
    // The projector runs: wait until it has caught up with the orders.
    let last = ops::create_orders(&command_url, &users[..1], 1, 1).await?;
    ops::await_order(&query_url, &last[0].0, 1).await?;
    let page = (n.div_ceil(4) as usize).min(PAGE_SIZE);
    let query_metrics = system.query.addr("metrics")?;
    let before = Scrape::fetch(&query_metrics).await?;
    let outcome = ops::run_get_user_profile(&query_url, &users, limits).await?;
    let after = Scrape::fetch(&query_metrics).await?;
    table.row(row("GetUserProfile", &before, &after, outcome.ops));
    let listed: Vec<String> = users[..1].to_vec();
    let before = Scrape::fetch(&query_metrics).await?;
    let outcome = ops::run_list_orders_by_user(&query_url, &listed, page as i32, limits).await?;
    let after = Scrape::fetch(&query_metrics).await?;
    table.row(row(
        &format!("ListOrdersByUser (page of {page})"),
        &before,
        &after,
        outcome.ops,
    ));

    eprintln!("cost: peer");
    let before = system.own_scrape();
    let outcome = run_peer_create_user(&system.peer, limits).await?;
    let after = system.own_scrape();
    table.row(row("peer: create user", &before, &after, outcome.ops));
    let peer_orders = peer_orders(&system.peer, n as usize).await?;
    let before = system.own_scrape();
    let outcome = run_peer_update(
        &system.peer,
        &peer_orders,
        Limits {
            max_ops: peer_orders.len() as u64,
            ..limits
        },
    )
    .await?;
    let after = system.own_scrape();
    table.row(row(
        "peer: update order status",
        &before,
        &after,
        outcome.ops,
    ));

    let mut out = String::new();
    report::push_heading(&mut out, 3, "Cost per operation");
    let _ = writeln!(
        out,
        "Counted exactly from each process's `dynabridge_aws_calls_total` and \
         `dynabridge_dynamodb_capacity_units_total` (ReturnConsumedCapacity TOTAL), over {n} \
         operations of each kind; the peer's from the same counters on its client in this \
         process, which adds `ReturnConsumedCapacity` to the peer's calls (dynamo-es does not \
         ask for it).\n"
    );
    out.push_str(&table.render());
    out.push('\n');
    Ok(out)
}

async fn run_second_status(command_url: &str, orders: &[String]) -> anyhow::Result<u64> {
    let mut client = CommandServiceClient::new(ops::connect(command_url).await?);
    let mut done = 0;
    for order in orders {
        client
            .update_order_status(ops::update_order_status_request(order, ops::STATUS_PATH[1]))
            .await?;
        done += 1;
    }
    Ok(done)
}
