//! The subscription trie: topic filter -> many (key, value) pairs, looked up
//! by topic name on the publish path.
//!
//! One node per filter level. A node has its literal children keyed by the
//! level string (a short vector, or a hash map past eight: `children`), a
//! separate `+` child, and two entry maps: the entries of the filter that
//! ends at the node, and those of the filter that is the node's path
//! followed by `/#`. A lookup therefore visits only the
//! branches that can match: its cost grows with the topic depth and the
//! number of matching branches, not with the number of subscriptions.
//!
//! Nothing recurses: insertion and removal walk down a loop, matching uses an
//! explicit stack (inline for the first 32 pending branches), pruning is two
//! linear walks and dropping dismantles the trie with a heap stack.

use std::fmt;
use std::hash::Hash;

use crate::children::Children;
use crate::hash::{Map, maybe_shrink};
use crate::stack::InlineStack;
use crate::validate::next_separator;

struct Node<K, V> {
    /// Literal levels.
    children: Children<Node<K, V>>,
    /// The `+` level.
    plus: Option<Box<Node<K, V>>>,
    /// Entries of the filters ending here; `None` when both maps are empty.
    subs: Option<Box<Subs<K, V>>>,
}

struct Subs<K, V> {
    /// The filter whose last level is this node.
    exact: Map<K, V>,
    /// The filter `{path of this node}/#` (or `#` at the root).
    multi: Map<K, V>,
}

impl<K, V> Node<K, V> {
    fn new() -> Self {
        Self {
            children: Children::default(),
            plus: None,
            subs: None,
        }
    }

    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.plus.is_none() && self.subs.is_none()
    }

    /// Number of outgoing edges (literal children and `+`).
    fn edges(&self) -> usize {
        self.children.len() + usize::from(self.plus.is_some())
    }

    fn child(&self, level: &str) -> Option<&Self> {
        if level == "+" {
            self.plus.as_deref()
        } else {
            self.children.get(level)
        }
    }

    fn child_mut(&mut self, level: &str) -> Option<&mut Self> {
        if level == "+" {
            self.plus.as_deref_mut()
        } else {
            self.children.get_mut(level)
        }
    }

    fn child_or_insert(&mut self, level: &str) -> &mut Self {
        if level == "+" {
            return self.plus.get_or_insert_with(|| Box::new(Node::new()));
        }
        self.children.get_or_insert_with(level, Node::new)
    }

    /// Detaches the edge `level`, returning the subtree.
    fn take_child(&mut self, level: &str) -> Option<Self> {
        if level == "+" {
            self.plus.take().map(|b| *b)
        } else {
            self.children.remove(level)
        }
    }
}

/// Drops a subtree without recursion (a chain can be 65,535 levels deep).
fn dismantle<K, V>(node: Node<K, V>) {
    let mut current = node;
    let mut pending: Vec<Node<K, V>> = Vec::new();
    loop {
        let Node {
            children,
            plus,
            subs,
        } = current;
        drop(subs);
        // Fast path for chains: continue with the single child, no Vec.
        let next = if children.is_empty() {
            plus.map(|b| *b)
        } else {
            pending.extend(plus.map(|b| *b));
            let mut it = children.into_values();
            let first = it.next();
            pending.extend(it);
            first
        };
        match next.or_else(|| pending.pop()) {
            Some(n) => current = n,
            None => break,
        }
    }
}

/// Splits a filter into the path of levels that lead to its node and
/// whether it ends with the multi-level wildcard. `"#"` has an empty path
/// (`None`: zero levels, unlike `Some("")`, which is one empty level).
fn split_filter(filter: &str) -> (Option<&str>, bool) {
    if filter == "#" {
        (None, true)
    } else if let Some(path) = filter.strip_suffix("/#") {
        (Some(path), true)
    } else {
        (Some(filter), false)
    }
}

fn levels(path: Option<&str>) -> impl Iterator<Item = &str> {
    path.into_iter().flat_map(|p| p.split('/'))
}

/// Subscriptions: topic filter -> many (key, value) pairs, e.g. key =
/// session id, value = subscription options.
///
/// Filters are expected to be valid plain filters (see
/// [`crate::validate_topic_filter`]; strip `$share/{group}/` with
/// [`crate::parse_shared`] and keep shared groups apart). Invalid filters do
/// not panic: a `#` that is not the last level is stored as a literal level.
pub struct SubscriptionTrie<K, V> {
    root: Node<K, V>,
    len: usize,
    filters: usize,
    /// Bumped by every change (see [`SubscriptionTrie::generation`]).
    generation: u64,
}

