//! The producer names in use in this process, per cluster and stream: a
//! name may have one live producer on a stream at a time.

use std::collections::HashSet;
use std::sync::{LazyLock, Mutex};

use crate::client::StreamClient;
use crate::error::{Error, ErrorKind};

type Key = (String, String, String);

static IN_USE: LazyLock<Mutex<HashSet<Key>>> = LazyLock::new(Default::default);

/// Holds a producer name on a stream; frees it when dropped.
#[derive(Debug)]
pub(crate) struct NameGuard(Key);

impl NameGuard {
    /// Takes `name` on `stream` of `client`'s cluster (its endpoints and
    /// virtual host), or fails with [`ErrorKind::ProducerNameInUse`].
    pub(crate) fn take(client: &StreamClient, stream: &str, name: &str) -> Result<Self, Error> {
        let mut cluster: Vec<String> = client
            .endpoints()
            .iter()
            .map(|e| format!("{}:{}/{}", e.host, e.port, e.vhost))
            .collect();
        cluster.sort();
        let key = (cluster.join(","), stream.to_owned(), name.to_owned());
        if !IN_USE.lock().expect("names").insert(key.clone()) {
            return Err(Error::new(
                ErrorKind::ProducerNameInUse,
                format!(
                    "a producer named {name} is open on stream {stream} already: \
                     close it first (two would share one sequence of publishing ids)"
                ),
            ));
        }
        Ok(NameGuard(key))
    }
}

impl Drop for NameGuard {
    fn drop(&mut self) {
        IN_USE.lock().expect("names").remove(&self.0);
    }
}
