//! How many retained messages SUBSCRIBEs may be sent: every matching one, unless the client
//! asks for them again faster than any client takes them.
//!
//! Each SUBSCRIBE sends the retained messages its filters match, even for a subscription the
//! client already has ([MQTT-3.8.4-3], and Retain Handling 0 in MQTT 5). Those deliveries
//! bypass the queue limit (a new subscriber asked for all of them), so a client that sent the
//! same small SUBSCRIBE again and again without reading had the broker queue the whole
//! retained store once per packet. A SUBSCRIBE packet sends each retained message once
//! (`handle_subscribe`), and all or none of them, decided once per packet:
//! - a token bucket per session holds the larger of `max_queued_messages` and the number of
//!   retained messages, refilled at that many a second. A packet is served while the bucket is
//!   above minus its size, and costs what it was sent (at most the retained store, so at most
//!   the bucket's size). A client can thus be sent the whole retained store at least twice
//!   at once (at connect, `#` and `$SYS/#` or many filters in many packets), and a client
//!   repeating its SUBSCRIBEs about once a second after that;
//! - a packet with a QoS 1/2 filter is not served while the session's queue holds as many
//!   messages (or bytes) as `max_queued_messages` plus the retained store: a client that does
//!   not acknowledge stops growing its queue there.
//!
//! Refused packets are counted by filter (`Stats::dropped_retained`) and logged once per run of
//! refusals. QoS 0 deliveries that pile up in the outbox of a client that does not read are
//! bounded by the I/O layer.

use crate::broker::{Broker, SessionId};
use std::time::{Duration, Instant};

/// A session's bucket. Kept only while it is not full: after [`FORGET_AFTER`] untouched it is
/// full again and is dropped (most sessions never have one).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bucket {
    credit: f64,
    at: Instant,
    /// A packet was refused since the last one served (one log line per run of refusals).
    refusing: bool,
}

/// An untouched bucket is full after three seconds: it can be down to almost minus twice its
/// size, and refills at its size a second.
const FORGET_AFTER: Duration = Duration::from_secs(3);

impl Broker {
    /// The bucket's size: the larger of `max_queued_messages` and the retained store.
    fn bucket_size(&self) -> f64 {
        self.config
            .max_queued_messages
            .max(self.retained.len())
            .max(1) as f64
    }

    /// Whether session `sid` may be sent the retained messages of a SUBSCRIBE packet with
    /// `filters` filters that send them (`qos12`: one of them is QoS 1/2). When it may not,
    /// the refusal is counted and logged. Charge what was sent with [`Broker::charge_retained`].
    pub(crate) fn may_send_retained(
        &mut self,
        sid: SessionId,
        filters: usize,
        qos12: bool,
        now: Instant,
    ) -> bool {
        let size = self.bucket_size();
        let queue_full = qos12
            && self.sessions.get(&sid).is_some_and(|s| {
                s.queue.len() >= self.config.max_queued_messages + self.retained.len()
                    || s.queue.bytes() >= self.config.max_queued_bytes + self.retained.bytes()
            });
        let b = self.retained_buckets.entry(sid).or_insert(Bucket {
            credit: size,
            at: now,
            refusing: false,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.credit = (b.credit + elapsed * size).min(size);
        b.at = now;
        if !queue_full && b.credit > -size {
            b.refusing = false;
            return true;
        }
        self.stats.dropped_retained += filters as u64;
        if !b.refusing {
            b.refusing = true;
            let client_id = self.sessions.get(&sid).map(|s| s.client_id.clone());
            tracing::info!(
                client_id = ?client_id.as_deref(),
                filters,
                queue_full,
                "retained messages of a SUBSCRIBE not sent: the client asks for them again faster than it takes them"
            );
        }
        false
    }

    /// Charges session `sid`'s bucket for `sent` retained messages.
    pub(crate) fn charge_retained(&mut self, sid: SessionId, sent: usize) {
        let size = self.bucket_size();
        if let Some(b) = self.retained_buckets.get_mut(&sid) {
            b.credit -= (sent as f64).min(size);
        }
    }

    /// Drops the buckets that are full again (called from the periodic tick).
    pub(crate) fn forget_full_buckets(&mut self, now: Instant) {
        if !self.retained_buckets.is_empty() {
            self.retained_buckets
                .retain(|_, b| now.saturating_duration_since(b.at) < FORGET_AFTER);
        }
    }
}
