//! The report: one Markdown table of both columns and their ratio, the
//! notes that say what each number is, the failover rounds, the per-round
//! details, the command, the date and the machine.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::Args;
use crate::failover;
use crate::measure::{Sample, median, ticks_per_sec};

static ANOMALIES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Records something wrong seen during the run (printed in the report).
pub fn anomaly(text: String) {
    eprintln!("  ANOMALY: {text}");
    ANOMALIES.lock().unwrap().push(text);
}

/// What a comparison measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Messages per second and CPU per message; `must_beat`: rabbitkit
    /// must be faster than raw lapin (not just ≥ 0.95×).
    Throughput {
        /// The target is "faster than raw lapin".
        must_beat: bool,
    },
    /// Calls per second, p50 / p99 latency, CPU per call.
    Rpc,
}

/// One rabbitkit variant against the raw lapin column of a scenario.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// The scenario.
    pub scenario: String,
    /// What is measured.
    pub kind: Kind,
    /// A reference comparison (raw lapin driven rabbitkit's way): no target.
    pub reference: bool,
    /// How the raw column does it.
    pub raw_label: String,
    /// The rabbitkit API used.
    pub rk_label: String,
    /// Raw lapin's samples (one per round).
    pub raw: Vec<Sample>,
    /// rabbitkit's samples (one per round).
    pub rk: Vec<Sample>,
    /// The amqprs column of the scenario (the same for all its rows).
    pub amqprs: Amqprs,
}

/// The amqprs column of a scenario.
#[derive(Debug, Clone)]
pub enum Amqprs {
    /// Measured: how amqprs was driven, and its samples (one per round).
    Measured {
        /// How amqprs does it.
        label: String,
        /// Its samples.
        samples: Vec<Sample>,
    },
    /// The scenario cannot be expressed with amqprs (or was not run): why.
    Absent(String),
}

impl Amqprs {
    fn samples(&self) -> &[Sample] {
        match self {
            Amqprs::Measured { samples, .. } => samples,
            Amqprs::Absent(_) => &[],
        }
    }
}

/// Everything the run found.
pub struct Bench {
    /// The settings.
    pub args: Args,
    /// When it started.
    pub started: SystemTime,
    /// The machine, read at the start.
    pub machine: Vec<String>,
    /// Load average at the start.
    pub load: String,
    /// The comparisons, in run order.
    pub comparisons: Vec<Comparison>,
    /// The failover scenario's outcome, if it ran.
    pub failover: Option<Result<failover::Report, String>>,
    /// Builds or test runs seen on the machine during the run.
    pub busy: Vec<String>,
    /// The delay scenario's outcome, if it ran.
    pub delay: Option<Result<crate::delay::Report, String>>,
    /// The partitions and streams scenarios' outcomes, those that ran.
    pub beyond: Vec<Result<crate::beyond::Report, String>>,
}

impl Bench {
    /// An empty report for a run with `args`, starting now, against the
    /// broker described by `broker` (version, as node 1 reports it).
    pub fn new(args: &Args, broker: &str) -> Self {
        Self {
            args: args.clone(),
            started: SystemTime::now(),
            machine: machine(broker),
            load: std::fs::read_to_string("/proc/loadavg")
                .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
                .unwrap_or_default(),
            comparisons: Vec::new(),
            failover: None,
            delay: None,
            beyond: Vec::new(),
            busy: Vec::new(),
        }
    }
}

/// Marks the start of what `--write` generated in a file.
pub const BEGIN: &str = "<!-- rabbitkit-bench: begin (generated; replaced by the next --write) -->";
/// Marks its end.
pub const END: &str = "<!-- rabbitkit-bench: end -->";

