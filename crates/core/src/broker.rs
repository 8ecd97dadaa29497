//! The broker state and the dispatch of what arrives from connections.

use crate::action::{Action, CloseReason};
use crate::config::Config;
use crate::session::{Session, SubEntry};
use crate::shared::{SharedGroups, SubKey};
use crate::stats::Stats;
use std::collections::HashMap;
use std::time::Instant;
use tern_codec::{
    ByteStr, ConnAck, DecodeError, Disconnect, Packet, Properties, PropertyValues, ProtocolVersion,
    reason,
};
use tern_topic::SubscriptionTrie;

/// Identifies one network connection; chosen by the I/O layer, never reused.
pub type ConnId = u64;
/// Identifies one session; chosen by the core, never reused (so stale references cannot alias).
pub type SessionId = u64;

/// A connection that has completed CONNECT.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Conn {
    pub(crate) session: SessionId,
    pub(crate) version: ProtocolVersion,
}

/// The broker core. See the crate documentation.
#[derive(Default)]
pub struct Broker {
    pub(crate) config: Config,
    pub(crate) conns: crate::idmap::IdMap<ConnId, Conn>,
    /// Boxed, so the table's spare slots cost a pointer each, not a whole session.
    pub(crate) sessions: crate::idmap::IdMap<SessionId, Box<Session>>,
    pub(crate) client_ids: HashMap<ByteStr, SessionId>,
    pub(crate) subs: SubscriptionTrie<SubKey, SubEntry>,
    pub(crate) shared: SharedGroups,
    pub(crate) retained: crate::retained::Retained,
    pub(crate) pending_wills: Vec<crate::will::PendingWill>,
    pub(crate) next_session: SessionId,
    pub(crate) next_assigned_id: u64,
    pub(crate) stats: Stats,
    /// The matches of the last topic routed (see `route_cache`); its list is reused, so a
    /// publish does not allocate one each time.
    pub(crate) route_cache: crate::route_cache::RouteCache,
    /// `route`'s lists of connections that get a message as it is (by RETAIN flag sent), kept
    /// empty between routes so their allocations are reused.
    pub(crate) plain_scratch: [Vec<ConnId>; 2],
    pub(crate) last_retained_sweep: Option<Instant>,
    pub(crate) persist: crate::persist::Persistence,
    /// Client ids of sessions with a durable pending will (the session may be gone when the will
    /// fires, but the record must still name it).
    pub(crate) pending_will_clients: HashMap<SessionId, String>,
    pub(crate) next_message_id: u64,
    pub(crate) access: Option<Box<dyn crate::access::AccessControl>>,
    /// Address and listener of connections, told by the I/O layer before CONNECT.
    pub(crate) peers: HashMap<ConnId, (Option<std::net::SocketAddr>, usize, Option<String>)>,
    /// Client info of a CONNECT in progress, moved into the session on acceptance.
    pub(crate) pending_info: HashMap<ConnId, crate::access::ClientInfo>,
    pub(crate) auth_methods: Vec<Box<dyn crate::auth::EnhancedAuth>>,
    pub(crate) pending_auth: HashMap<ConnId, crate::auth::PendingAuth>,
    pub(crate) reauth: HashMap<ConnId, Box<dyn crate::auth::AuthExchange>>,
    pub(crate) pager: crate::pager::Pager,
    pub(crate) forward_size: crate::delivery::ForwardSize,
    pub(crate) throttle: crate::throttle::Throttle,
    /// Sessions recently sent retained messages at subscribe time (see `retained_burst`).
    pub(crate) retained_buckets: crate::idmap::IdMap<SessionId, crate::retained_burst::Bucket>,
    /// Spare `Arc<Message>` allocations (see `message_pool`).
    pub(crate) messages: crate::message_pool::MessagePool,
    /// Copies messages out of their read buffers before they are retained or queued.
    pub(crate) detacher: crate::message::Detacher,
    /// The read the packet being handled came in ([`Broker::handle_packet_from_read`]).
    pub(crate) read: crate::message::ReadRef,
}

