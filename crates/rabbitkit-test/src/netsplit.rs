//! [`Netsplit`]: a 3-node cluster whose network can be cut, for partition
//! tests.
//!
//! The shared cluster ([`Cluster::local`]) runs on the loopback, where no
//! node can be cut off from another. This one gives each node a network of
//! its own, all on this machine:
//!
//! * a bridge [`BRIDGE`] (`rk-br0`, `10.77.0.1/24`) on the host, where the
//!   clients (the tests) live;
//! * three network namespaces `rk-n1`..`rk-n3`, each with a veth into the
//!   bridge, its own address `10.77.0.11`..`13`, its loopback up and its own
//!   Erlang port mapper (epmd, started by the node inside its namespace);
//! * node `n` is `rabbit@rknN` (the names `rkn1`..`rkn3` are added to the
//!   host's `/etc/hosts`, which the 4.x chroots copy), serves AMQP on
//!   `10.77.0.1N:5672`, keeps its files under
//!   `/var/tmp/rabbitkit-netsplit/<version>/rabbitN/`, and is started with
//!   `ip netns exec rk-nN [chroot ROOT] rabbitmq-server` by the same code
//!   as the shared cluster's nodes ([`Cluster`] with a namespace layout).
//!
//! A cut is a set of `iptables` `DROP` rules inside a node's namespace:
//! [`Netsplit::cut`] drops its traffic with the other nodes (a partition:
//! that node is the minority), [`Netsplit::cut_from_clients`] its traffic
//! with the host (clients), [`Netsplit::heal`] removes every rule. Packets
//! are dropped, not refused: both sides see silence, as in a real
//! partition.
//!
//! On RabbitMQ 3.10 (Mnesia) the nodes run with the chosen
//! `cluster_partition_handling` ([`PartitionHandling`]); RabbitMQ 4.x
//! (Khepri) ignores that setting, so it is not written. Both run with
//! `net_ticktime` = [`NET_TICKTIME_SECS`] s (RabbitMQ's default is 60 s) so
//! that a partition is noticed within seconds and runs stay short.
//!
//! Everything is torn down by [`Netsplit::teardown`]: every process in the
//! namespaces (nodes, epmd), the rules, the namespaces, the bridge and the
//! `/etc/hosts` lines. It runs when a [`Netsplit`] is dropped (also on a
//! panic), before every [`Netsplit::up`], and from `cargo xtask netsplit
//! down`. Everything needs root, `ip` (iproute2) and `iptables`
//! ([`Netsplit::unavailable`] says what is missing).

use std::fmt;
use std::fs;
use std::net::Ipv4Addr;
use std::process::Command;
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::cluster::Cluster;
use crate::error::{ClusterError, Result};
use crate::process::{find_program, is_root, kill_pid, run, wait_until};
use crate::rabbitmq::RabbitMq;

/// The bridge the namespaces are plugged into; the host's address on it
/// is `10.77.0.1`.
pub const BRIDGE: &str = "rk-br0";
/// The base directory of the partitionable cluster's files.
pub const NETSPLIT_DIR: &str = "/var/tmp/rabbitkit-netsplit";
/// The Erlang distribution's `net_ticktime` of the partitionable cluster,
/// in seconds: a peer silent for about this long is considered down.
pub const NET_TICKTIME_SECS: u32 = 10;

/// The host's address on [`BRIDGE`]: where clients come from.
const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// Marks the `/etc/hosts` lines this module owns.
const HOSTS_MARK: &str = "# rabbitkit-netsplit";
/// Time limit of `ip` and `iptables` commands.
const NET_TIMEOUT: Duration = Duration::from_secs(20);

/// How long after a heal [`Netsplit::wait_healed`] waits for a RabbitMQ
/// 3.10 node before it kills and restarts it.
pub const STUCK_AFTER: Duration = Duration::from_secs(30);

