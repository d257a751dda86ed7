//! The cluster's state: [`NodeStatus`], [`ClusterStatus`] (and its table),
//! and the membership parsed from `rabbitmqctl cluster_status`.

use std::fmt;

use super::Cluster;
use crate::error::{ClusterError, Result};
use crate::rabbitmq::RabbitMq;

/// State of one node, as reported by [`Cluster::status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    /// Node number, 1 to 3.
    pub index: usize,
    /// Erlang node name, e.g. `rabbit2@localhost`.
    pub name: String,
    /// The address it serves AMQP on: `127.0.0.1`, or its own address in
    /// the partitionable cluster ([`crate::Netsplit`]).
    pub host: std::net::IpAddr,
    /// AMQP port on [`host`](Self::host).
    pub amqp_port: u16,
    /// Whether the node serves AMQP: its Erlang VM is alive and its port
    /// accepts TCP connections.
    pub running: bool,
    /// Process id of the node's Erlang VM (`beam.smp`), when it is alive
    /// (it may be alive but not `running`, e.g. while booting).
    pub pid: Option<u32>,
    /// The port of its management UI ([`Cluster::management_port`]) when
    /// the UI accepts connections.
    pub management_port: Option<u16>,
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
            "{:<19} {:<16} {:<9} {:<8} {:<23} IN CLUSTER",
            "NODE", "AMQP", "STATE", "PID", "MANAGEMENT UI"
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
            let management = node
                .management_port
                .map_or_else(|| "-".to_owned(), |p| format!("http://{}:{p}", node.host));
            writeln!(
                f,
                "{:<19} {:<16} {:<9} {:<8} {:<23} {}",
                node.name,
                format!("{}:{}", node.host, node.amqp_port),
                state,
                pid,
                management,
                member
            )?;
        }
        if self.nodes.iter().any(|node| node.management_port.is_some()) {
            writeln!(f, "management UI: user guest, password guest")?;
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

impl Cluster {
    /// The state of each node and the cluster membership, asked of the
    /// first running node (preferring node 1).
    pub fn status(&self) -> Result<ClusterStatus> {
        let nodes: Vec<NodeStatus> = Self::nodes()
            .map(|n| NodeStatus {
                index: n,
                name: self.node_name(n),
                host: self.host(n),
                amqp_port: self.amqp_port(n),
                running: self.is_running(n),
                pid: self.pid(n),
                management_port: self
                    .management_port(n)
                    .filter(|_| self.serves_management(n)),
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

    /// Cluster membership as seen by node `n`.
    pub(crate) fn membership(&self, n: usize) -> Result<Membership> {
        let out = self.ctl(n, &["cluster_status", "--formatter", "json"])?;
        parse_cluster_status(&out).ok_or_else(|| {
            ClusterError::new(format!(
                "cannot parse `rabbitmqctl -n {} cluster_status --formatter json`:\n{out}",
                self.node_name(n)
            ))
        })
    }
}

/// Cluster membership from `rabbitmqctl cluster_status --formatter json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Membership {
    pub(crate) disk_nodes: Vec<String>,
    pub(crate) running_nodes: Vec<String>,
    /// Nodes involved in a network partition (sorted, deduplicated).
    pub(crate) partitioned: Vec<String>,
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn status_table() {
        let status = ClusterStatus {
            version: RabbitMq::V4_3,
            package_version: Some("4.3.6-1".into()),
            nodes: Cluster::nodes()
                .map(|n| NodeStatus {
                    index: n,
                    name: format!("rabbit{n}@localhost"),
                    host: [127, 0, 0, 1].into(),
                    amqp_port: 5671 + n as u16,
                    running: n != 2,
                    pid: (n != 2).then_some(100 + n as u32),
                    management_port: (n != 2).then_some(15671 + n as u16),
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
        assert!(table.contains("http://127.0.0.1:15674"), "{table}");
        assert!(!table.contains(":15673"), "node 2 is down: {table}");
        assert!(
            table.contains("management UI: user guest, password guest"),
            "{table}"
        );
        assert!(
            table.contains("running: rabbit1@localhost, rabbit3@localhost"),
            "{table}"
        );
    }
}
