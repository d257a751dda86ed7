//! The report: one Markdown table of the raw lapin, amqprs and rabbitkit
//! columns, their ratios and issue 14's targets (each judged against its
//! baseline, met or not, with the measured ratio), the targets missed, the
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
    /// Messages per second and client CPU per message.
    Throughput,
    /// Calls per second, p50 / p99 latency, CPU per call.
    Rpc {
        /// One call at a time: its p50 has a target against amqprs.
        one_at_a_time: bool,
    },
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
    /// The raw lapin variant issue 14's targets compare with (the same for
    /// all rows of a scenario; `None` when it did not run).
    pub lapin: Option<Baseline>,
}

/// The raw lapin variant of a scenario that issue 14's targets use: raw
/// lapin driven concurrently (the raw side of the ↳ reference rows), or,
/// in a scenario without such a variant, its only raw lapin variant.
#[derive(Debug, Clone)]
pub struct Baseline {
    /// Its short name in the target column (`lapin conc.`, or what the
    /// only raw variant is).
    pub name: String,
    /// How raw lapin is driven (the variant's label).
    pub label: String,
    /// Its samples (one per round).
    pub samples: Vec<Sample>,
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
    /// The retry scenario's outcome, if it ran.
    pub retry: Option<Result<crate::retry::Report, String>>,
    /// The partitions and streams scenarios' outcomes, those that ran.
    pub beyond: Vec<Result<crate::beyond::Report, String>>,
    /// The `stream-protocol` scenario, if it ran.
    pub stream_protocol: Option<Result<crate::stream_protocol::Report, String>>,
    /// The stream-failover scenario's outcome, if it ran.
    pub stream_failover: Option<Result<crate::stream_failover::Report, String>>,
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
            retry: None,
            beyond: Vec::new(),
            stream_protocol: None,
            stream_failover: None,
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

/// A row of a comparison: what it measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Metric {
    /// Messages or calls per second.
    Rate,
    /// Client CPU per message or call.
    Cpu,
    /// Median latency of a call.
    P50,
    /// 99th percentile latency of a call.
    P99,
}

impl Metric {
    /// The rows of a comparison of `kind`, in table order.
    fn rows(kind: Kind) -> &'static [Metric] {
        match kind {
            Kind::Throughput => &[Metric::Rate, Metric::Cpu],
            Kind::Rpc { .. } => &[Metric::Rate, Metric::P50, Metric::P99, Metric::Cpu],
        }
    }

    fn name(self, kind: Kind) -> &'static str {
        match (self, kind) {
            (Metric::Rate, Kind::Throughput) => "msgs/s",
            (Metric::Rate, Kind::Rpc { .. }) => "calls/s",
            (Metric::Cpu, Kind::Throughput) => "client CPU / msg",
            (Metric::Cpu, Kind::Rpc { .. }) => "client CPU / call (client + server)",
            (Metric::P50, _) => "p50 latency",
            (Metric::P99, _) => "p99 latency",
        }
    }

    /// One round's value.
    fn value(self, s: &Sample) -> Option<f64> {
        match self {
            Metric::Rate => Some(s.rate()),
            Metric::Cpu => Some(s.cpu_us()),
            Metric::P50 => s.percentile_us(50.0),
            Metric::P99 => s.percentile_us(99.0),
        }
    }

    /// The median over rounds.
    fn median(self, samples: &[Sample]) -> Option<f64> {
        med(samples, |s| self.value(s))
    }

    fn show(self, v: f64) -> String {
        match self {
            Metric::Rate => format!("{} /s", thousands(v)),
            Metric::Cpu => us(v),
            Metric::P50 | Metric::P99 => format!("{v:.0} µs"),
        }
    }

    /// Rates: higher is better; CPU and latency: lower is better.
    fn higher_is_better(self) -> bool {
        self == Metric::Rate
    }
}

/// The column a target compares rabbitkit with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Against {
    /// The scenario's amqprs variant.
    Amqprs,
    /// The scenario's raw lapin [`Baseline`].
    Lapin,
}

