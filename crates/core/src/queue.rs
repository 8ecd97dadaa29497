//! A session's queue: deliveries waiting for the in-flight window or for the client to come
//! back. The front and the back live in memory; when the broker's queues together pass their
//! memory budget, the middle is paged out to the spool (`crate::pager`) and read back, a page
//! at a time, when the session gets to it.
//!
//! ```text
//! head (memory) | pages (spool), oldest first | tail (memory)
//! ```
//! Order is the order of `push_back`; `tail` is only used while there are pages, so a queue
//! that never paged out is one `VecDeque`.

use crate::pager::{MemCounter, Pager};
use crate::session::Delivery;
use std::collections::VecDeque;
use tern_store::SpoolPage;

/// A page of deliveries in the spool.
#[derive(Debug, Clone)]
pub(crate) struct Page {
    pub(crate) page: SpoolPage,
    pub(crate) count: usize,
    /// Bytes of its deliveries' messages ([`Message::size`](crate::message::Message::size)).
    pub(crate) bytes: usize,
    /// Payload bytes of its deliveries (what `$SYS/broker/store/messages/bytes` counts).
    pub(crate) payload: usize,
    /// Whether any of them was chosen for a shared subscription group.
    pub(crate) shared: bool,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Queue {
    head: VecDeque<Delivery>,
    pages: VecDeque<Page>,
    tail: VecDeque<Delivery>,
    len: usize,
    /// Bytes of every delivery's message ([`Message::size`](crate::message::Message::size)),
    /// paged out or not.
    bytes: usize,
    /// Estimated memory held by `head` and `tail`.
    mem: usize,
    /// In the pager's list of queues to page out.
    pub(crate) listed: bool,
    counter: MemCounter,
    /// Bytes of the reads the in-memory deliveries' messages are slices of, as charged by
    /// [`Queue::may_pin`] (the sum of their [`Delivery::pin`]).
    pinned: usize,
}

impl Drop for Queue {
    fn drop(&mut self) {
        self.counter.sub(self.mem);
    }
}

impl Queue {
    /// Deliveries queued, in memory and paged out.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes of the messages queued: topic, payload and properties ([`Message::size`](crate::message::Message::size)).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Deliveries held in memory.
    pub fn in_memory(&self) -> usize {
        self.head.len() + self.tail.len()
    }

    /// Deliveries paged out.
    pub fn paged(&self) -> usize {
        self.len - self.in_memory()
    }

    /// Counts this queue's memory in `counter` (the broker's total) from now on.
    pub(crate) fn set_counter(&mut self, counter: &MemCounter) {
        self.counter.sub(self.mem);
        counter.add(self.mem);
        self.counter = counter.clone();
    }

    /// The deliveries in memory, front first (pages in between are not visited).
    pub fn iter_memory(&self) -> impl Iterator<Item = &Delivery> {
        self.head.iter().chain(self.tail.iter())
    }

    /// Deliveries in memory before the pages (all of them while nothing is paged out).
    pub(crate) fn front_len(&self) -> usize {
        self.head.len()
    }

    pub(crate) fn pages(&self) -> impl Iterator<Item = &Page> {
        self.pages.iter()
    }

    /// Payload bytes of the paged-out deliveries.
    pub fn paged_bytes(&self) -> usize {
        self.pages.iter().map(|p| p.payload).sum()
    }

    /// See [`crate::Broker`]'s spool compaction.
    pub(crate) fn relocate_pages(&mut self, pager: &mut Pager) {
        for p in self.pages.iter_mut() {
            pager.relocate(p);
        }
    }

    pub(crate) fn has_paged_shared(&self) -> bool {
        self.pages.iter().any(|p| p.shared)
    }

    /// Bytes of reads charged to the queue (see [`Queue::may_pin`]).
    pub fn pinned(&self) -> usize {
        self.pinned
    }

