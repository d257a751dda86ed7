//! The local 3-node RabbitMQ cluster: files, processes and node control.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::ops::RangeInclusive;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use crate::error::{ClusterError, Result};
use crate::process::{
    is_live_beam, kill_pid, port_open, read_pid_file, run, unix_time, wait_until,
};
use crate::rabbitmq::RabbitMq;

/// Default base directory of the local cluster.
const DEFAULT_BASE_DIR: &str = "/var/tmp/rabbitkit-cluster";
/// Environment variable overriding [`DEFAULT_BASE_DIR`].
const BASE_DIR_ENV: &str = "RABBITKIT_CLUSTER_DIR";
/// AMQP port of node 1; node `n` listens on `FIRST_AMQP_PORT + n - 1`.
const FIRST_AMQP_PORT: u16 = 5672;
/// Erlang distribution port of node 1.
const FIRST_DIST_PORT: u16 = 25672;

/// How long `rabbitmqctl wait` may take for one node to boot.
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
/// Time limit of ordinary `rabbitmqctl` commands.
const CTL_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a killed or stopped node may take to release its port.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(60);

/// State of one node, as reported by [`Cluster::status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    /// Node number, 1 to 3.
    pub index: usize,
    /// Erlang node name, e.g. `rabbit2@localhost`.
    pub name: String,
    /// AMQP port on 127.0.0.1.
    pub amqp_port: u16,
    /// Whether the node serves AMQP: its Erlang VM is alive and its port
    /// accepts TCP connections.
    pub running: bool,
    /// Process id of the node's Erlang VM (`beam.smp`), when it is alive
    /// (it may be alive but not `running`, e.g. while booting).
    pub pid: Option<u32>,
}

/// Snapshot of the cluster, returned by [`Cluster::status`].
///
/// Its [`Display`](fmt::Display) impl prints a table, one line per node,
/// followed by the membership as seen by a running node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterStatus {
    /// The RabbitMQ version the cluster runs.
    pub version: RabbitMq,
    /// The installed package's version (e.g. `4.3.6-1`), when known.
    pub package_version: Option<String>,
    /// The three nodes, node 1 first.
    pub nodes: Vec<NodeStatus>,
    /// The node whose `rabbitmqctl cluster_status` gave the membership
    /// below; `None` when no node could be asked.
    pub reported_by: Option<String>,
    /// Nodes the cluster sees as running (`running_nodes`).
    pub running_nodes: Vec<String>,
    /// Nodes that are members of the cluster, running or not (`disk_nodes`).
    pub disk_nodes: Vec<String>,
    /// Nodes involved in a network partition (`partitions`); normally
    /// empty.
    pub partitioned: Vec<String>,
}

impl ClusterStatus {
    /// Whether all three nodes are running and are running members of one
    /// cluster, without a network partition.
    pub fn is_healthy(&self) -> bool {
        self.partitioned.is_empty()
            && self
                .nodes
                .iter()
                .all(|node| node.running && self.running_nodes.contains(&node.name))
    }

    /// The number of nodes that are running.
    pub fn running_count(&self) -> usize {
        self.nodes.iter().filter(|node| node.running).count()
    }
}

impl fmt::Display for ClusterStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "RabbitMQ {} ({})",
            self.version,
            self.package_version.as_deref().unwrap_or("not installed")
        )?;
        writeln!(
            f,
            "{:<19} {:<16} {:<9} {:<8} IN CLUSTER",
            "NODE", "AMQP", "STATE", "PID"
        )?;
        for node in &self.nodes {
            let state = match (node.running, node.pid) {
                (true, _) => "running",
                (false, Some(_)) => "no amqp",
                (false, None) => "down",
            };
            let pid = node.pid.map_or_else(|| "-".to_owned(), |p| p.to_string());
            let member = if self.running_nodes.contains(&node.name) {
                "yes (running)"
            } else if self.disk_nodes.contains(&node.name) {
                "yes (not running)"
            } else if self.reported_by.is_some() {
                "no"
            } else {
                "?"
            };
            writeln!(
                f,
                "{:<19} {:<16} {:<9} {:<8} {}",
                node.name,
                format!("127.0.0.1:{}", node.amqp_port),
                state,
                pid,
                member
            )?;
        }
        match &self.reported_by {
            Some(by) => {
                writeln!(f, "cluster (as seen by {by}):")?;
                writeln!(f, "  members: {}", self.disk_nodes.join(", "))?;
                write!(f, "  running: {}", self.running_nodes.join(", "))?;
                if !self.partitioned.is_empty() {
                    write!(f, "\n  PARTITIONED: {}", self.partitioned.join(", "))?;
                }
            }
            None => write!(f, "cluster: no node is running")?,
        }
        Ok(())
    }
}

