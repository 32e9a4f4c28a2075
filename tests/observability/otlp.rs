//! Trace export, from the real binary: with `OTEL_EXPORTER_OTLP_ENDPOINT`
//! set, the command service exports its request span to the collector as
//! a child of the caller's span, and stores its own context with the
//! events, so that what the projector publishes continues from it.
//!
//! Runs the built binary, as `tests/processes` does: `cargo test
//! --workspace` builds it first (alone: `cargo build --workspace --bins`).

use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::types::AttributeValue;
use dynabridge::pb;
use dynabridge::pb::command_service_client::CommandServiceClient;
use dynabridge::schema::event_store;
use dynabridge_runtime::telemetry::TraceParent;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;

use crate::helpers::{Store, eventually};
use crate::processes;

const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

/// An OTLP collector that keeps every span it receives, with the
/// `service.name` of its resource.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<(String, Span)>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .and_then(|a| a.value.as_ref())
                .map(|v| format!("{:?}", v.value))
                .unwrap_or_default();
            for scope in resource.scope_spans {
                spans.extend(scope.spans.into_iter().map(|s| (service.clone(), s)));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let service = TraceServiceServer::new(self.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        endpoint
    }

    fn spans(&self) -> Vec<(String, Span)> {
        self.0.lock().unwrap().clone()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_span_is_exported_as_the_callers_child_and_stored_with_the_event() {
    let store = Store::start().await;
    let collector = Collector::default();
    let collector_endpoint = collector.start().await;
    let command = processes::spawn(
        "command-service",
        &store.tables.prefix,
        &["--endpoint-url", &store.endpoint, "--listen", "127.0.0.1:0"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", collector_endpoint.as_str()),
            // Export within the test's patience, not after 5 s.
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ],
    );

    let mut client = CommandServiceClient::connect(format!("http://{}", command.addr))
        .await
        .unwrap();
    let mut request = tonic::Request::new(pb::CreateUserRequest {
        request_id: uuid::Uuid::new_v4().to_string(),
        email: "otlp@example.com".into(),
        name: "Otlp".into(),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("traceparent", TRACEPARENT.parse().unwrap());
    let user_id = client
        .create_user(request)
        .await
        .unwrap()
        .into_inner()
        .user_id;

    let caller = TraceParent::parse(TRACEPARENT).unwrap();
    let item = store
        .dynamo
        .get_item()
        .table_name(store.tables.event_store())
        .key(event_store::AGGREGATE_ID, AttributeValue::S(user_id))
        .key(event_store::VERSION, AttributeValue::N("1".into()))
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    let stored = TraceParent::parse(item[event_store::TRACE_PARENT].as_s().unwrap()).unwrap();
    assert_eq!(stored.trace_id(), caller.trace_id(), "the caller's trace");
    assert_ne!(stored.span_id(), caller.span_id(), "this request's span");
    assert!(stored.sampled());

    let (service, span) = eventually("the request span exported", || async {
        collector
            .spans()
            .into_iter()
            .find(|(_, span)| hex(&span.span_id) == stored.span_id())
    })
    .await;
    assert_eq!(hex(&span.trace_id), caller.trace_id());
    assert_eq!(hex(&span.parent_span_id), caller.span_id());
    assert_eq!(span.name, "rpc");
    assert!(service.contains("command-service"), "{service}");

    // Stops cleanly, flushing what is left.
    command.terminate();
}
