//! The driver's side of operations: runs admin commands against the [`Broker`], publishes the
//! `$SYS` tree on the tick, keeps a short history of rates for the dashboard, and logs
//! connection events (see [`super::events`]).
//!
//! The driver owns one [`DriverOps`] next to its `Broker` and calls it at a handful of points
//! (the wiring):
//!
//! - `on_packet(conn, &packet)` before a packet goes to the core (remembers CONNECT's client id
//!   and a client's DISCONNECT reason code for the event log);
//! - `observe(&broker, &actions, now, peer_of)` at the top of `execute`, before actions are
//!   carried out (connect/disconnect events, disconnect counts by reason);
//! - `on_lost(conn, now)` when a connection ends without the core closing it (not needed when
//!   the driver pushes `Action::Close(conn, ConnectionLost)` itself, as it does now);
//! - `on_tick(&mut broker, now, &mut actions)` on the 1 s tick (`$SYS`, history, log summaries);
//! - `handle(call, &mut broker, now, &mut actions, peer_of)` for each [`AdminCall`].
//!
//! The I/O side bumps the [`crate::metrics::ListenerMetrics`] of its listener (bytes, packets,
//! accepted/open connections, limit hits, timeouts) and the store's histograms in
//! [`crate::metrics::Metrics`].

use super::api::{AdminCall, ApiError, Command, CoreStats, Reply, Response};
use super::events::EventLog;
use super::json;
use crate::metrics::Metrics;
use serde_json::{Value, json};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tern_codec::Packet;
use tern_core::{Action, Broker, ConnId, SysTree};

/// Samples kept for the dashboard's chart (one per second: 10 minutes).
const HISTORY: usize = 600;

/// One history sample.
#[derive(Debug, Clone, Copy)]
struct Sample {
    unix_ms: u64,
    connected: usize,
    publish_received: u64,
    publish_sent: u64,
    bytes_received: u64,
    bytes_sent: u64,
}

/// Peer address of a connection, as the I/O layer knows it.
pub type PeerOf<'a> = &'a dyn Fn(ConnId) -> Option<SocketAddr>;

/// See the module documentation.
pub struct DriverOps {
    metrics: Arc<Metrics>,
    sys: SysTree,
    events: EventLog,
    history: VecDeque<Sample>,
    last_sample: Option<Instant>,
}

impl DriverOps {
    /// `sys_interval` zero turns `$SYS` off.
    pub fn new(metrics: Arc<Metrics>, sys_interval: Duration) -> Self {
        let started = metrics.started;
        Self {
            metrics,
            sys: SysTree::new(env!("CARGO_PKG_VERSION"), started, sys_interval),
            events: EventLog::default(),
            history: VecDeque::with_capacity(HISTORY),
            last_sample: None,
        }
    }

