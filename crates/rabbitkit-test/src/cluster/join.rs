//! Joining the nodes into one cluster, and repairing it.

use std::time::Duration;

use super::Cluster;
use crate::error::{ClusterError, Result};
use crate::process::wait_until;

impl Cluster {
    /// Joins nodes 2 and 3 to rabbit1 unless they are running members
    /// already, repairing those that refuse; then checks the result.
    pub(super) fn form_cluster(&self) -> Result<()> {
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
    pub(super) fn heal_partitions(&self) -> Result<()> {
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
    pub(super) fn join(&self, n: usize) -> Result<()> {
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
}
