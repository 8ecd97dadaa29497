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
    /// Payload bytes of its deliveries.
    pub(crate) bytes: usize,
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
    /// Payload bytes of every delivery, paged out or not.
    bytes: usize,
    /// Estimated memory held by `head` and `tail`.
    mem: usize,
    /// In the pager's list of queues to page out.
    pub(crate) listed: bool,
    counter: MemCounter,
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

    /// Payload bytes queued.
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
        self.pages.iter().map(|p| p.bytes).sum()
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

    fn add(&mut self, d: &Delivery) {
        let cost = cost(d);
        self.len += 1;
        self.bytes += d.msg.payload.len();
        self.mem += cost;
        self.counter.add(cost);
    }

    fn remove(&mut self, d: &Delivery) {
        let cost = cost(d);
        self.len -= 1;
        self.bytes = self.bytes.saturating_sub(d.msg.payload.len());
        self.mem -= cost;
        self.counter.sub(cost);
    }

    /// Calls `f` on each delivery held in memory (not the paged ones), in place. `f` must not
    /// change what [`cost`] counts.
    pub(crate) fn for_each_memory_mut(&mut self, f: impl FnMut(&mut Delivery)) {
        self.head.iter_mut().chain(self.tail.iter_mut()).for_each(f);
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

/// Estimated memory of one queued delivery: the delivery, its slot, and its message (counted
/// whole for every delivery, though deliveries of one message share it: the estimate errs on
/// the side of paging out early).
pub(crate) fn cost(d: &Delivery) -> usize {
    std::mem::size_of::<Delivery>()
        + d.sub_ids.capacity() * 4
        + std::mem::size_of::<crate::message::Message>()
        + d.msg.topic.len()
        + d.msg.payload.len()
        + 32
}
