//! The test certificates and node 1's TLS listener.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use super::Cluster;
use super::nodes::CTL_TIMEOUT;
use crate::error::{ClusterError, Result};
use crate::process::run;

/// The TLS (`amqps`) port of node 1.
pub const TLS_PORT: u16 = 5671;

impl Cluster {
    /// Where the test TLS files live: `ca.pem` (the CA that signed the
    /// server certificate of node 1's TLS listener, for `localhost` only),
    /// `other-ca.pem` (a CA that signed nothing, to test refusals),
    /// `server.pem`, `server.key`.
    pub fn tls_dir(&self) -> PathBuf {
        self.base.join("tls")
    }

    /// An `amqps://` URL of node 1's TLS listener ([`TLS_PORT`]), by host name.
    pub fn amqps_url(&self) -> String {
        format!("amqps://guest:guest@localhost:{TLS_PORT}/%2f")
    }

    /// Makes the test CA and node 1's server certificate once, with `openssl`.
    pub(super) fn prepare_tls(&self) -> Result<()> {
        let dir = self.tls_dir();
        if ["ca.pem", "other-ca.pem", "server.pem", "server.key"]
            .iter()
            .all(|f| dir.join(f).exists())
        {
            return Ok(());
        }
        fs::create_dir_all(&dir)
            .map_err(|e| ClusterError::io(format!("creating {}", dir.display()), e))?;
        fs::write(
            dir.join("server.ext"),
            "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )
        .map_err(|e| ClusterError::io("writing server.ext", e))?;
        let steps: [&[&str]; 4] = [
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "3650",
                "-subj",
                "/CN=rabbitkit test CA",
            ],
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "other-ca.key",
                "-out",
                "other-ca.pem",
                "-days",
                "3650",
                "-subj",
                "/CN=rabbitkit other CA",
            ],
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
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
        ];
        for args in steps {
            let mut cmd = Command::new("openssl");
            cmd.args(args).current_dir(&dir);
            run(cmd, CTL_TIMEOUT)?;
        }
        Ok(())
    }
}
