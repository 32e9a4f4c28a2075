//! The projection lag at half the highest update rate measured, and the
//! projector's calls per event over the same window.

use super::*;

/// Updates at `rate` per second for the lag window, in an open loop, while
/// a probe measures when its own updates become visible through the query
/// service; with the projector's own commit → visible histogram over the
/// same window.
pub(super) async fn projection_lag(
    system: &System,
    args: &SuiteArgs,
    max_without_projection: f64,
) -> anyhow::Result<String> {
    let command_url = system.command_url()?;
    let query_url = system.query_url()?;
    let projector = system.projector.as_ref().context("the projector runs")?;
    let projector_metrics = projector.addr("metrics")?;

    // The maximum rate of the whole system: the projector's writes share
    // the store and the cores with the commands, so the rate measured with
    // it stopped is not one the system can sustain.
    let clients = args.clients.iter().copied().max().unwrap_or(1);
    eprintln!("projection lag: the maximum UpdateOrderStatus rate with the projector running");
    let needed = (args.max_ops as usize)
        .div_ceil(ops::STATUS_PATH.len())
        .max(clients);
    let (orders, user) = ops::order_pool(&command_url, needed).await?;
    let users = [user];
    let last = ops::create_orders(&command_url, &users[..1], 1, 1).await?;
    ops::await_order(&query_url, &last[0].0, 1).await?;
    let calibration =
        ops::run_update_order_status(&command_url, &orders, args.limits(clients)).await?;
    let max_with_projection = calibration.rate();
    let rate = (max_with_projection / 2.0).max(10.0);
    let last = ops::create_orders(&command_url, &users[..1], 1, 1).await?;
    ops::await_order(&query_url, &last[0].0, 1).await?;

    let window = Duration::from_secs(args.lag_seconds);
    let calls = (rate * window.as_secs_f64()).ceil() as usize;
    eprintln!("projection lag at {rate:.0}/s for {window:?}");

    // Orders enough for the window, each moved at most once a second.
    let per_round = (rate.ceil() as usize).max(1);
    let needed = calls.div_ceil(ops::STATUS_PATH.len()).max(per_round);
    let (orders, user) = ops::order_pool(&command_url, needed).await?;
    let users = [user];
    let probe_orders: Vec<String> = ops::create_orders(&command_url, &users[..1], 100, 4)
        .await?
        .into_iter()
        .map(|(o, _)| o)
        .collect();
    let last = ops::create_orders(&command_url, &users[..1], 1, 1).await?;
    ops::await_order(&query_url, &last[0].0, 1).await?;

    let channels = ops::connections(&command_url, 32).await?;
    let orders = Arc::new(orders);
    let before = Scrape::fetch(&projector_metrics).await?;
    let projector_cpu = projector.cpu()?;
    let load = {
        let orders = orders.clone();
        load::open_loop(rate, window, calls as u64, 1024, move |i| {
            let n = orders.len();
            let round = i as usize / n;
            let order = orders[i as usize % n].clone();
            let mut client =
                CommandServiceClient::new(channels[i as usize % channels.len()].clone());
            async move {
                let Some(status) = ops::STATUS_PATH.get(round) else {
                    return Ok(Step::Exhausted);
                };
                client
                    .update_order_status(ops::update_order_status_request(&order, *status))
                    .await
                    .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
                Ok(Step::Done)
            }
        })
    };
    let probe = async {
        let mut command = CommandServiceClient::new(ops::connect(&command_url).await?);
        let mut query = QueryServiceClient::new(ops::connect(&query_url).await?);
        let (mut from_send, mut from_ack) = (load::new_histogram(), load::new_histogram());
        let deadline = Instant::now() + window;
        'outer: for status in ops::STATUS_PATH {
            for order in &probe_orders {
                if Instant::now() >= deadline {
                    break 'outer;
                }
                let (send, ack) = ops::visible_after(
                    &mut command,
                    &mut query,
                    order,
                    status,
                    Duration::from_millis(2),
                )
                .await
                .map_err(anyhow::Error::msg)?;
                from_send.saturating_record(send.as_micros() as u64);
                from_ack.saturating_record(ack.as_micros() as u64);
                // About twenty samples a second, so the probe adds little.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok::<_, anyhow::Error>((from_send, from_ack))
    };
    let (load, probe) = tokio::join!(load, probe);
    note_errors(&load);
    let (from_send, from_ack) = probe?;
    // Let the projector finish the window's events before reading it.
    let last = ops::create_orders(&command_url, &users[..1], 1, 1).await?;
    ops::await_order(&query_url, &last[0].0, 1).await?;
    let after = Scrape::fetch(&projector_metrics).await?;
    let projector_cpu = projector.cpu()?.saturating_sub(projector_cpu);

    let lag_buckets = before.bucket_deltas(&after, "dynabridge_projector_visible_lag_seconds");
    let events = lag_buckets.last().map_or(0.0, |b| b.1);
    let q = |q: f64| {
        bucket_quantile(&lag_buckets, q).map_or_else(
            || "n/a".to_owned(),
            |s| {
                if s.is_infinite() {
                    "> largest bucket".to_owned()
                } else {
                    format!("≤ {}", ms(s * 1000.0))
                }
            },
        )
    };
    let mut out = String::new();
    report::push_heading(&mut out, 3, "Projection lag");
    let _ = writeln!(
        out,
        "The highest `UpdateOrderStatus` rate with the projector running, {} clients for up to \
         {} s: {} /s ({} /s with it stopped, above). The lag is measured at half that: \
         open-loop `UpdateOrderStatus` at {} /s for {} s: {} done, {} errors ({} achieved). Meanwhile a probe sends its own update about twenty \
         times a second and reads the order through the query service every 2 ms until it \
         shows the new version.\n",
        clients,
        args.seconds,
        int(max_with_projection),
        int(max_without_projection),
        int(rate),
        args.lag_seconds,
        int(load.ops as f64),
        load.errors,
        int(load.rate()),
    );
    let mut table = Table::new(&["measure", "samples", "p50 ms", "p99 ms", "max ms"]);
    for (name, h) in [
        (
            "probe: acknowledged → visible in the query service",
            &from_ack,
        ),
        ("probe: sent → visible in the query service", &from_send),
    ] {
        table.row(vec![
            name.to_owned(),
            int(h.len() as f64),
            ms(h.value_at_quantile(0.5) as f64 / 1000.0),
            ms(h.value_at_quantile(0.99) as f64 / 1000.0),
            ms(h.max() as f64 / 1000.0),
        ]);
    }
    table.row(vec![
        "projector: event committed → read model written (histogram bucket bounds)".into(),
        int(events),
        q(0.5),
        q(0.99),
        "n/a".into(),
    ]);
    out.push_str(&table.render());
    let _ = writeln!(
        out,
        "\nProjector CPU over the window: {} µs per event. Load-phase command latency: p50 {} ms, p99 {} ms.\n",
        int(projector_cpu.as_secs_f64() * 1e6 / events.max(1.0)),
        ms(load.quantile_ms(0.5)),
        ms(load.quantile_ms(0.99)),
    );
    let _ = writeln!(
        out,
        "{}",
        projector_costs(&before, &after, events, system.eventbridge.is_some())
    );
    Ok(out)
}

/// The projector's calls per event, from its metrics over a window.
fn projector_costs(before: &Scrape, after: &Scrape, events: f64, to_bus: bool) -> String {
    let calls_total = "dynabridge_aws_calls_total";
    let calls = |op: &str| before.delta(after, calls_total, &[("operation", op)]);
    let batches = |records: &str| {
        before.delta(
            after,
            "dynabridge_projector_batches_total",
            &[("records", records)],
        )
    };
    let (full, empty) = (batches("nonempty"), batches("empty"));
    let checkpoints = before.delta(after, "dynabridge_projector_checkpoint_writes_total", &[]);
    let put_events = calls("PutEvents");
    let entries = before.delta(after, "dynabridge_eventbridge_entries_total", &[]);
    let published = before.delta(after, "dynabridge_projector_events_published_total", &[]);
    let store_calls = before.delta(after, calls_total, &[("service", "dynamodb")])
        + before.delta(after, calls_total, &[("service", "dynamodbstreams")]);
    let per_event = |n: f64| format!("{:.3}", n / events.max(1.0));
    let per = |n: f64, d: f64| {
        if d > 0.0 {
            format!("{:.2}", n / d)
        } else {
            "n/a".into()
        }
    };
    let mut table = Table::new(&["projector, over the lag window", "count", "per event"]);
    table.row(vec!["events projected".into(), int(events), "1".into()]);
    table.row(vec![
        "DynamoDB and DynamoDB Streams calls".into(),
        int(store_calls),
        per_event(store_calls),
    ]);
    for op in [
        "GetRecords",
        "GetShardIterator",
        "DescribeStream",
        "Query",
        "GetItem",
        "PutItem",
        "UpdateItem",
        "BatchWriteItem",
        "TransactWriteItems",
    ] {
        let n = calls(op);
        if n > 0.0 {
            table.row(vec![format!("of which {op}"), int(n), per_event(n)]);
        }
    }
    table.row(vec![
        format!(
            "GetRecords pages with records (and {} empty ones)",
            int(empty)
        ),
        int(full),
        per_event(full),
    ]);
    table.row(vec![
        format!(
            "checkpoint writes: {} per page with records, {} per page",
            per(checkpoints, full),
            per(checkpoints, full + empty)
        ),
        int(checkpoints),
        per_event(checkpoints),
    ]);
    table.row(vec![
        "events published".into(),
        int(published),
        per_event(published),
    ]);
    table.row(vec![
        if to_bus {
            format!(
                "PutEvents calls: {} entries each, {} × events published / 10 (to the bus at --eventbridge-endpoint)",
                per(entries, put_events),
                per(put_events, published / 10.0)
            )
        } else {
            format!(
                "PutEvents calls: {} entries each (the embedded default publishes to a file: none)",
                per(entries, put_events)
            )
        },
        int(put_events),
        per_event(put_events),
    ]);
    table.render()
}
