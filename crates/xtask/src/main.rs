//! Developer commands for rabbitkit: `cargo xtask <command>`.
//!
//! Run `cargo xtask help` for the list. The command line is parsed by clap
//! (derive); the broker control lives in the `rabbitkit-test` crate so tests
//! and commands share it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use clap::{Parser, Subcommand};
use rabbitkit_test::{
    Cluster, LoadBalancer, Netsplit, PartitionHandling, RabbitMq, VERSION_ENV,
    using_external_broker,
};

mod api;
mod book;
mod outside_app;
mod prose;
mod tools;

/// Developer commands for rabbitkit.
///
/// The local broker is a 3-node RabbitMQ cluster (rabbit1@localhost to
/// rabbit3@localhost, AMQP on 127.0.0.1:5672-5674, TLS on 5671 (and the
/// stream protocol over TLS on 5551), mutual TLS
/// with the EXTERNAL mechanism on 5676 (node 2)), installed
/// by `broker up` (and by test, demo, bench and soak, which bring it up;
/// needs root): RabbitMQ 4.3 by default (Debian unstable's package, run
/// from a debootstrap chroot under /var/tmp/rabbitkit-rootfs), or the
/// version given with --rabbitmq. Tests never install it.
///
/// Every command takes `--rabbitmq 4.3|4.0|3.10` (also
/// RABBITKIT_RABBITMQ=...; before the arguments passed on to another
/// program): 3.10 is Debian 12's own package, 4.0 Debian 13's (chroot).
/// Versions share node names and ports, so one runs at a time: `up` stops
/// the other. Without it, commands act on the version that is running, or
/// 4.3.
#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    arg_required_else_help = true,
    after_help = ENVIRONMENT,
    after_long_help = ENVIRONMENT
)]
struct Cli {
    /// The RabbitMQ version of the local cluster: 4.3, 4.0 or 3.10.
    #[arg(long, global = true, value_name = "VERSION")]
    rabbitmq: Option<RabbitMq>,
    #[command(subcommand)]
    command: Task,
}

const ENVIRONMENT: &str = "\
Environment:
  AMQP_ADDR              Use this broker (one URL or a comma-separated list)
                         instead of the local cluster, which is then never
                         started by test/demo/bench.
  RABBITKIT_CLUSTER_DIR  Where the local cluster keeps its files
                         (default /var/tmp/rabbitkit-cluster).
  RABBITKIT_RABBITMQ     The version, as --rabbitmq.
  RABBITKIT_NO_INSTALL   test installs nothing (pika, rstream, nginx,
                         iptables, openssl): the tests that need what is
                         missing are reported as skipped.
  PYTHON                 The Python (with pika and rstream) for the tests
                         that run Python programs, instead of test's own
                         venv, target/python-venv.";

