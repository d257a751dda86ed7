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
//! `content_encoding: gzip` is undone before decoding.

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
    /// The body's content type (`none` when absent).
    pub content_type: String,
    /// The Rust type asked for.
    pub target: &'static str,
    /// Why.
    pub reason: String,
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

/// Decodes a body received with `properties` into `T`.
pub fn decode<T: DeserializeOwned>(
    body: &[u8],
    properties: &BasicProperties,
) -> Result<T, DecodeError> {
    let content_type = properties
        .content_type()
        .as_ref()
        .map(|c| c.as_str().to_owned())
        .unwrap_or_else(|| "none".to_owned());
    let err = |reason: String| DecodeError {
        content_type: content_type.clone(),
        target: std::any::type_name::<T>(),
        reason,
    };
    let encoding = properties.content_encoding().as_ref().map(|e| e.as_str());
    let inflated;
    let body = match encoding {
        None | Some("") | Some("identity") => body,
        Some(GZIP) => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut out)
                .map_err(|e| err(format!("bad gzip body: {e}")))?;
            inflated = out;
            &inflated
        }
        Some(other) => return Err(err(format!("unsupported content_encoding {other:?}"))),
    };
    let base = content_type.split(';').next().unwrap_or("").trim();
    if base == JSON || base.ends_with("+json") {
        return serde_json::from_slice(body).map_err(|e| err(e.to_string()));
    }
    if !(base == TEXT || base == "none" || base.is_empty() || base.starts_with("text/")) {
        return Err(err(
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
        Ok(_) => err(e.to_string()),
        Err(_) => err("body is neither UTF-8 text nor JSON".into()),
    })
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
        assert!(decode::<u64>(b"thirty", &props(None)).is_err());
        assert!(decode::<Order>(&[0xff, 0xfe], &props(None)).is_err());
        let e = decode::<String>(b"x", &props(Some("application/xml"))).unwrap_err();
        assert!(e.reason.contains("unexpected content type"));
        let gz = props(Some(JSON)).with_content_encoding(GZIP.into());
        assert!(decode::<Order>(b"not gzip", &gz).is_err());
        let br = props(Some(JSON)).with_content_encoding("br".into());
        assert!(decode::<Order>(b"{}", &br).is_err());
    }
}
