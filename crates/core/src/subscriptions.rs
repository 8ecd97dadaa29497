//! Adding and removing one subscription of a session, plain or shared, keeping the trie, the
//! shared groups and the session's own list in step.

use crate::broker::{Broker, SessionId};
use crate::session::SubEntry;
use crate::shared::SubKey;

/// What adding a subscription did.
pub(crate) enum Added {
    /// A plain subscription; `existed` tells whether it replaced one ([MQTT-3.8.4-3]).
    Plain { existed: bool },
    /// A shared subscription.
    Shared,
}

impl Broker {
    /// Adds (or replaces) `filter` for session `sid`. The filter must have been validated.
    pub(crate) fn add_subscription(
        &mut self,
        sid: SessionId,
        filter: &tern_codec::ByteStr,
        entry: SubEntry,
        out: &mut Vec<crate::Action>,
    ) -> Added {
        let added = match tern_topic::parse_shared(filter) {
            Some(Ok(shared)) => {
                let online = self.sessions.get(&sid).is_some_and(|s| s.online());
                let (gid, new_group) =
                    self.shared
                        .join(shared.group, shared.filter, sid, entry, online);
                if new_group {
                    self.subs.insert(shared.filter, SubKey::Shared(gid), entry);
                }
                Added::Shared
            }
            _ => Added::Plain {
                existed: self
                    .subs
                    .insert(filter, SubKey::Session(sid), entry)
                    .is_some(),
            },
        };
        if let Some(session) = self.sessions.get_mut(&sid) {
            // Detached: the SUBSCRIBE the filter is a slice of may carry up to `max_packet_size`
            // of user properties or other filters, and the session keeps the filter.
            session.subscriptions.insert(filter.detached(), entry);
            self.persist.subscribed(session, filter, &entry, out);
        }
        added
    }

    /// Removes `filter` from session `sid`; true when it existed.
    pub(crate) fn remove_subscription(
        &mut self,
        sid: SessionId,
        filter: &str,
        out: &mut Vec<crate::Action>,
    ) -> bool {
        if let Some(session) = self.sessions.get_mut(&sid)
            && session.subscriptions.remove(filter).is_some()
        {
            self.persist.unsubscribed(session, filter, out);
        }
        match tern_topic::parse_shared(filter) {
            Some(Ok(shared)) => match self.shared.leave(shared.group, shared.filter, sid) {
                Some((gid, empty)) => {
                    if empty {
                        self.subs.remove(shared.filter, &SubKey::Shared(gid));
                    }
                    true
                }
                None => false,
            },
            _ => self.subs.remove(filter, &SubKey::Session(sid)).is_some(),
        }
    }

    /// Total subscriptions, counting each shared group member.
    pub(crate) fn count_subscriptions(&self) -> usize {
        self.sessions.values().map(|s| s.subscriptions.len()).sum()
    }
}
