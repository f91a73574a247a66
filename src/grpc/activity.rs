//! `kpi.v1.ActivityService`: batches of activity records, parsed and
//! validated by `convert::activity` (every violation with its record and
//! field), recorded by `service::ingest`.

use chrono::Utc;
use tonic::{Code, Request, Response, Status, Streaming};

use super::{
    auth::principal,
    convert::activity::parse_batch,
    pb::{self, activity_service_server::ActivityService},
    streams::{StreamLimits, changed},
};
use crate::{Error, domain::activity::Counts, service::Services};

#[derive(Clone)]
pub struct ActivityApi {
    services: Services,
    limits: StreamLimits,
}

impl ActivityApi {
    pub fn new(services: Services, limits: StreamLimits) -> Self {
        Self { services, limits }
    }

    async fn record(&self, records: Vec<pb::ActivityRecord>) -> Result<Counts, Error> {
        let ingest = &self.services.ingest;
        let batch = parse_batch(records, Utc::now())?;
        ingest.record(batch).await
    }
}

/// tonic reports a request over the size limit as OUT_OF_RANGE; gRPC's
/// convention (and every other implementation) says RESOURCE_EXHAUSTED.
pub fn normalise_transport_status(status: Status) -> Status {
    if status.code() == Code::OutOfRange && status.message().contains("message length too large") {
        Status::resource_exhausted(status.message().to_owned())
    } else {
        status
    }
}

#[tonic::async_trait]
impl ActivityService for ActivityApi {
    async fn record_activities(
        &self,
        request: Request<pb::RecordActivitiesRequest>,
    ) -> Result<Response<pb::RecordActivitiesResponse>, Status> {
        let counts = self.record(request.into_inner().records).await?;
        Ok(Response::new(pb::RecordActivitiesResponse {
            counts: Some(counts.into()),
        }))
    }

    async fn stream_activities(
        &self,
        request: Request<Streaming<pb::StreamActivitiesRequest>>,
    ) -> Result<Response<pb::StreamActivitiesResponse>, Status> {
        let caller = principal(&request)?;
        let mut stream = request.into_inner();
        let mut keys = self.limits.access.changes();
        let mut shutdown = self.limits.shutdown.clone();
        let mut counts = Counts::default();
        let mut batches: u64 = 0;
        let interrupted = |batches: u64, committed: Counts, cause: Error| -> Status {
            Error::StreamInterrupted {
                committed_batches: batches,
                committed: committed.by_outcome().to_vec(),
                cause: Box::new(cause),
            }
            .into()
        };
        loop {
            // Between batches: the next message, a revoked key or a
            // shutdown, whichever comes first.
            let message = loop {
                if let Some(cause) = self.limits.interruption(&caller) {
                    return Err(interrupted(batches, counts, cause));
                }
                tokio::select! {
                    () = changed(&mut shutdown) => {}
                    () = changed(&mut keys) => {}
                    message = stream.message() => break message,
                }
            };
            let message = match message {
                Ok(Some(message)) => message,
                Ok(None) => break,
                Err(status) => {
                    let status = normalise_transport_status(status);
                    return Err(Status::new(
                        status.code(),
                        format!(
                            "{} ({batches} batches were committed before this)",
                            status.message()
                        ),
                    ));
                }
            };
            // The key is checked again right before the batch counts.
            if let Some(cause) = self.limits.interruption(&caller) {
                return Err(interrupted(batches, counts, cause));
            }
            let limit = self.limits.batch_timeout;
            let recorded = match tokio::time::timeout(limit, self.record(message.records)).await {
                Ok(recorded) => recorded,
                Err(_) => Err(Error::Deadline(limit)),
            };
            match recorded {
                Ok(batch_counts) => {
                    counts += batch_counts;
                    batches += 1;
                }
                Err(cause) => return Err(interrupted(batches, counts, cause)),
            }
        }
        Ok(Response::new(pb::StreamActivitiesResponse {
            counts: Some(counts.into()),
            batches: i64::try_from(batches).unwrap_or(i64::MAX),
        }))
    }
}
