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

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use base64::{Engine, engine::general_purpose::STANDARD_NO_PAD};
use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body::Frame;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use prost::Message;
use serde::{Serialize, de::DeserializeOwned};
use tonic::{Code, Status, body::Body};
use tonic_types::StatusExt;
use tower::{Layer, Service, ServiceExt};

use super::{activity::MAX_MESSAGE_BYTES, pb};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// How a request's body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Json,
    Proto,
}

/// Connect unary (one bare message each way) or streaming (enveloped
/// messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Unary,
    Streaming,
}

impl Encoding {
    /// The Connect protocol and encoding a request's Content-Type names, if
    /// any.
    fn of(headers: &HeaderMap) -> Option<(Protocol, Self)> {
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

    fn content_type(self, protocol: Protocol) -> &'static str {
        match (protocol, self) {
            (Protocol::Unary, Self::Json) => "application/json",
            (Protocol::Unary, Self::Proto) => "application/proto",
            (Protocol::Streaming, Self::Json) => "application/connect+json",
            (Protocol::Streaming, Self::Proto) => "application/connect+proto",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Json => "proto3 JSON",
            Self::Proto => "protobuf",
        }
    }
}

/// Converts a request body to protobuf, or a response from it.
type Convert = fn(&[u8]) -> Result<Vec<u8>, String>;

/// One RPC: its path and the JSON conversions of its messages.
struct Route {
    path: &'static str,
    /// The Rust types of its messages (`pb::GetTeamRequest`), checked
    /// against the descriptors by a test.
    types: (&'static str, &'static str),
    request: Convert,
    response: Convert,
}

fn from_json<T: Message + DeserializeOwned>(body: &[u8]) -> Result<Vec<u8>, String> {
    // An empty body is the empty message, as in Connect.
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    let message: T = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    Ok(message.encode_to_vec())
}

fn to_json<T: Message + Default + Serialize>(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let message = T::decode(bytes).map_err(|e| e.to_string())?;
    serde_json::to_vec(&message).map_err(|e| e.to_string())
}

macro_rules! route {
    ($path:literal, $request:ty, $response:ty) => {
        Route {
            path: $path,
            types: (stringify!($request), stringify!($response)),
            request: from_json::<$request>,
            response: to_json::<$response>,
        }
    };
}

/// Every unary RPC of the API (a test checks the list against the
/// descriptors).
const UNARY: &[Route] = &[
    route!(
        "/kpi.v1.DirectoryService/UpsertTeam",
        pb::UpsertTeamRequest,
        pb::UpsertTeamResponse
    ),
    route!(
        "/kpi.v1.DirectoryService/GetTeam",
        pb::GetTeamRequest,
        pb::GetTeamResponse
    ),
    route!(
        "/kpi.v1.DirectoryService/ListTeams",
        pb::ListTeamsRequest,
        pb::ListTeamsResponse
    ),
    route!(
        "/kpi.v1.DirectoryService/UpsertRep",
        pb::UpsertRepRequest,
        pb::UpsertRepResponse
    ),
    route!(
        "/kpi.v1.DirectoryService/GetRep",
        pb::GetRepRequest,
        pb::GetRepResponse
    ),
    route!(
        "/kpi.v1.DirectoryService/ListReps",
        pb::ListRepsRequest,
        pb::ListRepsResponse
    ),
    route!(
        "/kpi.v1.ActivityService/RecordActivities",
        pb::RecordActivitiesRequest,
        pb::RecordActivitiesResponse
    ),
    route!(
        "/kpi.v1.KpiService/ListKpis",
        pb::ListKpisRequest,
        pb::ListKpisResponse
    ),
    route!(
        "/kpi.v1.KpiService/GetScorecard",
        pb::GetScorecardRequest,
        pb::GetScorecardResponse
    ),
    route!(
        "/kpi.v1.KpiService/GetKpiSeries",
        pb::GetKpiSeriesRequest,
        pb::GetKpiSeriesResponse
    ),
    route!(
        "/kpi.v1.KpiService/GetLeaderboard",
        pb::GetLeaderboardRequest,
        pb::GetLeaderboardResponse
    ),
    route!(
        "/kpi.v1.KpiService/ExplainKpi",
        pb::ExplainKpiRequest,
        pb::ExplainKpiResponse
    ),
    route!(
        "/kpi.v1.TargetService/SetTarget",
        pb::SetTargetRequest,
        pb::SetTargetResponse
    ),
    route!(
        "/kpi.v1.TargetService/ListTargets",
        pb::ListTargetsRequest,
        pb::ListTargetsResponse
    ),
    route!(
        "/kpi.v1.TargetService/DeleteTarget",
        pb::DeleteTargetRequest,
        pb::DeleteTargetResponse
    ),
    route!(
        "/kpi.v1.ExchangeRateService/SetExchangeRates",
        pb::SetExchangeRatesRequest,
        pb::SetExchangeRatesResponse
    ),
    route!(
        "/kpi.v1.ExchangeRateService/ListExchangeRates",
        pb::ListExchangeRatesRequest,
        pb::ListExchangeRatesResponse
    ),
];

