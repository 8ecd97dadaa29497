//! Back-pressure on QoS 1/2 publishers through their acknowledgements.
//!
//! The broker acknowledges a PUBLISH once it is routed. A publisher that outruns a subscriber
//! (many publishers into one consumer, or one fast one) would fill that subscriber's queue,
//! and the queue limit would then drop messages the broker has already acknowledged. Instead,
//! when a QoS 1/2 delivery joins the queue of a *connected* subscriber that holds half of
//! `max_queued_messages` or more, the publisher's PUBACK/PUBREC is held back, and so is every
//! later one to that publisher (they must go out in the order of the PUBLISHes,
//! [MQTT-4.6.0-2], [MQTT-4.6.0-3]). A client waits for its acknowledgements when its window is
//! full, so it slows down to the subscriber's pace. The acknowledgements go out, in order, when
//! the queue is down to a quarter, when the subscriber disconnects, or after
//! `backpressure_secs` at the latest; after such a timeout the subscriber holds nobody back
//! until its queue has drained (a stuck subscriber must not stall publishers for good: it is
//! back to the newest messages being dropped, as before). A held acknowledgement takes 4 bytes,
//! and a publisher with 65,535 of them (every packet id) cannot be waiting for any: it is let go.

use crate::action::Action;
use crate::broker::{Broker, ConnId, SessionId};
use crate::config::Config;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tern_codec::{Ack, Packet};

/// Acknowledgements held back, by publisher.
#[derive(Default)]
pub(crate) struct Throttle {
    /// Set while routing one PUBLISH: a connected session whose queue is at the high-water mark
    /// got (or was refused) a QoS 1/2 delivery.
    pub(crate) congested: Option<SessionId>,
    gates: HashMap<ConnId, Gate>,
    /// The publishers waiting for each session.
    waiting: HashMap<SessionId, Vec<ConnId>>,
}

struct Gate {
    session: SessionId,
    since: Instant,
    acks: Vec<HeldAck>,
}

/// A PUBACK or PUBREC without properties (the only kind the broker sends), compactly.
#[derive(Clone, Copy)]
struct HeldAck {
    pubrec: bool,
    reason: u8,
    packet_id: u16,
}

/// More held acknowledgements than packet ids: the client is not waiting for them.
const MAX_HELD: usize = u16::MAX as usize;

impl HeldAck {
    fn packet(self) -> Packet {
        let mut a = Ack::new(self.packet_id);
        a.reason = self.reason;
        if self.pubrec {
            Packet::PubRec(a)
        } else {
            Packet::PubAck(a)
        }
    }
}

/// Queue length from which a connected subscriber holds its publishers back.
pub(crate) fn high_water(config: &Config) -> usize {
    (config.max_queued_messages / 2).max(1)
}

impl Broker {
    /// Sends (or holds back) the PUBACK/PUBREC for a PUBLISH that `conn` sent.
    pub(crate) fn ack_publish(
        &mut self,
        conn: ConnId,
        ack: Packet,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let congested = self.throttle.congested.take();
        let held = match &ack {
            Packet::PubAck(a) | Packet::PubRec(a) if a.properties.is_empty() => HeldAck {
                pubrec: matches!(ack, Packet::PubRec(_)),
                reason: a.reason,
                packet_id: a.packet_id,
            },
            _ => return out.push(Action::send(conn, ack)),
        };
        let t = &mut self.throttle;
        if let Some(gate) = t.gates.get_mut(&conn) {
            gate.acks.push(held);
            if gate.acks.len() >= MAX_HELD {
                self.let_go(conn, out);
            }
            return;
        }
        match congested {
            Some(sid) if self.config.backpressure_secs > 0 => {
                self.stats.publishers_held += 1;
                t.gates.insert(
                    conn,
                    Gate {
                        session: sid,
                        since: now,
                        acks: vec![held],
                    },
                );
                t.waiting.entry(sid).or_default().push(conn);
            }
            _ => out.push(Action::send(conn, ack)),
        }
    }

    /// After `sid`'s queue shrank or its client left: lets its publishers go when the queue is
    /// down to a quarter of the limit, or the session is no longer connected.
    pub(crate) fn ease_backpressure(&mut self, sid: SessionId, out: &mut Vec<Action>) {
        if self.throttle.waiting.is_empty() {
            return;
        }
        let low = high_water(&self.config) / 2;
        let (drained, online) = match self.sessions.get_mut(&sid) {
            Some(s) => (s.queue.len() <= low, s.online()),
            None => (true, false),
        };
        if let Some(s) = self.sessions.get_mut(&sid)
            && drained
        {
            s.backpressure_off = false;
        }
        if drained || !online {
            self.release_publishers(sid, out);
        }
    }

    /// Lets the publishers go that waited longer than `backpressure_secs`; their subscriber holds
    /// nobody back again until its queue has drained.
    pub(crate) fn expire_backpressure(&mut self, now: Instant, out: &mut Vec<Action>) {
        let limit = Duration::from_secs(u64::from(self.config.backpressure_secs));
        let mut stale: Vec<SessionId> = self
            .throttle
            .gates
            .values()
            .filter(|g| now.saturating_duration_since(g.since) >= limit)
            .map(|g| g.session)
            .collect();
        stale.sort_unstable();
        stale.dedup();
        for sid in stale {
            if let Some(s) = self.sessions.get_mut(&sid) {
                if !s.backpressure_off {
                    tracing::info!(client_id = %s.client_id, queued = s.queue.len(), "a subscriber held publishers back for limits.backpressure_secs; its queue now drops the newest messages when full");
                }
                s.backpressure_off = true;
            }
            self.stats.backpressure_timeouts += 1;
            self.release_publishers(sid, out);
        }
    }

    /// `conn` is gone: its held acknowledgements go with it.
    pub(crate) fn forget_publisher(&mut self, conn: ConnId) {
        self.remove_gate(conn);
    }

    /// Lets `conn` go now: its held acknowledgements are sent, in order.
    fn let_go(&mut self, conn: ConnId, out: &mut Vec<Action>) {
        if let Some(gate) = self.remove_gate(conn) {
            out.extend(
                gate.acks
                    .into_iter()
                    .map(|a| Action::send(conn, a.packet())),
            );
        }
    }

    fn remove_gate(&mut self, conn: ConnId) -> Option<Gate> {
        let gate = self.throttle.gates.remove(&conn)?;
        if let Some(list) = self.throttle.waiting.get_mut(&gate.session) {
            list.retain(|c| *c != conn);
            if list.is_empty() {
                self.throttle.waiting.remove(&gate.session);
            }
        }
        Some(gate)
    }

    fn release_publishers(&mut self, sid: SessionId, out: &mut Vec<Action>) {
        let Some(conns) = self.throttle.waiting.remove(&sid) else {
            return;
        };
        for conn in conns {
            if let Some(gate) = self.throttle.gates.remove(&conn) {
                out.extend(
                    gate.acks
                        .into_iter()
                        .map(|a| Action::send(conn, a.packet())),
                );
            }
        }
    }
}
