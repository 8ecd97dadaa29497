//! Listeners with a transport (TCP, TLS, WebSocket, secure WebSocket), an optional PROXY
//! protocol header and bounded handshakes.
//!
//! Accepting is split in two so that one slow client never holds up the others:
//! [`Listener::accept`] only takes the TCP connection (with `TCP_NODELAY`) and a handshake
//! permit, and returns at once; [`Incoming::handshake`], run in the connection's own task, then
//! reads the PROXY header, does the TLS handshake and the WebSocket upgrade, all under one
//! deadline (`handshake_timeout`).

use crate::limiter::{HandshakeLimiter, HandshakePermit};
use crate::proxy::{self, ProxyError};
use crate::stream::{Accepted, Stream};
use crate::tcp::TcpListener;
use crate::tls::{ReloadableTls, TlsError, TlsSettings};
use crate::ws::{self, WsSettings};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// What a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// MQTT over TCP (`mqtt://`, port 1883).
    Tcp,
    /// MQTT over TLS (`mqtts://`, port 8883).
    Tls,
    /// MQTT over WebSocket (`ws://`, often port 8080 or 80).
    Ws,
    /// MQTT over WebSocket over TLS (`wss://`, often port 8081 or 443).
    Wss,
}

impl Transport {
    /// Whether TLS settings are needed.
    pub fn is_tls(self) -> bool {
        matches!(self, Transport::Tls | Transport::Wss)
    }

    /// Whether there is a WebSocket upgrade.
    pub fn is_ws(self) -> bool {
        matches!(self, Transport::Ws | Transport::Wss)
    }

    /// `tcp`, `tls`, `ws` or `wss`.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Ws => "ws",
            Transport::Wss => "wss",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error of [`Transport::from_str`].
#[derive(Debug, thiserror::Error)]
#[error("unknown transport {0:?}: expected tcp, tls, ws or wss")]
pub struct UnknownTransport(pub String);

impl FromStr for Transport {
    type Err = UnknownTransport;

    /// `tcp`/`mqtt`, `tls`/`mqtts`/`ssl`, `ws`/`websocket`, `wss`/`websockets`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "tcp" | "mqtt" => Transport::Tcp,
            "tls" | "mqtts" | "ssl" => Transport::Tls,
            "ws" | "websocket" => Transport::Ws,
            "wss" | "websockets" => Transport::Wss,
            _ => return Err(UnknownTransport(s.to_owned())),
        })
    }
}

/// Settings of one listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSettings {
    pub bind: SocketAddr,
    pub transport: Transport,
    /// Needed for [`Transport::Tls`] and [`Transport::Wss`]; ignored otherwise.
    pub tls: Option<TlsSettings>,
    /// Expect a PROXY protocol v1 or v2 header before anything else. Only for listeners that
    /// nothing but the load balancer can reach: the header is trusted.
    pub proxy_protocol: bool,
    /// The only WebSocket request path accepted; `None` accepts any.
    pub ws_path: Option<String>,
    /// Largest WebSocket message (and frame) accepted, in bytes; at least the broker's maximum
    /// packet size.
    pub ws_max_message_size: usize,
    /// Time a WebSocket client has to finish a message it has started (see
    /// [`WsSettings::message_timeout`]); `None`: no limit.
    pub ws_message_timeout: Option<Duration>,
    /// Time allowed for everything before MQTT: PROXY header, TLS handshake, WebSocket upgrade.
    pub handshake_timeout: Duration,
    /// Most handshakes in progress at once on this listener; more are closed at once. 0 means
    /// no limit. Plain TCP listeners without PROXY header have no handshake.
    pub max_handshakes: usize,
}

impl ListenerSettings {
    /// The default [`handshake_timeout`](Self::handshake_timeout).
    pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
    /// The default [`max_handshakes`](Self::max_handshakes): enough for a reconnect storm of a
    /// large fleet on 2 cores (a TLS 1.3 handshake costs about a millisecond of CPU).
    pub const DEFAULT_MAX_HANDSHAKES: usize = 1024;

    /// A listener on `bind` speaking `transport`, with the defaults (no TLS settings yet).
    pub fn new(bind: SocketAddr, transport: Transport) -> Self {
        Self {
            bind,
            transport,
            tls: None,
            proxy_protocol: false,
            ws_path: None,
            ws_max_message_size: WsSettings::default().max_message_size,
            ws_message_timeout: None,
            handshake_timeout: Self::DEFAULT_HANDSHAKE_TIMEOUT,
            max_handshakes: Self::DEFAULT_MAX_HANDSHAKES,
        }
    }

