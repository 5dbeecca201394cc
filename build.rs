//! Compiles the protobuf API with protox (pure Rust, so no system `protoc` is needed) and writes the
//! encoded descriptor set that the reflection service serves.

use std::path::PathBuf;

use prost::Message as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/spool/v1/queue.proto";
    println!("cargo:rerun-if-changed={proto}");

    let descriptors = protox::compile([proto], ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("spool_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        // Bodies as `Bytes`: decoded without a copy and handed on by reference count.
        .bytes(".spool.v1")
        // Small per-call buffers: a parked long poll keeps its buffer (src/grpc/codec.rs).
        .codec_path("crate::grpc::codec::SmallBufferCodec")
        .compile_fds(descriptors)?;
    Ok(())
}
