//! The retained-message trie: topic name -> value, looked up by topic filter
//! when a client subscribes.
//!
//! One node per topic level, children keyed by the level string (a short
//! vector, or a hash map past eight: `children`). A node holding a value
//! also stores the full topic name, so a match reports it without rebuilding
//! it from the path. Matching uses an explicit stack of iterators over
//! children, so `#` over 100,000 retained messages
//! is a plain traversal with memory bounded by the trie depth, and nothing
//! recurses (topics can have 65,535 levels).

use std::fmt;

use crate::children::{self, Children};
use crate::stack::InlineStack;
use crate::validate::{levels, next_separator};

struct Entry<V> {
    topic: Box<str>,
    value: V,
}

struct Node<V> {
    children: Children<Node<V>>,
    entry: Option<Entry<V>>,
}

impl<V> Node<V> {
    fn new() -> Self {
        Self {
            children: Children::default(),
            entry: None,
        }
    }

    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.entry.is_none()
    }

    fn child_or_insert(&mut self, level: &str) -> &mut Self {
        self.children.get_or_insert_with(level, Node::new)
    }
}

/// Drops a subtree without recursion.
fn dismantle<V>(node: Node<V>) {
    let mut current = node;
    let mut pending: Vec<Node<V>> = Vec::new();
    loop {
        let Node { children, entry } = current;
        drop(entry);
        let mut it = children.into_values();
        let next = it.next();
        pending.extend(it);
        match next.or_else(|| pending.pop()) {
            Some(n) => current = n,
            None => break,
        }
    }
}

type ChildIter<'a, V> = children::Iter<'a, Node<V>>;

