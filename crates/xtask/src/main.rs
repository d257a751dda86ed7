//! Developer commands for rabbitkit: `cargo xtask <command>`.
//!
//! Run `cargo xtask help` for the list. Plain `std`; the broker control
//! lives in the `rabbitkit-test` crate so tests and commands share it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use rabbitkit_test::{Cluster, LoadBalancer, RabbitMq, VERSION_ENV, using_external_broker};

mod book;

const HELP: &str = "\
cargo xtask <command> [args]

Developer commands for rabbitkit. The local broker is a 3-node RabbitMQ
cluster (rabbit1@localhost..rabbit3@localhost, AMQP on 127.0.0.1:5672-5674,
TLS on 5671), installed on first use (needs root): RabbitMQ 4.3 by default
(Debian unstable's package, run from a debootstrap chroot under
/var/tmp/rabbitkit-rootfs), or the version given with --rabbitmq.

Every command takes `--rabbitmq 4.3|4.0|3.10` (anywhere among its
arguments; also RABBITKIT_RABBITMQ=...): 3.10 is Debian 12's own package,
4.0 Debian 13's (chroot). Versions share node names and ports, so one runs
at a time: `up` stops the other. Without it, commands act on the version
that is running, or 4.3.

Broker:
  broker up          Install RabbitMQ if missing, start the nodes that are not
                     running, join them into one cluster, repair a broken one.
                     A no-op when the cluster is already up.
  broker down        Stop every node (gracefully, then SIGKILL leftovers).
                     Data is kept: the next `up` restarts the same cluster.
  broker status      Show the version, each node (state, pid) and the cluster
                     membership.
  broker kill N      SIGKILL node N (1, 2 or 3); waits until its port closes.
  broker stop N      Stop node N gracefully (rabbitmqctl stop).
  broker start N     Start node N; it rejoins the cluster by itself.
  broker ctl N ARGS  Run `rabbitmqctl -n rabbitN@localhost ARGS` for the
                     running version (in its chroot for RabbitMQ 4), e.g.
                     `cargo xtask broker ctl 1 list_queues name consumers`.

Load balancer (nginx's stream module in front of the three nodes):
  lb up              Start nginx with crates/rabbitkit-test/nginx/rabbitmq-lb.conf:
                     one URL, amqp://guest:guest@127.0.0.1:5680/%2f, for the
                     cluster. Its pid file and log are under the cluster's
                     directory (nginx/); the system's nginx is not touched.
                     Needs `apt-get install nginx-light libnginx-mod-stream`.
  lb down            Stop it.
  lb status          Say whether it runs.

Workflows:
  test [ARGS]        Bring the cluster up, then run the whole test suite:
                       1. cargo nextest run --workspace --all-targets
                          --no-fail-fast -E 'not binary(failover)' [ARGS]
                       2. if a `failover` test binary exists, its tests
                          alone, one at a time (they kill nodes):
                          cargo nextest run --workspace -E 'binary(failover)'
                          -j 1 --no-fail-fast [ARGS]
                       3. cargo test --workspace --doc
                     ARGS go to both nextest runs (name filters narrow them;
                     a NEXTEST_PROFILE such as `ci` is honoured).
                     With AMQP_ADDR set, the tests that control the local
                     cluster (binaries `failover` and `local_cluster`) are
                     filtered out: nextest reports them as skipped. Without
                     nginx (and its stream module), the failover tests
                     through nginx (`through_nginx` in their names) are
                     filtered out and reported as skipped the same way.
  demo [ARGS]        Bring the cluster up, then `cargo run --quiet --example
                     demo -- [ARGS]`.
  bench [ARGS]       Bring the cluster up, then `cargo run --release
                     -p rabbitkit-bench -- [ARGS]`.
  soak [ARGS]        Bring the cluster up, then run the soak program
                     (default: 10 minutes, the connected node SIGKILLed
                     every 30 s; `-- --minutes 2 --kill-every 20`).
  book               Check that every `{{#include file:anchor}}` of the book
                     (docs/src) names an existing file and anchor, then
                     build it: `mdbook build docs` (installs mdBook 0.4.52
                     with `cargo install --locked` when it is missing).
  help               Show this text.

Environment:
  AMQP_ADDR              Use this broker (one URL or a comma-separated list)
                         instead of the local cluster, which is then never
                         started by test/demo/bench.
  RABBITKIT_CLUSTER_DIR  Where the local cluster keeps its files
                         (default /var/tmp/rabbitkit-cluster).
";

/// Exit status of `cargo nextest run` when tests ran and some failed (any
/// other failure, such as a build error, stops `cargo xtask test`).
const NEXTEST_TESTS_FAILED: i32 = 100;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match dispatch(&args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("xtask: error: {err}");
            ExitCode::FAILURE
        }
    }
}