/// The new contents of a `--write` target that held `old`: the generated
/// `report` replaces the previous generated block, and everything written
/// by hand around it is kept. A file without a generated block keeps all of
/// its text, below the new report (its title line, when it repeats the
/// report's, is dropped).
pub fn merge(old: Option<&str>, report: &str) -> String {
    let block = format!("{BEGIN}\n{}\n{END}\n", report.trim_end());
    let Some(old) = old.filter(|o| !o.trim().is_empty()) else {
        return block;
    };
    if let (Some(b), Some(e)) = (old.find(BEGIN), old.find(END))
        && b < e
    {
        let after = &old[e + END.len()..];
        let after = after.strip_prefix('\n').unwrap_or(after);
        return format!("{}{block}{after}", &old[..b]);
    }
    let title = report.lines().next().unwrap_or_default();
    let rest = match old.split_once('\n') {
        Some((first, rest)) if first.trim() == title.trim() => rest,
        _ => old,
    };
    format!("{block}\n{}", rest.trim_start_matches('\n'))
}

/// `path` resolved against the workspace root when relative.
pub fn workspace_path(path: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_owned();
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from("."))
        .join(path)
}

/// Names of build and test processes running now (they steal CPU).
pub fn busy_processes() -> Vec<String> {
    const BUSY: &[&str] = &[
        "rustc",
        "cargo-nextest",
        "clippy-driver",
        "rustdoc",
        "cc1",
        "cc1plus",
        "ld",
        "rust-lld",
        "rust-analyzer",
    ];
    let me = std::process::id().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found: Vec<String> = dir
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy() != me)
        .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
        .map(|c| c.trim().to_owned())
        .filter(|c| BUSY.contains(&c.as_str()) || is_test_binary(c))
        .collect();
    found.sort();
    found.dedup();
    found
}

/// Whether `comm` looks like a cargo test binary (`name-<hash>`, cut at
/// 15 characters) or the soak program: they load or kill broker nodes.
fn is_test_binary(comm: &str) -> bool {
    if comm.starts_with("rabbitkit-soak") {
        return true;
    }
    match comm.rsplit_once('-') {
        Some((name, hash)) => {
            !name.is_empty()
                && hash.len() >= 4
                && hash
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        }
        None => false,
    }
}

fn first_line_with(path: &str, key: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
}

fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !text.is_empty()).then_some(text)
}

/// The commit the workspace is at (`git describe --always --dirty`).
fn commit() -> String {
    let root = workspace_path(Path::new("."));
    let root = root.to_string_lossy();
    command_output(
        "git",
        &[
            "-C",
            &root,
            "describe",
            "--always",
            "--dirty",
            "--abbrev=10",
        ],
    )
    .map(|c| format!("`{c}`"))
    .unwrap_or_else(|| "? (not a git checkout)".into())
}

fn lockfile_version(package: &str) -> Option<String> {
    let lock = std::fs::read_to_string(workspace_path(Path::new("Cargo.lock"))).ok()?;
    let needle = format!("name = \"{package}\"\nversion = \"");
    let start = lock.find(&needle)? + needle.len();
    let end = lock[start..].find('"')?;
    Some(lock[start..start + end].to_owned())
}

fn machine(broker: &str) -> Vec<String> {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let cpu =
        first_line_with("/proc/cpuinfo", "model name").unwrap_or_else(|| "unknown CPU".into());
    let mem = first_line_with("/proc/meminfo", "MemTotal")
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map(|kb| format!("{:.1} GiB RAM", kb / 1024.0 / 1024.0))
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let debian = std::fs::read_to_string("/etc/debian_version")
        .map(|s| format!("Debian {}", s.trim()))
        .unwrap_or_default();
    let rustc = command_output("rustc", &["--version"]).unwrap_or_else(|| "rustc ?".into());
    let lapin = lockfile_version("lapin").unwrap_or_else(|| "?".into());
    let amqprs = lockfile_version("amqprs").unwrap_or_else(|| "?".into());
    vec![
        format!("{cores} × {cpu}, {mem}; Linux {kernel}, {debian}"),
        format!(
            "{broker}: 3 nodes on loopback, on the same {cores} cores as the client; every column uses node 1"
        ),
        format!(
            "lapin {lapin}; amqprs {amqprs}; {rustc}; release build; tokio multi-thread runtime, {cores} workers"
        ),
    ]
}

