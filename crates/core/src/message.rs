//! An application message, shared (behind `Arc`) by the retained store, every queue and every
//! delivery, so fan-out never copies the payload.

use crate::broker::SessionId;
use bytes::Bytes;
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
