//! Broker endpoints: parsing `amqp://` and `amqps://` URLs, and lists of them.
//!
//! An [`Endpoint`] keeps the credentials it was given, but its `Debug` and
//! `Display` never show the password: `amqp://guest:***@127.0.0.1:5672/%2f`.

use std::fmt;
use std::str::FromStr;

use lapin::uri::{AMQPScheme, AMQPUri};

use crate::error::EndpointError;

/// One broker address a client may connect to.
///
/// Built from an `amqp://` or `amqps://` URL. The password is kept only to
/// log in; it is never printed by `Debug` or `Display`.
///
/// ```
/// use rabbitkit_core::Endpoint;
/// let e: Endpoint = "amqp://app:s3cret@10.0.0.5:5672/%2f".parse().unwrap();
/// assert_eq!(e.host(), "10.0.0.5");
/// assert_eq!(e.port(), 5672);
/// assert!(!format!("{e:?} {e}").contains("s3cret"));
/// ```
#[derive(Clone, PartialEq)]
pub struct Endpoint {
    uri: AMQPUri,
}

/// The authority part of `scheme://authority/path?query`, without the
/// user info (which may hold anything, brackets included).
fn authority(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..end];
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host)
}

impl Endpoint {
    /// Parses one URL. The error never repeats the URL (it may hold a password).
    /// A virtual host over 255 bytes is [`EndpointError::Invalid`].
    pub fn parse(url: &str) -> Result<Self, EndpointError> {
        let url = url.trim();
        if url.is_empty() {
            return Err(EndpointError::Empty);
        }
        let scheme = url.split("://").next().unwrap_or_default();
        if !url.contains("://") || !(scheme == "amqp" || scheme == "amqps") {
            return Err(EndpointError::Scheme {
                scheme: if url.contains("://") {
                    scheme.to_owned()
                } else {
                    String::new()
                },
            });
        }
        if authority(url).contains('[') {
            // lapin's URI parser keeps only a host name and would turn an
            // IPv6 literal into "localhost".
            return Err(EndpointError::Invalid {
                reason: "IPv6 address literals ([...]) are not supported; use a host name".into(),
            });
        }
        let uri = AMQPUri::from_str(url).map_err(|e| EndpointError::Invalid {
            // The parser's message can quote the whole URL; keep only its kind.
            reason: redact_reason(&e),
        })?;
        if uri.authority.host.is_empty() {
            return Err(EndpointError::Invalid {
                reason: "missing host".into(),
            });
        }
        if let Err(reason) = crate::validate::check_short_string(&uri.vhost) {
            // The vhost itself is not repeated: a mistyped URL may put a password there.
            return Err(EndpointError::Invalid {
                reason: format!("virtual host of {reason}"),
            });
        }
        Ok(Self { uri })
    }

    /// Parses a comma-separated list of URLs (the format of `AMQP_ADDR`).
    pub fn parse_list(list: &str) -> Result<Vec<Self>, EndpointError> {
        let endpoints = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(Self::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if endpoints.is_empty() {
            return Err(EndpointError::Empty);
        }
        Ok(endpoints)
    }

    /// The host name or address.
    pub fn host(&self) -> &str {
        &self.uri.authority.host
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.uri.authority.port
    }

    /// The virtual host.
    pub fn vhost(&self) -> &str {
        &self.uri.vhost
    }

    /// The user name (never the password).
    pub fn username(&self) -> &str {
        &self.uri.authority.userinfo.username
    }

    /// Whether this endpoint uses TLS (`amqps://`).
    pub fn is_tls(&self) -> bool {
        self.uri.scheme == AMQPScheme::AMQPS
    }

    /// The URI handed to lapin, with heartbeat and connect timeout applied,
    /// and the `EXTERNAL` mechanism when `external`.
    pub(crate) fn to_uri(
        &self,
        heartbeat_secs: u16,
        connect_timeout_ms: u64,
        external: bool,
    ) -> AMQPUri {
        let mut uri = self.uri.clone();
        if external {
            uri.query.auth_mechanism = Some(lapin::uri::SASLMechanism::External);
        }
        if uri.query.heartbeat.is_none() {
            uri.query.heartbeat = Some(heartbeat_secs);
        }
        if uri.query.connection_timeout.is_none() {
            uri.query.connection_timeout = Some(connect_timeout_ms);
        }
        uri
    }
}

fn redact_reason(parser_message: &str) -> String {
    // Messages such as "Invalid URL: 'amqp://u:p@h'" quote the input.
    match parser_message.split_once(':') {
        Some((head, _)) if parser_message.contains('\'') => head.trim().to_owned(),
        _ if parser_message.contains('@') || parser_message.contains("://") => {
            "malformed URL".to_owned()
        }
        _ => parser_message.to_owned(),
    }
}

impl FromStr for Endpoint {
    type Err = EndpointError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.is_tls() { "amqps" } else { "amqp" };
        let vhost = if self.uri.vhost == "/" {
            "%2f".to_owned()
        } else {
            self.uri.vhost.clone()
        };
        write!(
            f,
            "{scheme}://{}:***@{}:{}/{vhost}",
            self.username(),
            self.host(),
            self.port()
        )
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Endpoint({self})")
    }
}

/// Anything that names one or more endpoints: a URL, a comma-separated list,
/// a slice or `Vec` of URLs, or [`Endpoint`]s.
pub trait ToEndpoints {
    /// Converts to a list of endpoints.
    fn to_endpoints(&self) -> Result<Vec<Endpoint>, EndpointError>;
}

