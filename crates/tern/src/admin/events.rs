//! Connection events in the log: one line per connect, refused connect and disconnect, with the
//! client id, address, protocol and reason (the MQTT 5 reason code when one was sent), and a
//! limiter so that a repetition (two clients with the same id taking the session from each other
//! in a loop, a client reconnecting in a tight loop, a mass disconnect) cannot flood the log: at
//! most [`PER_CLIENT`] events per client id per [`WINDOW`], and [`GLOBAL_PER_SEC`] in all per
//! second; what is held back is counted and summarised in one line when the window ends.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tern_codec::{Packet, ProtocolVersion};
use tern_core::{Action, Broker, CloseReason, ConnId};

/// Events logged per client id per window.
pub const PER_CLIENT: u32 = 5;
/// The per-client window.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Events logged per second over all clients.
pub const GLOBAL_PER_SEC: u32 = 200;

/// A stable, lower-case name of a close reason (log field and metrics label).
pub fn reason_name(r: CloseReason) -> &'static str {
    match r {
        CloseReason::ClientDisconnect => "client_disconnect",
        CloseReason::ConnectRefused => "connect_refused",
        CloseReason::ProtocolError => "protocol_error",
        CloseReason::TakenOver => "taken_over",
        CloseReason::KeepAliveTimeout => "keep_alive_timeout",
        CloseReason::Shutdown => "shutdown",
        CloseReason::ConnectionLost => "connection_lost",
        CloseReason::AdminAction => "admin_action",
    }
}

struct Pending {
    client_id: String,
    protocol: ProtocolVersion,
    keep_alive: u16,
    clean_start: bool,
}

struct Live {
    client_id: String,
    peer: Option<SocketAddr>,
    protocol: ProtocolVersion,
    since: Instant,
    /// Reason code of the client's DISCONNECT, if it sent one.
    client_code: Option<u8>,
}

#[derive(Default)]
struct KeyWindow {
    start: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

/// Rate limiter for repeated log lines: per key and global.
#[derive(Default)]
pub struct Limiter {
    keys: HashMap<String, KeyWindow>,
    global_start: Option<Instant>,
    global_logged: u32,
    global_suppressed: u64,
    /// Lines held back since start.
    pub suppressed_total: u64,
}

impl Limiter {
    /// True when a line about `key` may be logged at `now`.
    pub fn allow(&mut self, key: &str, now: Instant) -> bool {
        if self
            .global_start
            .is_none_or(|s| now.saturating_duration_since(s) >= Duration::from_secs(1))
        {
            self.global_start = Some(now);
            self.global_logged = 0;
        }
        let w = match self.keys.get_mut(key) {
            Some(w) => w,
            None => self.keys.entry(key.to_string()).or_default(),
        };
        if w.start
            .is_none_or(|s| now.saturating_duration_since(s) >= WINDOW)
        {
            if w.suppressed > 0 {
                report_suppressed(key, w.suppressed);
            }
            *w = KeyWindow {
                start: Some(now),
                ..KeyWindow::default()
            };
        }
        if w.logged >= PER_CLIENT || self.global_logged >= GLOBAL_PER_SEC {
            w.suppressed += 1;
            if w.logged < PER_CLIENT {
                // Held back by the global budget, not by this client's repetition.
                self.global_suppressed += 1;
            }
            self.suppressed_total += 1;
            return false;
        }
        w.logged += 1;
        self.global_logged += 1;
        true
    }

    /// Reports and forgets the windows that ended; call it about once a second.
    pub fn flush(&mut self, now: Instant) {
        if self.global_suppressed > 0 {
            tracing::warn!(
                suppressed = self.global_suppressed,
                "connection events not logged: more than {GLOBAL_PER_SEC} per second"
            );
            self.global_suppressed = 0;
        }
        self.keys.retain(|key, w| {
            let ended = w
                .start
                .is_none_or(|s| now.saturating_duration_since(s) >= WINDOW);
            if ended && w.suppressed > 0 {
                report_suppressed(key, w.suppressed);
            }
            !ended
        });
    }
}

fn report_suppressed(client_id: &str, n: u64) {
    tracing::warn!(
        client_id,
        suppressed = n,
        "client {client_id:?}: {n} more connect/disconnect events in {}s not logged (reconnect or takeover loop?)",
        WINDOW.as_secs()
    );
}

/// Follows connections through the actions the driver carries out, and logs their events.
#[derive(Default)]
pub struct EventLog {
    pending: HashMap<ConnId, Pending>,
    live: HashMap<ConnId, Live>,
    sent_code: HashMap<ConnId, u8>,
    pub limiter: Limiter,
    /// Connections closed, by reason.
    pub disconnects: BTreeMap<&'static str, u64>,
}

impl EventLog {
    /// A packet from `conn` is about to be handed to the core. Inlined, so that a PUBLISH costs
    /// the driver a comparison, not a call.
    #[inline]
    pub fn on_packet(&mut self, conn: ConnId, packet: &Packet) {
        if matches!(packet, Packet::Connect(_) | Packet::Disconnect(_)) {
            self.note_packet(conn, packet);
        }
    }