impl<K: Eq + Hash + Clone, V> Default for SubscriptionTrie<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K, V> Drop for SubscriptionTrie<K, V> {
    fn drop(&mut self) {
        dismantle(std::mem::replace(&mut self.root, Node::new()));
    }
}

impl<K, V> fmt::Debug for SubscriptionTrie<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriptionTrie")
            .field("len", &self.len)
            .field("filters", &self.filters)
            .finish_non_exhaustive()
    }
}

impl<K: Eq + Hash + Clone, V> SubscriptionTrie<K, V> {
    /// An empty trie.
    pub fn new() -> Self {
        Self {
            root: Node::new(),
            len: 0,
            filters: 0,
            generation: 0,
        }
    }

    /// A number that changes whenever an entry is added, replaced or removed: a caller that
    /// keeps the result of [`SubscriptionTrie::for_each_match`] for a topic may reuse it while
    /// the generation is the one it was computed at.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Adds `(key, value)` under `filter`. If `filter` already had an entry
    /// for `key`, its value is replaced and the old one returned.
    pub fn insert(&mut self, filter: &str, key: K, value: V) -> Option<V> {
        self.generation += 1;
        let (path, multi) = split_filter(filter);
        let mut node = &mut self.root;
        for level in levels(path) {
            node = node.child_or_insert(level);
        }
        let subs = node.subs.get_or_insert_with(|| {
            Box::new(Subs {
                exact: Map::default(),
                multi: Map::default(),
            })
        });
        let map = if multi {
            &mut subs.multi
        } else {
            &mut subs.exact
        };
        let was_empty = map.is_empty();
        let old = map.insert(key, value);
        if old.is_none() {
            self.len += 1;
            if was_empty {
                self.filters += 1;
            }
        }
        old
    }

    /// Removes the entry of `key` under `filter`, pruning the nodes left
    /// empty. O(filter depth), independent of how many other keys share the
    /// filter.
    pub fn remove(&mut self, filter: &str, key: &K) -> Option<V> {
        // Bumped even if nothing is removed: simpler than tracking every early return.
        self.generation += 1;
        let (path, multi) = split_filter(filter);
        let mut node = &mut self.root;
        for level in levels(path) {
            node = node.child_mut(level)?;
        }
        let subs = node.subs.as_mut()?;
        let map = if multi {
            &mut subs.multi
        } else {
            &mut subs.exact
        };
        let old = map.remove(key)?;
        self.len -= 1;
        if map.is_empty() {
            self.filters -= 1;
        }
        maybe_shrink(map);
        if subs.exact.is_empty() && subs.multi.is_empty() {
            node.subs = None;
        }
        if node.is_empty() {
            self.prune(path);
        }
        Some(old)
    }

    /// Removes the longest chain of empty nodes ending at the node of `path`
    /// (which must be empty). Two linear walks, no recursion.
    fn prune(&mut self, path: Option<&str>) {
        // Walk 1: find the deepest node on the path that must stay: the root,
        // or a node with entries or with an edge off the path.
        let mut keep = 0usize;
        let mut depth = 0usize;
        let mut node = &self.root;
        let mut it = levels(path).peekable();
        while let Some(level) = it.next() {
            match node.child(level) {
                Some(child) => node = child,
                None => return,
            }
            depth += 1;
            let path_edge = usize::from(it.peek().is_some());
            if node.subs.is_some() || node.edges().saturating_sub(path_edge) > 0 {
                keep = depth;
            }
        }
        if keep == depth {
            // The last node is not empty (or the path is the root).
            return;
        }
        // Walk 2: detach the edge below `keep`; everything under it is a
        // chain of empty nodes.
        let mut node = &mut self.root;
        let mut it = levels(path);
        for level in it.by_ref().take(keep) {
            match node.child_mut(level) {
                Some(child) => node = child,
                None => return,
            }
        }
        if let Some(level) = it.next()
            && let Some(subtree) = node.take_child(level)
        {
            dismantle(subtree);
        }
    }

