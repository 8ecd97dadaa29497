//! A packet-level MQTT connection over TCP.

use bytes::BytesMut;
use std::net::SocketAddr;
use std::time::Duration;
use tern_codec::{DecodeError, EncodeError, Packet, ProtocolVersion, decode_packet, encode_packet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Errors of the client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("decode: {0}")]
    Decode(#[from] DecodeError),
    #[error("encode: {0}")]
    Encode(#[from] EncodeError),
    #[error("timed out")]
    Timeout,
    #[error("connection closed by the peer")]
    Closed,
    #[error("unexpected packet: {0}")]
    Unexpected(String),
}

/// A connection that sends and receives whole packets.
pub struct Connection {
    stream: TcpStream,
    rbuf: BytesMut,
    wbuf: BytesMut,
    version: ProtocolVersion,
    /// Largest packet accepted from the server.
    pub max_packet_size: u32,
}

impl Connection {
    /// Opens a TCP connection; packets are encoded and decoded as `version`.
    pub async fn connect(addr: SocketAddr, version: ProtocolVersion) -> Result<Self, ClientError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            rbuf: BytesMut::with_capacity(8192),
            wbuf: BytesMut::new(),
            version,
            max_packet_size: 268_435_460,
        })
    }

    /// The protocol version packets are encoded with.
    pub fn version(&self) -> ProtocolVersion {
        self.version
    }

    /// Sends one packet.
    pub async fn send(&mut self, packet: &Packet) -> Result<(), ClientError> {
        self.wbuf.clear();
        encode_packet(packet, self.version, &mut self.wbuf)?;
        self.stream.write_all(&self.wbuf).await?;
        Ok(())
    }

    /// Sends raw bytes, well formed or not.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.stream.write_all(bytes).await?;
        Ok(())
    }

    /// Receives the next packet; `Closed` when the server closed the connection.
    pub async fn recv(&mut self) -> Result<Packet, ClientError> {
        loop {
            if let Some(p) = decode_packet(&mut self.rbuf, self.version, self.max_packet_size)? {
                return Ok(p);
            }
            self.rbuf.reserve(8192);
            let n = self.stream.read_buf(&mut self.rbuf).await?;
            if n == 0 {
                return Err(ClientError::Closed);
            }
        }
    }

    /// Receives the next packet within `timeout`.
    pub async fn recv_timeout(&mut self, timeout: Duration) -> Result<Packet, ClientError> {
        tokio::time::timeout(timeout, self.recv())
            .await
            .map_err(|_| ClientError::Timeout)?
    }

    /// Waits until the server closes the connection, failing if a packet arrives first or the
    /// time runs out. A reset counts as closed.
    pub async fn expect_closed(&mut self, timeout: Duration) -> Result<(), ClientError> {
        match self.recv_timeout(timeout).await {
            Err(ClientError::Closed) => Ok(()),
            Err(ClientError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(()),
            Err(e) => Err(e),
            Ok(p) => Err(ClientError::Unexpected(format!("{p:?}"))),
        }
    }

    /// Closes the socket without DISCONNECT (an ungraceful close, as the broker sees it).
    pub async fn drop_connection(mut self) {
        let _ = self.stream.shutdown().await;
    }
}
