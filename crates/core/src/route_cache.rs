//! The subscriptions matched by the last topic routed, kept while the subscription trie is
//! unchanged.
//!
//! A publisher usually sends run after run of messages to the same topic (a sensor, a bench,
//! an event stream), and the I/O layer hands the core each connection's reads as one batch: in
//! fan-in from 100 publishers at 640 k msg/s, six of seven messages had the topic of the one
//! before. For those the trie walk (5-6 % of the broker's time there) becomes a comparison of
//! two short strings and a copy of the match list. The cache is one entry: no memory to bound,
//! nothing to evict, and a miss costs one copy of the list the walk produced anyway.

use crate::session::SubEntry;
use crate::shared::SubKey;
use tern_topic::SubscriptionTrie;

#[derive(Debug, Default)]
pub(crate) struct RouteCache {
    /// The topic last matched (owned: a slice of the publisher's read buffer would keep the
    /// whole buffer alive).
    topic: String,
    /// The trie's generation when `matches` was computed; `None` until then.
    generation: Option<u64>,
    /// Every (key, entry) the trie reported for `topic`, before No Local (which depends on the
    /// publisher).
    matches: Vec<(SubKey, SubEntry)>,
    /// Number of filters that matched (see [`SubscriptionTrie::for_each_match`]).
    filters: usize,
}

impl RouteCache {
    /// The matches of `topic` in `trie`: from the cache if it holds `topic` at the trie's
    /// current generation, else from a walk of the trie, which then replaces the cache's entry.
    /// Returns the list (before No Local) and the number of filters that matched.
    pub(crate) fn matches(
        &mut self,
        trie: &SubscriptionTrie<SubKey, SubEntry>,
        topic: &str,
    ) -> (&[(SubKey, SubEntry)], usize) {
        let generation = trie.generation();
        if self.generation != Some(generation) || self.topic != topic {
            self.matches.clear();
            let matches = &mut self.matches;
            self.filters = trie.for_each_match(topic, |key, entry| matches.push((*key, *entry)));
            self.topic.clear();
            self.topic.push_str(topic);
            self.generation = Some(generation);
            // A fan-out to many subscribers can leave a long list; one that is not needed any
            // more is given back, as the trie's own maps are.
            if self.matches.capacity() > 1024 && self.matches.len() < self.matches.capacity() / 4 {
                self.matches.shrink_to(self.matches.len().max(64));
            }
        }
        (&self.matches, self.filters)
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

    fn keys(list: &[(SubKey, SubEntry)]) -> Vec<SubKey> {
        let mut k: Vec<_> = list.iter().map(|(k, _)| *k).collect();
        k.sort();
        k
    }

    #[test]
    fn a_change_to_the_trie_is_seen_at_once() {
        let mut trie = SubscriptionTrie::new();
        let mut cache = RouteCache::default();
        trie.insert("a/#", SubKey::Session(1), entry(QoS::AtMostOnce));
        assert_eq!(keys(cache.matches(&trie, "a/b").0), [SubKey::Session(1)]);
        // Same topic, new subscription: not the cached list.
        trie.insert("a/b", SubKey::Session(2), entry(QoS::AtMostOnce));
        let (list, filters) = cache.matches(&trie, "a/b");
        assert_eq!(keys(list), [SubKey::Session(1), SubKey::Session(2)]);
        assert_eq!(filters, 2);
        // A replaced entry (a new QoS for the same filter) is seen too.
        trie.insert("a/b", SubKey::Session(2), entry(QoS::AtLeastOnce));
        let (list, _) = cache.matches(&trie, "a/b");
        let two = list.iter().find(|(k, _)| *k == SubKey::Session(2)).unwrap();
        assert_eq!(two.1.options.qos, QoS::AtLeastOnce);
        trie.remove("a/#", &SubKey::Session(1));
        assert_eq!(keys(cache.matches(&trie, "a/b").0), [SubKey::Session(2)]);
        trie.clear();
        assert!(cache.matches(&trie, "a/b").0.is_empty());
    }

    #[test]
    fn another_topic_is_walked_again() {
        let mut trie = SubscriptionTrie::new();
        let mut cache = RouteCache::default();
        trie.insert("a/+", SubKey::Session(1), entry(QoS::AtMostOnce));
        trie.insert("a/c", SubKey::Session(2), entry(QoS::AtMostOnce));
        assert_eq!(keys(cache.matches(&trie, "a/b").0), [SubKey::Session(1)]);
        assert_eq!(
            keys(cache.matches(&trie, "a/c").0),
            [SubKey::Session(1), SubKey::Session(2)]
        );
        assert_eq!(keys(cache.matches(&trie, "a/b").0), [SubKey::Session(1)]);
        assert!(cache.matches(&trie, "b").0.is_empty());
        // [MQTT-4.7.2-1] still applies to what is cached: `$` topics do not match `+`.
        assert!(cache.matches(&trie, "$SYS").0.is_empty());
    }
}
