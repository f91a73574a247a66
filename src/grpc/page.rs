//! The dashboard page: `GET /` and its two assets, embedded in the binary
//! (and `GET /metrics`, the Prometheus scrape)
//! (no CDN, works offline). The page asks for nothing secret in its URL: it
//! reads the key from the tab's session storage (or once from a share link's
//! fragment, which browsers never send), then calls the Connect JSON routes
//! (`connect`) and the watches as Connect streams, through the same key
//! check, scopes and audit as gRPC.
//!
//! Every answer carries a strict Content-Security-Policy (only this origin's
//! script, style and fetches; no inline script), `no-referrer` (a share
//! link's page never leaks its URL), `nosniff` and no framing.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, header};
use http_body_util::Full;
use tonic::body::Body;
use tower::{Layer, Service};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

const INDEX: &str = include_str!("../../static/index.html");
const SCRIPT: &str = include_str!("../../static/app.js");
const STYLE: &str = include_str!("../../static/app.css");

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// The page's files: path, content type, body.
const ASSETS: &[(&str, &str, &str)] = &[
    ("/", "text/html; charset=utf-8", INDEX),
    ("/index.html", "text/html; charset=utf-8", INDEX),
    ("/assets/app.js", "text/javascript; charset=utf-8", SCRIPT),
    ("/assets/app.css", "text/css; charset=utf-8", STYLE),
];

/// The Prometheus scrape: the exposition in the text format (no key: it
/// holds no id, name or secret; see docs/OPERATIONS.md, "Metrics").
fn scrape() -> http::Response<Body> {
    let (status, body) = match crate::scrape::render() {
        Some(text) => (StatusCode::OK, text),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics are not recorded: another recorder was installed first\n".to_owned(),
        ),
    };
    let mut response = http::Response::new(Body::new(Full::new(Bytes::from(body))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The answer to `GET path`, when it is one of the page's.
fn asset(path: &str, head: bool) -> Option<http::Response<Body>> {
    if path == "/favicon.ico" {
        let mut response = http::Response::new(Body::empty());
        *response.status_mut() = StatusCode::NO_CONTENT;
        return Some(response);
    }
    let (_, content_type, body) = ASSETS.iter().find(|(p, _, _)| *p == path)?;
    let length = body.len();
    let body = if head {
        Body::empty()
    } else {
        Body::new(Full::new(Bytes::from_static(body.as_bytes())))
    };
    let mut response = http::Response::new(body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    // Embedded in this binary: revalidate, so an upgrade is seen at once.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    Some(response)
}

/// Serves the page in front of the gRPC stack; everything else passes.
#[derive(Debug, Clone, Copy, Default)]
pub struct PageLayer;

impl<S> Layer<S> for PageLayer {
    type Service = Page<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Page { inner }
    }
}

#[derive(Debug, Clone)]
pub struct Page<S> {
    inner: S,
}

impl<S> Service<http::Request<Body>> for Page<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
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
            return Box::pin(async move { Ok(scrape()) });
        }
        if method == Method::GET || method == Method::HEAD {
            let head = method == Method::HEAD;
            if let Some(response) = asset(request.uri().path(), head) {
                return Box::pin(async move { Ok(response) });
            }
        }
        Box::pin(self.inner.call(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_its_assets_are_served_with_a_strict_policy_and_others_pass() {
        for path in ["/", "/index.html", "/assets/app.js", "/assets/app.css"] {
            let response = asset(path, false);
            let headers = response.as_ref().map(|r| r.headers().clone());
            let csp = headers
                .as_ref()
                .and_then(|h| h.get(header::CONTENT_SECURITY_POLICY).cloned());
            assert_eq!(csp, Some(HeaderValue::from_static(CSP)), "{path}");
            let referrer = headers
                .as_ref()
                .and_then(|h| h.get(header::REFERRER_POLICY).cloned());
            assert_eq!(referrer, Some(HeaderValue::from_static("no-referrer")));
        }
        assert!(asset("/kpi.v1.KpiService/GetScorecard", false).is_none());
        assert!(asset("/assets/../Cargo.toml", false).is_none());
        assert_eq!(
            asset("/favicon.ico", false).map(|r| r.status()),
            Some(StatusCode::NO_CONTENT)
        );
        // The page loads its script and style from these paths, and no
        // inline script (the policy would block it).
        assert!(INDEX.contains("/assets/app.js") && INDEX.contains("/assets/app.css"));
        assert!(!INDEX.contains("<script>") && !INDEX.contains("<style"));
    }
}
