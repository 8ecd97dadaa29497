//! Will messages: published when a connection ends without DISCONNECT, after the MQTT 5 Will
//! Delay Interval if there is one, and never if the client comes back in time.

use crate::action::Action;
use crate::broker::{Broker, SessionId};
use crate::message::Message;
use std::time::{Duration, Instant};
use tern_codec::Will;

/// A will waiting for its delay to pass.
#[derive(Debug)]
pub(crate) struct PendingWill {
    pub(crate) session: SessionId,
    pub(crate) due: Instant,
    pub(crate) will: Will,
}

impl Broker {
    /// Publishes `will` now, or schedules it at the earlier of the will delay and the end of the
    /// session (`session_expiry` seconds from now).
    pub(crate) fn schedule_will(
        &mut self,
        sid: SessionId,
        will: Will,
        session_expiry: u32,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let delay = will
            .properties
            .will_delay_interval
            .unwrap_or(0)
            .min(session_expiry);
        if delay == 0 {
            self.publish_will(will, now, out);
        } else {
            let due = now + Duration::from_secs(u64::from(delay));
            if let Some(session) = self.sessions.get(&sid)
                && session.persisted
            {
                let message = tern_store::StoredMessage {
                    id: 0,
                    topic: will.topic.to_string(),
                    payload: will.payload.clone(),
                    qos: will.qos as u8,
                    retain: will.retain,
                    properties: crate::persist::encode_will_properties(&will.properties),
                    expires_at_ms: None,
                };
                let client_id = session.client_id.to_string();
                self.pending_will_clients.insert(sid, client_id.clone());
                out.push(Action::persist(tern_store::Record::PendingWill {
                    client_id,
                    due_at_ms: self.persist.ms(due),
                    message,
                }));
            }
            self.pending_wills.push(PendingWill {
                session: sid,
                due,
                will,
            });
        }
    }

    /// The client reconnected before its will delay passed: drop the will.
    pub(crate) fn cancel_pending_will(&mut self, sid: SessionId, out: &mut Vec<Action>) {
        if self.pending_wills.iter().any(|w| w.session == sid) {
            self.pending_wills.retain(|w| w.session != sid);
            self.pending_will_done(sid, out);
        }
    }

    /// Publishes the pending will of `sid` now, if any (its session ended).
    pub(crate) fn fire_pending_will(
        &mut self,
        sid: SessionId,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        if let Some(i) = self.pending_wills.iter().position(|w| w.session == sid) {
            let pending = self.pending_wills.swap_remove(i);
            self.pending_will_done(sid, out);
            self.publish_will(pending.will, now, out);
        }
    }

    fn pending_will_done(&mut self, sid: SessionId, out: &mut Vec<Action>) {
        if self.config.persistence
            && let Some(client_id) = self.pending_will_clients.remove(&sid)
        {
            out.push(Action::persist(tern_store::Record::PendingWillDone {
                client_id,
            }));
        }
    }

    /// Publishes every will whose delay has passed.
    pub(crate) fn fire_due_wills(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.pending_wills.iter().all(|w| w.due > now) {
            return;
        }
        let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending_wills)
            .into_iter()
            .partition(|w| w.due <= now);
        self.pending_wills = waiting;
        for w in due {
            self.pending_will_done(w.session, out);
            self.publish_will(w.will, now, out);
        }
    }

    /// Publishes a will as an ordinary message from nobody (so No Local does not apply).
    fn publish_will(&mut self, will: Will, now: Instant, out: &mut Vec<Action>) {
        self.stats.wills_published += 1;
        let mut properties = will.properties;
        properties.strip(|v| v.will_delay_interval = None);
        let expires_at = properties
            .message_expiry_interval
            .map(|s| now + Duration::from_secs(u64::from(s)));
        let msg = Message {
            id: self.new_message_id(),
            topic: will.topic,
            payload: will.payload,
            qos: will.qos,
            retain: will.retain,
            properties,
            expires_at,
            origin: None,
            read: Default::default(),
            own_bytes: false,
        };
        let msg = self.messages.share(msg);
        self.publish_message(msg, now, out);
    }
}
