//! Errors of the codec, each mapped to the MQTT 5 reason code a server answers it with.

use crate::reason;

/// Why a byte sequence is not a valid packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes do not follow the packet grammar (reason 0x81).
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// The packet is well formed but breaks a protocol rule (reason 0x82).
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// The packet is larger than the receiver's maximum packet size (reason 0x95).
    #[error("packet of {size} bytes exceeds the maximum of {max}")]
    PacketTooLarge { size: u64, max: u32 },
    /// CONNECT carried a protocol name or level this codec does not speak (reason 0x84).
    #[error("unsupported protocol name or level {level}")]
    UnsupportedProtocol { level: u8 },
    /// A topic name or filter breaks the UTF-8 rules (reason 0x81 as well, kept apart for logs).
    #[error("invalid UTF-8 string: {0}")]
    InvalidString(&'static str),
}

impl DecodeError {
    /// The MQTT 5 reason code for a DISCONNECT (or CONNACK) answering this error.
    pub fn reason_code(&self) -> u8 {
        match self {
            Self::Malformed(_) | Self::InvalidString(_) => reason::MALFORMED_PACKET,
            Self::Protocol(_) => reason::PROTOCOL_ERROR,
            Self::PacketTooLarge { .. } => reason::PACKET_TOO_LARGE,
            Self::UnsupportedProtocol { .. } => reason::UNSUPPORTED_PROTOCOL_VERSION,
        }
    }
}

/// Why a packet cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The encoded packet would exceed the maximum remaining length (268,435,455 bytes).
    #[error("packet too large to encode")]
    TooLarge,
    /// A string or binary field is longer than 65,535 bytes.
    #[error("field longer than 65535 bytes")]
    FieldTooLong,
    /// The packet cannot be expressed in the requested protocol version.
    #[error("{0}")]
    Unsupported(&'static str),
}