enum Frame<'a, V> {
    /// Match the filter from byte position `pos` at this node.
    At(&'a Node<V>, usize),
    /// Remaining children of a `+` level; each continues at `pos`.
    Plus(ChildIter<'a, V>, usize, bool),
    /// Remaining children under a `#`: whole subtrees.
    All(ChildIter<'a, V>, bool),
}

/// Whether a child at the root must be skipped under a wildcard
/// [MQTT-4.7.2-1].
#[inline]
fn skipped(skip_dollar: bool, level: &str) -> bool {
    skip_dollar && level.starts_with('$')
}

/// Retained messages: topic name -> value.
///
/// Topic names are expected to be valid (see [`crate::validate_topic_name`]);
/// others are stored literally and do not panic.
pub struct RetainedTrie<V> {
    root: Node<V>,
    len: usize,
}

impl<V> Default for RetainedTrie<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V> Drop for RetainedTrie<V> {
    fn drop(&mut self) {
        dismantle(std::mem::replace(&mut self.root, Node::new()));
    }
}

impl<V> fmt::Debug for RetainedTrie<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetainedTrie")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl<V> RetainedTrie<V> {
    /// An empty trie.
    pub fn new() -> Self {
        Self {
            root: Node::new(),
            len: 0,
        }
    }

    /// Stores `value` for `topic`, returning the previous value.
    pub fn insert(&mut self, topic: &str, value: V) -> Option<V> {
        let mut node = &mut self.root;
        for level in levels(topic) {
            node = node.child_or_insert(level);
        }
        match &mut node.entry {
            Some(entry) => Some(std::mem::replace(&mut entry.value, value)),
            None => {
                node.entry = Some(Entry {
                    topic: topic.into(),
                    value,
                });
                self.len += 1;
                None
            }
        }
    }

    /// Removes the value of `topic`, pruning the nodes left empty.
    pub fn remove(&mut self, topic: &str) -> Option<V> {
        let mut node = &mut self.root;
        for level in levels(topic) {
            node = node.children.get_mut(level)?;
        }
        let entry = node.entry.take()?;
        self.len -= 1;
        if node.is_empty() {
            self.prune(topic);
        }
        Some(entry.value)
    }

    /// Removes the longest chain of empty nodes ending at `topic`'s node, if
    /// that node is empty. Two linear walks, no recursion.
    fn prune(&mut self, topic: &str) {
        // Walk 1: the deepest node on the path that must stay (the root, or
        // a node with a value or a child off the path).
        let mut keep = 0usize;
        let mut depth = 0usize;
        let mut node = &self.root;
        let mut it = levels(topic).peekable();
        while let Some(level) = it.next() {
            match node.children.get(level) {
                Some(child) => node = child,
                None => return,
            }
            depth += 1;
            let path_edge = usize::from(it.peek().is_some());
            if node.entry.is_some() || node.children.len().saturating_sub(path_edge) > 0 {
                keep = depth;
            }
        }
        if keep == depth {
            return;
        }
        // Walk 2: detach the edge below `keep`.
        let mut node = &mut self.root;
        let mut it = levels(topic);
        for level in it.by_ref().take(keep) {
            match node.children.get_mut(level) {
                Some(child) => node = child,
                None => return,
            }
        }
        if let Some(level) = it.next()
            && let Some(subtree) = node.children.remove(level)
        {
            dismantle(subtree);
        }
    }

    /// The value retained for `topic`.
    pub fn get(&self, topic: &str) -> Option<&V> {
        let mut node = &self.root;
        for level in levels(topic) {
            node = node.children.get(level)?;
        }
        node.entry.as_ref().map(|e| &e.value)
    }

    /// Calls `f(topic, value)` for every retained topic matched by the plain
    /// (non-shared) topic `filter`, honouring [MQTT-4.7.2-1]: a filter whose
    /// first level is `+` or `#` does not match topics starting with `$`.
    ///
    /// Visits only the matching branches; `#` visits the whole subtree below
    /// it. Allocates nothing unless more than 16 frames are pending (more
    /// than about 8 wildcard levels).
    pub fn for_each_match<'a, F: FnMut(&'a str, &'a V)>(&'a self, filter: &str, mut f: F) {
        let bytes = filter.as_bytes();
        let end = filter.len() + 1;
        let mut emit = |node: &'a Node<V>| {
            if let Some(e) = &node.entry {
                f(&e.topic, &e.value);
            }
        };
        let mut stack: InlineStack<Frame<'_, V>, 16> = InlineStack::new();
        stack.push(Frame::At(&self.root, 0));
        while let Some(frame) = stack.pop() {
            match frame {
                Frame::At(node, pos) => {
                    if pos >= end {
                        emit(node);
                        continue;
                    }
                    let (level, next) = match next_separator(bytes, pos) {
                        Some(i) => (&filter[pos..i], i + 1),
                        None => (&filter[pos..], end),
                    };
                    // Only the root is visited at position 0.
                    let skip_dollar = pos == 0;
                    if level == "#" && next >= end {
                        // '#' matches the parent level too ("a/#" matches "a").
                        emit(node);
                        if !node.children.is_empty() {
                            stack.push(Frame::All(node.children.iter(), skip_dollar));
                        }
                    } else if level == "+" {
                        if !node.children.is_empty() {
                            stack.push(Frame::Plus(node.children.iter(), next, skip_dollar));
                        }
                    } else if let Some(child) = node.children.get(level) {
                        stack.push(Frame::At(child, next));
                    }
                }
                Frame::Plus(mut children, next, skip_dollar) => {
                    if let Some((_, child)) = children.find(|(k, _)| !skipped(skip_dollar, k)) {
                        stack.push(Frame::Plus(children, next, skip_dollar));
                        stack.push(Frame::At(child, next));
                    }
                }
                Frame::All(mut children, skip_dollar) => {
                    if let Some((_, child)) = children.find(|(k, _)| !skipped(skip_dollar, k)) {
                        stack.push(Frame::All(children, skip_dollar));
                        emit(child);
                        if !child.children.is_empty() {
                            stack.push(Frame::All(child.children.iter(), false));
                        }
                    }
                }
            }
        }
    }

    /// Visits every retained entry, `$` topics included (for snapshots and listings). The
    /// topics and values are lent for as long as the trie is (a listing keeps some).
    pub fn for_each<'a, F: FnMut(&'a str, &'a V)>(&'a self, mut f: F) {
        let mut stack: Vec<&'a Node<V>> = vec![&self.root];
        while let Some(node) = stack.pop() {
            if let Some(entry) = &node.entry {
                f(&entry.topic, &entry.value);
            }
            stack.extend(node.children.values());
        }
    }

    /// Keeps only the entries for which `f(topic, &mut value)` returns
    /// `true` (e.g. to drop expired messages), pruning the nodes left empty.
    pub fn retain<F: FnMut(&str, &mut V) -> bool>(&mut self, mut f: F) {
        // Pass 1: visit every node (explicit stack), drop rejected values
        // and remember their topics.
        let mut removed: Vec<Box<str>> = Vec::new();
        let mut stack: Vec<&mut Node<V>> = vec![&mut self.root];
        while let Some(node) = stack.pop() {
            if let Some(entry) = &mut node.entry
                && !f(&entry.topic, &mut entry.value)
                && let Some(entry) = node.entry.take()
            {
                removed.push(entry.topic);
            }
            stack.extend(node.children.values_mut());
        }
        self.len -= removed.len();
        // Pass 2: prune along each removed topic's path. A path already cut
        // by an earlier prune is simply not found.
        for topic in &removed {
            self.prune(topic);
        }
    }

    /// Number of retained topics.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is retained.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Removes everything.
    pub fn clear(&mut self) {
        dismantle(std::mem::replace(&mut self.root, Node::new()));
        self.len = 0;
    }

    /// Number of nodes including the root (1 for an empty trie). For tests.
    #[doc(hidden)]
    pub fn node_count(&self) -> usize {
        let mut count = 0;
        let mut stack = vec![&self.root];
        while let Some(node) = stack.pop() {
            count += 1;
            stack.extend(node.children.values());
        }
        count
    }
}

