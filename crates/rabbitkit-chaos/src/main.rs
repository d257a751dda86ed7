//! Chaos run: a seeded random workload on the local 3-node cluster through
//! rabbitkit's public API, while a seeded nemesis kills and restarts nodes,
//! cuts the workers' connections and (RabbitMQ 4.3) sets a consumer-timeout
//! policy for a while; then rabbitkit's promises are checked and printed as
//! a table (exit status 1 if one does not hold).
//!
//! Run it with `cargo xtask chaos [--rabbitmq 4.3|3.10] -- [ARGS]`, e.g.
//!
//! ```text
//! cargo xtask chaos -- --seed 7 --seconds 60 --events 4     # the CI run
//! cargo xtask chaos -- --seconds 400 --events 24 --tasks 12000
//! ```
//!
//! ## The workload
//! One producer client (on the cluster's three nodes) publishes `--tasks`
//! tasks over `--seconds`, each a `Task { id, key, kind, seq }` (`seq`
//! counts the tasks of its key), every publish confirmed; the tasks of one
//! key are published one after another (the next once the previous is
//! confirmed or failed), on 8 lanes. Each task goes to one of:
//! - a [`WorkQueue`] (half the tasks), worked by three worker clients,
//!   each `concurrency(8)`, prefetch 16;
//! - a topic exchange, whose queue a [`Router`] consumes on two worker
//!   clients (concurrency 4, prefetch 8): one route per kind
//!   (`task.<kind>.*`; a quarter of the tasks);
//! - a [`PartitionedQueue`] of 3 partitions with two instances (single
//!   active consumer; prefetch 10; a quarter of the tasks).
//!
//! Kinds (work queue and router): fast (returns at once), slow (sleeps
//! 0.2–1.5 s), flaky (fails its first run, then succeeds), fail (always
//! fails: ends parked in `<queue>.parked`, with the default policy of one
//! retry) and panic (always panics: a failed task, parked after its
//! retry). The partitioned queue's tasks are fast or slow (0.1–0.5 s): a
//! retried task goes to the tail of its partition, so only tasks that
//! succeed keep their key's order.
//!
//! Every worker client connects through one [`FaultProxy`] per node
//! (worker `i` first to node `i`), so the nemesis can cut its connection
//! without touching the cluster.
//!
//! ## The nemesis
//! `--events` events, one at a time, spread over the workload: SIGKILL a
//! node and start it again 3–10 s later (never two nodes down), cut the
//! connections through one node's proxy, or (RabbitMQ 4.3, unless
//! `--no-consumer-timeout`) set the policy `consumer-timeout: 1000` on the
//! run's queues for 5–10 s (slow tasks then run past it: the broker takes
//! them back and rabbitkit subscribes again).
//!
//! ## The invariants
//! 1. every confirmed task ended exactly once as *done* (its handler
//!    returned `Ok` at least once) or *parked* (found in a parking queue),
//!    as its kind says (fast, slow, flaky: done; fail, panic: parked);
//! 2. duplicates (a task done more than once, or parked more than once)
//!    within what at-least-once allows: for each worker client, its
//!    consumers' prefetch × (its connection losses + the consumer
//!    cancellations the timeout windows can cause), plus the publishes
//!    every client sent again after a failover;
//! 3. per key of the partitioned queue, tasks done (first `Ok`) in publish
//!    order (later runs of a task already done are ignored);
//! 4. no stall: never more than 5 s with ready work in a queue (sampled
//!    each second with `Client::queue_info`), a free handler, every node
//!    up and no handler of that queue finishing; the 10 s after each
//!    nemesis event ends (a node started again, a cut, a timeout policy
//!    cleared) are excluded, as the clients are still failing over;
//! 5. handler runs per task bounded (no hot loop): at most 2 × attempts
//!    (2: the first and the retry) + the connection losses of every client
//!    + the consumer cancellations the timeout windows can cause.
//!
//! Tasks whose publish failed (not confirmed: the caller was told) are
//! left out of 1 and 3; they are counted apart.
//!
//! Needs the local cluster; refuses to run against `AMQP_ADDR`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use futures::future::BoxFuture;
use futures::{StreamExt, TryFutureExt};
use rabbitkit::{
    Client, DeclareError, Event, Exchange, HandleOptions, Options, PartitionedQueue, Queue, Router,
    Shutdown, Topic, WorkQueue,
};
use rabbitkit_test::{Cluster, FaultProxy, RabbitMq};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// A seeded workload (work queues, a router, a partitioned queue) while a
/// nemesis kills nodes and cuts connections; checks rabbitkit's promises.
#[derive(Debug, Parser)]
#[command(name = "rabbitkit-chaos", about, long_about = None)]
struct Args {
    /// Seed of the workload and the nemesis (default: random, printed).
    #[arg(long)]
    seed: Option<u64>,
    /// How long the producer publishes, in seconds.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Nemesis events, spread over the workload.
    #[arg(long, default_value_t = 4)]
    events: u32,
    /// Tasks to publish in all.
    #[arg(long, default_value_t = 2000)]
    tasks: u64,
    /// Longest wait, once publishing and the nemesis are over, for every
    /// task to end, in seconds.
    #[arg(long, default_value_t = 180)]
    drain_secs: u64,
    /// Never set a consumer-timeout policy (RabbitMQ 4.3 only anyway).
    #[arg(long)]
    no_consumer_timeout: bool,
    /// Keep the run's queues and exchanges at the end.
    #[arg(long)]
    keep: bool,
}

// ----- the workload ----------------------------------------------------------

/// What a task's handler does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Fast,
    Slow,
    Flaky,
    Fail,
    Panic,
}

