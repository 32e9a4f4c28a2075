//! The suite's child processes (`loadgen serve <role>`), their CPU time
//! from `/proc/<pid>/stat`, and their Prometheus metrics.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, ChildStdin, Command};

/// How long a child may take to print `READY`.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a child may take to stop once its stdin closes.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `loadgen serve` child.
#[derive(Debug)]
pub struct Proc {
    pub name: &'static str,
    child: Child,
    /// Closing it asks the child to stop.
    stdin: Option<ChildStdin>,
    /// What the child printed after `READY`.
    pub ready: serde_json::Value,
}

impl Proc {
    /// Starts this executable as `loadgen serve [--embedded] <args>` and
    /// waits for its `READY` line.
    pub async fn spawn(
        name: &'static str,
        embedded: bool,
        args: &[String],
    ) -> anyhow::Result<Self> {
        Self::spawn_with_env(name, embedded, args, &[]).await
    }

    /// [`Proc::spawn`], with `env` added to the child's environment.
    pub async fn spawn_with_env(
        name: &'static str,
        embedded: bool,
        args: &[String],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("finding this executable")?;
        let mut command = Command::new(exe);
        command.arg("serve");
        if embedded {
            command.arg("--embedded");
        }
        command
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // The services log at info; the suite's own output stays readable.
            .env(
                "RUST_LOG",
                std::env::var("LOADGEN_CHILD_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .with_context(|| format!("starting the {name}"))?;
        let stdin = child.stdin.take();
        let Some(stdout) = child.stdout.take() else {
            bail!("the {name} has no stdout");
        };
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(READY_TIMEOUT, async {
            while let Some(line) = lines.next_line().await? {
                if let Some(json) = line.strip_prefix("READY ") {
                    return Ok::<_, anyhow::Error>(Some(serde_json::from_str(json)?));
                }
            }
            Ok(None)
        })
        .await
        .with_context(|| format!("the {name} did not start within {READY_TIMEOUT:?}"))??;
        let Some(ready) = ready else {
            bail!("the {name} exited before it was ready");
        };
        // Keep draining stdout so that the child never blocks on it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            name,
            child,
            stdin,
            ready,
        })
    }

    /// A string the child reported, such as `"grpc"`.
    pub fn addr(&self, key: &str) -> anyhow::Result<String> {
        self.ready[key]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("the {} reported no {key}", self.name))
    }

    pub fn pid(&self) -> anyhow::Result<u32> {
        self.child
            .id()
            .with_context(|| format!("the {} has exited", self.name))
    }

    /// The CPU time the child has used so far.
    pub fn cpu(&self) -> anyhow::Result<Duration> {
        cpu_time(self.pid()?)
    }

    /// Asks the child to stop, waits, and kills it if it does not.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.shutdown().await;
        }
        match tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await {
            Ok(status) => {
                let status = status?;
                if !status.success() {
                    bail!("the {} exited with {status}", self.name);
                }
                Ok(())
            }
            Err(_) => {
                self.child.kill().await?;
                bail!("the {} did not stop within {STOP_TIMEOUT:?}", self.name)
            }
        }
    }
}

/// Clock ticks per second of `/proc/<pid>/stat`'s CPU fields.
fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            // Linux's USER_HZ on every architecture we run on.
            .unwrap_or(100)
    })
}

/// utime + stime of `pid`.
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    parse_cpu_ticks(&stat)
        .map(|ticks| Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64))
        .with_context(|| format!("parsing /proc/{pid}/stat"))
}

/// utime + stime, fields 14 and 15, counted after the `)` closing the
/// command name (which may hold spaces).
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// One scrape of a Prometheus text endpoint: the value of every sample,
/// keyed by `name{labels}` as printed.
#[derive(Clone, Debug, Default)]
pub struct Scrape(HashMap<String, f64>);