    /// With TLS settings.
    pub fn with_tls(mut self, tls: TlsSettings) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Whether connections go through [`Incoming::handshake`] before MQTT.
    pub fn has_handshake(&self) -> bool {
        self.proxy_protocol || self.transport != Transport::Tcp
    }
}

/// Why a listener could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("the {transport} listener on {addr} needs TLS settings (certificate and key)")]
    MissingTls {
        addr: SocketAddr,
        transport: Transport,
    },
    #[error("TLS for the listener on {addr}: {source}")]
    Tls { addr: SocketAddr, source: TlsError },
}

/// Why a connection failed before MQTT; the connection is closed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("handshake not done within {0:?}")]
    Timeout(Duration),
    #[error("PROXY protocol: {0}")]
    Proxy(#[from] ProxyError),
    #[error("TLS handshake: {0}")]
    Tls(io::Error),
    #[error("WebSocket upgrade: {0}")]
    WebSocket(Box<tokio_tungstenite::tungstenite::Error>),
}

/// Counters of a listener since it was bound.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListenerStats {
    /// Connections closed at once because `max_handshakes` were in progress.
    pub handshakes_rejected: u64,
    /// Handshakes that failed (bad PROXY header, TLS alert, bad upgrade request, EOF).
    pub handshakes_failed: u64,
    /// Handshakes not done within `handshake_timeout`.
    pub handshakes_timed_out: u64,
    /// Handshakes in progress now.
    pub handshakes_in_progress: usize,
}

struct Shared {
    settings: ListenerSettings,
    local: SocketAddr,
    tls: Option<Arc<ReloadableTls>>,
    ws: WsSettings,
    limiter: HandshakeLimiter,
    failed: AtomicU64,
    timed_out: AtomicU64,
}

/// A bound listener.
pub struct Listener {
    tcp: TcpListener,
    shared: Arc<Shared>,
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("local", &self.shared.local)
            .field("transport", &self.shared.settings.transport)
            .finish_non_exhaustive()
    }
}

/// A TCP connection taken by [`Listener::accept`], before its handshakes.
pub struct Incoming {
    tcp: TcpStream,
    peer: SocketAddr,
    _permit: Option<HandshakePermit>,
    shared: Arc<Shared>,
}

impl fmt::Debug for Incoming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Incoming")
            .field("peer", &self.peer)
            .field("transport", &self.shared.settings.transport)
            .finish_non_exhaustive()
    }
}

impl Listener {
    /// Loads the TLS files (if any) and binds the socket. Needs a tokio runtime.
    pub fn bind(settings: ListenerSettings) -> Result<Self, ListenerError> {
        let addr = settings.bind;
        let tls = if settings.transport.is_tls() {
            let Some(tls) = &settings.tls else {
                return Err(ListenerError::MissingTls {
                    addr,
                    transport: settings.transport,
                });
            };
            let tls = ReloadableTls::new(tls.clone())
                .map_err(|source| ListenerError::Tls { addr, source })?;
            Some(Arc::new(tls))
        } else {
            None
        };
        let tcp = TcpListener::bind(addr).map_err(|source| ListenerError::Bind { addr, source })?;
        let local = tcp
            .local_addr()
            .map_err(|source| ListenerError::Bind { addr, source })?;
        let ws = WsSettings {
            path: settings.ws_path.clone(),
            max_message_size: settings.ws_max_message_size,
            message_timeout: settings.ws_message_timeout,
        };
        let limiter = HandshakeLimiter::new(settings.max_handshakes);
        Ok(Self {
            tcp,
            shared: Arc::new(Shared {
                settings,
                local,
                tls,
                ws,
                limiter,
                failed: AtomicU64::new(0),
                timed_out: AtomicU64::new(0),
            }),
        })
    }