/// `YYYY-MM-DD HH:MM UTC` for `t`.
fn utc(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

fn thousands(v: f64) -> String {
    let s = format!("{:.0}", v.max(0.0));
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn med(samples: &[Sample], f: impl Fn(&Sample) -> Option<f64>) -> Option<f64> {
    let values: Vec<f64> = samples.iter().filter_map(f).collect();
    (!values.is_empty()).then(|| median(values))
}

/// Whether `ratio` meets `target` (e.g. `≥ 0.95`, `≤ 1.10`, `> 1.00`).
fn verdict(ratio: f64, target: &str) -> &'static str {
    let Some((op, value)) = target.split_once(' ') else {
        return "";
    };
    let Ok(value) = value.parse::<f64>() else {
        return "";
    };
    let ok = match op {
        "≥" => ratio >= value,
        "≤" => ratio <= value,
        ">" => ratio > value,
        "<" => ratio < value,
        _ => return "",
    };
    if ok { "yes" } else { "**no**" }
}

struct Row<'a> {
    metric: &'a str,
    raw: Option<f64>,
    amq: Option<f64>,
    rk: Option<f64>,
    fmt: fn(f64) -> String,
    target: &'a str,
}

fn us(v: f64) -> String {
    format!("{v:.1} µs")
}

fn push_rows(
    out: &mut String,
    scenario: &str,
    reference: bool,
    absent: Option<&str>,
    rows: &[Row<'_>],
) {
    for (i, row) in rows.iter().enumerate() {
        let name = if i == 0 { scenario } else { "" };
        let show = |v: Option<f64>| v.map(row.fmt).unwrap_or_else(|| "–".into());
        let amq = match (absent, row.amq) {
            (Some(why), _) if i == 0 => format!("n/a: {why}"),
            (Some(_), _) => "n/a".into(),
            (None, v) => show(v),
        };
        let amq_ratio = match (row.amq, row.rk) {
            (Some(a), Some(rk)) if a > 0.0 => format!("{:.2}", rk / a),
            _ => "–".into(),
        };
        let (ratio, met) = match (row.raw, row.rk) {
            (Some(raw), Some(rk)) if raw > 0.0 => {
                let r = rk / raw;
                let met = if reference {
                    ""
                } else {
                    verdict(r, row.target)
                };
                (format!("{r:.2}"), met)
            }
            _ => ("–".into(), ""),
        };
        let target = if reference {
            "(reference)"
        } else if row.target.is_empty() {
            "–"
        } else {
            row.target
        };
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {amq} | {} | {ratio} | {amq_ratio} | {target} | {met} |",
            row.metric,
            show(row.raw),
            show(row.rk),
        );
    }
}

fn secs(d: Option<std::time::Duration>) -> String {
    d.map(|d| format!("{:.2} s", d.as_secs_f64()))
        .unwrap_or_else(|| "–".into())
}

/// Medians of one comparison: (raw, rabbitkit) for rate, CPU/msg, p50, p99.
struct Medians {
    rate: (f64, f64),
    cpu: (f64, f64),
    p50: Option<(f64, f64)>,
    p99: Option<(f64, f64)>,
}

fn medians(c: &Comparison) -> Medians {
    let both = |f: &dyn Fn(&Sample) -> Option<f64>| Some((med(&c.raw, f)?, med(&c.rk, f)?));
    Medians {
        rate: both(&|x| Some(x.rate())).unwrap_or_default(),
        cpu: both(&|x| Some(x.cpu_us())).unwrap_or_default(),
        p50: both(&|x| x.percentile_us(50.0)),
        p99: both(&|x| x.percentile_us(99.0)),
    }
}

fn ratio((raw, rk): (f64, f64)) -> f64 {
    if raw > 0.0 { rk / raw } else { f64::NAN }
}

