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

/// One shared group.
#[derive(Debug)]
pub(crate) struct SharedGroup {
    /// Members in the order they joined, each with its subscription options.
    pub(crate) members: Vec<(SessionId, SubEntry)>,
    /// Round robin position / sticky choice.
    pub(crate) cursor: usize,
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
    /// Adds or replaces a member; returns the group id and whether the group is new (so the
    /// caller adds it to the trie).
    pub(crate) fn join(
        &mut self,
        group: &str,
        filter: &str,
        sid: SessionId,
        entry: SubEntry,
    ) -> (GroupId, bool) {
        let key = (ByteStr::from(group), ByteStr::from(filter));
        if let Some(&gid) = self.index.get(&key) {
            let g = self.groups.get_mut(&gid).expect("indexed group exists");
            match g.members.iter_mut().find(|(s, _)| *s == sid) {
                Some(m) => m.1 = entry,
                None => g.members.push((sid, entry)),
            }
            return (gid, false);
        }
        self.next += 1;
        let gid = self.next;
        self.index.insert(key, gid);
        self.groups.insert(
            gid,
            SharedGroup {
                members: vec![(sid, entry)],
                cursor: 0,
            },
        );
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
        let before = g.members.len();
        g.members.retain(|(s, _)| *s != sid);
        if g.members.len() == before {
            return None;
        }
        let empty = g.members.is_empty();
        if empty {
            self.groups.remove(&gid);
            self.index.remove(&key);
        }
        Some((gid, empty))
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
        let n = g.members.len();
        if n == 0 {
            return None;
        }
        let eligible = |sid: &SessionId| {
            Some(*sid) != exclude && sessions.get(sid).is_some_and(|s| s.online())
        };
        let start = match random {
            Some(r) => (r % n as u64) as usize,
            None => g.cursor % n,
        };
        let pick = match strategy {
            SharedStrategy::LeastInflight => g
                .members
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
            _ => (0..n)
                .map(|k| (start + k) % n)
                .find(|&i| eligible(&g.members[i].0)),
        };
        let pick = pick.or_else(|| {
            // Nobody online: a persistent member keeps QoS 1/2 messages for later.
            qos_above_0
                .then(|| {
                    (0..n).map(|k| (start + k) % n).find(|&i| {
                        let sid = g.members[i].0;
                        Some(sid) != exclude
                            && sessions.get(&sid).is_some_and(|s| s.expiry_interval > 0)
                    })
                })
                .flatten()
        })?;
        g.cursor = match strategy {
            SharedStrategy::Sticky => pick,
            _ => pick + 1,
        };
        Some(g.members[pick])
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
