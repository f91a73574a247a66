//! The protobuf codec of every `kpi.v1` service: prost's, with an encode
//! buffer sized to each message.
//!
//! tonic keeps one encode buffer per call for as long as the call lasts,
//! 8 KiB by default and grown by doubling while prost writes into it. A
//! watch lasts hours and sends a message now and then, so that buffer is
//! most of what an idle watch costs. This codec starts each call's buffer
//! small and reserves exactly a message's encoded length before encoding
//! it: an open stream holds about one message's bytes, not 8-16 KiB.

use std::marker::PhantomData;

use prost::Message;
use tonic::{
    Status,
    codec::{BufferSettings, Codec, EncodeBuf, Encoder},
};
use tonic_prost::ProstDecoder;

/// Initial encode buffer of a call (a gRPC message header and a small
/// message fit).
const ENCODE_BUFFER: usize = 256;
/// tonic's default: a response stream yields to the transport once this
/// much is encoded.
const YIELD_THRESHOLD: usize = 32 * 1024;

/// prost encoding with message-sized buffers; decoding as prost's own.
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
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        LeanEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::default()
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
