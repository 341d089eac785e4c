//! Members across the run: duplicates dropped by member key, counts summed.
//!
//! The key is a 128-bit hash of a member's whole identifier tuple (computed with the batch in
//! `identity::column`), so the set costs the same whatever the identifiers are: 12 bytes of it
//! are kept, in hash sets whose fill is spread so that they take 21 to 22 bytes a member at any
//! count (`Routes`; B1 on 30 million customers: 325 MiB, where equal sets of whole keys took 544
//! MiB). That memory is reserved in the run's memory pool (`crate::memory`) as the set grows,
//! so the query spills earlier to make room, and a segment of more members than the budget can
//! hold stops with an error that says so, instead of the process being killed. The sets go once
//! every member is in (`release_sets`), before the diff and the sending.

use crate::identity::{MemberBatch, Tally};
use arrow::array::{ArrayRef, BooleanArray, RecordBatch};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool, MemoryReservation};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::Arc;

/// A key as the sets keep it: its low 96 bits, 12 bytes. With the partition it falls in (from
/// its top 16 bits), two members are told apart by about 104 of their key's 128 bits: among 100
/// million members, the chance that two share them is under 1 in 10^15.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Packed([u32; 3]);

impl Packed {
    fn of(key: u128) -> Packed {
        Packed([(key >> 64) as u32, (key >> 32) as u32, key as u32])
    }
}

impl Hash for Packed {
    /// The keys are hashes already: their low 64 bits serve as they are.
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64((u64::from(self.0[1]) << 32) | u64::from(self.0[2]));
    }
}

#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

type KeySet = hashbrown::HashSet<Packed, BuildHasherDefault<KeyHasher>>;

/// Sets the keys are spread over. A batch's keys are inserted one set at a time, so each insert
/// lands in a set small enough to stay in cache: one set of 5 million members spent most of its
/// time waiting on memory.
const PARTITIONS: usize = 256;

/// Which set a key goes to, by its top 16 bits: set `p` takes a share of the keys in proportion
/// to 2^(p/256). A hash set doubles its table when it is 7/8 full, so sets of equal shares all
/// doubled at once, and the whole run's keys sat in tables between 7/16 and 7/8 full (B1 on 30
/// million customers, 15.7 million members: 544 MiB of whole keys). Spread over the doubling
/// cycle, their fill evens out: 21 to 22 bytes a member at any count (325 MiB there), at the
/// same speed (1.2 to 1.3 s for those 15.7 million inserts, either way).
struct Routes([u8; 1 << 16]);

/// The shares of the sets up to `p` add up to 2^((p+1)/256) - 1 of the keys, so the top bits
/// `t` of a key go to set floor(256 * log2(1 + t/65536)).
static ROUTES: std::sync::LazyLock<Routes> = std::sync::LazyLock::new(|| {
    let mut routes = [0u8; 1 << 16];
    for (t, route) in routes.iter_mut().enumerate() {
        *route = (PARTITIONS as f64 * (1.0 + t as f64 / 65536.0).log2()) as u8;
    }
    Routes(routes)
});

impl Routes {
    fn partition(&self, key: u128) -> usize {
        usize::from(self.0[(key >> 112) as usize])
    }
}

/// The members of a batch not seen before in the run.
pub struct Admitted {
    pub batch: RecordBatch,
    /// Their keys.
    pub keys: Vec<u128>,
    /// Their digests as bytes, where the batch carried them (`MemberBatch::digests`).
    pub digests: Option<Vec<ArrayRef>>,
}

/// Drops members seen before in the run and sums the counts.
pub struct Members {
    seen: Vec<KeySet>,
    unique: u64,
    pub tally: Tally,
    pub duplicates: u64,
    /// The set's memory in the run's pool, when it has one.
    reservation: Option<MemoryReservation>,
}

impl Default for Members {
    fn default() -> Members {
        Members {
            seen: (0..PARTITIONS).map(|_| KeySet::default()).collect(),
            unique: 0,
            tally: Tally::default(),
            duplicates: 0,
            reservation: None,
        }
    }
}

impl Members {
    pub fn new() -> Members {
        Members::default()
    }

