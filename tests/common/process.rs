//! Programs run as real processes, the way a reader runs them in a
//! terminal: the tutorial programs of `examples/` (tests/examples.rs,
//! tests/interop.rs) and other programs, such as the official Python
//! tutorials (tests/interop.rs).
//!
//! Every wait is bounded ([`WAIT`]); every child is killed when its
//! [`Program`] drops, also when a check fails.
//!
//! The example binaries are found next to the test's own binary
//! (`target/<profile>/examples/`). `cargo nextest run --workspace
//! --all-targets` (what `cargo xtask test` runs) builds them; when one is
//! missing or older than the sources, [`build_examples`] runs `cargo build
//! --examples` first.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime};

/// Longest wait for one expected line, or for a program to finish.
pub const WAIT: Duration = Duration::from_secs(60);

/// `target/<profile>`, from the test's binary in `target/<profile>/deps/`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps")
        .to_path_buf()
}

/// Where the example `name` is built.
pub fn example_path(name: &str) -> PathBuf {
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
        "crates/rabbitkit-stream/src",
        "Cargo.toml",
        "Cargo.lock",
    ] {
        walk(&root.join(part), &mut newest);
    }
    newest
}

/// Builds the examples when one of `examples` is missing or older than its
/// sources.
pub fn build_examples(examples: &[&str]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shared = newest_shared_source(root);
    let stale: Vec<&str> = examples
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
    for name in examples {
        assert!(
            example_path(name).exists(),
            "{} missing after the build",
            example_path(name).display()
        );
    }
}

/// A running program whose stdout is read line by line. Killed on drop.
pub struct Program {
    name: String,
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Program {
    /// Starts the example `name` with `args`.
    pub fn start(name: &str, args: &[&str]) -> Self {
        let mut cmd = Command::new(example_path(name));
        cmd.args(args);
        Self::spawn(format!("{name} {}", args.join(" ")), cmd)
    }

    /// Starts `cmd` (stdin closed, stdout read here, stderr inherited);
    /// `name` is what messages call it.
    pub fn spawn(name: String, mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{name}` ({cmd:?}): {e}"));
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
            name,
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// What messages call it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits (bounded) for a line equal to `expected`; returns the lines
    /// printed before it.
    pub fn expect(&mut self, expected: &str) -> Vec<String> {
        let from = self.seen.len();
        self.expect_where(&format!("{expected:?}"), |line| line == expected);
        self.seen[from..self.seen.len() - 1].to_vec()
    }

    /// Waits (bounded) for a line for which `pred` holds (`expected` says
    /// which, for the failure message); returns it.
    pub fn expect_where(&mut self, expected: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    eprintln!("[{}] {line}", self.name);
                    let found = pred(&line);
                    self.seen.push(line.clone());
                    if found {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "`{}` did not print {expected} within {WAIT:?}; it printed: {:#?}",
                    self.name, self.seen
                ),
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "`{}` ended ({:?}) without printing {expected}; it printed: {:#?}",
                    self.name,
                    self.child.try_wait(),
                    self.seen
                ),
            }
        }
    }

    /// Waits (bounded) for the program to end by itself; returns its exit
    /// status and everything it printed.
    pub fn finish(mut self) -> (ExitStatus, Vec<String>) {
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

    /// Waits (bounded) for the program to end by itself and checks that it
    /// succeeded; returns everything it printed.
    pub fn succeed(self) -> Vec<String> {
        let shown = self.name.clone();
        let (status, lines) = self.finish();
        assert!(status.success(), "`{shown}` failed ({status}): {lines:#?}");
        lines
    }

    /// Like Ctrl-C in its terminal: SIGINT, then a clean exit is expected.
    pub fn interrupt(mut self) {
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

    /// Like Ctrl-C in its terminal (SIGINT), then waits (bounded) for the
    /// program to end; returns its exit status and everything it printed.
    pub fn interrupt_and_finish(self) -> (ExitStatus, Vec<String>) {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("run kill -INT");
        assert!(status.success(), "kill -INT {} failed", self.child.id());
        self.finish()
    }

    /// Like a deploy stopping a service (SIGTERM), then waits (bounded) for
    /// the program to end; returns its exit status and everything it printed.
    pub fn terminate_and_finish(self) -> (ExitStatus, Vec<String>) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill -TERM");
        assert!(status.success(), "kill -TERM {} failed", self.child.id());
        self.finish()
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

/// Runs the example `name` to its end and checks it succeeded; returns its
/// lines.
pub fn run(name: &str, args: &[&str]) -> Vec<String> {
    Program::start(name, args).succeed()
}

/// The Python interpreter to run programs with: `PYTHON` (`cargo xtask
/// test` sets it to its venv, target/python-venv), else `python3`.
pub fn python() -> String {
    std::env::var("PYTHON")
        .ok()
        .filter(|p| !p.trim().is_empty())
        .unwrap_or_else(|| "python3".to_string())
}

/// Fails the test, saying `how_to_install`, unless [`python`] imports
/// `module`; returns the module's version.
pub fn require_python_module(module: &str, how_to_install: &str) -> String {
    let python = python();
    let output = Command::new(&python)
        .args([
            "-c",
            &format!("import {module}; print({module}.__version__)"),
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{python}`: {e}. {how_to_install}"));
    assert!(
        output.status.success(),
        "`{python} -c 'import {module}'` failed ({}): {}. {how_to_install}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    let version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    eprintln!("using {python} with {module} {version}");
    version
}

/// Starts the example `name` and waits until it prints `ready`.
pub fn consumer(name: &str, args: &[&str], ready: &str) -> Program {
    let mut program = Program::start(name, args);
    program.expect(ready);
    program
}
