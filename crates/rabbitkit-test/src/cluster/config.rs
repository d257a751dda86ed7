//! The node directories and their configuration (`rabbitmq.conf`,
//! `enabled_plugins`).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::Cluster;
use super::tls::{MTLS_NODE, MTLS_PORT, STREAM_TLS_PORT, TLS_PORT};
use crate::error::{ClusterError, Result};
use crate::rabbitmq::RabbitMq;

impl Cluster {
    /// Creates every node directory with its configuration, owned by user
    /// `rabbitmq`.
    pub(super) fn prepare_dirs(&self) -> Result<()> {
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
            let tls_dir = self.tls_dir();
            let tls = match n {
                _ if self.netns.is_some() => None,
                1 => Some(Tls::ServerOnly(&tls_dir)),
                MTLS_NODE => Some(Tls::Mutual(&tls_dir)),
                _ => None,
            };
            let config = match self.netns {
                None => node_config(self.version, self.amqp_port(n), tls),
                Some(handling) => crate::netsplit::node_config(self.version, handling),
            };
            write("rabbitmq.conf", config)?;
            let management = self.netns.is_none();
            write("enabled_plugins", enabled_plugins(tls, management))?;
        }
        self.chown_node_dirs()
    }

    pub(super) fn chown_node_dirs(&self) -> Result<()> {
        let mut paths: Vec<PathBuf> = Self::nodes().map(|n| self.node_dir(n)).collect();
        paths.push(self.tls_dir());
        self.version.share_dir(&self.base)?;
        self.version.chown_to_rabbitmq(&paths)
    }

    /// Stops node `n`'s VM if any, makes the cluster forget it, and deletes
    /// its data directory.
    pub(super) fn wipe_node(&self, n: usize) -> Result<()> {
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
}

