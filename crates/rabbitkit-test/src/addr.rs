//! Which broker the tests talk to.

use crate::cluster::Cluster;

/// Name of the environment variable that points the tests at an external
/// broker.
const AMQP_ADDR: &str = "AMQP_ADDR";

/// The AMQP URLs the tests should connect to.
///
/// When `AMQP_ADDR` is set (one URL or a comma-separated list; entries are
/// trimmed and empty entries dropped) those URLs are returned. Otherwise the
/// three nodes of the local cluster are returned, node 1 first:
/// `amqp://guest:guest@127.0.0.1:5672/%2f`, `...:5673/%2f`, `...:5674/%2f`.
pub fn amqp_addrs() -> Vec<String> {
    match external_addrs() {
        Some(addrs) => addrs,
        None => {
            let cluster = Cluster::local();
            Cluster::nodes().map(|n| cluster.amqp_url(n)).collect()
        }
    }
}

/// Whether `AMQP_ADDR` names an external broker (set and not blank).
///
/// When it does, [`ensure_cluster`] does nothing and the local cluster is
/// neither started nor controlled; failover tests that kill nodes should
/// skip themselves.
pub fn using_external_broker() -> bool {
    external_addrs().is_some()
}

/// Makes sure the broker the tests use is reachable.
///
/// With `AMQP_ADDR` set this does nothing. Otherwise, when every local node
/// already accepts TCP connections on its AMQP port it returns at once (the
/// fast path taken by nearly every test); if not it calls
/// [`Cluster::up`] on [`Cluster::local`], which starts, clusters or repairs
/// whatever is missing (e.g. a node a failover test killed; about 30 s from
/// a cold state). It never installs RabbitMQ: that is
/// `cargo xtask broker up`'s job (or `cargo xtask test`'s, or `.ci/run`'s).
/// Concurrent callers, in one process or in many, are serialised by the
/// cluster's lock file.
///
/// # Panics
///
/// When RabbitMQ is not installed (the message says to run
/// `cargo xtask broker up`, or to set `AMQP_ADDR`), or with the cluster's
/// error message when the cluster cannot be brought up: this is test
/// support, and a test cannot run without a broker.
pub fn ensure_cluster() {
    if using_external_broker() {
        return;
    }
    let cluster = Cluster::local();
    if Cluster::nodes().all(|n| cluster.accepts_connections(n)) {
        return;
    }
    if !cluster.is_installed() {
        panic!(
            "rabbitkit-test: no local RabbitMQ cluster on 127.0.0.1:5672-5674, and RabbitMQ {v} \
             is not installed; tests do not install it. Run `cargo xtask broker up --rabbitmq {v}` \
             (as root) first, or set AMQP_ADDR to use another broker.",
            v = cluster.version()
        );
    }
    eprintln!(
        "rabbitkit-test: bringing up the local RabbitMQ cluster under {} \
         (set AMQP_ADDR to use another broker)",
        cluster.base_dir().display()
    );
    if let Err(err) = cluster.up() {
        panic!("rabbitkit-test: could not bring up the local RabbitMQ cluster: {err}");
    }
}

/// For a test that controls the local cluster (kills or reconfigures
/// nodes, runs its `rabbitmqctl`, uses its TLS listener): brings the
/// cluster up and returns it.
///
/// Such tests live in the `failover` and `local_cluster` test binaries,
/// which `cargo xtask test` filters out (the runner reports them as
/// skipped) when `AMQP_ADDR` points elsewhere.
///
/// # Panics
///
/// When `AMQP_ADDR` is set: the test cannot run against that broker, and
/// must fail rather than pass without having run. Also when the cluster
/// cannot be brought up.
pub fn require_local_cluster() -> Cluster {
    assert!(
        !using_external_broker(),
        "this test controls the local RabbitMQ cluster and cannot run against AMQP_ADDR; \
         `cargo xtask test` skips it there (unset AMQP_ADDR to run it)"
    );
    ensure_cluster();
    Cluster::local()
}

/// The URLs in `AMQP_ADDR`, or `None` when it is unset or blank.
fn external_addrs() -> Option<Vec<String>> {
    let value = std::env::var(AMQP_ADDR).ok()?;
    let addrs = parse_addr_list(&value);
    (!addrs.is_empty()).then_some(addrs)
}

/// Splits a comma-separated URL list, trimming entries and dropping empty
/// ones.
fn parse_addr_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::parse_addr_list;

    #[test]
    fn single_url() {
        assert_eq!(
            parse_addr_list("amqp://u:p@host:5672/%2f"),
            ["amqp://u:p@host:5672/%2f"]
        );
    }

    #[test]
    fn list_is_trimmed_and_ordered() {
        assert_eq!(
            parse_addr_list(" amqp://a:5672 ,amqp://b:5673,\tamqp://c:5674\n"),
            ["amqp://a:5672", "amqp://b:5673", "amqp://c:5674"]
        );
    }

    #[test]
    fn empty_entries_are_dropped() {
        assert_eq!(parse_addr_list(",amqp://a,, ,"), ["amqp://a"]);
        assert!(parse_addr_list("").is_empty());
        assert!(parse_addr_list(" , ").is_empty());
    }

    #[test]
    fn local_urls() {
        let cluster = crate::Cluster::with_base_dir("/nonexistent");
        assert_eq!(cluster.amqp_url(1), "amqp://guest:guest@127.0.0.1:5672/%2f");
        assert_eq!(cluster.amqp_url(3), "amqp://guest:guest@127.0.0.1:5674/%2f");
    }
}
