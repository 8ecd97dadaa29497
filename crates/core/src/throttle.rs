//! Back-pressure on QoS 1/2 publishers through their acknowledgements.
//!
//! The broker acknowledges a PUBLISH once it is routed. A publisher that outruns a subscriber
//! (many publishers into one consumer, or one fast one) would fill that subscriber's queue,
//! and the queue limit would then drop messages the broker has already acknowledged. Instead,
//! when a QoS 1/2 delivery joins the queue of a *connected* subscriber that holds half of
//! `max_queued_messages` (at most 512 messages) or more, the publisher's PUBACK/PUBREC is held
//! back, and so is every later one to that publisher (they must go out in the order of the
//! PUBLISHes, [MQTT-4.6.0-2], [MQTT-4.6.0-3]). A client waits for its acknowledgements when
//! its window is full, so it slows down to the subscriber's pace. The acknowledgements go out,
//! in order, when the queue is down to half of that, when the subscriber disconnects, or after
//! `backpressure_secs` at the latest; after such a timeout the subscriber holds nobody back
//! until its queue has drained (a stuck subscriber must not stall publishers for good: it is
//! back to the newest messages being dropped, as before). "Long" counts messages and bytes:
//! half of `max_queued_messages` (at most 512) or of `max_queued_bytes`; "down" means half as
//! many messages and a quarter of the bytes. The queue is the latency of the messages in it,
//! so its count is capped: at the top of a QoS 1 stream, 5,000 queued (half of the default
//! limit) were a p99 of 8–13 ms.
//!
//! A publisher with more held than twice the larger of our Receive Maximum and `max_inflight`
//! (256 by default) is not waiting for them: an MQTT 3.x client with a large window (MQTT 3 has
//! no Receive Maximum), or one that never waits. Letting it go would let it fill the queue
//! again (a 3.1.1 publisher with 512 in flight had three quarters of what it sent dropped), so
//! the broker stops reading from it instead ([`Action::PauseReading`]): TCP slows it down, and
//! reading resumes when its acknowledgements go out. So are all publishers held for a queue at
//! three quarters of its limit: several of them, each with up to 256 held, could fill it.
//! Not a client that others wait for: it would not read the acknowledgements that drain its
//! own queue. Past 256 held it is let go instead, and a paused client that others come to wait
//! for is read from again (still held until it has more than 256 held; then let go). That is
//! the trade-off for such a client: no stall, but what it sends past that can fill the queue it
//! sends to, and the queue limit drops as it did without back-pressure.
//!
//! Packets read before a pause took effect would still come in; an I/O layer keeps them back
//! until the publisher is resumed ([`Broker::reading_paused`]; tern's driver does), so nothing
//! more of a paused publisher reaches the queues.
//!
//! Bounds: a held acknowledgement takes 4 bytes. With more than 49,152 held on top of the pause
//! threshold the I/O layer neither pauses nor keeps packets back, and the publisher is let go.
//! A QoS 2 publisher's PUBRECs are held like PUBACKs: an MQTT 5 client stops at our Receive
//! Maximum of unreleased packets, an MQTT 3.x one at its own window (3.x has no Receive
//! Maximum, and such a client is never closed for its unreleased packets; their ids bound
//! them). Two clients that publish to each
//! other from handlers that block on the acknowledgement, with both queues long, wait for each
//! other until `backpressure_secs` lets them go.

use crate::action::Action;
use crate::broker::{Broker, ConnId, SessionId};
use crate::config::Config;
use crate::idmap::{IdMap, IdSet};
use std::time::{Duration, Instant};
use tern_codec::{Ack, Packet};

/// Acknowledgements held back, by publisher.
#[derive(Default)]
pub(crate) struct Throttle {
    /// Set while routing one PUBLISH: a connected session whose queue is at the high-water mark
    /// got (or was refused) a QoS 1/2 delivery.
    pub(crate) congested: Option<SessionId>,
    gates: IdMap<ConnId, Gate>,
    /// The publishers waiting for each session.
    waiting: IdMap<SessionId, Vec<ConnId>>,
    /// Connected sessions that held publishers back for `backpressure_secs`: they hold nobody
    /// back again until their queue has drained (or they leave).
    pub(crate) off: IdSet<SessionId>,
}

