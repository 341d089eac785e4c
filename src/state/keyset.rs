//! The last sync's keys, looked up by value, so a mirror run finds its adds as members arrive.
//!
//! A mirror run's adds are the members whose key the last sync's `keys.arrow` lacks. Found at
//! the end, by the merge, their rows must be read back from the run's gigabyte members file: on
//! B1's usual night 43,577 rows spread over all of it, so nearly every page. Found as members
//! arrive (`Spill::find_adds`), they are written to the adds file from the batch in hand; then,
//! where every destination's adds were so found and none reads the whole membership to send,
//! the run does not read its members file back, and (into a local state store on the same
//! filesystem, not in a dry run) it is written past the page cache (`membership::ScratchFile`)
//! instead of filling it with a gigabyte of new pages (on this machine's VM, 1.9-3.3 s of
//! system CPU per gigabyte).
//!
//! The keys file is sorted and its keys are hashes, evenly spread: an index of where each run
//! of keys sharing their top bits begins (a bucket per 4 to 8 keys, 4 bytes each, 4 MiB for 5
//! million keys) leaves a handful of keys to compare, in one or two cache lines of the file.
//! Lookups cost about 90 ns a member (0.46 s of CPU for B1's 5.2 million, on the thread that
//! spills) with the keys read where the file is mapped, in 4 KiB pages. The keys are copied out
//! instead, into memory backed by huge pages where the kernel gives them, as the file's pages are
//! let go: a lookup then needs no page walk, and B1's night spent 0.35 s in them rather than 0.47 s
//! (perf, two runs each, alternating), about 67 ns a member. So a key takes 16 bytes of the run's
//! memory, and 4 more note the row of each key's member in this run; the rows stay in the mapped
//! file, read for the keys found. A run whose previous keys would take more than a quarter of its
//! memory budget does not look them up (`run`).
//! The state store only ever moves files into place; a keys file overwritten in place while
//! mapped would stop the run (SIGBUS), not give a wrong answer.
//!
//! The lookups are the diff: the previous keys no member was found at are the removes, and
//! this run's keys file is the keys found in the largest previous keys file, in its order,
//! merged with the keys not in it (the only keys sorted). B1's usual night sorts 43,577 keys
//! instead of 5.2 million.

use super::mapped::MappedIpc;
use arrow::array::{Array, AsArray, FixedSizeBinaryArray};
use arrow::datatypes::UInt32Type;
use std::path::Path;

/// A sorted keys file, its keys copied into memory, with an index by the keys' top bits.
pub struct KeySet {
    /// Every key, in order, in memory the kernel is asked to back with huge pages
    /// (`huge_pages`).
    keys: Vec<u128>,
    /// Each batch's rows: where each key's member is in the last sync's members file.
    rows: Vec<arrow::buffer::ScalarBuffer<u32>>,
    /// Rows of every batch but the last: `1 << batch_shift`.
    batch_shift: u32,
    /// `starts[b]` is the index of the first key whose top bits are `b` or more.
    starts: Vec<u32>,
    shift: u32,
    _file: MappedIpc,
}

impl KeySet {
    /// Lookups started together, so their cache misses overlap.
    const GROUP: usize = 16;

