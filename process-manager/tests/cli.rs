//! The binary refuses bad configuration before it binds a port (exit code
//! 2), and says which setting is wrong.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn refused(args: &[&str], says: &str) {
    let output = Command::new(env!("CARGO_BIN_EXE_process-manager"))
        .args(args)
        .args(["--health-listen", "127.0.0.1:0"])
        .output()
        .expect("run process-manager");
    assert_eq!(output.status.code(), Some(2), "{args:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(says), "{args:?}: {stderr}");
    assert!(!stderr.contains("listening"), "{stderr}");
}

#[test]
fn invalid_config_exits_before_binding() {
    refused(&["--table-prefix", "no spaces allowed"], "table prefix");
    refused(&["--max-concurrent-steps", "0"], "max concurrent steps");
    refused(&["--lease-duration-ms", "999"], "lease duration");
    refused(&["--idle-poll-max-ms", "0"], "idle poll");
}
