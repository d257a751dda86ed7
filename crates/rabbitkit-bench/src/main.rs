//! # rabbitkit-bench
//!
//! rabbitkit side by side with hand-written raw lapin 4 and amqprs 2 (the
//! other Rust AMQP client), in one run, on the local 3-node cluster (issues
//! 6 and 14). `cargo xtask bench [ARGS]` brings the cluster up and runs this
//! program in release mode; `cargo xtask bench -- --help` lists the options.
//!
//! Every scenario runs with rabbitkit, with raw lapin code written the way a
//! careful lapin user writes it, and with amqprs driven the way its
//! documentation shows (its own confirm callbacks), under the same
//! conditions: same
//! broker node (node 1; rabbitkit is given the whole cluster, node 1 first,
//! and lands there), same queue type, same body size, same in-flight window,
//! same prefetch. The variants alternate which goes first from round to
//! round, each run uses a fresh uniquely named queue, deleted afterwards, and
//! the table reports the median over rounds. Client CPU per message is this
//! process's user + system time (every thread, from `/proc/self/stat`) over
//! the measured run, divided by the messages; the broker's CPU is read from
//! its nodes' `/proc/<pid>/stat`. Client and broker share the machine's cores.
//!
//! Scenarios: publish without confirms (rate at which messages *land* in the
//! queue), publish with pipelined confirms (classic and quorum queue),
//! consume with manual acks from a pre-filled work queue, RPC one call at a
//! time and with many calls in flight, a work queue whose handler awaits a
//! 10 ms timer at concurrency 1, 8 and 32, delayed publish (rabbitkit
//! only: confirmed throughput with and without a delay, and how late
//! delayed messages arrive; `delay.rs`), partitioned queues of 1, 3 and 6
//! partitions and streams against one quorum queue (rabbitkit only:
//! `beyond.rs`), and failover (rabbitkit only:
//! neither raw lapin nor amqprs reconnects).
//!
//! Some scenarios add *reference* variants, reported without a target: raw
//! lapin driven the way rabbitkit drives it (concurrent publish futures,
//! `ack(multiple)`), and RPC with one side swapped (rabbitkit client against
//! the raw server, and the reverse). They show how much of a difference is
//! rabbitkit's own code and on which side it sits. Raw lapin driven
//! concurrently is also the baseline of issue 14's targets, which the table
//! marks met or not with the measured ratio (`report.rs`): rates ≥ 1.0×
//! amqprs and that raw lapin, CPU ≤ 1.1× that raw lapin, one-at-a-time RPC
//! p50 ≤ 1.0× amqprs; a scenario without such a variant is judged against
//! its only raw lapin variant. A scenario that fails (e.g. a node stopped by
//! someone else) is reported and skipped.
//!
//! ## Layout
//! - `main.rs` — arguments (clap), the scenario list, rounds and their order.
//! - `raw.rs` — the raw lapin column (and the observer connection that
//!   watches queues for both columns).
//! - `rk.rs` — the rabbitkit column.
//! - `amq.rs` — the amqprs column.
//! - `delay.rs` — the delayed-publish scenario.
//! - `beyond.rs` — past one queue: partitioned queues and streams against
//!   one quorum queue (aggregate rates, broker CPU per message).
//! - `stream_protocol.rs` — streams over the stream protocol: rabbitkit-stream
//!   vs raw rabbitmq-stream-client (client CPU per message), beside the
//!   AMQP 0-9-1 stream row of `beyond.rs`.
//! - `failover.rs` — SIGKILL the connected node, measure, check for loss.
//! - `stream_failover.rs` — SIGKILL a stream leader's node under a named
//!   rabbitkit-stream producer: lost, duplicated, time to publish again.
//! - `measure.rs` — CPU from `/proc`, wall time, percentiles.
//! - `report.rs` — the Markdown table, machine notes, `--write`.

mod amq;
mod beyond;
mod delay;
mod failover;
mod measure;
mod raw;
mod report;
mod retry;
mod rk;
mod stream_failover;
mod stream_protocol;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use futures::future::BoxFuture;
use rabbitkit::DEFAULT_PREFETCH;
use rabbitkit_test::unique_name;

use crate::measure::{BoxError, Result, Sample};
use crate::report::{Comparison, Kind};

/// The queue types the scenarios use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueKind {
    /// Classic, durable, transient messages (`Queue::durable(..).classic()`;
    /// RabbitMQ 4 deprecates the non-durable shared queues this once was).
    Classic,
    /// Classic, durable, persistent messages (`WorkQueue::builder(..).classic()`).
    Durable,
    /// Quorum (`Queue::quorum`).
    Quorum,
}

