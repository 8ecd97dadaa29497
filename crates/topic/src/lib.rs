//! MQTT topic names, topic filters and the tries used to route messages.
//!
//! Module map:
//!
//! - [`validate`]: [`TopicError`], [`validate_topic_name`] and
//!   [`validate_topic_filter`] (MQTT 3.1.1 section 4.7 and 3.3.2, MQTT 5.0
//!   section 4.8.2 for shared subscriptions).
//! - [`matching`]: [`matches()`], the reference (level by level) matcher of one
//!   filter against one topic name.
//! - [`shared`]: [`SharedFilter`] and [`parse_shared`] for
//!   `$share/{group}/{filter}`.
//! - [`sub_trie`]: [`SubscriptionTrie`], filter -> many (key, value) pairs,
//!   looked up by topic name on the publish path.
//! - [`retained_trie`]: [`RetainedTrie`], topic name -> retained value, looked
//!   up by topic filter on the subscribe path.
//!
//! Private helpers: `children` (a node's children: a short vector, or a keyed
//! map past eight), `hash` (the process-wide keyed hasher of those maps) and
//! `stack` (the small inline stack used for non-recursive traversal).
//!
//! ```
//! use tern_topic::{RetainedTrie, SubscriptionTrie, parse_shared, validate_topic_filter};
//!
//! validate_topic_filter("sport/+/player1/#").unwrap();
//! let shared = parse_shared("$share/g1/sport/#").unwrap().unwrap();
//! assert_eq!((shared.group, shared.filter), ("g1", "sport/#"));
//!
//! let mut subs = SubscriptionTrie::new();
//! subs.insert("sport/#", "session-1", 1u8);
//! subs.insert("+/tennis", "session-2", 0u8);
//! let mut hits = Vec::new();
//! subs.for_each_match("sport/tennis", |session, qos| hits.push((*session, *qos)));
//! hits.sort();
//! assert_eq!(hits, [("session-1", 1), ("session-2", 0)]);
//!
//! let mut retained = RetainedTrie::new();
//! retained.insert("sport/tennis", "payload");
//! retained.insert("$SYS/uptime", "42");
//! let mut topics = Vec::new();
//! retained.for_each_match("#", |topic, _| topics.push(topic.to_owned()));
//! assert_eq!(topics, ["sport/tennis"]); // [MQTT-4.7.2-1]
//! ```
//!
//! None of the tries recurse: insertion, lookup, removal, pruning and drop are
//! iterative, so topics with tens of thousands of levels are safe.

mod children;
mod hash;
pub mod matching;
pub mod retained_trie;
pub mod shared;
mod stack;
pub mod sub_trie;
pub mod validate;

pub use matching::matches;
pub use retained_trie::RetainedTrie;
pub use shared::{SharedFilter, parse_shared};
pub use sub_trie::SubscriptionTrie;
pub use validate::{
    MAX_TOPIC_LEN, TopicError, topic_name_levels, validate_topic_filter, validate_topic_name,
};
