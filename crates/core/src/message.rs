//! An application message, shared (behind `Arc`) by the retained store, every queue and every
//! delivery, so fan-out never copies the payload.

use crate::broker::SessionId;
use bytes::Bytes;
use std::sync::{Arc, Weak};
use std::time::Instant;
use tern_codec::{ByteStr, Properties, QoS};

/// A published message as the broker keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Broker-wide id, the key of its body in the durable store.
    pub id: u64,
    pub topic: ByteStr,
    pub payload: Bytes,
    /// QoS it was published with.
    pub qos: QoS,
    /// Retain flag it was published with.
    pub retain: bool,
    /// Properties forwarded to subscribers (no topic alias, no subscription identifiers).
    pub properties: Properties,
    /// From Message Expiry Interval; `None` never expires.
    pub expires_at: Option<Instant>,
    /// The session that published it, for No Local; `None` for wills and broker messages.
    pub origin: Option<SessionId>,
    /// The socket read its topic, payload and properties are slices of, as the I/O layer told
    /// the core ([`Broker::handle_packet_from_read`](crate::Broker::handle_packet_from_read));
    /// the default for bytes of their own (copies, wills, restored and broker messages).
    pub read: ReadRef,
    /// Its topic, payload and properties are allocations of its own ([`Message::detached`]
    /// sets it): the broker keeps it as it is. False when they may be slices of a read (or
    /// nobody said: wills, messages read back from disk), so the broker copies before it keeps
    /// it.
    pub own_bytes: bool,
}

/// One socket read whose buffer decoded packets are slices of: while any of them is kept, the
/// whole buffer is. The core charges it to the queues that keep such messages (see
/// [`crate::queue::Queue::may_pin`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadRef {
    /// Chosen by the I/O layer, different for each read (wrapping); 0: not a read's slice.
    pub id: u32,
    /// Bytes of the read's buffer.
    pub len: u32,
}

impl Message {
    /// True when the message has expired at `now`.
    pub fn expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }

    /// Bytes it holds: topic, payload and the data of its properties. What a queue's
    /// `max_queued_bytes` counts: a payload alone would let a queue of one-byte payloads with
    /// large user properties hold far more than the limit.
    pub fn size(&self) -> usize {
        self.topic.len() + self.payload.len() + self.properties.data_len()
    }

    /// The same message with its topic, payload and properties in allocations of their own.
    /// Decoded, they are slices of the whole read the PUBLISH came in (up to 64 KiB, shared with
    /// the PUBLISHes around it), and a message kept for long keeps all of that: 16 bytes
    /// retained or queued for an offline session held a 60 KiB read in memory.
    pub fn detached(&self) -> Message {
        Message {
            id: self.id,
            topic: self.topic.detached(),
            payload: Bytes::copy_from_slice(&self.payload),
            qos: self.qos,
            retain: self.retain,
            properties: self.properties.detached(),
            expires_at: self.expires_at,
            origin: self.origin,
            read: ReadRef::default(),
            own_bytes: true,
        }
    }

    /// Whether keeping the message as it is keeps no more than about twice its size: its bytes
    /// are its own, or the read it came in held little else (a device that sends one message
    /// per write). Then a copy would cost a copy and save nothing. Unknown reads do not count.
    pub fn keeps_little_else(&self) -> bool {
        self.own_bytes
            || (self.read.id != 0
                && self.read.len as usize <= 2 * (self.topic.len() + self.payload.len()) + 64)
    }

    /// Remaining expiry interval in whole seconds, rounded up, for the forwarded
    /// Message Expiry Interval ([MQTT-3.3.2-6]).
    pub fn remaining_expiry(&self, now: Instant) -> Option<u32> {
        self.expires_at.map(|t| {
            let left = t.saturating_duration_since(now);
            let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            u32::try_from(secs).unwrap_or(u32::MAX)
        })
    }
}

/// The copies [`Message::detached`] made before the broker kept a message, by message id: a
/// message retained and queued, or queued for many sessions (when it is routed, or when they
/// go offline), is copied once while any copy lives. Only messages kept past the turn are
/// copied; those delivered at once are not.
#[derive(Debug, Default)]
pub(crate) struct Detacher {
    copies: crate::idmap::IdMap<u64, Weak<Message>>,
    /// Entries after the last sweep of dropped copies; the next waits until the map doubles.
    swept: usize,
}

impl Detacher {
    /// `msg` detached from its read buffer: the living copy made for it before, or a new one
    /// (in a spare allocation of `pool`). A message with bytes of its own is its own copy.
    pub(crate) fn detach(
        &mut self,
        msg: &Arc<Message>,
        pool: &mut crate::message_pool::MessagePool,
    ) -> Arc<Message> {
        if msg.keeps_little_else() {
            return msg.clone();
        }
        if let Some(copy) = self.copies.get(&msg.id).and_then(Weak::upgrade) {
            return copy;
        }
        let copy = Self::copy_to_replace(msg, pool);
        // Ids come from one counter and are never reused; 0 only in tests' hand-made messages.
        if msg.id != 0 {
            self.copies.insert(msg.id, Arc::downgrade(&copy));
            if self.copies.len() > 2 * self.swept.max(512) {
                self.copies.retain(|_, c| c.strong_count() > 0);
                self.swept = self.copies.len();
            }
        }
        copy
    }

    /// `msg` detached for a caller that replaces its only reference with the copy (a message
    /// being retained, before it is routed): nobody will ask for this message's copy by id,
    /// so none is recorded (recording one per retained PUBLISH was a fifth of its cost).
    pub(crate) fn copy_to_replace(
        msg: &Arc<Message>,
        pool: &mut crate::message_pool::MessagePool,
    ) -> Arc<Message> {
        if msg.keeps_little_else() {
            return msg.clone();
        }
        pool.share(msg.detached())
    }
}