/// Every server-streaming RPC (a test checks the list against the
/// descriptors).
const SERVER_STREAMING: &[Route] = &[
    route!(
        "/kpi.v1.KpiService/WatchScorecard",
        pb::WatchScorecardRequest,
        pb::WatchScorecardResponse
    ),
    route!(
        "/kpi.v1.KpiService/WatchLeaderboard",
        pb::WatchLeaderboardRequest,
        pb::WatchLeaderboardResponse
    ),
];

fn identity(bytes: &[u8]) -> Result<Vec<u8>, String> {
    Ok(bytes.to_vec())
}

/// Connect unary in front of the gRPC stack.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConnectLayer;

impl<S> Layer<S> for ConnectLayer {
    type Service = Connect<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Connect { inner }
    }
}

#[derive(Debug, Clone)]
pub struct Connect<S> {
    inner: S,
}

impl<S> Service<http::Request<Body>> for Connect<S>
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
        let connect = (request.method() == http::Method::POST)
            .then(|| Encoding::of(request.headers()))
            .flatten();
        let Some((protocol, encoding)) = connect else {
            return Box::pin(self.inner.call(request));
        };
        // The service that was polled ready goes with the call.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(transcode(inner, request, protocol, encoding))
    }
}

/// A Connect error as JSON: `code`, `message` and `details`.
fn error_json(status: &Status) -> serde_json::Value {
    let (name, _) = code(status.code());
    let details = details(status);
    let mut body = serde_json::json!({ "code": name, "message": status.message() });
    if let (false, Some(object)) = (details.is_empty(), body.as_object_mut()) {
        object.insert("details".into(), details.into());
    }
    body
}

