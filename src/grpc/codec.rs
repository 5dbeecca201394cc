//! The protobuf codec of the generated server and client: tonic's prost codec with a smaller
//! buffer. Tonic allocates the encoding buffer of every call up front (8 KiB by default) and
//! keeps it for the life of the call; a parked long poll is a call that lives up to 30 s, so
//! with thousands of them that buffer was most of the server's memory per waiting stream.
//! Spool's messages are small (a receive's message is its body plus ~150 B), and a larger one
//! grows the buffer as needed, so 1 KiB costs nothing in speed and saves 7 KiB per call.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// The initial encoding (and decoding) buffer of a call.
pub const CALL_BUFFER_BYTES: usize = 1024;
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

fn settings() -> BufferSettings {
    BufferSettings::new(CALL_BUFFER_BYTES, YIELD_THRESHOLD_BYTES)
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
        ProstCodec::<T, U>::raw_encoder(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(settings())
    }
}
