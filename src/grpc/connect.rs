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
//! speak. Streaming RPCs are gRPC only.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use base64::{Engine, engine::general_purpose::STANDARD_NO_PAD};
use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
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

impl Encoding {
    /// The Connect unary encoding a request's Content-Type names, if any.
    fn of(headers: &HeaderMap) -> Option<Self> {
        let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
        let media = value.split(';').next()?.trim();
        if media.eq_ignore_ascii_case("application/json") {
            Some(Self::Json)
        } else if media.eq_ignore_ascii_case("application/proto") {
            Some(Self::Proto)
        } else {
            None
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::Proto => "application/proto",
        }
    }
}

/// Converts a request body to protobuf, or a response from it.
type Convert = fn(&[u8]) -> Result<Vec<u8>, String>;

/// One unary RPC: its path and the JSON conversions of its messages.
struct Unary {
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

macro_rules! unary {
    ($path:literal, $request:ty, $response:ty) => {
        Unary {
            path: $path,
            types: (stringify!($request), stringify!($response)),
            request: from_json::<$request>,
            response: to_json::<$response>,
        }
    };
}

/// Every unary RPC of the API (a test checks the list against the
/// descriptors).
const UNARY: &[Unary] = &[
    unary!(
        "/kpi.v1.DirectoryService/UpsertTeam",
        pb::UpsertTeamRequest,
        pb::UpsertTeamResponse
    ),
    unary!(
        "/kpi.v1.DirectoryService/GetTeam",
        pb::GetTeamRequest,
        pb::GetTeamResponse
    ),
    unary!(
        "/kpi.v1.DirectoryService/ListTeams",
        pb::ListTeamsRequest,
        pb::ListTeamsResponse
    ),
    unary!(
        "/kpi.v1.DirectoryService/UpsertRep",
        pb::UpsertRepRequest,
        pb::UpsertRepResponse
    ),
    unary!(
        "/kpi.v1.DirectoryService/GetRep",
        pb::GetRepRequest,
        pb::GetRepResponse
    ),
    unary!(
        "/kpi.v1.DirectoryService/ListReps",
        pb::ListRepsRequest,
        pb::ListRepsResponse
    ),
    unary!(
        "/kpi.v1.ActivityService/RecordActivities",
        pb::RecordActivitiesRequest,
        pb::RecordActivitiesResponse
    ),
    unary!(
        "/kpi.v1.KpiService/ListKpis",
        pb::ListKpisRequest,
        pb::ListKpisResponse
    ),
    unary!(
        "/kpi.v1.KpiService/GetScorecard",
        pb::GetScorecardRequest,
        pb::GetScorecardResponse
    ),
    unary!(
        "/kpi.v1.KpiService/GetKpiSeries",
        pb::GetKpiSeriesRequest,
        pb::GetKpiSeriesResponse
    ),
    unary!(
        "/kpi.v1.KpiService/GetLeaderboard",
        pb::GetLeaderboardRequest,
        pb::GetLeaderboardResponse
    ),
    unary!(
        "/kpi.v1.KpiService/ExplainKpi",
        pb::ExplainKpiRequest,
        pb::ExplainKpiResponse
    ),
    unary!(
        "/kpi.v1.TargetService/SetTarget",
        pb::SetTargetRequest,
        pb::SetTargetResponse
    ),
    unary!(
        "/kpi.v1.TargetService/ListTargets",
        pb::ListTargetsRequest,
        pb::ListTargetsResponse
    ),
    unary!(
        "/kpi.v1.TargetService/DeleteTarget",
        pb::DeleteTargetRequest,
        pb::DeleteTargetResponse
    ),
    unary!(
        "/kpi.v1.ExchangeRateService/SetExchangeRates",
        pb::SetExchangeRatesRequest,
        pb::SetExchangeRatesResponse
    ),
    unary!(
        "/kpi.v1.ExchangeRateService/ListExchangeRates",
        pb::ListExchangeRatesRequest,
        pb::ListExchangeRatesResponse
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
        let encoding = (request.method() == http::Method::POST)
            .then(|| Encoding::of(request.headers()))
            .flatten();
        let Some(encoding) = encoding else {
            return Box::pin(self.inner.call(request));
        };
        // The service that was polled ready goes with the call.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(transcode(inner, request, encoding))
    }
}

/// A Connect error response.
fn error(status: &Status, encoding: Encoding) -> http::Response<Body> {
    let (name, http_status) = code(status.code());
    let details = details(status);
    let mut body = serde_json::json!({ "code": name, "message": status.message() });
    if let (false, Some(object)) = (details.is_empty(), body.as_object_mut()) {
        object.insert("details".into(), details.into());
    }
    let _ = encoding; // Connect errors are JSON whatever the request's encoding.
    let mut response = http::Response::new(Body::new(Full::new(Bytes::from(body.to_string()))));
    *response.status_mut() = http_status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
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
    encoding: Encoding,
) -> Result<http::Response<Body>, S::Error>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + Send + 'static,
{
    let (parts, body) = request.into_parts();
    let Some(unary) = UNARY.iter().find(|u| u.path == parts.uri.path()) else {
        let status = Status::unimplemented(format!(
            "no unary RPC at {} (streaming RPCs are gRPC only; the list: grpcurl ... list)",
            parts.uri.path()
        ));
        let mut response = error(&status, encoding);
        *response.status_mut() = StatusCode::NOT_FOUND;
        return Ok(response);
    };
    let body = match Limited::new(body, MAX_MESSAGE_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) => {
            let status = if err
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Status::resource_exhausted(format!(
                    "the request body is larger than {MAX_MESSAGE_BYTES} bytes"
                ))
            } else {
                Status::invalid_argument(format!("cannot read the request body: {err}"))
            };
            return Ok(error(&status, encoding));
        }
    };
    let (to_proto, from_proto): (Convert, Convert) = match encoding {
        Encoding::Json => (unary.request, unary.response),
        Encoding::Proto => (identity, identity),
    };
    let message = match to_proto(&body) {
        Ok(message) => message,
        Err(problem) => {
            let status = Status::invalid_argument(format!(
                "the request body is not a {} in {}: {problem}",
                unary.types.0.replace("pb::", "kpi.v1."),
                match encoding {
                    Encoding::Json => "proto3 JSON",
                    Encoding::Proto => "protobuf",
                }
            ));
            return Ok(error(&status, encoding));
        }
    };
    // A length-prefixed message, as on a gRPC stream.
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.put_u8(0);
    framed.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    framed.put_slice(&message);
    let mut grpc = http::Request::new(Body::new(Full::new(framed.freeze())));
    *grpc.method_mut() = http::Method::POST;
    *grpc.uri_mut() = parts.uri;
    *grpc.version_mut() = http::Version::HTTP_2;
    *grpc.headers_mut() = parts.headers;
    *grpc.extensions_mut() = parts.extensions;
    let headers = grpc.headers_mut();
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::ACCEPT_ENCODING);
    headers.remove(header::CONTENT_ENCODING);
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

    let response = inner.oneshot(grpc).await?;
    let (parts, body) = response.into_parts();
    if let Some(status) = Status::from_header_map(&parts.headers)
        && status.code() != Code::Ok
    {
        return Ok(error(&status, encoding));
    }
    let collected = match body.collect().await {
        Ok(collected) => collected,
        Err(status) => return Ok(error(&status, encoding)),
    };
    if let Some(status) = collected.trailers().and_then(Status::from_header_map)
        && status.code() != Code::Ok
    {
        return Ok(error(&status, encoding));
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
            return Ok(error(
                &Status::internal("cannot encode the answer"),
                encoding,
            ));
        }
    };
    let mut response = http::Response::new(Body::new(Full::new(Bytes::from(answer))));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(encoding.content_type()),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unary_rpc_has_a_connect_route_with_its_own_messages_and_no_stream_has() {
        let set = prost_types::FileDescriptorSet::decode(super::super::FILE_DESCRIPTOR_SET)
            .unwrap_or_default();
        let rust = |proto: &str| proto.replace(".kpi.v1.", "pb::");
        let mut unary: Vec<(String, String, String)> = set
            .file
            .iter()
            .flat_map(|f| f.service.iter().map(move |s| (f, s)))
            .flat_map(|(f, s)| s.method.iter().map(move |m| (f, s, m)))
            .filter(|(_, _, m)| !m.client_streaming() && !m.server_streaming())
            .map(|(f, s, m)| {
                (
                    format!("/{}.{}/{}", f.package(), s.name(), m.name()),
                    rust(m.input_type()),
                    rust(m.output_type()),
                )
            })
            .collect();
        unary.sort();
        let mut routes: Vec<(String, String, String)> = UNARY
            .iter()
            .map(|u| {
                (
                    u.path.to_owned(),
                    u.types.0.replace(' ', ""),
                    u.types.1.replace(' ', ""),
                )
            })
            .collect();
        routes.sort();
        assert_eq!(routes, unary);
        assert_eq!(routes.len(), 17);
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