/// What every scenario needs.
pub struct Ctx {
    /// The node both columns use (node 1).
    pub url: String,
    /// Its port.
    pub port: u16,
    /// The whole cluster, node 1 first (rabbitkit is given all of it).
    pub addrs: Vec<String>,
    /// The message body.
    pub body: Vec<u8>,
    /// The broker nodes' process ids (for their CPU time).
    pub pids: Vec<u32>,
    /// Watches and deletes queues for both columns.
    pub observer: raw::Observer,
}

/// The command-line settings.
#[derive(Debug, Clone)]
pub struct Args {
    /// The arguments as given.
    pub given: Vec<String>,
    /// `--quick`.
    pub quick: bool,
    /// Rounds per scenario.
    pub rounds: usize,
    /// Messages per publish run.
    pub publish: u64,
    /// Messages per consume run.
    pub consume: u64,
    /// Calls per serial RPC run.
    pub rpc: usize,
    /// Calls per concurrent RPC run.
    pub rpc_concurrent: usize,
    /// RPC warm-up calls.
    pub warmup: usize,
    /// Publish window with confirms.
    pub window: usize,
    /// RPC calls in flight.
    pub in_flight: usize,
    /// Body size.
    pub body: usize,
    /// Failover settings.
    pub failover: failover::Settings,
    /// Scenario subset.
    pub only: Option<Vec<String>>,
    /// `--write` target.
    pub write: Option<PathBuf>,
    /// Only variants whose label contains this (for profiling one).
    pub variant: Option<String>,
}

const SCENARIOS: &[&str] = &[
    "publish",
    "confirm",
    "quorum",
    "consume",
    "rpc",
    "rpc-concurrent",
    "failover",
    "work-concurrency",
    "work-slow",
    "delay",
    "retry",
    "partitions",
    "streams",
    "stream-protocol",
    "stream-failover",
];

/// rabbitkit side by side with raw lapin 4 and amqprs 2 on the local cluster.
///
/// Usually run as `cargo xtask bench [OPTIONS]` (which brings the cluster
/// up), or `cargo run --release -p rabbitkit-bench -- [OPTIONS]`.
#[derive(Parser, Debug)]
#[command(
    name = "rabbitkit-bench",
    about,
    long_about = None,
    after_help = "Run as `cargo xtask bench [OPTIONS]` (brings the local cluster up first) \
                  or `cargo run --release -p rabbitkit-bench -- [OPTIONS]`."
)]
struct Cli {
    /// Smoke run of seconds (small counts, 1 round, no failover).
    #[arg(long)]
    quick: bool,
    /// Rounds per scenario, alternating which variant goes first [default: 3; 1 with --quick].
    #[arg(long, value_name = "N")]
    rounds: Option<usize>,
    /// Messages per publish run [default: 100000].
    #[arg(long, value_name = "N")]
    publish: Option<u64>,
    /// Messages per consume run [default: 50000].
    #[arg(long, value_name = "N")]
    consume: Option<u64>,
    /// Calls per one-at-a-time RPC run [default: 5000].
    #[arg(long, value_name = "N")]
    rpc: Option<usize>,
    /// Calls per concurrent RPC run [default: 20000].
    #[arg(long, value_name = "N")]
    rpc_concurrent: Option<usize>,
    /// RPC warm-up calls before measuring [default: 200].
    #[arg(long, value_name = "N")]
    warmup: Option<usize>,
    /// Publishes in flight with confirms.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    window: usize,
    /// RPC calls in flight in the concurrent scenario.
    #[arg(long, value_name = "N", default_value_t = 64)]
    in_flight: usize,
    /// Body size in bytes (at least 20).
    #[arg(long, value_name = "BYTES", default_value_t = 256)]
    body: usize,
    /// Node kills in the failover scenario [default: 5; 0 with --quick].
    #[arg(long, value_name = "N")]
    failover_rounds: Option<usize>,
    /// Publishes per second during failover (0: unlimited).
    #[arg(long, value_name = "N", default_value_t = 2000)]
    failover_rate: u64,
    /// Publishes in flight during failover.
    #[arg(long, value_name = "N", default_value_t = 100)]
    failover_window: usize,
    /// End a failover round S seconds after the kill if nothing was confirmed
    /// through the new connection.
    #[arg(long, value_name = "S", default_value_t = 30)]
    failover_give_up: u64,
    /// Comma-separated subset of the scenarios.
    #[arg(long, value_name = "LIST", value_delimiter = ',',
          value_parser = clap::builder::PossibleValuesParser::new(SCENARIOS))]
    only: Option<Vec<String>>,
    /// Also write the report to PATH (relative to the workspace root),
    /// replacing the block a previous --write generated there and keeping
    /// everything else in the file.
    #[arg(long, value_name = "PATH")]
    write: Option<PathBuf>,
    /// Only run variants whose label contains TEXT (to profile one; the
    /// table then lacks the comparisons it cannot make).
    #[arg(long, value_name = "TEXT")]
    variant: Option<String>,
}

