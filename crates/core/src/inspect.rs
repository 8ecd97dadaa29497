//! Read-only views of the broker state and the operations of the admin API: list clients,
//! sessions, subscriptions and retained messages; disconnect a client; delete a session or
//! retained messages; publish a message as the broker.
//!
//! Everything here is address-independent: the I/O layer adds what only it knows (peer address,
//! listener, outbox depth) by connection id.

use crate::action::{Action, CloseReason};
use crate::broker::{Broker, ConnId, SessionId};
use crate::message::Message;
use crate::page::{Page, PageRequest, Selector};
use crate::session::{Session, SubEntry};
use bytes::Bytes;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tern_codec::{ByteStr, Properties, ProtocolVersion, QoS, reason};

/// A connected client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    pub conn: ConnId,
    pub client_id: String,
    pub username: Option<String>,
    pub protocol: ProtocolVersion,
    /// Keep alive in force, in seconds (0: none).
    pub keep_alive: u16,
    /// When the connection completed CONNECT.
    pub connected_at: Option<Instant>,
    /// Unacknowledged outbound QoS 1/2 messages.
    pub inflight: usize,
    /// Messages waiting for the in-flight window.
    pub queued: usize,
    pub subscriptions: usize,
    /// Session Expiry Interval in seconds (`u32::MAX`: never; 0: ends with the connection).
    pub session_expiry: u32,
}

/// A session, online or offline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub client_id: String,
    pub username: Option<String>,
    /// The connection attached, if online.
    pub conn: Option<ConnId>,
    pub protocol: ProtocolVersion,
    /// Session Expiry Interval in seconds (`u32::MAX`: never).
    pub expiry_interval: u32,
    /// Time left before an offline session expires (`None`: online, or never expires).
    pub expires_in: Option<Duration>,
    pub inflight: usize,
    pub queued: usize,
    /// Inbound QoS 2 messages received but not yet released.
    pub inbound_qos2: usize,
    /// True when the session is written to the durable store.
    pub persisted: bool,
    pub subscriptions: Vec<SubscriptionInfo>,
}

/// One subscription of one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionInfo {
    pub client_id: String,
    /// The filter as subscribed (with `$share/GROUP/` for a shared subscription).
    pub filter: String,
    /// Maximum QoS granted.
    pub qos: QoS,
    pub no_local: bool,
    pub retain_as_published: bool,
    /// 0: send retained at subscribe, 1: only for a new subscription, 2: never.
    pub retain_handling: u8,
    /// MQTT 5 Subscription Identifier.
    pub id: Option<u32>,
    /// The share name of a shared subscription.
    pub share_group: Option<String>,
    /// Whether the session is online.
    pub online: bool,
}

/// Why an admin operation could not be done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminError {
    /// No connected client / no session with that client id.
    NotFound(String),
    /// A topic name or filter is not valid.
    InvalidTopic(String),
    /// Retained messages are not available (`retain_available = false`).
    RetainUnavailable,
}

impl std::fmt::Display for AdminError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminError::NotFound(what) => write!(f, "not found: {what}"),
            AdminError::InvalidTopic(why) => write!(f, "invalid topic: {why}"),
            AdminError::RetainUnavailable => write!(f, "retained messages are not available"),
        }
    }
}

impl std::error::Error for AdminError {}

/// A message the admin API publishes as the broker.
#[derive(Debug, Clone, Default)]
pub struct AdminPublish {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// Forwarded to MQTT 5 subscribers (content type, user properties, message expiry, ...).
    pub properties: Properties,
}

impl Broker {
    /// Connected clients, sorted by client id: the page `page` asks for.
    pub fn clients(&self, page: &PageRequest) -> Page<ClientInfo> {
        let mut sel = Selector::new(page.after.as_deref(), page.limit);
        for (&conn, c) in &self.conns {
            if let Some(s) = self.sessions.get(&c.session) {
                sel.offer(s.client_id.as_str(), || (conn, &**s));
            }
        }
        sel.finish(|k| k.to_string())
            .map(|(c, s)| client_info(c, s))
    }