/// What a target asks of rabbitkit ÷ its baseline.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Goal {
    /// At least this ratio (rates).
    AtLeast(f64),
    /// At most this ratio (CPU, latency).
    AtMost(f64),
    /// No target: the ratio is reported.
    Report,
}

/// One of issue 14's targets for a row.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Target {
    against: Against,
    goal: Goal,
}

/// Issue 14's targets for the `metric` row of a comparison of `kind`:
/// every rate ≥ 1.0× amqprs and ≥ 1.0× raw lapin (driven concurrently);
/// client CPU ≤ 1.1× raw lapin, reported against amqprs; one-at-a-time
/// RPC p50 ≤ 1.0× amqprs. The direction follows the metric.
fn targets(kind: Kind, metric: Metric) -> Vec<Target> {
    let limit = |l: f64| {
        if metric.higher_is_better() {
            Goal::AtLeast(l)
        } else {
            Goal::AtMost(l)
        }
    };
    let t = |against, goal| Target { against, goal };
    match (kind, metric) {
        (_, Metric::Rate) => vec![
            t(Against::Amqprs, limit(1.0)),
            t(Against::Lapin, limit(1.0)),
        ],
        (_, Metric::Cpu) => vec![
            t(Against::Lapin, limit(1.1)),
            t(Against::Amqprs, Goal::Report),
        ],
        (
            Kind::Rpc {
                one_at_a_time: true,
            },
            Metric::P50,
        ) => vec![t(Against::Amqprs, limit(1.0))],
        _ => Vec::new(),
    }
}

/// A target judged on the medians.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Verdict {
    /// Met, with rabbitkit ÷ baseline.
    Met(f64),
    /// Not met, with rabbitkit ÷ baseline.
    Missed(f64),
    /// No target; rabbitkit ÷ baseline.
    Reported(f64),
    /// The baseline (or rabbitkit) was not measured: not judged.
    NotAvailable,
}

/// Judges rabbitkit's median `rk` against the baseline's `base`.
fn judge(goal: Goal, rk: Option<f64>, base: Option<f64>) -> Verdict {
    let (Some(rk), Some(base)) = (rk, base) else {
        return Verdict::NotAvailable;
    };
    if !(base > 0.0 && base.is_finite() && rk.is_finite()) {
        return Verdict::NotAvailable;
    }
    let r = rk / base;
    match goal {
        Goal::AtLeast(limit) if r >= limit => Verdict::Met(r),
        Goal::AtMost(limit) if r <= limit => Verdict::Met(r),
        Goal::AtLeast(_) | Goal::AtMost(_) => Verdict::Missed(r),
        Goal::Report => Verdict::Reported(r),
    }
}

/// `r` with two decimals, or three when two would round it onto `goal`'s
/// limit (so that a missed 0.996× does not read as 1.00×).
fn ratio_text(r: f64, goal: Goal) -> String {
    match goal {
        Goal::AtLeast(l) | Goal::AtMost(l) if format!("{r:.2}") == format!("{l:.2}") => {
            format!("{r:.3}×")
        }
        _ => format!("{r:.2}×"),
    }
}

impl Goal {
    /// `≥ 1.00×`, `≤ 1.10×`, or `reported`.
    fn text(self) -> String {
        match self {
            Goal::AtLeast(l) => format!("≥ {l:.2}×"),
            Goal::AtMost(l) => format!("≤ {l:.2}×"),
            Goal::Report => "reported".into(),
        }
    }
}

impl Target {
    /// The target column's text, e.g. `≥ 1.00× amqprs`.
    fn text(&self, lapin: &str) -> String {
        let name = self.against.name(lapin);
        match self.goal {
            Goal::Report => format!("{name}: reported"),
            goal => format!("{} {name}", goal.text()),
        }
    }
}

impl Against {
    fn name(self, lapin: &str) -> &str {
        match self {
            Against::Amqprs => "amqprs",
            Against::Lapin => lapin,
        }
    }
}

