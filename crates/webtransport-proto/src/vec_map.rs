//! [`VecMap`]: an ordered map in one sorted `Vec`, for the core's maps that hold a few
//! entries per connection (its HTTP/3 streams and its sessions, both bounded by limits).
//! A `BTreeMap` allocates a whole leaf of eleven entries for the first one: with a
//! session of ~100 bytes that was ~1.2 KB for a connection's single session, and ~1.4 KB
//! for its three HTTP/3 streams, a sixth of what an idle session costs beyond QUIC.
//! Iteration is in key order, like the `BTreeMap` it replaces (the core's outputs stay
//! deterministic). Lookups are binary searches; an insert or removal moves the entries
//! after it, which for maps this small (and keys that mostly grow) is a short copy.

/// An ordered map in a sorted `Vec`.
#[derive(Debug, Clone)]
pub(super) struct VecMap<K, V> {
    entries: Vec<(K, V)>,
}

impl<K, V> Default for VecMap<K, V> {
    fn default() -> Self {
        VecMap {
            entries: Vec::new(),
        }
    }
}

impl<K: Ord + Copy, V> VecMap<K, V> {
    fn find(&self, key: &K) -> Result<usize, usize> {
        self.entries.binary_search_by(|(k, _)| k.cmp(key))
    }

    pub(super) fn get(&self, key: &K) -> Option<&V> {
        self.find(key).ok().map(|i| &self.entries[i].1)
    }

    pub(super) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.find(key).ok().map(|i| &mut self.entries[i].1)
    }

    pub(super) fn contains_key(&self, key: &K) -> bool {
        self.find(key).is_ok()
    }

    /// Inserts `value` at `key`; the value it replaces, if any.
    pub(super) fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.find(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            Err(i) => {
                self.entries.insert(i, (key, value));
                None
            }
        }
    }

    pub(super) fn remove(&mut self, key: &K) -> Option<V> {
        let i = self.find(key).ok()?;
        let (_, value) = self.entries.remove(i);
        // A connection that once held many entries gives the room back as they go.
        if self.entries.capacity() > 8 && self.entries.len() < self.entries.capacity() / 4 {
            self.entries.shrink_to(self.entries.len() * 2);
        }
        Some(value)
    }

    /// Keeps the entries for which `keep` says so.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        self.entries.retain_mut(|(k, v)| keep(k, v));
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&K, &V)> + '_ {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    pub(super) fn keys(&self) -> impl Iterator<Item = &K> + '_ {
        self.entries.iter().map(|(k, _)| k)
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &V> + '_ {
        self.entries.iter().map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::VecMap;
    use std::collections::BTreeMap;

    /// The same operations on a `VecMap` and a `BTreeMap` give the same answers and the
    /// same order, whatever the order of keys.
    #[test]
    fn behaves_as_an_ordered_map() {
        let mut ours = VecMap::default();
        let mut model = BTreeMap::new();
        // A fixed pseudo-random walk of inserts, replacements and removals.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for step in 0..5_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = x % 97;
            match x % 5 {
                0..=2 => assert_eq!(ours.insert(key, step), model.insert(key, step)),
                3 => assert_eq!(ours.remove(&key), model.remove(&key)),
                _ => {
                    if let Some(v) = ours.get_mut(&key) {
                        *v += 1;
                    }
                    if let Some(v) = model.get_mut(&key) {
                        *v += 1;
                    }
                }
            }
            assert_eq!(ours.get(&key), model.get(&key));
            assert_eq!(ours.contains_key(&key), model.contains_key(&key));
        }
        assert!(ours.iter().eq(model.iter()));
        assert!(ours.keys().eq(model.keys()));
        assert!(ours.values().eq(model.values()));
        ours.retain(|k, _| k % 2 == 0);
        model.retain(|k, _| k % 2 == 0);
        assert!(ours.iter().eq(model.iter()));
        // Emptied, it gives its room back.
        for key in 0..97 {
            ours.remove(&key);
        }
        assert!(ours.entries.capacity() <= 8);
    }
}
