//! The local 3-node RabbitMQ cluster: its addresses, files and node control.
//! One file per concept (see the crate's layout section).

mod config;
mod install;
mod join;
mod nodes;
mod status;
mod tls;

use std::fs::{self, File, OpenOptions};
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use crate::error::{ClusterError, Result};
use crate::netsplit::{self, PartitionHandling};
use crate::process::{is_live_beam, kill_pid, port_open, read_pid_file};
use crate::rabbitmq::RabbitMq;

pub use config::{PLUGINS, management_port, stream_port};
pub use status::{ClusterStatus, NodeStatus};
pub use tls::{MTLS_NODE, MTLS_PORT, MTLS_USER, STREAM_TLS_PORT, TLS_PORT};

/// Default base directory of the local cluster.
const DEFAULT_BASE_DIR: &str = "/var/tmp/rabbitkit-cluster";
/// Environment variable overriding [`DEFAULT_BASE_DIR`].
const BASE_DIR_ENV: &str = "RABBITKIT_CLUSTER_DIR";
/// AMQP port of node 1; node `n` listens on `FIRST_AMQP_PORT + n - 1`.
const FIRST_AMQP_PORT: u16 = 5672;
/// Erlang distribution port of node 1.
const FIRST_DIST_PORT: u16 = 25672;

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
    /// `Some` for the partitionable cluster of [`crate::Netsplit`]: each
    /// node in its own network namespace, with the 3.10 partition-handling
    /// mode to configure.
    netns: Option<PartitionHandling>,
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

    /// The same cluster directory, each node in its own network namespace
    /// (see [`crate::Netsplit`], which sets the namespaces up).
    pub(crate) fn in_namespaces(mut self, handling: PartitionHandling) -> Self {
        self.netns = Some(handling);
        self
    }

    /// The partition-handling mode of the cluster of [`crate::Netsplit`];
    /// `None` for the shared cluster.
    pub fn partition_handling(&self) -> Option<PartitionHandling> {
        self.netns
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
            netns: None,
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
        match self.netns {
            None => format!("rabbit{n}@localhost"),
            Some(_) => format!("rabbit@{}", netsplit::host_name(n)),
        }
    }

    /// The address node `n` listens on: `127.0.0.1`, or its own address
    /// on the bridge for the cluster of [`crate::Netsplit`].
    ///
    /// # Panics
    ///
    /// When `n` is not in 1..=3.
    pub fn host(&self, n: usize) -> IpAddr {
        assert_node(n);
        match self.netns {
            None => IpAddr::from([127, 0, 0, 1]),
            Some(_) => IpAddr::V4(netsplit::node_ip(n)),
        }
    }

    /// The AMQP port of node `n`: 5672, 5673 or 5674.
    ///
    /// # Panics
    ///
    /// When `n` is not in 1..=3.
    pub fn amqp_port(&self, n: usize) -> u16 {
        assert_node(n);
        if self.netns.is_some() {
            return FIRST_AMQP_PORT;
        }
        FIRST_AMQP_PORT + (n as u16 - 1)
    }

    /// The Erlang distribution port of node `n`: 25672, 25673 or 25674.
    ///
    /// # Panics
    ///
    /// When `n` is not in 1..=3.
    pub fn dist_port(&self, n: usize) -> u16 {
        assert_node(n);
        if self.netns.is_some() {
            return FIRST_DIST_PORT;
        }
        FIRST_DIST_PORT + (n as u16 - 1)
    }

    /// The port of node `n`'s management UI and HTTP API: 15672, 15673 or
    /// 15674 (user `guest`, password `guest`, like AMQP). `None` for the
    /// partitionable cluster of [`crate::Netsplit`], which does not run
    /// the management plugin.
    ///
    /// # Panics
    ///
    /// When `n` is not in 1..=3.
    pub fn management_port(&self, n: usize) -> Option<u16> {
        match self.netns {
            None => Some(management_port(self.amqp_port(n))),
            Some(_) => None,
        }
    }

    /// Whether node `n`'s management UI accepts TCP connections (`false`
    /// when it has none, see [`management_port`](Self::management_port)).
    pub fn serves_management(&self, n: usize) -> bool {
        self.management_port(n)
            .is_some_and(|port| port_open(SocketAddr::new(self.host(n), port)))
    }

    /// The AMQP URL of node `n`, e.g.
    /// `amqp://guest:guest@127.0.0.1:5673/%2f` for node 2.
    ///
    /// # Panics
    ///
    /// When `n` is not in 1..=3.
    pub fn amqp_url(&self, n: usize) -> String {
        format!(
            "amqp://guest:guest@{}:{}/%2f",
            self.host(n),
            self.amqp_port(n)
        )
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
        Self::nodes().contains(&n) && port_open(SocketAddr::new(self.host(n), self.amqp_port(n)))
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
}

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
}
