//! A higher-level async MQTT client: connect options, keep alive, QoS 1/2 flows, subscribe and
//! receive.
//!
//! [`Client::connect`] opens the connection (TCP or TLS), sends CONNECT and waits for CONNACK;
//! then two tasks run the connection:
//!
//! - the **reader** decodes packets, answers the broker's QoS 1/2 flows (PUBACK, PUBREC, PUBCOMP),
//!   completes the client's pending operations (PUBACK/PUBCOMP, SUBACK, UNSUBACK) and queues
//!   received messages for [`Client::recv`];
//! - the **writer** encodes and writes packets, with acknowledgements ahead of new requests, and
//!   sends PINGREQ when nothing was written for the keep alive interval (the connection is
//!   declared lost when the PINGRESP does not come within another interval).
//!
//! The reader never waits on the writer (acknowledgements go through an unbounded queue, bounded
//! in practice by the broker's in-flight window), so a client that publishes and receives at the
//! same time cannot deadlock with the broker. QoS 1/2 publishes are limited to the broker's
//! Receive Maximum. Messages are not stored: a lost connection fails the pending operations with
//! [`ClientError::ConnectionLost`], and there is no automatic reconnect.

use crate::connection::{ClientError, Connection, io_text};
use crate::stream::MqttStream;
use crate::tls::TlsOptions;
use bytes::{Bytes, BytesMut};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tern_codec::{
    Ack, ByteStr, ConnAck, Connect, Disconnect, Packet, Properties, ProtocolVersion, Publish, QoS,
    SubAck, Subscribe, SubscriptionOptions, UnsubAck, Unsubscribe, Will, decode_packet,
    encode_packet, encoded_len,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Which way a traced packet went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Written to the broker.
    Sent,
    /// Read from the broker.
    Received,
}

/// A callback that sees every packet sent and received (for `--debug` output).
pub type PacketTrace = Arc<dyn Fn(Direction, &Packet) + Send + Sync>;

/// How to connect.
#[derive(Clone)]
pub struct ConnectOptions {
    /// Host name or address of the broker.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Protocol version.
    pub version: ProtocolVersion,
    /// Client identifier; empty asks the broker to assign one (MQTT 5, or 3.1.1 with clean start).
    pub client_id: String,
    /// Clean Session (3.x) / Clean Start (5.0).
    pub clean_start: bool,
    /// MQTT 5 Session Expiry Interval in seconds (`u32::MAX`: never); ignored for 3.x.
    pub session_expiry: Option<u32>,
    /// Keep alive in seconds; 0 turns it off.
    pub keep_alive: u16,
    /// User name.
    pub username: Option<String>,
    /// Password.
    pub password: Option<Bytes>,
    /// Will message.
    pub will: Option<Will>,
    /// Further CONNECT properties (MQTT 5): user properties, receive maximum, ...
    pub properties: Properties,
    /// TLS; `None` for plain TCP.
    pub tls: Option<TlsOptions>,
    /// Limit for the TCP connect, TLS handshake and CONNACK, together.
    pub connect_timeout: Duration,
    /// Sees every packet sent and received.
    pub trace: Option<PacketTrace>,
}

impl fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("version", &self.version)
            .field("client_id", &self.client_id)
            .field("clean_start", &self.clean_start)
            .field("session_expiry", &self.session_expiry)
            .field("keep_alive", &self.keep_alive)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("will", &self.will)
            .field("properties", &self.properties)
            .field("tls", &self.tls)
            .field("connect_timeout", &self.connect_timeout)
            .field("trace", &self.trace.is_some())
            .finish()
    }
}