impl Verdict {
    /// The met column's text, e.g. `**no** (0.89× amqprs)`; never `yes`
    /// without both figures.
    fn text(&self, target: &Target, lapin: &str) -> String {
        let name = target.against.name(lapin);
        match *self {
            Verdict::Met(r) => format!("yes ({} {name})", ratio_text(r, target.goal)),
            Verdict::Missed(r) => format!("**no** ({} {name})", ratio_text(r, target.goal)),
            Verdict::Reported(r) => format!("{} {name}", ratio_text(r, target.goal)),
            Verdict::NotAvailable => format!("n/a (no {name} figure)"),
        }
    }
}

/// One row of a comparison: the medians of its columns and its targets.
struct Line {
    metric: Metric,
    raw: Option<f64>,
    amq: Option<f64>,
    rk: Option<f64>,
    /// The raw lapin baseline's median.
    base: Option<f64>,
    /// Issue 14's targets, judged (none for a reference comparison).
    judged: Vec<(Target, Verdict)>,
}

impl Line {
    /// The baseline figure `target` compares with.
    fn baseline(&self, target: &Target) -> Option<f64> {
        match target.against {
            Against::Amqprs => self.amq,
            Against::Lapin => self.base,
        }
    }
}

/// The short name of `c`'s raw lapin baseline.
fn lapin_name(c: &Comparison) -> &str {
    c.lapin.as_ref().map_or("lapin", |b| b.name.as_str())
}

/// The rows of `c`, each judged against issue 14's targets.
fn lines(c: &Comparison) -> Vec<Line> {
    let base: &[Sample] = c.lapin.as_ref().map_or(&[], |b| &b.samples);
    Metric::rows(c.kind)
        .iter()
        .map(|&metric| {
            let mut line = Line {
                metric,
                raw: metric.median(&c.raw),
                amq: metric.median(c.amqprs.samples()),
                rk: metric.median(&c.rk),
                base: metric.median(base),
                judged: Vec::new(),
            };
            if !c.reference {
                line.judged = targets(c.kind, metric)
                    .into_iter()
                    .map(|t| (t, judge(t.goal, line.rk, line.baseline(&t))))
                    .collect();
            }
            line
        })
        .collect()
}

fn us(v: f64) -> String {
    format!("{v:.1} µs")
}

