//! Property tests: the tries must agree with the naive matcher
//! (`tern_topic::matches`) on small alphabets where collisions are common,
//! and insert/remove/retain sequences must keep the counters right and prune
//! every node that no longer leads to an entry.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use tern_topic::{RetainedTrie, SubscriptionTrie, matches};

/// Topic levels: a tiny alphabet with an empty level and a `$` level, so
/// that filters collide and the [MQTT-4.7.2-1] rule is exercised.
fn topic_level() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just("a"), Just("b"), Just("c"), Just(""), Just("$x"),]
}

fn topic() -> impl Strategy<Value = String> {
    prop::collection::vec(topic_level(), 1..5).prop_map(|levels| levels.join("/"))
}

fn filter_level() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        3 => topic_level(),
        2 => Just("+"),
    ]
}

/// Valid plain filters: levels from the alphabet or `+`, optionally
/// followed by a final `#` (`"#"` alone when there are no levels).
fn filter() -> impl Strategy<Value = String> {
    (prop::collection::vec(filter_level(), 0..5), any::<bool>()).prop_map(|(levels, hash)| {
        if levels.is_empty() {
            "#".to_string()
        } else if hash {
            levels.join("/") + "/#"
        } else {
            levels.join("/")
        }
    })
}

/// The number of nodes a fully pruned trie holds: the root plus one per
/// distinct level prefix of the stored paths.
fn expected_nodes<'a>(paths: impl Iterator<Item = Option<&'a str>>) -> usize {
    let mut prefixes = BTreeSet::new();
    for path in paths.flatten() {
        let mut end = 0;
        for level in path.split('/') {
            end += level.len();
            prefixes.insert(&path[..end]);
            end += 1;
        }
    }
    prefixes.len() + 1
}

/// The node path of a filter: without a trailing `#` level.
fn filter_path(filter: &str) -> Option<&str> {
    if filter == "#" {
        None
    } else {
        Some(filter.strip_suffix("/#").unwrap_or(filter))
    }
}