impl ToEndpoints for str {
    fn to_endpoints(&self) -> Result<Vec<Endpoint>, EndpointError> {
        Endpoint::parse_list(self)
    }
}
/// A reference to anything that names endpoints: `&str`, `&String`,
/// `&Vec<_>`, `&[_]`, `&Endpoint`.
impl<T: ToEndpoints + ?Sized> ToEndpoints for &T {
    fn to_endpoints(&self) -> Result<Vec<Endpoint>, EndpointError> {
        (**self).to_endpoints()
    }
}
impl ToEndpoints for String {
    fn to_endpoints(&self) -> Result<Vec<Endpoint>, EndpointError> {
        Endpoint::parse_list(self)
    }
}
impl ToEndpoints for Endpoint {
    fn to_endpoints(&self) -> Result<Vec<Endpoint>, EndpointError> {
        Ok(vec![self.clone()])
    }
}
impl<T: ToEndpoints> ToEndpoints for [T] {
    fn to_endpoints(&self) -> Result<Vec<Endpoint>, EndpointError> {
        let mut all = Vec::new();
        for item in self {
            all.extend(item.to_endpoints()?);
        }
        if all.is_empty() {
            return Err(EndpointError::Empty);
        }
        Ok(all)
    }
}
impl<T: ToEndpoints> ToEndpoints for Vec<T> {
    fn to_endpoints(&self) -> Result<Vec<Endpoint>, EndpointError> {
        self.as_slice().to_endpoints()
    }
}
impl<T: ToEndpoints, const N: usize> ToEndpoints for [T; N] {
    fn to_endpoints(&self) -> Result<Vec<Endpoint>, EndpointError> {
        self.as_slice().to_endpoints()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_to_anything_that_names_endpoints_name_them_too() {
        // As `Options::connect(&url)` takes them.
        fn names(e: impl ToEndpoints) -> Vec<Endpoint> {
            e.to_endpoints().unwrap()
        }
        let url = String::from("amqp://127.0.0.1:5672/%2f");
        let one = names(&url);
        assert_eq!(one, names(url.as_str()));
        let list = vec![url.clone(), "amqp://127.0.0.1:5673/%2f".to_owned()];
        assert_eq!(names(&list).len(), 2);
        assert_eq!(names(&one[0]), one);
    }

    #[test]
    fn parses_a_list_and_hides_passwords() {
        let list = Endpoint::parse_list(
            "amqp://u:topsecret@127.0.0.1:5672/%2f, amqps://u:topsecret@host2:5671/prod",
        )
        .unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].port(), 5672);
        assert_eq!(list[0].vhost(), "/");
        assert!(list[1].is_tls());
        assert_eq!(list[1].vhost(), "prod");
        for e in &list {
            let shown = format!("{e} {e:?} {list:?}");
            assert!(!shown.contains("topsecret"), "{shown}");
        }
        assert_eq!(list[0].to_string(), "amqp://u:***@127.0.0.1:5672/%2f");
    }

    #[test]
    fn rejects_bad_urls_without_echoing_them() {
        assert!(matches!(Endpoint::parse(""), Err(EndpointError::Empty)));
        assert!(matches!(
            Endpoint::parse("http://u:pw@h"),
            Err(EndpointError::Scheme { .. })
        ));
        assert!(matches!(
            Endpoint::parse("localhost:5672"),
            Err(EndpointError::Scheme { .. })
        ));
        let err = Endpoint::parse("amqp://u:hunter2@[::1").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(!format!("{err:?}").contains("hunter2"));
        assert!(matches!(
            Endpoint::parse_list(" , "),
            Err(EndpointError::Empty)
        ));
    }

    #[test]
    fn ipv6_literal_hosts_are_refused_not_turned_into_localhost() {
        // lapin's URI parser keeps only a host *name*: `[::1]` or
        // `[2001:db8::5]` would silently become "localhost".
        for url in [
            "amqp://u:pw@[::1]:5672/%2f",
            "amqps://u:pw@[2001:db8::5]/prod",
        ] {
            match Endpoint::parse(url) {
                Err(EndpointError::Invalid { reason }) => {
                    assert!(reason.contains("IPv6"), "{reason}");
                    assert!(!reason.contains("pw"), "{reason}");
                }
                other => panic!("{url}: expected Invalid, got {other:?}"),
            }
        }
        // IPv4 literals and names are fine.
        assert_eq!(
            Endpoint::parse("amqp://10.1.2.3:5672").map(|e| e.host().to_owned()),
            Ok("10.1.2.3".into())
        );
    }

    #[test]
    fn a_vhost_over_255_bytes_is_refused() {
        let ok = format!("amqp://h:5672/{}", "v".repeat(255));
        assert_eq!(Endpoint::parse(&ok).unwrap().vhost().len(), 255);
        let long = format!("amqp://u:pw@h:5672/{}", "v".repeat(256));
        match Endpoint::parse(&long) {
            Err(EndpointError::Invalid { reason }) => assert!(reason.contains("255"), "{reason}"),
            other => panic!("expected EndpointError::Invalid, got {other:?}"),
        }
    }

    #[test]
    fn query_overrides_are_kept() {
        let e = Endpoint::parse("amqp://h:5672/%2f?heartbeat=3").unwrap();
        assert_eq!(e.to_uri(10, 5000, false).query.heartbeat, Some(3));
        let e = Endpoint::parse("amqp://h:5672/%2f").unwrap();
        assert_eq!(e.to_uri(10, 5000, false).query.heartbeat, Some(10));
        assert_eq!(
            e.to_uri(10, 5000, false).query.connection_timeout,
            Some(5000)
        );
        assert_eq!(e.to_uri(10, 5000, false).query.auth_mechanism, None);
        assert_eq!(
            e.to_uri(10, 5000, true).query.auth_mechanism,
            Some(lapin::uri::SASLMechanism::External)
        );
    }
}
