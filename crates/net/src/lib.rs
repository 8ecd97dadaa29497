//! Network listeners of the broker: MQTT over TCP, TLS, WebSocket and secure WebSocket, with
//! an optional PROXY protocol header and bounded handshakes.
//!
//! Module map:
//! - [`listener`]: [`Listener`] with its [`ListenerSettings`]: `accept` takes TCP connections
//!   fast, [`Incoming::handshake`] (in the connection's task) does PROXY → TLS → WebSocket
//!   under one deadline and yields an [`Accepted`].
//! - [`stream`]: [`Stream`], the byte stream of any transport, and [`Accepted`] (real peer
//!   address, client certificate CN).
//! - [`split`]: [`Stream::into_split`] into read and write halves (lock-free for plain TCP).
//! - [`tls`]: rustls server configuration from PEM files (ring, TLS 1.2/1.3, optional mTLS),
//!   reloadable without a restart ([`ReloadableTls`]).
//! - [`cert`]: the subject CN of a client certificate (a minimal DER walk).
//! - [`ws`]: the WebSocket upgrade (subprotocols `mqtt`, `mqttv3.1`) and [`WsStream`], which
//!   reads and writes MQTT bytes over binary frames.
//! - [`proxy`]: PROXY protocol v1/v2 headers.
//! - [`limiter`]: [`HandshakeLimiter`], the bound on handshakes in progress.
//! - [`tcp`]: binding a TCP listener with the socket options a broker wants, and accepting
//!   connections with `TCP_NODELAY` set (the broker coalesces its own writes, so Nagle's algorithm
//!   only adds latency: FlashMQ's QoS 1 throughput fell to 20 k/s without it).

pub mod cert;
pub mod limiter;
pub mod listener;
pub mod proxy;
pub mod split;
pub mod stream;
pub mod tcp;
pub mod tls;
pub mod ws;

pub use limiter::{HandshakeLimiter, HandshakePermit};
pub use listener::{
    HandshakeError, Incoming, Listener, ListenerError, ListenerSettings, ListenerStats, Transport,
};
pub use proxy::{ProxyError, ProxyHeader};
pub use split::{ReadHalf, WriteHalf};
pub use stream::{Accepted, Stream};
pub use tcp::TcpListener;
pub use tls::{ReloadableTls, TlsError, TlsSettings};
pub use ws::{WsMessageTimeout, WsSettings, WsStream};
