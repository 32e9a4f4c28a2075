//! The local stack, hosted in the test process on free ports.

mod helpers;
mod metrics;

use std::collections::BTreeSet;

use aws_sdk_dynamodb::types::AttributeValue;
use dynabridge::schema::{Tables, unique_emails};
use helpers::{dynamodb, free_ports, spawn_stack};
use local_stack::stream_index::{CREATED_AT_INDEX, SEQUENCE_INDEX};
use local_stack::{Options, StartError};

fn expected_tables(prefix: &str) -> BTreeSet<String> {
    let t = Tables::new(prefix);
    [
        t.event_store(),
        t.idempotency(),
        t.unique_emails(),
        t.user_profiles(),
        t.order_summaries(),
        t.products(),
        t.purchases(),
        t.snapshots(),
        t.checkpoints(),
        t.process_checkpoints(),
        t.parked(),
        t.admin(),
        t.generations(),
        t.replays(),
    ]
    .into_iter()
    .collect()
}

async fn table_names(client: &aws_sdk_dynamodb::Client) -> BTreeSet<String> {
    client
        .list_tables()
        .send()
        .await
        .expect("list tables")
        .table_names
        .unwrap_or_default()
        .into_iter()
        .collect()
}

/// The indexes the workaround adds, as found in the store's file.
fn our_indexes(database: &std::path::Path) -> BTreeSet<String> {
    let conn = rusqlite::Connection::open(database).expect("open the store's file");
    let mut stmt = conn
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = '_stream_records'",
        )
        .expect("prepare");
    stmt.query_map([], |row| row.get::<_, String>(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_stack_serves_on_every_port_and_stops_cleanly() {
    let stack = spawn_stack(Options {
        in_memory: true,
        ..free_ports()
    })
    .await;
    let e = stack.endpoints.clone();
    assert!(e.in_memory);
    assert!(e.database.exists(), "the store is a file in a temp dir");
    let ports = [
        e.command.port(),
        e.query.port(),
        e.projector_health.port(),
        e.process_manager_health.port(),
        e.admin.port(),
        e.dynamodb.port(),
    ];
    assert!(
        ports.iter().all(|p| *p != 0),
        "bound ports reported: {ports:?}"
    );

    stack.wait_serving().await;
    assert_eq!(
        table_names(&dynamodb(&e).await).await,
        expected_tables(&e.table_prefix)
    );

    stack.stop().await.expect("a clean shutdown");
    assert!(!e.data_dir.exists(), "the temp dir goes on exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_start_on_the_same_data_dir_finds_the_tables_already_there() {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = Options {
        data_dir: dir.path().to_owned(),
        table_prefix: "second-start".to_owned(),
        ..free_ports()
    };
    let tables = Tables::new("second-start");
    let marker_email = "marker@local-stack.test";

    let first = spawn_stack(options.clone()).await;
    first.wait_serving().await;
    let client = dynamodb(&first.endpoints).await;
    assert_eq!(table_names(&client).await, expected_tables("second-start"));
    let created = client
        .describe_table()
        .table_name(tables.event_store())
        .send()
        .await
        .expect("describe")
        .table
        .and_then(|t| t.creation_date_time)
        .expect("a creation time");
    client
        .put_item()
        .table_name(tables.unique_emails())
        .item(
            unique_emails::EMAIL,
            AttributeValue::S(marker_email.to_owned()),
        )
        .item(
            unique_emails::USER_ID,
            AttributeValue::S("marker".to_owned()),
        )
        .send()
        .await
        .expect("put the marker");
    first.stop().await.expect("the first stack stops cleanly");

    let second = spawn_stack(options).await;
    second.wait_serving().await;
    let client = dynamodb(&second.endpoints).await;
    assert_eq!(table_names(&client).await, expected_tables("second-start"));
    let created_again = client
        .describe_table()
        .table_name(tables.event_store())
        .send()
        .await
        .expect("describe")
        .table
        .and_then(|t| t.creation_date_time)
        .expect("a creation time");
    assert_eq!(created_again, created, "the table was not made again");
    let marker = client
        .get_item()
        .table_name(tables.unique_emails())
        .key(
            unique_emails::EMAIL,
            AttributeValue::S(marker_email.to_owned()),
        )
        .send()
        .await
        .expect("get the marker");
    assert!(
        marker.item.is_some(),
        "data written by the first start is still there"
    );
    assert_eq!(
        our_indexes(&second.endpoints.database),
        [CREATED_AT_INDEX.to_owned(), SEQUENCE_INDEX.to_owned()]
            .into_iter()
            .collect()
    );
    second.stop().await.expect("the second stack stops cleanly");
    assert!(
        dir.path().join(local_stack::DATABASE_FILE).exists(),
        "the data stays"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_stream_index_the_store_is_left_as_shipped() {
    let dir = tempfile::tempdir().expect("temp dir");
    let stack = spawn_stack(Options {
        data_dir: dir.path().to_owned(),
        no_stream_index: true,
        ..free_ports()
    })
    .await;
    assert!(!stack.endpoints.stream_index);
    assert!(our_indexes(&stack.endpoints.database).is_empty());
    stack.wait_serving().await;
    stack.stop().await.expect("a clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_port_fails_start_up_before_anything_is_written() {
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("never-made");
    let err = local_stack::start(Options {
        data_dir: data_dir.clone(),
        query_port: taken.local_addr().expect("addr").port(),
        ..free_ports()
    })
    .await
    .expect_err("the port is taken");
    assert!(
        matches!(
            err,
            StartError::Bind {
                what: "query-service",
                ..
            }
        ),
        "{err}"
    );
    assert!(!data_dir.exists(), "nothing was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_service_stops_the_rest_and_is_reported() {
    // A directory where the projector's sink file should be: the projector
    // cannot open its sink and fails at start.
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join(local_stack::SINK_FILE)).expect("mkdir");
    let stack = local_stack::start(Options {
        data_dir: dir.path().to_owned(),
        ..free_ports()
    })
    .await
    .expect("start-up itself succeeds");
    let command = stack.endpoints().command;

    let ended = tokio::time::timeout(helpers::DEADLINE, stack.run_until(std::future::pending()))
        .await
        .expect("the stack stops on its own before the deadline");
    let err = ended.expect_err("a failure is reported");
    assert!(
        matches!(
            err,
            local_stack::RunError::Failed {
                service: "projector",
                ..
            }
        ),
        "{err}"
    );
    // The other services are gone too.
    assert!(
        tokio::net::TcpStream::connect(command).await.is_err(),
        "the command service no longer listens"
    );
}
