//! A small MQTT client on `tern-codec`, shared by the `tern pub`/`sub`/`rr` tools, the benchmark
//! and the tests.
//!
//! Module map:
//! - [`connection`]: [`Connection`], a packet-level connection: send any packet, receive the next
//!   one, with timeouts. The byte-level tests speak through it, and [`Client`] is opened with it.
//! - [`client`]: [`Client`], the async client: [`ConnectOptions`] (version, client id, clean
//!   start, session expiry, keep alive with automatic PINGREQ, credentials, will, properties,
//!   TLS), QoS 0/1/2 publish with acknowledgement handling, subscribe, receive.
//! - [`tls`]: [`TlsOptions`] and the rustls configuration (ring provider; PEM files).
//! - [`stream`]: [`MqttStream`], plain TCP or TLS.
//! - [`builder`]: convenience constructors for CONNECT, PUBLISH and SUBSCRIBE packets.

pub mod builder;
pub mod client;
pub mod connection;
pub mod stream;
pub mod tls;

pub use client::{
    Client, CloseReason, ConnectOptions, Direction, Message, PacketTrace, PublishToken,
};
pub use connection::{ClientError, Connection, connack_text, reason_text};
pub use stream::MqttStream;
pub use tls::TlsOptions;