/// The targets missed, each with what the reference rows of its scenario say.
fn misses(bench: &Bench) -> String {
    let mut out = String::new();
    let mut lines = Vec::new();
    for c in bench.comparisons.iter().filter(|c| !c.reference) {
        let m = medians(c);
        let mut missed = Vec::new();
        let (rate_ok, rate_target) = match c.kind {
            Kind::Throughput { must_beat: true } => (ratio(m.rate) > 1.0, "> 1.00"),
            _ => (ratio(m.rate) >= 0.95, "≥ 0.95"),
        };
        if !rate_ok {
            missed.push(format!(
                "rate {:.2}× raw lapin (target {rate_target}): {} vs {} /s",
                ratio(m.rate),
                thousands(m.rate.1),
                thousands(m.rate.0)
            ));
        }
        if ratio(m.cpu) > 1.10 {
            missed.push(format!(
                "client CPU {:.2}× (target ≤ 1.10): {:.1} vs {:.1} µs per message",
                ratio(m.cpu),
                m.cpu.1,
                m.cpu.0
            ));
        }
        if let Some(p50) = m.p50
            && ratio(p50) > 1.10
        {
            missed.push(format!(
                "p50 {:.2}× (target ≤ 1.10): {:.0} vs {:.0} µs",
                ratio(p50),
                p50.1,
                p50.0
            ));
        }
        if missed.is_empty() {
            continue;
        }
        let mut line = format!(
            "- **{}**, rabbitkit `{}`: {}.",
            c.scenario,
            c.rk_label,
            missed.join("; ")
        );
        for r in bench
            .comparisons
            .iter()
            .filter(|r| r.reference && r.scenario == c.scenario)
        {
            let rm = medians(r);
            let _ = write!(
                line,
                " Reference `{}` vs `{}`: rate {:.2}×, CPU {:.1} vs {:.1} µs ({:+.1} µs)",
                r.rk_label,
                r.raw_label,
                ratio(rm.rate),
                rm.cpu.1,
                rm.cpu.0,
                rm.cpu.1 - rm.cpu.0
            );
            if let (Some(p50), Some(p99)) = (rm.p50, rm.p99) {
                let _ = write!(
                    line,
                    ", p50 {:.0} vs {:.0} µs ({:+.0} µs), p99 {:.0} vs {:.0} µs",
                    p50.1,
                    p50.0,
                    p50.1 - p50.0,
                    p99.1,
                    p99.0
                );
            }
            line.push('.');
        }
        lines.push(line);
    }
    if let Some(Ok(r)) = &bench.failover {
        let stuck: Vec<&failover::Round> = r
            .rounds
            .iter()
            .filter(|x| x.error.as_deref().is_some_and(|e| e.contains("nack")))
            .collect();
        let slow = r
            .rounds
            .iter()
            .filter(|x| x.to_first_confirm.is_none_or(|d| d.as_secs_f64() >= 1.0))
            .count();
        if slow > 0 {
            let mut line = format!(
                "- **failover**: {slow} of {} rounds took 1 s or more from the kill to the first confirm through the new connection, \
                 although the client reconnected within {} (kill → Recovered).",
                r.rounds.len(),
                r.rounds
                    .iter()
                    .filter_map(|x| x.to_recovered)
                    .max()
                    .map(|d| format!("{:.0} ms", d.as_secs_f64() * 1e3))
                    .unwrap_or_else(|| "?".into())
            );
            if !stuck.is_empty() {
                let _ = write!(
                    line,
                    " In {} of them the broker **nacked** every publish on the new connection ({} nacks), until the round ended. \
                     RabbitMQ 3.10 does this on a channel that first publishes to a quorum queue before the queue has elected a new \
                     leader (the killed node held it): that channel keeps getting nacks for many seconds, while a channel opened a \
                     second later is accepted (checked separately with pika). rabbitkit reports each nack as `PublishError::Nacked` \
                     and keeps the channel.",
                    stuck.len(),
                    stuck.iter().map(|x| x.failed).sum::<u64>()
                );
            }
            lines.push(line);
        }
        if r.lost > 0 {
            lines.push(format!(
                "- **failover**: {} confirmed messages were lost.",
                r.lost
            ));
        }
    }
    if !lines.is_empty() {
        let _ = writeln!(out, "\n## Targets missed\n");
        for l in lines {
            let _ = writeln!(out, "{l}");
        }
    }
    out
}