type Result<T> = std::result::Result<T, String>;

fn dispatch(args: &[String]) -> Result<ExitCode> {
    let args = take_version(args)?;
    let args = args.as_slice();
    let Some((command, rest)) = args.split_first() else {
        print!("{HELP}");
        return Ok(ExitCode::from(2));
    };
    match command.as_str() {
        "broker" => broker(rest).map(|()| ExitCode::SUCCESS),
        "lb" => lb(rest).map(|()| ExitCode::SUCCESS),
        "test" => test(rest),
        "demo" => demo(rest),
        "bench" => bench(rest),
        "book" => book::book(rest),
        "soak" => soak(rest),
        "help" | "-h" | "--help" => {
            print!("{HELP}");
            Ok(ExitCode::SUCCESS)
        }
        other => Err(format!("unknown command `{other}`; run `cargo xtask help`")),
    }
}

/// Removes `--rabbitmq V` (or `--rabbitmq=V`) from `args` (not after a
/// `--`) and exports the version as `RABBITKIT_RABBITMQ`, which
/// `Cluster::local` and the test processes read.
fn take_version(args: &[String]) -> Result<Vec<String>> {
    let mut out = Vec::with_capacity(args.len());
    let mut version = None;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == "--" {
            out.push(arg.clone());
            out.extend(iter.by_ref().cloned());
            break;
        }
        if arg == "--rabbitmq" {
            let v = iter
                .next()
                .ok_or("--rabbitmq needs a version: 4.3, 4.0 or 3.10")?;
            version = Some(v.clone());
        } else if let Some(v) = arg.strip_prefix("--rabbitmq=") {
            version = Some(v.to_owned());
        } else {
            out.push(arg.clone());
        }
    }
    if let Some(v) = version {
        let v: RabbitMq = v
            .parse()
            .map_err(|e: rabbitkit_test::ClusterError| e.to_string())?;
        // SAFETY: single-threaded at this point; nothing else reads the
        // environment concurrently.
        unsafe { std::env::set_var(VERSION_ENV, v.label()) };
    } else {
        RabbitMq::from_env().map_err(|e| e.to_string())?;
    }
    Ok(out)
}

// ----- broker ------------------------------------------------------------

fn broker(args: &[String]) -> Result<()> {
    let cluster = Cluster::local();
    let node = || -> Result<usize> {
        match args {
            [_, n] => n
                .parse::<usize>()
                .ok()
                .filter(|n| Cluster::nodes().contains(n))
                .ok_or_else(|| format!("node must be 1, 2 or 3, not `{n}`")),
            _ => Err(format!(
                "usage: cargo xtask broker {} N   (N = 1, 2 or 3)",
                args[0]
            )),
        }
    };
    let no_more = |usage: &str| -> Result<()> {
        if args.len() == 1 {
            Ok(())
        } else {
            Err(format!("usage: cargo xtask broker {usage}"))
        }
    };
    let Some(sub) = args.first() else {
        return Err(
            "usage: cargo xtask broker up|down|status|kill N|stop N|start N|ctl N ARGS...".into(),
        );
    };
    match sub.as_str() {
        "ctl" => {
            let usage = || "usage: cargo xtask broker ctl N RABBITMQCTL_ARGS...".to_string();
            let n = args
                .get(1)
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|n| Cluster::nodes().contains(n))
                .ok_or_else(usage)?;
            let rest: Vec<&str> = args[2..].iter().map(String::as_str).collect();
            if rest.is_empty() {
                return Err(usage());
            }
            let out = cluster.rabbitmqctl(n, &rest).map_err(|e| e.to_string())?;
            print!("{out}");
            Ok(())
        }
        "up" => {
            no_more("up")?;
            eprintln!(
                "xtask: bringing up the local RabbitMQ {} cluster under {}",
                cluster.version(),
                cluster.base_dir().display()
            );
            cluster.up().map_err(|e| e.to_string())?;
            print_status(&cluster)
        }
        "down" => {
            no_more("down")?;
            cluster.down().map_err(|e| e.to_string())?;
            eprintln!("xtask: all nodes stopped");
            Ok(())
        }
        "status" => {
            no_more("status")?;
            print_status(&cluster)
        }
        "kill" => {
            let n = node()?;
            cluster.kill(n).map_err(|e| e.to_string())?;
            eprintln!("xtask: {} killed", cluster.node_name(n));
            Ok(())
        }
        "stop" => {
            let n = node()?;
            cluster.stop(n).map_err(|e| e.to_string())?;
            eprintln!("xtask: {} stopped", cluster.node_name(n));
            Ok(())
        }
        "start" => {
            let n = node()?;
            cluster.start(n).map_err(|e| e.to_string())?;
            eprintln!("xtask: {} started", cluster.node_name(n));
            Ok(())
        }
        other => Err(format!(
            "unknown broker command `{other}`; expected up, down, status, kill N, stop N, start N or ctl N ARGS"
        )),
    }
}