/// What [`Netsplit::wait_healed`] saw and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Healed {
    /// From the call to a whole cluster.
    pub took: Duration,
    /// What it did as an operator (empty when the broker healed by
    /// itself), each prefixed with when, from the call: `+31.0 s: killed
    /// and started rabbit@rkn2`.
    pub actions: Vec<String>,
}

/// What a RabbitMQ 3.10 node does when it finds itself partitioned
/// (`cluster_partition_handling`); RabbitMQ 4 ignores it.
///
/// ```
/// use rabbitkit_test::PartitionHandling;
/// assert_eq!("pause_minority".parse::<PartitionHandling>().unwrap(), PartitionHandling::PauseMinority);
/// assert_eq!(PartitionHandling::default().to_string(), "ignore");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PartitionHandling {
    /// Both sides go on (RabbitMQ's default): the minority node keeps its
    /// clients' connections.
    #[default]
    Ignore,
    /// A node that sees a minority of the cluster pauses: it closes its
    /// clients' connections and refuses new ones until the partition heals.
    PauseMinority,
    /// After the partition heals, the side with fewer clients restarts.
    Autoheal,
}

impl PartitionHandling {
    /// Every mode.
    pub const ALL: [PartitionHandling; 3] = [Self::Ignore, Self::PauseMinority, Self::Autoheal];

    /// The configuration value: `ignore`, `pause_minority`, `autoheal`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Ignore => "ignore",
            Self::PauseMinority => "pause_minority",
            Self::Autoheal => "autoheal",
        }
    }
}

impl fmt::Display for PartitionHandling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

impl FromStr for PartitionHandling {
    type Err = ClusterError;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|m| m.label() == s.trim().replace('-', "_"))
            .ok_or_else(|| {
                ClusterError::new(format!(
                    "unknown partition handling `{s}`: expected ignore, pause_minority or autoheal"
                ))
            })
    }
}

/// The host name of node `n`: `rkn1`..`rkn3`.
pub(crate) fn host_name(n: usize) -> String {
    format!("rkn{n}")
}

/// The address of node `n` on the bridge: `10.77.0.11`..`13`.
pub(crate) fn node_ip(n: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 0, 10 + n as u8)
}

/// The network namespace of node `n`: `rk-n1`..`rk-n3`.
fn namespace(n: usize) -> String {
    format!("rk-n{n}")
}

/// `cmd` run inside node `n`'s namespace (`ip netns exec rk-nN ...`),
/// with its environment and directory, and the short `net_ticktime` for
/// both the server and the CLI.
pub(crate) fn in_namespace(cmd: Command, n: usize) -> Command {
    let mut out = Command::new("ip");
    out.args(["netns", "exec", &namespace(n)])
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => out.env(key, value),
            None => out.env_remove(key),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        out.current_dir(dir);
    }
    let ticktime = format!("-kernel net_ticktime {NET_TICKTIME_SECS}");
    out.env("RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS", &ticktime)
        .env("RABBITMQ_CTL_ERL_ARGS", &ticktime);
    out
}

/// The `rabbitmq.conf` of a node of the partitionable cluster.
pub(crate) fn node_config(version: RabbitMq, handling: PartitionHandling) -> String {
    let mut conf = String::from(
        "# Written by rabbitkit-test (netsplit); rewritten on every start.\n\
         listeners.tcp.default = 5672\n\
         loopback_users = none\n\
         log.console = false\n\
         log.file.level = info\n",
    );
    if !version.is_4() {
        conf.push_str(&format!(
            "cluster_partition_handling = {handling}\n\
             mnesia_table_loading_retry_timeout = 5000\n\
             mnesia_table_loading_retry_limit = 20\n"
        ));
    }
    conf
}

/// Runs a command (`ip`, `iptables`), returning its output.
fn cmd(program: &str, args: &[&str]) -> Result<String> {
    let mut c = Command::new(program);
    c.args(args);
    run(c, NET_TIMEOUT)
}

