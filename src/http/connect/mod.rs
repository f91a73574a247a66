//! Every unary RPC over plain HTTP, in the Connect protocol's unary form:
//! `POST /kpi.v1.KpiService/GetScorecard` with `Content-Type:
//! application/json` (or `application/proto`) and the request message as
//! its body; the response message is the answer's body, an error is a
//! Connect error JSON with the matching HTTP status.
//!
//! The layer sits in front of everything else and *transcodes*: the JSON
//! request becomes the same gRPC request a gRPC client would send (same
//! path, same headers, so the same key check, scopes, call deadline, audit
//! and trace), goes through the whole stack, and the gRPC answer becomes
//! JSON again. The proto3 JSON mapping is pbjson's, generated from the
//! protos (build.rs), so it is the one grpcurl and every Connect client
//! speak.
//!
//! The server-streaming RPCs (the watches, which the dashboard page reads)
//! answer the Connect streaming protocol: `Content-Type:
//! application/connect+json` (or `+proto`), the request as one enveloped
//! message (a flags byte, a 4-byte big-endian length, the message); the
//! answer is HTTP 200 and a stream of enveloped messages ended by an
//! end-of-stream envelope (flags 0x02) holding `{}` or `{"error": ...}`.
//! It works over HTTP/1.1, so a browser's `fetch` can read it. The client
//! streaming RPC (StreamActivities) is gRPC only; RecordActivities is its
//! unary form.

mod envelope;
mod error;
mod routes;
mod transcode;

use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use http_body_util::BodyExt as _;
use tonic::{Status, body::Body};

use crate::{domain::ids::echo, proto::MAX_MESSAGE_BYTES};

pub use self::transcode::transcode;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How a request's body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Json,
    Proto,
}

/// Connect unary (one bare message each way) or streaming (enveloped
/// messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Unary,
    Streaming,
}

impl Encoding {
    /// The Connect protocol and encoding a request's Content-Type names, if
    /// any.
    pub fn of(headers: &HeaderMap) -> Option<(Protocol, Self)> {
        let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
        let media = value.split(';').next()?.trim().to_ascii_lowercase();
        match media.as_str() {
            "application/json" => Some((Protocol::Unary, Self::Json)),
            "application/proto" => Some((Protocol::Unary, Self::Proto)),
            "application/connect+json" => Some((Protocol::Streaming, Self::Json)),
            "application/connect+proto" => Some((Protocol::Streaming, Self::Proto)),
            _ => None,
        }
    }

    pub fn content_type(self, protocol: Protocol) -> &'static str {
        match (protocol, self) {
            (Protocol::Unary, Self::Json) => "application/json",
            (Protocol::Unary, Self::Proto) => "application/proto",
            (Protocol::Streaming, Self::Json) => "application/connect+json",
            (Protocol::Streaming, Self::Proto) => "application/connect+proto",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Json => "proto3 JSON",
            Self::Proto => "protobuf",
        }
    }
}

/// The Content-Types a Connect or gRPC call may have, for 415 answers.
const ACCEPTED: &str = "application/json, application/proto, application/connect+json, \
    application/connect+proto, application/grpc";

/// The answer to a request for a `kpi.v1` path that is neither a gRPC
/// call nor a Connect one (`None` for every other request): 405 with
/// `Allow: POST` for another method, 415 with `Accept-Post` for another
/// content type (curl's default form encoding, `text/plain`, none), each
/// with a Connect error body. gRPC would answer these with an empty
/// HTTP 200 and INTERNAL.
pub fn refuse_non_rpc(request: &http::Request<Body>) -> Option<http::Response<Body>> {
    let path = request.uri().path();
    if !path.starts_with("/kpi.v1.") || is_grpc(request.headers()) {
        return None;
    }
    let (status, header, value, message) = if request.method() != Method::POST {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            header::ALLOW,
            "POST",
            format!(
                "{} {path}: the API's methods take POST (Connect: Content-Type application/json)",
                request.method()
            ),
        )
    } else {
        let given = match request.headers().get(header::CONTENT_TYPE) {
            Some(value) => format!(
                "Content-Type {}",
                echo(&String::from_utf8_lossy(value.as_bytes()))
            ),
            None => "no Content-Type".to_owned(),
        };
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            http::HeaderName::from_static("accept-post"),
            ACCEPTED,
            format!(
                "{given} is neither Connect nor gRPC: send application/json (or \
                 application/proto; application/connect+json for the watches)"
            ),
        )
    };
    let mut response = error::error(&Status::unimplemented(message));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header, HeaderValue::from_static(value));
    Some(response)
}

/// A gRPC content type (`application/grpc`, `application/grpc+proto`, ...).
fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("application/grpc"))
}

/// Reads and drops what the caller sent of a refused request, at most
/// `MAX_MESSAGE_BYTES` and `DISCARD_FOR`, keeping none of it, so that an
/// HTTP/2 stream ends after the answer instead of being reset under it
/// (curl then reports a framing error, not the answer).
pub async fn discard_body(mut body: Body) {
    let drain = async {
        let mut read = 0usize;
        while read <= MAX_MESSAGE_BYTES {
            match body.frame().await {
                Some(Ok(frame)) => read += frame.data_ref().map_or(0, |data| data.len()),
                Some(Err(_)) | None => return,
            }
        }
    };
    tokio::time::timeout(DISCARD_FOR, drain).await.ok();
}

/// Longest a refused request's body is read before the answer goes anyway.
const DISCARD_FOR: std::time::Duration = std::time::Duration::from_secs(5);