struct Gate {
    session: SessionId,
    since: Instant,
    acks: Vec<HeldAck>,
    /// Reading from the publisher is paused (it sent on past `max_held`).
    paused: bool,
}

/// A PUBACK or PUBREC without properties (the only kind the broker sends), compactly.
#[derive(Clone, Copy)]
struct HeldAck {
    pubrec: bool,
    reason: u8,
    packet_id: u16,
}

/// More held acknowledgements than this and the client is not waiting for them: it is no
/// longer read from.
fn max_held(config: &Config) -> usize {
    2 * usize::from(config.receive_maximum.max(config.max_inflight))
}

/// What a pause alone cannot stop: packets read before it took effect. tern's I/O layer reads
/// at most 320 KiB ahead of the core (`READ_AHEAD` in its `outbox.rs`, plus one read): 46,811
/// of the smallest QoS 1 PUBLISH (7 bytes). (tern keeps them back, so it never gets near.)
const READ_AHEAD_PACKETS: usize = 48 * 1024;

/// More held than this and the publisher is let go: the I/O layer does not pause.
fn hard_max_held(config: &Config) -> usize {
    max_held(config) + READ_AHEAD_PACKETS
}

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

/// Most queued messages a connected subscriber has before it holds its publishers back,
/// whatever `max_queued_messages` is. The queue is the latency of every message in it: at the
/// top of a 1→1 QoS 1 stream (about 420 k msg/s on one core) half of the default 10,000 made a
/// p99 of 8–13 ms, where 500 made 1.2–1.4 ms at the same throughput (docs/benchmarks.md,
/// twenty-eighth round). 512 queued beyond the in-flight window still keep the subscriber busy
/// while its publishers answer the acknowledgements let go, and a subscriber that pauses for
/// tens of milliseconds at moderate rates still holds nobody back.
const HOLD_AT_MOST: usize = 512;

/// Queued messages from which a connected subscriber holds its publishers back: half of
/// `max_queued_messages`, at most [`HOLD_AT_MOST`].
fn hold_at(config: &Config) -> usize {
    (config.max_queued_messages / 2).clamp(1, HOLD_AT_MOST)
}

/// Whether a connected subscriber's queue is long enough to hold its publishers back:
/// [`hold_at`] messages, or half of the byte limit.
pub(crate) fn congested(config: &Config, queue: &crate::queue::Queue) -> bool {
    queue.len() >= hold_at(config) || queue.bytes() >= (config.max_queued_bytes / 2).max(1)
}