    /// The address actually bound (port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local
    }

    /// The settings the listener was bound with.
    pub fn settings(&self) -> &ListenerSettings {
        &self.shared.settings
    }

    /// Takes the next TCP connection, with `TCP_NODELAY`, and returns at once: the handshakes
    /// are for [`Incoming::handshake`], in the connection's own task. When `max_handshakes`
    /// handshakes are in progress, new connections are closed here (and counted) and accepting
    /// goes on. Errors are those of `accept(2)` (e.g. EMFILE: back off and call again).
    /// Cancel-safe.
    pub async fn accept(&self) -> io::Result<Incoming> {
        loop {
            let a = self.tcp.accept().await?;
            let permit = if self.shared.settings.has_handshake() {
                match self.shared.limiter.try_acquire() {
                    Some(p) => Some(p),
                    None => {
                        tracing::debug!(peer = %a.peer, local = %self.shared.local, "connection closed: too many handshakes in progress");
                        continue; // dropping the stream closes it
                    }
                }
            } else {
                None
            };
            return Ok(Incoming {
                tcp: a.stream,
                peer: a.peer,
                _permit: permit,
                shared: self.shared.clone(),
            });
        }
    }

    /// The reloadable TLS configuration of a TLS or `wss` listener.
    pub fn tls(&self) -> Option<&Arc<ReloadableTls>> {
        self.shared.tls.as_ref()
    }

    /// Reloads the certificate, key and CA files (e.g. on SIGHUP). New handshakes use them;
    /// established connections are not affected; on error the previous files stay in use.
    /// `Ok(false)` for listeners without TLS.
    pub fn reload_tls(&self) -> Result<bool, TlsError> {
        match &self.shared.tls {
            Some(tls) => tls.reload().map(|()| true),
            None => Ok(false),
        }
    }

    /// Watches the TLS files for changes every `every` and reloads them (see
    /// [`ReloadableTls::spawn_watcher`]); `None` for listeners without TLS.
    pub fn spawn_tls_watcher(&self, every: Duration) -> Option<JoinHandle<()>> {
        self.shared.tls.as_ref().map(|t| t.spawn_watcher(every))
    }

    /// The listener's counters.
    pub fn stats(&self) -> ListenerStats {
        let s = &self.shared;
        ListenerStats {
            handshakes_rejected: s.limiter.rejected(),
            handshakes_failed: s.failed.load(Ordering::Relaxed),
            handshakes_timed_out: s.timed_out.load(Ordering::Relaxed),
            handshakes_in_progress: s.limiter.in_progress(),
        }
    }
}

impl Incoming {
    /// The socket's peer address (before any PROXY header).
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The listener's transport.
    pub fn transport(&self) -> Transport {
        self.shared.settings.transport
    }

    /// Runs the handshakes of the listener (PROXY header, TLS, WebSocket upgrade) within
    /// `handshake_timeout`. Immediate for plain TCP without PROXY header. The handshake permit
    /// is released when this returns.
    pub async fn handshake(self) -> Result<Accepted, HandshakeError> {
        let shared = self.shared.clone();
        let timeout = shared.settings.handshake_timeout;
        if !shared.settings.has_handshake() {
            return self.run().await;
        }
        let result = match tokio::time::timeout(timeout, self.run()).await {
            Ok(r) => r,
            Err(_) => Err(HandshakeError::Timeout(timeout)),
        };
        match &result {
            Ok(_) => {}
            Err(HandshakeError::Timeout(_)) => {
                shared.timed_out.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                shared.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        result
    }

    async fn run(mut self) -> Result<Accepted, HandshakeError> {
        let s = &*self.shared;
        let mut peer = self.peer;
        let mut via = None;
        if s.settings.proxy_protocol {
            let header = proxy::read_header(&mut self.tcp).await?;
            if let Some(source) = header.source {
                via = Some(peer);
                peer = source;
            }
        }
        let mut cert_cn = None;
        let ws_error = |e| HandshakeError::WebSocket(Box::new(e));
        let stream = match s.settings.transport {
            Transport::Tcp => Stream::Tcp(self.tcp),
            Transport::Ws => Stream::Ws(Box::new(
                ws::accept(self.tcp, &s.ws).await.map_err(ws_error)?,
            )),
            transport @ (Transport::Tls | Transport::Wss) => {
                // `bind` refuses TLS transports without TLS settings.
                let tls = s
                    .tls
                    .as_ref()
                    .ok_or_else(|| HandshakeError::Tls(io::Error::other("no TLS configuration")))?;
                let (tls_stream, cn) = tls.accept(self.tcp).await.map_err(HandshakeError::Tls)?;
                cert_cn = cn;
                if transport == Transport::Wss {
                    Stream::WsTls(Box::new(
                        ws::accept(tls_stream, &s.ws).await.map_err(ws_error)?,
                    ))
                } else {
                    Stream::Tls(Box::new(tls_stream))
                }
            }
        };
        Ok(Accepted {
            stream,
            peer,
            via,
            local: s.local,
            cert_cn,
            cn_as_username: s.tls.as_ref().is_some_and(|t| t.settings().cn_as_username),
        })
    }
}
