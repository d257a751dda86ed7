//! The nodes' processes: starting, waiting for, stopping and killing
//! them, and running `rabbitmqctl` against them.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::thread;
use std::time::Duration;

use super::{Cluster, check_node};
use crate::error::{ClusterError, Result};
use crate::process::{is_live_beam, kill_pid, read_pid_file, run, unix_time, wait_until};

/// How long `rabbitmqctl wait` may take for one node to boot.
pub(super) const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
/// Time limit of ordinary `rabbitmqctl` commands.
pub(super) const CTL_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a killed or stopped node may take to release its port.
pub(super) const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(60);

impl Cluster {
    /// Gets node `n` ready to be spawned: kills a half-started VM, refuses
    /// a port held by another program, removes a stale pid file.
    pub(super) fn prepare_start(&self, n: usize) -> Result<()> {
        if self.pid(n).is_some() {
            // Alive but not serving AMQP: booting after an interrupted start,
            // or its app was stopped. Start over.
            self.kill_node(n)?;
        }
        if self.accepts_connections(n) {
            return Err(ClusterError::new(format!(
                "port 127.0.0.1:{} is taken by a program other than {} (from {}); \
                 stop it first (a default RabbitMQ service? try `rabbitmqctl -n rabbit@$(hostname -s) stop`)",
                self.amqp_port(n),
                self.node_name(n),
                self.node_dir(n).display()
            )));
        }
        match fs::remove_file(self.pid_file(n)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ClusterError::io("removing the stale pid file", e)),
        }
    }

    /// Launches node `n` in the background, in its own process group, with
    /// its output appended to `stdout.log`. Does not wait for it.
    pub(super) fn spawn_node(&self, n: usize) -> Result<()> {
        self.version.share_dir(&self.base)?;
        let dir = self.node_dir(n);
        let log_path = dir.join("stdout.log");
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| ClusterError::io(format!("opening {}", log_path.display()), e))?;
        let _ = io::Write::write_all(
            &mut log,
            format!(
                "\n===== rabbitkit-test: starting {} (unix time {}) =====\n",
                self.node_name(n),
                unix_time()
            )
            .as_bytes(),
        );
        let log_err = log
            .try_clone()
            .map_err(|e| ClusterError::io("duplicating the log file handle", e))?;
        let path = |sub: &str| dir.join(sub).into_os_string();
        let mut cmd = self.command(n, "rabbitmq-server")?;
        cmd.env("RABBITMQ_NODENAME", self.node_name(n))
            .env("RABBITMQ_NODE_PORT", self.amqp_port(n).to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port(n).to_string())
            .env("RABBITMQ_CONFIG_FILE", path("rabbitmq.conf"))
            .env("RABBITMQ_MNESIA_BASE", path("mnesia"))
            .env("RABBITMQ_LOG_BASE", path("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", path("enabled_plugins"))
            .env("RABBITMQ_PLUGINS_EXPAND_DIR", path("plugins-expand"))
            .env("RABBITMQ_PID_FILE", path("pid"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .current_dir(&dir)
            .process_group(0);
        let mut child = cmd
            .spawn()
            .map_err(|e| ClusterError::io(format!("starting {}", self.node_name(n)), e))?;
        // Reap the wrapper when the node exits so it does not linger as a
        // zombie while this process lives; never waited for otherwise.
        thread::spawn(move || {
            let _ = child.wait();
        });
        Ok(())
    }

    /// Waits until node `n` has booted (`rabbitmqctl wait <pid file>`) and
    /// serves AMQP.
    pub(super) fn wait_node(&self, n: usize) -> Result<()> {
        let timeout = BOOT_TIMEOUT.as_secs().to_string();
        let pid_file = self.pid_file(n);
        let pid_file = pid_file.to_string_lossy();
        self.ctl_with_timeout(
            n,
            &["wait", "--timeout", &timeout, &pid_file],
            BOOT_TIMEOUT + Duration::from_secs(30),
        )
        .and_then(|_| {
            wait_until(Duration::from_secs(30), || self.is_running(n))
                .then_some(())
                .ok_or_else(|| {
                    ClusterError::new("booted, but its AMQP port does not accept connections")
                })
        })
        .map_err(|err| {
            ClusterError::new(format!(
                "{} did not start: {err}\n{}",
                self.node_name(n),
                self.log_tails(n)
            ))
        })
    }

    /// [`wait_node`](Self::wait_node) for several nodes at once.
    pub(super) fn wait_nodes(&self, nodes: &[usize]) -> Vec<Result<()>> {
        thread::scope(|scope| {
            let handles: Vec<_> = nodes
                .iter()
                .map(|&n| scope.spawn(move || self.wait_node(n)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(ClusterError::new("waiting thread panicked")))
                })
                .collect()
        })
    }

    /// `rabbitmqctl stop <pid file>`, which returns once the VM has exited.
    pub(super) fn stop_node(&self, n: usize) -> Result<()> {
        let pid_file = self.pid_file(n);
        let pid_file = pid_file.to_string_lossy();
        self.ctl(n, &["stop", &pid_file]).map(drop)
    }

    /// SIGKILLs node `n`'s VM and waits until it is gone.
    pub(super) fn kill_node(&self, n: usize) -> Result<()> {
        let mut pids = self.find_node_processes(n);
        if let Some(pid) =
            read_pid_file(&self.pid_file(n)).filter(|&p| is_live_beam(p) && !pids.contains(&p))
        {
            pids.push(pid);
        }
        for pid in pids {
            kill_pid(pid);
        }
        self.wait_node_gone(n)
    }

    /// Waits until node `n`'s VM has exited and its AMQP port refuses
    /// connections.
    pub(super) fn wait_node_gone(&self, n: usize) -> Result<()> {
        if wait_until(SHUTDOWN_TIMEOUT, || {
            self.pid(n).is_none() && !self.accepts_connections(n)
        }) {
            Ok(())
        } else {
            Err(ClusterError::new(format!(
                "{} still running {} s after being stopped (pid {:?}, port {} open: {})",
                self.node_name(n),
                SHUTDOWN_TIMEOUT.as_secs(),
                self.pid(n),
                self.amqp_port(n),
                self.accepts_connections(n)
            )))
        }
    }

    /// Live `beam.smp` processes whose `RABBITMQ_MNESIA_BASE` is node `n`'s.
    pub(super) fn find_node_processes(&self, n: usize) -> Vec<u32> {
        let wanted = format!("RABBITMQ_MNESIA_BASE={}", self.mnesia_dir(n).display());
        let Ok(entries) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        let mut pids: Vec<u32> = entries
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| is_live_beam(pid))
            .filter(|&pid| {
                fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|env| env.split(|&b| b == 0).any(|var| var == wanted.as_bytes()))
            })
            .collect();
        pids.sort_unstable();
        pids
    }

    /// Runs `rabbitmqctl -n <node n> <args>`, returning its stdout (the
    /// combined output goes into the error on failure).
    pub(super) fn ctl(&self, n: usize, args: &[&str]) -> Result<String> {
        self.ctl_with_timeout(n, args, CTL_TIMEOUT)
    }

    /// Runs `rabbitmqctl -n <node n> ARGS` with this cluster's version of
    /// the CLI (inside its chroot for 4.x) and returns what it printed.
    ///
    /// # Errors
    ///
    /// When the command fails or takes more than 90 s, with its output.
    pub fn rabbitmqctl(&self, n: usize, args: &[&str]) -> Result<String> {
        check_node(n)?;
        self.ctl(n, args)
    }

    /// Runs `PROGRAM -n <node n> ARGS`, a CLI tool of this cluster's
    /// version (`rabbitmqctl`, `rabbitmq-queues`, `rabbitmq-diagnostics`;
    /// inside node `n`'s namespace for [`crate::Netsplit`]), within
    /// `timeout`, and returns what it printed.
    ///
    /// # Errors
    ///
    /// When the command fails or takes longer than `timeout`, with its
    /// output.
    pub fn cli(&self, n: usize, program: &str, args: &[&str], timeout: Duration) -> Result<String> {
        check_node(n)?;
        let mut cmd = self.command(n, program)?;
        cmd.arg("-n").arg(self.node_name(n)).args(args);
        run(cmd, timeout)
    }

    pub(super) fn ctl_with_timeout(
        &self,
        n: usize,
        args: &[&str],
        timeout: Duration,
    ) -> Result<String> {
        let mut cmd = self.command(n, "rabbitmqctl")?;
        cmd.arg("-n").arg(self.node_name(n)).args(args);
        run(cmd, timeout)
    }

    /// A command running `program` of this cluster's version for node
    /// `n`: inside node `n`'s network namespace for the cluster of
    /// [`crate::Netsplit`].
    fn command(&self, n: usize, program: &str) -> Result<std::process::Command> {
        let cmd = self.version.command(program)?;
        Ok(match self.netns {
            None => cmd,
            Some(_) => crate::netsplit::in_namespace(cmd, n),
        })
    }

    /// The last lines of node `n`'s `stdout.log` and main log file.
    pub(super) fn log_tails(&self, n: usize) -> String {
        let dir = self.node_dir(n);
        let mut out = String::new();
        let files = [
            dir.join("stdout.log"),
            dir.join("log").join(format!("{}.log", self.node_name(n))),
        ];
        for file in files {
            if let Ok(text) = fs::read_to_string(&file) {
                let lines: Vec<&str> = text.lines().collect();
                let tail = &lines[lines.len().saturating_sub(30)..];
                out.push_str(&format!("--- last lines of {} ---\n", file.display()));
                for line in tail {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;
    use std::time::Duration;

    use crate::process::run;

    #[test]
    fn run_captures_output_and_failure() {
        let mut ok = Command::new("sh");
        ok.args(["-c", "echo out; echo err >&2"]);
        let out = run(ok, Duration::from_secs(10)).expect("success");
        assert!(out.contains("out") && out.contains("err"), "{out}");

        let mut bad = Command::new("sh");
        bad.args(["-c", "echo boom; exit 3"]);
        let err = run(bad, Duration::from_secs(10)).expect_err("failure");
        assert!(err.message().contains("boom"), "{err}");

        let mut slow = Command::new("sleep");
        slow.arg("30");
        let err = run(slow, Duration::from_millis(300)).expect_err("timeout");
        assert!(err.message().contains("timed out"), "{err}");
    }
}
