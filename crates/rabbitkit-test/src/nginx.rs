//! [`LoadBalancer`]: nginx as a TCP load balancer in front of the local
//! cluster, one AMQP URL for the three nodes.
//!
//! The configuration is `nginx/rabbitmq-lb.conf` in this crate (the book
//! shows the same file). nginx runs with its own prefix directory, pid file
//! and log (`<cluster dir>/nginx/`), never as the system's service.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::cluster::Cluster;
use crate::error::{ClusterError, Result};
use crate::process::{find_program, kill_pid, port_open, read_pid_file, run, wait_until};

/// The port nginx listens on (`listen 127.0.0.1:5680` in the configuration).
pub const LB_PORT: u16 = 5680;

/// Where Debian's `libnginx-mod-stream` puts the stream module, which the
/// configuration loads.
const STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

/// How long nginx may take to start listening, or to stop.
const START_STOP: Duration = Duration::from_secs(10);

/// nginx in front of the local cluster, listening on [`LB_PORT`].
///
/// [`LoadBalancer::start`] starts it and returns a guard that stops it
/// when dropped; `cargo xtask lb up` starts one that outlives the command
/// ([`LoadBalancer::keep`]) and `cargo xtask lb down` stops it.
///
/// ```no_run
/// let lb = rabbitkit_test::LoadBalancer::start().unwrap();
/// // amqp://guest:guest@127.0.0.1:5680/%2f: one URL, any live node behind it.
/// let url = lb.url();
/// # let _ = url;
/// ```
#[derive(Debug)]
pub struct LoadBalancer {
    nginx: PathBuf,
    prefix: PathBuf,
    keep: bool,
}

impl LoadBalancer {
    /// The configuration file, `crates/rabbitkit-test/nginx/rabbitmq-lb.conf`.
    pub fn config_file() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("nginx/rabbitmq-lb.conf")
    }

    /// nginx's prefix directory: its pid file and log, under the local
    /// cluster's directory.
    pub fn prefix() -> PathBuf {
        Cluster::local().base_dir().join("nginx")
    }

    /// The nginx program, or why it cannot run: nginx missing, or its
    /// stream module (Debian: `apt-get install nginx-light
    /// libnginx-mod-stream`).
    pub fn nginx() -> Result<PathBuf> {
        let nginx = find_program("nginx").ok_or_else(|| {
            ClusterError::new(
                "nginx is not installed (apt-get install nginx-light libnginx-mod-stream)",
            )
        })?;
        if !Path::new(STREAM_MODULE).is_file() {
            return Err(ClusterError::new(format!(
                "nginx's stream module {STREAM_MODULE} is missing \
                 (apt-get install libnginx-mod-stream)"
            )));
        }
        Ok(nginx)
    }

    /// Whether nginx and its stream module are installed.
    pub fn is_available() -> bool {
        Self::nginx().is_ok()
    }

    /// Starts nginx with [`config_file`](Self::config_file) and waits until
    /// it accepts connections on [`LB_PORT`]. An nginx left running in the
    /// same prefix (by `cargo xtask lb up`, or a test that was killed) is
    /// stopped first. Fails when nginx is missing or the port is taken.
    pub fn start() -> Result<Self> {
        let nginx = Self::nginx()?;
        let prefix = Self::prefix();
        fs::create_dir_all(&prefix)
            .map_err(|e| ClusterError::io(format!("creating {}", prefix.display()), e))?;
        stop_in(&nginx, &prefix)?;
        if port_open(([127, 0, 0, 1], LB_PORT)) {
            return Err(ClusterError::new(format!(
                "port {LB_PORT} is taken by another program: nginx cannot listen on it"
            )));
        }
        let lb = Self {
            nginx,
            prefix,
            keep: false,
        };
        // nginx daemonizes: the command returns once the master runs.
        run(lb.command(), START_STOP)?;
        if !wait_until(START_STOP, || port_open(([127, 0, 0, 1], LB_PORT))) {
            return Err(ClusterError::new(format!(
                "nginx started but does not listen on {LB_PORT}; see {}",
                lb.prefix.join("error.log").display()
            )));
        }
        Ok(lb)
    }

    /// Stops an nginx started in [`prefix`](Self::prefix) (by `cargo xtask
    /// lb up`); nothing when none runs.
    pub fn stop_running() -> Result<()> {
        stop_in(&Self::nginx()?, &Self::prefix())
    }

    /// Whether an nginx started in [`prefix`](Self::prefix) is running.
    pub fn is_running() -> bool {
        read_pid_file(&Self::prefix().join("nginx.pid")).is_some_and(process_exists)
    }

    /// The one URL the clients are given: `amqp://guest:guest@127.0.0.1:5680/%2f`.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{LB_PORT}/%2f")
    }

    /// Leaves nginx running when the guard is dropped.
    pub fn keep(mut self) {
        self.keep = true;
    }

    fn command(&self) -> Command {
        nginx_command(&self.nginx, &self.prefix)
    }
}

impl Drop for LoadBalancer {
    fn drop(&mut self) {
        if !self.keep {
            let _ = stop_in(&self.nginx, &self.prefix);
        }
    }
}

/// `nginx -p PREFIX/ -c CONFIG -e PREFIX/error.log`: every path nginx
/// writes is under the prefix (`-e` covers the log it opens before it has
/// read the configuration).
fn nginx_command(nginx: &Path, prefix: &Path) -> Command {
    let mut cmd = Command::new(nginx);
    // nginx appends relative paths to the prefix as given: end it with '/'.
    cmd.arg("-p")
        .arg(format!("{}/", prefix.display()))
        .arg("-c")
        .arg(LoadBalancer::config_file())
        .arg("-e")
        .arg(prefix.join("error.log"));
    cmd
}

/// Stops the nginx whose pid file is in `prefix` (fast shutdown), and
/// SIGKILLs it when it does not exit in time.
fn stop_in(nginx: &Path, prefix: &Path) -> Result<()> {
    let pid_file = prefix.join("nginx.pid");
    let Some(pid) = read_pid_file(&pid_file).filter(|&pid| process_exists(pid)) else {
        return Ok(());
    };
    let mut stop = nginx_command(nginx, prefix);
    stop.args(["-s", "stop"]);
    let _ = run(stop, START_STOP);
    if !wait_until(START_STOP, || !process_exists(pid)) {
        kill_pid(pid);
    }
    let _ = fs::remove_file(&pid_file);
    if wait_until(START_STOP, || !port_open(([127, 0, 0, 1], LB_PORT))) {
        Ok(())
    } else {
        Err(ClusterError::new(format!(
            "nginx (pid {pid}) was stopped but port {LB_PORT} is still open"
        )))
    }
}

/// Whether `pid` is a live nginx process.
fn process_exists(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|cmdline| cmdline.starts_with("nginx") || cmdline.contains("/nginx"))
}