impl Broker {
    /// A broker with `config`.
    pub fn new(config: Config) -> Self {
        let mut pager = crate::pager::Pager::default();
        pager.budget = config.queue_memory;
        Self {
            config,
            next_session: 1,
            next_assigned_id: 1,
            pager,
            ..Self::default()
        }
    }

    /// Gives the broker a spool to page queues out to when they pass `Config::queue_memory`.
    pub fn set_spool(&mut self, spool: tern_store::Spool) {
        self.pager.set_spool(spool);
    }

    /// What paging queues out of memory did.
    pub fn pager_stats(&self) -> crate::pager::PagerStats {
        self.pager.stats()
    }

    /// Adds a session to the broker (its queue counts against the memory budget from now on).
    pub(crate) fn insert_session(&mut self, sid: SessionId, mut session: Session) {
        session.queue.set_counter(&self.pager.counter);
        self.sessions.insert(sid, Box::new(session));
    }

    /// A delivery joined the queue of `sid`: remember the queue as one to page out from, and
    /// page out if the queues are over their budget.
    pub(crate) fn queued(&mut self, sid: SessionId) {
        if !self.pager.enabled() {
            return;
        }
        if let Some(s) = self.sessions.get_mut(&sid)
            && !s.queue.listed
        {
            s.queue.listed = true;
            self.pager.candidates.push_back(sid);
        }
        if self.pager.over_budget() {
            self.page_out();
        }
    }

    /// Pages queues out until memory is under the pager's target: offline sessions' queues
    /// whole, online ones beyond what their in-flight window will take next.
    pub(crate) fn page_out(&mut self) {
        let target = self.pager.target();
        let mut rounds = self.pager.candidates.len();
        while self.pager.counter.get() > target && rounds > 0 {
            rounds -= 1;
            let Some(sid) = self.pager.candidates.pop_front() else {
                break;
            };
            let Some(s) = self.sessions.get_mut(&sid) else {
                continue;
            };
            s.queue.listed = false;
            let keep = if s.online() {
                usize::from(s.window).max(16)
            } else {
                0
            };
            if s.queue.in_memory() > keep {
                s.queue.page_out(keep, &mut self.pager);
            }
        }
    }

    /// Moves pages out of mostly-dead spool segments when the spool wastes too much disk.
    pub(crate) fn compact_spool(&mut self) {
        if !self.pager.wasteful() {
            return;
        }
        for s in self.sessions.values_mut() {
            s.queue.relocate_pages(&mut self.pager);
        }
    }

    /// Tells the core the wall-clock time (Unix milliseconds) at `now`, so durable records carry
    /// absolute times. Call it at start and now and then (the driver does on every tick).
    pub fn set_wall_clock(&mut self, now: Instant, unix_ms: u64) {
        self.persist.set_anchor(now, unix_ms);
    }

    /// Installs authentication and ACL checks (password file, ACL file, ...).
    pub fn set_access_control(&mut self, access: Box<dyn crate::access::AccessControl>) {
        self.access = Some(access);
    }

    /// Tells the core where a new connection comes from (before its CONNECT): the peer
    /// address, the listener index and, for TLS with a verified client certificate, its CN.
    pub fn set_peer(
        &mut self,
        conn: ConnId,
        peer: Option<std::net::SocketAddr>,
        listener: usize,
        cert_cn: Option<String>,
    ) {
        self.peers.insert(conn, (peer, listener, cert_cn));
    }