/// Whether its queue is short enough to let them go: half of [`hold_at`] messages, and a
/// quarter of the byte limit.
fn drained(config: &Config, queue: &crate::queue::Queue) -> bool {
    queue.len() <= hold_at(config) / 2 && queue.bytes() <= config.max_queued_bytes / 4
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
            _ => {
                // Not one we hold (none today): whatever is held goes first, to keep the order.
                self.let_go(conn, out);
                return out.push(Action::send(conn, ack));
            }
        };
        let max_held = max_held(&self.config);
        let t = &mut self.throttle;
        if let Some(gate) = t.gates.get_mut(&conn) {
            gate.acks.push(held);
            let (n, paused, sid) = (gate.acks.len(), gate.paused, gate.session);
            if n > hard_max_held(&self.config) {
                self.let_go(conn, out);
            } else if !paused {
                self.maybe_pause(conn, sid, n > max_held, out);
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
                        paused: false,
                    },
                );
                t.waiting.entry(sid).or_default().push(conn);
                self.keep_reading(sid, out);
                self.maybe_pause(conn, sid, false, out);
            }
            _ => out.push(Action::send(conn, ack)),
        }
    }

    /// Publishers now wait for `sid`'s queue: if its client is paused (itself held for another
    /// queue), it is read from again, still held. Paused, it would not read the
    /// acknowledgements that drain its queue, and a publisher that waits for it while holding
    /// it back (request and response) would wait with it until `backpressure_secs`.
    fn keep_reading(&mut self, sid: SessionId, out: &mut Vec<Action>) {
        let Some(conn) = self.sessions.get(&sid).and_then(|s| s.conn) else {
            return;
        };
        if let Some(gate) = self.throttle.gates.get_mut(&conn)
            && gate.paused
        {
            gate.paused = false;
            out.push(Action::ResumeReading(conn));
        }
    }

    /// Stops reading from held publisher `conn` (not paused yet) when it is not waiting for its
    /// acknowledgements (`over`: more than `max_held` held) or `sid`'s queue is at three
    /// quarters. Not a client that others wait for: not read from, it would not read the
    /// acknowledgements that drain its own queue either, and two clients that publish to each
    /// other would wait for each other until `backpressure_secs`; past `max_held` it is let go.
    fn maybe_pause(&mut self, conn: ConnId, sid: SessionId, over: bool, out: &mut Vec<Action>) {
        if !over && !self.nearly_full(sid) {
            return;
        }
        if self.holds_others_back(conn) {
            if over {
                self.let_go(conn, out);
            }
        } else if let Some(gate) = self.throttle.gates.get_mut(&conn) {
            gate.paused = true;
            self.stats.publishers_paused += 1;
            out.push(Action::PauseReading(conn));
        }
    }

    /// Whether `sid`'s queue is at three quarters of a limit: what more publishers held for it
    /// (each up to `max_held`) send could reach the limit, so they are no longer read from.
    fn nearly_full(&self, sid: SessionId) -> bool {
        let c = &self.config;
        self.sessions.get(&sid).is_some_and(|s| {
            s.queue.len() >= (c.max_queued_messages / 4 * 3).max(1)
                || s.queue.bytes() >= (c.max_queued_bytes / 4 * 3).max(1)
        })
    }

    /// After `sid`'s queue shrank or its client left: lets its publishers go when the queue is
    /// down to a quarter of the limit, or the session is no longer connected.
    pub(crate) fn ease_backpressure(&mut self, sid: SessionId, out: &mut Vec<Action>) {
        let t = &mut self.throttle;
        // The usual case, on every acknowledgement a subscriber sends: nothing to ease.
        if t.waiting.is_empty() && t.off.is_empty() {
            return;
        }
        let eased = self
            .sessions
            .get(&sid)
            .is_none_or(|s| !s.online() || drained(&self.config, &s.queue));
        if eased {
            // After a timeout it holds publishers back again once its queue has drained.
            t.off.remove(&sid);
            self.release_publishers(sid, out);
        }
    }

    /// Whether the core has asked to stop reading from `conn` ([`Action::PauseReading`]). An
    /// I/O layer that has more of its packets already read can keep them until
    /// [`Action::ResumeReading`] (tern does), so that nothing more of a paused publisher reaches
    /// the queues meanwhile.
    pub fn reading_paused(&self, conn: ConnId) -> bool {
        !self.throttle.gates.is_empty() && self.throttle.gates.get(&conn).is_some_and(|g| g.paused)
    }

    /// Whether publishers wait for `conn`'s own queue to drain.
    fn holds_others_back(&self, conn: ConnId) -> bool {
        self.conns
            .get(&conn)
            .is_some_and(|c| self.throttle.waiting.contains_key(&c.session))
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
            if let Some(s) = self.sessions.get(&sid) {
                tracing::info!(client_id = %s.client_id, queued = s.queue.len(), "a subscriber held publishers back for limits.backpressure_secs; its queue now drops the newest messages when full");
                self.throttle.off.insert(sid);
            }
            self.stats.backpressure_timeouts += 1;
            self.release_publishers(sid, out);
        }
    }

    /// `conn` is gone: its held acknowledgements go with it.
    pub(crate) fn forget_publisher(&mut self, conn: ConnId) {
        self.remove_gate(conn);
    }

    /// Lets `conn` go now: its held acknowledgements are sent, in order, and it is read from
    /// again.
    fn let_go(&mut self, conn: ConnId, out: &mut Vec<Action>) {
        if let Some(gate) = self.remove_gate(conn) {
            out.extend(
                gate.acks
                    .into_iter()
                    .map(|a| Action::send(conn, a.packet())),
            );
            if gate.paused {
                out.push(Action::ResumeReading(conn));
            }
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
        for conn in self.throttle.waiting.remove(&sid).unwrap_or_default() {
            self.let_go(conn, out);
        }
    }
}
