//! The workspace's real binaries as child processes, for the test crates
//! that run them (`tests/processes`, `tests/iam`, `tests/observability`):
//! each started on port 0 and
//! waited for until it logs the address it listens on, and killed if the
//! test fails.
//!
//! The binaries sit next to the test's `deps/` folder; `cargo test
//! --workspace` builds them before running any test (alone: `cargo build
//! --workspace --bins` first).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// How long a binary may take to report its address.
const READY_DEADLINE: Duration = Duration::from_secs(30);

fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile directory");
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace`, or `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// A child process that is killed when dropped, so a failing test leaves
/// nothing behind.
pub struct Proc {
    name: String,
    child: Child,
    /// Where it listens: its gRPC server (the projector's and the route
    /// planner's health server).
    pub addr: SocketAddr,
    /// Every JSON log line it wrote so far.
    lines: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Every JSON log line the process wrote so far, in order.
    pub fn log_lines(&self) -> Vec<serde_json::Value> {
        self.lines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn terminate(mut self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "{} exited with {status}", self.name);
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit after SIGTERM",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, as a crash: nothing is cleaned up, nothing released.
    /// Returns once the process is gone.
    pub fn kill(&mut self) {
        self.child
            .kill()
            .unwrap_or_else(|e| panic!("SIGKILL {}: {e}", self.name));
        self.child.wait().expect("wait");
    }
}

/// Starts binary `name` on the tables of `prefix` and waits until it logs
/// the address it listens on (JSON logs on stderr, field `addr`). `args`
/// and `env` say where the store is and where to listen (port 0). Its
/// metrics endpoint is on a free port; its warnings and errors are shown
/// with a failing test's output.
pub fn spawn(name: &str, prefix: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
    start(name, Some(prefix), None, args, env)
}

/// [`spawn`], with the binary recording its AWS calls to `call_log`.
pub fn spawn_recording(
    name: &str,
    prefix: &str,
    call_log: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> Proc {
    start(name, Some(prefix), Some(call_log), args, env)
}

/// [`spawn_recording`] for a binary that reads no table (the route
/// planner): started without `--table-prefix`.
pub fn spawn_recording_without_tables(
    name: &str,
    call_log: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> Proc {
    start(name, None, Some(call_log), args, env)
}

/// Starts `name`, on the tables of `prefix` if given.
fn start(
    name: &str,
    prefix: Option<&str>,
    call_log: Option<&Path>,
    args: &[&str],
    env: &[(&str, &str)],
) -> Proc {
    let mut command = Command::new(binary(name));
    if let Some(prefix) = prefix {
        command.args(["--table-prefix", prefix]);
    }
    command
        .args(args)
        .env("DYNABRIDGE_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .env("AWS_ACCESS_KEY_ID", "dynabridge-local")
        .env("AWS_SECRET_ACCESS_KEY", "dynabridge-local")
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_PROFILE")
        // Each binary's own metrics endpoint, on a free port.
        .env("DYNABRIDGE_COMMAND_METRICS_LISTEN", "127.0.0.1:0")
        .env("DYNABRIDGE_QUERY_METRICS_LISTEN", "127.0.0.1:0")
        .env("DYNABRIDGE_PROJECTOR_METRICS_LISTEN", "127.0.0.1:0")
        .env("DYNABRIDGE_ADMIN_METRICS_LISTEN", "127.0.0.1:0")
        .env("DYNABRIDGE_PROCESS_MANAGER_METRICS_LISTEN", "127.0.0.1:0")
        // Only the endpoints the test sets.
        .env_remove("DYNABRIDGE_ENDPOINT_URL")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_ENDPOINT_URL_DYNAMODB")
        .env_remove("AWS_ENDPOINT_URL_DYNAMODB_STREAMS")
        .env_remove("AWS_ENDPOINT_URL_EVENTBRIDGE")
        .env_remove("AWS_ENDPOINT_URL_SQS")
        .env_remove("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")
        // Only the call log the test asks for.
        .env_remove(dynabridge_aws::CALL_LOG_ENV)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(call_log) = call_log {
        command.env(dynabridge_aws::CALL_LOG_ENV, call_log);
    }
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
    let logs = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    let label = name.to_owned();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let kept = lines.clone();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(logs).lines().map_while(Result::ok) {
            let Ok(json) = serde_json::from_str::<serde_json::Value>(&line) else {
                eprintln!("{label}: {line}");
                continue;
            };
            // Shown with a failing test's output: what went wrong inside.
            if matches!(json["level"].as_str(), Some("WARN" | "ERROR")) {
                eprintln!("{label}: {line}");
            }
            let addr = json["fields"]["addr"].as_str().map(str::to_owned);
            kept.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(json);
            if !sent && let Some(addr) = addr.and_then(|a| a.parse::<SocketAddr>().ok()) {
                let _ = tx.send(addr);
                sent = true;
            }
        }
    });
    let addr = rx
        .recv_timeout(READY_DEADLINE)
        .unwrap_or_else(|_| panic!("{name} did not report its address"));
    Proc {
        name: name.to_owned(),
        child,
        addr,
        lines,
    }
}