    /// Whether `d` may join the queue as it is, a slice of the read its message came in, rather
    /// than as a copy. A connected subscriber's queue is not copied into (copying every queued
    /// message cost a queue-bound QoS 1 pair a sixth of its rate), but a slow reader's queue
    /// keeps its messages for long, and each keeps its whole read: 3,000 16-byte messages,
    /// each read with 60 KB of other traffic, held 251 MiB. So the reads are counted: the first
    /// delivery of each run from one read is charged the read's length, and no more is charged
    /// once the reads would pass [`PIN_SLACK`] plus twice the queue's own memory; past that,
    /// deliveries from new reads are copied (the caller's part). Reads full of this queue's
    /// messages (one publisher, or a fan-in) stay well under it; a read that brought one
    /// message for this queue and 60 KB for others is over it at once. Sets `d.pin`.
    pub(crate) fn may_pin(&mut self, d: &mut Delivery) -> bool {
        d.pin = 0;
        let read = d.msg.read;
        if read.id == 0 || self.newest().is_some_and(|n| n.msg.read.id == read.id) {
            // Not a read's slice, or the run of the newest delivery, whose read is charged.
            return true;
        }
        if self.pinned + read.len as usize > PIN_SLACK + 2 * self.mem {
            return false;
        }
        d.pin = read.len;
        true
    }

    /// The delivery pushed last, while it is in memory.
    fn newest(&self) -> Option<&Delivery> {
        match self.tail.back() {
            Some(d) => Some(d),
            None if self.pages.is_empty() => self.head.back(),
            None => None,
        }
    }

    fn add(&mut self, d: &Delivery) {
        let cost = cost(d);
        self.len += 1;
        self.bytes += d.msg.size();
        self.mem += cost;
        self.pinned += d.pin as usize;
        self.counter.add(cost);
    }

    fn remove(&mut self, d: &Delivery) {
        let cost = cost(d);
        self.len -= 1;
        self.bytes = self.bytes.saturating_sub(d.msg.size());
        self.mem -= cost;
        debug_assert!(self.pinned >= d.pin as usize);
        self.pinned = self.pinned.saturating_sub(d.pin as usize);
        self.counter.sub(cost);
    }

    /// Calls `f` on each delivery held in memory (not the paged ones), in place, to replace its
    /// message with a copy of its own: no read is charged to the queue afterwards. `f` must not
    /// change what [`cost`] counts.
    pub(crate) fn detach_memory(&mut self, mut f: impl FnMut(&mut Delivery)) {
        self.head
            .iter_mut()
            .chain(self.tail.iter_mut())
            .for_each(|d| {
                f(d);
                d.pin = 0;
            });
        self.pinned = 0;
    }

    pub(crate) fn push_back(&mut self, d: Delivery) {
        self.add(&d);
        if self.pages.is_empty() {
            self.head.push_back(d);
        } else {
            self.tail.push_back(d);
        }
    }

    pub(crate) fn push_front(&mut self, d: Delivery) {
        self.add(&d);
        self.head.push_front(d);
    }

    /// Takes the first delivery, reading the next page back if the front is empty. A page
    /// that cannot be read is counted as lost by the pager and skipped.
    pub(crate) fn pop_front(&mut self, pager: &mut Pager) -> Option<Delivery> {
        while self.head.is_empty() {
            match self.pages.pop_front() {
                Some(page) => self.page_in(page, pager),
                None if self.tail.is_empty() => return None,
                None => std::mem::swap(&mut self.head, &mut self.tail),
            }
        }
        let d = self.head.pop_front()?;
        self.remove(&d);
        if self.head.is_empty() && self.head.capacity() > 64 {
            // A burst is over: do not keep its buffer for the life of the session.
            self.head = VecDeque::new();
        }
        Some(d)
    }

    fn page_in(&mut self, page: Page, pager: &mut Pager) {
        // The page's deliveries leave the paged count whether or not they come back.
        self.len -= page.count;
        self.bytes = self.bytes.saturating_sub(page.bytes);
        if let Some(deliveries) = pager.read(&page) {
            for d in deliveries {
                self.add(&d);
                self.head.push_back(d);
            }
        }
    }