/// A Connect unary error response (JSON whatever the request's encoding,
/// with the code's HTTP status).
fn error(status: &Status) -> http::Response<Body> {
    let (_, http_status) = code(status.code());
    let body = error_json(status).to_string();
    let mut response = http::Response::new(Body::new(Full::new(Bytes::from(body))));
    *response.status_mut() = http_status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// One Connect streaming envelope: flags, big-endian length, message.
fn envelope(flags: u8, message: &[u8]) -> Bytes {
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.put_u8(flags);
    framed.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    framed.put_slice(message);
    framed.freeze()
}

/// The end-of-stream envelope flag.
const END_STREAM: u8 = 0x02;

/// The end-of-stream envelope: `{}` after success, else `{"error": ...}`.
fn end_of_stream(status: Option<&Status>) -> Bytes {
    let body = match status {
        Some(status) if status.code() != Code::Ok => {
            serde_json::json!({ "error": error_json(status) })
        }
        _ => serde_json::json!({}),
    };
    envelope(END_STREAM, body.to_string().as_bytes())
}

/// A streaming answer that is only its end: HTTP 200, as Connect streams
/// report errors in the end-of-stream message.
fn stream_error(status: &Status, encoding: Encoding) -> http::Response<Body> {
    stream_response(Body::new(Full::new(end_of_stream(Some(status)))), encoding)
}

fn stream_response(body: Body, encoding: Encoding) -> http::Response<Body> {
    let mut response = http::Response::new(body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(encoding.content_type(Protocol::Streaming)),
    );
    response
}

/// The one message of a streaming request: a single uncompressed envelope
/// and nothing after it.
fn unenvelope(body: &[u8]) -> Result<&[u8], Status> {
    let (head, message) = body
        .split_at_checked(5)
        .ok_or_else(|| Status::invalid_argument("the request body is not an enveloped message"))?;
    let [flags, length @ ..] = head else {
        return Err(Status::invalid_argument(
            "the request body is not an enveloped message",
        ));
    };
    if flags & 0x01 != 0 {
        return Err(Status::unimplemented(
            "compressed messages are not supported",
        ));
    }
    let length = u32::from_be_bytes([length[0], length[1], length[2], length[3]]);
    if usize::try_from(length).ok() != Some(message.len()) {
        return Err(Status::invalid_argument(format!(
            "the request envelope says {length} bytes and {} follow (a server-streaming request is one message)",
            message.len()
        )));
    }
    Ok(message)
}

/// Reads a whole request body, at most `MAX_MESSAGE_BYTES`.
async fn read_body(body: Body) -> Result<Bytes, Status> {
    match Limited::new(body, MAX_MESSAGE_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) => Err(
            if err
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Status::resource_exhausted(format!(
                    "the request body is larger than {MAX_MESSAGE_BYTES} bytes"
                ))
            } else {
                Status::invalid_argument(format!("cannot read the request body: {err}"))
            },
        ),
    }
}

/// The gRPC request a gRPC client would send for this message.
fn grpc_request(parts: http::request::Parts, message: &[u8]) -> http::Request<Body> {
    let mut grpc = http::Request::new(Body::new(Full::new(envelope(0, message))));
    *grpc.method_mut() = http::Method::POST;
    *grpc.uri_mut() = parts.uri;
    *grpc.version_mut() = http::Version::HTTP_2;
    *grpc.headers_mut() = parts.headers;
    *grpc.extensions_mut() = parts.extensions;
    let headers = grpc.headers_mut();
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::ACCEPT_ENCODING);
    headers.remove(header::CONTENT_ENCODING);
    headers.remove("connect-content-encoding");
    headers.remove("connect-accept-encoding");
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(header::TE, HeaderValue::from_static("trailers"));
    // Connect's deadline header, as gRPC's.
    if let Some(ms) = headers
        .get("connect-timeout-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && let Ok(value) = HeaderValue::from_str(&format!("{}m", ms.min(99_999_999)))
    {
        headers.insert("grpc-timeout", value);
    }
    grpc
}

/// The Connect name and HTTP status of a gRPC code.
fn code(code: Code) -> (&'static str, StatusCode) {
    use StatusCode as H;
    match code {
        Code::Ok => ("ok", H::OK),
        Code::Cancelled => (
            "canceled",
            StatusCode::from_u16(499).unwrap_or(H::BAD_REQUEST),
        ),
        Code::Unknown => ("unknown", H::INTERNAL_SERVER_ERROR),
        Code::InvalidArgument => ("invalid_argument", H::BAD_REQUEST),
        Code::DeadlineExceeded => ("deadline_exceeded", H::GATEWAY_TIMEOUT),
        Code::NotFound => ("not_found", H::NOT_FOUND),
        Code::AlreadyExists => ("already_exists", H::CONFLICT),
        Code::PermissionDenied => ("permission_denied", H::FORBIDDEN),
        Code::ResourceExhausted => ("resource_exhausted", H::TOO_MANY_REQUESTS),
        Code::FailedPrecondition => ("failed_precondition", H::BAD_REQUEST),
        Code::Aborted => ("aborted", H::CONFLICT),
        Code::OutOfRange => ("out_of_range", H::BAD_REQUEST),
        Code::Unimplemented => ("unimplemented", H::NOT_IMPLEMENTED),
        Code::Internal => ("internal", H::INTERNAL_SERVER_ERROR),
        Code::Unavailable => ("unavailable", H::SERVICE_UNAVAILABLE),
        Code::DataLoss => ("data_loss", H::INTERNAL_SERVER_ERROR),
        Code::Unauthenticated => ("unauthenticated", H::UNAUTHORIZED),
    }
}

