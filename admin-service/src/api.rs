//! The gRPC adapter of `dynabridge.v1.AdminService`: each handler parses its
//! request, calls [`Lookback`] or [`ParkedAggregates`], and maps the error
//! once, through
//! `From<AppError> for tonic::Status`.

use dynabridge::envelope::to_envelope;
use dynabridge::pb;
use dynabridge::pb::admin_service_server::AdminService;
use dynabridge_runtime::grpc::unary;
use tonic::{Request, Response, Status};

use crate::generations::Generations;
use crate::lookback::{EventsPage, Lookback};
use crate::parked::ParkedAggregates;
use crate::replays::Replays;
use crate::request::{
    GetAggregateHistory, GetOrderAsOf, GetUserAsOf, ListEventsByType, ListParked, Rebuild,
    ReplayEvents, RetryParked, SkipParked,
};
use crate::status::ProjectionStatus;

#[derive(Clone, Debug)]
pub struct AdminApi {
    lookback: Lookback,
    parked: ParkedAggregates,
    status: ProjectionStatus,
    generations: Generations,
    replays: Replays,
}

impl AdminApi {
    pub fn new(
        lookback: Lookback,
        parked: ParkedAggregates,
        status: ProjectionStatus,
        generations: Generations,
        replays: Replays,
    ) -> Self {
        Self {
            lookback,
            parked,
            status,
            generations,
            replays,
        }
    }
}

/// Admin calls carry no correlation id field: the metadata's, or a new one.
fn no_field<T>(_: &T) -> &str {
    ""
}

