//! Members across the run: duplicates dropped by member key, counts summed.
//!
//! The key is a 128-bit hash of a member's whole identifier tuple (computed with the batch in
//! `identity::column`), so the set costs 16 bytes a member whatever the identifiers are (17
//! with hashbrown's control byte, and up to twice that in capacity). That memory is reserved in
//! the run's memory pool (`crate::memory`) as the set grows, so the query spills earlier to make
//! room, and a segment of more members than the budget can hold stops with an error that says
//! so, instead of the process being killed.

use crate::identity::{MemberBatch, Tally};
use arrow::array::{BooleanArray, RecordBatch};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool, MemoryReservation};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

/// The keys are hashes already: use their low bits as they are.
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
    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64 ^ (v >> 64) as u64;
    }
}

/// Sets the keys are spread over, by their top bits. A batch's keys are inserted one set at a
/// time, so each insert lands in a set small enough to stay in cache: one set of 5 million
/// members spent most of its time waiting on memory.
const PARTITIONS: usize = 256;

fn partition(key: u128) -> usize {
    (key >> 120) as usize
}

type KeySet = hashbrown::HashSet<u128, BuildHasherDefault<KeyHasher>>;

/// Drops members seen before in the run and sums the counts.
pub struct Members {
    seen: Vec<KeySet>,
    pub tally: Tally,
    pub duplicates: u64,
    /// The set's memory in the run's pool, when it has one.
    reservation: Option<MemoryReservation>,
}

impl Default for Members {
    fn default() -> Members {
        Members {
            seen: (0..PARTITIONS).map(|_| KeySet::default()).collect(),
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

    /// The bytes the sets hold: a key and a control byte per slot of capacity.
    fn bytes(&self) -> usize {
        self.seen.iter().map(|s| s.capacity() * 17).sum()
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
        r.try_resize(bytes).map_err(|_| {
            arrow::error::ArrowError::ComputeError(format!(
                "deduplicating {} members needs {} MiB, more than the run's memory budget leaves beside the query; \
                 raise ACTIVATOR_MEMORY_LIMIT (or the job definition's memory)",
                self.seen.iter().map(|s| s.len()).sum::<usize>(),
                bytes >> 20
            ))
        })
    }

    /// The members of `batch` not seen before, and their keys. Of a member that comes twice
    /// in the batch, the first row is kept.
    pub fn admit(
        &mut self,
        batch: MemberBatch,
    ) -> Result<(RecordBatch, Vec<u128>), arrow::error::ArrowError> {
        self.tally.add(&batch.tally);
        let keys = &batch.keys;
        // The rows in partition order (a counting sort, stable, so first rows stay first).
        let mut starts = [0usize; PARTITIONS + 1];
        for k in keys {
            starts[partition(*k) + 1] += 1;
        }
        for p in 0..PARTITIONS {
            starts[p + 1] += starts[p];
        }
        let mut order = vec![0u32; keys.len()];
        for (row, k) in keys.iter().enumerate() {
            let slot = &mut starts[partition(*k)];
            order[*slot] = row as u32;
            *slot += 1;
        }
        let mut keep = vec![false; keys.len()];
        for row in order {
            let key = keys[row as usize];
            keep[row as usize] = self.seen[partition(key)].insert(key);
        }
        self.account()?;
        let dropped = keep.iter().filter(|k| !**k).count();
        if dropped == 0 {
            return Ok((batch.batch, batch.keys));
        }
        self.duplicates += dropped as u64;
        let keys = batch
            .keys
            .iter()
            .zip(&keep)
            .filter(|(_, k)| **k)
            .map(|(key, _)| *key)
            .collect();
        let kept = arrow::compute::filter_record_batch(&batch.batch, &BooleanArray::from(keep))?;
        Ok((kept, keys))
    }

    /// Members sent: those admitted, less duplicates.
    pub fn unique(&self) -> u64 {
        self.seen.iter().map(|s| s.len() as u64).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, UInt32Array};

    fn batch(keys: &[u128]) -> MemberBatch {
        let rows = UInt32Array::from_iter_values(0..keys.len() as u32);
        MemberBatch {
            batch: RecordBatch::try_from_iter([("row", Arc::new(rows) as _)]).unwrap(),
            keys: keys.to_vec(),
            tally: Tally::default(),
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
        let (first, keys) = members
            .admit(batch(&[high(7, 1), high(200, 1), high(7, 1), high(0, 5)]))
            .unwrap();
        assert_eq!(
            rows(&first),
            [0, 1, 3],
            "the second row of a member is dropped"
        );
        assert_eq!(keys, [high(7, 1), high(200, 1), high(0, 5)]);
        let (second, _) = members
            .admit(batch(&[high(0, 5), high(200, 2), high(7, 1)]))
            .unwrap();
        assert_eq!(rows(&second), [1], "members of earlier batches are dropped");
        assert_eq!(members.unique(), 4);
        assert_eq!(members.duplicates, 3);
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
    }
}
