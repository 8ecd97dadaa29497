//! Network listeners of the broker.
//!
//! Module map:
//! - [`tcp`]: binding a TCP listener with the socket options a broker wants, and accepting
//!   connections with `TCP_NODELAY` set (the broker coalesces its own writes, so Nagle's algorithm
//!   only adds latency: FlashMQ's QoS 1 throughput fell to 20 k/s without it).

pub mod tcp;

pub use tcp::{Accepted, TcpListener};
