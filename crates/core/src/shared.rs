//! Shared subscriptions (`$share/{group}/{filter}`, MQTT 5.0 section 4.8.2), for 3.1.1 and 5.0
//! clients alike: each message matching a group's filter goes to one member of the group.
//!
//! A group is one trie entry (key [`SubKey::Shared`]) whatever its size; the members and the
//! choice among them live here.

use crate::broker::{Broker, SessionId};
use crate::config::SharedStrategy;
use crate::session::{Delivery, SubEntry};
use std::collections::HashMap;
use std::time::Instant;
use tern_codec::ByteStr;

/// Identifies a shared group (group name + filter); never reused.
pub type GroupId = u64;

/// Key of a subscription trie entry: a session's own subscription, or a whole shared group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SubKey {
    Session(SessionId),
    Shared(GroupId),
}

/// One shared group. Its members are kept in two lists, by whether their session is online, so
/// that choosing a member never walks past offline ones: a group of workers with persistent
/// sessions and changing client ids collects offline members until their sessions expire
/// (thousands, with one online), and every message would have walked them all.
#[derive(Debug, Default)]
pub(crate) struct SharedGroup {
    /// Members whose session has a connection, in the order they joined or came back, each with
    /// its subscription options.
    pub(crate) online: Vec<(SessionId, SubEntry)>,
    /// Members whose session is offline: one that outlives its connection keeps QoS 1/2
    /// messages for later while no member is online.
    pub(crate) offline: Vec<(SessionId, SubEntry)>,
    /// Round robin position / sticky choice in `online`.
    pub(crate) cursor: usize,
    /// Round robin position in `offline`, for messages kept for later.
    pub(crate) offline_cursor: usize,
}

impl SharedGroup {
    fn list(&mut self, online: bool) -> &mut Vec<(SessionId, SubEntry)> {
        if online {
            &mut self.online
        } else {
            &mut self.offline
        }
    }

    /// Removes `sid` from whichever list holds it; keeps the cursors on the members they point
    /// at (a sticky choice does not move because another member left).
    fn remove(&mut self, sid: SessionId) -> Option<(SubEntry, bool)> {
        let lists = [
            (&mut self.online, &mut self.cursor, true),
            (&mut self.offline, &mut self.offline_cursor, false),
        ];
        for (list, cursor, online) in lists {
            if let Some(i) = list.iter().position(|(s, _)| *s == sid) {
                if i < *cursor {
                    *cursor -= 1;
                }
                return Some((list.remove(i).1, online));
            }
        }
        None
    }

    fn is_empty(&self) -> bool {
        self.online.is_empty() && self.offline.is_empty()
    }
}

/// Every shared group of the broker.
#[derive(Debug, Default)]
pub(crate) struct SharedGroups {
    pub(crate) groups: HashMap<GroupId, SharedGroup>,
    index: HashMap<(ByteStr, ByteStr), GroupId>,
    next: GroupId,
    /// xorshift state for the random strategy; deterministic, as the core must be.
    rng: u64,
}

impl SharedGroups {
    /// Adds or replaces a member (`online`: whether its session has a connection); returns the
    /// group id and whether the group is new (so the caller adds it to the trie).
    pub(crate) fn join(
        &mut self,
        group: &str,
        filter: &str,
        sid: SessionId,
        entry: SubEntry,
        online: bool,
    ) -> (GroupId, bool) {
        let key = (ByteStr::from(group), ByteStr::from(filter));
        if let Some(&gid) = self.index.get(&key) {
            let g = self.groups.get_mut(&gid).expect("indexed group exists");
            let known = g
                .online
                .iter_mut()
                .chain(g.offline.iter_mut())
                .find(|(s, _)| *s == sid);
            match known {
                Some(m) => m.1 = entry,
                None => g.list(online).push((sid, entry)),
            }
            return (gid, false);
        }
        self.next += 1;
        let gid = self.next;
        self.index.insert(key, gid);
        let mut g = SharedGroup::default();
        g.list(online).push((sid, entry));
        self.groups.insert(gid, g);
        (gid, true)
    }

    /// Removes a member; returns the group id, whether the member existed, and whether the
    /// group is now empty (and was removed, so the caller removes it from the trie).
    pub(crate) fn leave(
        &mut self,
        group: &str,
        filter: &str,
        sid: SessionId,
    ) -> Option<(GroupId, bool)> {
        let key = (ByteStr::from(group), ByteStr::from(filter));
        let gid = *self.index.get(&key)?;
        let g = self.groups.get_mut(&gid)?;
        g.remove(sid)?;
        let empty = g.is_empty();
        if empty {
            self.groups.remove(&gid);
            self.index.remove(&key);
        }
        Some((gid, empty))
    }

    /// The session of member `sid` came online or went offline: it moves to the end of the
    /// other list.
    pub(crate) fn set_online(&mut self, group: &str, filter: &str, sid: SessionId, online: bool) {
        let key = (ByteStr::from(group), ByteStr::from(filter));
        let Some(g) = self
            .index
            .get(&key)
            .and_then(|gid| self.groups.get_mut(gid))
        else {
            return;
        };
        if let Some((entry, _)) = g.remove(sid) {
            g.list(online).push((sid, entry));
        }
    }