    /// A fresh message id.
    pub(crate) fn new_message_id(&mut self) -> u64 {
        self.next_message_id += 1;
        self.next_message_id
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Connections that completed CONNECT.
    pub fn connected_count(&self) -> usize {
        self.conns.len()
    }

    /// Sessions, online and offline.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Subscriptions over all sessions.
    pub fn subscription_count(&self) -> usize {
        self.count_subscriptions()
    }

    /// Retained messages held.
    pub fn retained_count(&self) -> usize {
        self.retained.len()
    }

    /// Bytes of the retained messages held (topics, payloads, properties).
    pub fn retained_bytes(&self) -> usize {
        self.retained.bytes()
    }

    /// The session of a client id, if any (for inspection and tests).
    pub fn session(&self, client_id: &str) -> Option<&Session> {
        self.client_ids
            .get(client_id)
            .and_then(|sid| self.sessions.get(sid))
            .map(|s| &**s)
    }

    /// The protocol version of a connected connection.
    pub fn conn_version(&self, conn: ConnId) -> Option<ProtocolVersion> {
        self.conns.get(&conn).map(|c| c.version)
    }

    /// A packet arrived on `conn`, decoded from (as slices of) the socket read `read`: the
    /// messages it publishes carry it, so the queues that keep them can tell how much of their
    /// reads they keep (see [`crate::queue::Queue::may_pin`]).
    #[inline]
    pub fn handle_packet_from_read(
        &mut self,
        conn: ConnId,
        packet: Packet,
        read: crate::message::ReadRef,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        self.read = read;
        self.handle_packet(conn, packet, now, out);
        self.read = crate::message::ReadRef::default();
    }

    /// A packet arrived on `conn` (in bytes of its own, or from a read the core need not know).
    pub fn handle_packet(
        &mut self,
        conn: ConnId,
        packet: Packet,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let Some(c) = self.conns.get(&conn).copied() else {
            if self.pending_auth.contains_key(&conn) {
                return self.handle_pending_auth_packet(conn, packet, now, out);
            }
            match packet {
                Packet::Connect(connect) => self.handle_connect(conn, *connect, now, out),
                // [MQTT-3.1.0-1] The first packet from the client must be CONNECT.
                _ => {
                    self.stats.protocol_errors += 1;
                    out.push(Action::Close(conn, CloseReason::ProtocolError));
                }
            }
            return;
        };
        match packet {
            // [MQTT-3.1.0-2] A second CONNECT is a protocol violation.
            Packet::Connect(_) => self.protocol_failure(conn, reason::PROTOCOL_ERROR, now, out),
            Packet::Publish(p) => self.handle_publish(conn, c, p, now, out),
            Packet::PubAck(a) => self.handle_puback(c, a, now, out),
            Packet::PubRec(a) => self.handle_pubrec(conn, c, a, now, out),
            Packet::PubRel(a) => self.handle_pubrel(conn, c, a, out),
            Packet::PubComp(a) => self.handle_pubcomp(c, a, now, out),
            Packet::Subscribe(s) => self.handle_subscribe(conn, c, s, now, out),
            Packet::Unsubscribe(u) => self.handle_unsubscribe(conn, c, u, out),
            Packet::PingReq => out.push(Action::send(conn, Packet::PingResp)),
            Packet::Disconnect(d) => self.handle_disconnect(conn, c, d, now, out),
            Packet::Auth(a) if c.version.is_v5() => self.handle_auth(conn, a, now, out),
            Packet::Auth(_) => self.protocol_failure(conn, reason::PROTOCOL_ERROR, now, out),
            // Packets only a server sends.
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                self.protocol_failure(conn, reason::PROTOCOL_ERROR, now, out)
            }
        }
    }

    /// The bytes from `conn` could not be decoded.
    pub fn decode_error(
        &mut self,
        conn: ConnId,
        err: &DecodeError,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        if self.conns.contains_key(&conn) {
            self.protocol_failure(conn, err.reason_code(), now, out);
            return;
        }
        self.stats.connects_refused += 1;
        if let DecodeError::UnsupportedProtocol { level } = err {
            // [MQTT-3.1.2-2] Answer an unsupported level with CONNACK 0x01 (3.x format) and close;
            // a level above 5 is presumably a newer client, which gets the v5 code 0x84.
            let code = if *level > 5 {
                reason::UNSUPPORTED_PROTOCOL_VERSION
            } else {
                reason::v3::UNACCEPTABLE_PROTOCOL_VERSION
            };
            out.push(Action::send(
                conn,
                Packet::ConnAck(ConnAck {
                    code,
                    ..ConnAck::default()
                }),
            ));
        }
        out.push(Action::Close(conn, CloseReason::ConnectRefused));
    }

