//! The retained store: one message per topic in a trie, the bytes they hold, and the limits on
//! both (`max_retained_messages`, `max_retained_bytes`). Without them any client allowed to
//! publish could grow the broker's memory (and its log) without end, one retained topic at a
//! time.

use crate::action::Action;
use crate::broker::Broker;
use crate::message::Message;
use std::sync::Arc;
use tern_topic::RetainedTrie;

/// The retained messages and their size. Reads go to the trie (`Deref`); changes go through
/// here, which keeps the size.
pub(crate) struct Retained {
    trie: RetainedTrie<Arc<Message>>,
    /// Sum of [`Message::size`] over the stored messages.
    bytes: usize,
}

impl Default for Retained {
    fn default() -> Self {
        Self {
            trie: RetainedTrie::new(),
            bytes: 0,
        }
    }
}

impl std::ops::Deref for Retained {
    type Target = RetainedTrie<Arc<Message>>;

    fn deref(&self) -> &Self::Target {
        &self.trie
    }
}

impl Retained {
    /// Stores `msg` for `topic`, returning the message it replaced.
    pub(crate) fn insert(&mut self, topic: &str, msg: Arc<Message>) -> Option<Arc<Message>> {
        self.bytes += msg.size();
        let old = self.trie.insert(topic, msg);
        if let Some(old) = &old {
            self.bytes -= old.size();
        }
        old
    }

    pub(crate) fn remove(&mut self, topic: &str) -> Option<Arc<Message>> {
        let old = self.trie.remove(topic);
        if let Some(old) = &old {
            self.bytes -= old.size();
        }
        old
    }

    /// Keeps the messages for which `keep` is true.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&str, &Arc<Message>) -> bool) {
        let mut freed = 0;
        self.trie.retain(|topic, msg| {
            let kept = keep(topic, msg);
            if !kept {
                freed += msg.size();
            }
            kept
        });
        self.bytes -= freed;
    }

    /// Bytes the stored messages hold (topics, payloads, properties).
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Broker {
    /// Stores `msg` (a non-empty payload) as the retained message of its topic, and has it
    /// written to the durable store. Unless that would take the store past
    /// `max_retained_messages` (a topic not yet retained) or `max_retained_bytes` (a new topic
    /// or a larger message; 0: no limit): then it is not stored, counted and logged, and the
    /// message it would have replaced is deleted too, so that no later subscriber is sent a
    /// value its publisher has superseded. The message is routed either way.
    pub(crate) fn store_retained(&mut self, msg: &Arc<Message>, out: &mut Vec<Action>) {
        let max_messages = self.config.max_retained_messages;
        let max_bytes = self.config.max_retained_bytes;
        let full = max_messages > 0 && self.retained.len() >= max_messages;
        // Stored first (one walk of the trie in the usual case), taken out again if over.
        let old = self.retained.insert(&msg.topic, msg.clone());
        let too_many = full && old.is_none();
        // A replacement that does not grow the store is always taken, even over the limit (a
        // limit lowered since, or a store filled by someone else, must not wipe a topic that
        // is being kept up to date).
        let grows = old.as_ref().is_none_or(|o| msg.size() > o.size());
        let too_big = grows && max_bytes > 0 && self.retained.bytes() > max_bytes;
        if !too_many && !too_big {
            if self.config.persistence {
                out.push(Action::persist(tern_store::Record::Retained(
                    self.persist.stored(msg),
                )));
            }
            return;
        }
        self.retained.remove(&msg.topic);
        let (limit, count) = if too_many {
            self.stats.limit_retained_messages += 1;
            (
                "limits.max_retained_messages",
                self.stats.limit_retained_messages,
            )
        } else {
            self.stats.limit_retained_bytes += 1;
            ("limits.max_retained_bytes", self.stats.limit_retained_bytes)
        };
        // The first time and then at every power of two: a client publishing to new topics
        // past the limit must not turn each into a log line.
        if count.is_power_of_two() {
            tracing::warn!(
                topic = %msg.topic,
                stored = self.retained.len(),
                bytes = self.retained.bytes(),
                refused = count,
                "retained message not stored: {limit} reached"
            );
        }
        if old.is_some() {
            self.persist_retained_deleted(&msg.topic, out);
        }
    }

    /// Has the deletion of `topic`'s retained message written to the durable store.
    pub(crate) fn persist_retained_deleted(&mut self, topic: &str, out: &mut Vec<Action>) {
        if self.config.persistence {
            out.push(Action::persist(tern_store::Record::RetainedDeleted {
                topic: topic.to_string(),
            }));
        }
    }
}