fn sub_matches(trie: &SubscriptionTrie<u8, String>, topic: &str) -> Vec<(String, u8)> {
    let mut got = Vec::new();
    trie.for_each_match(topic, |k, v| got.push((v.clone(), *k)));
    got.sort();
    got
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn subscription_trie_matches_naive(
        subs in prop::collection::vec((filter(), 0u8..4), 0..40),
        topics in prop::collection::vec(topic(), 1..20),
    ) {
        let mut trie = SubscriptionTrie::new();
        let mut model = BTreeSet::new();
        for (f, k) in &subs {
            trie.insert(f, *k, f.clone());
            model.insert((f.clone(), *k));
        }
        prop_assert_eq!(trie.len(), model.len());
        for t in &topics {
            let expected: Vec<(String, u8)> =
                model.iter().filter(|(f, _)| matches(f, t)).cloned().collect();
            prop_assert_eq!(sub_matches(&trie, t), expected, "topic {:?}", t);
            // The count of matching filters: the distinct filters of the expected matches.
            let filters: BTreeSet<&String> = model
                .iter()
                .filter(|(f, _)| matches(f, t))
                .map(|(f, _)| f)
                .collect();
            prop_assert_eq!(trie.for_each_match(t, |_, _| {}), filters.len(), "topic {:?}", t);
        }
    }

    #[test]
    fn retained_trie_matches_naive(
        retained in prop::collection::vec(topic(), 0..40),
        filters in prop::collection::vec(filter(), 1..20),
    ) {
        let mut trie = RetainedTrie::new();
        let mut model = BTreeMap::new();
        for (i, t) in retained.iter().enumerate() {
            trie.insert(t, i);
            model.insert(t.clone(), i);
        }
        prop_assert_eq!(trie.len(), model.len());
        prop_assert_eq!(trie.node_count(), expected_nodes(model.keys().map(|t| Some(t.as_str()))));
        for f in &filters {
            let expected: Vec<(String, usize)> = model
                .iter()
                .filter(|(t, _)| matches(f, t))
                .map(|(t, v)| (t.clone(), *v))
                .collect();
            let mut got = Vec::new();
            trie.for_each_match(f, |t, v| got.push((t.to_string(), *v)));
            got.sort();
            prop_assert_eq!(got, expected, "filter {:?}", f);
        }
    }

    #[test]
    fn subscription_insert_remove_sequences(
        pool in prop::collection::vec(filter(), 1..8),
        ops in prop::collection::vec((any::<bool>(), 0usize..8, 0u8..3, any::<u16>()), 0..120),
        probe in topic(),
    ) {
        let mut trie: SubscriptionTrie<u8, u16> = SubscriptionTrie::new();
        let mut model: BTreeMap<(String, u8), u16> = BTreeMap::new();
        for (insert, i, k, v) in ops {
            let f = &pool[i % pool.len()];
            if insert {
                prop_assert_eq!(trie.insert(f, k, v), model.insert((f.clone(), k), v));
            } else {
                prop_assert_eq!(trie.remove(f, &k), model.remove(&(f.clone(), k)));
            }
            prop_assert_eq!(trie.get(f, &k), model.get(&(f.clone(), k)));
            prop_assert_eq!(trie.len(), model.len());
            prop_assert_eq!(trie.is_empty(), model.is_empty());
            let distinct: BTreeSet<&str> = model.keys().map(|(f, _)| f.as_str()).collect();
            prop_assert_eq!(trie.filter_count(), distinct.len());
            // Pruning is exact: no node without an entry below it.
            prop_assert_eq!(
                trie.node_count(),
                expected_nodes(distinct.iter().map(|f| filter_path(f)))
            );
        }
        let mut got = Vec::new();
        trie.for_each_match(&probe, |k, v| got.push((*k, *v)));
        got.sort();
        let mut expected: Vec<(u8, u16)> = model
            .iter()
            .filter(|((f, _), _)| matches(f, &probe))
            .map(|((_, k), v)| (*k, *v))
            .collect();
        expected.sort();
        prop_assert_eq!(got, expected);
        for (f, k) in model.keys() {
            prop_assert!(trie.remove(f, k).is_some());
        }
        prop_assert_eq!(trie.len(), 0);
        prop_assert_eq!(trie.filter_count(), 0);
        prop_assert_eq!(trie.node_count(), 1, "root must have no children left");
    }

    #[test]
    fn retained_insert_remove_retain_sequences(
        pool in prop::collection::vec(topic(), 1..10),
        ops in prop::collection::vec((0u8..5, 0usize..10, any::<u16>()), 0..120),
    ) {
        let mut trie: RetainedTrie<u16> = RetainedTrie::new();
        let mut model: BTreeMap<String, u16> = BTreeMap::new();
        for (op, i, v) in ops {
            let t = &pool[i % pool.len()];
            match op {
                0 | 1 => prop_assert_eq!(trie.insert(t, v), model.insert(t.clone(), v)),
                2 | 3 => prop_assert_eq!(trie.remove(t), model.remove(t)),
                _ => {
                    // Drop values below a threshold, bump the others.
                    trie.retain(|_, x| {
                        *x = x.wrapping_add(1);
                        *x > v
                    });
                    model.retain(|_, x| {
                        *x = x.wrapping_add(1);
                        *x > v
                    });
                }
            }
            prop_assert_eq!(trie.get(t), model.get(t));
            prop_assert_eq!(trie.len(), model.len());
            prop_assert_eq!(
                trie.node_count(),
                expected_nodes(model.keys().map(|t| Some(t.as_str())))
            );
        }
        let mut all = Vec::new();
        trie.for_each_match("#", |t, v| all.push((t.to_string(), *v)));
        all.sort();
        let expected: Vec<(String, u16)> = model
            .iter()
            .filter(|(t, _)| !t.starts_with('$'))
            .map(|(t, v)| (t.clone(), *v))
            .collect();
        prop_assert_eq!(all, expected);
        for t in model.keys() {
            prop_assert!(trie.remove(t).is_some());
        }
        prop_assert!(trie.is_empty());
        prop_assert_eq!(trie.node_count(), 1, "root must have no children left");
    }
}