    /// The value of `key` under `filter`.
    pub fn get(&self, filter: &str, key: &K) -> Option<&V> {
        let (path, multi) = split_filter(filter);
        let mut node = &self.root;
        for level in levels(path) {
            node = node.child(level)?;
        }
        let subs = node.subs.as_deref()?;
        if multi {
            subs.multi.get(key)
        } else {
            subs.exact.get(key)
        }
    }

    /// Calls `f` for every (key, value) whose filter matches the topic name
    /// `topic`, honouring [MQTT-4.7.2-1] (`+` or `#` as the first level never
    /// matches a topic starting with `$`).
    ///
    /// A key subscribed through several matching filters is reported once
    /// per filter; deduplication (e.g. highest QoS wins) is up to the caller.
    /// Returns the number of filters that matched: with one (or none), every
    /// key was reported once. Does not allocate unless more than 16 `+`
    /// branches are pending at once.
    pub fn for_each_match<F: FnMut(&K, &V)>(&self, topic: &str, mut f: F) -> usize {
        let bytes = topic.as_bytes();
        // Positions index the start of the next level; `end` means "all
        // levels consumed" (a position equal to `topic.len()` is a real,
        // empty, last level).
        let end = topic.len() + 1;
        let dollar = topic.starts_with('$');
        // The walk follows the literal child down without touching the stack, which only
        // keeps the `+` branches to come back to: most topics never push anything.
        let mut stack: InlineStack<(&Node<K, V>, usize), 16> = InlineStack::new();
        let mut next_node = Some((&self.root, 0));
        // Each filter's entries come from one map, whose keys are distinct.
        let mut filters = 0;
        let mut visit = |m: &Map<K, V>| {
            if !m.is_empty() {
                filters += 1;
                m.iter().for_each(|(k, v)| f(k, v));
            }
        };
        while let Some((node, pos)) = next_node.take().or_else(|| stack.pop()) {
            if pos >= end {
                if let Some(subs) = node.subs.as_deref() {
                    visit(&subs.exact);
                    // '#' also matches its parent level ("a/#" matches "a").
                    visit(&subs.multi);
                }
                continue;
            }
            // [MQTT-4.7.2-1] only the root is visited at position 0.
            let wildcards = !(dollar && pos == 0);
            if wildcards && let Some(subs) = node.subs.as_deref() {
                visit(&subs.multi);
            }
            let (level, next) = match next_separator(bytes, pos) {
                Some(i) => (&topic[pos..i], i + 1),
                None => (&topic[pos..], end),
            };
            if wildcards && let Some(plus) = node.plus.as_deref() {
                stack.push((plus, next));
            }
            next_node = node.children.get(level).map(|child| (child, next));
        }
        filters
    }

    /// Number of (filter, key) entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of distinct filters with at least one entry.
    pub fn filter_count(&self) -> usize {
        self.filters
    }

    /// Removes every entry.
    pub fn clear(&mut self) {
        self.generation += 1;
        dismantle(std::mem::replace(&mut self.root, Node::new()));
        self.len = 0;
        self.filters = 0;
    }

    /// Number of nodes including the root (1 for an empty trie). For tests.
    #[doc(hidden)]
    pub fn node_count(&self) -> usize {
        let mut count = 0;
        let mut stack = vec![&self.root];
        while let Some(node) = stack.pop() {
            count += 1;
            stack.extend(node.children.values());
            stack.extend(node.plus.as_deref());
        }
        count
    }
}

#[cfg(test)]
mod tests {
    use super::SubscriptionTrie;

    fn matched(trie: &SubscriptionTrie<u32, &'static str>, topic: &str) -> Vec<(u32, String)> {
        let mut out = Vec::new();
        trie.for_each_match(topic, |k, v| out.push((*k, v.to_string())));
        out.sort();
        out
    }