/// The report, as Markdown.
pub fn render(bench: &Bench) -> String {
    let a = &bench.args;
    let mut out = String::new();
    let args = a.given.join(" ");
    let sep = if args.is_empty() { "" } else { " " };
    let _ = writeln!(out, "# rabbitkit vs raw lapin and amqprs: benchmarks\n");
    let _ = writeln!(
        out,
        "Produced by `cargo xtask bench{sep}{args}` (that is, `cargo run --release -p rabbitkit-bench --{sep}{args}`) on {}, at commit {}.\n",
        utc(bench.started),
        commit()
    );
    let _ = writeln!(out, "Machine:");
    for line in &bench.machine {
        let _ = writeln!(out, "- {line}");
    }
    let _ = writeln!(out, "- load average at start: {}", bench.load);
    if bench.busy.is_empty() {
        let _ = writeln!(
            out,
            "- no build or test process seen running during the run"
        );
    } else {
        let _ = writeln!(
            out,
            "- **other work was running during the run (numbers disturbed)**: {}",
            bench.busy.join(", ")
        );
    }
    let _ = writeln!(
        out,
        "\nEach number is the median of {} round(s); the variants of a scenario (raw lapin, amqprs, rabbitkit) alternate which goes first. \
         rk ÷ lapin = rabbitkit / raw lapin, rk ÷ amqprs = rabbitkit / amqprs (for rates higher is better, for CPU and latency lower is better); \
         the targets are those of issue 6, against raw lapin. \
         Client CPU = this process's user + system time over the measured run (every thread, lapin's IO threads included) per message; \
         the broker runs on the same cores.\n",
        a.rounds
    );

    let _ = writeln!(
        out,
        "| scenario | metric | raw lapin 4 | amqprs 2 | rabbitkit | rk ÷ lapin | rk ÷ amqprs | target | met |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---|---|");
    for c in &bench.comparisons {
        let scenario = if c.reference {
            format!(
                "↳ reference (same scenario): `{}` vs raw lapin `{}`",
                c.rk_label, c.raw_label
            )
        } else {
            let amq = match &c.amqprs {
                Amqprs::Measured { label, .. } => format!(
                    "<br>amqprs: `{}`",
                    label.strip_prefix("amqprs ").unwrap_or(label)
                ),
                Amqprs::Absent(_) => String::new(),
            };
            format!(
                "**{}**<br>rabbitkit: `{}`<br>raw lapin: `{}`{amq}",
                c.scenario, c.rk_label, c.raw_label
            )
        };
        let rate = |s: &[Sample]| med(s, |x| Some(x.rate()));
        let cpu = |s: &[Sample]| med(s, |x| Some(x.cpu_us()));
        let amq = c.amqprs.samples();
        let absent = match &c.amqprs {
            Amqprs::Absent(why) if !c.reference => Some(why.as_str()),
            Amqprs::Absent(_) => Some("–"),
            Amqprs::Measured { .. } => None,
        };
        match c.kind {
            Kind::Throughput { must_beat } => push_rows(
                &mut out,
                &scenario,
                c.reference,
                absent,
                &[
                    Row {
                        metric: "msgs/s",
                        raw: rate(&c.raw),
                        amq: rate(amq),
                        rk: rate(&c.rk),
                        fmt: thousands,
                        target: if must_beat { "> 1.00" } else { "≥ 0.95" },
                    },
                    Row {
                        metric: "client CPU / msg",
                        raw: cpu(&c.raw),
                        amq: cpu(amq),
                        rk: cpu(&c.rk),
                        fmt: us,
                        target: "≤ 1.10",
                    },
                ],
            ),
            Kind::Rpc => push_rows(
                &mut out,
                &scenario,
                c.reference,
                absent,
                &[
                    Row {
                        metric: "calls/s",
                        raw: rate(&c.raw),
                        amq: rate(amq),
                        rk: rate(&c.rk),
                        fmt: thousands,
                        target: "≥ 0.95",
                    },
                    Row {
                        metric: "p50 latency",
                        raw: med(&c.raw, |x| x.percentile_us(50.0)),
                        amq: med(amq, |x| x.percentile_us(50.0)),
                        rk: med(&c.rk, |x| x.percentile_us(50.0)),
                        fmt: |v| format!("{v:.0} µs"),
                        target: "≤ 1.10",
                    },
                    Row {
                        metric: "p99 latency",
                        raw: med(&c.raw, |x| x.percentile_us(99.0)),
                        amq: med(amq, |x| x.percentile_us(99.0)),
                        rk: med(&c.rk, |x| x.percentile_us(99.0)),
                        fmt: |v| format!("{v:.0} µs"),
                        target: "",
                    },
                    Row {
                        metric: "client CPU / call (client + server)",
                        raw: cpu(&c.raw),
                        amq: cpu(amq),
                        rk: cpu(&c.rk),
                        fmt: us,
                        target: "≤ 1.10",
                    },
                ],
            ),
        }
    }
    let f = &a.failover;
    match &bench.failover {
        Some(Ok(r)) => {
            // A round without a confirm counts as the give-up time (a lower bound).
            let times: Vec<f64> = r
                .rounds
                .iter()
                .map(|x| x.to_first_confirm.unwrap_or(f.give_up).as_secs_f64())
                .collect();
            let missing = r
                .rounds
                .iter()
                .filter(|x| x.to_first_confirm.is_none())
                .count();
            let med_s = (!times.is_empty()).then(|| median(times.clone()));
            let max_s = times.iter().copied().reduce(f64::max);
            let scenario = format!(
                "failover: SIGKILL the connected node during confirmed publishing to a quorum queue ({} kills, {} msgs/s, {} in flight)²",
                r.rounds.len(),
                f.rate,
                f.window
            );
            let fmt_s =
                |v: Option<f64>| v.map(|v| format!("{v:.2} s")).unwrap_or_else(|| "–".into());
            let ok_med = match med_s {
                Some(m) if m < 1.0 => "yes",
                _ => "**no**",
            };
            let med_text = match med_s {
                Some(m) if m >= f.give_up.as_secs_f64() => format!("≥ {} s", f.give_up.as_secs()),
                other => fmt_s(other),
            };
            let _ = writeln!(
                out,
                "| {scenario} | kill → first confirm, median | n/a | n/a: amqprs does not reconnect | {med_text} | – | – | < 1 s | {ok_med} |"
            );
            let _ = writeln!(
                out,
                "| | kill → first confirm, max | n/a | n/a | {} | – | – | – | |",
                if missing > 0 {
                    format!(
                        "> {} s ({missing} round(s) with no confirm within {} s)",
                        f.give_up.as_secs(),
                        f.give_up.as_secs()
                    )
                } else {
                    fmt_s(max_s)
                }
            );
            let _ = writeln!(
                out,
                "| | confirmed but lost / duplicates | n/a | n/a | {} / {} | – | – | 0 lost | {} |",
                r.lost,
                r.duplicates,
                if r.lost == 0 { "yes" } else { "**no**" }
            );
        }
        Some(Err(e)) => {
            let _ = writeln!(
                out,
                "| failover² | – | n/a | n/a | failed: {e} | – | – | < 1 s, 0 lost | **no** |"
            );
        }
        None => {
            let _ = writeln!(
                out,
                "| failover² | – | n/a | n/a | not run{} | – | – | < 1 s, 0 lost | |",
                if a.quick { " (--quick)" } else { "" }
            );
        }
    }

    out.push_str(&misses(bench));

    let _ = writeln!(out, "\nNotes");
    let _ = writeln!(
        out,
        "1. No confirms: rabbitkit's `Publisher::publish_unconfirmed` (a channel of its own without confirm mode, no \
         message id, nothing re-sent; awaited in turn) against raw lapin's `basic_publish(..).await` loop and amqprs's, \
         also without confirms. All are timed from the first publish until a passive declare \
         on a separate connection (polled every 5 ms, the same observer for all) sees all messages in the queue — \
         the rate at which messages land, not the rate at which publish calls return."
    );
    let _ = writeln!(
        out,
        "2. Failover is rabbitkit only (raw lapin and amqprs do not reconnect). One client is given the three nodes; a quorum \
         queue; steady publishing with confirms ({} msgs/s, at most {} in flight, {} B bodies numbered in sequence). Each round SIGKILLs the node the client is \
         connected to ({} s into the round), measures from just before the signal to the first publish confirmed through the new \
         connection, publishes {} s more (or gives up {} s after the kill when nothing is confirmed through the new connection), \
         restarts the node (`Cluster::start`) and waits {} s. The quorum queue is declared through node 1, so its leader starts \
         there. At the end the queue is read back: a confirmed number missing is a lost message, one read twice a duplicate.",
        f.rate,
        f.window,
        a.body,
        f.before.as_secs_f64(),
        f.after.as_secs_f64(),
        f.give_up.as_secs(),
        f.settle.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "3. Same conditions in both columns: node 1, the same queue type, {} B bodies, the same in-flight window ({} for publishes, \
         which is also rabbitkit's `publish_window`), the same prefetch. The idiomatic raw lapin publisher awaits each `basic_publish` \
         in turn (each call waits for lapin's IO thread to take the frames) and keeps the confirm futures in a `FuturesUnordered`; \
         rabbitkit's publish futures (each publishes, then awaits its confirm) run concurrently in a `FuturesUnordered` of the same size. \
         The ↳ reference rows drive raw lapin the same concurrent way, to show the cost of rabbitkit's own code. rabbitkit adds a \
         `message_id` (UUID v4, 32 hex chars) to every message; typed `Queue::send` also sets `content_type` and `timestamp` and encodes \
         through serde_json. Raw lapin and amqprs send default properties.",
        a.body, a.window
    );
    let _ = writeln!(
        out,
        "4. Consume: the queue is durable classic (`WorkQueue::builder(..).classic()`) and pre-filled, unmeasured, by the same raw-lapin filler with \
         persistent `text/plain` bodies. Timed from `basic.qos`/`basic.consume` until the last `ack` returns. Prefetch {p} is \
         `rabbitkit::DEFAULT_PREFETCH` (the work-queue default), used by every column. rabbitkit-core coalesces acks: `ack()` returns \
         once recorded, and one `basic.ack(multiple)` goes out per run of consecutive tags, at {half} acks or 1 ms after the last; so \
         its last acks reach the broker up to 1 ms after the timer stops. The ↳ reference row is raw lapin acking with \
         `multiple: true` every {half} deliveries. After each run (connection closed) the queue must be empty; acknowledged messages \
         found back in it are listed under Anomalies.",
        p = rabbitkit::DEFAULT_PREFETCH,
        half = (rabbitkit::DEFAULT_PREFETCH / 2).max(1)
    );
    let _ = writeln!(
        out,
        "5. RPC: server and client run in this process on connections of their own, so the CPU per call covers both. Raw server: \
         prefetch 32, one request at a time, reply published without confirm, then ack. `RpcServer` defaults: prefetch 32, \
         concurrency 16, reply published with `Client::publish` (confirmed; not sent again after a reconnect), request acked after the confirm. Raw client: direct reply-to, \
         request published without confirm (one at a time: it reads the reply consumer itself; in flight: a task routes replies to callers \
         by correlation id). `RpcClient` (direct reply-to by default) publishes each request mandatory, with a confirm, a UUID \
         correlation id and an expiration, and waits for its confirm and its reply together (the reply routed by its reply task). The ↳ reference rows \
         swap one side: rabbitkit's client against the raw server, and the raw client against rabbitkit's server, to show which side \
         costs what. {} warm-up calls before each measured run.",
        a.warmup
    );
    let _ = writeln!(
        out,
        "6. CPU times come from `/proc/*/stat` in clock ticks ({} per second): ±{:.0} ms per run.",
        ticks_per_sec(),
        1000.0 / ticks_per_sec() as f64
    );
    let _ = writeln!(
        out,
        "7. amqprs is driven as its documentation shows, and well: one connection and channel per role. Confirmed publishing: \
         `confirm_select` and a `ChannelCallback` of its own whose `publish_ack` / `publish_nack` give back one permit per confirmed \
         delivery tag (`multiple` included) to a semaphore of {w} permits that the publishing loop takes one at a time before each \
         `basic_publish` (amqprs takes the body as a `Vec<u8>`, so each publish copies the {b} B body, and writes frames from a task \
         of its own: `basic_publish` returns once the frame is queued to it). Consume: `basic_qos`, `basic_consume_rx`, `basic_ack` \
         of each delivery. RPC: the same design as the raw lapin client and server (direct reply-to, request without confirm; \
         server prefetch 32, one request at a time, reply without confirm, then ack). The work queue: spawned tasks, a semaphore, \
         `basic_ack` from each task. The amqprs column is the same for every row of a scenario, ↳ reference rows included; \
         a scenario amqprs cannot express says so in its column.",
        w = a.window,
        b = a.body
    );

    match &bench.delay {
        Some(Ok(r)) => out.push_str(&crate::delay::render(r)),
        Some(Err(e)) => {
            let _ = writeln!(out, "\n## Delayed publish (rabbitkit only)\n\nFailed: {e}");
        }
        None => {}
    }

    for beyond in &bench.beyond {
        match beyond {
            Ok(r) => out.push_str(&crate::beyond::render(r)),
            Err(e) => {
                let _ = writeln!(out, "\n## Beyond one queue (rabbitkit only)\n\nFailed: {e}");
            }
        }
    }

    let anomalies = ANOMALIES.lock().unwrap().clone();
    if !anomalies.is_empty() {
        let _ = writeln!(out, "\n## Anomalies seen during the run\n");
        for a in anomalies {
            let _ = writeln!(out, "- {a}");
        }
    }

    if let Some(Ok(r)) = &bench.failover {
        let _ = writeln!(out, "\n## Failover rounds\n");
        let _ = writeln!(
            out,
            "Steady publishing rate before the kills: {} msgs/s (median). Confirmed {}, publishes failed {}, read back {}, \
             confirmed but lost **{}**, duplicates {}.\n",
            thousands(r.steady_rate),
            r.confirmed,
            r.failed,
            r.received,
            r.lost,
            r.duplicates
        );
        let _ = writeln!(
            out,
            "| round | killed node | new node | kill → Disconnected | kill → Recovered | kill → first confirm | re-published | publishes failed |"
        );
        let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|---|");
        for (i, x) in r.rounds.iter().enumerate() {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                i + 1,
                x.node,
                x.new_node
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "–".into()),
                secs(x.to_disconnected),
                secs(x.to_recovered),
                secs(x.to_first_confirm),
                x.republished,
                match &x.error {
                    Some(e) => format!("{} ({e})", x.failed),
                    None => x.failed.to_string(),
                }
            );
        }
    }

    let _ = writeln!(out, "\n## Details, per round\n");
    let _ = writeln!(
        out,
        "| scenario | variant | round | count | time | rate /s | client CPU / msg | broker CPU / msg | p50 | p99 |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    // Every variant once, per scenario, in run order.
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for c in &bench.comparisons {
        let amq = match &c.amqprs {
            Amqprs::Measured { label, samples } => Some((label, samples)),
            Amqprs::Absent(_) => None,
        };
        let columns = [(&c.raw_label, &c.raw), (&c.rk_label, &c.rk)];
        for (label, samples) in columns.into_iter().chain(amq) {
            if seen.contains(&(c.scenario.as_str(), label.as_str())) {
                continue;
            }
            seen.push((c.scenario.as_str(), label.as_str()));
            for (i, s) in samples.iter().enumerate() {
                let p = |q| {
                    s.percentile_us(q)
                        .map(|v| format!("{v:.0} µs"))
                        .unwrap_or_else(|| "–".into())
                };
                let _ = writeln!(
                    out,
                    "| {} | {label} | {} | {} | {:.2} s | {} | {} | {} | {} | {} |",
                    c.scenario,
                    i + 1,
                    s.msgs,
                    s.elapsed.as_secs_f64(),
                    thousands(s.rate()),
                    us(s.cpu_us()),
                    us(s.broker_us()),
                    p(50.0),
                    p(99.0)
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{BEGIN, END, merge};

    #[test]
    fn write_keeps_what_it_did_not_generate() {
        let first = merge(None, "# T\n\nrun 1\n");
        assert_eq!(first, format!("{BEGIN}\n# T\n\nrun 1\n{END}\n"));
        let edited = format!("intro\n{first}\n## Soak\nkept\n");
        let second = merge(Some(&edited), "# T\n\nrun 2\n");
        assert_eq!(
            second,
            format!("intro\n{BEGIN}\n# T\n\nrun 2\n{END}\n\n## Soak\nkept\n")
        );
        let by_hand = merge(Some("# T\n\nold notes\n"), "# T\n\nrun 3\n");
        assert_eq!(
            by_hand,
            format!("{BEGIN}\n# T\n\nrun 3\n{END}\n\nold notes\n")
        );
    }
}
