//! The protobuf codec of the generated stubs (the client's, and the server trait's with the
//! `server` feature): tonic's prost codec with a smaller encoding buffer. Tonic allocates the
//! encoding buffer of every call up front (8 KiB by default) and keeps it for the life of the
//! call; a parked long poll is a call that lives up to 30 s, so with thousands of them that
//! buffer was most of the server's memory per waiting stream. Spool's messages are small (a
//! receive's message is its body plus ~150 B), and a larger one grows the buffer as needed, so
//! 1 KiB costs little in speed and saves 7 KiB per call. The decoding buffer keeps tonic's
//! 8 KiB (see [`DECODE_BUFFER_BYTES`]). It lives here, beside the generated code that names it,
//! so that the server and the client share one.
//!
//! Its decoder answers a message that is not valid protobuf with INVALID_ARGUMENT (CMQ 4000),
//! where tonic's prost decoder says INTERNAL: a request the server cannot parse is the caller's
//! fault, and every Spool error carries the same ErrorInfo (see [`MalformedDecoder`]).

use std::marker::PhantomData;

use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstCodec, ProstEncoder};

use crate::errors;

/// The initial encoding buffer of a call.
const CALL_BUFFER_BYTES: usize = 1024;
/// The initial decoding buffer, tonic's default. At 1 KiB it grew several times for every
/// batch of 16 bodies, which showed in profiles; at 8 KiB (measured, 4x4 producers and
/// consumers, batch 16): fill 85k -> 99k msg/s, drain 75k -> 82k, steady 53k -> 56k. A server
/// decodes a request before a long poll parks, so the buffer is not held while it waits; the
/// memory per waiting stream still rose from ~5.9 KB to ~6.7 KB (the allocator keeps more).
const DECODE_BUFFER_BYTES: usize = 8 * 1024;
/// As tonic's default: how much a response stream may buffer before it yields to the network.
const YIELD_THRESHOLD_BYTES: usize = 32 * 1024;

/// [`ProstCodec`] with [`CALL_BUFFER_BYTES`] buffers; `build.rs` names it as the codec path.
#[derive(Debug, Clone, Copy)]
pub struct SmallBufferCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for SmallBufferCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

fn encode_settings() -> BufferSettings {
    BufferSettings::new(CALL_BUFFER_BYTES, YIELD_THRESHOLD_BYTES)
}

/// The decoding buffer of a message type: [`DECODE_BUFFER_BYTES`], except for StreamMessages'
/// requests. A consumer stream keeps its decoder (and so this buffer) for as long as it is
/// open, and its requests are small (a full acknowledgement of 16 handles is about 1 KiB), so
/// it takes the call buffer's size: measured with `spool-bench --mode idle --consume stream`,
/// 8 KiB here cost an idle stream about 9 KB of the server's memory in all.
fn decode_settings<U: 'static>() -> BufferSettings {
    let initial = if std::any::TypeId::of::<U>()
        == std::any::TypeId::of::<crate::pb::StreamMessagesRequest>()
    {
        CALL_BUFFER_BYTES
    } else {
        DECODE_BUFFER_BYTES
    };
    BufferSettings::new(initial, YIELD_THRESHOLD_BYTES)
}

impl<T, U> Codec for SmallBufferCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = MalformedDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(encode_settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        MalformedDecoder(PhantomData)
    }
}

/// Decodes like tonic's prost decoder, but a malformed message is INVALID_ARGUMENT with
/// Spool's ErrorInfo (reason INVALID_ARGUMENT, cmq_code 4000) instead of a bare INTERNAL.
/// gRPC's status-code table files "cannot parse" under INTERNAL, written from a client's view
/// of a broken server; for Spool's server it is a client sending bytes that are not the
/// request it names, which CMQ and the error table call a bad parameter.
///
/// The generated client shares this codec (one build configuration for both sides), so a
/// response the Rust client cannot parse reads INVALID_ARGUMENT too; the message names the
/// message type (a response's name ends in `Response` or is a resource), which tells the two
/// apart.
#[derive(Debug, Clone, Copy)]
pub struct MalformedDecoder<U>(PhantomData<U>);

impl<U> Decoder for MalformedDecoder<U>
where
    U: prost::Message + Default + 'static,
{
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf).map(Some).map_err(|error| {
            errors::INVALID_ARGUMENT.status(format!(
                "the message is not a valid protobuf {}: {error}",
                message_name::<U>()
            ))
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        decode_settings::<U>()
    }
}

/// The Rust type's last path segment, e.g. "SendMessageRequest": the proto message's name.
fn message_name<U>() -> &'static str {
    let path = std::any::type_name::<U>();
    path.rsplit("::").next().unwrap_or(path)
}