impl Scrape {
    pub async fn fetch(addr: &str) -> anyhow::Result<Self> {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to the metrics endpoint {addr}"))?;
        let request = format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut body = String::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut body))
            .await
            .context("scraping metrics timed out")??;
        let Some((head, text)) = body.split_once("\r\n\r\n") else {
            bail!("malformed metrics response from {addr}");
        };
        if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
            bail!(
                "metrics endpoint {addr} answered {}",
                head.lines().next().unwrap_or("")
            );
        }
        Ok(Self::parse(text))
    }

    pub fn parse(text: &str) -> Self {
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .filter_map(|line| {
                let (key, value) = line.rsplit_once(' ')?;
                Some((key.to_owned(), value.parse().ok()?))
            })
            .collect();
        Self(samples)
    }

    /// The sum of every sample of `name` whose labels include each of
    /// `labels` (`key="value"` pairs).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|(key, _)| {
                let (metric, rest) = key.split_once('{').unwrap_or((key.as_str(), ""));
                metric == name
                    && labels
                        .iter()
                        .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
            })
            .map(|(_, value)| value)
            .sum()
    }

    /// `later - self` for one metric.
    pub fn delta(&self, later: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
        later.sum(name, labels) - self.sum(name, labels)
    }

    /// The cumulative buckets of histogram `name` (`le` → count, summed
    /// over any other labels) in `later` minus those here.
    pub fn bucket_deltas(&self, later: &Scrape, name: &str) -> Vec<(f64, f64)> {
        let bucket = format!("{name}_bucket");
        let mut by_le: Vec<(f64, f64)> = Vec::new();
        for (key, value) in &later.0 {
            let Some((metric, rest)) = key.split_once('{') else {
                continue;
            };
            let Some(le) = rest
                .split("le=\"")
                .nth(1)
                .and_then(|tail| tail.split('"').next())
            else {
                continue;
            };
            let le = if le == "+Inf" {
                f64::INFINITY
            } else if let Ok(le) = le.parse() {
                le
            } else {
                continue;
            };
            if metric != bucket {
                continue;
            }
            let delta = value - self.0.get(key).copied().unwrap_or(0.0);
            match by_le.iter_mut().find(|(bound, _)| *bound == le) {
                Some((_, count)) => *count += delta,
                None => by_le.push((le, delta)),
            }
        }
        by_le.sort_by(|a, b| a.0.total_cmp(&b.0));
        by_le
    }
}

/// The bound of the first bucket holding quantile `q` of a histogram's
/// cumulative bucket counts: an upper bound on that quantile.
pub fn bucket_quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = (q * total).ceil();
    buckets
        .iter()
        .find(|(_, count)| *count >= rank)
        .map(|(le, _)| *le)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_utime_plus_stime_even_with_spaces_in_the_name() {
        let stat = "4242 (tokio worker 1) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    250 75 0 0 20 0 8 0 12345 1000000 500 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
    }

    #[test]
    fn this_process_has_used_some_cpu() {
        let spent = cpu_time(std::process::id()).unwrap();
        // Not a timing assertion: the counter exists and parses.
        assert!(spent < Duration::from_secs(24 * 60 * 60));
    }

    #[test]
    fn samples_sum_over_matching_labels() {
        let text = "# HELP x calls\n\
                    x_total{service=\"dynamodb\",operation=\"Query\"} 3\n\
                    x_total{service=\"dynamodb\",operation=\"TransactWriteItems\"} 5\n\
                    x_total{service=\"events\",operation=\"PutEvents\"} 2\n\
                    y 7.5\n";
        let scrape = Scrape::parse(text);
        assert_eq!(scrape.sum("x_total", &[]), 10.0);
        assert_eq!(scrape.sum("x_total", &[("service", "dynamodb")]), 8.0);
        assert_eq!(
            scrape.sum("x_total", &[("operation", "TransactWriteItems")]),
            5.0
        );
        assert_eq!(scrape.sum("y", &[]), 7.5);
        assert_eq!(scrape.sum("z", &[]), 0.0);
    }

    #[test]
    fn histogram_quantiles_come_from_bucket_deltas() {
        let before = Scrape::parse(
            "h_bucket{le=\"0.01\"} 10\nh_bucket{le=\"0.1\"} 10\nh_bucket{le=\"+Inf\"} 10\n",
        );
        let after = Scrape::parse(
            "h_bucket{le=\"0.01\"} 60\nh_bucket{le=\"0.1\"} 108\nh_bucket{le=\"+Inf\"} 110\n",
        );
        let buckets = before.bucket_deltas(&after, "h");
        assert_eq!(
            buckets,
            vec![(0.01, 50.0), (0.1, 98.0), (f64::INFINITY, 100.0)]
        );
        assert_eq!(bucket_quantile(&buckets, 0.5), Some(0.01));
        assert_eq!(bucket_quantile(&buckets, 0.98), Some(0.1));
        assert_eq!(bucket_quantile(&buckets, 0.99), Some(f64::INFINITY));
    }
}