fn push_rows(out: &mut String, scenario: &str, c: &Comparison) {
    let absent = match &c.amqprs {
        Amqprs::Absent(why) if !c.reference => Some(why.as_str()),
        Amqprs::Absent(_) => Some("–"),
        Amqprs::Measured { .. } => None,
    };
    let lapin = lapin_name(c);
    for (i, line) in lines(c).iter().enumerate() {
        let name = if i == 0 { scenario } else { "" };
        let fmt = |v: f64| match line.metric {
            Metric::Rate => thousands(v),
            other => other.show(v),
        };
        let show = |v: Option<f64>| v.map(fmt).unwrap_or_else(|| "–".into());
        let amq = match absent {
            Some(why) if i == 0 => format!("n/a: {why}"),
            Some(_) => "n/a".into(),
            None => show(line.amq),
        };
        let over = |base: Option<f64>| match (base, line.rk) {
            (Some(b), Some(rk)) if b > 0.0 => format!("{:.2}", rk / b),
            _ => "–".into(),
        };
        let (target, met) = if c.reference {
            ("(reference)".to_owned(), String::new())
        } else if line.judged.is_empty() {
            ("–".to_owned(), String::new())
        } else {
            let texts = |f: &dyn Fn(&(Target, Verdict)) -> String| {
                line.judged.iter().map(f).collect::<Vec<_>>().join("; ")
            };
            (
                texts(&|(t, _)| t.text(lapin)),
                texts(&|(t, v)| v.text(t, lapin)),
            )
        };
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {amq} | {} | {} | {} | {target} | {met} |",
            line.metric.name(c.kind),
            show(line.raw),
            show(line.rk),
            over(line.raw),
            over(line.amq),
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

/// Issue 14's targets missed, each with its ratio and figures and what the
/// reference rows of its scenario say; then issue 6's failover target.
fn misses(bench: &Bench) -> String {
    let mut out = String::new();
    let mut lines_out = Vec::new();
    let mut not_judged = 0;
    for c in bench.comparisons.iter().filter(|c| !c.reference) {
        let lapin = lapin_name(c);
        let mut missed = Vec::new();
        for line in lines(c) {
            for (t, v) in &line.judged {
                match v {
                    Verdict::Missed(r) => {
                        let base = match t.against {
                            Against::Amqprs => match &c.amqprs {
                                Amqprs::Measured { label, .. } => format!("`{label}`"),
                                Amqprs::Absent(_) => "amqprs".into(),
                            },
                            Against::Lapin => c.lapin.as_ref().map_or_else(
                                || "raw lapin".into(),
                                |b| format!("raw lapin `{}`", b.label),
                            ),
                        };
                        missed.push(format!(
                            "{} {} {} (target {}): {} vs {} ({base})",
                            line.metric.name(c.kind),
                            ratio_text(*r, t.goal),
                            t.against.name(lapin),
                            t.goal.text(),
                            line.rk.map_or_else(|| "–".into(), |v| line.metric.show(v)),
                            line.baseline(t)
                                .map_or_else(|| "–".into(), |v| line.metric.show(v)),
                        ));
                    }
                    Verdict::NotAvailable if t.goal != Goal::Report => not_judged += 1,
                    _ => {}
                }
            }
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
        lines_out.push(line);
    }
    if not_judged > 0 {
        lines_out.push(format!(
            "- {not_judged} of issue 14's targets could not be judged: their baseline was not measured in this run (`n/a` in the table)."
        ));
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
                "- **failover** (issue 6 target: < 1 s): {slow} of {} rounds took 1 s or more from the kill to the first confirm through the new connection, \
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
            lines_out.push(line);
        }
        if r.lost > 0 {
            lines_out.push(format!(
                "- **failover** (issue 6 target: 0 lost): {} confirmed messages were lost.",
                r.lost
            ));
        }
    }
    if !lines_out.is_empty() {
        let _ = writeln!(out, "\n## Targets missed\n");
        let _ = writeln!(
            out,
            "Issue 14's targets not met in this run, each with rabbitkit's figure vs its baseline's (a failover line is issue 6's target).\n"
        );
        for l in lines_out {
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
         rk ÷ lapin = rabbitkit / the raw lapin variant the row names, rk ÷ amqprs = rabbitkit / amqprs (for rates higher is better, \
         for CPU and latency lower is better). \
         Client CPU = this process's user + system time over the measured run (every thread, lapin's IO threads included) per message; \
         the broker runs on the same cores.\n",
        a.rounds
    );
    let _ = writeln!(
        out,
        "The targets are issue 14's, each judged on the medians of this run against the baseline it names, and marked met or **not met** \
         with the measured ratio (`n/a`: that baseline was not measured in this run; never counted as met):\n\
         - every rate (msgs/s, calls/s): ≥ 1.00× amqprs and ≥ 1.00× raw lapin driven concurrently (`lapin conc.`: the raw side of the \
         scenario's ↳ reference row — concurrent `basic_publish` futures for confirmed publishing, `ack(multiple)` every prefetch/2 for \
         consume — even in a row whose rk ÷ lapin uses the other raw variant);\n\
         - client CPU per message or call: ≤ 1.10× that same raw lapin baseline; against amqprs it is reported, without a target;\n\
         - RPC one call at a time: p50 ≤ 1.00× amqprs; RPC with calls in flight: calls/s ≥ 1.00× amqprs (the rate target above);\n\
         - publishing without confirms: landed rate ≥ 1.00× raw lapin's no-confirm loop (`lapin no-confirm loop`).\n\n\
         A scenario without a concurrently driven raw lapin variant is judged against its only raw lapin variant, named in the target: \
         publishing without confirms (the no-confirm loop), RPC (`lapin raw client`: the raw client and server; with calls in flight its \
         client routes replies from a task of its own) and the work queue (`lapin tasks`: spawned tasks + semaphore). \
         The failover rows keep issue 6's targets (issue 14 sets none for failover).\n"
    );

    let _ = writeln!(
        out,
        "| scenario | metric | raw lapin 4 | amqprs 2 | rabbitkit | rk ÷ lapin | rk ÷ amqprs | issue 14 target | met |"
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
            let base = match &c.lapin {
                Some(b) if b.label != c.raw_label => {
                    format!("<br>{} (targets): `{}`", b.name, b.label)
                }
                _ => String::new(),
            };
            format!(
                "**{}**<br>rabbitkit: `{}`<br>raw lapin: `{}`{base}{amq}",
                c.scenario, c.rk_label, c.raw_label
            )
        };
        push_rows(&mut out, &scenario, c);
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
                "| {scenario} | kill → first confirm, median | n/a | n/a: amqprs does not reconnect | {med_text} | – | – | (issue 6) < 1 s | {ok_med} |"
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
                "| | confirmed but lost / duplicates | n/a | n/a | {} / {} | – | – | (issue 6) 0 lost | {} |",
                r.lost,
                r.duplicates,
                if r.lost == 0 { "yes" } else { "**no**" }
            );
        }
        Some(Err(e)) => {
            let _ = writeln!(
                out,
                "| failover² | – | n/a | n/a | failed: {e} | – | – | (issue 6) < 1 s, 0 lost | **no** |"
            );
        }
        None => {
            let _ = writeln!(
                out,
                "| failover² | – | n/a | n/a | not run{} | – | – | (issue 6) < 1 s, 0 lost | |",
                if a.quick { " (--quick)" } else { "" }
            );
        }
    }

    out.push_str(&misses(bench));

    let _ = writeln!(out, "\nNotes");
    let _ = writeln!(
        out,
        "1. No confirms: rabbitkit's `Publisher::publish_unconfirmed` (a channel of its own without confirm mode, no \
         message id, nothing re-sent; awaited in turn, each resolving once its frames are queued on the connection, with at most `publish_window` \
         not yet written) against raw lapin's `basic_publish(..).await` loop and amqprs's, \
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
         there. At the end the queue is read back: a confirmed number missing is a lost message, one read twice a duplicate.          Before each kill the same client also holds one task unacknowledged from a quorum queue and is the active consumer          of a single-active-consumer quorum queue (holding one message too), while a second client on another node consumes          both: \"in-flight task redone\" and \"partition taken over\" are the times from the kill until each is delivered          again (RabbitMQ 4.3 waits `consumer_disconnected_timeout`, 60 s by default; earlier versions return them when the          node is seen down).",
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
         `message_id` (32 hex digits: a random per-process prefix and a counter) to every confirmed message; typed `Queue::send` also sets \
         `content_type` and `timestamp`, publishes mandatory and encodes through serde_json. Raw lapin and amqprs send default properties.",
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
         by correlation id). `RpcClient` (direct reply-to by default) publishes each request mandatory, with a confirm, a \
         correlation id (the core's counter-based message id) and an expiration, and waits for its confirm and its reply together (the reply routed by its reply task). The ↳ reference rows \
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

    match &bench.retry {
        Some(Ok(r)) => out.push_str(&crate::retry::render(r)),
        Some(Err(e)) => {
            let _ = writeln!(out, "\n## Retries (rabbitkit only)\n\nFailed: {e}");
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

    match &bench.stream_protocol {
        Some(Ok(r)) => {
            let amqp = bench
                .beyond
                .iter()
                .flatten()
                .find(|b| b.scenario == "streams")
                .and_then(crate::beyond::stream_row);
            out.push_str(&crate::stream_protocol::render(r, amqp));
        }
        Some(Err(e)) => {
            let _ = writeln!(out, "\n## Streams over the stream protocol\n\nFailed: {e}");
        }
        None => {}
    }
    match &bench.stream_failover {
        Some(Ok(r)) => out.push_str(&crate::stream_failover::render(r)),
        Some(Err(e)) => {
            let _ = writeln!(out, "\n## Stream failover\n\nFailed: {e}");
        }
        None => {}
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
            "| round | killed node | new node | kill → Disconnected | kill → Recovered | kill → first confirm | kill → in-flight task redone | kill → partition taken over | re-published | publishes failed |"
        );
        let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
        for (i, x) in r.rounds.iter().enumerate() {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                i + 1,
                x.node,
                x.new_node
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "–".into()),
                secs(x.to_disconnected),
                secs(x.to_recovered),
                secs(x.to_first_confirm),
                secs(x.to_task_redone),
                secs(x.to_takeover),
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
    use std::time::{Duration, SystemTime};

    use super::{
        Against, Amqprs, BEGIN, Baseline, Bench, Comparison, END, Goal, Kind, Metric, Target,
        Verdict, judge, lines, merge, misses, push_rows, targets,
    };
    use crate::measure::Sample;

    /// One round of `rate` per second at `cpu` µs each, every call `p50` µs.
    fn sample(rate: f64, cpu: f64, p50: Option<f64>) -> Sample {
        let msgs = 1000;
        Sample {
            msgs,
            elapsed: Duration::from_secs_f64(msgs as f64 / rate),
            cpu: Duration::from_secs_f64(cpu * msgs as f64 / 1e6),
            broker_cpu: Duration::ZERO,
            latencies: p50
                .map(|p| vec![Duration::from_secs_f64(p / 1e6); 10])
                .unwrap_or_default(),
        }
    }

    fn comparison(kind: Kind, reference: bool, amqprs: Option<Sample>) -> Comparison {
        let p50 = |v: f64| matches!(kind, Kind::Rpc { .. }).then_some(v);
        Comparison {
            scenario: "s".into(),
            kind,
            reference,
            raw_label: "in turn".into(),
            rk_label: "rk".into(),
            // The row's own raw lapin variant: slow and costly, so a verdict
            // against it would say yes.
            raw: vec![sample(50_000.0, 10.0, p50(900.0))],
            rk: vec![sample(90_000.0, 5.0, p50(400.0))],
            amqprs: match amqprs {
                Some(s) => Amqprs::Measured {
                    label: "amqprs x".into(),
                    samples: vec![s],
                },
                None => Amqprs::Absent("cannot".into()),
            },
            lapin: Some(Baseline {
                name: "lapin conc.".into(),
                label: "concurrent".into(),
                samples: vec![sample(100_000.0, 4.0, p50(300.0))],
            }),
        }
    }

    fn verdicts(c: &Comparison, metric: Metric) -> Vec<(Against, Verdict)> {
        lines(c)
            .into_iter()
            .find(|l| l.metric == metric)
            .unwrap()
            .judged
            .into_iter()
            .map(|(t, v)| (t.against, v))
            .collect()
    }

    fn close(v: Verdict, want: Verdict) -> bool {
        match (v, want) {
            (Verdict::Met(a), Verdict::Met(b))
            | (Verdict::Missed(a), Verdict::Missed(b))
            | (Verdict::Reported(a), Verdict::Reported(b)) => (a - b).abs() < 1e-6,
            (a, b) => a == b,
        }
    }

    #[test]
    fn rates_must_be_higher_cpu_and_latency_lower() {
        for kind in [
            Kind::Throughput,
            Kind::Rpc {
                one_at_a_time: true,
            },
            Kind::Rpc {
                one_at_a_time: false,
            },
        ] {
            for &metric in Metric::rows(kind) {
                for t in targets(kind, metric) {
                    match t.goal {
                        Goal::AtLeast(_) => assert_eq!(metric, Metric::Rate, "{kind:?}"),
                        Goal::AtMost(_) => assert_ne!(metric, Metric::Rate, "{kind:?}"),
                        Goal::Report => {
                            assert_eq!((metric, t.against), (Metric::Cpu, Against::Amqprs))
                        }
                    }
                }
            }
            let at_least = |against| Target {
                against,
                goal: Goal::AtLeast(1.0),
            };
            assert_eq!(
                targets(kind, Metric::Rate),
                [at_least(Against::Amqprs), at_least(Against::Lapin)]
            );
            assert_eq!(
                targets(kind, Metric::Cpu),
                [
                    Target {
                        against: Against::Lapin,
                        goal: Goal::AtMost(1.1)
                    },
                    Target {
                        against: Against::Amqprs,
                        goal: Goal::Report
                    }
                ]
            );
            assert!(targets(kind, Metric::P99).is_empty());
        }
        // p50 has a target only one call at a time.
        let one = Kind::Rpc {
            one_at_a_time: true,
        };
        assert_eq!(
            targets(one, Metric::P50),
            [Target {
                against: Against::Amqprs,
                goal: Goal::AtMost(1.0)
            }]
        );
        let many = Kind::Rpc {
            one_at_a_time: false,
        };
        assert!(targets(many, Metric::P50).is_empty());
    }

    #[test]
    fn judge_compares_in_the_metric_direction() {
        let at_least = Goal::AtLeast(1.0);
        let at_most = Goal::AtMost(1.1);
        assert!(close(
            judge(at_least, Some(90.0), Some(100.0)),
            Verdict::Missed(0.9)
        ));
        assert!(close(
            judge(at_least, Some(100.0), Some(100.0)),
            Verdict::Met(1.0)
        ));
        assert!(close(
            judge(at_least, Some(120.0), Some(100.0)),
            Verdict::Met(1.2)
        ));
        assert!(close(
            judge(at_most, Some(5.0), Some(4.0)),
            Verdict::Missed(1.25)
        ));
        assert!(close(
            judge(at_most, Some(2.0), Some(4.0)),
            Verdict::Met(0.5)
        ));
        assert!(close(
            judge(Goal::Report, Some(6.0), Some(3.0)),
            Verdict::Reported(2.0)
        ));
        for (rk, base) in [(Some(1.0), None), (None, Some(1.0)), (Some(1.0), Some(0.0))] {
            assert_eq!(judge(at_least, rk, base), Verdict::NotAvailable);
            assert_eq!(judge(at_most, rk, base), Verdict::NotAvailable);
        }
    }

    #[test]
    fn each_target_uses_its_own_baseline() {
        let c = comparison(Kind::Throughput, false, Some(sample(120_000.0, 3.0, None)));
        // Against the concurrent raw lapin baseline, not the row's slower
        // raw variant (90k vs 50k would be met, 5 vs 10 µs too).
        let rate = verdicts(&c, Metric::Rate);
        assert!(close(rate[0].1, Verdict::Missed(0.75)), "{rate:?}");
        assert!(close(rate[1].1, Verdict::Missed(0.9)), "{rate:?}");
        let cpu = verdicts(&c, Metric::Cpu);
        assert!(close(cpu[0].1, Verdict::Missed(1.25)), "{cpu:?}");
        assert!(close(cpu[1].1, Verdict::Reported(5.0 / 3.0)), "{cpu:?}");

        let mut out = String::new();
        push_rows(&mut out, "s", &c);
        let rows: Vec<&str> = out.lines().collect();
        assert_eq!(rows.len(), 2, "{out}");
        assert!(
            rows[0].ends_with(
                "| 1.80 | 0.75 | ≥ 1.00× amqprs; ≥ 1.00× lapin conc. | **no** (0.75× amqprs); **no** (0.90× lapin conc.) |"
            ),
            "{out}"
        );
        assert!(
            rows[1].ends_with(
                "| ≤ 1.10× lapin conc.; amqprs: reported | **no** (1.25× lapin conc.); 1.67× amqprs |"
            ),
            "{out}"
        );

        // Faster than both: met, with the ratio.
        let mut c = c;
        c.rk = vec![sample(130_000.0, 4.0, None)];
        let mut out = String::new();
        push_rows(&mut out, "s", &c);
        assert!(
            out.contains("| yes (1.08× amqprs); yes (1.30× lapin conc.) |"),
            "{out}"
        );
        assert!(
            out.contains("| yes (1.00× lapin conc.); 1.33× amqprs |"),
            "{out}"
        );
    }

    #[test]
    fn without_amqprs_its_targets_are_not_available_never_met() {
        let one = Kind::Rpc {
            one_at_a_time: true,
        };
        let c = comparison(one, false, None);
        for metric in [Metric::Rate, Metric::P50, Metric::Cpu] {
            for (against, v) in verdicts(&c, metric) {
                if against == Against::Amqprs {
                    assert_eq!(v, Verdict::NotAvailable, "{metric:?}");
                }
            }
        }
        let mut out = String::new();
        push_rows(&mut out, "s", &c);
        assert!(out.contains("n/a: cannot"), "{out}");
        for row in out.lines() {
            assert!(
                !row.contains("yes (") || !row.contains("× amqprs)"),
                "{row}"
            );
        }
        assert!(
            out.contains("| n/a (no amqprs figure); **no** (0.90× lapin conc.) |"),
            "{out}"
        );
        // p50 one at a time: the amqprs target only.
        assert!(
            out.contains("| ≤ 1.00× amqprs | n/a (no amqprs figure) |"),
            "{out}"
        );

        // No raw lapin baseline either: nothing is judged.
        let mut c = c;
        c.lapin = None;
        let rate = verdicts(&c, Metric::Rate);
        assert!(rate.iter().all(|(_, v)| *v == Verdict::NotAvailable));
    }

    #[test]
    fn reference_rows_have_no_target() {
        let c = comparison(Kind::Throughput, true, Some(sample(1.0, 1.0, None)));
        assert!(lines(&c).iter().all(|l| l.judged.is_empty()));
        let mut out = String::new();
        push_rows(&mut out, "s", &c);
        assert!(
            out.lines().all(|l| l.ends_with("| (reference) |  |")),
            "{out}"
        );
    }

    #[test]
    fn a_miss_that_rounds_to_the_limit_shows_three_decimals() {
        let mut c = comparison(Kind::Throughput, false, Some(sample(100_000.0, 5.0, None)));
        c.rk = vec![sample(99_600.0, 5.0, None)];
        let mut out = String::new();
        push_rows(&mut out, "s", &c);
        assert!(out.contains("**no** (0.996× amqprs)"), "{out}");
    }

    #[test]
    fn targets_missed_lists_each_with_ratio_and_figures() {
        let c = comparison(Kind::Throughput, false, Some(sample(120_000.0, 3.0, None)));
        let mut without = comparison(Kind::Throughput, false, None);
        without.rk = vec![sample(200_000.0, 1.0, None)];
        let bench = Bench {
            args: crate::Args::parse(Vec::new()),
            started: SystemTime::now(),
            machine: Vec::new(),
            load: String::new(),
            comparisons: vec![c, without],
            failover: None,
            busy: Vec::new(),
            delay: None,
            retry: None,
            beyond: Vec::new(),
            stream_protocol: None,
            stream_failover: None,
        };
        let text = misses(&bench);
        assert!(
            text.contains(
                "msgs/s 0.75× amqprs (target ≥ 1.00×): 90,000 /s vs 120,000 /s (`amqprs x`)"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "msgs/s 0.90× lapin conc. (target ≥ 1.00×): 90,000 /s vs 100,000 /s (raw lapin `concurrent`)"
            ),
            "{text}"
        );
        assert!(
            text.contains("client CPU / msg 1.25× lapin conc. (target ≤ 1.10×): 5.0 µs vs 4.0 µs"),
            "{text}"
        );
        // Reported against amqprs: not a target, not listed.
        assert!(!text.contains("1.67×"), "{text}");
        // The comparison without amqprs met its lapin targets: only its
        // amqprs rate target is counted as not judged.
        assert!(
            text.contains("- 1 of issue 14's targets could not be judged"),
            "{text}"
        );
    }

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
