//! A list of weak references that forgets the dead ones as it grows: at most twice the
//! live ones (and a few), at an amortised constant cost per push however many there are.

/// A weak reference that can tell whether its target still exists.
pub(crate) trait Alive {
    fn alive(&self) -> bool;
}

impl<T> Alive for std::sync::Weak<T> {
    fn alive(&self) -> bool {
        self.strong_count() > 0
    }
}

/// Weak references, the dead ones dropped when the list has doubled since the last time.
#[derive(Debug)]
pub(crate) struct WeakList<W> {
    items: Vec<W>,
    /// The length at which a push first drops the dead.
    prune_at: usize,
}

/// A list this short is never pruned on a push.
const MIN_PRUNE: usize = 64;

impl<W> Default for WeakList<W> {
    fn default() -> Self {
        WeakList {
            items: Vec::new(),
            prune_at: MIN_PRUNE,
        }
    }
}

impl<W: Alive> WeakList<W> {
    pub(crate) fn push(&mut self, w: W) {
        if self.items.len() >= self.prune_at {
            self.prune();
        }
        self.items.push(w);
    }

    /// Drops the dead and gives the rest (which may die while they are looked at).
    pub(crate) fn prune(&mut self) -> &[W] {
        self.items.retain(Alive::alive);
        self.prune_at = (2 * self.items.len()).max(MIN_PRUNE);
        &self.items
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn dead_references_do_not_pile_up() {
        let mut list = WeakList::default();
        let kept: Vec<Arc<u32>> = (0..100).map(Arc::new).collect();
        for k in &kept {
            list.push(Arc::downgrade(k));
        }
        for n in 0..10_000 {
            let gone = Arc::new(n);
            list.push(Arc::downgrade(&gone));
            assert!(list.items.len() <= 2 * (kept.len() + 1) + 1, "{n}");
        }
        assert_eq!(list.prune().len(), kept.len());
    }
}