#[cfg(test)]
mod tests {
    use super::RetainedTrie;

    fn matched<V>(t: &RetainedTrie<V>, filter: &str) -> Vec<String> {
        let mut out = Vec::new();
        t.for_each_match(filter, |topic, _| out.push(topic.to_string()));
        out.sort();
        out
    }

    fn trie_of(topics: &[&str]) -> RetainedTrie<String> {
        let mut t = RetainedTrie::new();
        for topic in topics {
            assert_eq!(t.insert(topic, topic.to_string()), None);
        }
        t
    }

    #[test]
    fn for_each_visits_dollar_topics_too() {
        let mut t = RetainedTrie::new();
        t.insert("$SYS/x", 1);
        t.insert("a/b", 2);
        t.insert("a", 3);
        let mut seen = Vec::new();
        t.for_each(|topic, v| seen.push((topic.to_string(), *v)));
        seen.sort();
        assert_eq!(
            seen,
            vec![
                ("$SYS/x".to_string(), 1),
                ("a".to_string(), 3),
                ("a/b".to_string(), 2)
            ]
        );
    }

    #[test]
    fn insert_get_replace_remove() {
        let mut t = RetainedTrie::default();
        assert!(t.is_empty());
        assert_eq!(t.insert("a/b", 1), None);
        assert_eq!(t.insert("a", 2), None);
        assert_eq!(t.insert("a/b", 3), Some(1));
        assert_eq!(t.len(), 2);
        assert_eq!(t.get("a/b"), Some(&3));
        assert_eq!(t.get("a"), Some(&2));
        assert_eq!(t.get("a/c"), None);
        assert_eq!(t.get("a/b/c"), None);
        assert_eq!(t.remove("a/b/c"), None);
        assert_eq!(t.remove("a"), Some(2));
        assert_eq!(t.remove("a"), None);
        assert_eq!(t.node_count(), 3);
        assert_eq!(t.remove("a/b"), Some(3));
        assert!(t.is_empty());
        assert_eq!(t.node_count(), 1);
    }