    /// The shared metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Once a second: `$SYS` (when due), the dashboard history, the log limiter's summaries.
    pub fn on_tick(&mut self, broker: &mut Broker, now: Instant, out: &mut Vec<Action>) {
        let io = self.metrics.io_counters();
        self.sys.tick(broker, &io, now, out);
        if self
            .last_sample
            .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_millis(900))
        {
            self.last_sample = Some(now);
            let st = broker.stats();
            if self.history.len() == HISTORY {
                self.history.pop_front();
            }
            self.history.push_back(Sample {
                unix_ms: unix_ms(SystemTime::now()),
                connected: broker.connected_count(),
                publish_received: st.publish_received,
                publish_sent: st.publish_sent,
                bytes_received: io.bytes_received,
                bytes_sent: io.bytes_sent,
            });
        }
        self.events.limiter.flush(now);
        self.metrics
            .log_suppressed
            .store(self.events.limiter.suppressed_total, Ordering::Relaxed);
    }

    /// A packet from `conn` is about to go to the core.
    #[inline]
    pub fn on_packet(&mut self, conn: ConnId, packet: &Packet) {
        self.events.on_packet(conn, packet);
    }

    /// A batch of actions is about to be carried out.
    pub fn observe(&mut self, broker: &Broker, actions: &[Action], now: Instant, peer: PeerOf) {
        self.events.observe(broker, actions, now, peer);
    }

    /// `conn` ended without the core closing it.
    pub fn on_lost(&mut self, conn: ConnId, now: Instant) {
        self.events.on_lost(conn, now);
    }

    /// Runs an admin call and sends its answer. Actions (DISCONNECT, close, deliveries of a
    /// published message) are appended to `out` for the driver to carry out.
    pub fn handle(
        &mut self,
        call: AdminCall,
        broker: &mut Broker,
        now: Instant,
        out: &mut Vec<Action>,
        peer: PeerOf,
    ) {
        let response = self.run(call.cmd, broker, now, out, peer);
        let _ = call.reply.send(response);
    }

    /// Runs one command.
    pub fn run(
        &mut self,
        cmd: Command,
        broker: &mut Broker,
        now: Instant,
        out: &mut Vec<Action>,
        peer: PeerOf,
    ) -> Response {
        let ok = |v: Value| Ok(Reply::Json(v));
        match cmd {
            Command::Ping => ok(json!({"ok": true})),
            Command::Overview => ok(self.overview(broker, now)),
            Command::Clients(page) => {
                let page = broker.clients(&page);
                ok(json::page(
                    page.map(|c| json::client(&c, peer(c.conn), now)),
                    "clients",
                ))
            }
            Command::Client(id) => match broker.client(&id) {
                Some(c) => ok(json::client(&c, peer(c.conn), now)),
                None => Err(ApiError::not_found(format!("no connected client {id:?}"))),
            },
            Command::DisconnectClient(id) => {
                broker.disconnect_client(&id, now, out)?;
                ok(json!({"disconnected": id}))
            }
            Command::Sessions(page) => {
                let page = broker.sessions(&page, now);
                ok(json::page(
                    page.map(|s| json::session(&s, s.conn.and_then(peer))),
                    "sessions",
                ))
            }
            Command::Session(id) => match broker.session_info(&id, now) {
                Some(s) => ok(json::session(&s, s.conn.and_then(peer))),
                None => Err(ApiError::not_found(format!("no session {id:?}"))),
            },
            Command::DeleteSession(id) => {
                broker.delete_session(&id, now, out)?;
                ok(json!({"deleted": id}))
            }
            Command::Subscriptions(id, page) => {
                let page = broker.subscriptions(id.as_deref(), &page);
                ok(json::page(
                    page.map(|s| json::subscription(&s)),
                    "subscriptions",
                ))
            }
            Command::Retained {
                filter,
                page,
                payload,
            } => {
                let page = broker.retained_messages(filter.as_deref(), &page, now)?;
                ok(json::page(
                    page.map(|m| json::retained(&m, now, payload)),
                    "retained",
                ))
            }
            Command::RetainedGet(topic) => match broker.retained_message(&topic, now) {
                Some(m) => ok(json::retained(&m, now, true)),
                None => Err(ApiError::not_found(format!(
                    "no retained message on {topic:?}"
                ))),
            },
            Command::RetainedDelete(filter) => {
                let n = broker.delete_retained(&filter, out)?;
                ok(json!({"deleted": n}))
            }
            Command::Publish(p) => {
                let topic = p.topic.clone();
                let routed = broker.admin_publish(*p, now, out)?;
                ok(json!({"topic": topic, "routed": routed}))
            }
            Command::Stats => Ok(Reply::Stats(Box::new(self.core_stats(broker)))),
        }
    }

    fn core_stats(&self, broker: &Broker) -> CoreStats {
        let connected = broker.connected_count();
        CoreStats {
            stats: broker.stats().clone(),
            clients_connected: connected,
            sessions_online: connected,
            sessions_offline: broker.session_count().saturating_sub(connected),
            subscriptions: broker.subscription_count(),
            shared_subscriptions: broker.shared_subscription_count(),
            retained: broker.retained_count(),
            store: broker.store_usage(),
            pager: broker.pager_stats(),
            disconnects: self.events.disconnects.clone(),
            log_suppressed: self.events.limiter.suppressed_total,
        }
    }

    fn overview(&self, broker: &Broker, now: Instant) -> Value {
        let st = broker.stats();
        let io = self.metrics.io_counters();
        let connected = broker.connected_count();
        let sys: BTreeMap<&str, &str> = self
            .sys
            .current()
            .iter()
            .map(|(t, v)| (t.as_str(), v.as_str()))
            .collect();
        let history: Vec<Value> = self
            .history
            .iter()
            .map(|s| {
                json!([
                    s.unix_ms,
                    s.connected,
                    s.publish_received,
                    s.publish_sent,
                    s.bytes_received,
                    s.bytes_sent
                ])
            })
            .collect();
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_secs": now.saturating_duration_since(self.metrics.started).as_secs(),
            "clients_connected": connected,
            "clients_maximum": st.max_connected,
            "sessions": broker.session_count(),
            "sessions_offline": broker.session_count().saturating_sub(connected),
            "subscriptions": broker.subscription_count(),
            "retained": broker.retained_count(),
            "publish_received": st.publish_received,
            "publish_sent": st.publish_sent,
            "bytes_received": io.bytes_received,
            "bytes_sent": io.bytes_sent,
            "connects": st.connects,
            "connects_refused": st.connects_refused,
            "history_columns": ["unix_ms", "connected", "publish_received", "publish_sent", "bytes_received", "bytes_sent"],
            "history": history,
            "sys": sys,
            "sys_interval_secs": self.sys.interval().as_secs(),
        })
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}
