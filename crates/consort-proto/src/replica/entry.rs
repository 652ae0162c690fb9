//! The replicated data model: keys, JSON values, versions and entries.
//!
//! A key is a UTF-8 path like `kitchen/light/on`. A value is JSON, kept as compact text. Every
//! write carries a [`Version`]: a hybrid logical clock timestamp and the writer's node id, so the
//! last writer wins everywhere, and ties are broken the same way everywhere. A delete is an entry
//! without a value (a tombstone), so that it wins over older writes too.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::id::NodeId;

/// Longest key, in bytes.
pub const MAX_KEY_LEN: usize = 512;

/// Why a key or value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidData {
    /// The key is empty.
    #[error("the key is empty")]
    EmptyKey,
    /// The key is longer than [`MAX_KEY_LEN`] bytes.
    #[error("the key is {0} bytes; at most {MAX_KEY_LEN} are allowed")]
    KeyTooLong(usize),
    /// The key has an empty segment (leading, trailing or doubled `/`).
    #[error("the key {0:?} has an empty segment (leading, trailing or doubled '/')")]
    EmptySegment(String),
    /// The key holds a control character.
    #[error("the key {0:?} holds a control character")]
    ControlChar(String),
    /// The value is not JSON.
    #[error("the value is not JSON: {0}")]
    NotJson(String),
    /// The value is larger than allowed.
    #[error("the value is {size} bytes; at most {max} are allowed")]
    ValueTooLarge {
        /// Its size in bytes (compact JSON).
        size: usize,
        /// The configured maximum.
        max: usize,
    },
}

/// A validated key: 1 to 512 bytes of UTF-8, `/`-separated segments, none empty.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Key(Arc<str>);

impl Key {
    /// Validates `text` as a key.
    pub fn new(text: &str) -> Result<Key, InvalidData> {
        if text.is_empty() {
            return Err(InvalidData::EmptyKey);
        }
        if text.len() > MAX_KEY_LEN {
            return Err(InvalidData::KeyTooLong(text.len()));
        }
        if text.split('/').any(str::is_empty) {
            return Err(InvalidData::EmptySegment(text.to_string()));
        }
        if text.chars().any(char::is_control) {
            return Err(InvalidData::ControlChar(text.to_string()));
        }
        Ok(Key(text.into()))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the key is `prefix` itself or lies under it (`a/b` is under `a` and `a/`, not `ab`).
    /// The empty prefix matches every key.
    pub fn is_under(&self, prefix: &str) -> bool {
        let prefix = prefix.trim_end_matches('/');
        prefix.is_empty()
            || self.0.as_ref() == prefix
            || (self.0.starts_with(prefix) && self.0.as_bytes().get(prefix.len()) == Some(&b'/'))
    }
}

impl TryFrom<String> for Key {
    type Error = InvalidData;
    fn try_from(text: String) -> Result<Key, InvalidData> {
        Key::new(&text)
    }
}

impl From<Key> for String {
    fn from(key: Key) -> String {
        key.0.to_string()
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

/// A JSON value, stored as compact JSON text.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Value(Arc<str>);

impl Value {
    /// Parses `text` as JSON and keeps its compact form.
    pub fn parse(text: &str) -> Result<Value, InvalidData> {
        let parsed: serde_json::Value =
            serde_json::from_str(text).map_err(|e| InvalidData::NotJson(e.to_string()))?;
        Ok(Value::from_json(&parsed))
    }

    /// Wraps an already parsed JSON value.
    pub fn from_json(json: &serde_json::Value) -> Value {
        Value(json.to_string().into())
    }

    /// The compact JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The value as parsed JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.0).expect("a Value always holds valid JSON")
    }

    /// Size in bytes of the compact JSON text.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the text is empty (never, for valid JSON).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl TryFrom<String> for Value {
    type Error = InvalidData;
    fn try_from(text: String) -> Result<Value, InvalidData> {
        Value::parse(&text)
    }
}

impl From<Value> for String {
    fn from(value: Value) -> String {
        value.0.to_string()
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A hybrid logical clock timestamp: milliseconds since the Unix epoch in the high 48 bits, a
/// logical counter in the low 16.
///
/// It stays close to wall time, yet always grows past every timestamp a node has seen, so a write
/// made after seeing another is ordered after it even when the device clocks disagree.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Hlc(pub u64);

impl Hlc {
    /// The wall-clock part, in milliseconds since the Unix epoch.
    pub fn millis(self) -> u64 {
        self.0 >> 16
    }

    /// The logical counter.
    pub fn logical(self) -> u16 {
        self.0 as u16
    }

    fn from_parts(millis: u64, logical: u16) -> Hlc {
        Hlc((millis << 16) | u64::from(logical))
    }
}

impl fmt::Debug for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.millis(), self.logical())
    }
}

/// One node's hybrid logical clock. Wall time comes in as an argument.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    last: Hlc,
}

impl Clock {
    /// A timestamp for a local event at wall time `wall_ms`, later than any seen before.
    pub fn tick(&mut self, wall_ms: u64) -> Hlc {
        self.last = self.after(self.last, wall_ms);
        self.last
    }

