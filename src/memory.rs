//! The run's memory budget: most of what the machine or container allows, shared by the query
//! (DataFusion's sorts, aggregates and joins, which spill to `TMPDIR` beyond their share) and
//! the deduplication set (which cannot spill, and fails the run with a clear error beyond it).
//!
//! Without a budget DataFusion's pool is unbounded: a large `ORDER BY`, `DISTINCT` or join grows
//! until the kernel kills the process (AWS Batch reports that as `OutOfMemoryError: Container
//! killed`, with no word of what to change). The budget is `ACTIVATOR_MEMORY_LIMIT` (`1GiB`,
//! `800MiB`, `2G`, or bytes), else the container's cgroup limit (what AWS Batch sets from the
//! job definition's memory), else the machine's memory. Of it, `QUERY_SHARE` goes to the
//! memory pool of the query and the deduplication set; the rest is left for what is not
//! accounted: Arrow batches in flight, the spill and sort buffers of the membership, the
//! destinations' requests, the allocator's slack.

use crate::error::{Error, Result};
use datafusion::execution::memory_pool::{FairSpillPool, MemoryPool};
use std::sync::Arc;

/// The share of the budget the memory pool gets.
pub const QUERY_SHARE: f64 = 0.6;

/// How much memory a run may use, and where that figure came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Budget {
    pub bytes: u64,
    pub source: &'static str,
}

impl Budget {
    /// The run's budget from the environment, the cgroup or the machine.
    pub fn of_this_process() -> Result<Budget> {
        if let Ok(text) = std::env::var("ACTIVATOR_MEMORY_LIMIT")
            && !text.trim().is_empty()
        {
            let bytes = parse_size(&text).filter(|b| *b >= 16 << 20).ok_or_else(|| {
                Error::config(format!(
                    "ACTIVATOR_MEMORY_LIMIT={text}: give a size of at least 16MiB, such as 1GiB, 800MiB or 2G"
                ))
            })?;
            return Ok(Budget {
                bytes,
                source: "ACTIVATOR_MEMORY_LIMIT",
            });
        }
        if let Some(bytes) = cgroup_limit() {
            return Ok(Budget {
                bytes,
                source: "the container's memory limit",
            });
        }
        Ok(Budget {
            bytes: physical_memory(),
            source: "the machine's memory",
        })
    }

    /// The budget of one of `runs` runs at once in this process (at least one).
    pub fn shared_by(self, runs: usize) -> Budget {
        Budget {
            bytes: self.bytes / runs.max(1) as u64,
            ..self
        }
    }

    /// The bytes of the memory pool: `QUERY_SHARE` of the budget.
    pub fn pool_bytes(&self) -> usize {
        (self.bytes as f64 * QUERY_SHARE) as usize
    }

    /// The memory pool of the query and the deduplication set.
    pub fn pool(&self) -> Arc<dyn MemoryPool> {
        Arc::new(FairSpillPool::new(self.pool_bytes()))
    }
}

/// `1GiB`, `800MiB`, `512M`, `2G`, `1.5GiB`, `1048576`: bytes. K, M, G and T are powers of 1024
/// with or without `i`/`iB`/`B`, as memory sizes usually are.
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number.parse().ok()?;
    let unit = unit.trim().to_ascii_lowercase();
    let shift = match unit.trim_end_matches('b').trim_end_matches('i') {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => return None,
    };
    let bytes = number * (1u64 << shift) as f64;
    (bytes.is_finite() && bytes >= 1.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// The cgroup's memory limit (v2 `memory.max`, v1 `memory.limit_in_bytes`), if one is set.
fn cgroup_limit() -> Option<u64> {
    let v2 = std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok();
    let v1 = || std::fs::read_to_string("/sys/fs/cgroup/memory/memory.limit_in_bytes").ok();
    let text = v2.or_else(v1)?;
    let bytes: u64 = text.trim().parse().ok()?; // "max" (no limit) does not parse
    // cgroup v1 writes a number near 2^63 for "no limit".
    (bytes < physical_memory().saturating_mul(4)).then_some(bytes)
}

fn physical_memory() -> u64 {
    // SAFETY: sysconf only reads system parameters.
    let (pages, size) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    if pages > 0 && size > 0 {
        pages as u64 * size as u64
    } else {
        4 << 30
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size("800MiB"), Some(800 << 20));
        assert_eq!(parse_size("512M"), Some(512 << 20));
        assert_eq!(parse_size(" 2g "), Some(2 << 30));
        assert_eq!(parse_size("1.5GiB"), Some(3 << 29));
        assert_eq!(parse_size("1048576"), Some(1 << 20));
        for bad in ["", "GiB", "1 lots", "-1G", "1e400", "0"] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_budget_is_at_most_the_machine() {
        let b = Budget::of_this_process().unwrap();
        assert!(b.bytes > 0 && b.bytes <= physical_memory().max(b.bytes));
    }
}
