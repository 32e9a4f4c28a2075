//! The binary refuses bad configuration before it binds a port.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn invalid_config_exits_non_zero_before_binding() {
    let output = Command::new(env!("CARGO_BIN_EXE_command-service"))
        .args([
            "--table-prefix",
            "no spaces allowed",
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .expect("run command-service");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("table prefix"), "{stderr}");
    assert!(!stderr.contains("listening"));
}
