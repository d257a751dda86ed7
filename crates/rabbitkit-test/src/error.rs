//! [`ClusterError`]: what went wrong while controlling the local cluster.

use std::fmt;
use std::io;

/// An error from [`Cluster`](crate::Cluster): what failed, with the output of the command
/// that failed and, for a node that did not boot, the tail of its logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterError {
    message: String,
}

impl ClusterError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    pub(crate) fn io(what: impl fmt::Display, err: io::Error) -> Self {
        Self::new(format!("{what}: {err}"))
    }

    /// The full, human-readable description.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ClusterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ClusterError {}

pub(crate) type Result<T, E = ClusterError> = std::result::Result<T, E>;
