//! The binary refuses bad configuration before it binds a port (exit code
//! 2), and says which setting is wrong. (Also what makes `cargo test` build
//! the binary, which the IAM test runs.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn refused(args: &[&str], says: &str) {
    let output = Command::new(env!("CARGO_BIN_EXE_route-planner"))
        .args(args)
        .args(["--health-listen", "127.0.0.1:0"])
        .output()
        .expect("run route-planner");
    assert_eq!(output.status.code(), Some(2), "{args:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(says), "{args:?}: {stderr}");
    assert!(!stderr.contains("listening"), "{stderr}");
}

#[test]
fn invalid_config_exits_before_binding() {
    let queue = ["--queue-url", "http://127.0.0.1:1/000000000000/q"];
    refused(&[], "--queue-url");
    refused(&["--queue-url", " "], "queue url");
    refused(&[&queue[..], &["--wait-seconds", "21"]].concat(), "wait");
    refused(
        &[&queue[..], &["--retry-after-ms", "0"]].concat(),
        "retry delay",
    );
    refused(
        &[&queue[..], &["--call-timeout-ms", "0"]].concat(),
        "call timeout",
    );
}
