//! Writes the encoded descriptor set of the protobuf API, which the reflection service serves.
//! The generated types and stubs come from the client crate (`spool_client::pb`, with its
//! `server` feature), so the server and the client share one set; protox (pure Rust, so no
//! system `protoc` is needed) compiles the proto here only for its descriptors. It also records
//! the git commit that `spool --version` names.

use std::path::{Path, PathBuf};
use std::process::Command;

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

    git_commit();
    Ok(())
}

/// Sets `SPOOL_GIT_COMMIT` for `spool --version`: `$SPOOL_GIT_COMMIT` if given (a build without
/// `.git`, such as the Docker build's context), else `git rev-parse --short HEAD`, else
/// "unknown" (no git, or not a checkout).
fn git_commit() {
    println!("cargo:rerun-if-env-changed=SPOOL_GIT_COMMIT");
    let commit = std::env::var("SPOOL_GIT_COMMIT")
        .ok()
        .filter(|commit| !commit.is_empty())
        .or_else(|| git(&["rev-parse", "--short", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=SPOOL_GIT_COMMIT={commit}");
    // Rerun when HEAD moves, and only then: HEAD itself (a checkout of another branch or commit)
    // and the branch it names (a new commit), wherever git keeps them (a worktree's are not
    // under ./.git). A missing path would make cargo rerun this script on every build, so only
    // existing ones are named; a packed branch gets a loose file at its next commit.
    let mut watched = vec![git(&["rev-parse", "--git-path", "HEAD"])];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(git(&["rev-parse", "--git-path", &branch]));
    }
    for path in watched.into_iter().flatten() {
        if Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}

/// A git command's output, trimmed; None if git is missing or fails.
fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    (output.status.success() && !text.trim().is_empty()).then(|| text.trim().to_string())
}
