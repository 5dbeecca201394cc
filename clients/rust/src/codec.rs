//! The protobuf codec of the generated stubs (the client's, and the server trait's with the
//! `server` feature): tonic's prost codec with a smaller encoding buffer. Tonic allocates the
//! encoding buffer of every call up front (8 KiB by default) and keeps it for the life of the
//! call; a parked long poll is a call that lives up to 30 s, so with thousands of them that
//! buffer was most of the server's memory per waiting stream. Spool's messages are small (a
//! receive's message is its body plus ~150 B), and a larger one grows the buffer as needed, so
//! 1 KiB costs little in speed and saves 7 KiB per call. The decoding buffer keeps tonic's
//! 8 KiB (see [`DECODE_BUFFER_BYTES`]). It lives here, beside the generated code that names it,
//! so that the server and the client share one.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

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

fn decode_settings() -> BufferSettings {
    BufferSettings::new(DECODE_BUFFER_BYTES, YIELD_THRESHOLD_BYTES)
}

impl<T, U> Codec for SmallBufferCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(encode_settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(decode_settings())
    }
}