    /// Reads every page back: the whole queue is in memory afterwards.
    pub(crate) fn page_in_all(&mut self, pager: &mut Pager) {
        if self.pages.is_empty() {
            return;
        }
        let mut rest = std::mem::take(&mut self.head);
        while let Some(page) = self.pages.pop_front() {
            self.page_in(page, pager);
            rest.append(&mut self.head);
        }
        rest.append(&mut self.tail);
        self.head = rest;
    }

    /// Takes every delivery out, in order (pages read back).
    pub(crate) fn take_all(&mut self, pager: &mut Pager) -> VecDeque<Delivery> {
        self.page_in_all(pager);
        let all = std::mem::take(&mut self.head);
        self.counter.sub(self.mem);
        self.len = 0;
        self.bytes = 0;
        self.mem = 0;
        self.pinned = 0;
        all
    }

    /// Pages out every delivery in memory but the first `keep`. Returns how many went out;
    /// on a spool error they stay in memory.
    pub(crate) fn page_out(&mut self, keep: usize, pager: &mut Pager) -> usize {
        let mut moved = 0;
        // The tail goes after the existing pages, merged into the last one while it is small
        // (so a queue paged out a message at a time does not become a page per message).
        if !self.tail.is_empty() {
            let mut batch: Vec<Delivery> = self.tail.drain(..).collect();
            let tail_mem: usize = batch.iter().map(cost).sum();
            let tail_pin: usize = batch.iter().map(|d| d.pin as usize).sum();
            let tail_len = batch.len();
            let mut merged = None;
            if let Some(last) = self.pages.back()
                && pager.worth_merging(last)
                && let Some(mut earlier) = pager.read(last)
            {
                merged = self.pages.pop_back();
                earlier.append(&mut batch);
                batch = earlier;
            }
            match pager.write_all(&batch) {
                Some(pages) => {
                    // The merged page's deliveries are in the new pages: `len` and `bytes`
                    // do not change, only the memory the tail held.
                    self.mem -= tail_mem;
                    self.pinned -= tail_pin;
                    self.counter.sub(tail_mem);
                    moved += tail_len;
                    self.pages.extend(pages);
                }
                None => {
                    if let Some(page) = merged {
                        self.pages.push_back(page);
                    }
                    let from = batch.len() - tail_len;
                    self.tail.extend(batch.drain(from..));
                    return moved;
                }
            }
        }
        if self.head.len() > keep {
            let front: Vec<Delivery> = self.head.drain(keep..).collect();
            match pager.write_all(&front) {
                Some(pages) => {
                    let front_mem: usize = front.iter().map(cost).sum();
                    self.mem -= front_mem;
                    self.pinned -= front.iter().map(|d| d.pin as usize).sum::<usize>();
                    self.counter.sub(front_mem);
                    moved += front.len();
                    for p in pages.into_iter().rev() {
                        self.pages.push_front(p);
                    }
                }
                None => self.head.extend(front),
            }
        }
        // What went out to the spool must not stay behind as spare capacity (for many small
        // queues that would cost more than the deliveries did).
        self.head.shrink_to_fit();
        self.tail.shrink_to_fit();
        moved
    }
}

/// Bytes of reads a queue may keep on top of twice its own memory before what it takes is
/// copied out of its read (see [`Queue::may_pin`]).
pub(crate) const PIN_SLACK: usize = 1 << 20;

/// Estimated memory of one queued delivery: the delivery, its slot, and its message (counted
/// whole for every delivery, though deliveries of one message share it: the estimate errs on
/// the side of paging out early).
pub(crate) fn cost(d: &Delivery) -> usize {
    std::mem::size_of::<Delivery>()
        + d.sub_ids.capacity() * 4
        + std::mem::size_of::<crate::message::Message>()
        + d.msg.size()
        + 32
}
