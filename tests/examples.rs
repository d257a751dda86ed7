//! Smoke test of the tutorial programs in `examples/`: each one runs as a
//! real process against the cluster (or `AMQP_ADDR`, which the children
//! inherit), the way the book tells a reader to run it, and its output is
//! checked line by line.
//!
//! The programs use the official tutorials' fixed names (`hello`,
//! `task_queue`, `logs`, ...), so everything runs in one `#[test]`, one
//! program pair after another. Consumers are started first and awaited
//! until they print their "Waiting" line; then the producer runs to its
//! end; then the consumer's expected lines are awaited and it is stopped
//! with SIGINT (Ctrl-C), which must end it cleanly. Every wait is bounded;
//! every child is killed when its guard drops, also when a check fails.
//!
//! The example binaries are found next to this test's own binary
//! (`target/<profile>/examples/`). `cargo nextest run --workspace
//! --all-targets` (what `cargo xtask test` runs) builds them; when one is
//! missing or older than the sources, the test runs `cargo build --examples`
//! first.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime};

/// Every example this test runs.
const EXAMPLES: &[&str] = &[
    "send",
    "receive",
    "new_task",
    "worker",
    "emit_log",
    "receive_logs",
    "emit_log_direct",
    "receive_logs_direct",
    "emit_log_topic",
    "receive_logs_topic",
    "emit_log_headers",
    "receive_logs_headers",
    "rpc_server",
    "rpc_client",
    "publisher_confirms",
    "failover",
    "retry_dead_letter",
];

/// Longest wait for one expected line, or for a program to finish.
const WAIT: Duration = Duration::from_secs(60);

/// `target/<profile>`, from this test's binary in `target/<profile>/deps/`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps")
        .to_path_buf()
}

fn example_path(name: &str) -> PathBuf {
    profile_dir().join("examples").join(name)
}

fn modified(path: &Path) -> Option<SystemTime> {
    path.metadata().and_then(|m| m.modified()).ok()
}

/// The newest modification time of the files every example is built from.
fn newest_shared_source(root: &Path) -> SystemTime {
    fn walk(path: &Path, newest: &mut SystemTime) {
        if path.is_dir() {
            for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
                walk(&entry.path(), newest);
            }
        } else if let Some(t) = modified(path) {
            *newest = (*newest).max(t);
        }
    }
    let mut newest = SystemTime::UNIX_EPOCH;
    for part in [
        "crates/rabbitkit/src",
        "crates/rabbitkit-core/src",
        "Cargo.toml",
        "Cargo.lock",
    ] {
        walk(&root.join(part), &mut newest);
    }
    newest
}

/// Builds the examples when one is missing or older than its sources.
fn build_examples() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shared = newest_shared_source(root);
    let stale: Vec<&str> = EXAMPLES
        .iter()
        .copied()
        .filter(|name| {
            let source = modified(&root.join("examples").join(format!("{name}.rs")));
            let newest = source.map_or(shared, |s| s.max(shared));
            modified(&example_path(name)).is_none_or(|built| built < newest)
        })
        .collect();
    if stale.is_empty() {
        return;
    }
    let profile_dir = profile_dir();
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a profile directory name");
    let target_dir = profile_dir.parent().expect("the target directory");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .env("CARGO_TARGET_DIR", target_dir)
        .args(["build", "--examples", "--quiet"]);
    match profile {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    eprintln!("examples to (re)build: {stale:?}; running {cmd:?}");
    let status = cmd.status().expect("run cargo build --examples");
    assert!(status.success(), "cargo build --examples failed: {status}");
    for name in EXAMPLES {
        assert!(
            example_path(name).exists(),
            "{} missing after the build",
            example_path(name).display()
        );
    }
}