impl ConnectOptions {
    /// MQTT 5, clean start, keep alive 60 s, no client id (the broker assigns one), 10 s to
    /// connect.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
            version: ProtocolVersion::V5,
            client_id: String::new(),
            clean_start: true,
            session_expiry: None,
            keep_alive: 60,
            username: None,
            password: None,
            will: None,
            properties: Properties::default(),
            tls: None,
            connect_timeout: Duration::from_secs(10),
            trace: None,
        }
    }

    /// Sets the protocol version.
    pub fn version(mut self, version: ProtocolVersion) -> Self {
        self.version = version;
        self
    }

    /// Sets the client identifier.
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.client_id = id.into();
        self
    }

    /// Sets Clean Start.
    pub fn clean_start(mut self, clean: bool) -> Self {
        self.clean_start = clean;
        self
    }

    /// Sets the will.
    pub fn will(mut self, will: Will) -> Self {
        self.will = Some(will);
        self
    }

    /// The CONNECT packet these options make.
    pub fn to_connect(&self) -> Connect {
        let mut properties = if self.version.is_v5() {
            self.properties.clone()
        } else {
            Properties::default()
        };
        if self.version.is_v5() && self.session_expiry.is_some() {
            properties.session_expiry_interval = self.session_expiry.filter(|&s| s != 0);
        }
        let mut will = self.will.clone();
        if let Some(w) = will.as_mut().filter(|_| !self.version.is_v5()) {
            w.properties = Properties::default();
        }
        Connect {
            protocol: self.version,
            clean_start: self.clean_start,
            keep_alive: self.keep_alive,
            client_id: ByteStr::from(self.client_id.as_str()),
            will,
            username: self.username.as_deref().map(ByteStr::from),
            password: self.password.clone(),
            properties,
        }
    }
}

/// An application message, sent or received.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    pub topic: ByteStr,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// Set on received messages that the broker re-sent.
    pub dup: bool,
    /// MQTT 5 properties (ignored for 3.x).
    pub properties: Properties,
}

impl Message {
    /// A QoS 0, non-retained message.
    pub fn new(topic: &str, payload: impl Into<Bytes>) -> Self {
        Self {
            topic: ByteStr::from(topic),
            payload: payload.into(),
            ..Self::default()
        }
    }

    /// Sets the QoS.
    pub fn qos(mut self, qos: QoS) -> Self {
        self.qos = qos;
        self
    }

    /// Sets the retain flag.
    pub fn retain(mut self, retain: bool) -> Self {
        self.retain = retain;
        self
    }

    /// Sets the properties.
    pub fn properties(mut self, properties: Properties) -> Self {
        self.properties = properties;
        self
    }
}

impl From<Publish> for Message {
    fn from(p: Publish) -> Self {
        Self {
            topic: p.topic,
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
            dup: p.dup,
            properties: p.properties,
        }
    }
}

/// Why the connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The application disconnected (or dropped the client).
    ByClient,
    /// The broker closed the TCP connection without DISCONNECT.
    ServerClosed,
    /// The broker sent DISCONNECT (MQTT 5).
    ServerDisconnect {
        reason: u8,
        reason_string: Option<String>,
    },
    /// No PINGRESP within the keep alive interval.
    KeepAliveTimeout,
    /// A socket error.
    Io(String),
    /// The broker broke the protocol.
    Protocol(String),
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ByClient => f.write_str("disconnected by the client"),
            Self::ServerClosed => f.write_str("the broker closed the connection"),
            Self::ServerDisconnect {
                reason,
                reason_string,
            } => {
                write!(
                    f,
                    "the broker disconnected: {} (0x{reason:02X})",
                    crate::connection::reason_text(*reason)
                )?;
                if let Some(s) = reason_string.as_deref().filter(|s| !s.is_empty()) {
                    write!(f, ": {s}")?;
                }
                Ok(())
            }
            Self::KeepAliveTimeout => f.write_str("no PINGRESP within the keep alive interval"),
            Self::Io(e) => f.write_str(e),
            Self::Protocol(e) => write!(f, "protocol error: {e}"),
        }
    }
}

