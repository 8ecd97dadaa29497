//! The periodic sweep: session expiry, delayed wills and expired retained messages.

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
        let due = self
            .last_retained_sweep
            .is_none_or(|t| now.duration_since(t) >= RETAINED_SWEEP);
        if due {
            self.last_retained_sweep = Some(now);
            self.retained.retain(|_, m| !m.expired(now));
        }
    }
}
