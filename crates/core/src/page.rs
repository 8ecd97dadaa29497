//! Pages of the admin listings. A listing of every session of a broker with a million of them
//! runs on the core, between two batches of client events: it must not copy and sort the
//! million. [`Selector`] walks the entries once and keeps the `limit` that come first after a
//! cursor, in a heap: O(n log limit) comparisons of borrowed keys, and only the page's entries
//! are built.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// Which part of a listing to return: the first `limit` entries after `after` (a key of the
/// listing's order, as a previous page's `next` gave it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub after: Option<String>,
    pub limit: usize,
}

impl PageRequest {
    /// The first `limit` entries.
    pub fn first(limit: usize) -> Self {
        Self { after: None, limit }
    }

    /// Everything (for tests and small listings).
    pub fn all() -> Self {
        Self::first(usize::MAX)
    }
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Entries in the whole listing (every page).
    pub total: usize,
    /// Entries follow this page.
    pub truncated: bool,
    /// The cursor for the next page (the last key of this one), when there are entries after it.
    pub next: Option<String>,
}

/// An entry ordered by its key alone.
struct Keyed<K, T>(K, T);

impl<K: Ord, T> PartialEq for Keyed<K, T> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl<K: Ord, T> Eq for Keyed<K, T> {}
impl<K: Ord, T> PartialOrd for Keyed<K, T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<K: Ord, T> Ord for Keyed<K, T> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.cmp(&other.0)
    }
}

/// Keeps the first `limit` entries (by key) offered after the cursor.
pub(crate) struct Selector<K, T> {
    after: Option<K>,
    limit: usize,
    /// A max-heap: its top is the entry to drop when a smaller one comes.
    kept: BinaryHeap<Keyed<K, T>>,
    total: usize,
    /// Entries after the cursor (kept or not).
    beyond: usize,
}

impl<K: Ord, T> Selector<K, T> {
    pub(crate) fn new(after: Option<K>, limit: usize) -> Self {
        Self {
            after,
            limit,
            kept: BinaryHeap::new(),
            total: 0,
            beyond: 0,
        }
    }

    /// Offers an entry; `item` is built only if it enters the page (for now).
    pub(crate) fn offer(&mut self, key: K, item: impl FnOnce() -> T) {
        self.total += 1;
        if self.after.as_ref().is_some_and(|a| key <= *a) {
            return;
        }
        self.beyond += 1;
        if self.kept.len() < self.limit {
            self.kept.push(Keyed(key, item()));
        } else if let Some(mut top) = self.kept.peek_mut()
            && key < top.0
        {
            *top = Keyed(key, item());
        }
    }

    /// The page, in key order; `cursor` turns the last key into the next page's cursor.
    pub(crate) fn finish(self, cursor: impl FnOnce(&K) -> String) -> Page<T> {
        let more = self.beyond > self.kept.len();
        let sorted = self.kept.into_sorted_vec();
        let next = sorted.last().filter(|_| more).map(|k| cursor(&k.0));
        Page {
            items: sorted.into_iter().map(|k| k.1).collect(),
            total: self.total,
            truncated: more,
            next,
        }
    }
}

impl<T> Page<T> {
    /// The same page with each entry turned into another.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            total: self.total,
            truncated: self.truncated,
            next: self.next,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(keys: &[u32], after: Option<u32>, limit: usize) -> Page<u32> {
        let mut s = Selector::new(after, limit);
        for &k in keys {
            s.offer(k, || k * 10);
        }
        s.finish(|k| k.to_string())
    }

    #[test]
    fn pages_walk_the_listing_in_order() {
        let keys = [7, 3, 9, 1, 5, 8, 2];
        let p = page(&keys, None, 3);
        assert_eq!(p.items, [10, 20, 30]);
        assert_eq!((p.total, p.next.as_deref()), (7, Some("3")));
        let p = page(&keys, Some(3), 3);
        assert_eq!(p.items, [50, 70, 80]);
        assert_eq!(p.next.as_deref(), Some("8"));
        let p = page(&keys, Some(8), 3);
        assert_eq!((p.items, p.next), (vec![90], None));
        // A page that ends exactly at the last entry has no next.
        assert_eq!(page(&keys, Some(5), 3).next, None);
        let none = page(&keys, None, 0);
        assert_eq!((none.next, none.truncated), (None, true));
        assert_eq!(page(&[], None, 3).total, 0);
    }

    #[test]
    fn only_the_page_is_built() {
        let mut built = 0;
        let mut s = Selector::new(None, 2);
        for k in (0..100u32).rev() {
            s.offer(k, || {
                built += 1;
                k
            });
        }
        // Offered in descending order, every entry displaces the page's largest.
        assert_eq!(built, 100);
        let mut built = 0;
        let mut s = Selector::new(None, 2);
        for k in 0..100u32 {
            s.offer(k, || {
                built += 1;
                k
            });
        }
        assert_eq!(built, 2);
        assert_eq!(s.finish(|k| k.to_string()).items, [0, 1]);
    }
}