enum Pending {
    Publish {
        done: oneshot::Sender<Result<u8, ClientError>>,
        _permit: OwnedSemaphorePermit,
    },
    Subscribe(oneshot::Sender<Result<SubAck, ClientError>>),
    Unsubscribe(oneshot::Sender<Result<UnsubAck, ClientError>>),
}

impl Pending {
    fn fail(self, e: ClientError) {
        match self {
            Self::Publish { done, .. } => {
                let _ = done.send(Err(e));
            }
            Self::Subscribe(tx) => {
                let _ = tx.send(Err(e));
            }
            Self::Unsubscribe(tx) => {
                let _ = tx.send(Err(e));
            }
        }
    }
}

#[derive(Default)]
struct State {
    next_pid: u16,
    pending: HashMap<u16, Pending>,
    close_reason: Option<CloseReason>,
    ping_sent: Option<Instant>,
    /// DISCONNECT is being written: the broker closing the connection is expected.
    disconnecting: bool,
}

struct Shared {
    state: Mutex<State>,
    closed: watch::Sender<bool>,
    trace: Option<PacketTrace>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn trace(&self, dir: Direction, p: &Packet) {
        if let Some(t) = &self.trace {
            t(dir, p);
        }
    }

    /// Ends the connection (the first reason wins) and fails every pending operation.
    fn close(&self, reason: CloseReason) {
        let (pending, reason) = {
            let mut st = self.lock();
            let reason = if st.disconnecting {
                CloseReason::ByClient
            } else {
                reason
            };
            let reason = st.close_reason.get_or_insert(reason).clone();
            (std::mem::take(&mut st.pending), reason)
        };
        for (_, p) in pending {
            p.fail(ClientError::ConnectionLost(reason.clone()));
        }
        self.closed.send_replace(true);
    }

    fn lost(&self) -> ClientError {
        ClientError::ConnectionLost(
            self.lock()
                .close_reason
                .clone()
                .unwrap_or(CloseReason::ServerClosed),
        )
    }

    /// Registers a pending operation under a free packet id.
    fn register(&self, make: impl FnOnce() -> Pending) -> Result<u16, ClientError> {
        let mut st = self.lock();
        if let Some(r) = &st.close_reason {
            return Err(ClientError::ConnectionLost(r.clone()));
        }
        if st.pending.len() >= usize::from(u16::MAX) {
            return Err(ClientError::Invalid("no free packet identifier".into()));
        }
        loop {
            st.next_pid = st.next_pid.wrapping_add(1);
            if st.next_pid != 0 && !st.pending.contains_key(&st.next_pid) {
                break;
            }
        }
        let pid = st.next_pid;
        st.pending.insert(pid, make());
        Ok(pid)
    }

    fn unregister(&self, pid: u16) {
        self.lock().pending.remove(&pid);
    }
}

enum Outgoing {
    Packet(Packet),
    Disconnect(Packet),
}

/// A connected client. Dropping it closes the connection without DISCONNECT (so the broker
/// publishes the will); call [`Client::disconnect`] for a clean end.
pub struct Client {
    shared: Arc<Shared>,
    data: mpsc::Sender<Outgoing>,
    messages: mpsc::Receiver<Message>,
    inflight: Arc<Semaphore>,
    connack: ConnAck,
    version: ProtocolVersion,
    keep_alive: u16,
    writer: Option<JoinHandle<()>>,
    reader: Option<JoinHandle<()>>,
}

/// The completion of a QoS 1/2 publish started with [`Client::start_publish`].
pub struct PublishToken {
    rx: Option<oneshot::Receiver<Result<u8, ClientError>>>,
    shared: Arc<Shared>,
}

impl PublishToken {
    /// Waits for the PUBACK (QoS 1) or PUBCOMP (QoS 2) and returns its reason code; QoS 0
    /// publishes complete at once with 0.
    pub async fn wait(self) -> Result<u8, ClientError> {
        match self.rx {
            None => Ok(0),
            Some(rx) => rx.await.unwrap_or_else(|_| Err(self.shared.lost())),
        }
    }
}