/// The TLS listener of a node, with the directory of its certificates.
#[derive(Debug, Clone, Copy)]
pub(super) enum Tls<'a> {
    /// [`TLS_PORT`], asking for no client certificate (node 1).
    ServerOnly(&'a Path),
    /// [`MTLS_PORT`], requiring a client certificate signed by the test CA,
    /// with the `EXTERNAL` mechanism (node [`MTLS_NODE`]). RabbitMQ's
    /// `ssl_options` hold for every TLS listener of a node, hence another
    /// node than [`ServerOnly`](Self::ServerOnly)'s.
    Mutual(&'a Path),
}

/// The plugins every node runs, shipped with both RabbitMQ 3.10 and 4.3:
/// the consistent-hash exchange (partitioned work queues) and the stream
/// protocol (streams over AMQP 0-9-1 need no plugin; the stream protocol
/// listener is there for tools and stream-protocol clients). Read at boot:
/// a node started before this changed needs a restart to get them.
pub const PLUGINS: &[&str] = &["rabbitmq_consistent_hash_exchange", "rabbitmq_stream"];

/// The management UI and HTTP API, shipped with both RabbitMQ 3.10 and 4.3:
/// on every node of the local cluster (node `n` on [`management_port`] of
/// its AMQP port), not in the partitionable one of [`crate::Netsplit`].
pub const MANAGEMENT_PLUGIN: &str = "rabbitmq_management";

/// The port of the management UI of the node whose AMQP port is
/// `amqp_port`: 15672, 15673, 15674 for 5672, 5673, 5674.
pub fn management_port(amqp_port: u16) -> u16 {
    amqp_port + 10000
}

/// The `enabled_plugins` file of a node: [`PLUGINS`], the
/// [`MANAGEMENT_PLUGIN`] when `management`, and on the mutual-TLS node the
/// `EXTERNAL` mechanism's plugin (shipped with RabbitMQ) too.
fn enabled_plugins(tls: Option<Tls<'_>>, management: bool) -> String {
    let mut plugins = PLUGINS.to_vec();
    if management {
        plugins.push(MANAGEMENT_PLUGIN);
    }
    if let Some(Tls::Mutual(_)) = tls {
        plugins.push("rabbitmq_auth_mechanism_ssl");
    }
    format!("[{}].\n", plugins.join(","))
}

/// The stream protocol port of the node whose AMQP port is `amqp_port`:
/// 5552, 5553, 5554 for 5672, 5673, 5674 (each node needs its own).
pub fn stream_port(amqp_port: u16) -> u16 {
    amqp_port - 120
}

/// The `rabbitmq.conf` of the node listening on `port`, with the TLS
/// listener `tls` if any.
pub(super) fn node_config(version: RabbitMq, port: u16, tls: Option<Tls<'_>>) -> String {
    let tls = match tls {
        Some(Tls::ServerOnly(dir)) => format!(
            "listeners.ssl.default = 127.0.0.1:{TLS_PORT}\n\
             stream.listeners.ssl.default = 127.0.0.1:{STREAM_TLS_PORT}\n\
             ssl_options.cacertfile = {d}/ca.pem\n\
             ssl_options.certfile = {d}/server.pem\n\
             ssl_options.keyfile = {d}/server.key\n\
             ssl_options.verify = verify_none\n\
             ssl_options.fail_if_no_peer_cert = false\n",
            d = dir.display()
        ),
        Some(Tls::Mutual(dir)) => {
            // The mechanisms each version offers by default, and EXTERNAL.
            let mechanisms: &[&str] = if version.is_4() {
                &["PLAIN", "AMQPLAIN", "ANONYMOUS", "EXTERNAL"]
            } else {
                &["PLAIN", "AMQPLAIN", "EXTERNAL"]
            };
            let mechanisms: String = mechanisms
                .iter()
                .enumerate()
                .map(|(i, m)| format!("auth_mechanisms.{} = {m}\n", i + 1))
                .collect();
            format!(
                "listeners.ssl.default = 127.0.0.1:{MTLS_PORT}\n\
                 ssl_options.cacertfile = {d}/ca.pem\n\
                 ssl_options.certfile = {d}/server.pem\n\
                 ssl_options.keyfile = {d}/server.key\n\
                 ssl_options.verify = verify_peer\n\
                 ssl_options.fail_if_no_peer_cert = true\n\
                 # EXTERNAL logs in as the user named by the certificate's CN.\n\
                 ssl_cert_login_from = common_name\n\
                 {mechanisms}",
                d = dir.display()
            )
        }
        None => String::new(),
    };
    tls + &format!(
        "# Written by rabbitkit-test; rewritten on every start.\n\
         listeners.tcp.default = 127.0.0.1:{port}\n\
         stream.listeners.tcp.default = 127.0.0.1:{stream}\n\
         management.tcp.ip = 127.0.0.1\n\
         management.tcp.port = {management}\n\
         loopback_users = none\n\
         log.console = false\n\
         log.file.level = info\n\
         # Small enough that a test can exceed it cheaply (see MAX_MESSAGE_SIZE).\n\
         max_message_size = 8388608\n",
        stream = stream_port(port),
        management = management_port(port)
    ) + if version.is_4() {
        // Every deprecated feature a client can use is denied, so the
        // whole suite (every example, pattern and recovery path) shows
        // rabbitkit never needs one. RabbitMQ 4.3.0 refused transient
        // non-exclusive queues by default (4.3.6 permits them again);
        // global QoS and queue-master-locator are denied by default since
        // 4.3, said here so a later default cannot hide a use. Left
        // permitted: `management_metrics_collection` (the management UI's
        // message counts, which the book reads), not a client feature.
        "deprecated_features.permit.transient_nonexcl_queues = false\n\
         deprecated_features.permit.global_qos = false\n\
         deprecated_features.permit.queue_master_locator = false\n"
    } else {
        // Do not wait 5 minutes for peers that will not come back.
        "mnesia_table_loading_retry_timeout = 5000\n\
         mnesia_table_loading_retry_limit = 20\n"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_has_listener_and_loopback() {
        let conf = node_config(RabbitMq::V3_10, 5673, None);
        assert!(conf.contains("listeners.tcp.default = 127.0.0.1:5673\n"));
        assert!(conf.contains("loopback_users = none\n"));
        assert!(conf.contains("mnesia_table_loading_retry_timeout"));
        let conf = node_config(RabbitMq::V4_3, 5672, None);
        assert!(!conf.contains("mnesia"), "4.3 has no Mnesia: {conf}");
        assert!(conf.contains("transient_nonexcl_queues = false"));
        assert_eq!(
            enabled_plugins(None, false),
            "[rabbitmq_consistent_hash_exchange,rabbitmq_stream].\n"
        );
        assert_eq!(
            enabled_plugins(None, true),
            "[rabbitmq_consistent_hash_exchange,rabbitmq_stream,rabbitmq_management].\n"
        );
    }

    #[test]
    fn the_mutual_tls_node_requires_client_certificates_and_offers_external() {
        let dir = Path::new("/certs");
        for version in [RabbitMq::V3_10, RabbitMq::V4_3] {
            let conf = node_config(version, 5673, Some(Tls::Mutual(dir)));
            for line in [
                "listeners.ssl.default = 127.0.0.1:5676\n",
                "ssl_options.cacertfile = /certs/ca.pem\n",
                "ssl_options.verify = verify_peer\n",
                "ssl_options.fail_if_no_peer_cert = true\n",
                "ssl_cert_login_from = common_name\n",
                "auth_mechanisms.1 = PLAIN\n",
                "= EXTERNAL\n",
            ] {
                assert!(conf.contains(line), "{version}: {line:?} in {conf}");
            }
            assert_eq!(
                conf.contains("ANONYMOUS"),
                version.is_4(),
                "each version keeps its default mechanisms"
            );
        }
        assert_eq!(
            enabled_plugins(Some(Tls::Mutual(dir)), true),
            "[rabbitmq_consistent_hash_exchange,rabbitmq_stream,rabbitmq_management,\
             rabbitmq_auth_mechanism_ssl].\n"
        );
        let conf = node_config(RabbitMq::V4_3, 5672, Some(Tls::ServerOnly(dir)));
        assert!(
            conf.contains("ssl_options.verify = verify_none\n"),
            "{conf}"
        );
        assert!(!conf.contains("EXTERNAL"), "{conf}");
    }

    #[test]
    fn every_node_enables_the_plugins_issue_15_needs() {
        // Each node's stream listener has a port of its own, in both versions.
        for version in [RabbitMq::V3_10, RabbitMq::V4_3] {
            for (amqp, stream) in [(5672, 5552), (5673, 5553), (5674, 5554)] {
                let conf = node_config(version, amqp, None);
                let line = format!("stream.listeners.tcp.default = 127.0.0.1:{stream}\n");
                assert!(conf.contains(&line), "{conf}");
                // And its management UI too: 15672, 15673, 15674.
                let line = format!("management.tcp.port = {}\n", amqp + 10000);
                assert!(conf.contains(&line), "{conf}");
            }
        }
    }
}