impl Kind {
    const ALL: [Kind; 5] = [Kind::Fast, Kind::Slow, Kind::Flaky, Kind::Fail, Kind::Panic];

    fn name(self) -> &'static str {
        match self {
            Kind::Fast => "fast",
            Kind::Slow => "slow",
            Kind::Flaky => "flaky",
            Kind::Fail => "fail",
            Kind::Panic => "panic",
        }
    }

    /// Whether its task ends done (else parked).
    fn ends_done(self) -> bool {
        matches!(self, Kind::Fast | Kind::Slow | Kind::Flaky)
    }
}

/// One task, as published.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Task {
    id: u64,
    key: String,
    kind: Kind,
    /// Its rank among the tasks of its key (0, 1, ...).
    seq: u64,
    /// How long a slow task sleeps, in milliseconds.
    ms: u64,
}

/// Where a task is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Workload {
    Work,
    Routed,
    Partitioned,
}

impl Workload {
    const ALL: [Workload; 3] = [Workload::Work, Workload::Routed, Workload::Partitioned];

    fn index(self) -> usize {
        self as usize
    }

    fn name(self) -> &'static str {
        match self {
            Workload::Work => "work queue",
            Workload::Routed => "router",
            Workload::Partitioned => "partitioned",
        }
    }
}

/// The tasks to publish, in id order, with their workload.
fn plan(rng: &mut StdRng, tasks: u64) -> Vec<(Workload, Task)> {
    let mut seqs: HashMap<String, u64> = HashMap::new();
    (0..tasks)
        .map(|id| {
            let r = rng.random_range(0..100);
            let workload = match r {
                0..50 => Workload::Work,
                50..75 => Workload::Routed,
                _ => Workload::Partitioned,
            };
            let (key, kind, ms) = if workload == Workload::Partitioned {
                let key = format!("p{}", rng.random_range(0..24));
                if rng.random_range(0..100) < 85 {
                    (key, Kind::Fast, 0)
                } else {
                    (key, Kind::Slow, rng.random_range(100..500))
                }
            } else {
                let key = format!("k{}", rng.random_range(0..32));
                let kind = match rng.random_range(0..100) {
                    0..45 => Kind::Fast,
                    45..65 => Kind::Slow,
                    65..80 => Kind::Flaky,
                    80..90 => Kind::Fail,
                    _ => Kind::Panic,
                };
                let ms = if kind == Kind::Slow {
                    rng.random_range(200..1500)
                } else {
                    0
                };
                (key, kind, ms)
            };
            let seq = seqs.entry(format!("{workload:?}/{key}")).or_default();
            let task = Task {
                id,
                key,
                kind,
                seq: *seq,
                ms,
            };
            *seq += 1;
            (workload, task)
        })
        .collect()
}

// ----- what the handlers saw ---------------------------------------------------

#[derive(Debug, Default, Clone)]
struct TaskLog {
    /// Handler runs.
    runs: u32,
    /// Runs that returned `Ok`.
    oks: u32,
}

/// Handlers of one workload: running now, and finished so far.
#[derive(Debug, Default)]
struct Activity {
    running: AtomicUsize,
    finished: AtomicU64,
}

#[derive(Debug, Default)]
struct Book {
    tasks: HashMap<u64, TaskLog>,
    /// Per key of the partitioned queue: the `seq` of its tasks in the
    /// order of their first `Ok`.
    order: HashMap<String, Vec<(u64, u64)>>,
}

#[derive(Debug, Default)]
struct State {
    book: Mutex<Book>,
    activity: [Activity; 3],
}

/// Counts a handler as running until dropped (also when it panics).
struct Running<'a>(&'a Activity);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
        self.0.finished.fetch_add(1, Ordering::SeqCst);
    }
}

impl State {
    fn run(&self, workload: Workload, task: &Task) -> BoxFuture<'static, Result<(), String>> {
        let runs = {
            let mut book = self.book.lock().unwrap();
            let log = book.tasks.entry(task.id).or_default();
            log.runs += 1;
            log.runs
        };
        let (kind, ms, id) = (task.kind, task.ms, task.id);
        Box::pin(async move {
            match kind {
                Kind::Fast => Ok(()),
                Kind::Slow => {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    Ok(())
                }
                Kind::Flaky if runs == 1 => Err("flaky: the first run fails".to_owned()),
                Kind::Flaky => Ok(()),
                Kind::Fail => Err("fails every time".to_owned()),
                Kind::Panic => panic!("{CHAOS_PANIC} task {id} ({workload:?})"),
            }
        })
    }

    fn done(&self, workload: Workload, task: &Task) {
        let mut book = self.book.lock().unwrap();
        let log = book.tasks.entry(task.id).or_default();
        log.oks += 1;
        if log.oks == 1 && workload == Workload::Partitioned {
            book.order
                .entry(task.key.clone())
                .or_default()
                .push((task.seq, task.id));
        }
    }
}

/// The start of the message of the handlers' panics (not printed).
const CHAOS_PANIC: &str = "chaos: a panicking handler:";

type HandlerFn = Arc<dyn Fn(Task) -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// The handler of one workload's tasks.
fn handler(state: &Arc<State>, workload: Workload) -> HandlerFn {
    let state = state.clone();
    Arc::new(move |task: Task| {
        let state = state.clone();
        Box::pin(async move {
            let activity = &state.activity[workload.index()];
            activity.running.fetch_add(1, Ordering::SeqCst);
            let _running = Running(activity);
            let result = state.run(workload, &task).await;
            if result.is_ok() {
                state.done(workload, &task);
            }
            result
        })
    })
}

// ----- the timeline ------------------------------------------------------------

static STARTED: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