#[derive(Debug, Subcommand)]
enum Task {
    /// Manage the local cluster: up, down, status, kill N, stop N, start N, ctl N ARGS.
    #[command(subcommand)]
    Broker(BrokerTask),
    /// nginx (stream module) in front of the local cluster: up, down, status.
    #[command(subcommand)]
    Lb(LbTask),
    /// A second, partitionable cluster (network namespaces rk-n1..3 on
    /// bridge rk-br0, nodes rabbit@rkn1..3 on 10.77.0.11-13:5672): up,
    /// down, status, cut N, heal. Never touches the shared cluster. Needs
    /// root, iproute2 and iptables.
    #[command(subcommand)]
    Netsplit(NetsplitTask),
    /// Install what the tests need, bring the cluster up, then run the
    /// whole test suite.
    ///
    /// 0. what is missing, installed on first use (as `broker up` installs
    ///    RabbitMQ): Python with pika (`pika>=1.3,<2`) and rstream
    ///    (`rstream>=1.1,<2`, the stream tutorials' client) in a virtual
    ///    environment of the workspace's own, `target/python-venv`
    ///    (`python3 -m venv`, then pip; never the system's site-packages),
    ///    exported as PYTHON to every step below; with root, `apt-get
    ///    install --no-install-recommends` of nginx-light and
    ///    libnginx-mod-stream (a temporary policy-rc.d keeps the system's
    ///    nginx from starting), iptables and iproute2, openssl, and
    ///    python3-venv when `python3 -m venv` cannot work. One line says
    ///    what is installed. What cannot be (not root, apt-get or pip
    ///    failed, RABBITKIT_NO_INSTALL set; a PYTHON of your own without
    ///    pika or rstream) is printed with the reason, and the tests that
    ///    need it are filtered out of the runs below: nextest reports them as skipped
    ///
    /// 1. `cargo nextest run --workspace --all-targets --no-fail-fast
    ///    -E 'not binary(failover) and not binary(netsplit)' ARGS`
    ///
    /// 2. the tests of the optional features, in a build with them:
    ///    `cargo nextest run -p rabbitkit-suite -p rabbitkit-core
    ///    --features rabbitkit-suite/opentelemetry,rabbitkit-suite/metrics
    ///    -j 1 --lib --test tracing --test metrics ARGS` (the main run keeps
    ///    the default build; one test at a time, as one of them kills the
    ///    client's node — skipped, reported as such, with AMQP_ADDR)
    ///
    /// 3. if a `failover` test binary exists, its tests alone, one at a
    ///    time (they kill nodes): `cargo nextest run --workspace
    ///    -E 'binary(failover)' -j 1 --no-fail-fast ARGS`
    ///
    /// 4. if a `netsplit` test binary exists and can run here (root,
    ///    iproute2, iptables, the version installed, no AMQP_ADDR), its
    ///    tests alone, one at a time, on a partitionable cluster of their
    ///    own: `cargo nextest run --workspace -E 'binary(netsplit)' -j 1
    ///    --no-fail-fast ARGS`; step 1 lists and filters them out, so
    ///    nextest counts them as skipped there
    ///
    /// 5. the short chaos run, alone (it kills nodes): `cargo run -p
    ///    rabbitkit-chaos -- --seed 1 --seconds 60 --events 4` (see
    ///    `chaos`); skipped, with the reason, when AMQP_ADDR is set. Its
    ///    last line says how many of its invariants held, e.g.
    ///    `chaos: 5 passed, 0 failed`
    ///
    /// 6. `cargo test --workspace --doc`, then the doc tests of
    ///    rabbitkit-core and rabbitkit with those features
    ///
    /// ARGS go to every nextest run (name filters narrow them, e.g.
    /// `cargo xtask test -- tutorial_programs a_pika`; a NEXTEST_PROFILE
    /// such as `ci` is honoured). With AMQP_ADDR set, the tests that
    /// control the local cluster (binaries `failover` and `local_cluster`)
    /// or inspect it with rabbitmqctl (rpc and temporary_queues, one each)
    /// are filtered out: nextest reports them as skipped; so are the
    /// consistent-hash tests (`partitioned`, the examples' tutorial run)
    /// when the broker's management API (port 15672) says it lacks the
    /// plugin. Without pika and rstream, the four tests that run Python
    /// programs are skipped the same way; without nginx (and its stream module), the
    /// failover tests through nginx (`through_nginx` in their names); without
    /// iptables, the netsplit tests. On RabbitMQ 3.10 (`--rabbitmq 3.10`),
    /// the tests of stream features from 3.11 and 3.13 (names ending
    /// `_since_3_11`, `_since_3_13`, and the `super_streams` binary).
    Test(PassOn),
    /// Bring the cluster up, then `cargo run --quiet --example demo -- [ARGS]`.
    Demo(PassOn),
    /// Bring the cluster up, then `cargo run --release -p rabbitkit-bench -- [ARGS]`.
    ///
    /// E.g. `cargo xtask bench --only consume --rounds 2`;
    /// `cargo xtask bench -- --help` shows the bench's own options.
    Bench(PassOn),
    /// Bring the cluster up, then run the soak program.
    ///
    /// Default: 10 minutes, the connected node SIGKILLed every 30 s;
    /// `cargo xtask soak -- --minutes 2 --kill-every 20`;
    /// `cargo xtask soak -- --cut-every 25` cuts the connection through a
    /// proxy instead of killing a node;
    /// `cargo xtask soak -- --help` shows its options.
    Soak(PassOn),
    /// The Jepsen-style run on a partitionable cluster of its own.
    ///
    /// `cargo run -p rabbitkit-jepsen -- [ARGS]` (a debug build: the run
    /// measures correctness, not speed). Confirmed publishing and consuming
    /// while a nemesis partitions a random node; reports confirmed, lost,
    /// duplicated and stuck time. E.g. `cargo xtask jepsen --rabbitmq 3.10
    /// -- --partition-handling autoheal --partitions 20`;
    /// `cargo xtask jepsen -- --help` shows its options. Needs root,
    /// iproute2, iptables; never touches the shared cluster.
    Jepsen(PassOn),
    /// Bring the cluster up, then the chaos run: `cargo run -p
    /// rabbitkit-chaos -- [ARGS]`.
    ///
    /// A seeded workload (a work queue, a router on a topic exchange, a
    /// partitioned queue with two instances; handlers fast, slow, flaky,
    /// failing, panicking) while a seeded nemesis kills and restarts nodes,
    /// cuts the workers' connections and (RabbitMQ 4.3) sets a
    /// consumer-timeout policy for a while; then five invariants are
    /// checked and printed as a table (exit status 1 if one fails). A debug
    /// build: the run checks correctness, not speed, and `cargo xtask test`
    /// has built its dependencies already. E.g. `cargo xtask chaos --
    /// --seed 7 --seconds 60 --events 4`; `cargo xtask chaos -- --help`
    /// shows its options. Leaves the cluster with its three nodes running.
    Chaos(PassOn),
    /// Check the book's includes, then build it.
    ///
    /// Checks that every `{{#include file:anchor}}` of the book (docs/src)
    /// names an existing file and anchor, then builds it: `mdbook build
    /// docs` (installs mdBook 0.4.52 with `cargo install --locked` when it
    /// is missing).
    Book,
    /// Write the public items of rabbitkit and rabbitkit-core to
    /// api/rabbitkit.txt and api/rabbitkit-core.txt.
    ///
    /// Read from the sources with syn (every `pub` item, with its
    /// signature). A unit test of xtask fails when the checked-in lists
    /// differ from the sources: after a deliberate change of the public
    /// API, run this and say the change in CHANGELOG.md.
    Api,
    /// A fresh application outside the workspace that depends on rabbitkit
    /// by path (default features, as a user would), built and run.
    ///
    /// `cargo new` in the system's temp directory (its Cargo.toml gets an
    /// empty `[workspace]`), `cargo add` of rabbitkit (path), futures and
    /// tokio; a worker and a publisher made from README's "A taste"
    /// snippet; built (target dir `target/outside-app`), then the worker
    /// is started, the publisher sends, and the worker must receive the
    /// message and exit 0 (AMQP_ADDR, or the local cluster's node 1, which
    /// is brought up). With `--measure`, also a cold build of it and of a
    /// raw lapin application in fresh target directories: compile time and
    /// dependency count (the figures of BENCHMARKS.md).
    OutsideApp {
        /// Also measure cold builds of this app and of a raw lapin app.
        #[arg(long)]
        measure: bool,
    },
}

