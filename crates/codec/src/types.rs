//! Small value types used throughout the packets.

use bytes::Bytes;
use std::fmt;
use std::ops::Deref;

/// The protocol level carried in CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProtocolVersion {
    /// MQTT 3.1, protocol name `MQIsdp`, level 3.
    V3_1,
    /// MQTT 3.1.1, protocol name `MQTT`, level 4.
    V3_1_1,
    /// MQTT 5.0, protocol name `MQTT`, level 5.
    V5,
}

impl ProtocolVersion {
    /// The protocol level byte.
    pub fn level(self) -> u8 {
        match self {
            Self::V3_1 => 3,
            Self::V3_1_1 => 4,
            Self::V5 => 5,
        }
    }

    /// True for MQTT 5.0.
    pub fn is_v5(self) -> bool {
        self == Self::V5
    }
}

/// Quality of service of a message or subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum QoS {
    /// QoS 0.
    #[default]
    AtMostOnce = 0,
    /// QoS 1.
    AtLeastOnce = 1,
    /// QoS 2.
    ExactlyOnce = 2,
}

impl QoS {
    /// Parses the two QoS bits; 3 is not a QoS.
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::AtMostOnce),
            1 => Some(Self::AtLeastOnce),
            2 => Some(Self::ExactlyOnce),
            _ => None,
        }
    }
}

/// A UTF-8 string that shares its bytes with the buffer it was decoded from, so cloning it (for
/// example a topic copied into every subscriber's PUBLISH) never copies.
///
/// The contents are always valid UTF-8 without U+0000 when produced by the decoder; values built by
/// [`ByteStr::from`] are valid UTF-8 by construction (Rust strings).
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteStr(Bytes);

impl ByteStr {
    /// An empty string.
    pub const fn new() -> Self {
        Self(Bytes::new())
    }

    /// Wraps bytes already known to be valid UTF-8.
    ///
    /// Returns `None` when they are not valid UTF-8.
    pub fn from_utf8(bytes: Bytes) -> Option<Self> {
        std::str::from_utf8(&bytes).ok()?;
        Some(Self(bytes))
    }

    /// Wraps `bytes` when they are all ASCII (hence UTF-8) and none is 0x00, eight bytes at a
    /// time: the decoder's one pass for the usual topic, client id or user name, instead of a
    /// search for 0x00 and a UTF-8 check. Gives them back otherwise.
    pub(crate) fn try_ascii_without_nul(bytes: Bytes) -> Result<Self, Bytes> {
        if ascii_without_nul(&bytes) {
            Ok(Self(bytes))
        } else {
            Err(bytes)
        }
    }

    /// A string from a static literal, without allocating.
    pub const fn from_static(s: &'static str) -> Self {
        Self(Bytes::from_static(s.as_bytes()))
    }

    /// The string.
    #[allow(unsafe_code)]
    #[inline]
    pub fn as_str(&self) -> &str {
        debug_assert!(std::str::from_utf8(&self.0).is_ok());
        // SAFETY: every constructor of this type (`new`, `default`, `from_static`, `from_utf8`,
        // `From<&str>`, `From<String>`) takes a Rust string or checks the bytes with
        // `std::str::from_utf8`, except `try_ascii_without_nul`, which checks that every byte
        // is ASCII, which is UTF-8; the field is private to this module, and `Bytes` cannot be
        // changed in place. Checking again here ran on every access: a topic was validated
        // several times per message (7 % of the broker's time at 640 k msg/s 1→1).
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }

    /// The underlying bytes.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// The same string in an allocation of its own. A decoded string is a slice of the whole
    /// read it came in (up to 64 KiB), and keeping the slice keeps all of it: what the broker
    /// keeps for long (a retained topic, a topic alias) is detached first.
    pub fn detached(&self) -> Self {
        Self(Bytes::copy_from_slice(&self.0))
    }
}

/// True when every byte is ASCII and none is 0x00, eight bytes at a time.
fn ascii_without_nul(bytes: &[u8]) -> bool {
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    const LOW7: u64 = u64::from_ne_bytes([0x7F; 8]);
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().expect("chunks of eight"));
        // A byte's top bit is set in `word` when it is not ASCII, and in the complement of
        // `(low seven bits) + 0x7F` when it is zero (the sum cannot carry into the next byte).
        if (word | !((word & LOW7).wrapping_add(LOW7))) & HIGH != 0 {
            return false;
        }
    }
    chunks.remainder().iter().all(|&b| b != 0 && b.is_ascii())
}

/// Hashes like `str`, so that maps keyed by `ByteStr` can be queried with a `&str`
/// (`Borrow<str>` requires equal hashes for equal values).
impl std::hash::Hash for ByteStr {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl Deref for ByteStr {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for ByteStr {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl std::borrow::Borrow<str> for ByteStr {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl From<&str> for ByteStr {
    fn from(s: &str) -> Self {
        Self(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<String> for ByteStr {
    fn from(s: String) -> Self {
        Self(Bytes::from(s.into_bytes()))
    }
}

impl fmt::Debug for ByteStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for ByteStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for ByteStr {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ByteStr {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn bytestr_keys_can_be_looked_up_by_str() {
        let mut m = HashMap::new();
        m.insert(ByteStr::from("client-1"), 1);
        assert_eq!(m.get("client-1"), Some(&1));
        assert_eq!(m.remove("client-1"), Some(1));
    }
}
