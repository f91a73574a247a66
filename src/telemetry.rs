use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use tonic::Code;
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
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let span = tracing::info_span!("rpc", method = %req.uri().path());
        let started = Instant::now();
        let future = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        Box::pin(
            async move {
                let result = future.await;
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