impl fmt::Debug for PublishToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublishToken").finish_non_exhaustive()
    }
}

impl Client {
    /// Connects, sends CONNECT and waits for CONNACK. A refusal is [`ClientError::Refused`].
    pub async fn connect(opts: &ConnectOptions) -> Result<(Self, ConnAck), ClientError> {
        let deadline = Instant::now() + opts.connect_timeout;
        let mut conn = Connection::open(
            &opts.host,
            opts.port,
            opts.tls.as_ref(),
            opts.version,
            opts.connect_timeout,
        )
        .await?;
        let target = format!("{}:{}", opts.host, opts.port);
        let connect = Packet::Connect(Box::new(opts.to_connect()));
        if let Some(t) = &opts.trace {
            t(Direction::Sent, &connect);
        }
        conn.send(&connect).await.map_err(|e| match e {
            ClientError::Io(e) => ClientError::Connect {
                addr: target.clone(),
                message: io_text(&e),
            },
            e => e,
        })?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        let ack = match conn.recv_timeout(remaining).await {
            Ok(Packet::ConnAck(ack)) => {
                if let Some(t) = &opts.trace {
                    t(Direction::Received, &Packet::ConnAck(ack.clone()));
                }
                ack
            }
            Ok(Packet::Auth(_)) => {
                return Err(ClientError::Invalid(
                    "the broker asked for enhanced authentication, which is not supported".into(),
                ));
            }
            Ok(other) => {
                return Err(ClientError::Unexpected(format!(
                    "{} instead of CONNACK",
                    other.name()
                )));
            }
            Err(ClientError::Timeout) => {
                return Err(ClientError::Connect {
                    addr: target,
                    message: format!("no CONNACK within {} s", opts.connect_timeout.as_secs_f32()),
                });
            }
            Err(ClientError::Closed) => {
                return Err(ClientError::Connect {
                    addr: target,
                    message: "the broker closed the connection before CONNACK".into(),
                });
            }
            Err(ClientError::Io(e)) => {
                return Err(ClientError::Connect {
                    addr: target,
                    message: io_text(&e),
                });
            }
            Err(e) => return Err(e),
        };
        if ack.code != 0 {
            return Err(ClientError::Refused {
                version: opts.version,
                code: ack.code,
                reason_string: ack.properties.reason_string.as_deref().map(str::to_owned),
            });
        }
        let keep_alive = ack.properties.server_keep_alive.unwrap_or(opts.keep_alive);
        let max_in = opts
            .properties
            .maximum_packet_size
            .unwrap_or(conn.max_packet_size);
        let (stream, rbuf) = conn.into_parts();
        let client = Self::start(
            stream,
            rbuf,
            opts.version,
            keep_alive,
            max_in,
            ack.clone(),
            opts.trace.clone(),
        );
        Ok((client, ack))
    }

