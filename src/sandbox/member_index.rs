//! Where each member of an audience is in the sandbox's store, found by the member's hash: an
//! open-addressing table of 8-byte buckets, probed linearly, that the store asks to bring a
//! member's bucket into the cache several members before it inserts that member.
//!
//! An upload of B1 puts 5.2 million members into one audience, at random places in a table far
//! larger than the cache this machine's VM gets: every insert waits for memory. In hashbrown's
//! table (16-member groups of control bytes, then the entries), even holding 4-byte indexes
//! rather than whole slots, the wait for the control bytes was 54% of the inserts' samples, and
//! inserting a fifth of the Data Manager emulator's CPU (perf, B1's upload). hashbrown offers no
//! way to ask for a bucket ahead of time; this table
//! does (`prefetch`), and a bucket holds all a probe reads: the hash's top 32 bits (the tag, which
//! also gives the home bucket, so growing needs no member) and the member's slot number. A member
//! whose tag matches is confirmed by the caller (`same`), so a tag shared by two members costs
//! only a comparison.
//!
//! Deleting shifts the members after the hole back (no tombstones), so probes stay short however
//! many members are removed. The table is at most three quarters full: 8 million buckets (64 MiB)
//! for B1's 5.2 million members.

/// Slot numbers of members, by hash.
#[derive(Clone, Default)]
pub(super) struct MemberIndex {
    /// 0 for an empty bucket; else a member's tag above its slot number plus one.
    buckets: Vec<u64>,
    len: usize,
}

/// What a probe compares first: the top half of a member's hash.
fn tag(hash: u64) -> u64 {
    hash >> 32
}

fn bucket(tag: u64, slot: u32) -> u64 {
    tag << 32 | (u64::from(slot) + 1)
}

fn slot_of(bucket: u64) -> u32 {
    (bucket as u32).wrapping_sub(1)
}

impl MemberIndex {
    pub fn len(&self) -> usize {
        self.len
    }

    /// Empties the index; its buckets stay, for the members that come next.
    pub fn clear(&mut self) {
        self.buckets.fill(0);
        self.len = 0;
    }

    /// The bytes the index holds.
    pub fn allocated(&self) -> usize {
        self.buckets.capacity() * std::mem::size_of::<u64>()
    }

    fn mask(&self) -> usize {
        self.buckets.len().wrapping_sub(1)
    }

    fn home(&self, tag: u64) -> usize {
        tag as usize & self.mask()
    }

    /// Makes room for `additional` more members, so inserting them does not grow the index.
    pub fn reserve(&mut self, additional: usize) {
        let members = self.len + additional;
        if members * 4 > self.buckets.len() * 3 {
            self.rebuild((members * 4 / 3 + 1).next_power_of_two().max(16), |_| true);
        }
    }

    /// Asks the CPU to bring the bucket a member of hash `hash` starts its probe at into the
    /// cache. Until the index grows, that is where its insert or lookup will read first.
    pub fn prefetch(&self, hash: u64) {
        if let Some(bucket) = self.buckets.get(self.home(tag(hash))) {
            crate::cpu::prefetch(bucket);
        }
    }

    /// The slot of the member of hash `hash` that `same` confirms, if there is one; else `slot`
    /// is added as that member's and `None` returned.
    pub fn find_or_insert(
        &mut self,
        hash: u64,
        same: impl Fn(u32) -> bool,
        slot: u32,
    ) -> Option<u32> {
        assert!(
            slot < u32::MAX,
            "an audience of the sandbox takes under 4 billion members between two clears"
        );
        if let Some(found) = self.find(hash, same) {
            return Some(found);
        }
        self.reserve(1);
        self.place(bucket(tag(hash), slot));
        None
    }

    /// The slot of the member of hash `hash` that `same` confirms, if there is one.
    fn find(&self, hash: u64, same: impl Fn(u32) -> bool) -> Option<u32> {
        self.position(hash, same).map(|i| slot_of(self.buckets[i]))
    }

    /// The bucket of the member of hash `hash` that `same` confirms, if there is one.
    fn position(&self, hash: u64, same: impl Fn(u32) -> bool) -> Option<usize> {
        let (tag, mask) = (tag(hash), self.mask());
        if self.len == 0 {
            return None;
        }
        let mut i = self.home(tag);
        loop {
            let b = self.buckets[i];
            if b == 0 {
                return None;
            }
            if b >> 32 == tag && same(slot_of(b)) {
                return Some(i);
            }
            i = (i + 1) & mask;
        }
    }

    /// Puts a bucket's contents in the first empty bucket from its home on (the index has
    /// room: `reserve`).
    fn place(&mut self, b: u64) {
        let mask = self.mask();
        let mut i = self.home(b >> 32);
        while self.buckets[i] != 0 {
            i = (i + 1) & mask;
        }
        self.buckets[i] = b;
        self.len += 1;
    }

