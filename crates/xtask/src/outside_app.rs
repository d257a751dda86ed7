//! `cargo xtask outside-app`: rabbitkit as a dependency of an application
//! that is not part of the workspace, the way a user gets it.
//!
//! `cargo new` in the system's temp directory, an empty `[workspace]` in its
//! Cargo.toml (so no workspace above claims it), `cargo add` of rabbitkit
//! (by path, default features), futures and tokio. README's "A taste"
//! snippet is split into two programs: the worker (connect, declare,
//! subscribe, receive one message, ack) and the publisher (connect,
//! declare, publish). Both are built, the worker started; once it says it
//! is subscribed, the publisher sends; the worker must print the message
//! and exit 0.
//!
//! `--measure` adds cold builds (a fresh target directory each) of that
//! application and of a raw lapin one doing the same (lapin with the
//! workspace's features, tokio, futures): wall time, crates compiled and
//! the dependency count, for BENCHMARKS.md.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::{Metadata, Result, cargo, ensure_broker, run_step};

/// The local cluster's node 1, when AMQP_ADDR is not set.
const NODE_1: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// lapin as the workspace depends on it (root Cargo.toml; a unit test
/// keeps the two equal).
const LAPIN_FEATURES: &str = "tokio,rustls--ring,rustls-native-certs";

/// What the worker prints once subscribed: the publisher may send.
const READY: &str = "outside-app: subscribed";

/// How long the worker may take to subscribe, then to get the message.
const WAIT: Duration = Duration::from_secs(90);

