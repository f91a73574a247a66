use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use futures::FutureExt;
use std::panic::AssertUnwindSafe;
use tonic::{Code, Status};
use tower::{Layer, Service};
use tracing::Instrument;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber: RUST_LOG filter (default `info`), text or
/// JSON lines on stderr. Calling it twice is harmless (tests do).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _already_set = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    std::panic::set_hook(Box::new(log_panic));
}

/// Panics become one `error` event in the service's log format (with the
/// current `rpc` span), not raw text on stderr.
fn log_panic(info: &std::panic::PanicHookInfo<'_>) {
    let payload = info.payload();
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    let location = info
        .location()
        .map(|l| format!("{}:{}", l.file(), l.line()))
        .unwrap_or_default();
    tracing::error!(panic = message, %location, "a handler panicked; the call answers INTERNAL");
}

/// One `rpc` span per call carrying the method, and one event when the
/// response starts, with its gRPC status code and latency.
#[derive(Debug, Clone, Copy, Default)]
pub struct RpcTraceLayer;

impl<S> Layer<S> for RpcTraceLayer {
    type Service = RpcTrace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcTrace { inner }
    }
}

#[derive(Debug, Clone)]
pub struct RpcTrace<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for RpcTrace<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: std::fmt::Display,
    ResBody: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let span = tracing::info_span!("rpc", method = %req.uri().path());
        let path = req.uri().path().to_owned();
        let started = Instant::now();
        let future = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        Box::pin(
            async move {
                // Defence in depth: a handler that panics answers INTERNAL
                // (the panic hook has logged where) instead of resetting the
                // stream; the connection and every other call carry on.
                let result = match AssertUnwindSafe(future).catch_unwind().await {
                    Ok(result) => result,
                    Err(_panic) => Ok(Status::internal(
                        "the service failed while handling this call; it has been logged",
                    )
                    .into_http()),
                };
                let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
                let mut result = result;
                if let Ok(response) = &mut result {
                    normalise_oversize(response);
                }
                match &result {
                    Ok(response) => {
                        // Unary errors travel as "trailers-only" responses, so
                        // their status is in the headers; a response without
                        // one has started successfully (streams report
                        // mid-stream errors in trailers, seen by the client).
                        let code = response
                            .headers()
                            .get("grpc-status")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.parse::<i32>().ok())
                            .map_or(Code::Ok, Code::from_i32);
                        crate::scrape::rpc(&path, code, started.elapsed());
                        if matches!(
                            code,
                            Code::Internal | Code::Unknown | Code::DataLoss | Code::Unavailable
                        ) {
                            tracing::warn!(?code, latency_ms, "rpc finished");
                        } else {
                            tracing::info!(?code, latency_ms, "rpc finished");
                        }
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, latency_ms, "rpc failed in transport");
                    }
                }
                result
            }
            .instrument(span),
        )
    }
}

/// tonic answers a request message over the size limit with OUT_OF_RANGE;
/// gRPC's convention (and grpc-go, grpc-java, grpcio) is RESOURCE_EXHAUSTED,
/// which is what clients retry on and alert for.
fn normalise_oversize<B>(response: &mut http::Response<B>) {
    let headers = response.headers_mut();
    let out_of_range = headers
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() == b"11");
    let oversize = headers.get("grpc-message").is_some_and(|v| {
        String::from_utf8_lossy(v.as_bytes()).contains("message%20length%20too%20large")
            || String::from_utf8_lossy(v.as_bytes()).contains("message length too large")
    });
    if out_of_range && oversize {
        headers.insert("grpc-status", http::HeaderValue::from_static("8"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_panicking_handler_answers_internal_and_the_service_keeps_serving() {
        let handler = tower::service_fn(|req: http::Request<String>| async move {
            if req.uri().path() == "/kpi.v1.KpiService/Panic" {
                panic!("deliberate");
            }
            Ok::<_, std::convert::Infallible>(http::Response::new("fine".to_owned()))
        });
        let service = RpcTraceLayer.layer(handler);
        let call = |path: &str| {
            let request = http::Request::builder()
                .uri(path)
                .body(String::new())
                .map_err(|e| e.to_string());
            let service = service.clone();
            async move { service.oneshot(request?).await.map_err(|e| e.to_string()) }
        };
        let panicked = call("/kpi.v1.KpiService/Panic").await;
        let status = panicked
            .as_ref()
            .ok()
            .and_then(|r| r.headers().get("grpc-status"))
            .map(|v| v.as_bytes().to_vec());
        assert_eq!(status, Some(b"13".to_vec()), "{panicked:?}");
        let fine = call("/kpi.v1.KpiService/Fine").await;
        assert_eq!(fine.map(|r| r.into_body()), Ok("fine".to_owned()));
    }
}
