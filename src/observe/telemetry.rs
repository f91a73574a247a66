use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use futures::FutureExt;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::panic::AssertUnwindSafe;
use tonic::{Code, Status, body::Body};
use tower::{Layer, Service};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::{
    EnvFilter, Layer as _, filter::Targets, layer::SubscriberExt as _, util::SubscriberInitExt as _,
};

use crate::config::LogFormat;

/// What `init` set up that must be flushed at exit.
#[derive(Debug, Default)]
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Sends the spans still buffered (the SDK waits at most 5 s).
    pub fn shutdown(self) {
        if let Some(traces) = self.traces
            && let Err(err) = traces.shutdown()
        {
            eprintln!("traces: cannot flush the last spans: {err}");
        }
    }
}

/// Installs the global subscriber: RUST_LOG filter (default `info`), text or
/// JSON lines on stderr, and with `OTEL_EXPORTER_OTLP_ENDPOINT` (or
/// `..._TRACES_ENDPOINT`) set, OpenTelemetry traces over OTLP/gRPC (the
/// standard `OTEL_*` variables configure the exporter). Calling it twice is
/// harmless (tests do).
pub fn init(format: LogFormat) -> Telemetry {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // RUST_LOG filters the log lines only; traces always carry the
    // service's own info spans (and never the exporter's HTTP/2 client's).
    let logs = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    };
    let traces = trace_provider();
    let otel = traces.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("kpi-service"))
            .with_filter(Targets::new().with_target("kpi_service", tracing::Level::INFO))
    });
    let installed = tracing_subscriber::registry()
        .with(logs)
        .with(otel)
        .try_init();
    std::panic::set_hook(Box::new(log_panic));
    if installed.is_err() {
        // A subscriber was there first (a test process): it stays.
        return Telemetry::default();
    }
    if traces.is_some() {
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        tracing::info!("traces: exporting spans over OTLP/gRPC (OTEL_EXPORTER_OTLP_ENDPOINT)");
    }
    Telemetry { traces }
}

/// The OTLP trace pipeline, when an endpoint is configured.
fn trace_provider() -> Option<SdkTracerProvider> {
    let configured = [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|var| std::env::var_os(var).is_some_and(|v| !v.is_empty()));
    if !configured {
        return None;
    }
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
    {
        Ok(exporter) => exporter,
        Err(err) => {
            eprintln!("traces: cannot build the OTLP exporter ({err}); no traces");
            return None;
        }
    };
    let exporter = match OwnRuntime::new(exporter) {
        Ok(exporter) => exporter,
        Err(err) => {
            eprintln!("traces: cannot start the exporter's runtime ({err}); no traces");
            return None;
        }
    };
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("kpi-service")
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build(),
    )
}

/// An exporter run on a runtime of its own: the batch processor exports
/// from a plain thread, and the futures of tonic's client need a Tokio
/// context there (timers; without one they panic).
#[derive(Debug)]
struct OwnRuntime<E> {
    inner: E,
    runtime: tokio::runtime::Runtime,
}

impl<E> OwnRuntime<E> {
    fn new(inner: E) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(Self { inner, runtime })
    }
}

impl<E: opentelemetry_sdk::trace::SpanExporter> opentelemetry_sdk::trace::SpanExporter
    for OwnRuntime<E>
{
    fn export(
        &self,
        batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> impl Future<Output = opentelemetry_sdk::error::OTelSdkResult> + Send {
        let exported = self.runtime.block_on(self.inner.export(batch));
        if let Err(err) = &exported {
            warn_export_failed(err);
        }
        std::future::ready(exported)
    }

    fn shutdown_with_timeout(
        &self,
        timeout: std::time::Duration,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

/// Says (at most once a minute; a log event outside any span is not
/// exported, so this cannot feed itself) that spans were dropped.
fn warn_export_failed(err: &opentelemetry_sdk::error::OTelSdkError) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let last = LAST.load(Ordering::Relaxed);
    if now >= last + 60
        && LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(error = %err, "traces: cannot export spans to the OTLP endpoint; they are dropped");
    }
}

/// A W3C `traceparent` (and `tracestate`) from request headers.
struct Headers<'a>(&'a http::HeaderMap);

impl opentelemetry::propagation::Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
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