    fn trie_of(filters: &[&'static str]) -> SubscriptionTrie<u32, &'static str> {
        let mut t = SubscriptionTrie::new();
        for f in filters {
            t.insert(f, 1, *f);
        }
        t
    }

    fn filters_matching(t: &SubscriptionTrie<u32, &'static str>, topic: &str) -> Vec<String> {
        matched(t, topic).into_iter().map(|(_, f)| f).collect()
    }

    #[test]
    fn insert_get_replace_remove() {
        let mut t: SubscriptionTrie<u32, &str> = SubscriptionTrie::default();
        assert!(t.is_empty());
        assert_eq!(t.insert("a/b", 1, "x"), None);
        assert_eq!(t.insert("a/b", 2, "y"), None);
        assert_eq!(t.insert("a/+", 1, "z"), None);
        assert_eq!(t.insert("a/#", 1, "w"), None);
        assert_eq!((t.len(), t.filter_count()), (4, 3));
        assert_eq!(t.insert("a/b", 1, "x2"), Some("x"));
        assert_eq!((t.len(), t.filter_count()), (4, 3));
        assert_eq!(t.get("a/b", &1), Some(&"x2"));
        assert_eq!(t.get("a/+", &1), Some(&"z"));
        assert_eq!(t.get("a/#", &1), Some(&"w"));
        assert_eq!(t.get("a", &1), None);
        assert_eq!(t.get("a/b", &3), None);
        assert_eq!(t.remove("a/b", &3), None);
        assert_eq!(t.remove("x/y", &1), None);
        assert_eq!(t.remove("a/b", &1), Some("x2"));
        assert_eq!((t.len(), t.filter_count()), (3, 3));
        assert_eq!(t.remove("a/b", &2), Some("y"));
        assert_eq!((t.len(), t.filter_count()), (2, 2));
        assert_eq!(t.remove("a/#", &1), Some("w"));
        assert_eq!(t.remove("a/+", &1), Some("z"));
        assert!(t.is_empty());
        assert_eq!(t.filter_count(), 0);
        assert_eq!(t.node_count(), 1);
    }

    #[test]
    fn multi_level_wildcard() {
        // [MQTT-4.7.1-2]
        let t = trie_of(&["sport/tennis/player1/#", "sport/#", "#"]);
        assert_eq!(
            filters_matching(&t, "sport/tennis/player1"),
            ["#", "sport/#", "sport/tennis/player1/#"]
        );
        assert_eq!(
            filters_matching(&t, "sport/tennis/player1/ranking"),
            ["#", "sport/#", "sport/tennis/player1/#"]
        );
        assert_eq!(
            filters_matching(&t, "sport/tennis/player1/score/wimbledon"),
            ["#", "sport/#", "sport/tennis/player1/#"]
        );
        assert_eq!(filters_matching(&t, "sport"), ["#", "sport/#"]);
        assert_eq!(filters_matching(&t, "sports"), ["#"]);
    }

    #[test]
    fn single_level_wildcard() {
        // [MQTT-4.7.1-3]
        let t = trie_of(&["+/+", "/+", "+", "sport/tennis/+", "sport/+"]);
        assert_eq!(filters_matching(&t, "/finance"), ["+/+", "/+"]);
        assert_eq!(filters_matching(&t, "sport"), ["+"]);
        assert_eq!(filters_matching(&t, "sport/"), ["+/+", "sport/+"]);
        assert_eq!(
            filters_matching(&t, "sport/tennis/player1"),
            ["sport/tennis/+"]
        );
        assert!(filters_matching(&t, "sport/tennis/player1/ranking").is_empty());
    }

    #[test]
    fn dollar_rule() {
        // [MQTT-4.7.2-1]
        let t = trie_of(&[
            "#",
            "+",
            "+/#",
            "+/monitor/Clients",
            "$SYS/#",
            "$SYS/monitor/+",
        ]);
        assert_eq!(filters_matching(&t, "$SYS/x"), ["$SYS/#"]);
        assert_eq!(filters_matching(&t, "$SYS"), ["$SYS/#"]);
        assert_eq!(
            filters_matching(&t, "$SYS/monitor/Clients"),
            ["$SYS/#", "$SYS/monitor/+"]
        );
        assert_eq!(
            filters_matching(&t, "x/monitor/Clients"),
            ["#", "+/#", "+/monitor/Clients"]
        );
        assert_eq!(filters_matching(&t, "a$"), ["#", "+", "+/#"]);
    }

    #[test]
    fn empty_levels() {
        let t = trie_of(&["a//b", "a/+/b", "/", "+/+", "//#"]);
        assert_eq!(filters_matching(&t, "a//b"), ["a/+/b", "a//b"]);
        assert_eq!(filters_matching(&t, "/"), ["+/+", "/", "//#"]); // "//#" includes its parent "/"
        assert_eq!(filters_matching(&t, "//"), ["//#"]);
        assert_eq!(filters_matching(&t, "//x/y"), ["//#"]);
    }

    #[test]
    fn every_key_of_a_filter_is_reported() {
        let mut t = SubscriptionTrie::new();
        for k in 0..1000u32 {
            t.insert("a/+", k, "v");
        }
        t.insert("a/b", 7, "exact");
        let mut n = 0;
        t.for_each_match("a/b", |_, _| n += 1);
        assert_eq!(n, 1001);
        assert_eq!((t.len(), t.filter_count()), (1001, 2));
    }

    #[test]
    fn pruning() {
        let mut t: SubscriptionTrie<u32, ()> = SubscriptionTrie::new();
        t.insert("a/b/c/d", 1, ());
        t.insert("a/b/+/#", 1, ());
        t.insert("a", 1, ());
        assert_eq!(t.node_count(), 6); // root, a, b, c, d, + ("#" lives in +)
        t.remove("a/b/c/d", &1);
        assert_eq!(t.node_count(), 4); // root, a, b, +
        t.remove("a", &1);
        assert_eq!(t.node_count(), 4);
        t.remove("a/b/+/#", &1);
        assert_eq!(t.node_count(), 1);
        // A node that still has entries stays.
        t.insert("x/y", 1, ());
        t.insert("x", 1, ());
        t.remove("x/y", &1);
        assert_eq!(t.node_count(), 2);
        assert_eq!(t.get("x", &1), Some(&()));
    }

    #[test]
    fn many_subscribers_on_one_filter_churn() {
        let mut t: SubscriptionTrie<u32, u32> = SubscriptionTrie::new();
        for k in 0..100_000 {
            t.insert("hot/topic", k, k);
        }
        for k in 0..100_000 {
            assert_eq!(t.remove("hot/topic", &k), Some(k));
        }
        assert!(t.is_empty());
        assert_eq!(t.node_count(), 1);
    }

    #[test]
    fn clear_and_debug() {
        let mut t = trie_of(&["a/b", "#"]);
        assert!(format!("{t:?}").contains("len: 2"));
        t.clear();
        assert!(t.is_empty());
        assert_eq!(t.node_count(), 1);
    }

    #[test]
    fn non_final_hash_is_literal() {
        let t = trie_of(&["a/#/b"]);
        assert!(filters_matching(&t, "a/x/b").is_empty());
        assert!(filters_matching(&t, "a").is_empty());
        assert_eq!(filters_matching(&t, "a/#/b"), ["a/#/b"]);
    }

    /// A 65,535-byte topic of '/' has 65,536 (empty) levels; nothing may
    /// recurse over them: not insertion, matching, removal, nor drop.
    #[test]
    fn deep_topics_do_not_overflow_the_stack() {
        let topic = "/".repeat(65_535);
        let levels_65535 = "/".repeat(65_534); // 65,535 levels
        let all_plus = "+/".repeat(32_767) + "#"; // 32,768 levels
        let mut t: SubscriptionTrie<u32, u32> = SubscriptionTrie::new();
        t.insert(&topic, 1, 1);
        t.insert(&levels_65535, 2, 2);
        t.insert(&(levels_65535.clone() + "/#"), 3, 3);
        t.insert(&all_plus, 4, 4);
        t.insert("#", 5, 5);
        let mut got = Vec::new();
        t.for_each_match(&topic, |k, _| got.push(*k));
        got.sort();
        assert_eq!(got, [1, 3, 4, 5]);
        got.clear();
        t.for_each_match(&levels_65535, |k, _| got.push(*k));
        got.sort();
        assert_eq!(got, [2, 3, 4, 5]);
        assert_eq!(t.remove(&topic, &1), Some(1));
        assert_eq!(t.remove(&all_plus, &4), Some(4));
        assert_eq!(t.len(), 3);
        // Dropping a deep chain (through `clear` and `Drop`).
        let mut t2: SubscriptionTrie<u32, u32> = SubscriptionTrie::new();
        t2.insert(&topic, 1, 1);
        t2.clear();
        t2.insert(&all_plus, 1, 1);
        drop(t2);
        for k in [2, 3, 5] {
            let f = match k {
                2 => levels_65535.clone(),
                3 => levels_65535.clone() + "/#",
                _ => "#".to_string(),
            };
            assert!(t.remove(&f, &k).is_some());
        }
        assert_eq!(t.node_count(), 1);
    }
}