/// A running example whose stdout is read line by line. Killed on drop.
struct Program {
    name: String,
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Program {
    fn start(name: &str, args: &[&str]) -> Self {
        let mut child = Command::new(example_path(name))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start example {name}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            name: format!("{name} {}", args.join(" ")),
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (bounded) for a line equal to `expected`; returns the lines
    /// printed before it.
    fn expect(&mut self, expected: &str) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        let from = self.seen.len();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    eprintln!("[{}] {line}", self.name);
                    let found = line == expected;
                    self.seen.push(line);
                    if found {
                        return self.seen[from..self.seen.len() - 1].to_vec();
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "`{}` did not print {expected:?} within {WAIT:?}; it printed: {:#?}",
                    self.name, self.seen
                ),
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "`{}` ended ({:?}) without printing {expected:?}; it printed: {:#?}",
                    self.name,
                    self.child.try_wait(),
                    self.seen
                ),
            }
        }
    }

    /// Waits (bounded) for the program to end by itself; returns its exit
    /// status and everything it printed.
    fn finish(mut self) -> (ExitStatus, Vec<String>) {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    eprintln!("[{}] {line}", self.name);
                    self.seen.push(line);
                }
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => panic!(
                    "`{}` did not finish within {WAIT:?}; it printed: {:#?}",
                    self.name, self.seen
                ),
            }
        }
        let status = self.wait_until(deadline);
        (status, std::mem::take(&mut self.seen))
    }

    /// Like Ctrl-C in its terminal: SIGINT, then a clean exit is expected.
    fn interrupt(mut self) {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("run kill -INT");
        assert!(status.success(), "kill -INT {} failed", self.child.id());
        let status = self.wait_until(Instant::now() + Duration::from_secs(15));
        assert!(
            status.success(),
            "`{}` did not exit cleanly on Ctrl-C: {status}",
            self.name
        );
    }

    fn wait_until(&mut self, deadline: Instant) -> ExitStatus {
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "`{}` is still running; it printed: {:#?}",
                self.name,
                self.seen
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Runs a program to its end and checks it succeeded; returns its lines.
fn run(name: &str, args: &[&str]) -> Vec<String> {
    let program = Program::start(name, args);
    let shown = program.name.clone();
    let (status, lines) = program.finish();
    assert!(status.success(), "`{shown}` failed ({status}): {lines:#?}");
    lines
}

/// Starts a consumer and waits until it is ready.
fn consumer(name: &str, args: &[&str], ready: &str) -> Program {
    let mut program = Program::start(name, args);
    program.expect(ready);
    program
}

const WAITING_FOR_MESSAGES: &str = " [*] Waiting for messages. To exit press CTRL+C";
const WAITING_FOR_LOGS: &str = " [*] Waiting for logs. To exit press CTRL+C";

#[test]
fn every_tutorial_program_works_as_the_book_says() {
    rabbitkit_test::ensure_cluster();
    build_examples();
    // Fresh words in every message, so leftovers of earlier runs never match.
    let id = rabbitkit_test::unique_name("smoke");

    // Hello World.
    let mut receive = consumer("receive", &[], WAITING_FOR_MESSAGES);
    assert_eq!(run("send", &[]), [" [x] Sent 'Hello World!'"]);
    receive.expect(" [x] Received 'Hello World!'");
    receive.interrupt();

    // Work queues (no dots: no simulated work).
    let mut worker = consumer("worker", &[], WAITING_FOR_MESSAGES);
    let task = format!("task {id}");
    assert_eq!(run("new_task", &[&task]), [format!(" [x] Sent '{task}'")]);
    worker.expect(&format!(" [x] Received '{task}'"));
    worker.expect(" [x] Done");
    worker.interrupt();

    // Publish/subscribe: every subscriber gets a copy.
    let mut first = consumer("receive_logs", &[], WAITING_FOR_LOGS);
    let mut second = consumer("receive_logs", &[], WAITING_FOR_LOGS);
    let log = format!("info: {id}");
    assert_eq!(run("emit_log", &[&log]), [format!(" [x] Sent '{log}'")]);
    first.expect(&format!(" [x] Received '{log}'"));
    second.expect(&format!(" [x] Received '{log}'"));
    first.interrupt();
    second.interrupt();

    // Routing: only the bound severities arrive. Messages from one
    // publisher arrive in order, so the info message, sent first, would
    // have been printed before the error one.
    let mut direct = consumer(
        "receive_logs_direct",
        &["warning", "error"],
        WAITING_FOR_LOGS,
    );
    let info = format!("info {id}");
    let error = format!("error {id}");
    run("emit_log_direct", &["info", &info]);
    assert_eq!(
        run("emit_log_direct", &["error", &error]),
        [format!(" [x] Sent 'error':'{error}'")]
    );
    let before = direct.expect(&format!(" [x] Received 'error':'{error}'"));
    assert!(
        !before.iter().any(|l| l.contains(&info)),
        "info was not bound: {before:?}"
    );
    direct.interrupt();

    // Topics.
    let mut topic = consumer(
        "receive_logs_topic",
        &["kern.*", "*.critical"],
        WAITING_FOR_LOGS,
    );
    let user = format!("user info {id}");
    let kernel = format!("kernel {id}");
    run("emit_log_topic", &["user.info", &user]);
    run("emit_log_topic", &["kern.critical", &kernel]);
    let before = topic.expect(&format!(" [x] Received 'kern.critical':'{kernel}'"));
    assert!(!before.iter().any(|l| l.contains(&user)), "{before:?}");
    topic.interrupt();
    // A malformed pattern is refused before connecting.
    let bad = Program::start("receive_logs_topic", &["kern*"]);
    let (status, _) = bad.finish();
    assert_eq!(status.code(), Some(1), "`kern*` is refused");

    // Headers: all vs any.
    let mut all = consumer(
        "receive_logs_headers",
        &["all", "format=pdf", "type=report"],
        WAITING_FOR_LOGS,
    );
    let mut any = consumer(
        "receive_logs_headers",
        &["any", "format=pdf", "type=log"],
        WAITING_FOR_LOGS,
    );
    let archive = format!("archive {id}");
    let report = format!("report {id}");
    assert_eq!(
        run(
            "emit_log_headers",
            &["format=zip", "type=log", "--", &archive]
        ),
        [format!(" [x] Sent {{format=zip, type=log}}:'{archive}'")]
    );
    run(
        "emit_log_headers",
        &["format=pdf", "type=report", "--", &report],
    );
    let before = all.expect(&format!(
        " [x] Received {{format=pdf, type=report}}:'{report}'"
    ));
    assert!(!before.iter().any(|l| l.contains(&archive)), "{before:?}");
    any.expect(&format!(
        " [x] Received {{format=zip, type=log}}:'{archive}'"
    ));
    any.expect(&format!(
        " [x] Received {{format=pdf, type=report}}:'{report}'"
    ));
    all.interrupt();
    any.interrupt();

    // RPC.
    let mut server = consumer("rpc_server", &[], " [x] Awaiting RPC requests");
    assert_eq!(
        run("rpc_client", &["10"]),
        [" [x] Requesting fib(10)", " [.] Got 55"]
    );
    server.expect(" [.] fib(10)");
    server.interrupt();

    // Publisher confirms, three ways (timings are not checked).
    let lines = run("publisher_confirms", &["500"]);
    let prefixes = [
        " [x] Published 500 messages individually in ",
        " [x] Published 500 messages in batches of 100 in ",
        " [x] Published 500 messages and handled confirms asynchronously in ",
    ];
    assert_eq!(lines.len(), 3, "{lines:?}");
    for (line, prefix) in lines.iter().zip(prefixes) {
        assert!(line.starts_with(prefix) && line.ends_with(" ms"), "{line}");
    }

    // Failover, with no node killed: everything confirmed arrives.
    let lines = run("failover", &["200"]);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(" [x] Sent 200, confirmed 200, received 200 ")),
        "{lines:#?}"
    );
    assert!(lines.iter().any(|l| l == " [x] lost: 0"), "{lines:#?}");

    // Retries and dead letters: 6 jobs, 2 of which always fail.
    let lines = run("retry_dead_letter", &["6"]);
    for expected in [
        " [x] Done 'job 2' (attempt 2)",
        " [!] 'job 3' failed (attempt 3 of 3): this job can never be done; parked in jobs.parked",
        " [x] Done: 4, parked: 2",
    ] {
        assert!(
            lines.iter().any(|l| l == expected),
            "{expected:?} in {lines:#?}"
        );
    }
    assert_eq!(
        lines.last().map(String::as_str),
        Some(" [x] Done: 4, parked: 2")
    );
}
