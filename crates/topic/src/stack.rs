//! A LIFO stack that keeps its first `N` elements inline (no allocation) and
//! spills to a `Vec` only for unusually deep traversals.

pub(crate) struct InlineStack<T, const N: usize> {
    inline: [Option<T>; N],
    len: usize,
    spill: Vec<T>,
}

impl<T, const N: usize> InlineStack<T, N> {
    #[inline]
    pub(crate) fn new() -> Self {
        Self {
            inline: [const { None }; N],
            len: 0,
            spill: Vec::new(),
        }
    }

    #[inline]
    pub(crate) fn push(&mut self, item: T) {
        if self.len < N {
            self.inline[self.len] = Some(item);
            self.len += 1;
        } else {
            self.spill.push(item);
        }
    }

    #[inline]
    pub(crate) fn pop(&mut self) -> Option<T> {
        // The spill only ever holds elements pushed while the inline part was
        // full, so it is always the top of the stack.
        if let Some(item) = self.spill.pop() {
            return Some(item);
        }
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        self.inline[self.len].take()
    }
}

#[cfg(test)]
mod tests {
    use super::InlineStack;

    #[test]
    fn lifo_across_spill() {
        let mut s: InlineStack<u32, 4> = InlineStack::new();
        for i in 0..10 {
            s.push(i);
        }
        for i in (5..10).rev() {
            assert_eq!(s.pop(), Some(i));
        }
        s.push(100);
        assert_eq!(s.pop(), Some(100));
        for i in (0..5).rev() {
            assert_eq!(s.pop(), Some(i));
        }
        assert_eq!(s.pop(), None);
    }
}
