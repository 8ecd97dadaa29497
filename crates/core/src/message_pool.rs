//! Spare message allocations, reused for the next PUBLISH.
//!
//! Every PUBLISH routed becomes an `Arc<Message>`: one allocation, and one free once its last
//! delivery has been encoded. At 1→1 QoS 0 that pair was about 290 of the broker's 3,400
//! instructions per message, and more of its time (glibc's free lists, on a turn that allocates
//! and frees hundreds of them). The I/O layer hands forwarded messages it is done with to
//! [`Broker::recycle`], which keeps those it gets the last reference to; the next PUBLISH then
//! reuses one. Messages that are not forwarded that way (queued, QoS 1/2, made for one
//! subscriber) are freed as before.

use crate::broker::Broker;
use crate::message::Message;
use std::sync::Arc;

/// Most spare allocations kept (those beyond are freed as before): about 130 bytes each, so
/// at most about 32 KiB held.
const SPARE: usize = 256;

#[derive(Default)]
pub(crate) struct MessagePool {
    /// Allocations nobody else refers to, holding an empty message (so no payload is kept
    /// alive by a spare).
    spare: Vec<Arc<Message>>,
}

impl MessagePool {
    /// `msg` in a shared allocation: a spare one if there is one.
    pub(crate) fn share(&mut self, msg: Message) -> Arc<Message> {
        if let Some(mut arc) = self.spare.pop()
            && let Some(slot) = Arc::get_mut(&mut arc)
        {
            *slot = msg;
            return arc;
        }
        Arc::new(msg)
    }

    /// Keeps `msg`'s allocation if no one else refers to it and there is room, releasing its
    /// topic, payload and properties at once; otherwise just drops this reference.
    fn give_back(&mut self, mut msg: Arc<Message>) {
        if self.spare.len() < SPARE
            && let Some(m) = Arc::get_mut(&mut msg)
        {
            m.topic = Default::default();
            m.payload = Default::default();
            m.properties = Default::default();
            self.spare.push(msg);
        }
    }

    pub(crate) fn spare(&self) -> usize {
        self.spare.len()
    }
}

impl Broker {
    /// Gives back a message the caller holds the last reference to (from an
    /// [`Action::SendDroppable`](crate::Action::SendDroppable) or
    /// [`Action::Fanout`](crate::Action::Fanout) it has carried out), so the next
    /// PUBLISH can reuse its allocation. A message still referred to elsewhere (a queue, the
    /// retained store, another delivery) is simply dropped.
    pub fn recycle(&mut self, msg: Arc<Message>) {
        self.messages.give_back(msg);
    }

    /// Spare message allocations kept. For tests.
    #[doc(hidden)]
    pub fn spare_messages(&self) -> usize {
        self.messages.spare()
    }
}

#[cfg(test)]
mod tests {
    use super::{MessagePool, SPARE};
    use crate::message::Message;
    use bytes::Bytes;
    use std::sync::Arc;
    use tern_codec::{ByteStr, Properties, QoS};

    fn message(payload: &'static [u8]) -> Message {
        Message {
            id: 1,
            topic: ByteStr::from("a/b"),
            payload: Bytes::from(payload.to_vec()),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: Properties::default(),
            expires_at: None,
            origin: None,
            read: Default::default(),
            own_bytes: false,
        }
    }

    #[test]
    fn reuses_an_allocation_given_back_and_keeps_no_payload() {
        let mut pool = MessagePool::default();
        let first = pool.share(message(b"one"));
        let addr = Arc::as_ptr(&first);
        // Still referred to elsewhere: not kept.
        let other = first.clone();
        pool.give_back(first);
        assert_eq!(pool.spare(), 0);
        // The last reference: kept, emptied.
        let payload = other.payload.clone();
        pool.give_back(other);
        assert_eq!(pool.spare(), 1);
        assert!(payload.is_unique(), "the spare must not hold the payload");
        let second = pool.share(message(b"two"));
        assert_eq!(Arc::as_ptr(&second), addr, "the allocation is reused");
        assert_eq!(&second.payload[..], b"two");
        assert_eq!(second.topic, ByteStr::from("a/b"));
        assert_eq!(pool.spare(), 0);
    }

    #[test]
    fn keeps_at_most_spare_allocations() {
        let mut pool = MessagePool::default();
        let all: Vec<_> = (0..SPARE + 10).map(|_| pool.share(message(b"x"))).collect();
        for m in all {
            pool.give_back(m);
        }
        assert_eq!(pool.spare(), SPARE);
    }
}
