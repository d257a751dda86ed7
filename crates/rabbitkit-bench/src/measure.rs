//! Measuring: wall time, this process's CPU time (every thread, lapin's IO
//! threads included, read from `/proc/self/stat`), the broker nodes' CPU time
//! (`/proc/<beam pid>/stat`), and latency percentiles.

use std::future::Future;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;

/// The error type of the benchmark: anything, with its message.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// A result of the benchmark.
pub type Result<T> = std::result::Result<T, BoxError>;

/// Clock ticks per second of `/proc/*/stat` times (`getconf CLK_TCK`; 100 on Linux).
pub fn ticks_per_sec() -> u64 {
    static TCK: OnceLock<u64> = OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|&t: &u64| t > 0)
            .unwrap_or(100)
    })
}

/// utime + stime of the process whose `stat` file is `path`.
fn cpu_of(path: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name may hold spaces: fields are counted after its `)`.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let mut fields = rest.split_whitespace();
    // Field 3 (state) comes first; utime is field 14, stime field 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_nanos(
        (utime + stime).saturating_mul(1_000_000_000) / ticks_per_sec(),
    ))
}

/// CPU time used so far by this process, all threads (dead ones included).
pub fn process_cpu() -> Duration {
    cpu_of("/proc/self/stat").unwrap_or_default()
}

/// CPU time used so far by the given processes (the broker nodes).
pub fn pids_cpu(pids: &[u32]) -> Duration {
    pids.iter()
        .filter_map(|pid| cpu_of(&format!("/proc/{pid}/stat")))
        .sum()
}

/// The process ids of the running broker nodes of the local cluster.
pub fn broker_pids() -> Vec<u32> {
    let cluster = rabbitkit_test::Cluster::local();
    rabbitkit_test::Cluster::nodes()
        .filter_map(|n| cluster.pid(n))
        .collect()
}

/// One measured run of one variant of one scenario.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Messages (or calls) done.
    pub msgs: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// This process's CPU time over the run.
    pub cpu: Duration,
    /// The broker nodes' CPU time over the run.
    pub broker_cpu: Duration,
    /// Per-call latencies (RPC), sorted.
    pub latencies: Vec<Duration>,
}

impl Sample {
    /// Messages per second.
    pub fn rate(&self) -> f64 {
        self.msgs as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Client CPU per message, in microseconds.
    pub fn cpu_us(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.msgs.max(1) as f64
    }

    /// Broker CPU per message, in microseconds.
    pub fn broker_us(&self) -> f64 {
        self.broker_cpu.as_secs_f64() * 1e6 / self.msgs.max(1) as f64
    }

    /// The `p`-th percentile latency (nearest rank), in microseconds.
    pub fn percentile_us(&self, p: f64) -> Option<f64> {
        if self.latencies.is_empty() {
            return None;
        }
        let n = self.latencies.len();
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        let idx = rank.clamp(1, n) - 1;
        Some(self.latencies[idx].as_secs_f64() * 1e6)
    }
}

/// Started before a measured run, finished after it.
pub struct Meter {
    start: Instant,
    cpu: Duration,
    broker: Duration,
    pids: Vec<u32>,
}

impl Meter {
    /// Starts measuring (the broker processes are `pids`).
    pub fn start(pids: &[u32]) -> Self {
        let broker = pids_cpu(pids);
        let cpu = process_cpu();
        Self {
            start: Instant::now(),
            cpu,
            broker,
            pids: pids.to_vec(),
        }
    }

    /// Stops: `msgs` messages were done.
    pub fn finish(self, msgs: u64) -> Sample {
        self.finish_with(msgs, Vec::new())
    }

    /// Stops: one call per latency was done.
    pub fn finish_calls(self, latencies: Vec<Duration>) -> Sample {
        self.finish_with(latencies.len() as u64, latencies)
    }

    fn finish_with(self, msgs: u64, mut latencies: Vec<Duration>) -> Sample {
        let elapsed = self.start.elapsed();
        let cpu = process_cpu().saturating_sub(self.cpu);
        let broker_cpu = pids_cpu(&self.pids).saturating_sub(self.broker);
        latencies.sort_unstable();
        Sample {
            msgs,
            elapsed,
            cpu,
            broker_cpu,
            latencies,
        }
    }
}

/// Runs `total` calls of `call`, at most `in_flight` at once, and returns
/// each call's latency (from its first poll to its completion).
pub async fn drive<F, Fut>(total: usize, in_flight: usize, mut call: F) -> Result<Vec<Duration>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let mut pending = FuturesUnordered::new();
    let mut latencies = Vec::with_capacity(total);
    for _ in 0..total {
        let fut = call();
        pending.push(async move {
            let t = Instant::now();
            fut.await.map(|()| t.elapsed())
        });
        if pending.len() >= in_flight.max(1)
            && let Some(done) = pending.next().await
        {
            latencies.push(done?);
        }
    }
    while let Some(done) = pending.next().await {
        latencies.push(done?);
    }
    Ok(latencies)
}

/// The median of `values` (0 when empty).
pub fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}