pub(crate) fn run(measure: bool) -> Result<ExitCode> {
    let metadata = Metadata::load()?;
    let readme = std::fs::read_to_string(metadata.root.join("README.md"))
        .map_err(|e| format!("cannot read README.md: {e}"))?;
    let taste = Taste::from_readme(&readme)?;
    let rabbitkit = metadata.root.join("crates/rabbitkit");
    let base = std::env::temp_dir().join("rabbitkit-outside-app");
    let app = base.join("app");
    new_app(&app, "rabbitkit-outside-app")?;
    cargo_add(&app, &["--path", &rabbitkit.to_string_lossy()])?;
    cargo_add(&app, &["futures"])?;
    cargo_add(&app, &["tokio", "--features", "macros,rt-multi-thread"])?;
    write(&app.join("src/bin/worker.rs"), &taste.worker())?;
    write(&app.join("src/bin/publisher.rs"), &taste.publisher())?;
    remove_file(&app.join("src/main.rs"))?;

    let target = metadata.target_dir.join("outside-app");
    let mut build = in_app(&app, &target);
    build.arg("build");
    if run_step("outside-app build", build)? != 0 {
        return Err("the outside application does not build".into());
    }
    ensure_broker()?;
    let addr = std::env::var("AMQP_ADDR").unwrap_or_else(|_| NODE_1.to_string());
    run_pair(&target.join("debug"), &addr)?;
    eprintln!("xtask: outside-app: the publisher's message reached the worker, which exited 0");

    if measure {
        let lapin = base.join("lapin-app");
        new_app(&lapin, "lapin-outside-app")?;
        cargo_add(
            &lapin,
            &[
                "lapin@4",
                "--no-default-features",
                "--features",
                LAPIN_FEATURES,
            ],
        )?;
        cargo_add(&lapin, &["futures"])?;
        cargo_add(&lapin, &["tokio", "--features", "macros,rt-multi-thread"])?;
        write(&lapin.join("src/main.rs"), RAW_LAPIN)?;
        let rows = [
            ("rabbitkit (default features)", measure_cold(&app, &base)?),
            ("raw lapin", measure_cold(&lapin, &base)?),
        ];
        let rustc = Command::new("rustc")
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        println!("\n{rustc}, {} cores", num_cpus());
        println!(
            "| application | cold `cargo build` (debug) | crates compiled | dependencies (`cargo tree -e normal`) |"
        );
        println!("|---|---|---|---|");
        for (name, m) in rows {
            println!(
                "| {name} | {:.0} s | {} | {} |",
                m.seconds, m.compiled, m.dependencies
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// README's "A taste" snippet, split in its lines.
struct Taste {
    /// `use` lines.
    uses: Vec<String>,
    /// Lines both programs run: connect and declare.
    setup: Vec<String>,
    /// The worker's: subscribe.
    subscribe: Vec<String>,
    /// The publisher's.
    publish: Vec<String>,
    /// The worker's: receive, print, ack.
    receive: Vec<String>,
}

impl Taste {
    fn from_readme(readme: &str) -> Result<Self> {
        let mut lines = readme
            .lines()
            .skip_while(|l| l.trim() != "## A taste")
            .skip(1)
            .skip_while(|l| l.trim() != "```rust");
        if lines.next().is_none() {
            return Err("README.md has no ```rust block under \"## A taste\"".into());
        }
        let block: Vec<&str> = lines.take_while(|l| l.trim() != "```").collect();
        let mut taste = Taste {
            uses: Vec::new(),
            setup: Vec::new(),
            subscribe: Vec::new(),
            publish: Vec::new(),
            receive: Vec::new(),
        };
        for line in block {
            let code = line.trim();
            if code.is_empty() {
                continue;
            }
            if code.starts_with("use ") {
                taste.uses.push(code.to_string());
            } else if code.contains(".connect(") {
                // The README's addresses are examples: this run's broker.
                let start = code.find(".connect(").unwrap() + ".connect(".len();
                let end = code[start..]
                    .find(')')
                    .map(|e| start + e)
                    .ok_or("README's taste: .connect( without )")?;
                let connect = format!(
                    "{}std::env::var(\"AMQP_ADDR\")?{}",
                    &code[..start],
                    &code[end..]
                );
                taste.setup.push(connect);
            } else if code.contains(".subscribe") {
                taste.subscribe.push(code.to_string());
            } else if code.contains(".publish(") {
                taste.publish.push(code.to_string());
            } else if taste.subscribe.is_empty() {
                taste.setup.push(code.to_string());
            } else {
                taste.receive.push(code.to_string());
            }
        }
        let missing = [
            ("connect and declare", taste.setup.len() < 2),
            ("subscribe", taste.subscribe.is_empty()),
            ("publish", taste.publish.is_empty()),
            ("receive", taste.receive.is_empty()),
        ];
        if let Some((what, _)) = missing.iter().find(|(_, missing)| *missing) {
            return Err(format!(
                "README's \"A taste\" snippet has no {what} line: update crates/xtask/src/outside_app.rs"
            ));
        }
        Ok(taste)
    }

    fn program(&self, what: &str, body: &[&[String]]) -> String {
        let mut out = format!(
            "//! The {what} of README's \"A taste\" (written by `cargo xtask outside-app`).\n\n\
             // The snippet's `use` lines, which one half does not all need.\n\
             #![allow(unused_imports)]\n\n"
        );
        for line in &self.uses {
            out.push_str(line);
            out.push('\n');
        }
        out.push_str(
            "\n#[tokio::main]\nasync fn main() -> Result<(), Box<dyn std::error::Error>> {\n",
        );
        for part in body {
            for line in *part {
                out.push_str("    ");
                out.push_str(line);
                out.push('\n');
            }
        }
        out.push_str("    Ok(())\n}\n");
        out
    }

    fn worker(&self) -> String {
        let ready = [format!("println!(\"{READY}\");")];
        self.program(
            "worker",
            &[&self.setup, &self.subscribe, &ready, &self.receive],
        )
    }

    fn publisher(&self) -> String {
        self.program("publisher", &[&self.setup, &self.publish])
    }
}

/// Starts the worker, waits for it to subscribe, runs the publisher, then
/// waits for the worker to print the message and exit 0.
fn run_pair(bin: &Path, addr: &str) -> Result<()> {
    eprintln!("xtask: [outside-app] worker, then publisher, against {addr}");
    let mut worker = Command::new(bin.join("worker"))
        .env("AMQP_ADDR", addr)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the worker: {e}"))?;
    let stdout = worker.stdout.take().expect("piped");
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
            println!("worker: {line}");
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let outcome = (|| {
        let deadline = Instant::now() + WAIT;
        wait_for_line(&lines, deadline, |l| l == READY, "subscribe")?;
        let status = Command::new(bin.join("publisher"))
            .env("AMQP_ADDR", addr)
            .status()
            .map_err(|e| format!("cannot start the publisher: {e}"))?;
        if !status.success() {
            return Err(format!("the publisher failed: {status}"));
        }
        let deadline = Instant::now() + WAIT;
        wait_for_line(
            &lines,
            deadline,
            |l| l.contains("kern.critical:A critical kernel error"),
            "receive the message",
        )?;
        wait_exit(&mut worker, deadline)
    })();
    if outcome.is_err() {
        let _ = worker.kill();
        let _ = worker.wait();
    }
    outcome
}

fn wait_for_line(
    lines: &mpsc::Receiver<String>,
    deadline: Instant,
    wanted: impl Fn(&str) -> bool,
    what: &str,
) -> Result<()> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if wanted(&line) => return Ok(()),
            Ok(_) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(format!("the worker did not {what} within {WAIT:?}"));
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(format!("the worker ended before it could {what}"));
            }
        }
    }
}

