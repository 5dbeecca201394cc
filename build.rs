//! Writes the encoded descriptor set of the protobuf API, which the reflection service serves.
//! The generated types and stubs come from the client crate (`spool_client::pb`, with its
//! `server` feature), so the server and the client share one set; protox (pure Rust, so no
//! system `protoc` is needed) compiles the proto here only for its descriptors.

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

    // The RPCs of every service, for the metrics' `method` label: read from the proto, so a
    // new RPC is measured without a table kept by hand.
    let mut methods = String::from("/// (gRPC path, method name) of every RPC of Spool's API.\n");
    methods.push_str("pub const RPC_METHODS: &[(&str, &str)] = &[\n");
    for file in &descriptors.file {
        for service in &file.service {
            for method in &service.method {
                let (package, service, method) = (file.package(), service.name(), method.name());
                methods.push_str(&format!(
                    "    (\"/{package}.{service}/{method}\", \"{method}\"),\n"
                ));
            }
        }
    }
    methods.push_str("];\n");
    std::fs::write(out_dir.join("rpc_methods.rs"), methods)?;
    Ok(())
}
