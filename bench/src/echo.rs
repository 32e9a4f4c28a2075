//! The transport ceiling: a tonic service that answers at once, with a
//! payload as long as it was asked for. Measured with requests and
//! responses as large as a scenario's real ones, it is what gRPC over
//! loopback costs with no work behind it.

use std::future::Future;

use tonic::{Request, Response, Status};

pub mod pb {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("dynabridge.bench.v1");
}

use pb::echo_service_server::{EchoService, EchoServiceServer};
use pb::{EchoRequest, EchoResponse};

/// Answers can be at most this long; larger requests are refused.
const MAX_RESPONSE: u32 = 1 << 20;

#[derive(Debug, Default)]
pub struct EchoServer;

#[tonic::async_trait]
impl EchoService for EchoServer {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        let size = request.get_ref().response_size;
        if size > MAX_RESPONSE {
            return Err(Status::invalid_argument(format!(
                "response_size must be at most {MAX_RESPONSE}"
            )));
        }
        Ok(Response::new(EchoResponse {
            payload: vec![b'x'; size as usize],
        }))
    }
}

impl EchoServer {
    pub async fn serve(
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), tonic::transport::Error> {
        tonic::transport::Server::builder()
            .add_service(EchoServiceServer::new(EchoServer))
            .serve_with_incoming_shutdown(dynabridge::grpc::incoming(listener), shutdown)
            .await
    }
}

/// A request whose encoded length is `request_len` bytes (for lengths of
/// at least 8, which every real request has), asking for a response of
/// `response_len` encoded bytes.
pub fn sized_request(request_len: usize, response_len: usize) -> EchoRequest {
    use prost::Message as _;
    let response_size = payload_for(response_len);
    let mut request = EchoRequest {
        payload: Vec::new(),
        response_size,
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
    use prost::Message as _;

    #[test]
    fn sized_requests_and_responses_encode_to_the_asked_length() {
        for (req, resp) in [(60, 90), (200, 120), (1500, 4000)] {
            let request = sized_request(req, resp);
            assert_eq!(request.encoded_len(), req, "request of {req}");
            let response = EchoResponse {
                payload: vec![b'x'; request.response_size as usize],
            };
            assert_eq!(response.encoded_len(), resp, "response of {resp}");
        }
    }
}