    /// Takes in a timestamp seen from another node, so later ticks order after it.
    pub fn observe(&mut self, seen: Hlc) {
        self.last = self.last.max(seen);
    }

    /// The last timestamp issued or seen.
    pub fn last(&self) -> Hlc {
        self.last
    }

    fn after(&self, last: Hlc, wall_ms: u64) -> Hlc {
        let wall_ms = wall_ms.min((1 << 48) - 1);
        if wall_ms > last.millis() {
            Hlc::from_parts(wall_ms, 0)
        } else if last.logical() < u16::MAX {
            Hlc::from_parts(last.millis(), last.logical() + 1)
        } else {
            // 65 536 events in one millisecond: borrow the next millisecond.
            Hlc::from_parts(last.millis() + 1, 0)
        }
    }
}

/// The version of an entry: when it was written (HLC), and by whom. Totally ordered.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version {
    /// When.
    pub hlc: Hlc,
    /// Who wrote it (the owner, for owned keys); breaks ties.
    pub origin: NodeId,
}

impl fmt::Debug for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}@{}", self.hlc, self.origin)
    }
}

impl fmt::Display for Version {
    /// `<hlc as decimal>-<origin>`, the form APIs show.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.hlc.0, self.origin)
    }
}

/// One key's state: its value, or a tombstone, at a version.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The key.
    pub key: Key,
    /// The value; `None` marks a delete.
    pub value: Option<Value>,
    /// Who wrote it, when.
    pub version: Version,
}

impl Entry {
    /// Whether this entry is a delete.
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }

    /// Whether `self` wins over `other` for the same key (last writer wins).
    pub fn supersedes(&self, other: &Entry) -> bool {
        self.version > other.version
    }
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{:?}={:?}@{:?}", self.key, v, self.version),
            None => write!(f, "{:?}=<deleted>@{:?}", self.key, self.version),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_validated() {
        assert!(Key::new("kitchen/light/on").is_ok());
        assert!(Key::new("a").is_ok());
        assert_eq!(Key::new(""), Err(InvalidData::EmptyKey));
        assert!(matches!(Key::new("/a"), Err(InvalidData::EmptySegment(_))));
        assert!(matches!(Key::new("a/"), Err(InvalidData::EmptySegment(_))));
        assert!(matches!(
            Key::new("a//b"),
            Err(InvalidData::EmptySegment(_))
        ));
        assert!(matches!(Key::new("a\nb"), Err(InvalidData::ControlChar(_))));
        assert_eq!(
            Key::new(&"k".repeat(513)),
            Err(InvalidData::KeyTooLong(513))
        );
        assert!(Key::new(&"k".repeat(512)).is_ok());
    }

    #[test]
    fn keys_from_the_wire_are_validated_too() {
        let bytes = postcard::to_stdvec("a//b").unwrap();
        assert!(postcard::from_bytes::<Key>(&bytes).is_err());
        let bytes = postcard::to_stdvec("ok/key").unwrap();
        assert_eq!(
            postcard::from_bytes::<Key>(&bytes).unwrap().as_str(),
            "ok/key"
        );
        let bytes = postcard::to_stdvec("{nope").unwrap();
        assert!(postcard::from_bytes::<Value>(&bytes).is_err());
    }

    #[test]
    fn prefixes_match_whole_segments() {
        let k = Key::new("kitchen/light/on").unwrap();
        assert!(k.is_under(""));
        assert!(k.is_under("kitchen"));
        assert!(k.is_under("kitchen/"));
        assert!(k.is_under("kitchen/light/on"));
        assert!(!k.is_under("kitch"));
        assert!(!k.is_under("kitchen/light/onx"));
    }

    #[test]
    fn values_are_compact_json() {
        assert_eq!(
            Value::parse(" { \"a\" : [1, 2] } ").unwrap().as_str(),
            r#"{"a":[1,2]}"#
        );
        assert_eq!(Value::parse("true").unwrap().as_str(), "true");
        assert!(matches!(Value::parse("tru"), Err(InvalidData::NotJson(_))));
        assert!(matches!(Value::parse(""), Err(InvalidData::NotJson(_))));
    }

    #[test]
    fn hlc_grows_past_wall_time_and_observed_stamps() {
        let mut c = Clock::default();
        let a = c.tick(1000);
        assert_eq!((a.millis(), a.logical()), (1000, 0));
        let b = c.tick(1000);
        assert_eq!((b.millis(), b.logical()), (1000, 1));
        let c2 = c.tick(900); // the wall clock stepped back
        assert!(c2 > b);
        c.observe(Hlc::from_parts(5000, 7));
        let d = c.tick(1001);
        assert_eq!((d.millis(), d.logical()), (5000, 8));
        let e = c.tick(6000);
        assert_eq!((e.millis(), e.logical()), (6000, 0));
    }

    #[test]
    fn versions_order_by_time_then_origin() {
        let v = |t, o| Version {
            hlc: Hlc(t),
            origin: NodeId(o),
        };
        assert!(v(2, 1) > v(1, 9));
        assert!(v(1, 2) > v(1, 1));
    }
}
