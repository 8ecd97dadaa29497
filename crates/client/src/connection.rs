//! A packet-level MQTT connection over TCP or TLS.

use crate::stream::MqttStream;
use crate::tls::TlsOptions;
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
    /// The TCP connection (or the name lookup) failed.
    #[error("cannot connect to {addr}: {message}")]
    Connect { addr: String, message: String },
    /// TLS configuration or handshake failure.
    #[error("tls: {0}")]
    Tls(String),
    /// The broker answered CONNECT with a refusal.
    #[error("connection refused: {} (CONNACK 0x{code:02X}){}", connack_text(*.version, *.code), reason_suffix(.reason_string))]
    Refused {
        version: ProtocolVersion,
        code: u8,
        reason_string: Option<String>,
    },
    /// The connection ended after CONNACK.
    #[error("connection lost: {0}")]
    ConnectionLost(crate::client::CloseReason),
    /// The broker refused a PUBLISH, SUBSCRIBE or UNSUBSCRIBE with an MQTT 5 reason code.
    #[error("{packet} refused: {} (0x{reason:02X}){}", reason_text(*.reason), reason_suffix(.reason_string))]
    Rejected {
        packet: &'static str,
        reason: u8,
        reason_string: Option<String>,
    },
    /// The request cannot be carried out on this connection (QoS or retain not supported, ...).
    #[error("{0}")]
    Invalid(String),
}

impl ClientError {
    /// True for failures to reach the broker or to keep the connection (as opposed to refusals).
    pub fn is_connection_failure(&self) -> bool {
        matches!(
            self,
            Self::Io(_)
                | Self::Closed
                | Self::Connect { .. }
                | Self::Tls(_)
                | Self::ConnectionLost(_)
                | Self::Decode(_)
        )
    }
}

fn reason_suffix(s: &Option<String>) -> String {
    match s {
        Some(s) if !s.is_empty() => format!(": {s}"),
        _ => String::new(),
    }
}

/// The meaning of a CONNACK code for `version`.
pub fn connack_text(version: ProtocolVersion, code: u8) -> &'static str {
    if version.is_v5() {
        return reason_text(code);
    }
    use tern_codec::reason::v3;
    match code {
        v3::ACCEPTED => "accepted",
        v3::UNACCEPTABLE_PROTOCOL_VERSION => "unacceptable protocol version",
        v3::IDENTIFIER_REJECTED => "identifier rejected",
        v3::SERVER_UNAVAILABLE => "server unavailable",
        v3::BAD_USER_NAME_OR_PASSWORD => "bad user name or password",
        v3::NOT_AUTHORIZED => "not authorized",
        _ => "unknown return code",
    }
}

/// The meaning of an MQTT 5 reason code.
pub fn reason_text(code: u8) -> &'static str {
    use tern_codec::reason::*;
    match code {
        SUCCESS => "success",
        GRANTED_QOS_1 => "granted QoS 1",
        GRANTED_QOS_2 => "granted QoS 2",
        DISCONNECT_WITH_WILL => "disconnect with will message",
        NO_MATCHING_SUBSCRIBERS => "no matching subscribers",
        NO_SUBSCRIPTION_EXISTED => "no subscription existed",
        CONTINUE_AUTHENTICATION => "continue authentication",
        RE_AUTHENTICATE => "re-authenticate",
        UNSPECIFIED_ERROR => "unspecified error",
        MALFORMED_PACKET => "malformed packet",
        PROTOCOL_ERROR => "protocol error",
        IMPLEMENTATION_SPECIFIC_ERROR => "implementation specific error",
        UNSUPPORTED_PROTOCOL_VERSION => "unsupported protocol version",
        CLIENT_IDENTIFIER_NOT_VALID => "client identifier not valid",
        BAD_USER_NAME_OR_PASSWORD => "bad user name or password",
        NOT_AUTHORIZED => "not authorized",
        SERVER_UNAVAILABLE => "server unavailable",
        SERVER_BUSY => "server busy",
        BANNED => "banned",
        SERVER_SHUTTING_DOWN => "server shutting down",
        BAD_AUTHENTICATION_METHOD => "bad authentication method",
        KEEP_ALIVE_TIMEOUT => "keep alive timeout",
        SESSION_TAKEN_OVER => "session taken over",
        TOPIC_FILTER_INVALID => "topic filter invalid",
        TOPIC_NAME_INVALID => "topic name invalid",
        PACKET_IDENTIFIER_IN_USE => "packet identifier in use",
        PACKET_IDENTIFIER_NOT_FOUND => "packet identifier not found",
        RECEIVE_MAXIMUM_EXCEEDED => "receive maximum exceeded",
        TOPIC_ALIAS_INVALID => "topic alias invalid",
        PACKET_TOO_LARGE => "packet too large",
        MESSAGE_RATE_TOO_HIGH => "message rate too high",
        QUOTA_EXCEEDED => "quota exceeded",
        ADMINISTRATIVE_ACTION => "administrative action",
        PAYLOAD_FORMAT_INVALID => "payload format invalid",
        RETAIN_NOT_SUPPORTED => "retain not supported",
        QOS_NOT_SUPPORTED => "QoS not supported",
        USE_ANOTHER_SERVER => "use another server",
        SERVER_MOVED => "server moved",
        SHARED_SUBSCRIPTIONS_NOT_SUPPORTED => "shared subscriptions not supported",
        CONNECTION_RATE_EXCEEDED => "connection rate exceeded",
        MAXIMUM_CONNECT_TIME => "maximum connect time",
        SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED => "subscription identifiers not supported",
        WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED => "wildcard subscriptions not supported",
        _ => "unknown reason code",
    }
}

