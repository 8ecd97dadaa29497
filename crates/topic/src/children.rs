//! A trie node's literal children, keyed by level string.
//!
//! Most nodes have a handful of children (one, often). Hashing a level with SipHash, which the
//! maps must keep because level strings come from clients (see [`crate::hash`]), cost more
//! than the rest of a lookup: a 4-level topic took four SipHash runs per PUBLISH. Up to
//! [`FEW`] children are therefore kept in a vector and found by comparing strings (a scan
//! bounded by `FEW`, so no input can make it long); a node with more switches to the keyed
//! map, and back to the vector when it has shrunk to half of `FEW`.

use crate::hash::{GlobalState, Map, maybe_shrink};
use std::collections::hash_map;

/// Largest number of children kept in the vector.
pub(crate) const FEW: usize = 8;

pub(crate) enum Children<N> {
    Few(Vec<(Box<str>, N)>),
    Many(Map<Box<str>, N>),
}

impl<N> Default for Children<N> {
    fn default() -> Self {
        Self::Few(Vec::new())
    }
}

impl<N> Children<N> {
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Few(v) => v.len(),
            Self::Many(m) => m.len(),
        }
    }

    #[inline]
    pub(crate) fn get(&self, level: &str) -> Option<&N> {
        match self {
            Self::Few(v) => v.iter().find(|(k, _)| same(k, level)).map(|(_, n)| n),
            Self::Many(m) => m.get(level),
        }
    }

    pub(crate) fn get_mut(&mut self, level: &str) -> Option<&mut N> {
        match self {
            Self::Few(v) => v.iter_mut().find(|(k, _)| same(k, level)).map(|(_, n)| n),
            Self::Many(m) => m.get_mut(level),
        }
    }

    /// The child `level`, made with `new` if there is none.
    pub(crate) fn get_or_insert_with(&mut self, level: &str, new: impl FnOnce() -> N) -> &mut N {
        if let Self::Few(v) = self
            && v.len() == FEW
            && !v.iter().any(|(k, _)| same(k, level))
        {
            // Room for twice as many, so the child about to be added does not grow it at once.
            let mut map: Map<Box<str>, N> = Map::with_capacity_and_hasher(2 * FEW, GlobalState);
            map.extend(std::mem::take(v));
            *self = Self::Many(map);
        }
        match self {
            Self::Few(v) => {
                let i = match v.iter().position(|(k, _)| same(k, level)) {
                    Some(i) => i,
                    None => {
                        v.push((level.into(), new()));
                        v.len() - 1
                    }
                };
                &mut v[i].1
            }
            Self::Many(m) => {
                if !m.contains_key(level) {
                    m.insert(level.into(), new());
                }
                m.get_mut(level).expect("child was just ensured to exist")
            }
        }
    }

    /// Detaches the child `level`.
    pub(crate) fn remove(&mut self, level: &str) -> Option<N> {
        match self {
            Self::Few(v) => {
                let i = v.iter().position(|(k, _)| same(k, level))?;
                let (_, n) = v.swap_remove(i);
                if v.capacity() > 2 * v.len().max(2) {
                    v.shrink_to_fit();
                }
                Some(n)
            }
            Self::Many(m) => {
                let n = m.remove(level);
                if m.len() <= FEW / 2 {
                    *self = Self::Few(std::mem::take(m).into_iter().collect());
                } else {
                    maybe_shrink(m);
                }
                n
            }
        }
    }

    pub(crate) fn iter(&self) -> Iter<'_, N> {
        match self {
            Self::Few(v) => Iter::Few(v.iter()),
            Self::Many(m) => Iter::Many(m.iter()),
        }
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &N> {
        self.iter().map(|(_, n)| n)
    }

    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut N> {
        let (few, many) = match self {
            Self::Few(v) => (Some(v.iter_mut().map(|(_, n)| n)), None),
            Self::Many(m) => (None, Some(m.values_mut())),
        };
        few.into_iter().flatten().chain(many.into_iter().flatten())
    }

    pub(crate) fn into_values(self) -> impl Iterator<Item = N> {
        let (few, many) = match self {
            Self::Few(v) => (Some(v.into_iter().map(|(_, n)| n)), None),
            Self::Many(m) => (None, Some(m.into_values())),
        };
        few.into_iter().flatten().chain(many.into_iter().flatten())
    }
}

