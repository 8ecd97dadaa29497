//! An application message, shared (behind `Arc`) by the retained store, every queue and every
//! delivery, so fan-out never copies the payload.

use crate::broker::SessionId;
use bytes::Bytes;
use std::sync::Arc;
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
}

impl Message {
    /// True when the message has expired at `now`.
    pub fn expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
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
        }
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

/// The last message detached (see [`Message::detached`]) before the broker kept it, by id,
/// with its copy: a message queued for many sessions, or retained and queued, is copied once.
/// Only the messages kept past the turn (retained, queued) are copied; those delivered at once
/// are not.
#[derive(Debug, Default)]
pub(crate) struct Detacher(Option<(u64, Arc<Message>)>);

impl Detacher {
    /// `msg` detached from its read buffer: the copy made for it last time, or a new one (in a
    /// spare allocation of `pool`).
    pub(crate) fn detach(
        &mut self,
        msg: &Arc<Message>,
        pool: &mut crate::message_pool::MessagePool,
    ) -> Arc<Message> {
        if let Some((id, copy)) = &self.0
            && ((*id == msg.id && msg.id != 0) || Arc::ptr_eq(copy, msg))
        {
            return copy.clone();
        }
        let copy = pool.share(msg.detached());
        // Id 0 is not unique (wills): such a copy is not looked up again.
        self.0 = Some((msg.id, copy.clone()));
        copy
    }
}