    fn start(
        stream: MqttStream,
        rbuf: BytesMut,
        version: ProtocolVersion,
        keep_alive: u16,
        max_in: u32,
        connack: ConnAck,
        trace: Option<PacketTrace>,
    ) -> Self {
        let (closed, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            closed,
            trace,
        });
        let (rd, wr) = tokio::io::split(stream);
        let (ctrl_tx, ctrl_rx) = mpsc::unbounded_channel();
        let (data_tx, data_rx) = mpsc::channel(64);
        let (msg_tx, msg_rx) = mpsc::channel(1024);
        let reader = tokio::spawn(reader(
            rd,
            rbuf,
            version,
            max_in,
            shared.clone(),
            ctrl_tx,
            msg_tx,
        ));
        let writer = tokio::spawn(writer(
            wr,
            version,
            Duration::from_secs(keep_alive.into()),
            shared.clone(),
            ctrl_rx,
            data_rx,
        ));
        let receive_max = connack.properties.receive_maximum.unwrap_or(u16::MAX);
        Self {
            shared,
            data: data_tx,
            messages: msg_rx,
            inflight: Arc::new(Semaphore::new(usize::from(receive_max.max(1)))),
            connack,
            version,
            keep_alive,
            writer: Some(writer),
            reader: Some(reader),
        }
    }

    /// The broker's CONNACK.
    pub fn connack(&self) -> &ConnAck {
        &self.connack
    }

    /// The protocol version of the connection.
    pub fn version(&self) -> ProtocolVersion {
        self.version
    }

    /// The keep alive in force (the broker's Server Keep Alive when it sent one).
    pub fn keep_alive(&self) -> u16 {
        self.keep_alive
    }

    /// Why the connection ended, once it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.shared.lock().close_reason.clone()
    }

    /// Checks a message against what the broker announced in CONNACK.
    fn check(&self, msg: &Message) -> Result<Packet, ClientError> {
        let props = &self.connack.properties;
        if msg.topic.is_empty() {
            return Err(ClientError::Invalid("the topic must not be empty".into()));
        }
        if msg.topic.contains(['+', '#']) {
            return Err(ClientError::Invalid(format!(
                "invalid topic {:?}: a topic name cannot contain + or #",
                msg.topic.as_str()
            )));
        }
        if let Some(max) = props.maximum_qos
            && (msg.qos as u8) > max
        {
            return Err(ClientError::Invalid(format!(
                "the broker accepts QoS {max} at most"
            )));
        }
        if msg.retain && props.retain_available == Some(0) {
            return Err(ClientError::Invalid(
                "the broker does not support retained messages".into(),
            ));
        }
        let packet = Packet::Publish(Publish {
            dup: false,
            qos: msg.qos,
            retain: msg.retain,
            topic: msg.topic.clone(),
            packet_id: (msg.qos != QoS::AtMostOnce).then_some(1),
            properties: if self.version.is_v5() {
                msg.properties.clone()
            } else {
                Properties::default()
            },
            payload: msg.payload.clone(),
        });
        let len = encoded_len(&packet, self.version)?;
        if let Some(max) = props.maximum_packet_size
            && len as u64 > u64::from(max)
        {
            return Err(ClientError::Invalid(format!(
                "a packet of {len} bytes exceeds the broker's maximum packet size of {max} bytes"
            )));
        }
        Ok(packet)
    }

    /// Publishes and, for QoS 1/2, waits for the PUBACK / PUBCOMP. Returns the reason code
    /// (0, or 0x10 "no matching subscribers" from MQTT 5 brokers); a refusal is
    /// [`ClientError::Rejected`].
    pub async fn publish(&self, msg: Message) -> Result<u8, ClientError> {
        self.start_publish(msg).await?.wait().await
    }

    /// Sends a PUBLISH without waiting for its acknowledgement; waits only while the broker's
    /// Receive Maximum of QoS 1/2 publishes are in flight.
    pub async fn start_publish(&self, msg: Message) -> Result<PublishToken, ClientError> {
        let mut packet = self.check(&msg)?;
        let rx = if msg.qos == QoS::AtMostOnce {
            None
        } else {
            let permit = tokio::select! {
                p = self.inflight.clone().acquire_owned() => {
                    p.map_err(|_| ClientError::Invalid("client closed".into()))?
                }
                _ = self.wait_closed() => return Err(self.shared.lost()),
            };
            let (tx, rx) = oneshot::channel();
            let pid = self.shared.register(|| Pending::Publish {
                done: tx,
                _permit: permit,
            })?;
            if let Packet::Publish(p) = &mut packet {
                p.packet_id = Some(pid);
            }
            Some(rx)
        };
        self.data
            .send(Outgoing::Packet(packet))
            .await
            .map_err(|_| self.shared.lost())?;
        Ok(PublishToken {
            rx,
            shared: self.shared.clone(),
        })
    }

    /// Subscribes and returns the SUBACK; the caller checks its reason codes (0x80 and above
    /// are failures).
    pub async fn subscribe(
        &self,
        filters: &[(&str, SubscriptionOptions)],
        properties: Properties,
    ) -> Result<SubAck, ClientError> {
        let (tx, rx) = oneshot::channel();
        let pid = self.shared.register(|| Pending::Subscribe(tx))?;
        let packet = Packet::Subscribe(Subscribe {
            packet_id: pid,
            filters: filters
                .iter()
                .map(|(f, o)| (ByteStr::from(*f), *o))
                .collect(),
            properties: if self.version.is_v5() {
                properties
            } else {
                Properties::default()
            },
        });
        if let Err(e) = encoded_len(&packet, self.version) {
            self.shared.unregister(pid);
            return Err(e.into());
        }
        self.data
            .send(Outgoing::Packet(packet))
            .await
            .map_err(|_| self.shared.lost())?;
        rx.await.unwrap_or_else(|_| Err(self.shared.lost()))
    }

    /// Subscribes to one filter at `qos`, failing when the broker refuses it.
    pub async fn subscribe_one(&self, filter: &str, qos: QoS) -> Result<QoS, ClientError> {
        let opts = SubscriptionOptions {
            qos,
            ..Default::default()
        };
        let ack = self
            .subscribe(&[(filter, opts)], Properties::default())
            .await?;
        match ack.reasons.first().copied() {
            Some(code) if code < 0x80 => Ok(QoS::from_u8(code).unwrap_or(qos)),
            code => Err(ClientError::Rejected {
                packet: "SUBSCRIBE",
                reason: code.unwrap_or(0x80),
                reason_string: ack.properties.reason_string.as_deref().map(str::to_owned),
            }),
        }
    }

    /// Unsubscribes and returns the UNSUBACK.
    pub async fn unsubscribe(
        &self,
        filters: &[&str],
        properties: Properties,
    ) -> Result<UnsubAck, ClientError> {
        let (tx, rx) = oneshot::channel();
        let pid = self.shared.register(|| Pending::Unsubscribe(tx))?;
        let packet = Packet::Unsubscribe(Unsubscribe {
            packet_id: pid,
            filters: filters.iter().map(|f| ByteStr::from(*f)).collect(),
            properties: if self.version.is_v5() {
                properties
            } else {
                Properties::default()
            },
        });
        self.data
            .send(Outgoing::Packet(packet))
            .await
            .map_err(|_| self.shared.lost())?;
        rx.await.unwrap_or_else(|_| Err(self.shared.lost()))
    }

    /// The next received message; once the connection has ended and every message received
    /// before has been returned, [`ClientError::ConnectionLost`].
    pub async fn recv(&mut self) -> Result<Message, ClientError> {
        match self.messages.recv().await {
            Some(m) => Ok(m),
            None => Err(self.shared.lost()),
        }
    }

    /// [`Client::recv`] with a time limit ([`ClientError::Timeout`]).
    pub async fn recv_timeout(&mut self, timeout: Duration) -> Result<Message, ClientError> {
        tokio::time::timeout(timeout, self.recv())
            .await
            .map_err(|_| ClientError::Timeout)?
    }

    /// Resolves once the connection has ended.
    pub async fn wait_closed(&self) {
        let mut rx = self.shared.closed.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }

    /// Sends DISCONNECT (normal disconnection: no will) after everything queued before it, and
    /// closes the connection.
    pub async fn disconnect(self) -> Result<(), ClientError> {
        self.disconnect_with(Disconnect::default()).await
    }

    /// Sends the given DISCONNECT (MQTT 5 reason and properties) and closes the connection.
    pub async fn disconnect_with(mut self, d: Disconnect) -> Result<(), ClientError> {
        let sent = self
            .data
            .send(Outgoing::Disconnect(Packet::Disconnect(d)))
            .await;
        if let Some(w) = self.writer.take() {
            let _ = w.await;
        }
        if let Some(r) = self.reader.take() {
            let _ = r.await;
        }
        match (sent, self.close_reason()) {
            (Ok(()), Some(CloseReason::ByClient)) => Ok(()),
            _ => Err(self.shared.lost()),
        }
    }

    /// Closes the socket without DISCONNECT, as a crash would (the broker publishes the will).
    pub async fn drop_connection(mut self) {
        self.shared.close(CloseReason::ByClient);
        if let Some(w) = self.writer.take() {
            let _ = w.await;
        }
        if let Some(r) = self.reader.take() {
            let _ = r.await;
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(w) = &self.writer {
            w.abort();
        }
        if let Some(r) = &self.reader {
            r.abort();
        }
    }
}

