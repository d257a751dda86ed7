//! Bodies on the wire: JSON, plain text and raw bytes, optionally gzipped.
//!
//! rabbitkit writes what other AMQP programs expect to read:
//! - a value that serializes to a JSON string (a `String`, a unit enum
//!   variant) is sent as **plain text**, `text/plain`; so a
//!   `Queue::publish(&"Hello World!".to_string())` is read by the official
//!   Python tutorial's `receive.py` as `b'Hello World!'`;
//! - every other value is sent as **JSON**, `application/json`; a number is
//!   therefore its decimal digits (`30`), as the tutorials' RPC programs send it.
//!
//! And reads what they write: a body marked `application/json` is parsed as
//! JSON; any other body (plain text, no content type) is first taken as text
//! (so a `String` gets exactly what was sent), then as JSON (so `"30"` is
//! the number 30 and an unlabelled JSON object still decodes).
//! `content_encoding: gzip` is undone before decoding, up to a limit: a
//! body that inflates to more than [`DEFAULT_MAX_INFLATED`] bytes (or the
//! limit given to [`decode_with_limit`] or
//! [`Subscription::max_inflated`](crate::Subscription::max_inflated)) is a
//! [`DecodeErrorKind::TooLarge`] error, and inflating stops there.

use std::io::{Read, Write};

use rabbitkit_core::{BasicProperties, ShortString};
use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;

/// `application/json`.
pub const JSON: &str = "application/json";
/// `text/plain`.
pub const TEXT: &str = "text/plain";
/// `gzip`, as a `content_encoding`.
pub const GZIP: &str = "gzip";

/// The most bytes a gzip body may inflate to, by default: 128 MiB.
///
/// That is RabbitMQ's default `max_message_size` up to 3.13 (4.0 lowered it
/// to 16 MiB), so any body another client could have sent uncompressed
/// still decodes, while a small compressed body cannot make a consumer
/// allocate gigabytes. Inflating stops one byte past the limit.
pub const DEFAULT_MAX_INFLATED: usize = 128 * 1024 * 1024;

/// A value could not be encoded.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("cannot encode message body: {reason}")]
pub struct EncodeError {
    /// Why.
    pub reason: String,
}

/// A body could not be decoded into the expected type.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("cannot decode {content_type} body as {target}: {reason}")]
pub struct DecodeError {
    /// What kind of failure.
    pub kind: DecodeErrorKind,
    /// The body's content type (`none` when absent).
    pub content_type: String,
    /// The Rust type asked for.
    pub target: &'static str,
    /// Why.
    pub reason: String,
}

/// What kind of [`DecodeError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// The bytes are not a `T`: bad JSON, not UTF-8, the wrong shape.
    Body,
    /// The content type is neither JSON nor text.
    ContentType,
    /// The `content_encoding` is not supported, or the gzip data is corrupt.
    Encoding,
    /// The gzip body inflates to more than `limit` bytes; inflating stopped
    /// one byte past the limit.
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
}

/// Encodes `value` into a body and the properties that describe it.
pub fn encode<T: Serialize + ?Sized>(
    value: &T,
    gzip: bool,
) -> Result<(Vec<u8>, BasicProperties), EncodeError> {
    let json = serde_json::to_value(value).map_err(|e| EncodeError {
        reason: e.to_string(),
    })?;
    let (body, content_type) = match json {
        serde_json::Value::String(text) => (text.into_bytes(), TEXT),
        other => (
            serde_json::to_vec(&other).map_err(|e| EncodeError {
                reason: e.to_string(),
            })?,
            JSON,
        ),
    };
    let mut props = BasicProperties::default().with_content_type(ShortString::from(content_type));
    let body = if gzip {
        props = props.with_content_encoding(GZIP.into());
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&body)
            .and_then(|_| enc.finish())
            .map_err(|e| EncodeError {
                reason: format!("gzip: {e}"),
            })?
    } else {
        body
    };
    Ok((body, props))
}

/// Decodes a body received with `properties` into `T`; a gzip body may
/// inflate to at most [`DEFAULT_MAX_INFLATED`] bytes.
pub fn decode<T: DeserializeOwned>(
    body: &[u8],
    properties: &BasicProperties,
) -> Result<T, DecodeError> {
    decode_with_limit(body, properties, DEFAULT_MAX_INFLATED)
}