/// `iptables ARGS` inside node `n`'s namespace.
fn iptables(n: usize, args: &[&str]) -> Result<String> {
    let ns = namespace(n);
    let mut all = vec!["netns", "exec", &ns, "iptables", "-w"];
    all.extend_from_slice(args);
    cmd("ip", &all)
}

/// A partitionable 3-node cluster (see the module's docs): set up by
/// [`up`](Self::up), torn down when dropped unless [`keep`](Self::keep)
/// is called.
#[derive(Debug)]
pub struct Netsplit {
    cluster: Cluster,
    keep: bool,
}

impl Netsplit {
    /// What is missing to run a partitionable cluster: `None` when it can
    /// run (root, `ip`, `iptables`, RabbitMQ `version` installed).
    pub fn unavailable(version: RabbitMq) -> Option<String> {
        if !is_root() {
            return Some("network namespaces need root".into());
        }
        if find_program("ip").is_none() {
            return Some("`ip` (iproute2) is not installed".into());
        }
        if find_program("iptables").is_none() {
            return Some("`iptables` is not installed (apt-get install iptables)".into());
        }
        if !version.is_installed() {
            return Some(format!(
                "RabbitMQ {version} is not installed (cargo xtask broker up --rabbitmq {version})"
            ));
        }
        None
    }

    /// The cluster's description, without touching anything: what
    /// [`up`](Self::up) builds.
    pub fn cluster_for(version: RabbitMq, handling: PartitionHandling) -> Cluster {
        Cluster::with_base_dir(NETSPLIT_DIR)
            .with_version(version)
            .in_namespaces(handling)
    }

