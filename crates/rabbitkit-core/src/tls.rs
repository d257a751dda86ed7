//! Client certificates (mutual TLS): checking the PEM given, and telling
//! apart the broker's refusals of a certificate.
//!
//! The one place where TLS failures of a client certificate are read: the
//! broker refuses a certificate with a TLS alert (`certificate_required`,
//! `unknown_ca`, `certificate_expired`, ...), which rustls reports as
//! [`rustls::Error::AlertReceived`] inside the I/O error lapin returns.

use std::sync::Arc;

use rustls::AlertDescription;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::endpoint::Endpoint;
use crate::error::{ClientCertError, ConnectError};
use crate::options::ClientIdentity;

/// Checks that the certificate PEM holds at least one certificate and the
/// key PEM a private key. The error never repeats either.
pub(crate) fn check_identity(id: &ClientIdentity) -> Result<(), &'static str> {
    let certs = CertificateDer::pem_slice_iter(&id.cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| "the client certificate is not valid PEM")?;
    if certs.is_empty() {
        return Err("the client certificate PEM holds no CERTIFICATE section");
    }
    PrivateKeyDer::from_pem_slice(&id.key_pem).map_err(
        |_| "the client key PEM holds no unencrypted private key (PKCS#8, PKCS#1 or SEC1)",
    )?;
    Ok(())
}

/// The error for a client certificate or key that cannot be read.
pub(crate) fn unreadable(endpoint: &Endpoint, reason: &'static str) -> ConnectError {
    ConnectError::ClientCertificate {
        endpoint: endpoint.to_string(),
        kind: ClientCertError::Unreadable,
        source: Arc::new(std::io::Error::new(std::io::ErrorKind::InvalidData, reason)),
    }
}

/// The broker's refusal of the client certificate (or of its absence), if
/// `err` is one.
pub(crate) fn client_cert_refusal(endpoint: &Endpoint, err: &lapin::Error) -> Option<ConnectError> {
    if !endpoint.is_tls() {
        return None;
    }
    let kind = alert_kind(received_alert(err)?)?;
    Some(ConnectError::ClientCertificate {
        endpoint: endpoint.to_string(),
        kind,
        source: Arc::new(err.clone()),
    })
}

/// The TLS alert the peer sent, found in `err`'s chain of sources.
fn received_alert(err: &lapin::Error) -> Option<AlertDescription> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = next {
        if let Some(rustls::Error::AlertReceived(alert)) = e.downcast_ref::<rustls::Error>() {
            return Some(*alert);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(rustls::Error::AlertReceived(alert)) = io
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(*alert);
        }
        next = e.source();
    }
    None
}

/// What an alert from the server says about the client's certificate.
/// Alerts about the server's own certificate are the client's to send, not
/// to receive, so every one of these is about the client's.
fn alert_kind(alert: AlertDescription) -> Option<ClientCertError> {
    Some(match alert {
        // TLS 1.3 (which rustls prefers, and RabbitMQ supports). A TLS 1.2
        // server answers a missing certificate with `handshake_failure`,
        // which also means other things: it is not read as one here.
        AlertDescription::CertificateRequired => ClientCertError::Missing,
        AlertDescription::UnknownCA => ClientCertError::UnknownCa,
        AlertDescription::CertificateExpired => ClientCertError::Expired,
        AlertDescription::CertificateRevoked => ClientCertError::Revoked,
        AlertDescription::BadCertificate
        | AlertDescription::UnsupportedCertificate
        | AlertDescription::CertificateUnknown
        | AlertDescription::AccessDenied => ClientCertError::Rejected,
        _ => return None,
    })
}

/// A TLS handshake refused for the server's certificate (read from the TLS
/// library's text): retrying cannot fix it.
pub(crate) fn is_certificate_error(err: &lapin::Error) -> bool {
    let text = err.to_string().to_lowercase();
    text.contains("certificate")
        || text.contains("unknownissuer")
        || text.contains("notvalidforname")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(cert: &str, key: &str) -> ClientIdentity {
        ClientIdentity {
            cert_pem: cert.as_bytes().to_vec(),
            key_pem: key.as_bytes().to_vec(),
        }
    }

    #[test]
    fn alerts_name_what_is_wrong_with_the_certificate() {
        for (alert, kind) in [
            (
                AlertDescription::CertificateRequired,
                ClientCertError::Missing,
            ),
            (AlertDescription::UnknownCA, ClientCertError::UnknownCa),
            (
                AlertDescription::CertificateExpired,
                ClientCertError::Expired,
            ),
            (
                AlertDescription::CertificateRevoked,
                ClientCertError::Revoked,
            ),
            (AlertDescription::BadCertificate, ClientCertError::Rejected),
        ] {
            assert_eq!(alert_kind(alert), Some(kind), "{alert:?}");
        }
        assert_eq!(alert_kind(AlertDescription::ProtocolVersion), None);
        assert_eq!(alert_kind(AlertDescription::HandshakeFailure), None);
    }

    #[test]
    fn the_alert_is_found_inside_lapins_io_error() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(AlertDescription::UnknownCA),
        );
        let err = lapin::Error::from(io);
        let endpoint: Endpoint = "amqps://u:pw@h:5676/%2f".parse().unwrap();
        match client_cert_refusal(&endpoint, &err) {
            Some(e @ ConnectError::ClientCertificate { .. }) => {
                assert!(e.is_fatal());
                assert_eq!(e.client_cert_error(), Some(ClientCertError::UnknownCa));
                assert!(std::error::Error::source(&e).is_some());
            }
            other => panic!("{other:?}"),
        }
        let plain: Endpoint = "amqp://u:pw@h:5672/%2f".parse().unwrap();
        assert!(client_cert_refusal(&plain, &err).is_none());
    }

    #[test]
    fn unreadable_pem_is_refused_without_repeating_it() {
        let secret_key =
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END PRIVATE KEY-----\n";
        let cert = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(check_identity(&id("not a pem", secret_key)).is_err());
        let reason = check_identity(&id(cert, "not a key")).unwrap_err();
        assert!(reason.contains("private key"), "{reason}");
        let endpoint: Endpoint = "amqps://u:pw@h:5676/%2f".parse().unwrap();
        let err = unreadable(&endpoint, reason);
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("c2VjcmV0"), "{shown}");
        assert!(err.is_fatal());
    }
}