fn ack(p: &Packet) -> Option<&Ack> {
    match p {
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => Some(a),
        _ => None,
    }
}

fn reason_string(p: &Properties) -> Option<String> {
    p.reason_string.as_deref().map(str::to_owned)
}

async fn reader(
    mut rd: ReadHalf<MqttStream>,
    mut rbuf: BytesMut,
    version: ProtocolVersion,
    max_in: u32,
    shared: Arc<Shared>,
    ctrl: mpsc::UnboundedSender<Packet>,
    messages: mpsc::Sender<Message>,
) {
    let mut closed = shared.closed.subscribe();
    let mut inbound_qos2: HashSet<u16> = HashSet::new();
    let reason = 'conn: loop {
        loop {
            let packet = match decode_packet(&mut rbuf, version, max_in) {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => break 'conn CloseReason::Protocol(e.to_string()),
            };
            shared.trace(Direction::Received, &packet);
            match packet {
                Packet::Publish(p) => {
                    let pid = p.packet_id.unwrap_or(0);
                    let qos = p.qos;
                    let fresh = qos != QoS::ExactlyOnce || inbound_qos2.insert(pid);
                    if fresh {
                        // The application may have dropped its receiver: acknowledge anyway.
                        let _ = messages.send(Message::from(p)).await;
                    }
                    match qos {
                        QoS::AtMostOnce => {}
                        QoS::AtLeastOnce => {
                            let _ = ctrl.send(Packet::PubAck(Ack::new(pid)));
                        }
                        QoS::ExactlyOnce => {
                            let _ = ctrl.send(Packet::PubRec(Ack::new(pid)));
                        }
                    }
                }
                Packet::PubRel(a) => {
                    inbound_qos2.remove(&a.packet_id);
                    let _ = ctrl.send(Packet::PubComp(Ack::new(a.packet_id)));
                }
                p @ (Packet::PubAck(_) | Packet::PubRec(_) | Packet::PubComp(_)) => {
                    let a = ack(&p).expect("an ack");
                    let is_rec = matches!(p, Packet::PubRec(_));
                    let failed = a.reason >= 0x80;
                    let entry = {
                        let mut st = shared.lock();
                        if is_rec && !failed {
                            // Keep waiting for PUBCOMP (only for ids we know, [MQTT-4.3.3]).
                            if st.pending.contains_key(&a.packet_id) {
                                let _ = ctrl.send(Packet::PubRel(Ack::new(a.packet_id)));
                            }
                            None
                        } else {
                            st.pending.remove(&a.packet_id)
                        }
                    };
                    if let Some(Pending::Publish { done, .. }) = entry {
                        let res = if failed {
                            Err(ClientError::Rejected {
                                packet: if matches!(p, Packet::PubComp(_)) {
                                    "PUBREL"
                                } else {
                                    "PUBLISH"
                                },
                                reason: a.reason,
                                reason_string: reason_string(&a.properties),
                            })
                        } else {
                            Ok(a.reason)
                        };
                        let _ = done.send(res);
                    }
                }
                Packet::SubAck(s) => {
                    let entry = shared.lock().pending.remove(&s.packet_id);
                    if let Some(Pending::Subscribe(tx)) = entry {
                        let _ = tx.send(Ok(s));
                    }
                }
                Packet::UnsubAck(u) => {
                    let entry = shared.lock().pending.remove(&u.packet_id);
                    if let Some(Pending::Unsubscribe(tx)) = entry {
                        let _ = tx.send(Ok(u));
                    }
                }
                Packet::PingResp => shared.lock().ping_sent = None,
                Packet::Disconnect(d) => {
                    break 'conn CloseReason::ServerDisconnect {
                        reason: d.reason,
                        reason_string: reason_string(&d.properties),
                    };
                }
                other => {
                    break 'conn CloseReason::Protocol(format!(
                        "unexpected {} from the broker",
                        other.name()
                    ));
                }
            }
        }
        rbuf.reserve(8192);
        tokio::select! {
            r = rd.read_buf(&mut rbuf) => match r {
                Ok(0) => break CloseReason::ServerClosed,
                Ok(_) => {}
                Err(e) => break CloseReason::Io(io_text(&e)),
            },
            _ = closed.wait_for(|c| *c) => return,
        }
    };
    shared.close(reason);
}