    /// Removes the member of hash `hash` that `same` confirms; returns its slot.
    pub fn remove(&mut self, hash: u64, same: impl Fn(u32) -> bool) -> Option<u32> {
        let i = self.position(hash, same)?;
        let (slot, mask) = (slot_of(self.buckets[i]), self.mask());
        self.buckets[i] = 0;
        self.len -= 1;
        // Members after the hole, up to an empty bucket, move back into it where their probe
        // passes it, so no probe stops short at the hole.
        let mut hole = i;
        let mut j = (i + 1) & mask;
        while self.buckets[j] != 0 {
            let home = self.home(self.buckets[j] >> 32);
            if j.wrapping_sub(home) & mask >= j.wrapping_sub(hole) & mask {
                self.buckets[hole] = self.buckets[j];
                self.buckets[j] = 0;
                hole = j;
            }
            j = (j + 1) & mask;
        }
        Some(slot)
    }

    /// Keeps the members whose slots `keep` keeps.
    pub fn retain(&mut self, keep: impl Fn(u32) -> bool) {
        self.rebuild(self.buckets.len(), keep);
    }

    /// The slots of the members, in no particular order.
    pub fn slots(&self) -> impl Iterator<Item = u32> + '_ {
        self.buckets
            .iter()
            .filter(|&&b| b != 0)
            .map(|&b| slot_of(b))
    }

    /// Puts the members `keep` keeps into `buckets` buckets (a power of two): the same buckets,
    /// emptied, if there are as many (fresh memory is slow to come by on this VM: `state`).
    fn rebuild(&mut self, buckets: usize, keep: impl Fn(u32) -> bool) {
        let kept: Vec<u64> = (self.buckets.iter().copied())
            .filter(|&b| b != 0 && keep(slot_of(b)))
            .collect();
        if buckets == self.buckets.len() {
            self.buckets.fill(0);
        } else {
            self.buckets = vec![0; buckets];
        }
        self.len = 0;
        for b in kept {
            self.place(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Members named by numbers, whose hashes are given (to make them collide at will).
    fn insert(index: &mut MemberIndex, hash: u64, member: u32) -> Option<u32> {
        index.find_or_insert(hash, |slot| slot == member, member)
    }

    #[test]
    fn members_are_found_by_hash_and_confirmed_by_the_caller() {
        let mut index = MemberIndex::default();
        // 1 and 2 share a whole hash, 3 only its home bucket: the caller tells them apart.
        let same_home = 0x0000_0007_0000_0000;
        for (hash, member) in [(same_home, 1), (same_home, 2), (same_home | 1 << 40, 3)] {
            assert_eq!(insert(&mut index, hash, member), None, "{member} is new");
        }
        assert_eq!(insert(&mut index, same_home, 2), Some(2), "2 is in already");
        assert_eq!(index.len(), 3);
        let mut slots: Vec<u32> = index.slots().collect();
        slots.sort();
        assert_eq!(slots, [1, 2, 3]);
    }

    #[test]
    fn a_removal_leaves_every_other_member_findable() {
        let mut index = MemberIndex::default();
        // Hashes whose homes crowd a few buckets at the end of the table and wrap around to its
        // start: removals must shift the members after them back, across the wrap.
        let hashes: Vec<u64> = (0..12u64).map(|m| (13 + m % 3) << 32 | m).collect();
        for (m, &h) in hashes.iter().enumerate() {
            insert(&mut index, h, m as u32);
        }
        assert_eq!(index.buckets.len(), 16);
        for gone in [0u32, 4, 11, 5] {
            assert_eq!(
                index.remove(hashes[gone as usize], |s| s == gone),
                Some(gone)
            );
            assert_eq!(index.remove(hashes[gone as usize], |s| s == gone), None);
        }
        assert_eq!(index.len(), 8);
        for (m, &h) in hashes.iter().enumerate() {
            let m = m as u32;
            let kept = ![0, 4, 11, 5].contains(&m);
            assert_eq!(index.find(h, |s| s == m), kept.then_some(m), "member {m}");
        }
    }

    #[test]
    fn growing_and_retaining_keep_the_members_asked_for() {
        let mut index = MemberIndex::default();
        let hash = |m: u32| u64::from(m).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        for m in 0..10_000 {
            insert(&mut index, hash(m), m);
        }
        assert_eq!(index.len(), 10_000);
        assert!(
            index.buckets.len() * 3 >= 10_000 * 4,
            "at most three quarters full"
        );
        index.retain(|s| s % 2 == 0);
        assert_eq!(index.len(), 5_000);
        for m in 0..10_000 {
            assert_eq!(insert(&mut index, hash(m), m).is_some(), m % 2 == 0, "{m}");
        }
        let buckets = index.buckets.len();
        index.clear();
        assert_eq!((index.len(), index.slots().count()), (0, 0));
        assert_eq!(
            index.buckets.len(),
            buckets,
            "a cleared index keeps its buckets"
        );
    }
}
