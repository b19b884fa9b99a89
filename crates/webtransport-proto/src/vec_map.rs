//! [`VecMap`]: an ordered map in one sorted `Vec`, for maps that hold a few entries per
//! connection (the core's HTTP/3 streams and sessions, both bounded by limits, and the
//! engine's write queues of those streams).
//! A `BTreeMap` allocates a whole leaf of eleven entries for the first one: with a
//! session of ~100 bytes that was ~1.2 KB for a connection's single session, and ~1.4 KB
//! for its three HTTP/3 streams, a sixth of what an idle session costs beyond QUIC.
//! Iteration is in key order, like the `BTreeMap` it replaces (the core's outputs stay
//! deterministic). Lookups are binary searches; an insert or removal moves the entries
//! after it, which for maps this small (and keys that mostly grow) is a short copy.
//! Room grows one entry, two, then doubles: a `Vec`'s first growth makes room for four,
//! and most connections hold one session and two streams.

/// An ordered map in a sorted `Vec`.
#[derive(Debug, Clone)]
pub struct VecMap<K, V> {
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

    /// Inserts at `i`, growing the room by one, two, then doubling.
    fn insert_at(&mut self, i: usize, key: K, value: V) {
        let len = self.entries.len();
        if len == self.entries.capacity() {
            self.entries.reserve_exact(len.max(1));
        }
        self.entries.insert(i, (key, value));
    }

    /// The value at `key`.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.find(key).ok().map(|i| &self.entries[i].1)
    }

    /// The value at `key`, to change.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.find(key).ok().map(|i| &mut self.entries[i].1)
    }

    /// Whether `key` has a value.
    pub fn contains_key(&self, key: &K) -> bool {
        self.find(key).is_ok()
    }

    /// Inserts `value` at `key`; the value it replaces, if any.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.find(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            Err(i) => {
                self.insert_at(i, key, value);
                None
            }
        }
    }

    /// How many entries there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The value at `key`, made by `make` if there is none.
    pub fn get_or_insert_with(&mut self, key: K, make: impl FnOnce() -> V) -> &mut V {
        let i = match self.find(&key) {
            Ok(i) => i,
            Err(i) => {
                self.insert_at(i, key, make());
                i
            }
        };
        &mut self.entries[i].1
    }

    /// Removes `key`'s entry; its value, if it had one.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        let i = self.find(key).ok()?;
        let (_, value) = self.entries.remove(i);
        // A connection that once held many entries gives the room back as they go.
        if self.entries.capacity() > 8 && self.entries.len() < self.entries.capacity() / 4 {
            self.entries.shrink_to(self.entries.len() * 2);
        }
        Some(value)
    }

    /// Keeps the entries for which `keep` says so.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        self.entries.retain_mut(|(k, v)| keep(k, v));
    }

    /// The entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> + '_ {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    /// The entries in key order, values to change.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&K, &mut V)> + '_ {
        self.entries.iter_mut().map(|(k, v)| (&*k, v))
    }

    /// The keys in order.
    pub fn keys(&self) -> impl Iterator<Item = &K> + '_ {
        self.entries.iter().map(|(k, _)| k)
    }

    /// The values in key order.
    pub fn values(&self) -> impl Iterator<Item = &V> + '_ {
        self.entries.iter().map(|(_, v)| v)
    }

    /// Removes every entry and gives the room back.
    pub fn clear(&mut self) {
        self.entries = Vec::new();
    }
}

#[cfg(test)]
mod tests {
    use super::VecMap;
    use std::collections::BTreeMap;

    #[test]
    fn room_grows_by_one_then_two_then_doubles() {
        let mut map = VecMap::default();
        let mut room = Vec::new();
        for key in 0..9u64 {
            map.insert(key, ());
            room.push(map.entries.capacity());
        }
        assert_eq!(room, [1, 2, 4, 4, 8, 8, 8, 8, 16]);
        assert_eq!(map.len(), 9);
        map.clear();
        assert!(map.is_empty() && map.entries.capacity() == 0);
    }

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
        for (_, v) in ours.iter_mut() {
            *v += 1;
        }
        for v in model.values_mut() {
            *v += 1;
        }
        assert!(ours.iter().eq(model.iter()));
        assert_eq!(ours.len(), model.len());
        for key in [3, 50, 96, 200] {
            *ours.get_or_insert_with(key, || 0) += 10;
            *model.entry(key).or_insert_with(|| 0) += 10;
        }
        assert!(ours.iter().eq(model.iter()));
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
