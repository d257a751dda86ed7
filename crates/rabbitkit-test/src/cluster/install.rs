//! Whether RabbitMQ is installed, and installing it (for `cargo xtask`
//! only: tests never install).

use super::Cluster;
use crate::error::Result;

impl Cluster {
    /// Whether this cluster's RabbitMQ version is installed.
    pub fn is_installed(&self) -> bool {
        self.version.is_installed()
    }

    /// Installs this cluster's RabbitMQ version when it is missing (see
    /// [`RabbitMq::install`](crate::RabbitMq::install)). Needs root. Only `cargo xtask broker up`
    /// (and the xtask workflows that bring the cluster up) call it: tests
    /// never install anything.
    pub fn install(&self) -> Result<()> {
        self.version.install()
    }

    /// An error unless this cluster's RabbitMQ version is installed; it
    /// names the command that installs it.
    pub(super) fn check_installed(&self) -> Result<()> {
        if self.is_installed() {
            Ok(())
        } else {
            Err(self.version.not_installed())
        }
    }
}