fn secs() -> f64 {
    STARTED.get_or_init(Instant::now).elapsed().as_secs_f64()
}

fn log(line: impl std::fmt::Display) {
    println!("[{:7.1}s] {line}", secs());
}

/// A nemesis event, from its start to its end (node started again, policy
/// cleared; a cut ends when it starts).
#[derive(Debug, Clone)]
struct Window {
    start: f64,
    end: f64,
    what: String,
    /// The consumer cancellations it may cause, per consumer.
    cancellations: u64,
}

// ----- names -------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Names {
    prefix: String,
    work: String,
    exchange: String,
    routed: String,
    partitioned: String,
}

impl Names {
    fn new() -> Self {
        let prefix = rabbitkit_test::unique_name("chaos");
        Self {
            work: format!("{prefix}.work"),
            exchange: format!("{prefix}.events"),
            routed: format!("{prefix}.routed"),
            partitioned: format!("{prefix}.part"),
            prefix,
        }
    }

    /// The queues of each workload.
    fn queues(&self, workload: Workload) -> Vec<String> {
        match workload {
            Workload::Work => vec![self.work.clone()],
            Workload::Routed => vec![self.routed.clone()],
            Workload::Partitioned => (0..PARTITIONS)
                .map(|i| rabbitkit::partition_name(&self.partitioned, i))
                .collect(),
        }
    }

    fn parking_queues(&self) -> Vec<String> {
        Workload::ALL
            .iter()
            .flat_map(|w| self.queues(*w))
            .map(|q| format!("{q}{}", rabbitkit::PARKED_SUFFIX))
            .collect()
    }
}

const PARTITIONS: usize = 3;
const WORK_PREFETCH: u16 = 16;
const WORK_CONCURRENCY: usize = 8;
const ROUTER_PREFETCH: u16 = 8;
const ROUTER_CONCURRENCY: usize = 4;
const PARTITION_PREFETCH: u16 = 10;
/// Worker clients: 1-based, each runs a work-queue worker; these also
/// run a router and a partitioned-queue instance.
const ROUTER_CLIENTS: [usize; 2] = [1, 3];
const PARTITION_CLIENTS: [usize; 2] = [1, 2];
/// The consumer timeout the nemesis's policy sets, in milliseconds.
const TIMEOUT_MS: u64 = 1000;
/// How long after a nemesis event ends the stall check waits.
const GRACE_SECS: f64 = 10.0;
/// A stall: this long with work ready, a free handler, and nothing finished.
const STALL_SECS: f64 = 5.0;

/// The prefetch of all the consumers of worker client `c`.
fn prefetch_of(c: usize) -> u64 {
    let mut p = u64::from(WORK_PREFETCH);
    if ROUTER_CLIENTS.contains(&c) {
        p += u64::from(ROUTER_PREFETCH);
    }
    if PARTITION_CLIENTS.contains(&c) {
        p += u64::from(PARTITION_PREFETCH) * PARTITIONS as u64;
    }
    p
}

/// Handlers a workload runs at once at most, over all its consumers.
fn capacity(workload: Workload) -> usize {
    match workload {
        Workload::Work => 3 * WORK_CONCURRENCY,
        Workload::Routed => ROUTER_CLIENTS.len() * ROUTER_CONCURRENCY,
        // One active consumer per partition, one task at a time.
        Workload::Partitioned => PARTITIONS,
    }
}

fn options(name: &str) -> Options {
    Options::new()
        .connection_name(format!("rabbitkit-chaos-{name}"))
        .heartbeat(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(5))
        .publish_timeout(Duration::from_secs(60))
        .operation_timeout(Duration::from_secs(30))
}

/// Follows a client's events on the timeline.
fn watch(name: &'static str, client: &Client) {
    let mut events = client.events();
    tokio::spawn(async move {
        while let Some(ev) = events.next().await {
            if matches!(
                ev,
                Event::Disconnected { .. }
                    | Event::Recovered { .. }
                    | Event::TopologyRecoveryFailed { .. }
                    | Event::ConsumerRecoveryFailed { .. }
                    | Event::Unresponsive { .. }
            ) {
                log(format!("{name}: {ev}"));
            }
        }
    });
}

fn bail(what: &str, e: impl std::fmt::Display) -> ! {
    eprintln!("chaos: {what}: {e}");
    std::process::exit(2)
}

// ----- the run -------------------------------------------------------------------