/// Whether two level strings are equal (every lookup of a child uses it). Levels are short,
/// and comparing them with `==` called the C library's `memcmp` once per child looked at; here
/// up to 16 bytes are compared as two overlapping loads of each string.
#[inline]
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let n = a.len();
    if n != b.len() {
        return false;
    }
    // Two reads of `N` bytes, at the start and at the end: together they cover `2 * N`
    // bytes at most and `N` at least, overlapping in the middle.
    fn ends<const N: usize>(s: &[u8]) -> Option<(&[u8; N], &[u8; N])> {
        Some((s.first_chunk::<N>()?, s.last_chunk::<N>()?))
    }
    match n {
        0 => true,
        1..=3 => a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1],
        4..=8 => ends::<4>(a) == ends::<4>(b),
        9..=16 => ends::<8>(a) == ends::<8>(b),
        _ => a == b,
    }
}

/// The children with their level strings, in no particular order.
pub(crate) enum Iter<'a, N> {
    Few(std::slice::Iter<'a, (Box<str>, N)>),
    Many(hash_map::Iter<'a, Box<str>, N>),
}

impl<'a, N> Iterator for Iter<'a, N> {
    type Item = (&'a Box<str>, &'a N);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Self::Few(it) => it.next().map(|(k, n)| (k, n)),
            Self::Many(it) => it.next(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Children, FEW};

    fn many<N>(c: &Children<N>) -> bool {
        matches!(c, Children::Many(_))
    }

    #[test]
    fn same_compares_every_byte() {
        // Every length up to 24, one byte changed at every position (or none), against `==`.
        for n in 0..=24usize {
            let a: String = (0..n).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
            assert!(super::same(&a, &a));
            for i in 0..n {
                for c in ['A', 'b', '/', '\u{7f}'] {
                    let mut b = a.clone().into_bytes();
                    b[i] = c as u8;
                    let b = String::from_utf8(b).expect("ASCII");
                    assert_eq!(super::same(&a, &b), a == b, "{a:?} {b:?}");
                    assert_eq!(super::same(&b, &a), a == b, "{b:?} {a:?}");
                }
            }
            // Same bytes, other length.
            let longer = format!("{a}x");
            assert!(!super::same(&a, &longer));
            assert!(!super::same(&longer, &a));
        }
    }

    #[test]
    fn grows_into_a_map_and_shrinks_back() {
        let mut c: Children<usize> = Children::default();
        for i in 0..FEW {
            *c.get_or_insert_with(&format!("l{i}"), || 0) += i;
        }
        assert!(!many(&c));
        // Finding an existing child does not switch.
        assert_eq!(*c.get_or_insert_with("l3", || 99), 3);
        assert!(!many(&c));
        c.get_or_insert_with("new", || 100);
        assert!(many(&c));
        assert_eq!(c.len(), FEW + 1);
        for i in 0..FEW {
            assert_eq!(c.get(&format!("l{i}")), Some(&i));
        }
        assert_eq!(c.get("new"), Some(&100));
        assert_eq!(c.get("absent"), None);
        // Down to half of FEW: back to the vector, with every child kept.
        for i in 0..=FEW / 2 {
            assert_eq!(c.remove(&format!("l{i}")), Some(i));
        }
        assert!(!many(&c));
        assert_eq!(c.len(), FEW - FEW / 2);
        let mut left: Vec<usize> = c.values().copied().collect();
        left.sort_unstable();
        let mut want: Vec<usize> = (FEW / 2 + 1..FEW).collect();
        want.push(100);
        assert_eq!(left, want);
        *c.get_mut("new").expect("kept") += 1;
        assert_eq!(c.remove("new"), Some(101));
        assert_eq!(c.remove("new"), None);
        assert_eq!(c.into_values().count(), FEW - FEW / 2 - 1);
    }
}
