//! Plain TCP listeners.

use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::SocketAddr;

/// A bound TCP listener.
pub struct TcpListener {
    inner: tokio::net::TcpListener,
}

/// An accepted TCP connection (see [`crate::Listener`] for the other transports).
pub struct TcpAccepted {
    pub stream: tokio::net::TcpStream,
    pub peer: SocketAddr,
}

impl TcpListener {
    /// Binds `addr` with `SO_REUSEADDR` (a restarted broker can rebind at once while old
    /// connections linger in TIME_WAIT) and a large accept backlog (connection storms).
    pub fn bind(addr: SocketAddr) -> io::Result<Self> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        if addr.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(4096)?;
        let inner = tokio::net::TcpListener::from_std(socket.into())?;
        Ok(Self { inner })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// Accepts the next connection, with `TCP_NODELAY` set.
    pub async fn accept(&self) -> io::Result<TcpAccepted> {
        let (stream, peer) = self.inner.accept().await?;
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "could not set TCP_NODELAY");
        }
        Ok(TcpAccepted { stream, peer })
    }
}
