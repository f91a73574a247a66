//! Connect streaming: the envelopes (a flags byte, a 4-byte big-endian
//! length, the message), the one-message request of a server-streaming
//! call, and the relay that turns a streamed gRPC answer into envelopes
//! ended by the end-of-stream message.

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderValue, header};
use http_body::Frame;
use http_body_util::{BodyExt, Full};
use tonic::{Code, Status, body::Body};

use super::{Encoding, Protocol, error::error_json, routes::Convert};

/// One Connect streaming envelope: flags, big-endian length, message.
pub fn envelope(flags: u8, message: &[u8]) -> Bytes {
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.put_u8(flags);
    framed.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    framed.put_slice(message);
    framed.freeze()
}

/// The end-of-stream envelope flag.
const END_STREAM: u8 = 0x02;

/// The end-of-stream envelope: `{}` after success, else `{"error": ...}`.
pub fn end_of_stream(status: Option<&Status>) -> Bytes {
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
pub fn stream_error(status: &Status, encoding: Encoding) -> http::Response<Body> {
    stream_response(Body::new(Full::new(end_of_stream(Some(status)))), encoding)
}

pub fn stream_response(body: Body, encoding: Encoding) -> http::Response<Body> {
    let mut response = http::Response::new(body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(encoding.content_type(Protocol::Streaming)),
    );
    response
}

/// The one message of a streaming request: a single uncompressed envelope
/// and nothing after it.
pub fn unenvelope(body: &[u8]) -> Result<&[u8], Status> {
    let (head, message) = body
        .split_at_checked(5)
        .ok_or_else(|| Status::invalid_argument("the request body is not an enveloped message"))?;
    let [flags, length @ ..] = head else {
        return Err(Status::invalid_argument(
            "the request body is not an enveloped message",
        ));
    };
    match *flags {
        0 => {}
        0x01 => {
            return Err(Status::unimplemented(
                "compressed messages are not supported",
            ));
        }
        b'{' => {
            return Err(Status::invalid_argument(
                "the request body is JSON without an envelope: a Connect streaming request \
                 (Content-Type application/connect+json) is a flags byte 0, a 4-byte big-endian \
                 length, then the JSON message",
            ));
        }
        other => {
            return Err(Status::invalid_argument(format!(
                "the request envelope's flags are {other:#04x}: a request message has flags 0 \
                 (0x01, compressed, is not supported; 0x02 ends a response stream)"
            )));
        }
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
pub fn messages(
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
    use http::HeaderMap;

    use super::*;
    use crate::http::connect::routes::identity;

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
        // An end-of-stream flag, or JSON sent bare: said as such.
        assert_eq!(code(&envelope(2, message)), Some(Code::InvalidArgument));
        let bare = unenvelope(message).err();
        assert_eq!(bare.as_ref().map(Status::code), Some(Code::InvalidArgument));
        let said = bare.map(|s| s.message().to_owned()).unwrap_or_default();
        assert!(said.contains("JSON without an envelope"), "{said}");
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
}
