//! A Connect call as the gRPC call a gRPC client would send (same path,
//! same headers, so the same key check, scopes, call deadline, audit and
//! trace) through the rest of the stack, and its answer back.

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use tonic::{Code, Status, body::Body};
use tower::{Service, ServiceExt};

use super::{
    BoxError, Encoding, Protocol,
    envelope::{envelope, messages, stream_error, stream_response, unenvelope},
    error::error,
    routes::{Convert, SERVER_STREAMING, UNARY, identity},
};
use crate::proto::MAX_MESSAGE_BYTES;

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

/// The Connect request as a gRPC request through `inner`, and its answer
/// back.
pub async fn transcode<S>(
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
