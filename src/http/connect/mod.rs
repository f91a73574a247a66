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

use http::{HeaderMap, header};

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