/// The status's details as Connect details: each `google.protobuf.Any` as
/// its type name and base64 value, with a `debug` rendering of the kinds
/// this service sends (BadRequest, ErrorInfo, RetryInfo, ResourceInfo).
fn details(status: &Status) -> Vec<serde_json::Value> {
    let Ok(rpc) = tonic_types::pb::Status::decode(status.details()) else {
        return Vec::new();
    };
    let rich = status.get_error_details();
    rpc.details
        .iter()
        .map(|any| {
            let name = any
                .type_url
                .rsplit_once('/')
                .map_or(any.type_url.as_str(), |(_, name)| name);
            let debug = match name {
                "google.rpc.BadRequest" => rich.bad_request().map(|b| {
                    serde_json::json!({ "fieldViolations": b.field_violations.iter().map(|v| {
                        serde_json::json!({ "field": v.field, "description": v.description })
                    }).collect::<Vec<_>>() })
                }),
                "google.rpc.ErrorInfo" => rich.error_info().map(|i| {
                    serde_json::json!({ "reason": i.reason, "domain": i.domain, "metadata": i.metadata })
                }),
                "google.rpc.RetryInfo" => rich.retry_info().map(|r| {
                    let delay = r.retry_delay.map(|d| format!("{}s", d.as_secs_f64()));
                    serde_json::json!({ "retryDelay": delay })
                }),
                "google.rpc.ResourceInfo" => rich.resource_info().map(|r| {
                    serde_json::json!({
                        "resourceType": r.resource_type,
                        "resourceName": r.resource_name,
                        "description": r.description,
                    })
                }),
                _ => None,
            };
            let mut detail = serde_json::json!({
                "type": name,
                "value": STANDARD_NO_PAD.encode(&any.value),
            });
            if let (Some(debug), Some(object)) = (debug, detail.as_object_mut()) {
                object.insert("debug".into(), debug);
            }
            detail
        })
        .collect()
}