    /// A CONNECT or DISCONNECT from `conn` ([`on_packet`](Self::on_packet)).
    fn note_packet(&mut self, conn: ConnId, packet: &Packet) {
        match packet {
            Packet::Connect(c) => {
                self.pending.insert(
                    conn,
                    Pending {
                        client_id: c.client_id.to_string(),
                        protocol: c.protocol,
                        keep_alive: c.keep_alive,
                        clean_start: c.clean_start,
                    },
                );
            }
            Packet::Disconnect(d) => {
                if let Some(l) = self.live.get_mut(&conn) {
                    l.client_code = Some(d.reason);
                }
            }
            _ => {}
        }
    }

    /// Looks at a batch of actions before the driver carries them out.
    pub fn observe(
        &mut self,
        broker: &Broker,
        actions: &[Action],
        now: Instant,
        peer: &dyn Fn(ConnId) -> Option<SocketAddr>,
    ) {
        for a in actions {
            match a {
                Action::Send(conn, packet) => match &**packet {
                    Packet::ConnAck(ack) => self.connack(broker, *conn, ack.code, now, peer),
                    Packet::Disconnect(d) => {
                        self.sent_code.insert(*conn, d.reason);
                    }
                    _ => {}
                },
                Action::Close(conn, reason) => self.closed(*conn, *reason, now),
                _ => {}
            }
        }
    }

    /// `conn` is gone without the core closing it (end of stream, I/O error).
    pub fn on_lost(&mut self, conn: ConnId, now: Instant) {
        self.pending.remove(&conn);
        if self.live.contains_key(&conn) {
            self.closed(conn, CloseReason::ConnectionLost, now);
        }
        self.sent_code.remove(&conn);
    }

    /// Connections currently known as connected.
    pub fn live_count(&self) -> usize {
        self.live.len()
    }

    fn connack(
        &mut self,
        broker: &Broker,
        conn: ConnId,
        code: u8,
        now: Instant,
        peer: &dyn Fn(ConnId) -> Option<SocketAddr>,
    ) {
        let Some(p) = self.pending.remove(&conn) else {
            return; // re-authentication or an unknown connection
        };
        let addr = peer(conn);
        // With connection events not logged (`--log-level warn` and above), the limiter and
        // the formatting are skipped: they cost an allocation or two per connect.
        let log = tracing::enabled!(tracing::Level::INFO);
        let shown_addr = || addr.map(|a| a.to_string()).unwrap_or_default();
        if code != 0 {
            if log && self.limiter.allow(&p.client_id, now) {
                let shown_addr = shown_addr();
                tracing::info!(
                    event = "connect_refused",
                    conn,
                    client_id = %p.client_id,
                    peer = %shown_addr,
                    protocol = p.protocol.level(),
                    code = format_args!("{code:#04x}"),
                    "connection refused"
                );
            }
            return;
        }
        // The core may have assigned the id (empty client id).
        let client_id = broker
            .conn_client_id(conn)
            .map(str::to_string)
            .unwrap_or(p.client_id);
        if log && self.limiter.allow(&client_id, now) {
            let shown_addr = shown_addr();
            tracing::info!(
                event = "connect",
                conn,
                client_id = %client_id,
                peer = %shown_addr,
                protocol = p.protocol.level(),
                keep_alive = p.keep_alive,
                clean_start = p.clean_start,
                "client connected"
            );
        }
        self.live.insert(
            conn,
            Live {
                client_id,
                peer: addr,
                protocol: p.protocol,
                since: now,
                client_code: None,
            },
        );
    }

    fn closed(&mut self, conn: ConnId, reason: CloseReason, now: Instant) {
        let sent = self.sent_code.remove(&conn);
        self.pending.remove(&conn);
        let Some(l) = self.live.remove(&conn) else {
            return; // never completed CONNECT (refusals are logged at CONNACK)
        };
        let name = reason_name(reason);
        *self.disconnects.entry(name).or_default() += 1;
        if reason == CloseReason::Shutdown {
            tracing::debug!(event = "disconnect", conn, client_id = %l.client_id, reason = name, "client disconnected");
        } else if tracing::enabled!(tracing::Level::INFO) && self.limiter.allow(&l.client_id, now) {
            // The code that describes the end: the one we sent, else the client's own.
            let code = sent.or(l.client_code);
            let shown_code = code.map(|c| format!("{c:#04x}")).unwrap_or_default();
            let shown_addr = l.peer.map(|a| a.to_string()).unwrap_or_default();
            let secs = now.saturating_duration_since(l.since).as_secs();
            tracing::info!(
                event = "disconnect",
                conn,
                client_id = %l.client_id,
                peer = %shown_addr,
                protocol = l.protocol.level(),
                reason = name,
                code = %shown_code,
                connected_secs = secs,
                "client disconnected"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_holds_back_repetition_per_key() {
        let mut l = Limiter::default();
        let t0 = Instant::now();
        let allowed = (0..20).filter(|_| l.allow("loop", t0)).count();
        assert_eq!(allowed as u32, PER_CLIENT);
        assert!(l.allow("other", t0), "another client is not affected");
        assert_eq!(l.suppressed_total, 20 - u64::from(PER_CLIENT));
        l.flush(t0 + WINDOW);
        assert!(l.allow("loop", t0 + WINDOW), "a new window starts");
    }

    #[test]
    fn limiter_has_a_global_budget() {
        let mut l = Limiter::default();
        let t0 = Instant::now();
        let allowed = (0..1000).filter(|i| l.allow(&format!("c{i}"), t0)).count();
        assert_eq!(allowed as u32, GLOBAL_PER_SEC);
        assert!(l.allow("c", t0 + Duration::from_secs(1)));
    }
}