#[tokio::main]
async fn main() {
    let a = Args::parse();
    if rabbitkit_test::using_external_broker() {
        eprintln!(
            "chaos needs the local cluster (it kills its nodes and cuts connections); unset AMQP_ADDR"
        );
        std::process::exit(2);
    }
    // The handlers' panics are part of the workload: counted, not printed.
    let panics = Arc::new(AtomicU64::new(0));
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new({
        let panics = panics.clone();
        move |info| {
            let message = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or("");
            if message.starts_with(CHAOS_PANIC) {
                panics.fetch_add(1, Ordering::Relaxed);
            } else {
                default_hook(info);
            }
        }
    }));
    let seed = a.seed.unwrap_or_else(rand::random);
    let mut rng = StdRng::seed_from_u64(seed);
    let cluster = Cluster::local();
    let version = cluster.version();
    let timeouts = version == RabbitMq::V4_3 && !a.no_consumer_timeout;
    STARTED.get_or_init(Instant::now);
    log(format!(
        "chaos: seed {seed}, RabbitMQ {version}, {} s, {} events, {} tasks{}",
        a.seconds,
        a.events,
        a.tasks,
        if timeouts {
            ", consumer-timeout windows on"
        } else {
            ""
        }
    ));
    {
        let cluster = cluster.clone();
        tokio::task::spawn_blocking(move || cluster.up())
            .await
            .unwrap_or_else(|e| bail("cluster up", e))
            .unwrap_or_else(|e| bail("cluster up", e));
    }
    let names = Names::new();
    let state = Arc::new(State::default());

    // Clients: the producer and the checker on the nodes directly; the
    // workers through one proxy per node.
    let direct = cluster.amqp_urls();
    let producer = options("producer")
        .connect(direct.clone())
        .await
        .unwrap_or_else(|e| bail("connect the producer", e));
    let checker = options("checker")
        .connect(direct.clone())
        .await
        .unwrap_or_else(|e| bail("connect the checker", e));
    watch("producer", &producer);
    watch("checker", &checker);
    let mut proxies = Vec::new();
    for n in Cluster::nodes() {
        let upstream = SocketAddr::new(cluster.host(n), cluster.amqp_port(n));
        proxies.push(
            FaultProxy::start(upstream)
                .await
                .unwrap_or_else(|e| bail("start a proxy", e)),
        );
    }
    let proxies = Arc::new(proxies);
    let mut workers = Vec::new();
    for c in 1..=3usize {
        let urls: Vec<String> = (0..3)
            .map(|k| proxies[(c - 1 + k) % 3].amqp_url())
            .collect();
        let client = options(&format!("worker{c}"))
            .connect(urls)
            .await
            .unwrap_or_else(|e| bail("connect a worker", e));
        watch(["worker1", "worker2", "worker3"][c - 1], &client);
        workers.push(client);
    }

    // The topology, declared by the producer.
    let work = WorkQueue::<Task>::builder(names.work.as_str())
        .prefetch(WORK_PREFETCH)
        .concurrency(WORK_CONCURRENCY)
        .declare(&producer)
        .await
        .unwrap_or_else(|e| bail("declare the work queue", e));
    let exchange: Exchange<Topic> = Exchange::topic(names.exchange.as_str())
        .declare(&producer)
        .await
        .unwrap_or_else(|e| bail("declare the exchange", e));
    let routed = Queue::named(names.routed.as_str())
        .declare(&producer)
        .await
        .unwrap_or_else(|e| bail("declare the routed queue", e));
    exchange
        .bind(&routed, &"task.#".parse().expect("a pattern"))
        .await
        .unwrap_or_else(|e| bail("bind the routed queue", e));
    let partitioned = PartitionedQueue::<Task>::builder(names.partitioned.as_str(), PARTITIONS)
        .prefetch(PARTITION_PREFETCH)
        .declare(&producer)
        .await
        .unwrap_or_else(|e| bail("declare the partitioned queue", e));

    // The workers.
    let shutdown = Shutdown::new();
    let mut running = Vec::new();
    for (i, client) in workers.iter().enumerate() {
        let c = i + 1;
        let queue = WorkQueue::<Task>::builder(names.work.as_str())
            .prefetch(WORK_PREFETCH)
            .concurrency(WORK_CONCURRENCY)
            .declare(client)
            .await
            .unwrap_or_else(|e| bail("declare the work queue", e));
        let h = handler(&state, Workload::Work);
        let sd = shutdown.clone();
        running.push(tokio::spawn(async move {
            queue
                .work_until(&sd, move |t: Task| h(t).err_into())
                .await
                .map(|r| format!("worker{c} work queue: {r:?}"))
                .map_err(|e| e.to_string())
        }));
        if ROUTER_CLIENTS.contains(&c) {
            let queue = Queue::named(names.routed.as_str())
                .declare(client)
                .await
                .unwrap_or_else(|e| bail("declare the routed queue", e));
            let mut router = Router::new().prefetch(ROUTER_PREFETCH);
            for kind in Kind::ALL {
                let h = handler(&state, Workload::Routed);
                router = router.route(&format!("task.{}.*", kind.name()), move |t: Task| {
                    h(t).err_into()
                });
            }
            let sd = shutdown.clone();
            running.push(tokio::spawn(async move {
                router
                    .run(
                        &queue,
                        HandleOptions::new()
                            .concurrency(ROUTER_CONCURRENCY)
                            .shutdown(&sd),
                    )
                    .await
                    .map(|r| format!("worker{c} router: {r:?}"))
                    .map_err(|e| e.to_string())
            }));
        }
        if PARTITION_CLIENTS.contains(&c) {
            let pq = PartitionedQueue::<Task>::builder(names.partitioned.as_str(), PARTITIONS)
                .prefetch(PARTITION_PREFETCH)
                .declare(client)
                .await
                .unwrap_or_else(|e| bail("declare the partitioned queue", e));
            let h = handler(&state, Workload::Partitioned);
            let sd = shutdown.clone();
            running.push(tokio::spawn(async move {
                pq.work_until(&sd, move |t: Task| h(t).err_into())
                    .await
                    .map(|r| format!("worker{c} partitioned: {r:?}"))
                    .map_err(|e| e.to_string())
            }));
        }
    }

    // The plan and the nemesis's schedule come from the seed, in this order.
    let plan = plan(&mut rng, a.tasks);
    let nemesis_rng = StdRng::seed_from_u64(rng.random());
    let mut by_workload = [0u64; 3];
    for (w, _) in &plan {
        by_workload[w.index()] += 1;
    }
    log(format!(
        "plan: {} tasks to the work queue, {} through the router, {} to the partitioned queue",
        by_workload[0], by_workload[1], by_workload[2]
    ));

    // Stall samples, every second, until the end of the drain.
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let sampler = tokio::spawn({
        let (checker, names, state) = (checker.clone(), names.clone(), state.clone());
        let (sampling, samples) = (sampling.clone(), samples.clone());
        async move {
            while sampling.load(Ordering::SeqCst) {
                let tick = tokio::time::Instant::now() + Duration::from_secs(1);
                let at = secs();
                let mut sample = Sample {
                    at,
                    ready: [None; 3],
                    running: [0; 3],
                    finished: [0; 3],
                };
                for w in Workload::ALL {
                    let mut ready = Some(0u64);
                    for q in names.queues(w) {
                        let info = tokio::time::timeout(
                            Duration::from_millis(800),
                            checker.queue_info(&q),
                        )
                        .await;
                        ready = match (ready, info) {
                            (Some(r), Ok(Ok(info))) => Some(r + u64::from(info.messages)),
                            _ => None,
                        };
                    }
                    let act = &state.activity[w.index()];
                    sample.ready[w.index()] = ready;
                    sample.running[w.index()] = act.running.load(Ordering::SeqCst);
                    sample.finished[w.index()] = act.finished.load(Ordering::SeqCst);
                }
                samples.lock().unwrap().push(sample);
                tokio::time::sleep_until(tick).await;
            }
        }
    });

    // The nemesis.
    let windows: Arc<Mutex<Vec<Window>>> = Arc::default();
    let nemesis = tokio::spawn(nemesis(
        nemesis_rng,
        a.seconds as f64,
        a.events,
        timeouts,
        cluster.clone(),
        proxies.clone(),
        names.prefix.clone(),
        windows.clone(),
    ));

    // The producer: 8 lanes; a key's tasks on one lane, one at a time.
    let confirmed: Arc<Mutex<HashSet<u64>>> = Arc::default();
    let failed: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let unpublished = Arc::new(AtomicU64::new(0));
    const LANES: usize = 8;
    let mut lanes: Vec<Vec<(Workload, Task)>> = vec![Vec::new(); LANES];
    for (w, task) in &plan {
        let lane = task.key.bytes().fold(w.index() as u64, |h, b| {
            h.wrapping_mul(31).wrapping_add(u64::from(b))
        });
        lanes[(lane % LANES as u64) as usize].push((*w, task.clone()));
    }
    let spacing = a.seconds as f64 / a.tasks.max(1) as f64;
    let publish_start = secs();
    // Publishing that falls this far behind the schedule gives up.
    let give_up = publish_start + a.seconds as f64 + 60.0;
    let mut publishing = Vec::new();
    for lane in lanes {
        let (work, exchange, partitioned) = (work.clone(), exchange.clone(), partitioned.clone());
        let (confirmed, failed, unpublished) =
            (confirmed.clone(), failed.clone(), unpublished.clone());
        publishing.push(tokio::spawn(async move {
            for (w, task) in lane {
                if secs() > give_up {
                    unpublished.fetch_add(1, Ordering::SeqCst);
                    continue;
                }
                let at = publish_start + task.id as f64 * spacing;
                let wait = at - secs();
                if wait > 0.0 {
                    tokio::time::sleep(Duration::from_secs_f64(wait)).await;
                }
                let result = match w {
                    Workload::Work => work.submit(&task).await,
                    Workload::Routed => {
                        let key = format!("task.{}.{}", task.kind.name(), task.key);
                        exchange.publish(key.as_str(), &task).await
                    }
                    Workload::Partitioned => partitioned.publish(&task.key, &task).await,
                };
                match result {
                    Ok(_) => {
                        confirmed.lock().unwrap().insert(task.id);
                    }
                    Err(e) => {
                        let mut why = e.to_string();
                        why.truncate(100);
                        *failed.lock().unwrap().entry(why).or_default() += 1;
                    }
                }
            }
        }));
    }
    for p in publishing {
        let _ = p.await;
    }
    log(format!(
        "publishing over: {} confirmed, {} failed, {} not published",
        confirmed.lock().unwrap().len(),
        failed.lock().unwrap().values().sum::<u64>(),
        unpublished.load(Ordering::SeqCst)
    ));
    let _ = nemesis.await;
    {
        let cluster = cluster.clone();
        let _ = tokio::task::spawn_blocking(move || cluster.up()).await;
    }
    log("nemesis over, the cluster is whole; draining");

    // The drain: until every confirmed task is done or parked (counting the
    // parking queues' messages) and nothing moves for 5 s.
    let drain_start = Instant::now();
    let confirmed = confirmed.lock().unwrap().clone();
    let parking = names.parking_queues();
    let mut quiet = 0;
    let mut last_finished = u64::MAX;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let done = {
            let book = state.book.lock().unwrap();
            confirmed
                .iter()
                .filter(|id| book.tasks.get(id).is_some_and(|l| l.oks > 0))
                .count() as u64
        };
        let mut parked = 0u64;
        for q in &parking {
            if let Ok(info) = checker.queue_info(q).await {
                parked += u64::from(info.messages);
            }
        }
        let mut ready = 0u64;
        for w in Workload::ALL {
            for q in names.queues(w) {
                ready += checker
                    .queue_info(&q)
                    .await
                    .map_or(1, |i| u64::from(i.messages));
            }
        }
        let finished: u64 = state
            .activity
            .iter()
            .map(|a| a.finished.load(Ordering::SeqCst))
            .sum();
        let running: usize = state
            .activity
            .iter()
            .map(|a| a.running.load(Ordering::SeqCst))
            .sum();
        let settled = done + parked >= confirmed.len() as u64 && ready == 0 && running == 0;
        if settled && finished == last_finished {
            quiet += 1;
        } else {
            quiet = 0;
        }
        last_finished = finished;
        if quiet >= 5 {
            log(format!("drained: {done} done, {parked} parked"));
            break;
        }
        if drain_start.elapsed() > Duration::from_secs(a.drain_secs) {
            log(format!(
                "drain gave up after {} s: {done} done, {parked} parked, {ready} ready, {running} running, of {} confirmed",
                a.drain_secs,
                confirmed.len()
            ));
            break;
        }
    }
    sampling.store(false, Ordering::SeqCst);
    let _ = sampler.await;
    shutdown.stop(Duration::from_secs(10));
    for r in running {
        match tokio::time::timeout(Duration::from_secs(30), r).await {
            Ok(Ok(Ok(report))) => log(report),
            Ok(Ok(Err(e))) => log(format!("a worker ended with an error: {e}")),
            Ok(Err(e)) => log(format!("a worker task failed: {e}")),
            Err(_) => log("a worker did not stop within 30 s"),
        }
    }

    // The parked tasks.
    let mut parked: HashMap<u64, u32> = HashMap::new();
    for q in &parking {
        match checker.queue_info(q).await {
            Ok(_) => {}
            Err(DeclareError::NotFound { .. }) => continue,
            Err(e) => {
                log(format!("cannot look at {q}: {e}"));
                continue;
            }
        }
        let queue = Queue::durable(q.as_str())
            .declare(&checker)
            .await
            .unwrap_or_else(|e| bail("declare a parking queue", e));
        let mut sub = queue
            .subscribe::<Task>()
            .await
            .unwrap_or_else(|e| bail("read a parking queue", e));
        while let Ok(Some(item)) = tokio::time::timeout(Duration::from_secs(3), sub.next()).await {
            match item {
                Ok(m) => {
                    *parked.entry(m.body.id).or_default() += 1;
                    let _ = m.ack().await;
                }
                Err(e) => log(format!("{q}: {e}")),
            }
        }
    }

    // ----- the verdict -----
    let windows = windows.lock().unwrap().clone();
    let samples = samples.lock().unwrap().clone();
    let book = std::mem::take(&mut *state.book.lock().unwrap());
    let kinds: HashMap<u64, (Workload, Kind)> =
        plan.iter().map(|(w, t)| (t.id, (*w, t.kind))).collect();
    let disconnects: Vec<u64> = workers.iter().map(|c| c.stats().disconnects).collect();
    let all_clients = || workers.iter().chain([&producer, &checker]);
    let all_disconnects: u64 = all_clients().map(|c| c.stats().disconnects).sum();
    let republished: u64 = all_clients().map(|c| c.stats().republished).sum();
    let cancellations: u64 = windows.iter().map(|w| w.cancellations).sum();
    let mut rows = Vec::new();

    // 1. Done or parked, exactly once, as the kind says.
    let (mut done, mut parked_n, mut missing, mut both, mut wrong) = (0, 0, vec![], vec![], vec![]);
    for id in &confirmed {
        let is_done = book.tasks.get(id).is_some_and(|l| l.oks > 0);
        let is_parked = parked.contains_key(id);
        let (_, kind) = kinds[id];
        match (is_done, is_parked) {
            (true, true) => both.push(*id),
            (false, false) => missing.push(*id),
            (true, false) => done += 1,
            (false, true) => parked_n += 1,
        }
        if is_done != is_parked && is_done != kind.ends_done() {
            wrong.push(*id);
        }
    }
    let show = |ids: &mut Vec<u64>| {
        ids.sort_unstable();
        let mut s: Vec<String> = ids
            .iter()
            .take(10)
            .map(|id| {
                let (w, k) = kinds[id];
                format!("{id} ({}, {})", w.name(), k.name())
            })
            .collect();
        if ids.len() > 10 {
            s.push("...".into());
        }
        s.join(", ")
    };
    let mut detail = format!(
        "{} confirmed: {done} done, {parked_n} parked; {} missing, {} both done and parked, {} ended against their kind",
        confirmed.len(),
        missing.len(),
        both.len(),
        wrong.len()
    );
    for (what, ids) in [
        ("missing", &mut missing),
        ("both", &mut both),
        ("against their kind", &mut wrong),
    ] {
        if !ids.is_empty() {
            detail += &format!("; {what}: {}", show(ids));
        }
    }
    rows.push((
        "every confirmed task ended exactly once, done or parked (as its kind says)",
        missing.is_empty() && both.is_empty() && wrong.is_empty(),
        detail,
    ));

    // 2. Duplicates, bounded.
    let done_twice: u64 = book
        .tasks
        .values()
        .map(|l| u64::from(l.oks.saturating_sub(1)))
        .sum();
    let parked_twice: u64 = parked
        .values()
        .map(|n| u64::from(n.saturating_sub(1)))
        .sum();
    let dup_bound: u64 = disconnects
        .iter()
        .enumerate()
        .map(|(i, d)| prefetch_of(i + 1) * (d + cancellations))
        .sum::<u64>()
        + republished;
    let duplicates = done_twice + parked_twice;
    // Which kinds ran more than their kind needs (fast, slow: once;
    // flaky, fail, panic: twice): slow ones point at the timeout windows.
    let mut again: BTreeMap<&str, u64> = BTreeMap::new();
    for (id, l) in &book.tasks {
        if let Some((w, k)) = kinds.get(id) {
            let needed = if matches!(k, Kind::Fast | Kind::Slow) {
                1
            } else {
                2
            };
            if l.runs > needed {
                *again
                    .entry(if *w == Workload::Partitioned {
                        "partitioned"
                    } else {
                        k.name()
                    })
                    .or_default() += 1;
            }
        }
    }
    let again: Vec<String> = again.iter().map(|(k, n)| format!("{k} {n}")).collect();
    rows.push((
        "duplicates within at-least-once",
        duplicates <= dup_bound,
        format!(
            "{duplicates} ({done_twice} done again, {parked_twice} parked again) ≤ bound {dup_bound} = Σ worker prefetch × (its connection losses + {cancellations} timeout cancellations) [prefetch {}/{}/{}, losses {}/{}/{}] + {republished} publishes sent again; tasks run more often than their kind needs: {}",
            prefetch_of(1),
            prefetch_of(2),
            prefetch_of(3),
            disconnects[0],
            disconnects[1],
            disconnects[2],
            again.join(", ")
        ),
    ));

    // 3. Order per key in the partitioned queue.
    let mut keys_out_of_order = Vec::new();
    let mut checked = 0;
    for (key, seqs) in &book.order {
        let seqs: Vec<u64> = seqs
            .iter()
            .filter(|(_, id)| confirmed.contains(id))
            .map(|(seq, _)| *seq)
            .collect();
        checked += seqs.len();
        if let Some(w) = seqs.windows(2).find(|w| w[1] < w[0]) {
            keys_out_of_order.push(format!("{key}: seq {} done after {}", w[1], w[0]));
        }
    }
    keys_out_of_order.sort();
    rows.push((
        "order per key in the partitioned queue",
        keys_out_of_order.is_empty(),
        format!(
            "{checked} tasks of {} keys; {} keys out of order{}",
            book.order.len(),
            keys_out_of_order.len(),
            if keys_out_of_order.is_empty() {
                String::new()
            } else {
                format!(
                    ": {}",
                    keys_out_of_order
                        .iter()
                        .take(5)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            }
        ),
    ));

    // 4. No stall.
    let stalls = stalls(&samples, &windows);
    let excluded: f64 = samples
        .iter()
        .filter(|s| excluded_at(s.at, &windows))
        .count() as f64;
    rows.push((
        "no stall (> 5 s: work ready, a handler free, nodes up, nothing finished)",
        stalls.is_empty(),
        format!(
            "{} samples (1/s), {excluded:.0} excluded (a node down, or within {GRACE_SECS:.0} s after a nemesis event ended); {} stalls{}",
            samples.len(),
            stalls.len(),
            if stalls.is_empty() {
                String::new()
            } else {
                format!(": {}", stalls.join("; "))
            }
        ),
    ));

    // 5. Handler runs per task.
    let run_bound = 2 * 2 + all_disconnects + cancellations;
    let max_runs = book.tasks.iter().max_by_key(|(_, l)| l.runs);
    let over: Vec<u64> = book
        .tasks
        .iter()
        .filter(|(_, l)| u64::from(l.runs) > run_bound)
        .map(|(id, _)| *id)
        .collect();
    let total_runs: u64 = book.tasks.values().map(|l| u64::from(l.runs)).sum();
    rows.push((
        "handler runs per task bounded (no hot loop)",
        over.is_empty(),
        format!(
            "{total_runs} runs of {} tasks; most: {} (task {}); bound {run_bound} = 2 × 2 attempts + {all_disconnects} connection losses (all clients) + {cancellations} timeout cancellations; {} over",
            book.tasks.len(),
            max_runs.map_or(0, |(_, l)| l.runs),
            max_runs.map_or("-".into(), |(id, _)| {
                let (w, k) = kinds[id];
                format!("{id}, {}, {}", w.name(), k.name())
            }),
            over.len()
        ),
    ));

    // ----- the report -----
    println!();
    println!(
        "### Chaos run: seed {seed}, RabbitMQ {version}, {} s, {} events, {} tasks",
        a.seconds, a.events, a.tasks
    );
    println!();
    println!("Nemesis:");
    for w in &windows {
        println!("- {:6.1}–{:6.1} s: {}", w.start, w.end, w.what);
    }
    let failed = failed.lock().unwrap().clone();
    println!(
        "\nPublished: {} confirmed, {} failed (not confirmed, the caller was told){}, {} not published (behind schedule). Handler panics: {}. Connection losses: workers {}/{}/{}, producer {}, checker {}.",
        confirmed.len(),
        failed.values().sum::<u64>(),
        if failed.is_empty() {
            String::new()
        } else {
            format!(
                " [{}]",
                failed
                    .iter()
                    .map(|(w, n)| format!("{n}× {w}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        },
        unpublished.load(Ordering::SeqCst),
        panics.load(Ordering::Relaxed),
        disconnects[0],
        disconnects[1],
        disconnects[2],
        producer.stats().disconnects,
        checker.stats().disconnects
    );
    println!();
    println!("| # | invariant | result | figures |");
    println!("|---|---|---|---|");
    for (i, (name, ok, detail)) in rows.iter().enumerate() {
        println!(
            "| {} | {name} | {} | {detail} |",
            i + 1,
            if *ok { "pass" } else { "**FAIL**" }
        );
    }
    println!();

    if !a.keep {
        for q in names.parking_queues() {
            let _ = checker.delete_queue(&q).await;
        }
        let _ = checker.delete_queue(&names.work).await;
        let _ = checker.delete_queue(&names.routed).await;
        let _ = checker.delete_exchange(&names.exchange).await;
        let _ = partitioned.delete().await;
    }
    for c in all_clients() {
        c.close().await;
    }
    drop(proxies);
    let passed = rows.iter().filter(|(_, ok, _)| *ok).count();
    let failed_n = rows.len() - passed;
    for (i, (name, ok, _)) in rows.iter().enumerate() {
        println!(
            "chaos: invariant {} {}: {name}",
            i + 1,
            if *ok { "passed" } else { "FAILED" }
        );
    }
    println!("chaos: {passed} passed, {failed_n} failed (seed {seed}, RabbitMQ {version})");
    if failed_n > 0 {
        std::process::exit(1);
    }
}

/// Queue depths and handlers, at one second.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: f64,
    /// Ready messages of each workload's queues (`None`: not known).
    ready: [Option<u64>; 3],
    running: [usize; 3],
    finished: [u64; 3],
}

/// Whether `at` is within a nemesis event or the grace after it.
fn excluded_at(at: f64, windows: &[Window]) -> bool {
    windows
        .iter()
        .any(|w| at >= w.start - 1.0 && at <= w.end + GRACE_SECS)
}

/// The stalls: runs of samples longer than [`STALL_SECS`] where a
/// workload had ready work and a free handler and finished nothing,
/// outside the nemesis's windows.
fn stalls(samples: &[Sample], windows: &[Window]) -> Vec<String> {
    let mut found = Vec::new();
    for w in Workload::ALL {
        let i = w.index();
        // (start, finished count at the start)
        let mut since: Option<(f64, u64)> = None;
        let mut reported = false;
        for s in samples {
            let stuck = !excluded_at(s.at, windows)
                && s.ready[i].is_some_and(|r| r > 0)
                && s.running[i] < capacity(w);
            match since {
                Some((start, finished)) if stuck && s.finished[i] == finished => {
                    if s.at - start > STALL_SECS && !reported {
                        found.push(format!(
                            "{} from {start:.0} s ({} ready, {} running)",
                            w.name(),
                            s.ready[i].unwrap_or(0),
                            s.running[i]
                        ));
                        reported = true;
                    }
                }
                _ if stuck => {
                    since = Some((s.at, s.finished[i]));
                    reported = false;
                }
                _ => {
                    since = None;
                    reported = false;
                }
            }
        }
    }
    found
}

/// Runs the nemesis's events, one at a time, spread over `seconds`.
#[allow(clippy::too_many_arguments)]
async fn nemesis(
    mut rng: StdRng,
    seconds: f64,
    events: u32,
    timeouts: bool,
    cluster: Cluster,
    proxies: Arc<Vec<FaultProxy>>,
    prefix: String,
    windows: Arc<Mutex<Vec<Window>>>,
) {
    let t0 = secs();
    let gap = seconds / f64::from(events.max(1));
    for i in 0..events {
        let at = t0 + gap * (f64::from(i) + rng.random_range(0.2..0.8));
        let wait = at - secs();
        if wait > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(wait)).await;
        }
        let r = rng.random_range(0..100);
        let node = rng.random_range(1..=3usize);
        let start = secs();
        let window = if r < 40 {
            let down = rng.random_range(3.0..10.0);
            log(format!(
                "nemesis: SIGKILL rabbit{node}, start it in {down:.1} s"
            ));
            let c = cluster.clone();
            let killed = tokio::task::spawn_blocking(move || c.kill(node)).await;
            if !matches!(killed, Ok(Ok(()))) {
                log(format!("nemesis: kill failed: {killed:?}"));
            }
            tokio::time::sleep(Duration::from_secs_f64(down)).await;
            let c = cluster.clone();
            let started = tokio::task::spawn_blocking(move || c.start(node)).await;
            if !matches!(started, Ok(Ok(()))) {
                log(format!("nemesis: start failed: {started:?}; cluster up"));
                let c = cluster.clone();
                let _ = tokio::task::spawn_blocking(move || c.up()).await;
            }
            log(format!("nemesis: rabbit{node} is back"));
            Window {
                start,
                end: secs(),
                what: format!("SIGKILL rabbit{node}, started again {down:.1} s later"),
                cancellations: 0,
            }
        } else if r < 80 || !timeouts {
            log(format!(
                "nemesis: cut the workers' connections to rabbit{node}"
            ));
            proxies[node - 1].cut();
            Window {
                start,
                end: secs(),
                what: format!("cut the workers' connections to rabbit{node} (proxy)"),
                cancellations: 0,
            }
        } else {
            let secs_on = rng.random_range(5.0..10.0);
            log(format!(
                "nemesis: consumer-timeout {TIMEOUT_MS} ms policy on the run's queues for {secs_on:.1} s"
            ));
            let pattern = format!("^{}\\.", prefix.replace('.', "\\."));
            let definition = format!("{{\"consumer-timeout\":{TIMEOUT_MS}}}");
            let c = cluster.clone();
            let set = tokio::task::spawn_blocking(move || {
                c.rabbitmqctl(
                    node,
                    &[
                        "set_policy",
                        "--apply-to",
                        "queues",
                        "rabbitkit-chaos-timeout",
                        &pattern,
                        &definition,
                    ],
                )
            })
            .await;
            let what = match &set {
                Ok(Ok(_)) => format!("consumer-timeout {TIMEOUT_MS} ms policy for {secs_on:.1} s"),
                other => {
                    log(format!("nemesis: set_policy failed: {other:?}"));
                    format!("consumer-timeout policy refused: {other:?}")
                }
            };
            tokio::time::sleep(Duration::from_secs_f64(secs_on)).await;
            let c = cluster.clone();
            let cleared = tokio::task::spawn_blocking(move || {
                c.rabbitmqctl(node, &["clear_policy", "rabbitkit-chaos-timeout"])
            })
            .await;
            if !matches!(cleared, Ok(Ok(_))) {
                log(format!("nemesis: clear_policy failed: {cleared:?}"));
            }
            log("nemesis: consumer-timeout policy cleared");
            // Each consumer may be cancelled once per timeout in the
            // window, and once more for what the timeout caught last.
            let cancellations = (secs_on * 1000.0 / TIMEOUT_MS as f64).ceil() as u64 + 1;
            Window {
                start,
                end: secs(),
                what,
                cancellations: if matches!(set, Ok(Ok(_))) {
                    cancellations
                } else {
                    0
                },
            }
        };
        windows.lock().unwrap().push(window);
    }
}
