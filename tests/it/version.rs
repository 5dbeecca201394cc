//! `spool --version` names the version and the commit the binary was built from (build.rs).

use std::process::Command;

#[test]
fn version_names_the_package_version_and_the_commit() {
    let output = Command::new(env!("CARGO_BIN_EXE_spool"))
        .arg("--version")
        .output()
        .expect("run spool --version");
    assert!(output.status.success());
    let version = String::from_utf8(output.stdout).expect("UTF-8");
    // The commit cargo built from: what `git rev-parse` says now, in a checkout (build.rs
    // reruns when HEAD moves, so they agree); "unknown" where git cannot tell.
    let head = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string());
    let commit = std::env::var("SPOOL_GIT_COMMIT")
        .ok()
        .filter(|commit| !commit.is_empty())
        .or(head)
        .unwrap_or_else(|| "unknown".to_string());
    assert_eq!(
        version.trim(),
        format!("spool {} (commit {commit})", env!("CARGO_PKG_VERSION"))
    );
}
