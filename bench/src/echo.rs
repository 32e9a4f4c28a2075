//! The transport ceiling: a tonic service that answers at once, with a
//! payload as long as it was asked for. Measured with requests and
//! responses as large as a scenario's real ones, it is what gRPC over
//! loopback costs with no work behind it.
//!
//! Given the store, it also makes a scenario's storage calls when a request
//! asks, through the storage ceiling's code ([`Storage`]), before it
//! answers: then it is the transport and storage ceiling together, what the
//! service would cost if gRPC and its storage calls were all it did.

use std::future::Future;

use dynabridge_domain::{OrderId, UserId};
use tonic::{Request, Response, Status};

use crate::ceiling::Storage;

pub mod pb {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("dynabridge.bench.v1");
}

use pb::echo_request::StorageCall;
use pb::echo_service_server::{EchoService, EchoServiceServer};
use pb::{EchoRequest, EchoResponse, OrderUpdate, OrdersPage};

/// Answers can be at most this long; larger requests are refused.
const MAX_RESPONSE: u32 = 1 << 20;

/// The echo service; with `storage`, it makes the storage calls requests
/// ask for.
#[derive(Debug, Default)]
pub struct EchoServer {
    storage: Option<Storage>,
}

#[tonic::async_trait]
impl EchoService for EchoServer {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        let EchoRequest {
            response_size,
            storage_call,
            ..
        } = request.into_inner();
        if response_size > MAX_RESPONSE {
            return Err(Status::invalid_argument(format!(
                "response_size must be at most {MAX_RESPONSE}"
            )));
        }
        if let Some(call) = storage_call {
            let Some(storage) = &self.storage else {
                return Err(Status::failed_precondition(
                    "this echo service has no store: start it with --endpoint-url",
                ));
            };
            make(storage, call).await.map_err(Status::internal)?;
        }
        Ok(Response::new(EchoResponse {
            payload: vec![b'x'; response_size as usize],
        }))
    }
}

/// Makes the storage calls of `call`.
async fn make(storage: &Storage, call: StorageCall) -> Result<(), String> {
    let uuid = |raw: &str| raw.parse::<uuid::Uuid>().map_err(|e| e.to_string());
    match call {
        StorageCall::CreateUser(_) => storage.create_user().await.map(drop),
        StorageCall::UpdateOrderStatus(OrderUpdate { order_id, round }) => {
            let order_id = OrderId::from_uuid(uuid(&order_id)?);
            storage.update_round(order_id, round as usize).await
        }
        StorageCall::UserProfile(user_id) => {
            storage
                .user_profile(UserId::from_uuid(uuid(&user_id)?))
                .await
        }
        StorageCall::OrdersOfUser(OrdersPage { user_id, page_size }) => {
            storage
                .orders_of(UserId::from_uuid(uuid(&user_id)?), page_size as usize)
                .await
        }
    }
}

impl EchoServer {
    /// Serves on `listener` until `shutdown`; with `storage`, requests may
    /// ask for storage calls.
    pub async fn serve(
        listener: tokio::net::TcpListener,
        storage: Option<Storage>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), tonic::transport::Error> {
        tonic::transport::Server::builder()
            .add_service(EchoServiceServer::new(EchoServer { storage }))
            .serve_with_incoming_shutdown(dynabridge_runtime::grpc::incoming(listener), shutdown)
            .await
    }
}

/// A request whose encoded length is `request_len` bytes (for lengths of
/// at least the unpadded request's, which every real request's is),
/// asking for `call` and for a response of `response_len` encoded bytes.
pub fn sized_request(
    request_len: usize,
    response_len: usize,
    call: Option<StorageCall>,
) -> EchoRequest {
    use prost::Message as _;
    let response_size = payload_for(response_len);
    let mut request = EchoRequest {
        payload: Vec::new(),
        response_size,
        storage_call: call,
    };
    let fixed = request.encoded_len();
    // The payload's tag and length prefix take 2 or 3 bytes.
    let mut payload = request_len.saturating_sub(fixed + 2);
    request.payload = vec![b'x'; payload];
    while request.encoded_len() > request_len && payload > 0 {
        payload -= 1;
        request.payload.truncate(payload);
    }
    request
}

