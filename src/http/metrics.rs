//! `GET /metrics`: the Prometheus scrape of what `observe::metrics`
//! records.

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use http_body_util::Full;
use tonic::body::Body;

/// The Prometheus scrape: the exposition in the text format (no key: it
/// holds no id, name or secret; see docs/OPERATIONS.md, "Metrics").
pub fn scrape() -> http::Response<Body> {
    let (status, body) = match crate::observe::metrics::render() {
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