/// Arguments passed on, untouched, to the program a command runs (a
/// leading `--` is dropped).
#[derive(Debug, clap::Args)]
struct PassOn {
    /// Passed on to the program.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    args: Vec<String>,
}

/// `cargo xtask lb ...`: one URL for the cluster, through nginx.
#[derive(Debug, Subcommand)]
enum LbTask {
    /// Start nginx with crates/rabbitkit-test/nginx/rabbitmq-lb.conf: one
    /// URL, amqp://guest:guest@127.0.0.1:5680/%2f, for the cluster. Its pid
    /// file and log are under the cluster's directory (nginx/); the
    /// system's nginx is not touched. Needs `apt-get install nginx-light
    /// libnginx-mod-stream`.
    Up,
    /// Stop it.
    Down,
    /// Say whether it runs.
    Status,
}

/// `cargo xtask netsplit ...`: the partitionable cluster.
#[derive(Debug, Subcommand)]
enum NetsplitTask {
    /// Tear down what is left of a previous one, build the network, start
    /// three fresh nodes and join them (about 30 s); it keeps running
    /// until `down`.
    Up {
        /// `cluster_partition_handling` of RabbitMQ 3.10 (ignore,
        /// pause_minority, autoheal); RabbitMQ 4 ignores it.
        #[arg(long, default_value = "ignore", value_name = "MODE")]
        partition_handling: PartitionHandling,
    },
    /// Kill its nodes and epmds, delete the namespaces, the bridge and
    /// the /etc/hosts lines.
    Down,
    /// Show the nodes, the membership as the nodes see it, and the cuts.
    Status,
    /// Cut node N off from the other nodes (or, with --clients, from the
    /// clients on the host).
    Cut {
        #[command(flatten)]
        node: NodeArg,
        /// Cut it from the clients instead of from the other nodes.
        #[arg(long)]
        clients: bool,
    },
    /// Remove every cut.
    Heal,
}

#[derive(Debug, Subcommand)]
enum BrokerTask {
    /// Install RabbitMQ if missing, start the nodes that are not running,
    /// join them into one cluster, repair a broken one. A no-op when the
    /// cluster is already up.
    Up,
    /// Stop every node (gracefully, then SIGKILL leftovers). Data is kept:
    /// the next `up` restarts the same cluster.
    Down,
    /// Show the version, each node (state, pid) and the cluster membership.
    Status,
    /// SIGKILL node N; waits until its port closes.
    Kill(NodeArg),
    /// Stop node N gracefully (rabbitmqctl stop).
    Stop(NodeArg),
    /// Start node N; it rejoins the cluster by itself.
    Start(NodeArg),
    /// Run `rabbitmqctl -n rabbitN@localhost ARGS` for the running version
    /// (in its chroot for RabbitMQ 4), e.g.
    /// `cargo xtask broker ctl 1 list_queues name consumers`.
    Ctl {
        #[command(flatten)]
        node: NodeArg,
        /// The arguments of rabbitmqctl.
        #[arg(
            required = true,
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "ARGS"
        )]
        args: Vec<String>,
    },
}

#[derive(Debug, clap::Args)]
struct NodeArg {
    /// The node: 1, 2 or 3.
    #[arg(value_name = "N", value_parser = clap::value_parser!(u8).range(1..=3))]
    node: u8,
}

impl NodeArg {
    fn n(&self) -> usize {
        usize::from(self.node)
    }
}

/// Exit status of `cargo nextest run` when tests ran and some failed (any
/// other failure, such as a build error, stops `cargo xtask test`).
const NEXTEST_TESTS_FAILED: i32 = 100;

/// What `cargo xtask test --rabbitmq 3.10` filters out (nextest reports
/// it skipped): the tests of stream features from 3.11 (super streams,
/// single active consumer for streams) and 3.13 (filtering, declaring
/// super streams). rabbitkit-stream's other tests run on 3.10.
const STREAM_PROTOCOL_3_10: &[&str] = &[
    "test(/_since_3_11$/)",
    "test(/_since_3_13$/)",
    "binary(super_streams)",
];

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("xtask: error: {err}");
            ExitCode::FAILURE
        }
    }
}

type Result<T> = std::result::Result<T, String>;

fn dispatch(cli: Cli) -> Result<ExitCode> {
    set_version(cli.rabbitmq)?;
    match cli.command {
        Task::Broker(task) => broker(task).map(|()| ExitCode::SUCCESS),
        Task::Lb(task) => lb(task).map(|()| ExitCode::SUCCESS),
        Task::Netsplit(task) => netsplit(task).map(|()| ExitCode::SUCCESS),
        Task::Test(extra) => test(extra.args()),
        Task::Demo(extra) => demo(extra.args()),
        Task::Bench(extra) => bench(extra.args()),
        Task::Soak(extra) => soak(extra.args()),
        Task::Jepsen(extra) => jepsen(extra.args()),
        Task::Chaos(extra) => chaos(extra.args()),
        Task::Book => book::book(),
        Task::Api => api::write(&Metadata::load()?.root).map(|()| ExitCode::SUCCESS),
        Task::OutsideApp { measure } => outside_app::run(measure),
    }
}

impl PassOn {
    /// The arguments, without a leading `--` (`cargo xtask soak -- --minutes 2`).
    fn args(&self) -> &[String] {
        match self.args.as_slice() {
            [first, rest @ ..] if first == "--" => rest,
            all => all,
        }
    }
}