    /// Tears down whatever a previous run left, then builds the network,
    /// wipes the nodes' data, starts the three nodes and joins them into
    /// one cluster. Prints how long it took (about 30 s).
    ///
    /// # Errors
    ///
    /// When something is missing ([`unavailable`](Self::unavailable)) or a
    /// step fails; what was built is torn down again.
    pub fn up(version: RabbitMq, handling: PartitionHandling) -> Result<Self> {
        if let Some(why) = Self::unavailable(version) {
            return Err(ClusterError::new(why));
        }
        let started = Instant::now();
        Self::teardown()?;
        let this = Self {
            cluster: Self::cluster_for(version, handling),
            keep: false,
        };
        build_network()?;
        let data = this.cluster.base_dir().join(version.label());
        match fs::remove_dir_all(&data) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ClusterError::io(format!("removing {}", data.display()), e)),
        }
        this.cluster.up()?;
        eprintln!(
            "rabbitkit-test: partitionable RabbitMQ {version} cluster ({handling}) up in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Ok(this)
    }

    /// The cluster with the nodes' names, addresses and `rabbitmqctl`.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// The AMQP URL of node `n`, e.g. `amqp://guest:guest@10.77.0.12:5672/%2f`.
    pub fn amqp_url(&self, n: usize) -> String {
        self.cluster.amqp_url(n)
    }

    /// The AMQP URLs of the three nodes, node 1 first.
    pub fn amqp_urls(&self) -> Vec<String> {
        self.cluster.amqp_urls()
    }

    /// Leaves the cluster running when this value is dropped (for `cargo
    /// xtask netsplit up`; `cargo xtask netsplit down` ends it).
    pub fn keep(mut self) {
        self.keep = true;
    }

    /// Cuts node `n` off from the other two nodes (packets dropped both
    /// ways): a partition in which node `n` is the minority. Clients still
    /// reach every node.
    pub fn cut(n: usize) -> Result<()> {
        check(n)?;
        for other in Cluster::nodes().filter(|&o| o != n) {
            drop_peer(n, node_ip(other))?;
        }
        Ok(())
    }

    /// Cuts node `n` off from the clients (the host): their connections to
    /// it hang, new ones time out. The nodes still reach each other.
    pub fn cut_from_clients(n: usize) -> Result<()> {
        check(n)?;
        drop_peer(n, HOST_IP)
    }

    /// Removes every cut.
    pub fn heal() -> Result<()> {
        for n in Cluster::nodes() {
            if namespace_exists(n) {
                iptables(n, &["-F"])?;
            }
        }
        Ok(())
    }

    /// After [`heal`](Self::heal): waits (up to `within`) until every node
    /// sees the three nodes running and no partition, acting as an
    /// operator would where RabbitMQ 3.10 does not recover by itself:
    ///
    /// * with [`PartitionHandling::Ignore`] a partition never heals by
    ///   itself: as RabbitMQ's docs tell operators, the losing side's
    ///   application is restarted (`stop_app`, `start_app`), here node
    ///   `minority` (the node that was cut off), once the nodes see each
    ///   other again and report the partition;
    /// * a node that is still not back [`STUCK_AFTER`] after the heal (seen
    ///   with `pause_minority`: the paused node hangs in its boot, Erlang
    ///   25's `global` stuck after the partition) is killed and started
    ///   again;
    /// * a partition still reported twice [`STUCK_AFTER`] after the heal
    ///   (the nodes recorded it again when the restarted node came back)
    ///   ends as RabbitMQ's docs say: one side is trusted (the lowest
    ///   node other than `minority`), every other node's application is
    ///   restarted.
    ///
    /// # Errors
    ///
    /// When the cluster is not whole after `within`, with what each node
    /// reports.
    pub fn wait_healed(&self, minority: Option<usize>, within: Duration) -> Result<Healed> {
        let started = Instant::now();
        let c = &self.cluster;
        let all: Vec<String> = Cluster::nodes().map(|n| c.node_name(n)).collect();
        let mut actions = Vec::new();
        let mut last = String::new();
        let old = c.version() == RabbitMq::V3_10;
        while started.elapsed() < within {
            let views: Vec<_> = Cluster::nodes().map(|n| c.membership(n)).collect();
            let whole = views.iter().all(|v| {
                v.as_ref().is_ok_and(|m| {
                    all.iter().all(|a| m.running_nodes.contains(a)) && m.partitioned.is_empty()
                })
            });
            if whole {
                return Ok(Healed {
                    took: started.elapsed(),
                    actions,
                });
            }
            let reported = views
                .iter()
                .any(|v| v.as_ref().is_ok_and(|m| !m.partitioned.is_empty()));
            if let Some(n) = minority.filter(|_| old) {
                if reported
                    && actions.is_empty()
                    && c.partition_handling() == Some(PartitionHandling::Ignore)
                {
                    eprintln!(
                        "rabbitkit-test: restarting {} to end the partition (ignore mode)",
                        c.node_name(n)
                    );
                    c.rabbitmqctl(n, &["stop_app"])?;
                    c.rabbitmqctl(n, &["start_app"])?;
                    actions.push(format!(
                        "+{:.1} s: restarted the app of {}",
                        started.elapsed().as_secs_f64(),
                        c.node_name(n)
                    ));
                } else if reported
                    && started.elapsed() > STUCK_AFTER * 2
                    && !actions.iter().any(|a| a.contains("restarted the apps"))
                {
                    // Still partitioned: every node recorded the
                    // partition again when the restarted node came back.
                    // As RabbitMQ's docs say: trust one side, restart
                    // every other node.
                    let trusted = Cluster::nodes().find(|&t| t != n).unwrap_or(1);
                    eprintln!(
                        "rabbitkit-test: still partitioned; restarting every node but {}",
                        c.node_name(trusted)
                    );
                    for other in Cluster::nodes().filter(|&o| o != trusted) {
                        c.rabbitmqctl(other, &["stop_app"])?;
                        c.rabbitmqctl(other, &["start_app"])?;
                    }
                    actions.push(format!(
                        "+{:.1} s: restarted the apps of every node but {}",
                        started.elapsed().as_secs_f64(),
                        c.node_name(trusted)
                    ));
                } else if started.elapsed() > STUCK_AFTER
                    && !actions.iter().any(|a| a.contains("killed"))
                {
                    eprintln!(
                        "rabbitkit-test: {} is not back {} s after the heal; killing and starting it",
                        c.node_name(n),
                        STUCK_AFTER.as_secs()
                    );
                    c.kill(n)?;
                    c.start(n)?;
                    actions.push(format!(
                        "+{:.1} s: killed and started {}",
                        started.elapsed().as_secs_f64(),
                        c.node_name(n)
                    ));
                }
            }
            last = format!("{views:?}");
            std::thread::sleep(Duration::from_millis(500));
        }
        Err(ClusterError::new(format!(
            "the partitionable cluster is not whole {} s after the heal: {last}",
            within.as_secs()
        )))
    }

    /// What each node's metadata store says of queue `queue` (one line per
    /// node: `rkn1: {leader, LEADER, members, [MEMBERS]}`, or `not_found`,
    /// read with `rabbitmqctl eval` from the node's own copy), then, for a quorum queue, the Raft
    /// state of each member as the first node that answers sees it
    /// (`rabbitmq-queues quorum_status`: state, log index, commit index,
    /// term). The nodes are asked at once, each within `timeout`; a node
    /// that does not answer (paused, booting, cut off) says why. For the
    /// record of a run: during a partition on RabbitMQ 3.10 each side has
    /// its own view.
    pub fn queue_report(&self, queue: &str, timeout: Duration) -> String {
        let c = &self.cluster;
        let views: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = Cluster::nodes()
                .map(|n| {
                    s.spawn(move || {
                        // The queue's record in this node's metadata
                        // store (Mnesia): the leader it names and the
                        // members. Read locally: it answers during a
                        // partition too, with this side's view.
                        let expr = format!(
                            "case rabbit_amqqueue:lookup(rabbit_misc:r(<<\"/\">>, queue, <<\"{queue}\">>)) of \
                             {{ok, Q}} -> {{leader, amqqueue:get_pid(Q), members, \
                             (catch maps:get(nodes, amqqueue:get_type_state(Q)))}}; \
                             Other -> Other end."
                        );
                        let view = match c.cli(n, "rabbitmqctl", &["eval", &expr], timeout) {
                            Ok(out) => out.split_whitespace().collect::<Vec<_>>().join(" "),
                            Err(e) => format!("no answer: {}", first_line(&e.to_string())),
                        };
                        format!("{}: {view}", host_name(n))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| "(panicked)".into()))
                .collect()
        });
        let mut out = views.join("\n");
        let answering = Cluster::nodes()
            .zip(&views)
            .find(|(_, v)| v.contains("{leader"));
        if let Some((n, _)) = answering {
            let args = ["quorum_status", "-q", "--formatter", "json", queue];
            match c.cli(n, "rabbitmq-queues", &args, timeout) {
                Ok(status) => {
                    // One JSON object a line: {"Node Name":"rabbit@rkn1",
                    // "Raft State":"leader","Log Index":61853,...}
                    for line in status.lines().map(str::trim).filter(|l| l.contains('{')) {
                        let mut member = line.to_owned();
                        for (from, to) in [
                            ("\"Node Name\":", ""),
                            ("\"Raft State\":", ""),
                            ("\"Log Index\":", "log="),
                            ("\"Commit Index\":", "commit="),
                            ("\"Snapshot Index\":", "snapshot="),
                            ("\"Term\":", "term="),
                            ("\"Machine Version\":", "machine="),
                            ("\"", ""),
                            ("{", ""),
                            ("}", ""),
                            ("[", ""),
                            ("]", ""),
                        ] {
                            member = member.replace(from, to);
                        }
                        let member = member.trim_start_matches(',').replace(',', " ");
                        out.push_str(&format!("\nraft (from {}): {member}", host_name(n)));
                    }
                }
                Err(e) => out.push_str(&format!(
                    "\nraft (from {}): no answer: {}",
                    host_name(n),
                    first_line(&e.to_string())
                )),
            }
        }
        out
    }

    /// Copies each node's log files (`log/` and `stdout.log`) into
    /// `dest/rknN/`, to keep them past the next [`up`](Self::up), which
    /// wipes the nodes' directories.
    ///
    /// # Errors
    ///
    /// When a directory cannot be made or a file copied.
    pub fn copy_logs(&self, dest: &std::path::Path) -> Result<()> {
        for n in Cluster::nodes() {
            let from = self.cluster.node_dir(n);
            let to = dest.join(host_name(n));
            fs::create_dir_all(&to)
                .map_err(|e| ClusterError::io(format!("making {}", to.display()), e))?;
            let mut files = vec![from.join("stdout.log")];
            if let Ok(dir) = fs::read_dir(from.join("log")) {
                files.extend(dir.filter_map(|e| e.ok()).map(|e| e.path()));
            }
            for file in files.iter().filter(|f| f.is_file()) {
                let target = to.join(file.file_name().unwrap_or_default());
                fs::copy(file, &target)
                    .map_err(|e| ClusterError::io(format!("copying {}", file.display()), e))?;
            }
        }
        Ok(())
    }

    /// The cuts in place, by node: the addresses each node drops.
    pub fn cuts() -> Vec<(usize, Vec<Ipv4Addr>)> {
        Cluster::nodes()
            .filter(|&n| namespace_exists(n))
            .map(|n| {
                let rules = iptables(n, &["-S", "INPUT"]).unwrap_or_default();
                let dropped = rules
                    .lines()
                    .filter(|l| l.contains("-j DROP"))
                    .filter_map(|l| l.split_whitespace().skip_while(|w| *w != "-s").nth(1))
                    .filter_map(|a| a.trim_end_matches("/32").parse().ok())
                    .collect();
                (n, dropped)
            })
            .collect()
    }

    /// Whether the namespaces exist (a cluster was set up and not torn down).
    pub fn is_set_up() -> bool {
        Cluster::nodes().any(namespace_exists)
    }

    /// Removes everything a partitionable cluster may have left, whichever
    /// version ran: kills every process in the namespaces (nodes, epmd,
    /// CLI), deletes the namespaces (and so their rules and veths), the
    /// bridge and the `/etc/hosts` lines. Data directories are kept (the
    /// next [`up`](Self::up) wipes them). Safe to call at any time.
    pub fn teardown() -> Result<()> {
        let mut errors = Vec::new();
        for n in Cluster::nodes() {
            if !namespace_exists(n) {
                continue;
            }
            let ns = namespace(n);
            let pids = || -> Vec<u32> {
                cmd("ip", &["netns", "pids", &ns])
                    .unwrap_or_default()
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            };
            for pid in pids() {
                kill_pid(pid);
            }
            if !wait_until(Duration::from_secs(20), || pids().is_empty()) {
                errors.push(format!("processes left in {ns}: {:?}", pids()));
            }
            if let Err(e) = cmd("ip", &["netns", "del", &ns]) {
                errors.push(e.to_string());
            }
        }
        // A namespace's veth goes with it, but not at once: delete the
        // host ends now so that the next `up` can make them again.
        for n in Cluster::nodes() {
            let veth = veth(n);
            if link_exists(&veth)
                && let Err(e) = cmd("ip", &["link", "del", &veth])
            {
                errors.push(e.to_string());
            }
        }
        if link_exists(BRIDGE)
            && let Err(e) = cmd("ip", &["link", "del", BRIDGE])
        {
            errors.push(e.to_string());
        }
        if let Err(e) = set_hosts(false) {
            errors.push(e.to_string());
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ClusterError::new(errors.join("\n")))
        }
    }
}

