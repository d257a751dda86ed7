//! Test support for rabbitkit.
//!
//! This crate gives the integration tests, the examples and the `xtask`
//! developer commands one shared view of "the broker":
//!
//! * a local **3-node RabbitMQ cluster** ([`Cluster`]) that is started,
//!   clustered, repaired and torn down on demand, and whose nodes can be
//!   killed, stopped and restarted one by one to exercise failover.
//!   Installing RabbitMQ (Debian `rabbitmq-server`, [`Cluster::install`])
//!   is left to `cargo xtask broker up` and the xtask workflows: a test
//!   never installs anything, and fails with a message that says what to
//!   run when RabbitMQ is missing;
//! * the **broker addresses** the tests connect to ([`amqp_addrs`]), which
//!   come from the `AMQP_ADDR` environment variable when an external broker
//!   is used, or else point at the local cluster
//!   (`amqp://guest:guest@127.0.0.1:5672/%2f` ... `:5674`; the library
//!   itself has no default address);
//! * **unique names** ([`unique_name`]) so that tests running in parallel
//!   against the same broker never share a queue or an exchange.
//!
//! A typical integration test starts with:
//!
//! ```no_run
//! rabbitkit_test::ensure_cluster();
//! let urls = rabbitkit_test::amqp_addrs();
//! let queue = rabbitkit_test::unique_name("orders");
//! # let _ = (urls, queue);
//! ```
//!
//! # Layout
//!
//! One flat file per concept:
//!
//! * `cluster.rs`: [`Cluster`]: the local cluster's addresses, directories
//!   and node control (`up`, `down`, `kill`, `stop`, `start`, the lock).
//!   Nodes are `rabbit1@localhost`, `rabbit2@localhost` and
//!   `rabbit3@localhost`, listening for AMQP on `127.0.0.1:5672`, `5673`
//!   and `5674` (Erlang distribution on `25672`, `25673`, `25674`; node 1
//!   also serves TLS on `5671` and stream-protocol TLS on `5551`, node 2
//!   mutual TLS on `5676`: a client
//!   certificate signed by the test CA is required, the `EXTERNAL`
//!   mechanism is offered). Their files live under
//!   `/var/tmp/rabbitkit-cluster` (or `$RABBITKIT_CLUSTER_DIR`), one
//!   directory `<version>/rabbitN/` per node holding `rabbitmq.conf`,
//!   `enabled_plugins`, `mnesia/`, `log/`, `plugins-expand/`, `pid` and
//!   `stdout.log`; `tls/` holds the test certificates and a `.lock` file
//!   serialises concurrent callers. Its concepts, one file each, in
//!   `cluster/`:
//!   * `install.rs`: whether RabbitMQ is installed, [`Cluster::install`]
//!     (for xtask; tests never install);
//!   * `tls.rs`: the test certificates (server and client), [`TLS_PORT`],
//!     [`MTLS_PORT`];
//!   * `config.rs`: the node directories, their `rabbitmq.conf` and
//!     `enabled_plugins` ([`PLUGINS`]: consistent-hash
//!     exchange and stream protocol, listening on [`stream_port`]: `5552`..`5554`);
//!   * `nodes.rs`: the nodes' processes (spawn, wait, stop, kill) and
//!     `rabbitmqctl`;
//!   * `join.rs`: joining the nodes into one cluster, healing partitions;
//!   * `status.rs`: [`ClusterStatus`], [`NodeStatus`] and the parsing of
//!     `rabbitmqctl cluster_status`.
//! * `rabbitmq.rs`: [`RabbitMq`]: which version runs (4.3 by default, 4.0,
//!   3.10), how it is installed (Debian 12's package on the host for 3.10;
//!   a `debootstrap` chroot under `/var/tmp/rabbitkit-rootfs` for 4.x) and
//!   how its programs are started.
//! * `error.rs`: [`ClusterError`].
//! * `process.rs`: running commands with a time limit, finding and killing
//!   Erlang VMs, probing ports.
//! * `addr.rs`: [`amqp_addrs`], [`using_external_broker`],
//!   [`ensure_cluster`], [`require_local_cluster`]: which broker the tests
//!   talk to.
//! * `names.rs`: [`unique_name`]: collision-free resource names.
//! * `netsplit.rs`: [`Netsplit`]: a second, partitionable 3-node cluster,
//!   each node in its own network namespace on a bridge ([`BRIDGE`]),
//!   with `iptables` cuts between nodes or between a node and the
//!   clients, and the 3.10 [`PartitionHandling`] mode; built and torn down
//!   by the test or `cargo xtask netsplit`, never the shared cluster.
//! * `proxy.rs`: [`FaultProxy`]: a TCP proxy that cuts, stalls or delays
//!   connections on demand, for fault-injection tests.
//! * `nginx.rs`: [`LoadBalancer`]: nginx's `stream` module in front of the
//!   three nodes, one URL on port [`LB_PORT`] (5680), configured by
//!   `nginx/rabbitmq-lb.conf`; its pid file and log live under
//!   `<cluster dir>/nginx/`.
//!
//! # Environment
//!
//! * `AMQP_ADDR`: one AMQP URL or a comma-separated list of them. When set,
//!   the local cluster is never touched.
//! * `RABBITKIT_CLUSTER_DIR`: base directory of the local cluster.
//! * `RABBITKIT_RABBITMQ`: the version of the local cluster (`4.3`, `4.0`,
//!   `3.10`); `cargo xtask ... --rabbitmq V` sets it.
//! * `RABBITKIT_ROOTFS_DIR`: where the 4.x chroots live.
#![deny(missing_docs)]

mod addr;
mod cluster;
mod error;
pub mod module_graph;
mod names;
mod netsplit;
mod nginx;
mod process;
mod proxy;
mod rabbitmq;

pub use addr::{amqp_addrs, ensure_cluster, require_local_cluster, using_external_broker};
pub use cluster::{
    Cluster, ClusterStatus, MTLS_NODE, MTLS_PORT, MTLS_USER, NodeStatus, PLUGINS, STREAM_TLS_PORT,
    TLS_PORT, stream_port,
};
pub use error::ClusterError;
pub use names::unique_name;
pub use netsplit::{
    BRIDGE, Healed, NET_TICKTIME_SECS, NETSPLIT_DIR, Netsplit, PartitionHandling, STUCK_AFTER,
};
pub use nginx::{LB_PORT, LoadBalancer};
pub use process::{find_program, is_root};
pub use proxy::FaultProxy;
pub use rabbitmq::{RabbitMq, VERSION_ENV};

/// The largest message body the local cluster accepts (`max_message_size`).
pub const MAX_MESSAGE_SIZE: usize = 8 * 1024 * 1024;