impl Args {
    /// The settings from the command line (`given`, without the program
    /// name; a leading `--`, as `cargo xtask bench -- ARGS` passes it, is
    /// skipped). Exits on `--help` or a bad argument, as clap does.
    fn parse(given: Vec<String>) -> Self {
        let given: Vec<String> = match given.split_first() {
            Some((first, rest)) if first == "--" => rest.to_vec(),
            _ => given,
        };
        let cli =
            Cli::parse_from(std::iter::once("rabbitkit-bench".to_owned()).chain(given.clone()));
        let quick = cli.quick;
        let pick = |v: Option<u64>, quick_v: u64, full: u64| {
            v.unwrap_or(if quick { quick_v } else { full })
        };
        let picku = |v: Option<usize>, quick_v: usize, full: usize| {
            v.unwrap_or(if quick { quick_v } else { full })
        };
        Args {
            given,
            quick,
            rounds: picku(cli.rounds, 1, 3).max(1),
            publish: pick(cli.publish, 5_000, 100_000),
            consume: pick(cli.consume, 3_000, 50_000),
            rpc: picku(cli.rpc, 300, 5_000),
            rpc_concurrent: picku(cli.rpc_concurrent, 2_000, 20_000),
            warmup: picku(cli.warmup, 50, 200),
            window: cli.window.max(1),
            in_flight: cli.in_flight.max(1),
            body: cli.body.max(20),
            failover: failover::Settings {
                rounds: picku(cli.failover_rounds, 0, 5),
                window: cli.failover_window.max(1),
                rate: cli.failover_rate,
                before: Duration::from_secs(2),
                after: Duration::from_secs(2),
                settle: Duration::from_secs(3),
                give_up: Duration::from_secs(cli.failover_give_up),
            },
            only: cli.only,
            write: cli.write,
            variant: cli.variant,
        }
    }

    fn wants(&self, scenario: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|list| list.iter().any(|s| s == scenario))
    }
}

/// One variant of a scenario: a label and a run that measures one sample.
struct Variant<'a> {
    label: String,
    run: Box<dyn Fn() -> BoxFuture<'a, Result<Sample>> + Send + Sync + 'a>,
    samples: Vec<Sample>,
}

impl<'a> Variant<'a> {
    fn new(
        label: &str,
        run: impl Fn() -> BoxFuture<'a, Result<Sample>> + Send + Sync + 'a,
    ) -> Self {
        Self {
            label: label.to_owned(),
            run: Box::new(run),
            samples: Vec::new(),
        }
    }
}

/// The scenario running now, for the record of other work seen meanwhile.
static SCENARIO: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

fn entering(scenario: &str) {
    *SCENARIO.lock().unwrap() = scenario.to_owned();
}

/// `--variant TEXT` (kept in a global: the closures cannot see `Args`).
static VARIANT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

fn variant_wanted(label: &str) -> bool {
    VARIANT
        .get()
        .and_then(|v| v.as_deref())
        .is_none_or(|text| label.contains(text))
}

