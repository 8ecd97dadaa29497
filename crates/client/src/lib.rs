//! A small MQTT client on `tern-codec`.
//!
//! Module map:
//! - [`connection`]: [`Connection`], a packet-level connection: send any packet, receive the next
//!   one, with timeouts. The byte-level tests speak through it, and the higher layers below build
//!   on it.
//! - [`builder`]: convenience constructors for CONNECT, PUBLISH and SUBSCRIBE packets.

pub mod builder;
pub mod connection;

pub use connection::{ClientError, Connection};
