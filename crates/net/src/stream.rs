//! The stream of an accepted connection, whatever its transport, and what is known about it.
//!
//! An enum rather than a boxed trait object: plain TCP, the common case, stays a direct call
//! (and keeps `readable()`/`try_read` and vectored writes, see [`Stream::into_split`]).

use crate::listener::Transport;
use crate::ws::WsStream;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// A connection's byte stream.
#[derive(Debug)]
pub enum Stream {
    /// MQTT over TCP.
    Tcp(TcpStream),
    /// MQTT over TLS.
    Tls(Box<TlsStream<TcpStream>>),
    /// MQTT over WebSocket.
    Ws(Box<WsStream<TcpStream>>),
    /// MQTT over WebSocket over TLS (`wss`).
    WsTls(Box<WsStream<TlsStream<TcpStream>>>),
}

impl Stream {
    /// The transport this stream speaks.
    pub fn transport(&self) -> Transport {
        match self {
            Stream::Tcp(_) => Transport::Tcp,
            Stream::Tls(_) => Transport::Tls,
            Stream::Ws(_) => Transport::Ws,
            Stream::WsTls(_) => Transport::Wss,
        }
    }

    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Tcp(s) => s,
            Stream::Tls(s) => s.get_ref().0,
            Stream::Ws(s) => s.get_ref(),
            Stream::WsTls(s) => s.get_ref().get_ref().0,
        }
    }

    /// The negotiated TLS protocol version, for TLS and `wss` streams.
    pub fn tls_version(&self) -> Option<rustls::ProtocolVersion> {
        match self {
            Stream::Tls(s) => s.get_ref().1.protocol_version(),
            Stream::WsTls(s) => s.get_ref().get_ref().1.protocol_version(),
            _ => None,
        }
    }

    /// For WebSocket streams, the count of milliseconds the connection held reading back
    /// ([`WsStream::hold_clock`]).
    pub fn ws_hold_clock(&self) -> Option<std::sync::Arc<std::sync::atomic::AtomicU64>> {
        match self {
            Stream::Ws(s) => Some(s.hold_clock()),
            Stream::WsTls(s) => Some(s.hold_clock()),
            _ => None,
        }
    }

    /// The WebSocket subprotocol agreed on, for WebSocket streams.
    pub fn ws_subprotocol(&self) -> Option<&str> {
        match self {
            Stream::Ws(s) => s.subprotocol(),
            Stream::WsTls(s) => s.subprotocol(),
            _ => None,
        }
    }
}

/// A connection after its handshakes, ready for MQTT.
#[derive(Debug)]
pub struct Accepted {
    pub stream: Stream,
    /// The client's address: the one a PROXY header declared, else the socket's peer.
    pub peer: SocketAddr,
    /// The socket's peer when a PROXY header replaced it (the load balancer's address).
    pub via: Option<SocketAddr>,
    /// The local address of the socket (which listener it came through).
    pub local: SocketAddr,
    /// The subject CN of the client certificate, when the client presented one (it has been
    /// verified against the listener's CA).
    pub cert_cn: Option<String>,
    /// Whether the listener takes the username from the certificate's CN.
    pub cn_as_username: bool,
}

impl Accepted {
    /// The username the certificate imposes: its CN when the listener has `cn_as_username`.
    /// `Some` replaces whatever the CONNECT packet says. When [`cn_as_username`](Self::cn_as_username)
    /// is set and this is `None` (no certificate, or one without a usable CN), refuse the
    /// CONNECT as not authorised, as Mosquitto does.
    pub fn cert_username(&self) -> Option<&str> {
        if self.cn_as_username {
            self.cert_cn.as_deref()
        } else {
            None
        }
    }
}

macro_rules! each {
    ($self:expr, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Stream::Tcp($s) => {
                let $s = Pin::new($s);
                $e
            }
            Stream::Tls($s) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
            Stream::Ws($s) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
            Stream::WsTls($s) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        each!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        each!(self, s => s.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        each!(self, s => s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Tcp(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
            Stream::Ws(s) => s.is_write_vectored(),
            Stream::WsTls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => s.poll_shutdown(cx))
    }
}
