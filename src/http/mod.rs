//! The HTTP face of the service, one layer in front of the gRPC stack (as
//! tonic-web's layer is): `GET /metrics` (the Prometheus scrape), the
//! dashboard page and its assets, and every RPC over the Connect protocol,
//! transcoded into the gRPC call a gRPC client would send. A request to an
//! API path that is neither gRPC nor Connect gets the Connect protocol's
//! answer (415 for another content type, 405 for another method). Anything
//! else (gRPC itself) passes through untouched. Nothing here reads the database:
//! a Connect call reaches the service through the same gRPC handlers, key
//! check, deadline and trace as a gRPC call.

mod connect;
mod metrics;
mod page;

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use http::Method;
use tonic::body::Body;
use tower::{Layer, Service};

use self::connect::{BoxError, Encoding};
pub use self::page::share_link;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The HTTP routes in front of the gRPC stack.
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpLayer;

impl<S> Layer<S> for HttpLayer {
    type Service = Http<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Http { inner }
    }
}

#[derive(Debug, Clone)]
pub struct Http<S> {
    inner: S,
}

impl<S> Service<http::Request<Body>> for Http<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let method = request.method();
        if method == Method::GET && request.uri().path() == "/metrics" {
            return Box::pin(async move { Ok(metrics::scrape()) });
        }
        if method == Method::GET || method == Method::HEAD {
            let head = method == Method::HEAD;
            if let Some(response) = page::asset(request.uri().path(), head) {
                return Box::pin(async move { Ok(response) });
            }
        }
        let connect = (method == Method::POST)
            .then(|| Encoding::of(request.headers()))
            .flatten();
        let Some((protocol, encoding)) = connect else {
            if let Some(refused) = connect::refuse_non_rpc(&request) {
                return Box::pin(async move {
                    connect::discard_body(request.into_body()).await;
                    Ok(refused)
                });
            }
            return Box::pin(self.inner.call(request));
        };
        // The service that was polled ready goes with the call.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(connect::transcode(inner, request, protocol, encoding))
    }
}
