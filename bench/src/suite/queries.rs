//! The query scenarios, with the projector running and caught up:
//! `GetUserProfile` and `ListOrdersByUser` against their ceilings.

use super::*;

/// Starts the projector, creates the fixtures and waits until they are
/// visible, then measures both query scenarios at every client count,
/// writes their tables to `out`, and returns their rows
/// (`GetUserProfile`, `ListOrdersByUser`).
pub(super) async fn measure_all(
    system: &mut System,
    args: &SuiteArgs,
    out: &mut String,
) -> anyhow::Result<(Vec<Row>, Vec<Row>)> {
    let command_url = system.command_url()?;
    let query_url = system.query_url()?;
    system.start_projector().await?;
    eprintln!("queries: fixtures");
    let fixture_users = args.clients.iter().copied().max().unwrap_or(1).max(8);
    let users = ops::create_users(&command_url, fixture_users, 16).await?;
    let orders = ops::create_orders(&command_url, &users, ORDERS_PER_USER, 16).await?;
    // One shard, read in order: once the last order is visible, all are.
    let sentinel = ops::create_orders(&command_url, &users[..1], 1, 1).await?;
    ops::await_order(&query_url, &sentinel[0].0, 1).await?;
    drop(orders);
    let user_ids: Vec<UserId> = users
        .iter()
        .map(|u| u.parse::<uuid::Uuid>().map(UserId::from_uuid))
        .collect::<Result<_, _>>()
        .context("user ids are UUIDs")?;
    let profile_sizes = {
        let mut client = QueryServiceClient::new(ops::connect(&query_url).await?);
        let request = dynabridge::pb::GetUserProfileRequest {
            user_id: users[0].clone(),
            min_version: 0,
        };
        let request_len = request.encoded_len();
        let response = client.get_user_profile(request).await?.into_inner();
        Sizes {
            request: request_len,
            response: response.encoded_len(),
        }
    };
    let list_sizes = {
        let mut client = QueryServiceClient::new(ops::connect(&query_url).await?);
        let request = dynabridge::pb::ListOrdersByUserRequest {
            user_id: users[0].clone(),
            page_size: PAGE_SIZE as i32,
            page_token: String::new(),
        };
        let request_len = request.encoded_len();
        let response = client.list_orders_by_user(request).await?.into_inner();
        Sizes {
            request: request_len,
            response: response.encoded_len(),
        }
    };
    let mut profile_rows = Vec::new();
    let mut list_rows = Vec::new();
    for &clients in &args.clients {
        eprintln!("queries, {clients} clients");
        let limits = args.limits(clients);
        let ours = measure(Some(&system.query), &system.store, async {
            ops::run_get_user_profile(&query_url, &users, limits).await
        })
        .await?;
        let storage = measure(None, &system.store, async {
            Ok(ceiling::run_user_profile(&system.storage, &user_ids, limits).await)
        })
        .await?;
        let (transport, both) = echo_ceilings(
            system,
            &profile_sizes,
            limits,
            ceiling::read_calls(&user_ids, limits.concurrency, None),
        )
        .await?;
        profile_rows.push(Row {
            clients,
            ours,
            storage,
            transport,
            both,
            versus: None,
        });
        let ours = measure(Some(&system.query), &system.store, async {
            ops::run_list_orders_by_user(&query_url, &users, PAGE_SIZE as i32, limits).await
        })
        .await?;
        let storage = measure(None, &system.store, async {
            Ok(ceiling::run_orders_of(&system.storage, &user_ids, PAGE_SIZE, limits).await)
        })
        .await?;
        let (transport, both) = echo_ceilings(
            system,
            &list_sizes,
            limits,
            ceiling::read_calls(&user_ids, limits.concurrency, Some(PAGE_SIZE)),
        )
        .await?;
        list_rows.push(Row {
            clients,
            ours,
            storage,
            transport,
            both,
            versus: None,
        });
    }
    report::push_heading(out, 3, "Queries");
    out.push_str(
        "The peer has no query side to compare: cqrs-es leaves read models to the application.\n\n",
    );
    report::push_heading(out, 4, "GetUserProfile");
    out.push_str(&scenario_table(&profile_rows));
    out.push('\n');
    report::push_heading(out, 4, &format!("ListOrdersByUser (page of {PAGE_SIZE})"));
    out.push_str(&scenario_table(&list_rows));
    out.push('\n');

    Ok((profile_rows, list_rows))
}