fn envelopes(page: &EventsPage) -> Vec<pb::EventEnvelope> {
    page.events.iter().map(to_envelope).collect()
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn get_aggregate_history(
        &self,
        request: Request<pb::GetAggregateHistoryRequest>,
    ) -> Result<Response<pb::GetAggregateHistoryResponse>, Status> {
        unary(
            "GetAggregateHistory",
            request,
            no_field,
            |message, _| async move {
                let request = GetAggregateHistory::try_from(message)?;
                let page = self.lookback.history(request).await?;
                Ok(pb::GetAggregateHistoryResponse {
                    events: envelopes(&page),
                    next_page_token: page.next_page_token,
                })
            },
        )
        .await
    }

    async fn get_user_as_of(
        &self,
        request: Request<pb::GetUserAsOfRequest>,
    ) -> Result<Response<pb::GetUserAsOfResponse>, Status> {
        unary("GetUserAsOf", request, no_field, |message, _| async move {
            let request = GetUserAsOf::try_from(message)?;
            let row = self.lookback.user_as_of(request).await?;
            Ok(pb::GetUserAsOfResponse {
                user: Some(row.to_pb()),
            })
        })
        .await
    }

    async fn get_order_as_of(
        &self,
        request: Request<pb::GetOrderAsOfRequest>,
    ) -> Result<Response<pb::GetOrderAsOfResponse>, Status> {
        unary("GetOrderAsOf", request, no_field, |message, _| async move {
            let request = GetOrderAsOf::try_from(message)?;
            let row = self.lookback.order_as_of(request).await?;
            Ok(pb::GetOrderAsOfResponse {
                order: Some(row.to_pb()),
            })
        })
        .await
    }

    async fn list_events_by_type(
        &self,
        request: Request<pb::ListEventsByTypeRequest>,
    ) -> Result<Response<pb::ListEventsByTypeResponse>, Status> {
        unary(
            "ListEventsByType",
            request,
            no_field,
            |message, _| async move {
                let request = ListEventsByType::try_from(message)?;
                let page = self.lookback.events_by_type(request).await?;
                Ok(pb::ListEventsByTypeResponse {
                    events: envelopes(&page),
                    next_page_token: page.next_page_token,
                })
            },
        )
        .await
    }

    async fn list_parked(
        &self,
        request: Request<pb::ListParkedRequest>,
    ) -> Result<Response<pb::ListParkedResponse>, Status> {
        unary("ListParked", request, no_field, |message, _| async move {
            let request = ListParked::try_from(message)?;
            let page = self.parked.list(request).await?;
            Ok(pb::ListParkedResponse {
                aggregates: page.aggregates,
                next_page_token: page.next_page_token,
            })
        })
        .await
    }

    async fn retry_parked(
        &self,
        request: Request<pb::RetryParkedRequest>,
    ) -> Result<Response<pb::RetryParkedResponse>, Status> {
        unary("RetryParked", request, no_field, |message, _| async move {
            let request = RetryParked::try_from(message)?;
            let aggregate = self.parked.retry(request).await?;
            Ok(pb::RetryParkedResponse {
                aggregate: Some(aggregate),
            })
        })
        .await
    }

    async fn skip_parked(
        &self,
        request: Request<pb::SkipParkedRequest>,
    ) -> Result<Response<pb::SkipParkedResponse>, Status> {
        unary(
            "SkipParked",
            request,
            no_field,
            |message, call| async move {
                let request = SkipParked::try_from(message)?;
                let aggregate = self.parked.skip(request, &call.correlation_id).await?;
                Ok(pb::SkipParkedResponse {
                    aggregate: Some(aggregate),
                })
            },
        )
        .await
    }

    async fn get_projection_status(
        &self,
        request: Request<pb::GetProjectionStatusRequest>,
    ) -> Result<Response<pb::GetProjectionStatusResponse>, Status> {
        unary(
            "GetProjectionStatus",
            request,
            no_field,
            |message, _| async move {
                let pb::GetProjectionStatusRequest {} = message;
                self.status.get().await
            },
        )
        .await
    }

    async fn rebuild_read_models(
        &self,
        request: Request<pb::RebuildReadModelsRequest>,
    ) -> Result<Response<pb::RebuildReadModelsResponse>, Status> {
        unary(
            "RebuildReadModels",
            request,
            no_field,
            |message, _| async move {
                let request = Rebuild::try_from(message)?;
                let generation = self.generations.rebuild(request).await?;
                Ok(pb::RebuildReadModelsResponse {
                    generation: Some(generation),
                })
            },
        )
        .await
    }

    async fn list_generations(
        &self,
        request: Request<pb::ListGenerationsRequest>,
    ) -> Result<Response<pb::ListGenerationsResponse>, Status> {
        unary(
            "ListGenerations",
            request,
            no_field,
            |message, _| async move {
                let pb::ListGenerationsRequest {} = message;
                self.generations.list().await
            },
        )
        .await
    }

    async fn switch_generation(
        &self,
        request: Request<pb::SwitchGenerationRequest>,
    ) -> Result<Response<pb::SwitchGenerationResponse>, Status> {
        unary(
            "SwitchGeneration",
            request,
            no_field,
            |message, _| async move {
                let pb::SwitchGenerationRequest { generation } = message;
                let (serving, previous) = self.generations.switch(generation).await?;
                Ok(pb::SwitchGenerationResponse { serving, previous })
            },
        )
        .await
    }

    async fn drop_generation(
        &self,
        request: Request<pb::DropGenerationRequest>,
    ) -> Result<Response<pb::DropGenerationResponse>, Status> {
        unary(
            "DropGeneration",
            request,
            no_field,
            |message, _| async move {
                let pb::DropGenerationRequest { generation } = message;
                let generation = self.generations.drop_generation(generation).await?;
                Ok(pb::DropGenerationResponse {
                    generation: Some(generation),
                })
            },
        )
        .await
    }

    async fn replay_events(
        &self,
        request: Request<pb::ReplayEventsRequest>,
    ) -> Result<Response<pb::ReplayEventsResponse>, Status> {
        unary("ReplayEvents", request, no_field, |message, _| async move {
            let request = ReplayEvents::try_from(message)?;
            let replay = self.replays.start(request).await?;
            Ok(pb::ReplayEventsResponse {
                replay: Some(replay),
            })
        })
        .await
    }

    async fn get_replay(
        &self,
        request: Request<pb::GetReplayRequest>,
    ) -> Result<Response<pb::GetReplayResponse>, Status> {
        unary("GetReplay", request, no_field, |message, _| async move {
            let pb::GetReplayRequest { replay_id } = message;
            let replay = self.replays.get(&replay_id).await?;
            Ok(pb::GetReplayResponse {
                replay: Some(replay),
            })
        })
        .await
    }
}