/// [`decode`] with a limit on the size of an inflated gzip body: beyond
/// `max_inflated` bytes it is a [`DecodeErrorKind::TooLarge`] error, and no
/// more than that is ever held in memory.
///
/// ```
/// use rabbitkit::codec::{self, DecodeErrorKind};
/// let (body, props) = codec::encode(&"x".repeat(1000), true).unwrap();
/// assert_eq!(codec::decode_with_limit::<String>(&body, &props, 1000).unwrap().len(), 1000);
/// let e = codec::decode_with_limit::<String>(&body, &props, 999).unwrap_err();
/// assert_eq!(e.kind, DecodeErrorKind::TooLarge { limit: 999 });
/// ```
pub fn decode_with_limit<T: DeserializeOwned>(
    body: &[u8],
    properties: &BasicProperties,
    max_inflated: usize,
) -> Result<T, DecodeError> {
    let content_type = properties
        .content_type()
        .as_ref()
        .map(|c| c.as_str().to_owned())
        .unwrap_or_else(|| "none".to_owned());
    let err = |kind: DecodeErrorKind, reason: String| DecodeError {
        kind,
        content_type: content_type.clone(),
        target: std::any::type_name::<T>(),
        reason,
    };
    let encoding = properties.content_encoding().as_ref().map(|e| e.as_str());
    let inflated;
    let body = match encoding {
        None | Some("") | Some("identity") => body,
        Some(GZIP) => {
            inflated = inflate(body, max_inflated).map_err(|e| match e {
                Inflate::TooLarge => err(
                    DecodeErrorKind::TooLarge {
                        limit: max_inflated,
                    },
                    format!("gzip body inflates to more than {max_inflated} bytes"),
                ),
                Inflate::Bad(e) => err(DecodeErrorKind::Encoding, format!("bad gzip body: {e}")),
            })?;
            &inflated
        }
        Some(other) => {
            return Err(err(
                DecodeErrorKind::Encoding,
                format!("unsupported content_encoding {other:?}"),
            ));
        }
    };
    let base = content_type.split(';').next().unwrap_or("").trim();
    if base == JSON || base.ends_with("+json") {
        return serde_json::from_slice(body).map_err(|e| err(DecodeErrorKind::Body, e.to_string()));
    }
    if !(base == TEXT || base == "none" || base.is_empty() || base.starts_with("text/")) {
        return Err(err(
            DecodeErrorKind::ContentType,
            "unexpected content type (expected application/json or text/plain)".into(),
        ));
    }
    // Plain text or unlabelled: the text itself first, then JSON.
    let text = std::str::from_utf8(body);
    if let Ok(text) = text
        && let Ok(v) = serde_json::from_value::<T>(serde_json::Value::String(text.to_owned()))
    {
        return Ok(v);
    }
    serde_json::from_slice(body).map_err(|e| match text {
        Ok(_) => err(DecodeErrorKind::Body, e.to_string()),
        Err(_) => err(
            DecodeErrorKind::Body,
            "body is neither UTF-8 text nor JSON".into(),
        ),
    })
}

enum Inflate {
    TooLarge,
    Bad(std::io::Error),
}

