//! The subscriptions matched by the last topic routed, kept while the subscription trie is
//! unchanged.
//!
//! A publisher usually sends run after run of messages to the same topic (a sensor, a bench,
//! an event stream), and the I/O layer hands the core each connection's reads as one batch: in
//! fan-in from 100 publishers at 640 k msg/s, six of seven messages had the topic of the one
//! before. For those the trie walk (5-6 % of the broker's time there) becomes a comparison of
//! two short strings. Routing goes through the cached list itself (lent out and given back), so
//! a hit copies nothing. The cache is one entry: nothing to evict, and its memory is one topic
//! and one match list. A miss costs the topic's comparison and copy (about 110 instructions per
//! message when every message has a new topic).
//!
//! The same topic also keeps its level count once a PUBLISH has been validated with it: the
//! topic name check (no wildcards, no U+0000, and the levels counted for
//! `limits.max_topic_levels`) was 15 % of the instructions of a 1→1 PUBLISH in the core.

use crate::session::SubEntry;
use crate::shared::SubKey;
use tern_topic::{SubscriptionTrie, TopicError};

#[derive(Debug, Default)]
pub(crate) struct RouteCache {
    /// The topic last matched (owned: a slice of the publisher's read buffer would keep the
    /// whole buffer alive).
    topic: String,
    /// The trie's generation when `matches` was computed; `None` until then.
    generation: Option<u64>,
    /// Every (key, entry) the trie reported for `topic`, before No Local (which depends on the
    /// publisher); sorted by key when several filters matched, so that a session's entries are
    /// adjacent.
    matches: Vec<(SubKey, SubEntry)>,
    /// Number of filters that matched (see [`SubscriptionTrie::for_each_match`]).
    filters: usize,
    /// While `matches` is lent out by [`RouteCache::take`]: the generation it was computed at.
    lent_at: Option<u64>,
    /// `topic`'s number of levels, once [`RouteCache::topic_levels`] has validated it as a
    /// topic name; cleared whenever `topic` changes. A topic's validity does not depend on
    /// the trie, so the generation does not clear it.
    levels: Option<usize>,
}

impl RouteCache {
    /// The list of matches for `topic` in `trie` (from a walk of the trie unless the cache held
    /// `topic` at the trie's current generation), moved out of the cache with the number of
    /// filters that matched: routing calls into the broker while it goes through the list, and
    /// gives it back with [`RouteCache::put_back`]. Until then the cache is marked empty, so a
    /// route inside that one would walk the trie itself.
    pub(crate) fn take(
        &mut self,
        trie: &SubscriptionTrie<SubKey, SubEntry>,
        topic: &str,
    ) -> (Vec<(SubKey, SubEntry)>, usize) {
        let generation = trie.generation();
        let same_topic = self.topic == topic;
        if self.generation != Some(generation) || !same_topic {
            self.matches.clear();
            let matches = &mut self.matches;
            self.filters = trie.for_each_match(topic, |key, entry| matches.push((*key, *entry)));
            // One filter's keys are distinct already (the usual fan-out: a sort of 100
            // subscribers per message was 5 % of the broker's time).
            if self.filters > 1 {
                self.matches.sort_unstable_by_key(|(key, _)| *key);
            }
            if !same_topic {
                self.topic.clear();
                self.topic.push_str(topic);
                self.levels = None;
            }
            give_back_excess(&mut self.matches);
        }
        // Lent out: `put_back` restores the generation. Only the list moves, not the whole
        // cache (moving that out and back cost more than the lookup).
        self.generation = None;
        self.lent_at = Some(generation);
        (std::mem::take(&mut self.matches), self.filters)
    }

    /// Validates `topic` as a topic name and returns its number of levels, as
    /// [`tern_topic::topic_name_levels`] does, without scanning it again when it is the cached
    /// topic and has been validated before. Only a topic that passed the full check is
    /// remembered, and only while it stays the cached one.
    pub(crate) fn topic_levels(&mut self, topic: &str) -> Result<usize, TopicError> {
        if let Some(levels) = self.levels
            && self.topic == topic
        {
            return Ok(levels);
        }
        let levels = tern_topic::topic_name_levels(topic)?;
        if self.topic == topic {
            self.levels = Some(levels);
        }
        Ok(levels)
    }