/// `cargo xtask lb up|down|status`: nginx in front of the local cluster.
fn lb(args: &[String]) -> Result<()> {
    match args {
        [sub] if sub == "up" => {
            let lb = LoadBalancer::start().map_err(|e| e.to_string())?;
            println!(
                "nginx listens on {} for the local cluster (log: {})",
                lb.url().replace(":guest@", ":***@"),
                LoadBalancer::prefix().join("error.log").display()
            );
            lb.keep();
            Ok(())
        }
        [sub] if sub == "down" => {
            LoadBalancer::stop_running().map_err(|e| e.to_string())?;
            eprintln!("xtask: nginx stopped");
            Ok(())
        }
        [sub] if sub == "status" => {
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
        _ => Err("usage: cargo xtask lb up|down|status".into()),
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
    let cluster = Cluster::local();
    eprintln!(
        "xtask: making sure the local RabbitMQ {} cluster is up ({})",
        cluster.version(),
        cluster.base_dir().display()
    );
    cluster
        .up()
        .map_err(|e| format!("cannot bring up the local cluster: {e}"))
}

// ----- test, demo, bench --------------------------------------------------

fn test(extra: &[String]) -> Result<ExitCode> {
    let metadata = Metadata::load()?;
    ensure_broker()?;

    let mut failures = Failures::default();
    let external = using_external_broker();
    // Tests that kill or reconfigure the local cluster cannot run against
    // another broker: filtered out, nextest counts them as skipped.
    let filter = if external {
        eprintln!(
            "xtask: AMQP_ADDR is set: the `failover` and `local_cluster` tests control the \
             local cluster and are skipped"
        );
        // The `test(...)` term keeps nextest from dropping those binaries
        // before listing them: listed then filtered, they count as skipped.
        "(not binary(failover) and not binary(local_cluster)) or test(=rabbitkit::never)"
    } else {
        "not binary(failover)"
    };

    let mut main = cargo(&metadata.root);
    main.args([
        "nextest",
        "run",
        "--workspace",
        "--all-targets",
        "--no-fail-fast",
        "--no-tests=warn",
        "-E",
        filter,
    ])
    .args(extra);
    let code = run_step("tests", main)?;
    failures.record("tests", code);
    if code != 0 && code != NEXTEST_TESTS_FAILED {
        return Ok(failures.finish());
    }

    if external {
        eprintln!("xtask: AMQP_ADDR is set: the serial `failover` run is skipped");
    } else if metadata.has_test_target("failover") {
        ensure_broker()?;
        // The tests through nginx need it: without it they are filtered
        // out, and nextest counts them as skipped (not passed).
        let filter = match LoadBalancer::nginx() {
            Ok(_) => "binary(failover)",
            Err(why) => {
                eprintln!("xtask: {why}: the failover tests through nginx are skipped");
                "binary(failover) and not test(/through_nginx/)"
            }
        };
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
                filter,
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

    let mut doc = cargo(&metadata.root);
    doc.args(["test", "--workspace", "--doc"]);
    let code = run_step("doc tests", doc)?;
    failures.record("doc tests", code);

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
    // `cargo xtask soak -- --minutes 2`: the program gets `--minutes 2`.
    let extra = match extra {
        [first, rest @ ..] if first == "--" => rest,
        _ => extra,
    };
    cmd.args(["run", "--release", "-p", "rabbitkit-soak", "--"])
        .args(extra);
    run_step("soak", cmd).map(exit_code)
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
        Ok(Self { root, value })
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
