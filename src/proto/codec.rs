//! The protobuf codec of every `kpi.v1` service: prost's, with an encode
//! buffer sized to each message.
//!
//! tonic keeps one encode buffer per call for as long as the call lasts,
//! 8 KiB by default and grown by doubling while prost writes into it. A
//! watch lasts hours and sends a message now and then, so that buffer is
//! most of what an idle watch costs. This codec starts each call's buffer
//! small and reserves exactly a message's encoded length before encoding
//! it: an open stream holds about one message's bytes, not 8-16 KiB.
//!
//! Decoding is prost's, but bytes that are not a valid message (a bad
//! varint, a truncated length, a wrong wire type, a string that is not
//! UTF-8) are the sender's fault: INVALID_ARGUMENT, where prost's own
//! decoder says INTERNAL (so that any key holder could fire the
//! server-error alert).

use std::marker::PhantomData;

use prost::Message;
use tonic::{
    Status,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
};

/// Initial encode buffer of a call (a gRPC message header and a small
/// message fit).
const ENCODE_BUFFER: usize = 256;
/// tonic's default: a response stream yields to the transport once this
/// much is encoded.
const YIELD_THRESHOLD: usize = 32 * 1024;

/// prost encoding with message-sized buffers; prost decoding, malformed
/// input INVALID_ARGUMENT.
#[derive(Debug, Clone)]
pub struct LeanCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for LeanCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for LeanCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = LeanEncoder<T>;
    type Decoder = LeanDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        LeanEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        LeanDecoder(PhantomData)
    }
}

#[derive(Debug, Clone)]
pub struct LeanEncoder<T>(PhantomData<T>);

impl<T: Message> Encoder for LeanEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.reserve(item.encoded_len());
        item.encode(buf)
            .map_err(|err| Status::internal(format!("cannot encode the response: {err}")))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(ENCODE_BUFFER, YIELD_THRESHOLD)
    }
}

#[derive(Debug, Clone)]
pub struct LeanDecoder<U>(PhantomData<U>);

impl<U: Message + Default> Decoder for LeanDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        decode_message(buf).map(Some)
    }
}

/// One message from `buf`; malformed bytes are INVALID_ARGUMENT.
fn decode_message<U: Message + Default>(buf: impl bytes::Buf) -> Result<U, Status> {
    U::decode(buf).map_err(|err| {
        Status::invalid_argument(format!(
            "the message is not a valid kpi.v1.{} in protobuf: {err}",
            message_name::<U>()
        ))
    })
}

/// `GetTeamRequest` of `kpi_service::proto::pb::GetTeamRequest`.
fn message_name<U>() -> &'static str {
    let path = std::any::type_name::<U>();
    path.rsplit("::").next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;
    use crate::proto::pb;

    #[test]
    fn malformed_messages_are_invalid_arguments_naming_the_message() {
        let valid = pb::GetTeamRequest {
            team_id: "emea".into(),
        };
        let decoded = decode_message::<pb::GetTeamRequest>(valid.encode_to_vec().as_slice());
        assert_eq!(decoded.ok(), Some(valid));
        for bad in [
            &[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            ][..],
            &[0x0a, 0x02, 0xff, 0xfe],
            &[0x0a, 0x10, b'a'],
            &[0x0d, 0, 0, 0, 0],
        ] {
            let status = decode_message::<pb::GetTeamRequest>(bad).err();
            assert_eq!(
                status.as_ref().map(Status::code),
                Some(Code::InvalidArgument),
                "{bad:?}"
            );
            let message = status.map(|s| s.message().to_owned()).unwrap_or_default();
            assert!(message.contains("kpi.v1.GetTeamRequest"), "{message}");
        }
    }
}
