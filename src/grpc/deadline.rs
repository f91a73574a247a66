//! The server's own deadline for every unary `kpi.v1` call (`--call-timeout`):
//! a call that has not answered by then (a paused database holds a
//! connection's query for as long as the client waits) answers
//! DEADLINE_EXCEEDED, reason CALL_DEADLINE, and its work is dropped (an
//! unfinished transaction rolls back). Streams apply it per batch instead
//! (see `activity`), so a long stream is not cut.

use std::{
    collections::HashSet,
    pin::Pin,
    sync::LazyLock,
    task::{Context, Poll},
    time::Duration,
};

use tonic::Status;
use tower::{Layer, Service};

use crate::Error;

/// The `/package.Service/Method` paths of the `kpi.v1` methods where
/// neither side streams.
static UNARY: LazyLock<HashSet<String>> = LazyLock::new(|| {
    crate::proto::methods()
        .into_iter()
        .filter(|m| m.unary)
        .map(|m| m.path)
        .collect()
});

/// Whether the call deadline applies to `path` as a whole.
pub fn is_unary(path: &str) -> bool {
    UNARY.contains(path)
}

#[derive(Debug, Clone, Copy)]
pub struct DeadlineLayer {
    pub timeout: Duration,
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Deadline {
            inner,
            timeout: self.timeout,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
    timeout: Duration,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for Deadline<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let unary = is_unary(req.uri().path());
        let future = self.inner.call(req);
        if !unary {
            return Box::pin(future);
        }
        let timeout = self.timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, future).await {
                Ok(result) => result,
                Err(_) => Ok(Status::from(Error::Deadline(timeout)).into_http()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_not_unary_and_lookups_are() {
        assert!(is_unary("/kpi.v1.KpiService/GetScorecard"));
        assert!(is_unary("/kpi.v1.ActivityService/RecordActivities"));
        assert!(!is_unary("/kpi.v1.ActivityService/StreamActivities"));
        assert!(!is_unary("/grpc.health.v1.Health/Watch"));
        assert!(is_unary("/kpi.v1.ExchangeRateService/SetExchangeRates"));
        assert!(is_unary("/kpi.v1.KpiService/ExplainKpi"));
        assert!(!is_unary("/kpi.v1.KpiService/WatchScorecard"));
        assert!(!is_unary("/kpi.v1.KpiService/WatchLeaderboard"));
        assert_eq!(UNARY.len(), 17);
    }
}