impl<S, ReqBody> Service<http::Request<ReqBody>> for RpcTrace<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<Body>>,
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
        // Named by the API's method; any other path is "other/other"
        // (callers cannot make up span names).
        let labels = crate::observe::metrics::method_labels(req.uri().path());
        let span = tracing::info_span!(
            "rpc",
            method = %req.uri().path(),
            otel.name = labels.name.as_str(),
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.grpc.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        // The caller's trace continues here (W3C traceparent); without
        // traces configured this is a no-op.
        let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract(&Headers(req.headers()))
        });
        let _ = span.set_parent(parent);
        // Counted once, with the status the call ended with: dropped
        // before its end (the caller went away), it counts CANCELLED.
        let mut call = CallEnd::new(labels, span.clone());
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
                match result {
                    Ok(mut response) => {
                        normalise_oversize(response.headers_mut());
                        // Errors before the first message travel as
                        // "trailers-only" responses: their status is in the
                        // headers. Otherwise the status comes in the
                        // trailers at the end of the body (a stream's error
                        // after messages too).
                        if let Some(code) = grpc_status(response.headers()) {
                            call.end(code);
                        } else if http_body::Body::is_end_stream(response.body()) {
                            // No status and nothing to come: not a gRPC
                            // answer.
                            call.end(Code::Unknown);
                        }
                        Ok(response.map(|body| Body::new(Observed { body, call })))
                    }
                    Err(err) => {
                        call.end_in_transport(&err);
                        Err(err)
                    }
                }
            }
            .instrument(span),
        )
    }
}

/// The `grpc-status` in headers or trailers.
fn grpc_status(headers: &http::HeaderMap) -> Option<Code> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map(Code::from_i32)
}

/// The end of one call: its metrics, its span's status and its log line,
/// once, when its status is known (or CANCELLED if it is dropped first).
struct CallEnd {
    labels: &'static crate::observe::metrics::MethodLabels,
    span: tracing::Span,
    started: Instant,
    ended: bool,
}

impl CallEnd {
    fn new(labels: &'static crate::observe::metrics::MethodLabels, span: tracing::Span) -> Self {
        Self {
            labels,
            span,
            started: Instant::now(),
            ended: false,
        }
    }

    fn end(&mut self, code: Code) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        let elapsed = self.started.elapsed();
        crate::observe::metrics::rpc(self.labels, code, elapsed);
        let latency_ms = elapsed.as_secs_f64() * 1000.0;
        let _entered = self.span.enter();
        self.span.record("rpc.grpc.status_code", code as i32);
        // The server's errors (OpenTelemetry's gRPC conventions), not the
        // caller's.
        if matches!(
            code,
            Code::Unknown
                | Code::DeadlineExceeded
                | Code::Unimplemented
                | Code::Internal
                | Code::Unavailable
                | Code::DataLoss
        ) {
            self.span.record("otel.status_code", "error");
        }
        if matches!(
            code,
            Code::Internal | Code::Unknown | Code::DataLoss | Code::Unavailable
        ) {
            tracing::warn!(?code, latency_ms, "rpc finished");
        } else {
            tracing::info!(?code, latency_ms, "rpc finished");
        }
    }

    /// The inner service failed without an answer (the connection is
    /// reset): logged, not counted as a status.
    fn end_in_transport(&mut self, err: &dyn std::fmt::Display) {
        self.ended = true;
        let latency_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        let _entered = self.span.enter();
        tracing::warn!(error = %err, latency_ms, "rpc failed in transport");
    }
}

impl Drop for CallEnd {
    fn drop(&mut self) {
        // A stream whose handler panicked while its body was polled (outside
        // the handler's catch_unwind) is the server's fault, not a caller
        // that went away.
        if std::thread::panicking() {
            self.end(Code::Internal);
        } else {
            self.end(Code::Cancelled);
        }
    }
}

/// An answer's body, passed through, that ends its call with the status in
/// its trailers (an answer that ends without one ends UNKNOWN, a body that
/// fails INTERNAL).
struct Observed {
    body: Body,
    call: CallEnd,
}

impl http_body::Body for Observed {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        // What the handler logs while its stream is polled belongs to the
        // call.
        let span = this.call.span.clone();
        let _entered = span.enter();
        let mut polled = Pin::new(&mut this.body).poll_frame(cx);
        match &mut polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_mut() {
                    normalise_oversize(trailers);
                    this.call
                        .end(grpc_status(trailers).unwrap_or(Code::Unknown));
                }
            }
            Poll::Ready(Some(Err(_))) => this.call.end(Code::Internal),
            Poll::Ready(None) => this.call.end(Code::Unknown),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// tonic answers a request message over the size limit with OUT_OF_RANGE;
/// gRPC's convention (and grpc-go, grpc-java, grpcio) is RESOURCE_EXHAUSTED,
/// which is what clients retry on and alert for.
fn normalise_oversize(headers: &mut http::HeaderMap) {
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
        use http_body_util::BodyExt as _;
        let handler = tower::service_fn(|req: http::Request<String>| async move {
            if req.uri().path() == "/kpi.v1.KpiService/Panic" {
                panic!("deliberate");
            }
            Ok::<_, std::convert::Infallible>(http::Response::new(Body::new("fine".to_owned())))
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
        let fine = match call("/kpi.v1.KpiService/Fine").await {
            Ok(response) => response.into_body().collect().await.map(|b| b.to_bytes()),
            Err(e) => panic!("{e}"),
        };
        assert_eq!(fine.ok().as_deref(), Some(&b"fine"[..]));
    }
}
