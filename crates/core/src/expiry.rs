//! The periodic sweep: session expiry, delayed wills, expired retained messages and
//! authentication exchanges left unfinished.

use crate::action::Action;
use crate::broker::{Broker, SessionId};
use std::time::{Duration, Instant};

/// Retained messages are swept for expiry at most this often (expired ones are never sent in
/// the meantime: delivery checks expiry too).
const RETAINED_SWEEP: Duration = Duration::from_secs(60);

impl Broker {
    /// Runs time-based work. Call it about once a second.
    pub fn tick(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.fire_due_wills(now, out);
        self.expire_backpressure(now, out);
        self.expire_pending_auth(now, out);
        self.forget_full_buckets(now);
        let expired: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.conn.is_none() && s.expires_at.is_some_and(|t| t <= now))
            .map(|(sid, _)| *sid)
            .collect();
        for sid in expired {
            self.stats.sessions_expired += 1;
            self.end_session(sid, now, out);
        }
        self.retry_unacknowledged(now, out);
        let due = self
            .last_retained_sweep
            .is_none_or(|t| now.duration_since(t) >= RETAINED_SWEEP);
        if due {
            self.last_retained_sweep = Some(now);
            self.retained.retain(|_, m| !m.expired(now));
            self.compact_spool();
        }
    }

    /// The optional in-session retry for MQTT 3.x clients (`Config::retry_interval`). MQTT 5
    /// forbids re-sending except on reconnect [MQTT-4.4.0-1], so v5 sessions are left alone.
    fn retry_unacknowledged(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.config.retry_interval == 0 {
            return;
        }
        let Some(cutoff) =
            now.checked_sub(Duration::from_secs(u64::from(self.config.retry_interval)))
        else {
            return;
        };
        let due: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| {
                s.online() && !s.version.is_v5() && s.inflight.iter().any(|f| f.sent_at <= cutoff)
            })
            .map(|(sid, _)| *sid)
            .collect();
        for sid in due {
            self.resend_older_than(sid, cutoff, now, out);
        }
    }
}