/// Runs every variant `rounds` times, reversing the order every other round.
/// A failure (e.g. a broker node stopped by someone else) drops the whole
/// scenario: it is reported under Anomalies and the run goes on.
async fn rounds(title: &str, rounds: usize, variants: &mut [Variant<'_>]) {
    for round in 0..rounds {
        let mut order: Vec<usize> = (0..variants.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let v = &mut variants[i];
            if !variant_wanted(&v.label) {
                continue;
            }
            let sample = match (v.run)().await {
                Ok(sample) => sample,
                Err(e) => {
                    report::anomaly(format!(
                        "scenario `{title}` stopped in round {} ({}): {e}; it has no result",
                        round + 1,
                        v.label
                    ));
                    for v in variants.iter_mut() {
                        v.samples.clear();
                    }
                    return;
                }
            };
            eprintln!(
                "  {title} [{}] round {}: {:.0}/s, client {:.1} µs/msg, broker {:.1} µs/msg{}",
                v.label,
                round + 1,
                sample.rate(),
                sample.cpu_us(),
                sample.broker_us(),
                match (sample.percentile_us(50.0), sample.percentile_us(99.0)) {
                    (Some(p50), Some(p99)) => format!(", p50 {p50:.0} µs, p99 {p99:.0} µs"),
                    _ => String::new(),
                }
            );
            v.samples.push(sample);
        }
    }
}

/// Pairs of variants to compare: (raw lapin index, rabbitkit index, reference).
/// A reference pair compares rabbitkit with raw lapin driven the way
/// rabbitkit drives it, to show the wrapper's own cost; it has no target.
type Pairs<'p> = &'p [(usize, usize, bool)];

/// The comparisons of a scenario: each pair, with the scenario's amqprs
/// variant (`variants[amqprs]`) as the third column, and issue 14's raw
/// lapin baseline `variants[lapin.0]` (raw lapin driven concurrently, or
/// the scenario's only raw lapin variant), named `lapin.1` in the table.
fn compare(
    scenario: &str,
    kind: Kind,
    variants: &[Variant<'_>],
    pairs: Pairs<'_>,
    amqprs: usize,
    lapin: (usize, &str),
) -> Vec<Comparison> {
    let base = &variants[lapin.0];
    let baseline = (!base.samples.is_empty()).then(|| report::Baseline {
        name: lapin.1.to_owned(),
        label: base.label.clone(),
        samples: base.samples.clone(),
    });
    let amq = &variants[amqprs];
    let amqprs = if amq.samples.is_empty() {
        report::Amqprs::Absent("not run".into())
    } else {
        report::Amqprs::Measured {
            label: amq.label.clone(),
            samples: amq.samples.clone(),
        }
    };
    pairs
        .iter()
        .filter(|&&(raw, rk, _)| {
            !variants[raw].samples.is_empty() && !variants[rk].samples.is_empty()
        })
        .map(|&(raw, rk, reference)| Comparison {
            scenario: scenario.to_owned(),
            kind,
            reference,
            raw_label: variants[raw].label.clone(),
            rk_label: variants[rk].label.clone(),
            raw: variants[raw].samples.clone(),
            rk: variants[rk].samples.clone(),
            amqprs: amqprs.clone(),
            lapin: baseline.clone(),
        })
        .collect()
}

/// A variant that runs `f` on a fresh queue named after `prefix`, then deletes it.
fn on_fresh_queue<'a, F, Fut>(ctx: &'a Ctx, label: &str, prefix: &'static str, f: F) -> Variant<'a>
where
    F: Fn(String) -> Fut + Send + Sync + Copy + 'a,
    Fut: std::future::Future<Output = Result<Sample>> + Send + 'a,
{
    Variant::new(label, move || {
        Box::pin(async move {
            let q = unique_name(prefix);
            let sample = f(q.clone()).await;
            ctx.observer.delete(&q).await?;
            sample
        })
    })
}

/// After a consume run (its connection closed): every message was
/// acknowledged, so none may be back in the queue. Reports any that are.
async fn check_empty(ctx: &Ctx, queue: &str, who: &str) -> Result<()> {
    tokio::time::sleep(Duration::from_millis(200)).await;
    let left = ctx.observer.count(queue).await?;
    if left > 0 {
        report::anomaly(format!(
            "{who}: {left} messages acknowledged by the program were back in the queue after the connection closed (acks not sent before the close)"
        ));
    }
    Ok(())
}

async fn run(args: &Args) -> Result<report::Bench> {
    entering("setup");
    rabbitkit_test::ensure_cluster();
    let addrs = rabbitkit_test::amqp_addrs();
    let url = addrs.first().ok_or("no broker address")?.clone();
    let port = rabbitkit::Endpoint::parse(&url)?.port();
    let ctx = Ctx {
        observer: raw::Observer::new(&url).await?,
        url,
        port,
        addrs,
        body: vec![b'x'; args.body],
        pids: measure::broker_pids(),
    };
    let ctx = &ctx;
    let otp = tokio::task::spawn_blocking(|| {
        rabbitkit_test::Cluster::local()
            .rabbitmqctl(1, &["eval", "erlang:system_info(otp_release)."])
            .map(|v| v.trim().trim_matches('"').to_owned())
    })
    .await
    .ok()
    .and_then(|r| r.ok())
    .unwrap_or_else(|| "?".into());
    let broker = match amq::server_version(&ctx.url).await {
        Ok(v) => format!("RabbitMQ {v} (Erlang/OTP {otp})"),
        Err(e) => format!("RabbitMQ ? ({e})"),
    };
    let mut bench = report::Bench::new(args, &broker);
    let n = args.publish;
    let window = args.window;
    let body = args.body;
    use rk::PublishApi::{Publisher, TypedSend, Unconfirmed};

    if args.wants("publish") {
        entering("publish");
        eprintln!("publish, no confirms, landed ({n} × {body} B)");
        let mut v = vec![
            on_fresh_queue(
                ctx,
                "basic_publish loop, no confirms",
                "bench.publish.raw",
                move |q| async move {
                    raw::publish(ctx, &q, QueueKind::Classic, n, raw::Publish::NoConfirms).await
                },
            ),
            on_fresh_queue(
                ctx,
                "Publisher::publish_unconfirmed loop",
                "bench.publish.rk",
                move |q| async move {
                    rk::publish(ctx, &q, QueueKind::Classic, n, window, Unconfirmed).await
                },
            ),
            on_fresh_queue(
                ctx,
                "amqprs basic_publish loop, no confirms",
                "bench.publish.amqprs",
                move |q| async move { amq::publish(ctx, &q, QueueKind::Classic, n, None).await },
            ),
        ];
        rounds("publish", args.rounds, &mut v).await;
        bench.comparisons.extend(compare(
            &format!("publish, no confirms, landed in queue ({body} B, classic)¹"),
            Kind::Throughput,
            &v,
            &[(0, 1, false)],
            2,
            (0, "lapin no-confirm loop"),
        ));
    }

    for (key, kind, label) in [
        ("confirm", QueueKind::Classic, "classic"),
        ("quorum", QueueKind::Quorum, "quorum"),
    ] {
        if !args.wants(key) {
            continue;
        }
        entering(key);
        eprintln!("publish, confirms, {window} in flight, {label} queue ({n} × {body} B)");
        let mut v = vec![
            on_fresh_queue(
                ctx,
                "basic_publish in turn, confirms pipelined",
                "bench.confirm.raw",
                move |q| async move {
                    raw::publish(ctx, &q, kind, n, raw::Publish::Confirms(window)).await
                },
            ),
            on_fresh_queue(
                ctx,
                "concurrent basic_publish futures",
                "bench.confirm.rawc",
                move |q| async move {
                    raw::publish(ctx, &q, kind, n, raw::Publish::ConcurrentConfirms(window)).await
                },
            ),
            on_fresh_queue(
                ctx,
                "Publisher::publish",
                "bench.confirm.rk",
                move |q| async move { rk::publish(ctx, &q, kind, n, window, Publisher).await },
            ),
            on_fresh_queue(
                ctx,
                "amqprs basic_publish + ChannelCallback confirms",
                "bench.confirm.amqprs",
                move |q| async move { amq::publish(ctx, &q, kind, n, Some(window)).await },
            ),
        ];
        let pairs: Pairs<'_> = if kind == QueueKind::Classic {
            v.push(on_fresh_queue(
                ctx,
                "typed Queue::send(&String)",
                "bench.confirm.typed",
                move |q| async move { rk::publish(ctx, &q, kind, n, window, TypedSend).await },
            ));
            &[(0, 2, false), (0, 4, false), (1, 2, true)]
        } else {
            &[(0, 2, false), (1, 2, true)]
        };
        rounds(key, args.rounds, &mut v).await;
        bench.comparisons.extend(compare(
            &format!("publish, confirms, {window} in flight ({body} B, {label} queue)"),
            Kind::Throughput,
            &v,
            pairs,
            3,
            (1, "lapin conc."),
        ));
    }

    if args.wants("consume") {
        let n = args.consume;
        let prefetch = DEFAULT_PREFETCH;
        entering("consume");
        eprintln!("consume, manual ack, prefetch {prefetch} ({n} pre-filled persistent messages)");
        let mut v = vec![
            on_fresh_queue(
                ctx,
                "next().await + ack().await",
                "bench.consume.raw",
                move |q| async move {
                    ctx.observer.declare(&q, QueueKind::Durable).await?;
                    raw::fill(ctx, &q, n).await?;
                    let s = raw::consume(ctx, &q, n, prefetch, raw::Consume::Inline).await;
                    check_empty(ctx, &q, "raw lapin, ack each").await?;
                    s
                },
            ),
            on_fresh_queue(
                ctx,
                "ack(multiple) every prefetch/2",
                "bench.consume.rawm",
                move |q| async move {
                    ctx.observer.declare(&q, QueueKind::Durable).await?;
                    raw::fill(ctx, &q, n).await?;
                    let s = raw::consume(ctx, &q, n, prefetch, raw::Consume::MultipleAcks).await;
                    check_empty(ctx, &q, "raw lapin, ack(multiple)").await?;
                    s
                },
            ),
            on_fresh_queue(
                ctx,
                "Client::consume + Delivery::ack",
                "bench.consume.rk",
                move |q| async move {
                    rk::declare_work_queue(ctx, &q).await?;
                    raw::fill(ctx, &q, n).await?;
                    let s = rk::consume(ctx, &q, n, rk::ConsumeApi::Core).await;
                    check_empty(ctx, &q, "rabbitkit Client::consume").await?;
                    s
                },
            ),
            on_fresh_queue(
                ctx,
                "typed WorkQueue::<String>::subscribe + ack",
                "bench.consume.typed",
                move |q| async move {
                    rk::declare_work_queue(ctx, &q).await?;
                    raw::fill(ctx, &q, n).await?;
                    let s = rk::consume(ctx, &q, n, rk::ConsumeApi::WorkQueue).await;
                    check_empty(ctx, &q, "rabbitkit WorkQueue::subscribe").await?;
                    s
                },
            ),
            on_fresh_queue(
                ctx,
                "amqprs basic_consume_rx + basic_ack",
                "bench.consume.amqprs",
                move |q| async move {
                    ctx.observer.declare(&q, QueueKind::Durable).await?;
                    raw::fill(ctx, &q, n).await?;
                    let s = amq::consume(ctx, &q, n, prefetch).await;
                    check_empty(ctx, &q, "amqprs, ack each").await?;
                    s
                },
            ),
        ];
        rounds("consume", args.rounds, &mut v).await;
        bench.comparisons.extend(compare(
            &format!(
                "consume, manual ack each, prefetch {prefetch} (`DEFAULT_PREFETCH`), pre-filled durable queue ({body} B persistent)"
            ),
            Kind::Throughput,
            &v,
            &[(0, 2, false), (0, 3, false), (1, 2, true)],
            4,
            (1, "lapin conc."),
        ));
    }

    for (key, in_flight, calls) in [
        ("rpc", 1usize, args.rpc),
        ("rpc-concurrent", args.in_flight, args.rpc_concurrent),
    ] {
        if !args.wants(key) {
            continue;
        }
        let warmup = args.warmup;
        entering(key);
        eprintln!("RPC, {in_flight} call(s) in flight ({calls} calls)");
        let raw_client = move |q: String| async move {
            if in_flight == 1 {
                raw::rpc_serial(ctx, &q, calls, warmup).await
            } else {
                raw::rpc_concurrent(ctx, &q, calls, warmup, in_flight).await
            }
        };
        let mut v = vec![
            on_fresh_queue(
                ctx,
                "raw client + raw server",
                "bench.rpc.raw",
                move |q| async move {
                    let server = raw::Server::start(&ctx.url, &q, 32).await?;
                    let s = raw_client(q).await;
                    server.stop().await;
                    s
                },
            ),
            on_fresh_queue(
                ctx,
                "RpcClient + RpcServer",
                "bench.rpc.rk",
                move |q| async move {
                    let server = rk::Server::start(ctx, &q).await?;
                    let s = rk::rpc(ctx, &q, calls, warmup, in_flight).await;
                    server.stop().await;
                    s
                },
            ),
            on_fresh_queue(
                ctx,
                "RpcClient + raw server",
                "bench.rpc.rkc",
                move |q| async move {
                    let server = raw::Server::start(&ctx.url, &q, 32).await?;
                    let s = rk::rpc(ctx, &q, calls, warmup, in_flight).await;
                    server.stop().await;
                    s
                },
            ),
            on_fresh_queue(
                ctx,
                "raw client + RpcServer",
                "bench.rpc.rks",
                move |q| async move {
                    let server = rk::Server::start(ctx, &q).await?;
                    let s = raw_client(q).await;
                    server.stop().await;
                    s
                },
            ),
            on_fresh_queue(
                ctx,
                "amqprs client + server",
                "bench.rpc.amqprs",
                move |q| async move {
                    let server = amq::Server::start(&ctx.url, &q, 32).await?;
                    let s = if in_flight == 1 {
                        amq::rpc_serial(ctx, &q, calls, warmup).await
                    } else {
                        amq::rpc_concurrent(ctx, &q, calls, warmup, in_flight).await
                    };
                    server.stop().await;
                    s
                },
            ),
        ];
        rounds(key, args.rounds, &mut v).await;
        let scenario = if in_flight == 1 {
            format!("RPC, one call at a time ({body} B echo, direct reply-to)")
        } else {
            format!("RPC, {in_flight} calls in flight ({body} B echo, direct reply-to)")
        };
        bench.comparisons.extend(compare(
            &scenario,
            Kind::Rpc {
                one_at_a_time: in_flight == 1,
            },
            &v,
            &[(0, 1, false), (0, 2, true), (0, 3, true)],
            4,
            (0, "lapin raw client"),
        ));
    }

    if args.wants("work-concurrency") {
        entering("work-concurrency");
        for concurrency in [1usize, 8, 32] {
            // About two seconds of work at the ideal rate (N × 100 tasks/s).
            let n = concurrency as u64 * if args.quick { 50 } else { 200 };
            eprintln!(
                "work queue, handler awaits 10 ms, concurrency {concurrency} = prefetch ({n} tasks)"
            );
            let mut v = vec![
                on_fresh_queue(
                    ctx,
                    "spawned tasks + semaphore + ack",
                    "bench.work.raw",
                    move |q| async move {
                        rk::declare_work_queue(ctx, &q).await?;
                        raw::fill(ctx, &q, n).await?;
                        let s = raw::work(ctx, &q, n, concurrency).await;
                        check_empty(ctx, &q, "raw lapin work queue").await?;
                        s
                    },
                ),
                on_fresh_queue(
                    ctx,
                    "WorkQueue::concurrency(N).work_until",
                    "bench.work.rk",
                    move |q| async move {
                        rk::declare_work_queue(ctx, &q).await?;
                        raw::fill(ctx, &q, n).await?;
                        let s = rk::work(ctx, &q, n, concurrency).await;
                        check_empty(ctx, &q, "rabbitkit WorkQueue::work_until").await?;
                        s
                    },
                ),
                on_fresh_queue(
                    ctx,
                    "amqprs spawned tasks + semaphore + basic_ack",
                    "bench.work.amqprs",
                    move |q| async move {
                        rk::declare_work_queue(ctx, &q).await?;
                        raw::fill(ctx, &q, n).await?;
                        let s = amq::work(ctx, &q, n, concurrency).await;
                        check_empty(ctx, &q, "amqprs work queue").await?;
                        s
                    },
                ),
            ];
            rounds("work-concurrency", args.rounds, &mut v).await;
            bench.comparisons.extend(compare(
                &format!(
                    "work queue, handler awaits a 10 ms timer, concurrency {concurrency} (ideal {} tasks/s)",
                    concurrency * 100
                ),
                Kind::Throughput,
                &v,
                &[(0, 1, false)],
                2,
                (0, "lapin tasks"),
            ));
        }
    }

    if args.wants("work-slow") {
        entering("work-slow");
        // Issue 25: 1 % of the tasks take 100 times longer (1 s, not
        // 10 ms), at concurrency 8 and prefetch 20. A slow task must hold
        // up nothing but its own handler: the rate should reach what 8
        // handlers can do with that mix (the ideal below), not collapse.
        let (prefetch, concurrency) = (20u16, 8usize);
        let n: u64 = if args.quick { 800 } else { 2000 };
        let mut v = vec![
            on_fresh_queue(
                ctx,
                "WorkQueue, every task 10 ms",
                "bench.work.even",
                move |q| async move {
                    rk::declare_work_queue(ctx, &q).await?;
                    raw::fill(ctx, &q, n).await?;
                    let s = rk::work_mixed(ctx, &q, n, (prefetch, concurrency), None).await;
                    check_empty(ctx, &q, "rabbitkit WorkQueue, even tasks").await?;
                    s
                },
            ),
            on_fresh_queue(
                ctx,
                "WorkQueue, 1 % of tasks 1 s",
                "bench.work.slow",
                move |q| async move {
                    rk::declare_work_queue(ctx, &q).await?;
                    raw::fill(ctx, &q, n).await?;
                    let s = rk::work_mixed(ctx, &q, n, (prefetch, concurrency), Some(100)).await;
                    check_empty(ctx, &q, "rabbitkit WorkQueue, 1 % slow tasks").await?;
                    s
                },
            ),
        ];
        rounds("work-slow", args.rounds, &mut v).await;
        let rate = |variant: &Variant<'_>| {
            let rates: Vec<f64> = variant.samples.iter().map(|s| s.rate()).collect();
            rates.iter().sum::<f64>() / rates.len().max(1) as f64
        };
        let (even, slow) = (rate(&v[0]), rate(&v[1]));
        // With 8 handlers, the mean task time is 0.99 × 10 ms + 0.01 × 1 s
        // = 19.9 ms against 10 ms: no scheduler does better than 10 / 19.9.
        let ideal = 10.0 / 19.9;
        println!(
            "work queue, concurrency {concurrency}, prefetch {prefetch}, {n} tasks: every task 10 ms {even:.0} tasks/s; \
             1 % of tasks 1 s {slow:.0} tasks/s: {:.2}x (the best 8 handlers can do with that mix: {ideal:.2}x, {:.0} % of it reached)",
            slow / even,
            100.0 * (slow / even) / ideal
        );
    }

    if args.wants("delay") {
        entering("delay");
        let (n, k, longest) = if args.quick {
            (500, 10, Duration::from_secs(5))
        } else {
            (args.publish / 5, 200, Duration::from_secs(60))
        };
        eprintln!(
            "delayed publish: {n} confirmed, plain vs delayed; then {k} delays of 1–{} s, lateness",
            longest.as_secs()
        );
        bench.delay = Some(
            delay::run(ctx, n, window, args.rounds, k, longest)
                .await
                .map_err(|e| e.to_string()),
        );
    }

    if args.wants("retry") {
        entering("retry");
        let n = if args.quick { 200 } else { 2_000 };
        eprintln!("retry: {n} tasks failing once, delay levels vs the queue's delayed retry");
        bench.retry = Some(
            retry::run(ctx, n, args.rounds)
                .await
                .map_err(|e| e.to_string()),
        );
    }

    for scenario in ["partitions", "streams"] {
        if !args.wants(scenario) {
            continue;
        }
        entering(scenario);
        eprintln!("{scenario}: {n} confirmed by 3 clients, then read, vs one quorum queue");
        bench.beyond.push(
            beyond::run(ctx, scenario, n, window, args.rounds)
                .await
                .map_err(|e| format!("{scenario}: {e}")),
        );
    }

    if args.wants("stream-protocol") {
        entering("stream-protocol");
        eprintln!(
            "stream-protocol: {n} confirmed by one named producer, then read; rabbitkit-stream vs raw"
        );
        bench.stream_protocol = Some(
            stream_protocol::run(ctx, n, window, args.rounds)
                .await
                .map_err(|e| format!("stream-protocol: {e}")),
        );
    }

    if args.wants("stream-failover") && args.failover.rounds > 0 {
        if rabbitkit_test::using_external_broker() {
            bench.stream_failover =
                Some(Err("skipped: AMQP_ADDR points at an external broker".into()));
        } else {
            entering("stream-failover");
            eprintln!(
                "stream-failover: {} kills of the stream leader's node under a named producer",
                args.failover.rounds
            );
            let outcome = stream_failover::run(20_000, 500, args.failover.rounds).await;
            let _ = tokio::task::spawn_blocking(|| rabbitkit_test::Cluster::local().up()).await;
            bench.stream_failover = Some(outcome.map_err(|e| format!("stream-failover: {e}")));
        }
    }

    if args.wants("failover") && args.failover.rounds > 0 {
        if rabbitkit_test::using_external_broker() {
            bench.failover = Some(Err("skipped: AMQP_ADDR points at an external broker".into()));
        } else {
            entering("failover");
            eprintln!(
                "failover: {} kills of the connected node, quorum queue, {} msgs/s",
                args.failover.rounds, args.failover.rate
            );
            let outcome = failover::run(ctx, &args.failover).await;
            // Whatever happened, leave the whole cluster running.
            let _ = tokio::task::spawn_blocking(|| rabbitkit_test::Cluster::local().up()).await;
            bench.failover = Some(outcome.map_err(|e| e.to_string()));
        }
    }
    Ok(bench)
}