/// The Connect request as a gRPC request through `inner`, and its answer
/// back.
async fn transcode<S>(
    inner: S,
    request: http::Request<Body>,
    protocol: Protocol,
    encoding: Encoding,
) -> Result<http::Response<Body>, S::Error>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + Send + 'static,
{
    let fail = |status: &Status| match protocol {
        Protocol::Unary => error(status),
        Protocol::Streaming => stream_error(status, encoding),
    };
    let (parts, body) = request.into_parts();
    let routes = match protocol {
        Protocol::Unary => UNARY,
        Protocol::Streaming => SERVER_STREAMING,
    };
    let Some(route) = routes.iter().find(|u| u.path == parts.uri.path()) else {
        let other = match protocol {
            Protocol::Unary => SERVER_STREAMING,
            Protocol::Streaming => UNARY,
        };
        let hint = if other.iter().any(|r| r.path == parts.uri.path()) {
            match protocol {
                Protocol::Unary => "it streams: send Content-Type application/connect+json",
                Protocol::Streaming => "it is unary: send Content-Type application/json",
            }
        } else {
            "StreamActivities is gRPC only; the list: grpcurl ... list"
        };
        let status = Status::unimplemented(format!(
            "no {} RPC at {} ({hint})",
            match protocol {
                Protocol::Unary => "unary",
                Protocol::Streaming => "server-streaming",
            },
            parts.uri.path()
        ));
        let mut response = error(&status);
        *response.status_mut() = StatusCode::NOT_FOUND;
        return Ok(response);
    };
    let body = match read_body(body).await {
        Ok(body) => body,
        Err(status) => return Ok(fail(&status)),
    };
    let body = match protocol {
        Protocol::Unary => Ok(&body[..]),
        Protocol::Streaming => unenvelope(&body),
    };
    let (to_proto, from_proto): (Convert, Convert) = match encoding {
        Encoding::Json => (route.request, route.response),
        Encoding::Proto => (identity, identity),
    };
    let message = match body.and_then(|body| {
        to_proto(body).map_err(|problem| {
            Status::invalid_argument(format!(
                "the request body is not a {} in {}: {problem}",
                route.types.0.replace("pb::", "kpi.v1."),
                encoding.name()
            ))
        })
    }) {
        Ok(message) => message,
        Err(status) => return Ok(fail(&status)),
    };

    let response = inner.oneshot(grpc_request(parts, &message)).await?;
    let (parts, body) = response.into_parts();
    if let Some(status) = Status::from_header_map(&parts.headers)
        && status.code() != Code::Ok
    {
        return Ok(fail(&status));
    }
    if protocol == Protocol::Streaming {
        return Ok(stream_response(
            Body::new(StreamBody::new(messages(body, from_proto))),
            encoding,
        ));
    }
    let collected = match body.collect().await {
        Ok(collected) => collected,
        Err(status) => return Ok(error(&status)),
    };
    if let Some(status) = collected.trailers().and_then(Status::from_header_map)
        && status.code() != Code::Ok
    {
        return Ok(error(&status));
    }
    let data = collected.to_bytes();
    let answer = data
        .get(5..)
        .ok_or_else(|| "an answer without a message".to_owned())
        .and_then(from_proto);
    let answer = match answer {
        Ok(answer) => answer,
        Err(problem) => {
            tracing::error!(problem, "cannot transcode a gRPC answer to Connect");
            return Ok(error(&Status::internal("cannot encode the answer")));
        }
    };
    let mut response = http::Response::new(Body::new(Full::new(Bytes::from(answer))));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(encoding.content_type(Protocol::Unary)),
    );
    Ok(response)
}

/// Where a streamed gRPC answer is.
struct Relay {
    body: Body,
    /// Bytes received and not yet a whole message.
    pending: BytesMut,
    convert: Convert,
    ended: bool,
}

impl Relay {
    /// The next whole gRPC message in `pending`, if there is one.
    fn next_message(&mut self) -> Option<Bytes> {
        let head = self.pending.get(..5)?;
        let length =
            usize::try_from(u32::from_be_bytes([head[1], head[2], head[3], head[4]])).ok()?;
        if self.pending.len() < 5 + length {
            return None;
        }
        let mut message = self.pending.split_to(5 + length);
        Some(message.split_off(5).freeze())
    }
}