/// Inflates a gzip body, holding (and allocating) at most `max` bytes: the
/// buffer grows by doubling, capped at `max`, and one byte more than `max`
/// is an error.
fn inflate(body: &[u8], max: usize) -> Result<Vec<u8>, Inflate> {
    let mut decoder = flate2::read::GzDecoder::new(body);
    let mut out = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = match decoder.read(&mut chunk) {
            Ok(0) => return Ok(out),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Inflate::Bad(e)),
        };
        if n > max - out.len() {
            return Err(Inflate::TooLarge);
        }
        if out.capacity() - out.len() < n {
            let want = (out.capacity() * 2).max(out.len() + n).min(max);
            out.reserve_exact(want - out.len());
        }
        out.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Order {
        id: u32,
        item: String,
    }

    fn props(ct: Option<&str>) -> BasicProperties {
        match ct {
            Some(ct) => BasicProperties::default().with_content_type(ct.into()),
            None => BasicProperties::default(),
        }
    }

    #[test]
    fn strings_go_as_plain_text_and_numbers_as_decimal() {
        let (body, p) = encode(&"Hello World!".to_string(), false).unwrap();
        assert_eq!(body, b"Hello World!");
        assert_eq!(p.content_type().as_ref().unwrap().as_str(), TEXT);
        let (body, p) = encode(&30u64, false).unwrap();
        assert_eq!(body, b"30");
        assert_eq!(p.content_type().as_ref().unwrap().as_str(), JSON);
    }

    #[test]
    fn reads_what_other_clients_write() {
        // pika's tutorial programs send bare text without a content type.
        assert_eq!(
            decode::<String>(b"Hello World!", &props(None)).unwrap(),
            "Hello World!"
        );
        assert_eq!(decode::<u64>(b"30", &props(None)).unwrap(), 30);
        assert_eq!(decode::<String>(b"30", &props(None)).unwrap(), "30");
        assert_eq!(
            decode::<String>(b"\"q\"", &props(Some(TEXT))).unwrap(),
            "\"q\""
        );
        let o = Order {
            id: 7,
            item: "tea".into(),
        };
        assert_eq!(
            decode::<Order>(br#"{"id":7,"item":"tea"}"#, &props(Some(JSON))).unwrap(),
            o
        );
        assert_eq!(
            decode::<Order>(br#"{"id":7,"item":"tea"}"#, &props(None)).unwrap(),
            o
        );
    }

    #[test]
    fn round_trips_with_and_without_gzip() {
        let o = Order {
            id: 1,
            item: "x".repeat(1000),
        };
        for gz in [false, true] {
            let (body, p) = encode(&o, gz).unwrap();
            if gz {
                assert!(body.len() < 200, "compressed");
                assert_eq!(p.content_encoding().as_ref().unwrap().as_str(), GZIP);
            }
            assert_eq!(decode::<Order>(&body, &p).unwrap(), o);
        }
    }

    #[test]
    fn bad_bodies_are_errors_not_panics() {
        let e = decode::<Order>(b"{not json", &props(Some(JSON))).unwrap_err();
        assert_eq!(e.content_type, JSON);
        assert_eq!(e.kind, DecodeErrorKind::Body);
        assert!(decode::<u64>(b"thirty", &props(None)).is_err());
        assert!(decode::<Order>(&[0xff, 0xfe], &props(None)).is_err());
        let e = decode::<String>(b"x", &props(Some("application/xml"))).unwrap_err();
        assert!(e.reason.contains("unexpected content type"));
        assert_eq!(e.kind, DecodeErrorKind::ContentType);
        let gz = props(Some(JSON)).with_content_encoding(GZIP.into());
        let e = decode::<Order>(b"not gzip", &gz).unwrap_err();
        assert_eq!(e.kind, DecodeErrorKind::Encoding);
        let br = props(Some(JSON)).with_content_encoding("br".into());
        let e = decode::<Order>(b"{}", &br).unwrap_err();
        assert_eq!(e.kind, DecodeErrorKind::Encoding);
    }

    /// A gzip body that inflates to `len` bytes of `byte`, compressed
    /// through a streaming writer: the test never holds the inflated body.
    fn gzip_bomb(len: usize, byte: u8) -> Vec<u8> {
        let chunk = vec![byte; 64 * 1024];
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut left = len;
        while left > 0 {
            let n = left.min(chunk.len());
            enc.write_all(&chunk[..n]).unwrap();
            left -= n;
        }
        enc.finish().unwrap()
    }

    #[test]
    fn a_gzip_bomb_is_refused_by_default() {
        // One byte over 128 MiB of text, sent as a small gzip body.
        let bomb = gzip_bomb((128 << 20) + 1, b'a');
        assert!(bomb.len() < 1 << 20, "{} bytes compressed", bomb.len());
        let gz = props(Some(TEXT)).with_content_encoding(GZIP.into());
        let e = match decode::<String>(&bomb, &gz) {
            Ok(s) => panic!("inflated and decoded all {} bytes", s.len()),
            Err(e) => e,
        };
        assert_eq!(
            e.kind,
            DecodeErrorKind::TooLarge {
                limit: DEFAULT_MAX_INFLATED
            },
            "{e}"
        );
        assert_eq!(e.content_type, TEXT);
    }

    #[test]
    fn the_inflate_limit_is_exact_and_settable() {
        // 64 MiB of zeros is ~64 KiB compressed; a 1 MiB limit refuses it
        // after inflating at most 1 MiB.
        let bomb = gzip_bomb(64 << 20, 0);
        assert!(bomb.len() < 1 << 20, "{} bytes compressed", bomb.len());
        let gz = props(Some(JSON)).with_content_encoding(GZIP.into());
        let e = decode_with_limit::<Vec<u8>>(&bomb, &gz, 1 << 20).unwrap_err();
        assert_eq!(e.kind, DecodeErrorKind::TooLarge { limit: 1 << 20 });
        assert!(e.to_string().contains("more than 1048576 bytes"), "{e}");
        // At the limit is fine, one byte over is not.
        let (body, p) = encode(&"y".repeat(5000), true).unwrap();
        assert_eq!(
            decode_with_limit::<String>(&body, &p, 5000).unwrap(),
            "y".repeat(5000)
        );
        let e = decode_with_limit::<String>(&body, &p, 4999).unwrap_err();
        assert_eq!(e.kind, DecodeErrorKind::TooLarge { limit: 4999 });
        // An empty gzip body within a limit of zero.
        let (body, p) = encode(&String::new(), true).unwrap();
        assert_eq!(decode_with_limit::<String>(&body, &p, 0).unwrap(), "");
        // A limit does not affect bodies that are not compressed.
        let (body, p) = encode(&"z".repeat(100), false).unwrap();
        assert_eq!(
            decode_with_limit::<String>(&body, &p, 1).unwrap().len(),
            100
        );
    }
}