    /// The I/O layer lost `conn` (end of stream, I/O error) without a DISCONNECT.
    pub fn connection_lost(&mut self, conn: ConnId, now: Instant, out: &mut Vec<Action>) {
        self.forget_pending(conn);
        self.peers.remove(&conn);
        self.detach(conn, true, now, out);
    }

    /// The client of `conn` was silent for 1.5 times its keep alive ([MQTT-3.1.2-24]).
    pub fn keep_alive_timeout(&mut self, conn: ConnId, now: Instant, out: &mut Vec<Action>) {
        self.send_disconnect(conn, reason::KEEP_ALIVE_TIMEOUT, out);
        out.push(Action::Close(conn, CloseReason::KeepAliveTimeout));
        self.detach(conn, true, now, out);
    }

    /// The broker is shutting down: tell v5 clients (0x8B) and close every connection. Sessions
    /// are kept as they are; wills are not published, as the clients did nothing wrong.
    pub fn shutdown(&mut self, now: Instant, out: &mut Vec<Action>) {
        let conns: Vec<ConnId> = self.conns.keys().copied().collect();
        for conn in conns {
            self.send_disconnect(conn, reason::SERVER_SHUTTING_DOWN, out);
            out.push(Action::Close(conn, CloseReason::Shutdown));
            self.detach(conn, false, now, out);
        }
    }

    /// Closes `conn` for a protocol violation: DISCONNECT with `code` for v5, then close; the will
    /// is published, as for any close without DISCONNECT.
    pub(crate) fn protocol_failure(
        &mut self,
        conn: ConnId,
        code: u8,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        self.stats.protocol_errors += 1;
        self.send_disconnect(conn, code, out);
        out.push(Action::Close(conn, CloseReason::ProtocolError));
        self.detach(conn, true, now, out);
    }

    /// Sends DISCONNECT with `code` if `conn` speaks MQTT 5 (3.x has no server DISCONNECT).
    pub(crate) fn send_disconnect(&self, conn: ConnId, code: u8, out: &mut Vec<Action>) {
        if self.conns.get(&conn).is_some_and(|c| c.version.is_v5()) {
            // A reason string tells a person reading the client's log what went wrong; DISCONNECT
            // may carry one whatever Request Problem Information says [MQTT-3.1.2-29].
            let properties: Properties = PropertyValues {
                reason_string: reason_text(code).map(ByteStr::from_static),
                ..Default::default()
            }
            .into();
            let d = Disconnect {
                reason: code,
                properties,
            };
            out.push(Action::send(conn, Packet::Disconnect(d)));
        }
    }

    /// Detaches `conn` from its session: publishes (or schedules) the will when `with_will`, then
    /// ends the session or starts its expiry clock.
    pub(crate) fn detach(
        &mut self,
        conn: ConnId,
        with_will: bool,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        self.reauth.remove(&conn);
        self.peers.remove(&conn);
        self.forget_publisher(conn);
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        let Some(session) = self.sessions.get_mut(&c.session) else {
            return;
        };
        session.conn = None;
        session.connected_at = None;
        let will = session.will.take();
        let interval = session.expiry_interval;
        // Offline in its shared groups before anything is routed (its own will may match one).
        self.shared_presence(c.session, false);
        if with_will && let Some(will) = will {
            self.schedule_will(c.session, *will, interval, now, out);
        }
        self.redistribute_shared(c.session, now, out);
        self.detach_kept(c.session);
        self.park_or_end_session(c.session, now, out);
        // Its publishers no longer wait for it.
        self.ease_backpressure(c.session, out);
    }