/// The gRPC answer's messages as Connect envelopes, then the end of the
/// stream with the call's status (from its trailers).
fn messages(
    body: Body,
    convert: Convert,
) -> impl futures::Stream<Item = Result<Frame<Bytes>, Status>> + Send + 'static {
    let relay = Relay {
        body,
        pending: BytesMut::new(),
        convert,
        ended: false,
    };
    futures::stream::unfold(relay, |mut relay| async move {
        if relay.ended {
            return None;
        }
        loop {
            if let Some(message) = relay.next_message() {
                let envelope = match (relay.convert)(&message) {
                    Ok(converted) => envelope(0, &converted),
                    Err(problem) => {
                        tracing::error!(problem, "cannot transcode a gRPC message to Connect");
                        relay.ended = true;
                        end_of_stream(Some(&Status::internal("cannot encode the answer")))
                    }
                };
                return Some((Ok(Frame::data(envelope)), relay));
            }
            // A clean end is trailers with a status and no half message;
            // anything else must not read as success to the client.
            let status = match relay.body.frame().await {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        relay.pending.extend_from_slice(&data);
                        continue;
                    }
                    Err(frame) => match frame.into_trailers() {
                        Ok(trailers) => Status::from_header_map(&trailers).unwrap_or_else(|| {
                            Status::internal("the stream ended without a status")
                        }),
                        Err(_) => continue,
                    },
                },
                Some(Err(status)) => status,
                None => Status::internal("the stream ended without a status"),
            };
            let status = if relay.pending.is_empty() || status.code() != Code::Ok {
                status
            } else {
                Status::internal("the stream ended inside a message")
            };
            let end = end_of_stream(Some(&status));
            relay.ended = true;
            return Some((Ok(Frame::data(end)), relay));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (path, request type, response type) of the RPCs `keep` selects.
    fn described(keep: fn(&prost_types::MethodDescriptorProto) -> bool) -> Vec<[String; 3]> {
        let set = prost_types::FileDescriptorSet::decode(super::super::FILE_DESCRIPTOR_SET)
            .unwrap_or_default();
        let rust = |proto: &str| proto.replace(".kpi.v1.", "pb::");
        let mut rpcs: Vec<[String; 3]> = set
            .file
            .iter()
            .flat_map(|f| f.service.iter().map(move |s| (f, s)))
            .flat_map(|(f, s)| s.method.iter().map(move |m| (f, s, m)))
            .filter(|(_, _, m)| keep(m))
            .map(|(f, s, m)| {
                [
                    format!("/{}.{}/{}", f.package(), s.name(), m.name()),
                    rust(m.input_type()),
                    rust(m.output_type()),
                ]
            })
            .collect();
        rpcs.sort();
        rpcs
    }

    fn listed(routes: &[Route]) -> Vec<[String; 3]> {
        let mut listed: Vec<[String; 3]> = routes
            .iter()
            .map(|u| {
                [
                    u.path.to_owned(),
                    u.types.0.replace(' ', ""),
                    u.types.1.replace(' ', ""),
                ]
            })
            .collect();
        listed.sort();
        listed
    }

    #[test]
    fn every_unary_and_server_streaming_rpc_has_a_connect_route_with_its_own_messages() {
        let unary = described(|m| !m.client_streaming() && !m.server_streaming());
        assert_eq!(listed(UNARY), unary);
        assert_eq!(unary.len(), 17);
        let streaming = described(|m| !m.client_streaming() && m.server_streaming());
        assert_eq!(listed(SERVER_STREAMING), streaming);
        assert_eq!(streaming.len(), 2);
    }

    #[test]
    fn a_streaming_request_is_exactly_one_uncompressed_envelope() {
        let message = br#"{"kpi": "KPI_LEADS"}"#;
        let framed = envelope(0, message);
        assert_eq!(unenvelope(&framed).ok(), Some(&message[..]));
        assert_eq!(&framed[..5], &[0, 0, 0, 0, 20]);
        let code = |body: &[u8]| unenvelope(body).err().map(|s| s.code());
        assert_eq!(code(&framed[..4]), Some(Code::InvalidArgument));
        assert_eq!(code(&framed[..10]), Some(Code::InvalidArgument));
        let mut twice = framed.to_vec();
        twice.extend_from_slice(&framed);
        assert_eq!(code(&twice), Some(Code::InvalidArgument));
        assert_eq!(code(&envelope(1, message)), Some(Code::Unimplemented));
        let end = end_of_stream(Some(&Status::unauthenticated("no key")));
        assert_eq!(end[0], END_STREAM);
        let json: serde_json::Value = serde_json::from_slice(&end[5..]).unwrap_or_default();
        assert_eq!(json["error"]["code"], "unauthenticated");
        assert_eq!(json["error"]["message"], "no key");
        assert_eq!(
            &end_of_stream(None)[..],
            &[END_STREAM, 0, 0, 0, 2, b'{', b'}']
        );
    }

    /// Every envelope a relayed gRPC answer body becomes.
    fn relayed(body: Body) -> Vec<(u8, Vec<u8>)> {
        use futures::StreamExt as _;
        let runtime = tokio::runtime::Builder::new_current_thread().build();
        let frames: Vec<Bytes> = runtime
            .map(|rt| {
                rt.block_on(
                    messages(body, identity)
                        .filter_map(|f| async { f.ok().and_then(|f| f.into_data().ok()) })
                        .collect(),
                )
            })
            .unwrap_or_default();
        frames
            .iter()
            .map(|f| (f[0], f.get(5..).unwrap_or_default().to_vec()))
            .collect()
    }

    #[test]
    fn a_relayed_stream_ends_cleanly_only_with_an_ok_status_after_whole_messages() {
        use http_body_util::StreamBody;
        let body = |frames: Vec<Frame<Bytes>>| {
            Body::new(StreamBody::new(futures::stream::iter(
                frames.into_iter().map(Ok::<_, Status>),
            )))
        };
        let ok = || {
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            Frame::trailers(trailers)
        };
        let one = envelope(0, b"abc");
        // Two messages split across frames, then OK: both, then `{}`.
        let answer = relayed(body(vec![
            Frame::data(one.slice(..2)),
            Frame::data(Bytes::from([&one[2..], &one[..]].concat())),
            ok(),
        ]));
        assert_eq!(
            answer,
            vec![
                (0, b"abc".to_vec()),
                (0, b"abc".to_vec()),
                (END_STREAM, b"{}".to_vec())
            ]
        );
        let error_code = |answer: &[(u8, Vec<u8>)]| {
            let (flags, last) = answer.last().cloned().unwrap_or_default();
            let json: serde_json::Value = serde_json::from_slice(&last).unwrap_or_default();
            (flags, json["error"]["code"].as_str().map(str::to_owned))
        };
        let internal = (END_STREAM, Some("internal".to_owned()));
        // No trailers, trailers without a status, half a message: errors.
        assert_eq!(
            error_code(&relayed(body(vec![Frame::data(one.clone())]))),
            internal
        );
        assert_eq!(
            error_code(&relayed(body(vec![Frame::trailers(HeaderMap::new())]))),
            internal
        );
        assert_eq!(
            error_code(&relayed(body(vec![Frame::data(one.slice(..6)), ok()]))),
            internal
        );
        // The call's own error status is the end's error.
        let mut denied = HeaderMap::new();
        denied.insert("grpc-status", HeaderValue::from_static("16"));
        assert_eq!(
            error_code(&relayed(body(vec![Frame::trailers(denied)]))),
            (END_STREAM, Some("unauthenticated".to_owned()))
        );
    }

    #[test]
    fn json_converts_both_ways_with_proto_names_or_json_names() {
        let proto = from_json::<pb::GetScorecardRequest>(
            br#"{"subject": {"team_id": "emea"}, "kpis": ["KPI_REVENUE", 1], "period": {"startDate": "2026-07-01"}}"#,
        );
        let decoded = proto
            .ok()
            .and_then(|p| pb::GetScorecardRequest::decode(p.as_slice()).ok());
        assert_eq!(
            decoded
                .as_ref()
                .map(|r| (r.kpis.clone(), r.period.clone().map(|p| p.start_date))),
            Some((
                vec![pb::Kpi::Revenue as i32, 1],
                Some("2026-07-01".to_owned())
            ))
        );
        assert!(from_json::<pb::GetScorecardRequest>(b"{\"kpis\": \"nope\"}").is_err());
        assert!(from_json::<pb::ListKpisRequest>(b"").is_ok());
        let counts = pb::RecordActivitiesResponse {
            counts: Some(pb::RecordCounts {
                inserted: 3,
                ..Default::default()
            }),
        };
        let json = to_json::<pb::RecordActivitiesResponse>(&counts.encode_to_vec());
        assert_eq!(
            json.ok().and_then(|j| String::from_utf8(j).ok()),
            Some(r#"{"counts":{"inserted":"3"}}"#.to_owned())
        );
    }
}