/// The local 3-node RabbitMQ cluster used by the tests.
///
/// Nodes are numbered 1 to 3 ([`Cluster::nodes`]): node `n` is
/// `rabbitN@localhost`, serves AMQP on `127.0.0.1:567(1+n)` (5672, 5673,
/// 5674) and Erlang distribution on `2567(1+n)`; its files live in
/// `<base>/rabbitN/`. The nodes run as user `rabbitmq` via the Debian
/// `rabbitmq-server` wrapper, each in its own process group so that they
/// outlive the process that started them; managing them needs root.
///
/// [`up`](Self::up), [`start`](Self::start), [`stop`](Self::stop),
/// [`kill`](Self::kill) and [`down`](Self::down) hold an exclusive lock on
/// `<base>/.lock` while they work, so parallel test processes calling
/// [`up`](Self::up) at once do not race (threads of one process are
/// serialised the same way): the first brings the cluster up, the others
/// then find it up.
///
/// Node numbers outside 1..=3 make the controlling methods return an error
/// and the address helpers panic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    base: PathBuf,
    version: RabbitMq,
}

impl Cluster {
    /// The number of nodes.
    pub const NODE_COUNT: usize = 3;

    /// The node numbers, `1..=3`.
    pub fn nodes() -> RangeInclusive<usize> {
        1..=Self::NODE_COUNT
    }

    /// The cluster under `$RABBITKIT_CLUSTER_DIR`, or else under
    /// `/var/tmp/rabbitkit-cluster`, running the RabbitMQ version named by
    /// `$RABBITKIT_RABBITMQ` (see [`RabbitMq`]); without that variable, the
    /// version whose nodes are running now, or else [`RabbitMq::default`]
    /// (4.3). Nothing is touched until a method needs it.
    ///
    /// # Panics
    ///
    /// When `$RABBITKIT_RABBITMQ` names no known version.
    pub fn local() -> Self {
        let base = match std::env::var_os(BASE_DIR_ENV) {
            Some(dir) if !dir.is_empty() => Self::with_base_dir(dir),
            _ => Self::with_base_dir(DEFAULT_BASE_DIR),
        };
        match RabbitMq::from_env() {
            Ok(Some(version)) => base.with_version(version),
            Ok(None) => {
                let running = RabbitMq::ALL.into_iter().find(|&v| {
                    let c = base.clone().with_version(v);
                    Self::nodes().any(|n| c.pid(n).is_some())
                });
                base.with_version(running.unwrap_or_default())
            }
            Err(err) => panic!("rabbitkit-test: {err}"),
        }
    }

    /// The same cluster directory, running `version`.
    pub fn with_version(mut self, version: RabbitMq) -> Self {
        self.version = version;
        self
    }

    /// The RabbitMQ version its nodes run.
    pub fn version(&self) -> RabbitMq {
        self.version
    }

    /// The cluster whose files live under `base` (made absolute against
    /// the current directory). Node names and ports are the same for every
    /// base directory, so only one such cluster can run at a time.
    pub fn with_base_dir(base: impl Into<PathBuf>) -> Self {
        let base = base.into();
        let base = if base.is_absolute() {
            base
        } else {
            std::env::current_dir()
                .map(|cwd| cwd.join(&base))
                .unwrap_or(base)
        };
        Self {
            base,
            version: RabbitMq::default(),
        }
    }

    /// The base directory.
    pub fn base_dir(&self) -> &Path {
        &self.base
    }

    /// The directory of node `n`: `<base>/<version>/rabbitN`, e.g.
    /// `/var/tmp/rabbitkit-cluster/4.3/rabbit1` (each version keeps its own
    /// data: they cannot read each other's).
    ///
    /// # Panics
    ///
    /// When `n` is not in 1..=3.
    pub fn node_dir(&self, n: usize) -> PathBuf {
        assert_node(n);
        self.base
            .join(self.version.label())
            .join(format!("rabbit{n}"))
    }

    /// The Erlang node name of node `n`: `rabbitN@localhost`.
    ///
    /// # Panics
    ///
    /// When `n` is not in 1..=3.
    pub fn node_name(&self, n: usize) -> String {
        assert_node(n);
        format!("rabbit{n}@localhost")
    }

    /// The AMQP port of node `n`: 5672, 5673 or 5674.
    ///
    /// # Panics
    ///
    /// When `n` is not in 1..=3.
    pub fn amqp_port(&self, n: usize) -> u16 {
        assert_node(n);
        FIRST_AMQP_PORT + (n as u16 - 1)
    }

    /// The Erlang distribution port of node `n`: 25672, 25673 or 25674.
    ///
    /// # Panics
    ///
    /// When `n` is not in 1..=3.
    pub fn dist_port(&self, n: usize) -> u16 {
        assert_node(n);
        FIRST_DIST_PORT + (n as u16 - 1)
    }