/// Exports the version given with `--rabbitmq` as `RABBITKIT_RABBITMQ`,
/// which `Cluster::local` and the test processes read; without it, checks
/// the variable's value.
fn set_version(version: Option<RabbitMq>) -> Result<()> {
    match version {
        // SAFETY: single-threaded at this point; nothing else reads the
        // environment concurrently.
        Some(v) => unsafe { std::env::set_var(VERSION_ENV, v.label()) },
        None => {
            RabbitMq::from_env().map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

// ----- broker ------------------------------------------------------------

/// `cargo xtask lb up|down|status`: nginx in front of the local cluster.
fn lb(task: LbTask) -> Result<()> {
    match task {
        LbTask::Up => {
            let lb = LoadBalancer::start().map_err(|e| e.to_string())?;
            println!(
                "nginx listens on {} for the local cluster (log: {})",
                lb.url().replace(":guest@", ":***@"),
                LoadBalancer::prefix().join("error.log").display()
            );
            lb.keep();
            Ok(())
        }
        LbTask::Down => {
            LoadBalancer::stop_running().map_err(|e| e.to_string())?;
            eprintln!("xtask: nginx stopped");
            Ok(())
        }
        LbTask::Status => {
            if LoadBalancer::is_running() {
                println!(
                    "nginx is running (prefix {})",
                    LoadBalancer::prefix().display()
                );
            } else {
                println!("nginx is not running");
            }
            Ok(())
        }
    }
}

/// `cargo xtask netsplit up|down|status|cut N|heal`.
fn netsplit(task: NetsplitTask) -> Result<()> {
    let err = |e: rabbitkit_test::ClusterError| e.to_string();
    match task {
        NetsplitTask::Up { partition_handling } => {
            let version = RabbitMq::from_env().map_err(err)?.unwrap_or_default();
            version.install().map_err(err)?;
            let netsplit = Netsplit::up(version, partition_handling).map_err(err)?;
            println!("{}", netsplit.cluster().status().map_err(err)?);
            for n in Cluster::nodes() {
                println!("node {n}: {}", netsplit.amqp_url(n));
            }
            netsplit.keep();
            Ok(())
        }
        NetsplitTask::Down => {
            Netsplit::teardown().map_err(err)?;
            eprintln!("xtask: partitionable cluster torn down");
            Ok(())
        }
        NetsplitTask::Status => {
            if !Netsplit::is_set_up() {
                println!("no partitionable cluster is set up");
                return Ok(());
            }
            let versions = match RabbitMq::from_env().map_err(err)? {
                Some(v) => vec![v],
                None => RabbitMq::ALL.to_vec(),
            };
            for version in versions {
                let cluster = Netsplit::cluster_for(version, PartitionHandling::default());
                if Cluster::nodes().all(|n| cluster.pid(n).is_none()) {
                    continue;
                }
                // Each node's own view: the sides of a partition disagree.
                for n in Cluster::nodes() {
                    match cluster.rabbitmqctl(n, &["cluster_status", "--formatter", "json"]) {
                        Ok(out) => {
                            let json = out.find('{').map_or("", |i| &out[i..]);
                            let v: serde_json::Value =
                                serde_json::from_str(json.trim()).unwrap_or_default();
                            println!(
                                "{} (RabbitMQ {version}): running {} partitions {}",
                                cluster.node_name(n),
                                v["running_nodes"],
                                v["partitions"]
                            );
                        }
                        Err(e) => println!(
                            "{}: {}",
                            cluster.node_name(n),
                            e.to_string().lines().next().unwrap_or("")
                        ),
                    }
                }
            }
            for (n, dropped) in Netsplit::cuts() {
                if !dropped.is_empty() {
                    let list: Vec<String> = dropped.iter().map(|a| a.to_string()).collect();
                    println!("node {n} drops packets from {}", list.join(", "));
                }
            }
            Ok(())
        }
        NetsplitTask::Cut { node, clients } => {
            if clients {
                Netsplit::cut_from_clients(node.n()).map_err(err)
            } else {
                Netsplit::cut(node.n()).map_err(err)
            }
        }
        NetsplitTask::Heal => Netsplit::heal().map_err(err),
    }
}

fn broker(task: BrokerTask) -> Result<()> {
    let cluster = Cluster::local();
    match task {
        BrokerTask::Ctl { node, args } => {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = cluster
                .rabbitmqctl(node.n(), &args)
                .map_err(|e| e.to_string())?;
            print!("{out}");
            Ok(())
        }
        BrokerTask::Up => {
            eprintln!(
                "xtask: bringing up the local RabbitMQ {} cluster under {}",
                cluster.version(),
                cluster.base_dir().display()
            );
            tools::ensure_openssl();
            cluster.install().map_err(|e| e.to_string())?;
            cluster.up().map_err(|e| e.to_string())?;
            print_status(&cluster)
        }
        BrokerTask::Down => {
            cluster.down().map_err(|e| e.to_string())?;
            eprintln!("xtask: all nodes stopped");
            Ok(())
        }
        BrokerTask::Status => print_status(&cluster),
        BrokerTask::Kill(node) => {
            cluster.kill(node.n()).map_err(|e| e.to_string())?;
            eprintln!("xtask: {} killed", cluster.node_name(node.n()));
            Ok(())
        }
        BrokerTask::Stop(node) => {
            cluster.stop(node.n()).map_err(|e| e.to_string())?;
            eprintln!("xtask: {} stopped", cluster.node_name(node.n()));
            Ok(())
        }
        BrokerTask::Start(node) => {
            cluster.start(node.n()).map_err(|e| e.to_string())?;
            eprintln!("xtask: {} started", cluster.node_name(node.n()));
            Ok(())
        }
    }
}

fn print_status(cluster: &Cluster) -> Result<()> {
    let status = cluster.status().map_err(|e| e.to_string())?;
    println!("{status}");
    Ok(())
}

/// Brings the local cluster up unless `AMQP_ADDR` points elsewhere.
fn ensure_broker() -> Result<()> {
    if using_external_broker() {
        eprintln!(
            "xtask: using the broker from AMQP_ADDR: {}",
            rabbitkit_test::amqp_addrs().join(", ")
        );
        return Ok(());
    }
    tools::ensure_openssl();
    let cluster = Cluster::local();
    eprintln!(
        "xtask: making sure the local RabbitMQ {} cluster is up ({})",
        cluster.version(),
        cluster.base_dir().display()
    );
    cluster
        .install()
        .and_then(|()| cluster.up())
        .map_err(|e| format!("cannot bring up the local cluster: {e}"))
}

// ----- test, demo, bench --------------------------------------------------

/// Test binaries that need a cargo feature of the root package (they are
/// empty without it), and that feature: `cargo xtask test` runs them in a
/// build with these features on, after the main run.
const FEATURE_TESTS: &[(&str, &str)] = &[("tracing", "opentelemetry"), ("metrics", "metrics")];

fn test(extra: &[String]) -> Result<ExitCode> {
    let metadata = Metadata::load()?;
    let external = using_external_broker();

    // What the tests need besides the broker, installed when missing.
    let mut needs = vec![];
    let pika_tests = tools::PIKA_TESTS
        .iter()
        .any(|(binary, _)| metadata.has_test_target(binary));
    if pika_tests {
        needs.push(tools::Need::Pika);
    }
    if !external && metadata.has_test_target("failover") {
        needs.push(tools::Need::Nginx);
    }
    if !external && metadata.has_test_target("netsplit") {
        needs.push(tools::Need::Netsplit);
    }
    let setup = tools::prepare(&needs, &metadata.target_dir);
    if let Some(why) = setup.missing(tools::Need::Pika) {
        eprintln!("xtask: {why}: the tests that run Python programs are skipped");
    }
    // Every cargo step below: PYTHON names the venv's interpreter.
    let cargo = |root: &Path| {
        let mut cmd = cargo(root);
        if let Some(python) = &setup.python {
            cmd.env("PYTHON", python);
        }
        cmd
    };

    ensure_broker()?;

    let mut failures = Failures::default();
    // Tests that kill or reconfigure the local cluster cannot run against
    // another broker: filtered out, nextest counts them as skipped.
    let mut excluded = vec![];
    if external {
        eprintln!(
            "xtask: AMQP_ADDR is set: the `failover` and `local_cluster` tests control the \
             local cluster, and {} inspect it with rabbitmqctl: they are skipped",
            tools::LOCAL_CTL_TESTS
                .iter()
                .map(|(binary, name)| format!("{binary}::{name}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        excluded.push(tools::exact(tools::LOCAL_CTL_TESTS));
        // The local cluster runs the consistent-hash plugin; another broker
        // may not: asked of its management API, when it has one, else of
        // the broker itself over AMQP.
        let first = rabbitkit_test::amqp_addrs().into_iter().next();
        let needing =
            "the `partitioned` tests and examples::every_tutorial_program_works_as_the_book_says";
        let asked = first.as_deref().map(|url| {
            tools::has_consistent_hash(url).or_else(|management| {
                tools::amqp_has_consistent_hash(url)
                    .map_err(|amqp| format!("{management}; over AMQP: {amqp}"))
            })
        });
        match asked {
            Some(Ok(true)) => {}
            Some(Ok(false)) => {
                eprintln!(
                    "xtask: the broker of AMQP_ADDR has no x-consistent-hash exchange type \
                     (plugin rabbitmq_consistent_hash_exchange): {needing} are skipped"
                );
                excluded.push(tools::CONSISTENT_HASH_TESTS.to_owned());
            }
            Some(Err(why)) => eprintln!(
                "xtask: cannot tell whether the broker of AMQP_ADDR has the consistent-hash \
                 plugin ({why}): {needing} need it and fail without it"
            ),
            None => {}
        }
    }
    excluded.extend(setup.excluded(true, false));
    // Stream-protocol features newer than the broker: single active
    // consumer for streams and super streams (3.11). Listed, then filtered
    // out: nextest reports them as skipped.
    let on_3_10 = !external
        && RabbitMq::from_env()
            .map_err(|e| e.to_string())?
            .unwrap_or_default()
            == RabbitMq::V3_10;
    if on_3_10 {
        eprintln!(
            "xtask: RabbitMQ 3.10: the tests of stream features from 3.11 and 3.13 (`_since_3_11`, `_since_3_13`, \
             the `super_streams` binary) are skipped"
        );
        excluded.extend(STREAM_PROTOCOL_3_10.iter().map(|f| f.to_string()));
    }
    let filter = tools::main_filter(external, &excluded);

    let mut main = cargo(&metadata.root);
    main.args([
        "nextest",
        "run",
        "--workspace",
        "--all-targets",
        "--no-fail-fast",
        "--no-tests=warn",
        "-E",
        &filter,
    ])
    .args(extra);
    let code = run_step("tests", main)?;
    failures.record("tests", code);
    if code != 0 && code != NEXTEST_TESTS_FAILED {
        return Ok(failures.finish());
    }

    // The tests of the optional features, in a build with those features
    // (the main run keeps the default build: its allocation guard measures
    // the hot path as users get it).
    let binaries: Vec<&str> = FEATURE_TESTS
        .iter()
        .map(|(binary, _)| *binary)
        .filter(|binary| metadata.has_test_target(binary))
        .collect();
    if !binaries.is_empty() {
        let features: Vec<String> = FEATURE_TESTS
            .iter()
            .map(|(_, feature)| format!("rabbitkit-suite/{feature}"))
            .collect();
        let mut featured = cargo(&metadata.root);
        // rabbitkit-core's unit tests too: those of its feature code.
        featured.args([
            "nextest",
            "run",
            "-p",
            "rabbitkit-suite",
            "-p",
            "rabbitkit-core",
            "--features",
            &features.join(","),
            "--no-fail-fast",
            "--no-tests=warn",
            // One test at a time: one of them kills a node.
            "-j",
            "1",
            "--lib",
        ]);
        for binary in &binaries {
            featured.args(["--test", binary]);
        }
        let mut excluded = setup.excluded(true, false);
        if external {
            // The node-killing test controls the local cluster: listed,
            // then filtered out, so nextest reports it as skipped.
            excluded.push("test(/node_kill/)".to_owned());
        }
        if !excluded.is_empty() {
            featured.args(["-E", &tools::without("all()", &excluded)]);
        }
        featured.args(extra);
        let code = run_step("feature tests (opentelemetry, metrics)", featured)?;
        failures.record("feature tests", code);
        if code != 0 && code != NEXTEST_TESTS_FAILED {
            return Ok(failures.finish());
        }
    }

    if external {
        eprintln!("xtask: AMQP_ADDR is set: the serial `failover` run is skipped");
    } else if metadata.has_test_target("failover") {
        ensure_broker()?;
        // The tests through nginx need it: without it they are filtered
        // out, and nextest counts them as skipped (not passed).
        if let Some(why) = setup.missing(tools::Need::Nginx) {
            eprintln!("xtask: {why}: the failover tests through nginx are skipped");
        }
        let mut failover_excluded = setup.excluded(false, true);
        if on_3_10 {
            failover_excluded.extend(STREAM_PROTOCOL_3_10.iter().map(|f| f.to_string()));
        }
        let filter = tools::without("binary(failover)", &failover_excluded);
        let mut failover = cargo(&metadata.root);
        failover
            .args([
                "nextest",
                "run",
                "--workspace",
                "--no-fail-fast",
                "--no-tests=pass",
                "-j",
                "1",
                "-E",
                &filter,
            ])
            .args(extra);
        let code = run_step("failover tests (serial)", failover)?;
        failures.record("failover tests", code);
        if code != 0 && code != NEXTEST_TESTS_FAILED {
            return Ok(failures.finish());
        }
        // The failover tests kill nodes; leave a whole cluster behind.
        ensure_broker()?;
    } else {
        eprintln!("xtask: no `failover` test binary in the workspace; skipping the serial run");
    }

    // The netsplit tests build a partitionable cluster of their own (network
    // namespaces, iptables): alone, one at a time, where they can run.
    let version = RabbitMq::from_env()
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    let cannot = if external {
        Some("AMQP_ADDR is set".to_owned())
    } else if let Some(why) = setup.missing(tools::Need::Netsplit) {
        Some(why.to_owned())
    } else {
        Netsplit::unavailable(version)
    };
    match cannot {
        _ if !metadata.has_test_target("netsplit") => {
            eprintln!("xtask: no `netsplit` test binary in the workspace; skipping its run")
        }
        Some(why) => {
            eprintln!("xtask: {why}: the `netsplit` tests are skipped (counted as skipped above)")
        }
        None => {
            let mut netsplit = cargo(&metadata.root);
            netsplit
                .args([
                    "nextest",
                    "run",
                    "--workspace",
                    "--no-fail-fast",
                    "--no-tests=pass",
                    "-j",
                    "1",
                    "-E",
                    "binary(netsplit)",
                ])
                .args(extra);
            let code = run_step("netsplit tests (serial, own cluster)", netsplit)?;
            failures.record("netsplit tests", code);
            if code != 0 && code != NEXTEST_TESTS_FAILED {
                return Ok(failures.finish());
            }
        }
    }

    // The chaos run kills nodes too: alone, after the failover tests.
    if external {
        eprintln!("xtask: AMQP_ADDR is set: the chaos run (it kills local nodes) is skipped");
    } else if metadata.has_package("rabbitkit-chaos") {
        ensure_broker()?;
        let mut chaos = cargo(&metadata.root);
        chaos
            .args(["run", "-p", "rabbitkit-chaos", "--"])
            .args(CHAOS_CI_ARGS);
        let code = run_step("chaos run (short, seeded)", chaos)?;
        failures.record("chaos run", code);
        ensure_broker()?;
    } else {
        eprintln!("xtask: no `rabbitkit-chaos` package in the workspace; skipping the chaos run");
    }

    let mut doc = cargo(&metadata.root);
    doc.args(["test", "--workspace", "--doc"]);
    let code = run_step("doc tests", doc)?;
    failures.record("doc tests", code);

    // The docs of the optional features (`trace`, `metrics`).
    let mut doc = cargo(&metadata.root);
    doc.args([
        "test",
        "-p",
        "rabbitkit-core",
        "-p",
        "rabbitkit",
        "--doc",
        "--features",
        "rabbitkit-core/opentelemetry,rabbitkit-core/metrics",
    ]);
    let code = run_step("doc tests (opentelemetry, metrics)", doc)?;
    failures.record("doc tests (features)", code);

    Ok(failures.finish())
}

/// The failed steps of `cargo xtask test`.
#[derive(Default)]
struct Failures {
    steps: Vec<String>,
    first_code: i32,
}

impl Failures {
    fn record(&mut self, step: &str, code: i32) {
        if code != 0 {
            self.steps.push(format!("{step} (exit status {code})"));
            if self.first_code == 0 {
                self.first_code = code;
            }
        }
    }

    /// Prints the summary; the exit code is that of the first failed step.
    fn finish(self) -> ExitCode {
        if self.steps.is_empty() {
            eprintln!("xtask: all tests passed");
            ExitCode::SUCCESS
        } else {
            eprintln!("xtask: FAILED: {}", self.steps.join(", "));
            exit_code(self.first_code)
        }
    }
}

fn demo(extra: &[String]) -> Result<ExitCode> {
    let metadata = Metadata::load()?;
    ensure_broker()?;
    let mut cmd = cargo(&metadata.root);
    cmd.args(["run", "--quiet", "--example", "demo"]);
    if !extra.is_empty() {
        cmd.arg("--").args(extra);
    }
    run_step("demo", cmd).map(exit_code)
}

/// `cargo xtask soak [ARGS]`: the soak run (minutes of traffic while nodes are killed).
fn soak(extra: &[String]) -> Result<ExitCode> {
    let metadata = Metadata::load()?;
    ensure_broker()?;
    let mut cmd = cargo(&metadata.root);
    cmd.args(["run", "--release", "-p", "rabbitkit-soak", "--"])
        .args(extra);
    run_step("soak", cmd).map(exit_code)
}

/// The arguments of the short, seeded chaos run of `cargo xtask test`
/// (about 2 minutes: 60 s of workload, the drain, the checks).
const CHAOS_CI_ARGS: &[&str] = &["--seed", "1", "--seconds", "60", "--events", "4"];

/// `cargo xtask chaos [ARGS]`: the chaos run (kills nodes of the local cluster).
fn chaos(extra: &[String]) -> Result<ExitCode> {
    let metadata = Metadata::load()?;
    if using_external_broker() {
        return Err("the chaos run kills nodes of the local cluster: unset AMQP_ADDR".into());
    }
    ensure_broker()?;
    let mut cmd = cargo(&metadata.root);
    cmd.args(["run", "-p", "rabbitkit-chaos", "--"]).args(extra);
    let code = run_step("chaos", cmd)?;
    // It restarts the nodes it kills; make sure, whatever happened.
    ensure_broker()?;
    Ok(exit_code(code))
}

/// `cargo xtask jepsen [ARGS]`: the partition run (builds its own cluster).
fn jepsen(extra: &[String]) -> Result<ExitCode> {
    let metadata = Metadata::load()?;
    let version = RabbitMq::from_env()
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    version.install().map_err(|e| e.to_string())?;
    let mut cmd = cargo(&metadata.root);
    cmd.args(["run", "-p", "rabbitkit-jepsen", "--"])
        .args(extra);
    run_step("jepsen", cmd).map(exit_code)
}

fn bench(extra: &[String]) -> Result<ExitCode> {
    let metadata = Metadata::load()?;
    if !metadata.has_package("rabbitkit-bench") {
        return Err(
            "there is no `rabbitkit-bench` package in this workspace (expected crates/rabbitkit-bench)"
                .into(),
        );
    }
    ensure_broker()?;
    let mut cmd = cargo(&metadata.root);
    cmd.args(["run", "--release", "-p", "rabbitkit-bench", "--"])
        .args(extra);
    run_step("bench", cmd).map(exit_code)
}

// ----- helpers --------------------------------------------------------------

/// A `cargo` command (the one running us, when known) run from the
/// workspace root.
fn cargo(root: &Path) -> Command {
    let program = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut cmd = Command::new(program);
    cmd.current_dir(root);
    cmd
}

/// Runs `cmd` with inherited stdio and returns its exit code (128 + signal
/// when killed by a signal).
fn run_step(name: &str, mut cmd: Command) -> Result<i32> {
    let shown: Vec<String> = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| {
            let a = a.to_string_lossy();
            if a.contains(' ') {
                format!("'{a}'")
            } else {
                a.into_owned()
            }
        })
        .collect();
    eprintln!("xtask: [{name}] {}", shown.join(" "));
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run {}: {e}", shown[0]))?;
    Ok(status.code().unwrap_or_else(|| {
        use std::os::unix::process::ExitStatusExt;
        128 + status.signal().unwrap_or(0)
    }))
}

fn exit_code(code: i32) -> ExitCode {
    match u8::try_from(code) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(code) => ExitCode::from(code),
        Err(_) => ExitCode::FAILURE,
    }
}

/// What `cargo metadata --no-deps` says about the workspace.
struct Metadata {
    root: PathBuf,
    /// The target directory (`target/`, or CARGO_TARGET_DIR).
    target_dir: PathBuf,
    value: serde_json::Value,
}

impl Metadata {
    fn load() -> Result<Self> {
        // crates/xtask -> workspace root, as a starting point for cargo.
        let here = Path::new(env!("CARGO_MANIFEST_DIR"));
        let start = here.ancestors().nth(2).unwrap_or(here);
        let output = cargo(start)
            .args(["metadata", "--no-deps", "--format-version", "1"])
            .output()
            .map_err(|e| format!("cannot run cargo metadata: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "cargo metadata failed:\n{}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        let value: serde_json::Value = serde_json::from_slice(&output.stdout)
            .map_err(|e| format!("cannot parse cargo metadata: {e}"))?;
        let root = value["workspace_root"]
            .as_str()
            .map(PathBuf::from)
            .ok_or("cargo metadata has no workspace_root")?;
        let target_dir = value["target_directory"]
            .as_str()
            .map_or_else(|| root.join("target"), PathBuf::from);
        Ok(Self {
            root,
            target_dir,
            value,
        })
    }

    fn packages(&self) -> impl Iterator<Item = &serde_json::Value> {
        self.value["packages"].as_array().into_iter().flatten()
    }

    fn has_package(&self, name: &str) -> bool {
        self.packages().any(|p| p["name"] == name)
    }

    /// Whether some workspace package has an integration test `name`.
    fn has_test_target(&self, name: &str) -> bool {
        self.packages()
            .flat_map(|p| p["targets"].as_array().into_iter().flatten())
            .any(|t| {
                t["name"] == name
                    && t["kind"]
                        .as_array()
                        .is_some_and(|kinds| kinds.iter().any(|k| k == "test"))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> std::result::Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("cargo xtask").chain(line.split_whitespace()))
    }

    fn passed_on(line: &str) -> (Option<RabbitMq>, Vec<String>) {
        let cli = parse(line).unwrap();
        let args = match &cli.command {
            Task::Test(p)
            | Task::Demo(p)
            | Task::Bench(p)
            | Task::Soak(p)
            | Task::Jepsen(p)
            | Task::Chaos(p) => p.args().to_vec(),
            other => panic!("{other:?}"),
        };
        (cli.rabbitmq, args)
    }

    #[test]
    fn the_command_lines_of_the_readme_ci_and_benchmarks_parse() {
        assert_eq!(
            passed_on("test --rabbitmq 3.10"),
            (Some(RabbitMq::V3_10), vec![])
        );
        assert_eq!(
            passed_on("bench --only consume --rounds 2"),
            (
                None,
                ["--only", "consume", "--rounds", "2"]
                    .map(String::from)
                    .to_vec()
            )
        );
        assert_eq!(
            passed_on("bench --rabbitmq 3.10 --write BENCHMARKS.md"),
            (
                Some(RabbitMq::V3_10),
                ["--write", "BENCHMARKS.md"].map(String::from).to_vec()
            )
        );
        assert_eq!(
            passed_on("soak --rabbitmq 4.3 -- --minutes 9 --kill-every 5"),
            (
                Some(RabbitMq::V4_3),
                ["--minutes", "9", "--kill-every", "5"]
                    .map(String::from)
                    .to_vec()
            )
        );
        assert_eq!(passed_on("demo"), (None, vec![]));
        assert_eq!(
            passed_on("chaos --rabbitmq 4.3 -- --seed 7 --seconds 60 --events 4"),
            (
                Some(RabbitMq::V4_3),
                ["--seed", "7", "--seconds", "60", "--events", "4"]
                    .map(String::from)
                    .to_vec()
            )
        );
        assert!(matches!(parse("book").unwrap().command, Task::Book));
        assert!(matches!(parse("api").unwrap().command, Task::Api));
        assert!(matches!(
            parse("outside-app").unwrap().command,
            Task::OutsideApp { measure: false }
        ));
        assert!(matches!(
            parse("outside-app --measure").unwrap().command,
            Task::OutsideApp { measure: true }
        ));
        assert!(matches!(
            parse("lb up").unwrap().command,
            Task::Lb(LbTask::Up)
        ));
        assert!(matches!(
            parse("lb down").unwrap().command,
            Task::Lb(LbTask::Down)
        ));
        assert!(matches!(
            parse("lb status").unwrap().command,
            Task::Lb(LbTask::Status)
        ));
        match parse("netsplit up --rabbitmq 3.10 --partition-handling pause_minority")
            .unwrap()
            .command
        {
            Task::Netsplit(NetsplitTask::Up { partition_handling }) => {
                assert_eq!(partition_handling, PartitionHandling::PauseMinority)
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse("netsplit cut 2 --clients").unwrap().command,
            Task::Netsplit(NetsplitTask::Cut { clients: true, .. })
        ));
        assert!(matches!(
            parse("netsplit heal").unwrap().command,
            Task::Netsplit(NetsplitTask::Heal)
        ));
        let cli = parse("broker up --rabbitmq 3.10").unwrap();
        assert!(matches!(cli.command, Task::Broker(BrokerTask::Up)));
        assert_eq!(cli.rabbitmq, Some(RabbitMq::V3_10));
        let cli = parse("--rabbitmq=4.0 broker status").unwrap();
        assert!(matches!(cli.command, Task::Broker(BrokerTask::Status)));
        assert_eq!(cli.rabbitmq, Some(RabbitMq::V4_0));
        for (line, n) in [
            ("broker kill 1", 1),
            ("broker stop 2", 2),
            ("broker start 3", 3),
        ] {
            match parse(line).unwrap().command {
                Task::Broker(
                    BrokerTask::Kill(node) | BrokerTask::Stop(node) | BrokerTask::Start(node),
                ) => {
                    assert_eq!(node.n(), n)
                }
                other => panic!("{other:?}"),
            }
        }
        match parse("broker ctl 1 list_queues name consumers --formatter json")
            .unwrap()
            .command
        {
            Task::Broker(BrokerTask::Ctl { node, args }) => {
                assert_eq!(node.n(), 1);
                assert_eq!(
                    args,
                    ["list_queues", "name", "consumers", "--formatter", "json"]
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_command_lines_are_refused() {
        for line in [
            "",
            "broker",
            "broker kill",
            "broker kill 4",
            "broker kill 0",
            "broker ctl 1",
            "broker up now",
            "lb",
            "lb sideways",
            "book extra",
            "api extra",
            "netsplit cut 4",
            "netsplit up --partition-handling sometimes",
            "test --rabbitmq 5.0",
            "frobnicate",
        ] {
            assert!(parse(line).is_err(), "{line:?} was accepted");
        }
    }
}