    /// The connected client with `client_id`.
    pub fn client(&self, client_id: &str) -> Option<ClientInfo> {
        let s = self.session(client_id)?;
        Some(client_info(s.conn?, s))
    }

    /// The client id of a connection that completed CONNECT.
    pub fn conn_client_id(&self, conn: ConnId) -> Option<&str> {
        let c = self.conns.get(&conn)?;
        self.sessions.get(&c.session).map(|s| s.client_id.as_str())
    }

    /// Sessions, online and offline, sorted by client id: the page `page` asks for.
    pub fn sessions(&self, page: &PageRequest, now: Instant) -> Page<SessionInfo> {
        let mut sel = Selector::new(page.after.as_deref(), page.limit);
        for s in self.sessions.values() {
            sel.offer(s.client_id.as_str(), || &**s);
        }
        sel.finish(|k| k.to_string()).map(|s| session_info(s, now))
    }

    /// The session of `client_id`.
    pub fn session_info(&self, client_id: &str, now: Instant) -> Option<SessionInfo> {
        self.session(client_id).map(|s| session_info(s, now))
    }

    /// Subscriptions, sorted by client id then filter (with `client_id`, that client's only):
    /// the page `page` asks for. Its cursor is the client id and the filter, joined by U+0000
    /// (which neither may contain [MQTT-1.5.4-2]).
    pub fn subscriptions(
        &self,
        client_id: Option<&str>,
        page: &PageRequest,
    ) -> Page<SubscriptionInfo> {
        let after = page
            .after
            .as_deref()
            .map(|a| a.split_once('\0').unwrap_or((a, "")));
        let mut sel = Selector::new(after, page.limit);
        let sessions: Box<dyn Iterator<Item = &Session>> = match client_id {
            Some(id) => Box::new(self.session(id).into_iter()),
            None => Box::new(self.sessions.values().map(|s| &**s)),
        };
        for s in sessions {
            for (filter, e) in &s.subscriptions {
                sel.offer((s.client_id.as_str(), filter.as_str()), || (s, filter, e));
            }
        }
        sel.finish(|(c, f)| format!("{c}\0{f}"))
            .map(|(s, filter, e)| subscription_info(s, filter, e))
    }

    /// Shared subscriptions (`$share/...`) over all sessions, each member counted.
    pub fn shared_subscription_count(&self) -> usize {
        self.sessions
            .values()
            .flat_map(|s| s.subscriptions.keys())
            .filter(|f| f.starts_with("$share/"))
            .count()
    }

    /// Retained messages whose topic matches `filter` (all of them, `$`-topics included, when
    /// `None`), sorted by topic: the page `page` asks for. Expired messages are left out.
    pub fn retained_messages(
        &self,
        filter: Option<&str>,
        page: &PageRequest,
        now: Instant,
    ) -> Result<Page<Arc<Message>>, AdminError> {
        let mut sel = Selector::new(page.after.as_deref(), page.limit);
        match filter {
            None => self.retained.for_each(|topic, m| {
                if !m.expired(now) {
                    sel.offer(topic, || m);
                }
            }),
            Some(f) => {
                tern_topic::validate_topic_filter(f)
                    .map_err(|e| AdminError::InvalidTopic(format!("{f}: {e}")))?;
                self.retained.for_each_match(f, |topic, m| {
                    if !m.expired(now) {
                        sel.offer(topic, || m);
                    }
                });
            }
        }
        Ok(sel.finish(|k| k.to_string()).map(Arc::clone))
    }

    /// The retained message of `topic`, if any (and not expired).
    pub fn retained_message(&self, topic: &str, now: Instant) -> Option<Arc<Message>> {
        self.retained
            .get(topic)
            .filter(|m| !m.expired(now))
            .cloned()
    }