    /// A set whose memory is reserved in `pool`.
    pub fn within(pool: &Arc<dyn MemoryPool>) -> Members {
        Members {
            reservation: Some(MemoryConsumer::new("deduplication").register(pool)),
            ..Members::default()
        }
    }

    /// The bytes the sets' tables hold (keys and control bytes, of every slot).
    fn bytes(&self) -> usize {
        self.seen.iter().map(|s| s.allocation_size()).sum()
    }

    /// Frees the sets and their reservation once every member has been admitted; the counts
    /// stay. The diff and the sending that follow need the memory, not the sets.
    pub fn release_sets(&mut self) {
        self.seen = Vec::new();
        self.reservation = None;
    }

    /// Reserves what the sets have grown to.
    fn account(&mut self) -> Result<(), arrow::error::ArrowError> {
        let bytes = self.bytes();
        let Some(r) = &mut self.reservation else {
            return Ok(());
        };
        if bytes <= r.size() {
            return Ok(());
        }
        r.try_resize(bytes).map_err(|e| {
            // The pool's text names consumers and sizes, never values.
            arrow::error::ArrowError::ComputeError(format!(
                "deduplicating {} members needs {} MiB, more than the run's memory budget leaves beside the query; \
                 raise ACTIVATOR_MEMORY_LIMIT (or the job definition's memory) ({e})",
                self.unique,
                bytes >> 20
            ))
        })
    }

    /// The members of `batch` not seen before. Of a member that comes twice in the batch, the
    /// first row is kept.
    pub fn admit(&mut self, batch: MemberBatch) -> Result<Admitted, arrow::error::ArrowError> {
        self.tally.add(&batch.tally);
        let keys = &batch.keys;
        // The rows in partition order (a counting sort, stable, so first rows stay first).
        let mut starts = [0usize; PARTITIONS + 1];
        let routes = &*ROUTES;
        for k in keys {
            starts[routes.partition(*k) + 1] += 1;
        }
        for p in 0..PARTITIONS {
            starts[p + 1] += starts[p];
        }
        let mut order = vec![0u32; keys.len()];
        for (row, k) in keys.iter().enumerate() {
            let slot = &mut starts[routes.partition(*k)];
            order[*slot] = row as u32;
            *slot += 1;
        }
        let mut keep = vec![false; keys.len()];
        for row in order {
            let key = keys[row as usize];
            keep[row as usize] = self.seen[routes.partition(key)].insert(Packed::of(key));
        }
        self.account()?;
        let dropped = keep.iter().filter(|k| !**k).count();
        self.unique += (keys.len() - dropped) as u64;
        if dropped == 0 {
            return Ok(Admitted {
                batch: batch.batch,
                keys: batch.keys,
                digests: batch.digests,
            });
        }
        self.duplicates += dropped as u64;
        let keys = batch
            .keys
            .iter()
            .zip(&keep)
            .filter(|(_, k)| **k)
            .map(|(key, _)| *key)
            .collect();
        let keep = BooleanArray::from(keep);
        let digests = batch
            .digests
            .map(|digests| {
                digests
                    .iter()
                    .map(|d| arrow::compute::filter(d, &keep))
                    .collect::<Result<_, _>>()
            })
            .transpose()?;
        Ok(Admitted {
            batch: arrow::compute::filter_record_batch(&batch.batch, &keep)?,
            keys,
            digests,
        })
    }

    /// Members sent: those admitted, less duplicates.
    pub fn unique(&self) -> u64 {
        self.unique
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray, FixedSizeBinaryArray, UInt32Array};

    /// Rows numbered from 0, each with a digest of 32 bytes of its number.
    fn batch(keys: &[u128]) -> MemberBatch {
        let rows = UInt32Array::from_iter_values(0..keys.len() as u32);
        let digests = (0..keys.len()).map(|row| [row as u8; 32]);
        let digests = FixedSizeBinaryArray::try_from_iter(digests).unwrap();
        MemberBatch {
            batch: RecordBatch::try_from_iter([("row", Arc::new(rows) as _)]).unwrap(),
            keys: keys.to_vec(),
            tally: Tally::default(),
            digests: Some(vec![Arc::new(digests)]),
        }
    }

    fn rows(batch: &RecordBatch) -> Vec<u32> {
        let rows = batch
            .column(0)
            .as_any()
            .downcast_ref::<UInt32Array>()
            .unwrap();
        (0..rows.len()).map(|i| rows.value(i)).collect()
    }