fn wait_exit(child: &mut Child, deadline: Instant) -> Result<()> {
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return if status.success() {
                Ok(())
            } else {
                Err(format!("the worker failed: {status}"))
            };
        }
        if Instant::now() > deadline {
            return Err("the worker did not exit after the message".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Cold {
    seconds: f64,
    compiled: usize,
    dependencies: usize,
}

/// A cold debug build of `app` in a fresh target directory, and its
/// dependency count.
fn measure_cold(app: &Path, base: &Path) -> Result<Cold> {
    let target = base.join("cold-target");
    remove_dir(&target)?;
    // The lock file first (resolution is not compile time).
    let mut fetch = in_app(app, &target);
    fetch.arg("fetch");
    if run_step("outside-app fetch", fetch)? != 0 {
        return Err(format!("cargo fetch failed in {}", app.display()));
    }
    let mut build = in_app(app, &target);
    build.arg("build").stderr(Stdio::piped());
    eprintln!("xtask: [outside-app] cold cargo build in {}", app.display());
    let started = Instant::now();
    let output = build
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    let seconds = started.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(format!("cold build of {} failed:\n{stderr}", app.display()));
    }
    let compiled = stderr
        .lines()
        .filter(|l| l.trim_start().starts_with("Compiling "))
        .count();
    let mut tree = in_app(app, &target);
    tree.args(["tree", "-e", "normal", "--prefix", "none"]);
    let output = tree
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    let dependencies = count_dependencies(&String::from_utf8_lossy(&output.stdout));
    remove_dir(&target)?;
    Ok(Cold {
        seconds,
        compiled,
        dependencies,
    })
}

/// The packages `cargo tree -e normal --prefix none` lists, each once,
/// without the application (the first line).
fn count_dependencies(tree: &str) -> usize {
    let packages: BTreeSet<&str> = tree
        .lines()
        .skip(1)
        .map(|l| l.trim_end_matches(" (*)").trim_end_matches(" (proc-macro)"))
        .map(|l| l.split(" (").next().unwrap_or(l))
        .filter(|l| !l.is_empty())
        .collect();
    let root = tree.lines().next().unwrap_or("");
    packages.iter().filter(|p| **p != root).count()
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// `cargo` run in `app`, with its own target directory.
fn in_app(app: &Path, target: &Path) -> Command {
    let mut cmd = cargo(app);
    cmd.env("CARGO_TARGET_DIR", target);
    cmd
}

fn new_app(dir: &Path, name: &str) -> Result<()> {
    remove_dir(dir)?;
    let parent = dir.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(parent)
        .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    let mut new = cargo(parent);
    new.args(["new", "--vcs", "none", "--bin", "--name", name])
        .arg(dir);
    if run_step("outside-app new", new)? != 0 {
        return Err(format!("cargo new {} failed", dir.display()));
    }
    let manifest = dir.join("Cargo.toml");
    let mut text = std::fs::read_to_string(&manifest)
        .map_err(|e| format!("cannot read {}: {e}", manifest.display()))?;
    // Not a member of any workspace above it.
    text.push_str("\n[workspace]\n");
    write(&manifest, &text)
}

fn cargo_add(app: &Path, args: &[&str]) -> Result<()> {
    let mut add = cargo(app);
    add.arg("add").args(args);
    if run_step("outside-app add", add)? != 0 {
        return Err(format!("cargo add {} failed", args.join(" ")));
    }
    Ok(())
}

fn write(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn remove_file(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(format!("cannot remove {}: {e}", path.display()))
        }
        _ => Ok(()),
    }
}

fn remove_dir(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(format!("cannot remove {}: {e}", path.display()))
        }
        _ => Ok(()),
    }
}