    /// A session went offline: what it keeps (queued, in flight) may now wait for hours, so it
    /// is copied out of the publishers' reads (see [`crate::message::Detacher`]). While it was
    /// online its queue drained as the client read, and was not copied.
    fn detach_kept(&mut self, sid: SessionId) {
        let Some(session) = self.sessions.get_mut(&sid) else {
            return;
        };
        if session.expiry_interval == 0 {
            return; // it ends now
        }
        let (detacher, pool) = (&mut self.detacher, &mut self.messages);
        session
            .queue
            .detach_memory(|d| d.msg = detacher.detach(&d.msg, pool));
        for f in &mut session.inflight {
            f.delivery.msg = detacher.detach(&f.delivery.msg, pool);
        }
    }

    /// After a disconnect: a session with expiry interval 0 ends now, others start their clock.
    pub(crate) fn park_or_end_session(
        &mut self,
        sid: SessionId,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let Some(session) = self.sessions.get_mut(&sid) else {
            return;
        };
        match session.expiry_interval {
            0 => return self.end_session(sid, now, out),
            u32::MAX => session.expires_at = None,
            secs => {
                session.expires_at = Some(now + std::time::Duration::from_secs(u64::from(secs)))
            }
        }
        self.persist.session(session, now, out);
    }

    /// Removes a session and its subscriptions; a pending delayed will is published now
    /// (MQTT 5.0 section 3.1.3.2.2: the will is sent when the session ends, if not before).
    pub(crate) fn end_session(&mut self, sid: SessionId, now: Instant, out: &mut Vec<Action>) {
        let Some(mut session) = self.sessions.remove(&sid) else {
            return;
        };
        // The persisted deliveries' messages are released one by one: read paged ones back.
        let queued = if session.persisted {
            session.queue.take_all(&mut self.pager)
        } else {
            Default::default()
        };
        self.persist
            .session_deleted(&session, queued.iter().map(|d| d.msg.id), out);
        let filters: Vec<ByteStr> = session.subscriptions.keys().cloned().collect();
        for filter in filters {
            self.remove_subscription(sid, &filter, out);
        }
        if self.client_ids.get(&session.client_id) == Some(&sid) {
            self.client_ids.remove(&session.client_id);
        }
        self.fire_pending_will(sid, now, out);
    }
}

/// A short explanation of a server-side reason code, for the Reason String property.
pub(crate) fn reason_text(code: u8) -> Option<&'static str> {
    Some(match code {
        reason::MALFORMED_PACKET => "malformed packet",
        reason::PROTOCOL_ERROR => "protocol error",
        reason::NOT_AUTHORIZED => "not authorized",
        reason::SERVER_BUSY => "server busy",
        reason::SERVER_SHUTTING_DOWN => "server shutting down",
        reason::KEEP_ALIVE_TIMEOUT => {
            "keep alive timeout: nothing received for 1.5 times the keep alive"
        }
        reason::SESSION_TAKEN_OVER => {
            "session taken over by another connection with the same client identifier"
        }
        reason::TOPIC_NAME_INVALID => "invalid topic name",
        reason::RECEIVE_MAXIMUM_EXCEEDED => {
            "more unacknowledged QoS 2 messages than the advertised Receive Maximum"
        }
        reason::TOPIC_ALIAS_INVALID => {
            "topic alias is 0 or above the advertised Topic Alias Maximum"
        }
        reason::PACKET_TOO_LARGE => "packet larger than the advertised Maximum Packet Size",
        reason::PAYLOAD_FORMAT_INVALID => {
            "payload is not valid UTF-8 but its Payload Format Indicator says it is"
        }
        reason::RETAIN_NOT_SUPPORTED => "retained messages are not available",
        reason::MESSAGE_RATE_TOO_HIGH => {
            "more PUBLISH packets per second than limits.max_message_rate allows"
        }
        _ => return None,
    })
}