    /// The AMQP URL of node `n`, e.g.
    /// `amqp://guest:guest@127.0.0.1:5673/%2f` for node 2.
    ///
    /// # Panics
    ///
    /// When `n` is not in 1..=3.
    pub fn amqp_url(&self, n: usize) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.amqp_port(n))
    }

    /// The AMQP URLs of the three nodes, node 1 first.
    pub fn amqp_urls(&self) -> Vec<String> {
        Self::nodes().map(|n| self.amqp_url(n)).collect()
    }

    /// The node whose AMQP port is `port` (5672 → 1, 5673 → 2, 5674 → 3).
    pub fn node_for_port(&self, port: u16) -> Option<usize> {
        Self::nodes().find(|&n| self.amqp_port(n) == port)
    }

    /// Whether node `n` is running: its Erlang VM is alive and its AMQP
    /// port accepts TCP connections. `false` for a node number outside
    /// 1..=3.
    pub fn is_running(&self, n: usize) -> bool {
        Self::nodes().contains(&n) && self.pid(n).is_some() && self.accepts_connections(n)
    }

    /// Whether something accepts TCP connections on node `n`'s AMQP port
    /// (without checking that it is node `n`). `false` for a node number
    /// outside 1..=3.
    pub fn accepts_connections(&self, n: usize) -> bool {
        Self::nodes().contains(&n) && port_open(self.amqp_port(n))
    }

    /// Process id of node `n`'s Erlang VM when it is alive: read from the
    /// node's pid file, or else found among the running `beam.smp`
    /// processes by the node's data directory.
    pub fn pid(&self, n: usize) -> Option<u32> {
        if !Self::nodes().contains(&n) {
            return None;
        }
        if let Some(pid) = read_pid_file(&self.pid_file(n)).filter(|&p| is_live_beam(p)) {
            return Some(pid);
        }
        self.find_node_processes(n).into_iter().next()
    }

    /// Whether this cluster's RabbitMQ version is installed.
    pub fn is_installed(&self) -> bool {
        self.version.is_installed()
    }

    /// Installs this cluster's RabbitMQ version when it is missing (see
    /// [`RabbitMq::install`]). Needs root. Only `cargo xtask broker up`
    /// (and the xtask workflows that bring the cluster up) call it: tests
    /// never install anything.
    pub fn install(&self) -> Result<()> {
        self.version.install()
    }

    /// An error unless this cluster's RabbitMQ version is installed; it
    /// names the command that installs it.
    fn check_installed(&self) -> Result<()> {
        if self.is_installed() {
            Ok(())
        } else {
            Err(self.version.not_installed())
        }
    }

    /// Brings the cluster up; a no-op when it is already healthy.
    ///
    /// Writes the node directories, starts every node that is not running
    /// and waits for it, then joins nodes 2 and 3 to `rabbit1@localhost`
    /// when they are not running members of its cluster. A node that does
    /// not boot, or that refuses to join, is stopped, forgotten by the
    /// cluster, wiped (its `mnesia/` directory) and started and joined
    /// again. Takes about 30 s from a cold state.
    ///
    /// # Errors
    ///
    /// When RabbitMQ is not installed: [`install`](Self::install) first
    /// (`cargo xtask broker up` does both).
    pub fn up(&self) -> Result<()> {
        self.check_installed()?;
        let _lock = self.lock()?;
        self.stop_other_versions()?;
        self.prepare_dirs()?;

        let to_start: Vec<usize> = Self::nodes().filter(|&n| !self.is_running(n)).collect();
        for &n in &to_start {
            self.prepare_start(n)?;
        }
        for &n in &to_start {
            self.spawn_node(n)?;
        }
        let results = self.wait_nodes(&to_start);
        for (n, result) in to_start.iter().copied().zip(results) {
            if let Err(err) = result {
                eprintln!(
                    "rabbitkit-test: {} did not boot, wiping its data and retrying: {err}",
                    self.node_name(n)
                );
                self.wipe_node(n)?;
                self.spawn_node(n)?;
                self.wait_node(n)?;
            }
        }
        self.form_cluster()
    }

    /// Stops every node: `rabbitmqctl stop` on each (node 3, then 2, then
    /// 1), then SIGKILL for anything left of the nodes' Erlang VMs, then
    /// waits until the AMQP ports are closed. Data is kept, so the next
    /// [`up`](Self::up) restarts the same cluster.
    pub fn down(&self) -> Result<()> {
        let _lock = self.lock_if_present()?;
        self.down_locked()
    }

    /// Stops the nodes of every other version that runs from this
    /// directory: they use the same ports.
    fn stop_other_versions(&self) -> Result<()> {
        for version in RabbitMq::ALL {
            if version == self.version {
                continue;
            }
            let other = self.clone().with_version(version);
            if Self::nodes().any(|n| other.pid(n).is_some()) {
                eprintln!(
                    "rabbitkit-test: stopping the RabbitMQ {version} cluster to start {}",
                    self.version
                );
                other.down_locked()?;
            }
        }
        Ok(())
    }

    fn down_locked(&self) -> Result<()> {
        let mut errors = Vec::new();
        for n in Self::nodes().rev() {
            if self.pid(n).is_some()
                && let Err(err) = self.stop_node(n)
            {
                eprintln!(
                    "rabbitkit-test: graceful stop of {} failed, killing it: {err}",
                    self.node_name(n)
                );
            }
            for pid in self.find_node_processes(n) {
                kill_pid(pid);
            }
            if let Err(err) = self.wait_node_gone(n) {
                errors.push(err.to_string());
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ClusterError::new(errors.join("\n")))
        }
    }

    /// The state of each node and the cluster membership, asked of the
    /// first running node (preferring node 1).
    pub fn status(&self) -> Result<ClusterStatus> {
        let nodes: Vec<NodeStatus> = Self::nodes()
            .map(|n| NodeStatus {
                index: n,
                name: self.node_name(n),
                amqp_port: self.amqp_port(n),
                running: self.is_running(n),
                pid: self.pid(n),
            })
            .collect();
        let mut status = ClusterStatus {
            version: self.version,
            package_version: self.version.package_version(),
            nodes,
            reported_by: None,
            running_nodes: Vec::new(),
            disk_nodes: Vec::new(),
            partitioned: Vec::new(),
        };
        let reporters: Vec<usize> = status
            .nodes
            .iter()
            .filter(|node| node.running)
            .map(|node| node.index)
            .collect();
        let mut last_error = None;
        for n in reporters {
            match self.membership(n) {
                Ok(membership) => {
                    status.reported_by = Some(self.node_name(n));
                    status.running_nodes = membership.running_nodes;
                    status.disk_nodes = membership.disk_nodes;
                    status.partitioned = membership.partitioned;
                    return Ok(status);
                }
                Err(err) => last_error = Some(err),
            }
        }
        match last_error {
            Some(err) if status.running_count() > 0 => Err(err),
            _ => Ok(status),
        }
    }

    /// Kills node `n` abruptly: SIGKILL to its Erlang VM (pid from its pid
    /// file), then waits until its AMQP port refuses connections. A no-op
    /// for a node that is not running. The node keeps its data; start it
    /// again with [`start`](Self::start).
    pub fn kill(&self, n: usize) -> Result<()> {
        check_node(n)?;
        let _lock = self.lock()?;
        self.kill_node(n)
    }

    /// Stops node `n` gracefully (`rabbitmqctl -n rabbitN@localhost stop`):
    /// clients get a `connection.close` and the cluster is told. A no-op for
    /// a node that is not running.
    pub fn stop(&self, n: usize) -> Result<()> {
        check_node(n)?;
        let _lock = self.lock()?;
        if self.pid(n).is_none() {
            return Ok(());
        }
        self.stop_node(n)?;
        self.wait_node_gone(n)
    }

    /// Starts node `n` and waits until it serves AMQP. Its data directory
    /// remembers the cluster, so it rejoins the other nodes by itself. A
    /// no-op for a node that is running.
    ///
    /// Meant for bringing back one node while others run. A node that was
    /// not the last one to go down waits at boot (up to about 100 s) for a
    /// peer that has the latest cluster data; so after taking *every* node
    /// down, call [`up`](Self::up), which starts them all at once, rather
    /// than starting them one by one.
    ///
    /// # Errors
    ///
    /// When RabbitMQ is not installed (see [`up`](Self::up)), or the node
    /// does not boot.
    pub fn start(&self, n: usize) -> Result<()> {
        check_node(n)?;
        self.check_installed()?;
        let _lock = self.lock()?;
        self.prepare_dirs()?;
        if self.is_running(n) {
            return Ok(());
        }
        self.prepare_start(n)?;
        self.spawn_node(n)?;
        self.wait_node(n)
    }

    // ----- files -------------------------------------------------------

    fn pid_file(&self, n: usize) -> PathBuf {
        self.node_dir(n).join("pid")
    }

    fn mnesia_dir(&self, n: usize) -> PathBuf {
        self.node_dir(n).join("mnesia")
    }

    /// Takes the exclusive lock on `<base>/.lock`, creating the base
    /// directory when needed.
    fn lock(&self) -> Result<File> {
        fs::create_dir_all(&self.base)
            .map_err(|e| ClusterError::io(format!("creating {}", self.base.display()), e))?;
        let path = self.base.join(".lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| ClusterError::io(format!("opening {}", path.display()), e))?;
        file.lock()
            .map_err(|e| ClusterError::io(format!("locking {}", path.display()), e))?;
        Ok(file)
    }

    /// Like [`lock`](Self::lock), but creates nothing when the base
    /// directory does not exist.
    fn lock_if_present(&self) -> Result<Option<File>> {
        if self.base.is_dir() {
            self.lock().map(Some)
        } else {
            Ok(None)
        }
    }

    /// Where the test TLS files live: `ca.pem` (the CA that signed the
    /// server certificate of node 1's TLS listener, for `localhost` only),
    /// `other-ca.pem` (a CA that signed nothing, to test refusals),
    /// `server.pem`, `server.key`.
    pub fn tls_dir(&self) -> PathBuf {
        self.base.join("tls")
    }

    /// An `amqps://` URL of node 1's TLS listener ([`TLS_PORT`]), by host name.
    pub fn amqps_url(&self) -> String {
        format!("amqps://guest:guest@localhost:{TLS_PORT}/%2f")
    }

    /// Makes the test CA and node 1's server certificate once, with `openssl`.
    fn prepare_tls(&self) -> Result<()> {
        let dir = self.tls_dir();
        if ["ca.pem", "other-ca.pem", "server.pem", "server.key"]
            .iter()
            .all(|f| dir.join(f).exists())
        {
            return Ok(());
        }
        fs::create_dir_all(&dir)
            .map_err(|e| ClusterError::io(format!("creating {}", dir.display()), e))?;
        fs::write(
            dir.join("server.ext"),
            "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )
        .map_err(|e| ClusterError::io("writing server.ext", e))?;
        let steps: [&[&str]; 4] = [
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "3650",
                "-subj",
                "/CN=rabbitkit test CA",
            ],
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "other-ca.key",
                "-out",
                "other-ca.pem",
                "-days",
                "3650",
                "-subj",
                "/CN=rabbitkit other CA",
            ],
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-days",
                "3650",
                "-extfile",
                "server.ext",
            ],
        ];
        for args in steps {
            let mut cmd = Command::new("openssl");
            cmd.args(args).current_dir(&dir);
            run(cmd, CTL_TIMEOUT)?;
        }
        Ok(())
    }

    /// Creates every node directory with its configuration, owned by user
    /// `rabbitmq`.
    fn prepare_dirs(&self) -> Result<()> {
        self.prepare_tls()?;
        for n in Self::nodes() {
            let dir = self.node_dir(n);
            for sub in ["mnesia", "log", "plugins-expand"] {
                let path = dir.join(sub);
                fs::create_dir_all(&path)
                    .map_err(|e| ClusterError::io(format!("creating {}", path.display()), e))?;
            }
            let write = |name: &str, contents: String| {
                let path = dir.join(name);
                if fs::read_to_string(&path).ok().as_deref() == Some(contents.as_str()) {
                    return Ok(());
                }
                fs::write(&path, contents)
                    .map_err(|e| ClusterError::io(format!("writing {}", path.display()), e))
            };
            let tls = (n == 1).then(|| self.tls_dir());
            write(
                "rabbitmq.conf",
                node_config(self.version, self.amqp_port(n), tls.as_deref()),
            )?;
            write("enabled_plugins", "[].\n".to_owned())?;
        }
        self.chown_node_dirs()
    }

    fn chown_node_dirs(&self) -> Result<()> {
        let mut paths: Vec<PathBuf> = Self::nodes().map(|n| self.node_dir(n)).collect();
        paths.push(self.tls_dir());
        self.version.share_dir(&self.base)?;
        self.version.chown_to_rabbitmq(&paths)
    }

    /// Stops node `n`'s VM if any, makes the cluster forget it, and deletes
    /// its data directory.
    fn wipe_node(&self, n: usize) -> Result<()> {
        self.kill_node(n)?;
        if n != 1 && self.is_running(1) {
            // Fails harmlessly when rabbit1 does not know the node.
            let _ = self.ctl(1, &["forget_cluster_node", &self.node_name(n)]);
        }
        let mnesia = self.mnesia_dir(n);
        match fs::remove_dir_all(&mnesia) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(ClusterError::io(
                    format!("removing {}", mnesia.display()),
                    e,
                ));
            }
        }
        self.prepare_dirs()
    }

    // ----- processes ---------------------------------------------------

    /// Gets node `n` ready to be spawned: kills a half-started VM, refuses
    /// a port held by another program, removes a stale pid file.
    fn prepare_start(&self, n: usize) -> Result<()> {
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
    fn spawn_node(&self, n: usize) -> Result<()> {
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
        let mut cmd = self.version.command("rabbitmq-server")?;
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
    fn wait_node(&self, n: usize) -> Result<()> {
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
    fn wait_nodes(&self, nodes: &[usize]) -> Vec<Result<()>> {
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
    fn stop_node(&self, n: usize) -> Result<()> {
        let pid_file = self.pid_file(n);
        let pid_file = pid_file.to_string_lossy();
        self.ctl(n, &["stop", &pid_file]).map(drop)
    }

    /// SIGKILLs node `n`'s VM and waits until it is gone.
    fn kill_node(&self, n: usize) -> Result<()> {
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
    fn wait_node_gone(&self, n: usize) -> Result<()> {
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
    fn find_node_processes(&self, n: usize) -> Vec<u32> {
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

    // ----- clustering --------------------------------------------------

    /// Joins nodes 2 and 3 to rabbit1 unless they are running members
    /// already, repairing those that refuse; then checks the result.
    fn form_cluster(&self) -> Result<()> {
        let first = self.node_name(1);
        let mut membership = self.membership(1)?;
        for n in 2..=3 {
            let name = self.node_name(n);
            if membership.disk_nodes.contains(&name) && !membership.running_nodes.contains(&name) {
                // A member that was just started may take a moment to show.
                wait_until(Duration::from_secs(3), || {
                    self.membership(1)
                        .map(|m| membership = m)
                        .is_ok_and(|()| membership.running_nodes.contains(&name))
                });
            }
            if membership.running_nodes.contains(&name) {
                continue;
            }
            let joined = if membership.disk_nodes.contains(&name) {
                // rabbit1 counts it as a member, yet it runs on its own (its
                // data was lost): joining would fail as inconsistent.
                Err(ClusterError::new(format!(
                    "{first} lists {name} as a member but {name} is not part of its cluster"
                )))
            } else {
                eprintln!("rabbitkit-test: joining {name} to {first}");
                self.join(n)
            };
            if let Err(err) = joined {
                eprintln!(
                    "rabbitkit-test: repairing {name}: wiping its data and joining it again ({err})"
                );
                self.wipe_node(n)?;
                self.spawn_node(n)?;
                self.wait_node(n)?;
                self.join(n)?;
            }
        }
        self.heal_partitions()?;
        let wanted: Vec<String> = Self::nodes().map(|n| self.node_name(n)).collect();
        let mut membership = None;
        let formed = wait_until(Duration::from_secs(30), || {
            let m = self.membership(1).ok();
            let ok = m.as_ref().is_some_and(|m| {
                wanted.iter().all(|w| m.running_nodes.contains(w)) && m.partitioned.is_empty()
            });
            membership = m;
            ok
        });
        if formed {
            if self.version.is_4() {
                // As RabbitMQ's upgrade guide asks once every node runs.
                self.ctl(1, &["enable_feature_flag", "all"])?;
            }
            Ok(())
        } else {
            Err(ClusterError::new(format!(
                "the cluster did not form: {first} reports {membership:?}"
            )))
        }
    }

    /// When the cluster reports a network partition, restarts the RabbitMQ
    /// application (`stop_app`, `start_app`) of every partitioned node
    /// except rabbit1, which is trusted: they resynchronise from it.
    fn heal_partitions(&self) -> Result<()> {
        let membership = self.membership(1)?;
        if membership.partitioned.is_empty() {
            return Ok(());
        }
        eprintln!(
            "rabbitkit-test: network partition between {}; restarting all but {}",
            membership.partitioned.join(", "),
            self.node_name(1)
        );
        for n in 2..=Self::NODE_COUNT {
            if membership.partitioned.contains(&self.node_name(n)) {
                self.ctl(n, &["stop_app"])?;
                self.ctl(n, &["start_app"])?;
            }
        }
        Ok(())
    }

    /// `stop_app`, `reset`, `join_cluster rabbit1@localhost`, `start_app`
    /// on node `n`.
    fn join(&self, n: usize) -> Result<()> {
        let first = self.node_name(1);
        self.ctl(n, &["stop_app"])?;
        self.ctl(n, &["reset"])?;
        self.ctl(n, &["join_cluster", &first])?;
        self.ctl(n, &["start_app"])?;
        if wait_until(Duration::from_secs(30), || self.is_running(n)) {
            Ok(())
        } else {
            Err(ClusterError::new(format!(
                "{} joined but does not accept AMQP connections",
                self.node_name(n)
            )))
        }
    }

    /// Cluster membership as seen by node `n`.
    fn membership(&self, n: usize) -> Result<Membership> {
        let out = self.ctl(n, &["cluster_status", "--formatter", "json"])?;
        parse_cluster_status(&out).ok_or_else(|| {
            ClusterError::new(format!(
                "cannot parse `rabbitmqctl -n {} cluster_status --formatter json`:\n{out}",
                self.node_name(n)
            ))
        })
    }

    // ----- commands ----------------------------------------------------

    /// Runs `rabbitmqctl -n <node n> <args>`, returning its stdout (the
    /// combined output goes into the error on failure).
    fn ctl(&self, n: usize, args: &[&str]) -> Result<String> {
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

    fn ctl_with_timeout(&self, n: usize, args: &[&str], timeout: Duration) -> Result<String> {
        let mut cmd = self.version.command("rabbitmqctl")?;
        cmd.arg("-n").arg(self.node_name(n)).args(args);
        run(cmd, timeout)
    }

    /// The last lines of node `n`'s `stdout.log` and main log file.
    fn log_tails(&self, n: usize) -> String {
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

/// Cluster membership from `rabbitmqctl cluster_status --formatter json`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Membership {
    disk_nodes: Vec<String>,
    running_nodes: Vec<String>,
    /// Nodes involved in a network partition (sorted, deduplicated).
    partitioned: Vec<String>,
}

/// Parses the JSON printed by `rabbitmqctl cluster_status --formatter
/// json`, tolerating log lines around it.
fn parse_cluster_status(out: &str) -> Option<Membership> {
    let start = out.find('{')?;
    let end = out.rfind('}')?;
    let value: serde_json::Value = serde_json::from_str(out.get(start..=end)?).ok()?;
    let names = |key: &str| -> Option<Vec<String>> {
        let list = value.get(key)?.as_array()?;
        let mut names: Vec<String> = list
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<_>>()?;
        names.sort();
        Some(names)
    };
    // "partitions": {"node": ["nodes it is partitioned from"], ...}
    let mut partitioned: Vec<String> = Vec::new();
    if let Some(map) = value.get("partitions").and_then(|p| p.as_object()) {
        for (node, others) in map {
            let others: Vec<&str> = others
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
                .unwrap_or_default();
            if !others.is_empty() {
                partitioned.push(node.clone());
                partitioned.extend(others.into_iter().map(str::to_owned));
            }
        }
    }
    partitioned.sort();
    partitioned.dedup();
    Some(Membership {
        disk_nodes: names("disk_nodes")?,
        running_nodes: names("running_nodes")?,
        partitioned,
    })
}

/// The `rabbitmq.conf` of the node listening on `port`, with a TLS
/// listener when `tls` names the directory of its certificates.
fn node_config(version: RabbitMq, port: u16, tls: Option<&Path>) -> String {
    let tls = match tls {
        Some(dir) => format!(
            "listeners.ssl.default = 127.0.0.1:{TLS_PORT}\n\
             ssl_options.cacertfile = {d}/ca.pem\n\
             ssl_options.certfile = {d}/server.pem\n\
             ssl_options.keyfile = {d}/server.key\n\
             ssl_options.verify = verify_none\n\
             ssl_options.fail_if_no_peer_cert = false\n",
            d = dir.display()
        ),
        None => String::new(),
    };
    tls + &format!(
        "# Written by rabbitkit-test; rewritten on every start.\n\
         listeners.tcp.default = 127.0.0.1:{port}\n\
         loopback_users = none\n\
         log.console = false\n\
         log.file.level = info\n\
         # Small enough that a test can exceed it cheaply (see MAX_MESSAGE_SIZE).\n\
         max_message_size = 8388608\n"
    ) + if version.is_4() {
        // RabbitMQ 4.3.0 refused transient non-exclusive queues by default
        // and later releases will again: refuse them here so the suite
        // shows rabbitkit never needs them.
        "deprecated_features.permit.transient_nonexcl_queues = false\n"
    } else {
        // Do not wait 5 minutes for peers that will not come back.
        "mnesia_table_loading_retry_timeout = 5000\n\
         mnesia_table_loading_retry_limit = 20\n"
    }
}

/// The TLS (`amqps`) port of node 1.
pub const TLS_PORT: u16 = 5671;

fn check_node(n: usize) -> Result<()> {
    if Cluster::nodes().contains(&n) {
        Ok(())
    } else {
        Err(ClusterError::new(format!(
            "no node {n}: nodes are numbered 1 to 3"
        )))
    }
}

fn assert_node(n: usize) {
    assert!(
        Cluster::nodes().contains(&n),
        "no node {n}: nodes are numbered 1 to 3"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> Cluster {
        Cluster::with_base_dir("/nonexistent/rabbitkit")
    }

    #[test]
    fn names_ports_and_urls() {
        let c = cluster();
        assert_eq!(c.node_name(2), "rabbit2@localhost");
        assert_eq!(c.amqp_port(1), 5672);
        assert_eq!(c.amqp_port(3), 5674);
        assert_eq!(c.dist_port(2), 25673);
        assert_eq!(c.amqp_url(2), "amqp://guest:guest@127.0.0.1:5673/%2f");
        assert_eq!(c.amqp_urls().len(), 3);
        assert_eq!(
            c.node_dir(3),
            PathBuf::from("/nonexistent/rabbitkit/4.3/rabbit3")
        );
        assert_eq!(
            c.with_version(RabbitMq::V3_10).node_dir(1),
            PathBuf::from("/nonexistent/rabbitkit/3.10/rabbit1")
        );
    }

    #[test]
    fn port_to_node() {
        let c = cluster();
        assert_eq!(c.node_for_port(5672), Some(1));
        assert_eq!(c.node_for_port(5673), Some(2));
        assert_eq!(c.node_for_port(5674), Some(3));
        assert_eq!(c.node_for_port(5675), None);
        assert_eq!(c.node_for_port(25672), None);
    }

    #[test]
    #[should_panic(expected = "no node 4")]
    fn node_out_of_range_panics() {
        cluster().amqp_url(4);
    }

    #[test]
    fn node_out_of_range_errors() {
        assert!(cluster().kill(0).is_err());
        assert!(!cluster().is_running(4));
        assert_eq!(cluster().pid(4), None);
    }

    #[test]
    fn relative_base_dir_is_made_absolute() {
        assert!(Cluster::with_base_dir("rel").base_dir().is_absolute());
    }

    #[test]
    fn parses_cluster_status() {
        let out = r#"2024-01-01 00:00:00 [info] some log line
{"alarms":[],"cluster_name":"rabbit1@localhost","disk_nodes":["rabbit1@localhost","rabbit2@localhost","rabbit3@localhost"],"feature_flags":[{"name":"quorum_queue","state":"enabled"}],"listeners":{"rabbit1@localhost":[{"interface":"127.0.0.1","node":"rabbit1@localhost","port":5672,"protocol":"amqp","purpose":"AMQP 0-9-1 and AMQP 1.0"}]},"maintenance_status":{},"network_partitions":{},"partitions":{},"ram_nodes":[],"running_nodes":["rabbit3@localhost","rabbit1@localhost"],"versions":{}}
"#;
        let m = parse_cluster_status(out).expect("parsed");
        assert_eq!(
            m.disk_nodes,
            [
                "rabbit1@localhost",
                "rabbit2@localhost",
                "rabbit3@localhost"
            ]
        );
        assert_eq!(m.running_nodes, ["rabbit1@localhost", "rabbit3@localhost"]);
        assert!(m.partitioned.is_empty());

        let split = r#"{"disk_nodes":["a","b","c"],"running_nodes":["a","b","c"],"partitions":{"b":["a"],"c":[]}}"#;
        assert_eq!(parse_cluster_status(split).unwrap().partitioned, ["a", "b"]);
    }

    #[test]
    fn rejects_garbage_cluster_status() {
        assert_eq!(parse_cluster_status("Error: unable to connect"), None);
        assert_eq!(parse_cluster_status("{\"running_nodes\": []}"), None);
        assert_eq!(parse_cluster_status("{not json}"), None);
    }

    #[test]
    fn config_has_listener_and_loopback() {
        let conf = node_config(RabbitMq::V3_10, 5673, None);
        assert!(conf.contains("listeners.tcp.default = 127.0.0.1:5673\n"));
        assert!(conf.contains("loopback_users = none\n"));
        assert!(conf.contains("mnesia_table_loading_retry_timeout"));
        let conf = node_config(RabbitMq::V4_3, 5672, None);
        assert!(!conf.contains("mnesia"), "4.3 has no Mnesia: {conf}");
        assert!(conf.contains("transient_nonexcl_queues = false"));
    }

    #[test]
    fn status_table() {
        let status = ClusterStatus {
            version: RabbitMq::V4_3,
            package_version: Some("4.3.6-1".into()),
            nodes: Cluster::nodes()
                .map(|n| NodeStatus {
                    index: n,
                    name: format!("rabbit{n}@localhost"),
                    amqp_port: 5671 + n as u16,
                    running: n != 2,
                    pid: (n != 2).then_some(100 + n as u32),
                })
                .collect(),
            reported_by: Some("rabbit1@localhost".into()),
            running_nodes: vec!["rabbit1@localhost".into(), "rabbit3@localhost".into()],
            disk_nodes: Cluster::nodes()
                .map(|n| format!("rabbit{n}@localhost"))
                .collect(),
            partitioned: Vec::new(),
        };
        assert!(!status.is_healthy());
        assert_eq!(status.running_count(), 2);
        let table = status.to_string();
        assert!(table.starts_with("RabbitMQ 4.3 (4.3.6-1)\n"), "{table}");
        assert!(
            table.contains("rabbit2@localhost   127.0.0.1:5673   down"),
            "{table}"
        );
        assert!(table.contains("yes (not running)"), "{table}");
        assert!(
            table.contains("running: rabbit1@localhost, rabbit3@localhost"),
            "{table}"
        );
    }

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