    /// Deletes the retained messages matching `filter` (a topic name is a filter matching
    /// itself); returns how many. Subscribers are not told, as no message is published.
    pub fn delete_retained(
        &mut self,
        filter: &str,
        out: &mut Vec<Action>,
    ) -> Result<usize, AdminError> {
        tern_topic::validate_topic_filter(filter)
            .map_err(|e| AdminError::InvalidTopic(format!("{filter}: {e}")))?;
        let mut topics = Vec::new();
        self.retained
            .for_each_match(filter, |topic, _| topics.push(topic.to_string()));
        let mut n = 0;
        for topic in topics {
            if self.retained.remove(&topic).is_some() {
                n += 1;
                self.persist_retained_deleted(&topic, out);
            }
        }
        Ok(n)
    }

    /// Disconnects the client with `client_id`: MQTT 5 clients get DISCONNECT 0x98
    /// (administrative action) first. As for any close the client did not ask for, its will is
    /// published; the session stays (or ends) according to its expiry interval.
    pub fn disconnect_client(
        &mut self,
        client_id: &str,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> Result<(), AdminError> {
        let conn = self
            .session(client_id)
            .and_then(|s| s.conn)
            .ok_or_else(|| AdminError::NotFound(format!("connected client {client_id:?}")))?;
        self.admin_close(conn, now, out);
        Ok(())
    }

    /// Deletes the session of `client_id`, online or offline; an online client is disconnected
    /// first as by [`Broker::disconnect_client`]. A pending delayed will is published now.
    pub fn delete_session(
        &mut self,
        client_id: &str,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> Result<(), AdminError> {
        let sid: SessionId = *self
            .client_ids
            .get(client_id)
            .ok_or_else(|| AdminError::NotFound(format!("session {client_id:?}")))?;
        if let Some(conn) = self.sessions.get(&sid).and_then(|s| s.conn) {
            self.admin_close(conn, now, out);
        }
        self.end_session(sid, now, out);
        Ok(())
    }

    /// Publishes a message as the broker (no origin session, so No Local never filters it).
    /// Returns the number of sessions (and shared groups) it was routed to.
    pub fn admin_publish(
        &mut self,
        p: AdminPublish,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> Result<usize, AdminError> {
        tern_topic::validate_topic_name(&p.topic)
            .map_err(|e| AdminError::InvalidTopic(format!("{}: {e}", p.topic)))?;
        if p.retain && !self.config.retain_available {
            return Err(AdminError::RetainUnavailable);
        }
        let mut properties = p.properties;
        crate::handle_publish::strip_per_hop(&mut properties);
        let expires_at = properties
            .message_expiry_interval
            .map(|s| now + Duration::from_secs(u64::from(s)));
        let msg = Message {
            id: self.new_message_id(),
            topic: ByteStr::from(p.topic),
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
            properties,
            expires_at,
            origin: None,
            read: Default::default(),
            own_bytes: false,
        };
        self.stats.broker_published += 1;
        Ok(self.publish_message(Arc::new(msg), now, out))
    }

    /// Publishes broker-generated messages (`$SYS`) retained at QoS 0. Unlike client and admin
    /// messages they are never written to the durable store: they are regenerated after a
    /// restart anyway.
    pub fn publish_sys(
        &mut self,
        messages: impl IntoIterator<Item = (String, String)>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        for (topic, payload) in messages {
            let msg = Arc::new(Message {
                id: self.new_message_id(),
                topic: ByteStr::from(topic),
                payload: Bytes::from(payload),
                qos: QoS::AtMostOnce,
                retain: true,
                properties: Properties::default(),
                expires_at: None,
                origin: None,
                read: Default::default(),
                own_bytes: false,
            });
            if self.config.retain_available {
                self.retained.insert(&msg.topic, msg.clone());
            }
            self.route(msg, now, out);
        }
    }

    /// Closes `conn` on an administrator's request.
    fn admin_close(&mut self, conn: ConnId, now: Instant, out: &mut Vec<Action>) {
        self.stats.admin_disconnects += 1;
        self.send_disconnect(conn, reason::ADMINISTRATIVE_ACTION, out);
        out.push(Action::Close(conn, CloseReason::AdminAction));
        self.forget_pending(conn);
        self.detach(conn, true, now, out);
    }

    /// Sum of the in-flight and queued deliveries of every session, and the number of distinct
    /// messages (with their payload bytes) held by queues, in-flight windows and the retained
    /// store: Mosquitto's "message store".
    pub fn store_usage(&self) -> StoreUsage {
        let mut seen = std::collections::HashSet::new();
        let mut u = StoreUsage::default();
        let mut count = |m: &Arc<Message>, u: &mut StoreUsage| {
            if seen.insert(Arc::as_ptr(m)) {
                u.messages += 1;
                u.bytes += m.payload.len() as u64;
            }
        };
        for s in self.sessions.values() {
            u.inflight += s.inflight.len();
            u.queued += s.queue.len();
            u.paged += s.queue.paged();
            for f in &s.inflight {
                count(&f.delivery.msg, &mut u);
            }
            for d in s.queue.iter_memory() {
                count(&d.msg, &mut u);
            }
            // Paged-out deliveries are counted as a message each, without reading them back.
            u.messages += s.queue.paged();
            u.bytes += s.queue.paged_bytes() as u64;
        }
        self.retained.for_each(|_, m| count(m, &mut u));
        u
    }
}

/// See [`Broker::store_usage`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreUsage {
    pub inflight: usize,
    pub queued: usize,
    /// Of `queued`, the deliveries paged out to the spool.
    pub paged: usize,
    /// Distinct messages held.
    pub messages: usize,
    /// Their payload bytes.
    pub bytes: u64,
}

fn client_info(conn: ConnId, s: &Session) -> ClientInfo {
    ClientInfo {
        conn,
        client_id: s.client_id.to_string(),
        username: s.info.username.clone(),
        protocol: s.version,
        keep_alive: s.keep_alive,
        connected_at: s.connected_at,
        inflight: s.inflight.len(),
        queued: s.queue.len(),
        subscriptions: s.subscriptions.len(),
        session_expiry: s.expiry_interval,
    }
}

fn session_info(s: &Session, now: Instant) -> SessionInfo {
    SessionInfo {
        client_id: s.client_id.to_string(),
        username: s.info.username.clone(),
        conn: s.conn,
        protocol: s.version,
        expiry_interval: s.expiry_interval,
        expires_in: s
            .expires_at
            .filter(|_| s.conn.is_none())
            .map(|t| t.saturating_duration_since(now)),
        inflight: s.inflight.len(),
        queued: s.queue.len(),
        inbound_qos2: s.inbound_qos2.len(),
        persisted: s.persisted,
        subscriptions: subscription_infos(s).collect(),
    }
}

fn subscription_infos(s: &Session) -> impl Iterator<Item = SubscriptionInfo> + '_ {
    let mut subs: Vec<_> = s.subscriptions.iter().collect();
    subs.sort_by(|a, b| a.0.cmp(b.0));
    subs.into_iter()
        .map(move |(filter, e)| subscription_info(s, filter, e))
}

fn subscription_info(s: &Session, filter: &str, e: &SubEntry) -> SubscriptionInfo {
    SubscriptionInfo {
        client_id: s.client_id.to_string(),
        filter: filter.to_string(),
        qos: e.options.qos,
        no_local: e.options.no_local,
        retain_as_published: e.options.retain_as_published,
        retain_handling: e.options.retain_handling as u8,
        id: e.id,
        share_group: match tern_topic::parse_shared(filter) {
            Some(Ok(sh)) => Some(sh.group.to_string()),
            _ => None,
        },
        online: s.conn.is_some(),
    }
}
