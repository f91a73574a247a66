//! Connect errors: a gRPC status as the Connect error JSON (`code`,
//! `message`, `details`) with the HTTP status its code maps to.

use base64::{Engine, engine::general_purpose::STANDARD_NO_PAD};
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use http_body_util::Full;
use prost::Message;
use tonic::{Code, Status, body::Body};
use tonic_types::StatusExt;

/// A Connect error as JSON: `code`, `message` and `details`.
pub fn error_json(status: &Status) -> serde_json::Value {
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
pub fn error(status: &Status) -> http::Response<Body> {
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