    /// Gives back the list [`RouteCache::take`] lent, which is current again for the cache's
    /// topic. If the cache was refilled meanwhile (a route inside the one that took it), the
    /// newer entry stays and the list is dropped.
    pub(crate) fn put_back(&mut self, matches: Vec<(SubKey, SubEntry)>) {
        if let Some(generation) = self.lent_at.take() {
            self.matches = matches;
            self.generation = Some(generation);
        }
    }
}

/// A fan-out to many subscribers can leave a long list kept for reuse (the cache's matches,
/// `route`'s connections); one that is not needed any more is given back, as the trie's own
/// maps are.
pub(crate) fn give_back_excess<T>(list: &mut Vec<T>) {
    if list.capacity() > 1024 && list.len() < list.capacity() / 4 {
        list.shrink_to(list.len().max(64));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_codec::{QoS, SubscriptionOptions};

    fn entry(qos: QoS) -> SubEntry {
        SubEntry {
            options: SubscriptionOptions {
                qos,
                ..Default::default()
            },
            id: None,
        }
    }

    /// The keys `cache` gives for `topic` (and the number of filters), as `route` uses it.
    fn matches(
        cache: &mut RouteCache,
        trie: &SubscriptionTrie<SubKey, SubEntry>,
        topic: &str,
    ) -> (Vec<(SubKey, SubEntry)>, usize) {
        let (list, filters) = cache.take(trie, topic);
        let out = (list.clone(), filters);
        cache.put_back(list);
        out
    }

    fn keys(list: &[(SubKey, SubEntry)]) -> Vec<SubKey> {
        let mut k: Vec<_> = list.iter().map(|(k, _)| *k).collect();
        k.sort();
        k
    }

    /// The sorted keys `cache` gives for `topic`.
    fn keys_for(
        cache: &mut RouteCache,
        trie: &SubscriptionTrie<SubKey, SubEntry>,
        topic: &str,
    ) -> Vec<SubKey> {
        keys(&matches(cache, trie, topic).0)
    }

    #[test]
    fn a_change_to_the_trie_is_seen_at_once() {
        let mut trie = SubscriptionTrie::new();
        let mut cache = RouteCache::default();
        trie.insert("a/#", SubKey::Session(1), entry(QoS::AtMostOnce));
        assert_eq!(keys_for(&mut cache, &trie, "a/b"), [SubKey::Session(1)]);
        // Same topic, new subscription: not the cached list.
        trie.insert("a/b", SubKey::Session(2), entry(QoS::AtMostOnce));
        let (list, filters) = matches(&mut cache, &trie, "a/b");
        assert_eq!(keys(&list), [SubKey::Session(1), SubKey::Session(2)]);
        assert_eq!(filters, 2);
        // A replaced entry (a new QoS for the same filter) is seen too.
        trie.insert("a/b", SubKey::Session(2), entry(QoS::AtLeastOnce));
        let (list, _) = matches(&mut cache, &trie, "a/b");
        let two = list.iter().find(|(k, _)| *k == SubKey::Session(2)).unwrap();
        assert_eq!(two.1.options.qos, QoS::AtLeastOnce);
        trie.remove("a/#", &SubKey::Session(1));
        assert_eq!(keys_for(&mut cache, &trie, "a/b"), [SubKey::Session(2)]);
        trie.clear();
        assert!(matches(&mut cache, &trie, "a/b").0.is_empty());
    }

    #[test]
    fn another_topic_is_walked_again() {
        let mut trie = SubscriptionTrie::new();
        let mut cache = RouteCache::default();
        trie.insert("a/+", SubKey::Session(1), entry(QoS::AtMostOnce));
        trie.insert("a/c", SubKey::Session(2), entry(QoS::AtMostOnce));
        assert_eq!(keys_for(&mut cache, &trie, "a/b"), [SubKey::Session(1)]);
        assert_eq!(
            keys_for(&mut cache, &trie, "a/c"),
            [SubKey::Session(1), SubKey::Session(2)]
        );
        assert_eq!(keys_for(&mut cache, &trie, "a/b"), [SubKey::Session(1)]);
        assert!(matches(&mut cache, &trie, "b").0.is_empty());
        // [MQTT-4.7.2-1] still applies to what is cached: `$` topics do not match `+`.
        assert!(matches(&mut cache, &trie, "$SYS").0.is_empty());
    }

    #[test]
    fn a_sessions_entries_are_adjacent_when_several_filters_match() {
        // [MQTT-3.3.4-2]: routing merges a session's matching subscriptions into one delivery,
        // which needs them side by side in the list.
        let mut trie = SubscriptionTrie::new();
        let mut cache = RouteCache::default();
        trie.insert("a/#", SubKey::Session(2), entry(QoS::AtMostOnce));
        trie.insert("a/b", SubKey::Session(1), entry(QoS::AtMostOnce));
        trie.insert("a/+", SubKey::Session(2), entry(QoS::AtLeastOnce));
        trie.insert("+/b", SubKey::Session(1), entry(QoS::AtMostOnce));
        let (list, filters) = matches(&mut cache, &trie, "a/b");
        assert_eq!(filters, 4);
        let order: Vec<SubKey> = list.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            order,
            [
                SubKey::Session(1),
                SubKey::Session(1),
                SubKey::Session(2),
                SubKey::Session(2)
            ]
        );
        // And so they stay when the list comes from the cache.
        assert_eq!(matches(&mut cache, &trie, "a/b").0, list);
    }

    #[test]
    fn a_topic_is_validated_again_unless_it_passed_as_the_cached_one() {
        // [MQTT-4.7.1-1] / [MQTT-4.7.3-1]: the memo must never let a bad name through.
        let trie = SubscriptionTrie::new();
        let mut cache = RouteCache::default();
        assert_eq!(cache.topic_levels("a/b/c"), Ok(3));
        assert_eq!(cache.levels, None, "not the cached topic yet");
        matches(&mut cache, &trie, "a/b/c");
        assert_eq!(cache.topic_levels("a/b/c"), Ok(3));
        assert_eq!(cache.levels, Some(3));
        assert_eq!(cache.topic_levels("a/b/c"), Ok(3));
        // Another topic is checked in full, and a bad one is refused even when it is cached.
        assert_eq!(cache.topic_levels("a/+"), Err(TopicError::WildcardInName));
        matches(&mut cache, &trie, "a/+");
        assert_eq!(cache.levels, None, "a new topic clears the memo");
        assert_eq!(cache.topic_levels("a/+"), Err(TopicError::WildcardInName));
        assert_eq!(cache.levels, None);
        assert_eq!(cache.topic_levels(""), Err(TopicError::Empty));
        // A change to the trie does not make a name invalid.
        matches(&mut cache, &trie, "x");
        assert_eq!(cache.topic_levels("x"), Ok(1));
        let mut trie = trie;
        trie.insert("x", SubKey::Session(1), entry(QoS::AtMostOnce));
        matches(&mut cache, &trie, "x");
        assert_eq!(cache.levels, Some(1));
    }

    /// A kept list is given back only when it is long and mostly empty, and keeps room for
    /// what it holds (at least 64).
    #[test]
    fn a_long_list_mostly_empty_is_given_back() {
        let mut list: Vec<u64> = Vec::with_capacity(4096);
        list.extend(0..2000);
        give_back_excess(&mut list);
        assert!(list.capacity() >= 4096, "half full: kept");
        list.truncate(10);
        give_back_excess(&mut list);
        assert!(
            list.capacity() >= 64 && list.capacity() < 1024,
            "{}",
            list.capacity()
        );
        assert_eq!(list, (0..10).collect::<Vec<_>>());
        let mut small: Vec<u64> = Vec::with_capacity(1000);
        give_back_excess(&mut small);
        assert!(small.capacity() >= 1000, "short lists are kept as they are");
    }
}
