//! The suite's results as Markdown, and the part of `BENCHMARKS.md` they
//! replace.

use std::fmt::Write as _;

use crate::load::Outcome;

pub const BEGIN: &str =
    "<!-- loadgen suite: begin (written by `loadgen suite`; edits inside are overwritten) -->";
pub const END: &str = "<!-- loadgen suite: end -->";

/// Replaces the text between [`BEGIN`] and [`END`] in `doc` with `section`,
/// or appends the markers and the section when `doc` has none.
pub fn splice(doc: &str, section: &str) -> String {
    let block = format!("{BEGIN}\n{}\n{END}", section.trim_end());
    match (doc.find(BEGIN), doc.find(END)) {
        (Some(begin), Some(end)) if begin < end => {
            format!("{}{block}{}", &doc[..begin], &doc[end + END.len()..])
        }
        _ => {
            let mut out = doc.trim_end().to_owned();
            if !out.is_empty() {
                out.push_str("\n\n");
            }
            out.push_str(&block);
            out.push('\n');
            out
        }
    }
}

/// A Markdown table.
#[derive(Debug, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
        out.push_str(&line(&self.header));
        let rule: Vec<String> = self
            .header
            .iter()
            .enumerate()
            .map(|(i, _)| if i == 0 { "---".into() } else { "---:".into() })
            .collect();
        out.push_str(&line(&rule));
        for row in &self.rows {
            out.push_str(&line(row));
        }
        out
    }
}

/// `1,234`.
pub fn int(n: f64) -> String {
    let n = n.round() as i64;
    let digits = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// Milliseconds with a precision that suits them.
pub fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

pub fn ratio(num: f64, den: f64) -> String {
    if den <= 0.0 {
        "n/a".into()
    } else {
        format!("{:.2}×", num / den)
    }
}

/// Rate, p50, p99, p999 of a run.
pub fn rate_and_latency(o: &Outcome) -> [String; 4] {
    [
        int(o.rate()),
        ms(o.quantile_ms(0.5)),
        ms(o.quantile_ms(0.99)),
        ms(o.quantile_ms(0.999)),
    ]
}

/// The machine, as the kernel describes it.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_kb: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into());
    format!(
        "{cores} cores, {model}, {:.0} GiB RAM, {} (1-minute load average at the start: {load})",
        mem_kb as f64 / 1024.0 / 1024.0,
        std::env::consts::OS,
    )
}

/// The commit the suite ran on, marked when the tree had changes.
pub fn commit() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(head) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{head} (with uncommitted changes)")
            } else {
                head
            }
        }
        None => "unknown (not a git checkout)".into(),
    }
}

pub fn push_heading(out: &mut String, level: usize, text: &str) {
    let _ = writeln!(out, "{} {text}\n", "#".repeat(level));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splicing_replaces_only_the_suites_section() {
        let doc = format!("# B\n\nhand-written\n\n{BEGIN}\nold\n{END}\n\nafter\n");
        let out = splice(&doc, "new\n");
        assert_eq!(
            out,
            format!("# B\n\nhand-written\n\n{BEGIN}\nnew\n{END}\n\nafter\n")
        );
        // Twice gives the same.
        assert_eq!(splice(&out, "new"), out);
    }

    #[test]
    fn splicing_appends_when_there_is_no_section() {
        let out = splice("# B\n", "new");
        assert_eq!(out, format!("# B\n\n{BEGIN}\nnew\n{END}\n"));
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(int(1234567.4), "1,234,567");
        assert_eq!(int(999.0), "999");
        assert_eq!(ms(0.4567), "0.46");
        assert_eq!(ms(12.345), "12.3");
        assert_eq!(ratio(3.0, 4.0), "0.75×");
        assert_eq!(ratio(1.0, 0.0), "n/a");
    }

    #[test]
    fn tables_render_as_markdown() {
        let mut t = Table::new(&["a", "b"]);
        t.row(vec!["x".into(), "1".into()]);
        assert_eq!(t.render(), "| a | b |\n| --- | ---: |\n| x | 1 |\n");
    }
}