    /// Opens the keys file at `path`, or `None` where it cannot be looked up so: a keys file of
    /// an earlier build (Parquet), batches of other sizes than this build writes (a power of
    /// two, but the last), keys out of order or repeated, a file that does not read. The merge,
    /// which reads it again, then says what is wrong with it, if anything.
    pub fn open(path: &Path) -> Option<KeySet> {
        let file = MappedIpc::open(path).ok()?;
        let mut batches: Vec<FixedSizeBinaryArray> = vec![];
        let mut rows = vec![];
        for i in 0..file.num_batches() {
            let batch = file.batch(i).ok()?;
            let keys = batch.column(0).as_fixed_size_binary_opt()?;
            let numbers = batch.column(1).as_primitive_opt::<UInt32Type>()?;
            if keys.value_length() != 16 || keys.null_count() > 0 || numbers.null_count() > 0 {
                return None;
            }
            batches.push(keys.clone());
            rows.push(numbers.values().clone());
        }
        let mut batch_rows = batches.first().map_or(1, |b| b.len()).max(1);
        if batches.len() == 1 {
            // One batch, the last: of any size.
            batch_rows = batch_rows.next_power_of_two();
        }
        let uneven = batches.iter().rev().skip(1).any(|b| b.len() != batch_rows)
            || batches.last().is_some_and(|b| b.len() > batch_rows);
        let len: usize = batches.iter().map(|b| b.len()).sum();
        if uneven || !batch_rows.is_power_of_two() || u32::try_from(len).is_err() {
            return None;
        }
        let mut keys: Vec<u128> = Vec::with_capacity(len);
        huge_pages(&keys);
        for (i, batch) in batches.iter().enumerate() {
            let before = keys.len();
            keys.extend(
                batch
                    .values()
                    .chunks_exact(16)
                    .map(|k| u128::from_be_bytes(k.try_into().expect("16-byte keys"))),
            );
            // Strictly increasing, as a membership's keys are (each member once).
            if keys[before.saturating_sub(1)..]
                .windows(2)
                .all(|w| w[0] < w[1])
            {
                // The mapped pages of the batch's keys are not read again (its rows are, for
                // the keys found).
                file.release(i);
            } else {
                return None;
            }
        }
        drop(batches);
        // About 8 keys a bucket: a power of two at least len / 8.
        let bits = (len / 8).max(1).next_power_of_two().trailing_zeros().max(1);
        let shift = 128 - bits;
        let mut starts = Vec::with_capacity((1 << bits) + 1);
        huge_pages(&starts);
        for (i, key) in keys.iter().enumerate() {
            let bucket = (key >> shift) as usize;
            while starts.len() <= bucket {
                starts.push(i as u32);
            }
        }
        while starts.len() <= 1 << bits {
            starts.push(len as u32);
        }
        Some(KeySet {
            keys,
            rows,
            batch_shift: batch_rows.trailing_zeros(),
            starts,
            shift,
            _file: file,
        })
    }

    /// The number of keys.
    pub fn keys(&self) -> usize {
        self.keys.len()
    }

    /// Key `i` (in key order) and its member's row in the last sync's members file.
    pub fn entry(&self, i: usize) -> (u128, u32) {
        let row = self.rows[i >> self.batch_shift][i & ((1 << self.batch_shift) - 1)];
        (self.key(i), row)
    }

    /// Key `i`, in key order.
    pub fn key(&self, i: usize) -> u128 {
        self.keys[i]
    }

    /// Whether `key` is in the file.
    #[cfg(test)]
    pub fn contains(&self, key: u128) -> bool {
        let bucket = (key >> self.shift) as usize;
        self.in_range(key, self.starts[bucket], self.starts[bucket + 1])
    }

    #[cfg(test)]
    fn in_range(&self, key: u128, start: u32, end: u32) -> bool {
        self.position(key, start, end).is_some()
    }

    fn position(&self, key: u128, start: u32, end: u32) -> Option<u32> {
        (start..end).find(|&i| self.keys[i as usize] == key)
    }

    /// Looks up `keys`, the members of rows `first_row..`: for each key in the file, at index
    /// `i`, sets `found[i]` to its row; pushes onto `absent` the index in `keys` of the others.
    /// Lookups go in groups, each step for the whole group, so the cache misses of a group (its
    /// buckets', then its keys') are waited for together: a member's lookup took 330 ns one by
    /// one, and about 90 ns so.
    pub fn look_up(&self, keys: &[u128], first_row: u32, found: &mut [u32], absent: &mut Vec<u32>) {
        self.grouped(keys, |j, position| match position {
            Some(i) => found[i as usize] = first_row + j,
            None => absent.push(j),
        });
    }