/// Describes an I/O error without the "(os error N)" suffix.
pub(crate) fn io_text(e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::ConnectionRefused => "connection refused".into(),
        ErrorKind::ConnectionReset => "connection reset".into(),
        ErrorKind::TimedOut => "timed out".into(),
        _ => {
            let s = e.to_string();
            match s.find(" (os error") {
                Some(i) => s[..i].to_owned(),
                None => s,
            }
        }
    }
}

/// A connection that sends and receives whole packets.
pub struct Connection {
    stream: MqttStream,
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
        Ok(Self::from_stream(MqttStream::Tcp(stream), version))
    }

    /// Resolves `host`, connects to the first address that answers within `timeout`, and runs
    /// the TLS handshake when `tls` is given.
    pub async fn open(
        host: &str,
        port: u16,
        tls: Option<&TlsOptions>,
        version: ProtocolVersion,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let target = format!("{host}:{port}");
        let fail = |message: String| ClientError::Connect {
            addr: target.clone(),
            message,
        };
        // Build the TLS configuration first: a bad file is reported before any network work.
        let tls = match tls {
            Some(t) => Some((t.client_config()?, t.server_name(host)?)),
            None => None,
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let addrs = tokio::time::timeout_at(deadline, tokio::net::lookup_host((host, port)))
            .await
            .map_err(|_| fail("timed out resolving the host name".into()))?
            .map_err(|e| fail(io_text(&e)))?;
        let mut last = fail("the host name has no address".into());
        let mut tcp = None;
        for addr in addrs {
            match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => {
                    tcp = Some(s);
                    break;
                }
                Ok(Err(e)) => last = fail(io_text(&e)),
                Err(_) => {
                    last = fail("timed out".into());
                    break;
                }
            }
        }
        let tcp = tcp.ok_or(last)?;
        tcp.set_nodelay(true)?;
        let stream = match tls {
            None => MqttStream::Tcp(tcp),
            Some((config, name)) => {
                let connector = tokio_rustls::TlsConnector::from(config);
                let s = tokio::time::timeout_at(deadline, connector.connect(name, tcp))
                    .await
                    .map_err(|_| ClientError::Tls("handshake timed out".into()))?
                    .map_err(|e| {
                        ClientError::Tls(format!("handshake with {target} failed: {e}"))
                    })?;
                MqttStream::Tls(Box::new(s))
            }
        };
        Ok(Self::from_stream(stream, version))
    }

    /// Wraps an open stream.
    pub fn from_stream(stream: MqttStream, version: ProtocolVersion) -> Self {
        Self {
            stream,
            rbuf: BytesMut::with_capacity(8192),
            wbuf: BytesMut::new(),
            version,
            max_packet_size: 268_435_460,
        }
    }

    /// The protocol version packets are encoded with.
    pub fn version(&self) -> ProtocolVersion {
        self.version
    }

    /// The stream under the connection.
    pub fn stream(&self) -> &MqttStream {
        &self.stream
    }

    /// Splits into the stream and the bytes already read but not yet decoded.
    pub fn into_parts(self) -> (MqttStream, BytesMut) {
        (self.stream, self.rbuf)
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
