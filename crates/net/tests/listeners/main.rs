//! Listener tests on real loopback sockets: TCP, TLS (versions, mTLS, CN, reload), WebSocket
//! and secure WebSocket, PROXY protocol v1/v2, handshake limits and deadlines.

mod proxy;
mod support;
mod tcp;
mod tls;
mod ws;
