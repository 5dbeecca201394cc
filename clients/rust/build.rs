//! Compiles the protobuf API with protox (pure Rust, so no system `protoc` is needed) into the
//! message types and the client stubs of `spool_client::pb`, and with the `server` feature the
//! server trait too: one set of generated types, shared by the client and the server.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "../../proto/spool/v1/queue.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["../../proto"])?;
    tonic_prost_build::configure()
        .build_server(std::env::var_os("CARGO_FEATURE_SERVER").is_some())
        // Bodies as `Bytes`: decoded without a copy and handed on by reference count.
        .bytes(".spool.v1")
        // Small per-call buffers: a parked long poll keeps its buffer (src/codec.rs).
        .codec_path("crate::codec::SmallBufferCodec")
        .compile_fds(descriptors)?;
    Ok(())
}