impl Drop for Netsplit {
    fn drop(&mut self) {
        if !self.keep
            && let Err(err) = Self::teardown()
        {
            eprintln!("rabbitkit-test: tearing the partitionable cluster down: {err}");
        }
    }
}

/// The first line of `text`, for one-line reports.
fn first_line(text: &str) -> &str {
    text.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
}

fn check(n: usize) -> Result<()> {
    if Cluster::nodes().contains(&n) {
        Ok(())
    } else {
        Err(ClusterError::new(format!(
            "no node {n}: nodes are numbered 1 to 3"
        )))
    }
}

/// Drops, inside node `n`'s namespace, every packet from and to `peer`.
fn drop_peer(n: usize, peer: Ipv4Addr) -> Result<()> {
    let peer = peer.to_string();
    let rules = iptables(n, &["-S"])?;
    if rules.contains(&format!("-s {peer}/32 -j DROP")) {
        return Ok(());
    }
    iptables(n, &["-A", "INPUT", "-s", &peer, "-j", "DROP"])?;
    iptables(n, &["-A", "OUTPUT", "-d", &peer, "-j", "DROP"]).map(drop)
}

/// The host end of node `n`'s veth: `rk-v1`..`rk-v3`.
fn veth(n: usize) -> String {
    format!("rk-v{n}")
}