/// The taste with lapin alone: a topic exchange, a server-named exclusive
/// queue bound with `kern.*`, a confirmed publish, one delivery acked.
const RAW_LAPIN: &str = r##"//! README's "A taste" with lapin alone (written by `cargo xtask outside-app --measure`).

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::var("AMQP_ADDR")?;
    let conn = Connection::connect(&addr, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    ch.exchange_declare(
        "topic_logs".into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await?;
    let queue = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions { exclusive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await?;
    ch.queue_bind(
        queue.name().clone(),
        "topic_logs".into(),
        "kern.*".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    let mut kernel = ch
        .basic_consume(
            queue.name().clone(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    // rabbitkit sends a `String` as JSON: the same bytes.
    let body = br#""A critical kernel error""#;
    ch.basic_publish(
        "topic_logs".into(),
        "kern.critical".into(),
        BasicPublishOptions::default(),
        body,
        BasicProperties::default().with_delivery_mode(2),
    )
    .await?
    .await?;
    let delivery = kernel.next().await.ok_or("consumer ended")??;
    println!(" [x] {}:{}", delivery.routing_key, String::from_utf8_lossy(&delivery.data));
    delivery.ack(BasicAckOptions::default()).await?;
    Ok(())
}
"##;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readme_taste_splits_into_a_worker_and_a_publisher() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .nth(2)
            .unwrap();
        let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
        let taste = Taste::from_readme(&readme).unwrap();
        let worker = taste.worker();
        let publisher = taste.publisher();
        assert!(
            worker.contains(".connect(std::env::var(\"AMQP_ADDR\")?)"),
            "{worker}"
        );
        assert!(worker.contains(".subscribe"), "{worker}");
        assert!(worker.contains(READY), "{worker}");
        assert!(!worker.contains(".publish("), "{worker}");
        assert!(publisher.contains(".publish("), "{publisher}");
        assert!(!publisher.contains(".subscribe"), "{publisher}");
        assert!(!publisher.contains("10.0.0.1"), "{publisher}");
    }

    #[test]
    fn lapin_features_are_the_workspaces() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .nth(2)
            .unwrap();
        let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
        let line = manifest
            .lines()
            .find(|l| l.starts_with("lapin = "))
            .unwrap();
        let listed: Vec<String> = LAPIN_FEATURES
            .split(',')
            .map(|f| format!("\"{f}\""))
            .collect();
        assert!(line.contains(&listed.join(", ")), "{line}");
        assert!(line.contains("default-features = false"), "{line}");
    }

    #[test]
    fn dependencies_are_counted_once() {
        let tree = "app v0.1.0 (/tmp/app)\nlapin v4.0.0\ntokio v1.0.0\nlapin v4.0.0 (*)\nserde_derive v1.0.0 (proc-macro)\n\n";
        assert_eq!(count_dependencies(tree), 3);
    }
}
