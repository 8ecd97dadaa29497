//! MQTT control packets for protocol levels 3 (MQTT 3.1, `MQIsdp`), 4 (3.1.1) and 5 (5.0).
//!
//! The crate does no I/O: callers hand it bytes and get packets back, or hand it packets and get
//! bytes. One packet type serves every version; fields a version does not have (properties, reason
//! codes) are ignored when encoding for it and left at their defaults when decoding.
//!
//! Module map:
//! - [`types`]: protocol version, QoS, [`ByteStr`] (cheaply clonable validated UTF-8).
//! - [`packet`]: the control packets and subscription options.
//! - [`properties`]: the MQTT 5 property set shared by every packet.
//! - [`reason`]: reason code constants and the MQTT 3.x CONNACK return codes.
//! - [`error`]: [`DecodeError`] and the reason code each error maps to.
//! - [`decode_packet`] / [`encode_packet`] / [`encoded_len`]: the wire format (one file per packet
//!   family under `wire/`).
//!
//! Decoding never allocates more than the bytes that have actually arrived, and never panics on
//! input: every malformed packet is a [`DecodeError`].

pub mod error;
pub mod packet;
pub mod properties;
pub mod reason;
pub mod types;
mod wire;

pub use error::{DecodeError, EncodeError};
pub use packet::*;
pub use properties::{Properties, PropertyValues};
pub use types::{ByteStr, ProtocolVersion, QoS};
pub use wire::{
    FixedHeader, MAX_REMAINING_LENGTH, Peeked, PublishView, decode_packet, encode_packet,
    encode_plain_publish, encode_publish, encoded_len, peek_publish, publish_encoded_len,
};