/// The payload length whose response encodes to about `response_len`.
fn payload_for(response_len: usize) -> u32 {
    let overhead = if response_len > 129 { 3 } else { 2 };
    u32::try_from(response_len.saturating_sub(overhead)).unwrap_or(MAX_RESPONSE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::echo_service_client::EchoServiceClient;
    use prost::Message as _;

    #[test]
    fn sized_requests_and_responses_encode_to_the_asked_length() {
        let profile = || Some(StorageCall::UserProfile(uuid::Uuid::new_v4().to_string()));
        for (req, resp, call) in [
            (60, 90, None),
            (200, 120, None),
            (1500, 4000, None),
            (60, 90, profile()),
            (200, 120, profile()),
        ] {
            let with_call = call.is_some();
            let request = sized_request(req, resp, call);
            assert_eq!(request.encoded_len(), req, "request of {req}");
            assert_eq!(request.storage_call.is_some(), with_call);
            let response = EchoResponse {
                payload: vec![b'x'; request.response_size as usize],
            };
            assert_eq!(response.encoded_len(), resp, "response of {resp}");
        }
    }

    /// An echo service on a free loopback port, with `storage` if given.
    async fn echo_service(
        storage: Option<Storage>,
    ) -> EchoServiceClient<tonic::transport::Channel> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(EchoServer::serve(listener, storage, std::future::pending()));
        EchoServiceClient::new(crate::ops::connect(&url).await.unwrap())
    }

    #[tokio::test]
    async fn without_a_store_a_storage_call_is_refused() {
        let mut client = echo_service(None).await;
        let plain = client.echo(sized_request(60, 90, None)).await.unwrap();
        assert_eq!(plain.into_inner().encoded_len(), 90);
        let refused = client
            .echo(sized_request(60, 90, Some(StorageCall::CreateUser(true))))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    }

    #[tokio::test]
    async fn with_the_store_it_makes_the_calls_asked_for() {
        let stack = local_stack::start(local_stack::Options {
            in_memory: true,
            store_only: true,
            dynamodb_port: 0,
            table_prefix: "echo".into(),
            ..local_stack::Options::default()
        })
        .await
        .unwrap();
        let aws = dynabridge_aws::AwsArgs {
            endpoint_url: Some(stack.endpoints().dynamodb_url()),
            region: Some("us-east-1".into()),
        };
        let sdk = local_stack::embedded_sdk_config(&aws, true).await;
        let client = dynabridge_aws::dynamodb_client(&sdk);
        let tables = dynabridge::schema::Tables::new("echo");
        let mut echo = echo_service(Some(Storage::new(client.clone(), tables.clone()))).await;
        let events = || async {
            client
                .scan()
                .table_name(tables.event_store())
                .send()
                .await
                .unwrap()
                .count
        };

        for n in 1..=2 {
            let answer = echo
                .echo(sized_request(60, 90, Some(StorageCall::CreateUser(true))))
                .await
                .unwrap();
            assert_eq!(answer.into_inner().encoded_len(), 90);
            assert_eq!(events().await, n, "one new user's event per call");
        }
        // Nothing is projected here: the read is made, and finds nothing.
        let unknown = uuid::Uuid::new_v4().to_string();
        let read = echo
            .echo(sized_request(
                60,
                90,
                Some(StorageCall::UserProfile(unknown)),
            ))
            .await
            .unwrap_err();
        assert_eq!(read.code(), tonic::Code::Internal);
        assert!(
            read.message().contains("not projected"),
            "{}",
            read.message()
        );
    }
}