    #[test]
    fn a_member_is_admitted_once_by_its_first_row_across_batches_and_partitions() {
        let high = |p: u128, low: u128| (p << 120) | low;
        let mut members = Members::new();
        let first = members
            .admit(batch(&[high(7, 1), high(200, 1), high(7, 1), high(0, 5)]))
            .unwrap();
        assert_eq!(
            rows(&first.batch),
            [0, 1, 3],
            "the second row of a member is dropped"
        );
        assert_eq!(first.keys, [high(7, 1), high(200, 1), high(0, 5)]);
        let digests = first.digests.unwrap();
        let digests = digests[0].as_fixed_size_binary();
        let rows_of_digests: Vec<u8> = digests.iter().map(|d| d.unwrap()[0]).collect();
        assert_eq!(rows_of_digests, [0, 1, 3], "the digests go with their rows");
        let second = members
            .admit(batch(&[high(0, 5), high(200, 2), high(7, 1)]))
            .unwrap();
        assert_eq!(
            rows(&second.batch),
            [1],
            "members of earlier batches are dropped"
        );
        assert_eq!(members.unique(), 4);
        assert_eq!(members.duplicates, 3);
    }

    #[test]
    fn keys_stay_known_as_the_sets_grow_and_cost_under_22_bytes_each() {
        // 2 million spread keys: every set doubles its table several times; every key is new
        // once, and known from then on.
        let key = |i: u128| {
            let x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
            (x ^ (x >> 61)).wrapping_mul(0x2545_f491_4f6c_dd1d_9e37_79b9_7f4a_7c15)
        };
        let mut members = Members::new();
        let all: Vec<u128> = (0..2_000_000u128).map(key).collect();
        for chunk in all.chunks(8192) {
            let kept = members.admit(batch(chunk)).unwrap();
            assert_eq!(kept.batch.num_rows(), chunk.len());
        }
        let again: Vec<u128> = all
            .iter()
            .step_by(7)
            .copied()
            .chain([key(2_000_001)])
            .collect();
        let kept = members.admit(batch(&again)).unwrap();
        assert_eq!(
            kept.keys,
            [key(2_000_001)],
            "only the one new key is admitted"
        );
        assert_eq!(kept.batch.num_rows(), 1);
        assert_eq!(members.unique(), 2_000_001);
        let per_member = members.bytes() as f64 / 2_000_001.0;
        assert!(per_member < 22.0, "{per_member:.1} bytes a member");
    }

    #[test]
    fn later_sets_take_larger_shares_of_the_keys() {
        let routes = &*ROUTES;
        let mut shares = [0usize; PARTITIONS];
        for top in 0..1u128 << 16 {
            shares[routes.partition(top << 112)] += 1;
        }
        assert!(shares.iter().all(|s| *s > 0));
        let (first, last) = (shares[0] as f64, shares[PARTITIONS - 1] as f64);
        assert!((1.8..2.2).contains(&(last / first)), "{first} .. {last}");
    }

    #[test]
    fn the_set_reserves_its_memory_and_stops_clearly_beyond_the_budget() {
        let pool: Arc<dyn MemoryPool> = Arc::new(
            datafusion::execution::memory_pool::GreedyMemoryPool::new(64 << 10),
        );
        let mut members = Members::within(&pool);
        members.admit(batch(&[1, 2, 3])).unwrap();
        assert!(
            pool.reserved() > 0 && pool.reserved() <= 64 << 10,
            "{}",
            pool.reserved()
        );
        let many: Vec<u128> = (0..100_000u128)
            .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835))
            .collect();
        let err = members.admit(batch(&many)).map(|_| ()).unwrap_err();
        assert!(err.to_string().contains("ACTIVATOR_MEMORY_LIMIT"), "{err}");

        // Once every member is in, the sets go and their memory returns to the pool.
        drop(members);
        let mut members = Members::within(&pool);
        members.admit(batch(&many[..1000])).unwrap();
        assert!(pool.reserved() > 0);
        members.release_sets();
        assert_eq!(pool.reserved(), 0);
        assert_eq!(members.unique(), 1000);
    }
}
