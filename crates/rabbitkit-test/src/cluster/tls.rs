//! The test certificates, node 1's TLS listener and node 2's mutual-TLS
//! listener.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::Cluster;
use super::nodes::CTL_TIMEOUT;
use crate::error::{ClusterError, Result};
use crate::process::run;

/// The TLS (`amqps`) port of node 1. It asks for no client certificate.
pub const TLS_PORT: u16 = 5671;

/// The stream protocol's TLS port of node 1 (`rabbitmq-stream+tls://`),
/// with the same certificate as [`TLS_PORT`].
pub const STREAM_TLS_PORT: u16 = 5551;

/// The mutual-TLS port of node [`MTLS_NODE`]: every client must present a
/// certificate signed by the test CA (`ssl_options.verify = verify_peer`,
/// `fail_if_no_peer_cert = true`), and may log in with the `EXTERNAL`
/// mechanism (plugin `rabbitmq_auth_mechanism_ssl`) as the user named by
/// the certificate's common name.
pub const MTLS_PORT: u16 = 5676;

/// The node that serves [`MTLS_PORT`]. Node 1 cannot: RabbitMQ's
/// `ssl_options` hold for every TLS listener of a node, and node 1's
/// [`TLS_PORT`] asks for no client certificate.
pub const MTLS_NODE: usize = 2;

/// The common name, and so the broker user name, of the client
/// certificate `client.pem`.
pub const MTLS_USER: &str = "rabbitkit-mtls";

/// The client certificates made for [`MTLS_PORT`], by file stem:
/// `client` (signed by the test CA, for [`MTLS_USER`]), `client-other-ca`
/// (signed by `other-ca.pem`, which the broker does not trust) and
/// `client-expired` (signed by the test CA, valid only on 1 January 2020).
const CLIENT_CERTS: [&str; 3] = ["client", "client-other-ca", "client-expired"];

impl Cluster {
    /// Where the test TLS files live: `ca.pem` (the CA that signed the
    /// server certificate of the TLS listeners, for `localhost` only),
    /// `other-ca.pem` (a CA the broker does not trust, to test refusals),
    /// `server.pem`, `server.key`, and the client certificates for
    /// [`MTLS_PORT`], each with its key: `client.pem`/`client.key` (common
    /// name [`MTLS_USER`]), `client-other-ca.pem` (signed by
    /// `other-ca.pem`) and `client-expired.pem` (expired on 2 January 2020).
    pub fn tls_dir(&self) -> PathBuf {
        self.base.join("tls")
    }

    /// An `amqps://` URL of node 1's TLS listener ([`TLS_PORT`]), by host name.
    pub fn amqps_url(&self) -> String {
        format!("amqps://guest:guest@localhost:{TLS_PORT}/%2f")
    }

    /// A `rabbitmq-stream+tls://` URL of node 1's stream TLS listener
    /// ([`STREAM_TLS_PORT`]), by host name.
    pub fn stream_tls_url(&self) -> String {
        format!("rabbitmq-stream+tls://guest:guest@localhost:{STREAM_TLS_PORT}/%2f")
    }

    /// An `amqps://` URL of the mutual-TLS listener ([`MTLS_PORT`]), by
    /// host name and without credentials (log in with `EXTERNAL`).
    pub fn mtls_url(&self) -> String {
        format!("amqps://localhost:{MTLS_PORT}/%2f")
    }

    /// Makes, with `openssl`, whichever of the test CA, node 1's server
    /// certificate and the client certificates are missing.
    pub(super) fn prepare_tls(&self) -> Result<()> {
        let dir = self.tls_dir();
        fs::create_dir_all(&dir)
            .map_err(|e| ClusterError::io(format!("creating {}", dir.display()), e))?;
        let has = |files: &[&str]| files.iter().all(|f| dir.join(f).exists());
        if !has(&["ca.pem", "other-ca.pem", "server.pem", "server.key"]) {
            make_ca_and_server(&dir)?;
        }
        if !CLIENT_CERTS
            .iter()
            .all(|c| has(&[&format!("{c}.pem"), &format!("{c}.key")]))
        {
            make_client_certs(&dir)?;
        }
        Ok(())
    }
}

fn write(dir: &Path, name: &str, contents: &str) -> Result<()> {
    fs::write(dir.join(name), contents).map_err(|e| ClusterError::io(format!("writing {name}"), e))
}

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let mut cmd = Command::new("openssl");
    cmd.args(args).current_dir(dir);
    run(cmd, CTL_TIMEOUT).map(drop)
}

/// A new RSA key `<stem>.key` and a request `<stem>.csr` for `cn`.
fn key_and_request(dir: &Path, stem: &str, cn: &str) -> Result<()> {
    let (key, csr, subj) = (
        format!("{stem}.key"),
        format!("{stem}.csr"),
        format!("/CN={cn}"),
    );
    openssl(
        dir,
        &[
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj", &subj,
        ],
    )
}

fn make_ca_and_server(dir: &Path) -> Result<()> {
    write(
        dir,
        "server.ext",
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )?;
    for (stem, cn) in [
        ("ca", "rabbitkit test CA"),
        ("other-ca", "rabbitkit other CA"),
    ] {
        let (key, pem, subj) = (
            format!("{stem}.key"),
            format!("{stem}.pem"),
            format!("/CN={cn}"),
        );
        openssl(
            dir,
            &[
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &pem,
                "-days", "3650", "-subj", &subj,
            ],
        )?;
    }
    key_and_request(dir, "server", "localhost")?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "3650",
            "-extfile",
            "server.ext",
        ],
    )
}

fn make_client_certs(dir: &Path) -> Result<()> {
    write(
        dir,
        "client.ext",
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n\
         extendedKeyUsage=clientAuth\n",
    )?;
    for (stem, ca) in [("client", "ca"), ("client-other-ca", "other-ca")] {
        key_and_request(dir, stem, MTLS_USER)?;
        let (csr, pem) = (format!("{stem}.csr"), format!("{stem}.pem"));
        let (ca_pem, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca_pem,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "3650",
                "-extfile",
                "client.ext",
            ],
        )?;
    }
    // `openssl x509` cannot set dates in the past; `openssl ca` can, with
    // a minimal CA configuration and database kept in `expired-ca/`.
    let ca_dir = dir.join("expired-ca");
    fs::create_dir_all(&ca_dir)
        .map_err(|e| ClusterError::io(format!("creating {}", ca_dir.display()), e))?;
    write(
        &ca_dir,
        "ca.cnf",
        "[ca]\ndefault_ca = test\n[test]\ndatabase = index.txt\nnew_certs_dir = .\n\
         serial = serial\ndefault_md = sha256\npolicy = any\nunique_subject = no\n\
         x509_extensions = client\n[any]\ncommonName = supplied\n\
         [client]\nbasicConstraints = CA:FALSE\nkeyUsage = digitalSignature,keyEncipherment\n\
         extendedKeyUsage = clientAuth\n",
    )?;
    write(&ca_dir, "index.txt", "")?;
    write(&ca_dir, "serial", "1000\n")?;
    key_and_request(dir, "client-expired", MTLS_USER)?;
    openssl(
        &ca_dir,
        &[
            "ca",
            "-config",
            "ca.cnf",
            "-batch",
            "-notext",
            "-cert",
            "../ca.pem",
            "-keyfile",
            "../ca.key",
            "-startdate",
            "20200101000000Z",
            "-enddate",
            "20200102000000Z",
            "-in",
            "../client-expired.csr",
            "-out",
            "../client-expired.pem",
        ],
    )
}