fn namespace_exists(n: usize) -> bool {
    std::path::Path::new("/run/netns")
        .join(namespace(n))
        .exists()
}

fn link_exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}

/// The bridge, the namespaces with their veths and addresses, and the
/// host names.
fn build_network() -> Result<()> {
    set_hosts(true)?;
    cmd("ip", &["link", "add", BRIDGE, "type", "bridge"])?;
    cmd(
        "ip",
        &["addr", "add", &format!("{HOST_IP}/24"), "dev", BRIDGE],
    )?;
    cmd("ip", &["link", "set", BRIDGE, "up"])?;
    for n in Cluster::nodes() {
        let ns = namespace(n);
        let veth = veth(n);
        let ip = format!("{}/24", node_ip(n));
        cmd("ip", &["netns", "add", &ns])?;
        cmd(
            "ip",
            &[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ],
        )?;
        cmd("ip", &["link", "set", &veth, "master", BRIDGE, "up"])?;
        cmd("ip", &["-n", &ns, "addr", "add", &ip, "dev", "eth0"])?;
        cmd("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
        cmd("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
    }
    Ok(())
}

/// Adds (`true`) or removes (`false`) the lines `10.77.0.1N rknN` of
/// `/etc/hosts`, leaving every other line alone (written to a side file,
/// then renamed).
fn set_hosts(present: bool) -> Result<()> {
    let path = "/etc/hosts";
    let text = fs::read_to_string(path).map_err(|e| ClusterError::io("reading /etc/hosts", e))?;
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| !l.ends_with(HOSTS_MARK))
        .map(str::to_owned)
        .collect();
    if present {
        lines.extend(
            Cluster::nodes().map(|n| format!("{} {} {HOSTS_MARK}", node_ip(n), host_name(n))),
        );
    }
    let new = lines.join("\n") + "\n";
    if new == text {
        return Ok(());
    }
    // /etc/hosts may be a bind mount (containers): write in place.
    fs::write(path, new).map_err(|e| ClusterError::io("writing /etc/hosts", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_addresses_and_config() {
        let c = Netsplit::cluster_for(RabbitMq::V3_10, PartitionHandling::PauseMinority);
        assert_eq!(c.node_name(2), "rabbit@rkn2");
        assert_eq!(c.amqp_url(3), "amqp://guest:guest@10.77.0.13:5672/%2f");
        assert_eq!(c.amqp_port(1), 5672);
        assert_eq!(
            c.node_dir(1),
            std::path::PathBuf::from("/var/tmp/rabbitkit-netsplit/3.10/rabbit1")
        );
        let conf = node_config(RabbitMq::V3_10, PartitionHandling::Autoheal);
        assert!(
            conf.contains("cluster_partition_handling = autoheal\n"),
            "{conf}"
        );
        let conf = node_config(RabbitMq::V4_3, PartitionHandling::Autoheal);
        assert!(!conf.contains("partition"), "4.x ignores it: {conf}");
        assert!("pause-minority".parse::<PartitionHandling>().is_ok());
        assert!("sometimes".parse::<PartitionHandling>().is_err());
    }
}