    #[test]
    fn matching_rules() {
        let t = trie_of(&[
            "sport",
            "sport/tennis/player1",
            "sport/tennis/player1/ranking",
            "sport/tennis/player1/score/wimbledon",
            "sport/tennis/player2",
            "/finance",
            "finance",
            "$SYS/monitor/Clients",
            "$SYS",
            "a//b",
        ]);
        // [MQTT-4.7.1-2] '#' includes the parent level
        assert_eq!(
            matched(&t, "sport/tennis/player1/#"),
            [
                "sport/tennis/player1",
                "sport/tennis/player1/ranking",
                "sport/tennis/player1/score/wimbledon"
            ]
        );
        assert_eq!(matched(&t, "sport/#").len(), 5);
        // [MQTT-4.7.1-3]
        assert_eq!(matched(&t, "+/+"), ["/finance"]);
        assert_eq!(matched(&t, "/+"), ["/finance"]);
        assert_eq!(matched(&t, "+"), ["finance", "sport"]);
        assert_eq!(
            matched(&t, "sport/tennis/+"),
            ["sport/tennis/player1", "sport/tennis/player2"]
        );
        assert_eq!(matched(&t, "a/+/b"), ["a//b"]);
        assert_eq!(matched(&t, "a//b"), ["a//b"]);
        // [MQTT-4.7.2-1]
        assert_eq!(matched(&t, "#").len(), 8);
        assert!(!matched(&t, "#").iter().any(|s| s.starts_with('$')));
        assert!(matched(&t, "+/monitor/Clients").is_empty());
        assert_eq!(matched(&t, "$SYS/#"), ["$SYS", "$SYS/monitor/Clients"]);
        assert_eq!(matched(&t, "$SYS/+/Clients"), ["$SYS/monitor/Clients"]);
        assert!(matched(&t, "nothing/#").is_empty());
        assert!(matched(&t, "sport/tennis").is_empty());
    }

    #[test]
    fn retain_prunes() {
        let mut t = RetainedTrie::new();
        for i in 0..1000u32 {
            t.insert(&format!("a/{i}/x"), i);
            t.insert(&format!("a/{i}"), i);
        }
        t.insert("b", 5);
        t.retain(|_, v| {
            *v += 1;
            *v % 2 == 0
        });
        assert_eq!(t.len(), 1001);
        assert_eq!(t.get("a/1/x"), Some(&2));
        assert_eq!(t.get("a/2"), None);
        assert_eq!(t.get("b"), Some(&6));
        t.retain(|topic, _| topic.starts_with('b'));
        assert_eq!(t.len(), 1);
        assert_eq!(t.node_count(), 2);
        t.retain(|_, _| false);
        assert!(t.is_empty());
        assert_eq!(t.node_count(), 1);
    }

    #[test]
    fn clear_and_debug() {
        let mut t = trie_of(&["a/b", "c"]);
        assert!(format!("{t:?}").contains("len: 2"));
        t.clear();
        assert!(t.is_empty());
        assert_eq!(t.node_count(), 1);
    }

    /// 65,535 levels: no recursion anywhere.
    #[test]
    fn deep_topics_do_not_overflow_the_stack() {
        let topic = "/".repeat(65_535); // 65,536 empty levels
        let levels_65535 = "/".repeat(65_534);
        let mut t = RetainedTrie::new();
        t.insert(&topic, 1);
        t.insert(&levels_65535, 2);
        t.insert("a", 3);
        assert_eq!(t.get(&topic), Some(&1));
        let mut got = Vec::new();
        t.for_each_match("#", |topic, v| got.push((topic.len(), *v)));
        got.sort();
        assert_eq!(got, [(1, 3), (65_534, 2), (65_535, 1)]);
        got.clear();
        let all_plus = "+/".repeat(32_767) + "+"; // 32,768 levels
        t.for_each_match(&all_plus, |topic, v| got.push((topic.len(), *v)));
        assert!(got.is_empty());
        let plus_65535 = "+/".repeat(65_534) + "+";
        t.for_each_match(&plus_65535, |topic, v| got.push((topic.len(), *v)));
        assert_eq!(got, [(65_534, 2)]);
        got.clear();
        t.for_each_match(&(levels_65535.clone() + "/#"), |topic, v| {
            got.push((topic.len(), *v))
        });
        got.sort();
        assert_eq!(got, [(65_534, 2), (65_535, 1)]);
        assert_eq!(t.remove(&levels_65535), Some(2));
        t.retain(|_, v| *v != 3);
        assert_eq!(t.len(), 1);
        let mut t2 = RetainedTrie::new();
        t2.insert(&topic, ());
        drop(t2);
        assert_eq!(t.remove(&topic), Some(1));
        assert_eq!(t.node_count(), 1);
    }
}
