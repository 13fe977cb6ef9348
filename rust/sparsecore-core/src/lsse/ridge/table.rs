//! The feature-id → row map: an open-addressing hash table from `u32` keys.

/// Marks an empty slot of a [`Table`]; feature ids are `< dim <= u32::MAX`, so they never collide with it.
const EMPTY: u32 = u32::MAX;

/// An open-addressing hash table from `u32` keys to values (linear probing, at most half full). Key and value
/// share a slot, so a lookup touches one cache line.
#[derive(Debug, Clone, Default)]
pub(super) struct Table<V> {
    slots: Vec<(u32, V)>,
    len: usize,
}

impl<V: Copy + Default> Table<V> {
    fn home(&self, key: u32) -> usize {
        // Fibonacci hashing: the top bits of key · 2^64/φ.
        let bits = self.slots.len().trailing_zeros();
        (u64::from(key).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - bits)) as usize
    }

    /// The slot holding `key`, or the empty slot where it would go. The table must have a slot.
    fn probe(&self, key: u32) -> usize {
        let mask = self.slots.len() - 1;
        let mut s = self.home(key);
        loop {
            let k = self.slots[s].0;
            if k == key || k == EMPTY {
                return s;
            }
            s = (s + 1) & mask;
        }
    }

    pub(super) fn get(&self, key: u32) -> Option<V> {
        if self.slots.is_empty() {
            return None;
        }
        let slot = self.slots[self.probe(key)];
        (slot.0 == key).then_some(slot.1)
    }

    /// The value slot of `key`, inserting `V::default()` first if it is absent (then the flag is true).
    pub(super) fn entry(&mut self, key: u32) -> (&mut V, bool) {
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let s = self.probe(key);
        let inserted = self.slots[s].0 == EMPTY;
        if inserted {
            self.slots[s] = (key, V::default());
            self.len += 1;
        }
        (&mut self.slots[s].1, inserted)
    }

    fn grow(&mut self) {
        let cap = (self.slots.len() * 2).max(8);
        let old = std::mem::replace(&mut self.slots, vec![(EMPTY, V::default()); cap]);
        for slot in old {
            if slot.0 != EMPTY {
                let s = self.probe(slot.0);
                self.slots[s] = slot;
            }
        }
    }

    pub(super) fn bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<(u32, V)>()
    }
}