    fn random(&mut self) -> u64 {
        if self.rng == 0 {
            self.rng = 0x9E37_79B9_7F4A_7C15;
        }
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}

impl Broker {
    /// Chooses the member of `gid` that gets the next message: an online member by the
    /// configured strategy, else (for QoS 1/2) a member whose session outlives its connection,
    /// so the message waits in its queue. `exclude` skips a member (one that just left).
    pub(crate) fn choose_member(
        &mut self,
        gid: GroupId,
        qos_above_0: bool,
        exclude: Option<SessionId>,
    ) -> Option<(SessionId, SubEntry)> {
        let strategy = self.config.shared_strategy;
        let random = match strategy {
            SharedStrategy::Random => Some(self.shared.random()),
            _ => None,
        };
        let sessions = &self.sessions;
        let g = self.shared.groups.get_mut(&gid)?;
        let n = g.online.len();
        let eligible = |sid: &SessionId| Some(*sid) != exclude;
        let start = match random {
            Some(r) if n > 0 => (r % n as u64) as usize,
            _ => g.cursor % n.max(1),
        };
        let pick = match strategy {
            SharedStrategy::LeastInflight => g
                .online
                .iter()
                .enumerate()
                .filter(|(_, (sid, _))| eligible(sid))
                .min_by_key(|(i, (sid, _))| {
                    let load = sessions
                        .get(sid)
                        .map_or(usize::MAX, |s| s.inflight.len() + s.queue.len());
                    // Ties go round robin from the cursor.
                    (load, (i + n - start) % n)
                })
                .map(|(i, _)| i),
            // Without `exclude`, the first one looked at (the walk is for the member leaving).
            _ => (0..n)
                .map(|k| (start + k) % n)
                .find(|&i| eligible(&g.online[i].0)),
        };
        if let Some(pick) = pick {
            debug_assert!(
                sessions.get(&g.online[pick].0).is_some_and(|s| s.online()),
                "an offline member in the online list"
            );
            g.cursor = match strategy {
                SharedStrategy::Sticky => pick,
                _ => pick + 1,
            };
            return Some(g.online[pick]);
        }
        // Nobody online: a persistent member keeps QoS 1/2 messages for later, in turn.
        if !qos_above_0 {
            return None;
        }
        let m = g.offline.len();
        let from = g.offline_cursor % m.max(1);
        let pick = (0..m).map(|k| (from + k) % m).find(|&i| {
            let sid = g.offline[i].0;
            Some(sid) != exclude && sessions.get(&sid).is_some_and(|s| s.expiry_interval > 0)
        })?;
        g.offline_cursor = pick + 1;
        Some(g.offline[pick])
    }

    /// Session `sid` came online or went offline: it moves to the other list of each group it
    /// is a member of.
    pub(crate) fn shared_presence(&mut self, sid: SessionId, online: bool) {
        let Some(session) = self.sessions.get(&sid) else {
            return;
        };
        for filter in session.subscriptions.keys() {
            if let Some(Ok(shared)) = tern_topic::parse_shared(filter) {
                self.shared
                    .set_online(shared.group, shared.filter, sid, online);
            }
        }
    }

    /// Sends a message matched by shared group `gid` to one of its members.
    pub(crate) fn deliver_shared(
        &mut self,
        gid: GroupId,
        mut delivery: Delivery,
        now: Instant,
        out: &mut Vec<crate::Action>,
    ) {
        let max_qos = delivery.qos;
        let Some((sid, entry)) =
            self.choose_member(gid, max_qos > tern_codec::QoS::AtMostOnce, None)
        else {
            self.stats.dropped_no_shared_member += 1;
            return;
        };
        delivery.qos = max_qos.min(entry.options.qos);
        delivery.sub_ids = entry.id.into_iter().collect();
        delivery.shared = Some(gid);
        self.deliver(sid, delivery, now, out);
    }

    /// A member went offline: its unacknowledged and queued shared messages go to other
    /// online members; those nobody else can take stay with it.
    pub(crate) fn redistribute_shared(
        &mut self,
        sid: SessionId,
        now: Instant,
        out: &mut Vec<crate::Action>,
    ) {
        let Some(session) = self.sessions.get_mut(&sid) else {
            return;
        };
        let has_shared = session.queue.iter_memory().any(|d| d.shared.is_some())
            || session.queue.has_paged_shared()
            || session.inflight.iter().any(|f| {
                f.delivery.shared.is_some() && f.state == crate::session::OutState::Published
            });
        if !has_shared {
            return;
        }
        let mut moving = Vec::new();
        session.inflight.retain(|f| {
            let take =
                f.delivery.shared.is_some() && f.state == crate::session::OutState::Published;
            if take {
                moving.push(f.delivery.clone());
            }
            !take
        });
        for d in session.queue.take_all(&mut self.pager) {
            if d.shared.is_some() {
                moving.push(d)
            } else {
                session.queue.push_back(d)
            }
        }
        let mut stay = Vec::new();
        for mut d in moving {
            let gid = d.shared.expect("only shared deliveries move");
            let requested = d.msg.qos;
            match self.choose_member(gid, false, Some(sid)) {
                Some((other, entry)) if self.sessions.get(&other).is_some_and(|s| s.online()) => {
                    if let Some(session) = self.sessions.get(&sid) {
                        self.persist.completed(session, &d, out);
                    }
                    d.seq = 0;
                    d.qos = requested.min(entry.options.qos);
                    d.sub_ids = entry.id.into_iter().collect();
                    self.deliver(other, d, now, out);
                }
                _ => stay.push(d),
            }
        }
        if let Some(session) = self.sessions.get_mut(&sid) {
            for d in stay.into_iter().rev() {
                session.queue.push_front(d);
            }
        }
        self.queued(sid);
    }
}