    /// Pushes onto `absent` the index in `keys` of each key not in the file.
    #[cfg(test)]
    pub fn absent(&self, keys: &[u128], absent: &mut Vec<u32>) {
        self.grouped(keys, |j, position| {
            if position.is_none() {
                absent.push(j)
            }
        });
    }

    /// Calls `f(j, position)` for each key `j` of `keys`, in order, in groups.
    fn grouped(&self, keys: &[u128], mut f: impl FnMut(u32, Option<u32>)) {
        for (g, group) in keys.chunks(Self::GROUP).enumerate() {
            let mut ranges = [(0u32, 0u32); Self::GROUP];
            for (range, key) in ranges.iter_mut().zip(group) {
                let bucket = (key >> self.shift) as usize;
                *range = (self.starts[bucket], self.starts[bucket + 1]);
            }
            for &(start, end) in &ranges[..group.len()] {
                if start < end {
                    prefetch(&self.keys[start as usize..end as usize]);
                }
            }
            for (j, (key, &(start, end))) in group.iter().zip(&ranges).enumerate() {
                f(
                    (g * Self::GROUP + j) as u32,
                    self.position(*key, start, end),
                );
            }
        }
    }
}

/// Asks the kernel to back `v`'s allocation with huge pages (2 MiB on x86_64) where it can, so
/// looking keys up at random misses the TLB less: with 4 KiB pages each lookup into B1's 83 MB of
/// keys needed a page walk as well as the cache misses.
fn huge_pages<T>(v: &Vec<T>) {
    #[cfg(target_os = "linux")]
    {
        let page = 4096;
        let start = (v.as_ptr() as usize).next_multiple_of(page);
        let end = (v.as_ptr() as usize + v.capacity() * std::mem::size_of::<T>()) / page * page;
        if end > start {
            // SAFETY: advice on whole pages within `v`'s allocation, which it does not change
            // (only how the kernel backs the pages once they are touched); a refusal leaves
            // them as they are.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = v;
}

/// Asks the CPU to bring the first keys of `keys` (not empty) into its cache: the cache line of
/// the first, and the next line (the fifth key's) or, for fewer keys, the last key's.
fn prefetch(keys: &[u128]) {
    crate::cpu::prefetch(&keys[0]);
    if let Some(key) = keys.get(64 / std::mem::size_of::<u128>()).or(keys.last()) {
        crate::cpu::prefetch(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{RecordBatch, UInt32Array};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::ipc::writer::FileWriter;
    use std::sync::Arc;

    fn keys_file(path: &Path, keys: &[u128], batch_rows: usize) {
        let sizes: Vec<usize> = keys.chunks(batch_rows).map(|c| c.len()).collect();
        keys_file_in(path, keys, &sizes);
    }

    fn keys_file_in(path: &Path, keys: &[u128], sizes: &[usize]) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("member_key", DataType::FixedSizeBinary(16), false),
            Field::new("row", DataType::UInt32, false),
        ]));
        let mut w = FileWriter::try_new(std::fs::File::create(path).unwrap(), &schema).unwrap();
        let mut rest = keys;
        for &size in sizes {
            let (chunk, after) = rest.split_at(size);
            rest = after;
            let k =
                FixedSizeBinaryArray::try_from_iter(chunk.iter().map(|k| k.to_be_bytes())).unwrap();
            let rows = UInt32Array::from_iter_values(0..chunk.len() as u32);
            w.write(
                &RecordBatch::try_new(schema.clone(), vec![Arc::new(k), Arc::new(rows)]).unwrap(),
            )
            .unwrap();
        }
        w.finish().unwrap();
    }

    /// Keys spread as hashes are, from a simple generator.
    fn spread(n: usize, seed: u64) -> Vec<u128> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                let mut next = || {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x
                };
                ((next() as u128) << 64) | next() as u128
            })
            .collect()
    }

    #[test]
    fn every_key_of_the_file_is_found_and_no_other() {
        let d = tempfile::tempdir().unwrap();
        let mut keys = spread(50_000, 7);
        // Neighbours that share all top bits, and the ends of the key space.
        keys.extend([0, 1, u128::MAX, u128::MAX - 1, keys[0] + 1]);
        keys.sort_unstable();
        keys.dedup();
        keys_file(&d.path().join("keys.arrow"), &keys, 8192);
        let set = KeySet::open(&d.path().join("keys.arrow")).expect("a sorted keys file");
        assert!(keys.iter().all(|k| set.contains(*k)));
        let others = spread(50_000, 11);
        let absent = others.iter().filter(|k| keys.binary_search(k).is_err());
        assert!(absent.clone().count() > 49_000);
        assert!(absent.clone().all(|k| !set.contains(*k)));
        // In groups: the indexes of the absent keys, in order.
        let mut mixed: Vec<u128> = keys.iter().copied().step_by(3).collect();
        mixed.extend(others.iter().take(1000));
        let expected: Vec<u32> = (0..mixed.len() as u32)
            .filter(|&i| keys.binary_search(&mixed[i as usize]).is_err())
            .collect();
        let mut found = vec![];
        set.absent(&mixed, &mut found);
        assert_eq!(found, expected);
        assert!(found.len() > 900);
    }

    #[test]
    fn empty_and_tiny_key_files_are_looked_up() {
        let d = tempfile::tempdir().unwrap();
        keys_file(&d.path().join("empty.arrow"), &[], 8192);
        let empty = KeySet::open(&d.path().join("empty.arrow")).expect("an empty keys file");
        assert!(!empty.contains(0) && !empty.contains(u128::MAX));
        keys_file(&d.path().join("one.arrow"), &[42], 8192);
        let one = KeySet::open(&d.path().join("one.arrow")).expect("one key");
        assert!(one.contains(42) && !one.contains(41) && !one.contains(u128::MAX));
    }

    #[test]
    fn files_that_cannot_be_looked_up_so_are_left_to_the_merge() {
        let d = tempfile::tempdir().unwrap();
        let mut keys = spread(1000, 3);
        keys.sort_unstable();
        // Batches of one size but the last, as this build writes them.
        keys_file(&d.path().join("even.arrow"), &keys, 256);
        let even = KeySet::open(&d.path().join("even.arrow")).expect("256, 256, 256, 232");
        assert!(keys.iter().all(|k| even.contains(*k)));
        keys_file_in(&d.path().join("uneven.arrow"), &keys, &[100, 300, 600]);
        assert!(KeySet::open(&d.path().join("uneven.arrow")).is_none());
        keys_file_in(&d.path().join("longer_last.arrow"), &keys, &[256, 744]);
        assert!(KeySet::open(&d.path().join("longer_last.arrow")).is_none());
        // Batches of 300: not a power of two.
        keys_file(&d.path().join("odd.arrow"), &keys, 300);
        assert!(KeySet::open(&d.path().join("odd.arrow")).is_none());
        let mut mixed = keys.clone();
        mixed.swap(10, 500);
        keys_file(&d.path().join("unsorted.arrow"), &mixed, 8192);
        assert!(KeySet::open(&d.path().join("unsorted.arrow")).is_none());
        // Each batch in order, but not the second after the first.
        let mut across = keys.clone();
        across.swap(255, 256);
        keys_file(&d.path().join("across.arrow"), &across, 256);
        assert!(KeySet::open(&d.path().join("across.arrow")).is_none());
        std::fs::write(d.path().join("parquet"), b"PAR1 not arrow").unwrap();
        assert!(KeySet::open(&d.path().join("parquet")).is_none());
        assert!(KeySet::open(&d.path().join("missing")).is_none());
    }
}
