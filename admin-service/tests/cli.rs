//! The binary refuses bad configuration before it binds a port, with exit
//! code 2 and the reason. (An integration test also makes `cargo test
//! --workspace` build the binary, which the process tests run.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn invalid_config_exits_with_2_before_binding() {
    for (args, reason) in [
        (["--table-prefix", "no spaces allowed"], "table prefix"),
        (["--page-token-secret", "short"], "page token secret"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_admin-service"))
            .args(args)
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .output()
            .expect("run admin-service");
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(reason), "{stderr}");
        assert!(!stderr.contains("listening"), "{stderr}");
    }
}