async fn writer(
    mut wr: WriteHalf<MqttStream>,
    version: ProtocolVersion,
    keep_alive: Duration,
    shared: Arc<Shared>,
    mut ctrl: mpsc::UnboundedReceiver<Packet>,
    mut data: mpsc::Receiver<Outgoing>,
) {
    let mut closed = shared.closed.subscribe();
    let mut buf = BytesMut::new();
    let mut last_write = Instant::now();
    let mut batch: Vec<Packet> = Vec::new();
    loop {
        let mut disconnect: Option<Packet> = None;
        let mut stop = false;
        tokio::select! {
            biased;
            _ = closed.wait_for(|c| *c) => break,
            Some(p) = ctrl.recv() => batch.push(p),
            o = data.recv() => match o {
                Some(Outgoing::Packet(p)) => batch.push(p),
                Some(Outgoing::Disconnect(p)) => disconnect = Some(p),
                // The client was dropped: close without DISCONNECT.
                None => stop = true,
            },
            _ = tokio::time::sleep_until(last_write + keep_alive), if !keep_alive.is_zero() => {
                let mut st = shared.lock();
                match st.ping_sent {
                    Some(_) => {
                        drop(st);
                        shared.close(CloseReason::KeepAliveTimeout);
                        break;
                    }
                    None => {
                        st.ping_sent = Some(Instant::now());
                        batch.push(Packet::PingReq);
                    }
                }
            }
        }
        if stop {
            shared.close(CloseReason::ByClient);
            break;
        }
        while let Ok(p) = ctrl.try_recv() {
            batch.push(p);
        }
        while disconnect.is_none() && batch.len() < 256 {
            match data.try_recv() {
                Ok(Outgoing::Packet(p)) => batch.push(p),
                Ok(Outgoing::Disconnect(p)) => disconnect = Some(p),
                Err(_) => break,
            }
        }
        let disconnect = disconnect.map(|d| batch.push(d)).is_some();
        if disconnect {
            shared.lock().disconnecting = true;
        }
        buf.clear();
        for p in batch.drain(..) {
            shared.trace(Direction::Sent, &p);
            if let Err(e) = encode_packet(&p, version, &mut buf) {
                shared.close(CloseReason::Protocol(format!(
                    "cannot encode {}: {e}",
                    p.name()
                )));
                return;
            }
        }
        let res = async {
            wr.write_all(&buf).await?;
            wr.flush().await
        }
        .await;
        if let Err(e) = res {
            shared.close(CloseReason::Io(io_text(&e)));
            break;
        }
        last_write = Instant::now();
        if buf.capacity() > 1 << 20 {
            buf = BytesMut::new();
        }
        if disconnect {
            let _ = wr.shutdown().await;
            shared.close(CloseReason::ByClient);
            return;
        }
    }
    let _ = wr.shutdown().await;
}
