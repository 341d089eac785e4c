//! Members across the run: duplicates dropped by member key, counts summed.
//!
//! The key is a 128-bit hash of a member's whole identifier tuple (computed with the batch in
//! `identity::column`), so the set costs 16 bytes a member whatever the identifiers are.

use crate::identity::{MemberBatch, Tally};
use arrow::array::{BooleanArray, RecordBatch};
use std::hash::{BuildHasherDefault, Hasher};

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

/// Drops members seen before in the run and sums the counts.
#[derive(Default)]
pub struct Members {
    seen: hashbrown::HashSet<u128, BuildHasherDefault<KeyHasher>>,
    pub tally: Tally,
    pub duplicates: u64,
}

impl Members {
    pub fn new() -> Members {
        Members::default()
    }

    /// The members of `batch` not seen before, and their keys.
    pub fn admit(
        &mut self,
        batch: MemberBatch,
    ) -> Result<(RecordBatch, Vec<u128>), arrow::error::ArrowError> {
        self.tally.add(&batch.tally);
        let keep: Vec<bool> = batch.keys.iter().map(|k| self.seen.insert(*k)).collect();
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
        self.seen.len() as u64
    }
}