fn main() -> ExitCode {
    let given: Vec<String> = std::env::args().skip(1).collect();
    let args = Args::parse(given);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let _ = VARIANT.set(args.variant.clone());
    let busy_before = report::busy_processes();
    if !busy_before.is_empty() {
        eprintln!(
            "warning: other builds or tests are running ({}): the numbers will be disturbed",
            busy_before.join(", ")
        );
    }
    // Looks for other builds and tests every 2 s while the benchmark runs.
    let before: Vec<String> = busy_before
        .iter()
        .map(|name| format!("{name} (at the start)"))
        .collect();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(before));
    std::thread::spawn({
        let seen = seen.clone();
        move || {
            loop {
                std::thread::sleep(Duration::from_secs(2));
                let now = report::busy_processes();
                let scenario = SCENARIO.lock().unwrap().clone();
                let mut seen = seen.lock().unwrap();
                for name in now {
                    let entry = format!("{name} (during `{scenario}`)");
                    if !seen.contains(&entry) {
                        eprintln!("warning: {entry}: the numbers will be disturbed");
                        seen.push(entry);
                    }
                }
            }
        }
    });
    // The scenarios run in a spawned task, on the runtime's worker threads,
    // as application code usually does (not on the thread that blocks).
    let bench = runtime.block_on({
        let args = args.clone();
        async move { tokio::spawn(async move { run(&args).await.map_err(|e| e.to_string()) }).await }
    });
    let bench = match bench {
        Ok(outcome) => outcome.map_err(BoxError::from),
        Err(e) => Err(BoxError::from(format!("the benchmark task failed: {e}"))),
    };
    let mut bench = match bench {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    bench.busy = seen.lock().unwrap().clone();
    bench.busy.extend(
        report::busy_processes()
            .into_iter()
            .map(|n| format!("{n} (at the end)")),
    );
    bench.busy.sort();
    bench.busy.dedup();
    let text = report::render(&bench);
    print!("{text}");
    if let Some(path) = &args.write {
        let path = report::workspace_path(path);
        let old = std::fs::read_to_string(&path).ok();
        let merged = report::merge(old.as_deref(), &text);
        if let Err(e) = std::fs::write(&path, merged) {
            eprintln!("error: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        eprintln!("wrote {}", path.display());
    }
    ExitCode::SUCCESS
}
