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
use datafusion::common::{human_readable_size, resources_datafusion_err};
use datafusion::execution::memory_pool::{
    MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation, TrackConsumersPool,
};
use std::num::NonZeroUsize;
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

    /// The memory pool of the query and the deduplication set. When an allocation fails, the
    /// error names the five largest holders, so a user (and we) can see what took the budget.
    pub fn pool(&self) -> Arc<dyn MemoryPool> {
        Arc::new(TrackConsumersPool::new(
            ReservePool::new(self.pool_bytes()),
            NonZeroUsize::new(5).expect("five"),
        ))
    }
}

/// The share of the pool that consumers which can spill leave to those which cannot.
pub const UNSPILLABLE_RESERVE: f64 = 0.25;

/// DataFusion's `FairSpillPool` (consumers that can spill share the pool evenly; those that
/// cannot take what is free), except that the spilling ones, together, leave a quarter of the
/// pool to the others.
///
/// In the fair pool, sorts and aggregates that spill grow to fill the whole pool, and then a
/// consumer that cannot spill finds nothing free. A sort gives back the room it kept for merging
/// its spill files when it spills, and cannot take it back (apache/datafusion#24739): B1 on 30
/// million customers with `DISTINCT` and `ORDER BY` failed so under any budget, 1 GiB or 2 GiB
/// ("Failed to allocate additional 10.0 MB for ExternalSorterMerge[1] ... 3.1 MB remain").
/// Once the spilling operators are done, the reserve is free for the merges and the
/// deduplication set, which cannot spill.
///
/// A spilling consumer that holds nothing yet may also take what is free beyond the reserve:
/// it has nothing to spill, so the fair pool's refusal failed the query. A sort's first batch,
/// sliced from a `DISTINCT`'s output, counts that whole output: 31.1 MB against a fair share of
/// 28.8 MB on CI's machine, with 58 MB free (the 200,000-customer test at 256 MiB).
#[derive(Debug)]
pub struct ReservePool {
    pool_size: usize,
    reserve: usize,
    state: std::sync::Mutex<ReserveState>,
}

#[derive(Debug, Default)]
struct ReserveState {
    num_spill: usize,
    spillable: usize,
    unspillable: usize,
}

impl ReservePool {
    pub fn new(pool_size: usize) -> ReservePool {
        ReservePool {
            pool_size,
            reserve: (pool_size as f64 * UNSPILLABLE_RESERVE) as usize,
            state: Default::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ReserveState> {
        // The counters stay consistent under a panic elsewhere: each change is one statement.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl std::fmt::Display for ReservePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "activator's pool of {}, a quarter kept for consumers that cannot spill",
            human_readable_size(self.pool_size)
        )
    }
}

impl MemoryPool for ReservePool {
    fn name(&self) -> &str {
        "reserve"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        if consumer.can_spill() {
            self.state().num_spill += 1;
        }
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        if consumer.can_spill() {
            let mut state = self.state();
            state.num_spill = state.num_spill.saturating_sub(1);
        }
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        let mut state = self.state();
        match reservation.consumer().can_spill() {
            true => state.spillable += additional,
            false => state.unspillable += additional,
        }
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        let mut state = self.state();
        match reservation.consumer().can_spill() {
            true => state.spillable = state.spillable.saturating_sub(shrink),
            false => state.unspillable = state.unspillable.saturating_sub(shrink),
        }
    }

    fn try_grow(
        &self,
        reservation: &MemoryReservation,
        additional: usize,
    ) -> datafusion::common::Result<()> {
        let mut state = self.state();
        let available = if reservation.consumer().can_spill() {
            // What the spilling consumers share, split evenly among them.
            let shared = self
                .pool_size
                .saturating_sub(state.unspillable.max(self.reserve));
            let fair = (shared / state.num_spill.max(1)).saturating_sub(reservation.size());
            // What is free beyond the reserve: no spilling consumer takes more, so together
            // they never eat into it.
            let free = self
                .pool_size
                .saturating_sub(state.spillable + state.unspillable.max(self.reserve));
            // A consumer that holds nothing has nothing to spill: refused, it fails the query.
            // It may take all that is free (a sort's first batch, sliced from an aggregate's
            // output, is counted with the whole output's buffers), beyond its fair share.
            match reservation.size() {
                0 => fair.max(free),
                _ => fair,
            }
            .min(free)
        } else {
            self.pool_size
                .saturating_sub(state.unspillable + state.spillable)
        };
        if additional > available {
            return Err(resources_datafusion_err!(
                "Failed to allocate additional {} for {} with {} already allocated for this reservation - {} remain available for it in {self}",
                human_readable_size(additional),
                reservation.consumer().name(),
                human_readable_size(reservation.size()),
                human_readable_size(available)
            ));
        }
        match reservation.consumer().can_spill() {
            true => state.spillable += additional,
            false => state.unspillable += additional,
        }
        Ok(())
    }

    fn reserved(&self) -> usize {
        let state = self.state();
        state.spillable + state.unspillable
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.pool_size)
    }
}

/// Sets glibc's malloc to keep more of what is freed, and hands freed memory back to the kernel
/// only while the process holds more than `TRIM_ABOVE` of its budget, checked once a second,
/// for the life of the process.
///
/// By default glibc maps each large allocation (Arrow buffers, row groups) afresh and unmaps it
/// when freed: every batch then touches new pages, and on a virtual machine a page the kernel
/// got back from the host costs far more than a page fault. With allocations up to 32 MiB from
/// the heaps (`M_MMAP_THRESHOLD`), a heap's free top kept up to 64 MiB (`M_TRIM_THRESHOLD`) and
/// no trim below half the budget, B1 on 10 million customers took 135,000 page faults instead
/// of 290,000 (A/B of the same build through an `LD_PRELOAD` shim: system CPU 1.3-2.6 s ->
/// 1.0 s), for 40-90 MiB more at the peak.
///
/// glibc keeps what a thread frees in that thread's heap, and a sort that spilled and merged
/// leaves much of it free: B1 with DISTINCT and ORDER BY on 30 million customers under a 1 GiB
/// budget held 1,056 MiB for a pool of 614 MB, which a container's limit counts.
/// `malloc_trim` releases the free pages inside the heaps too, so it runs whenever resident
/// memory is above `TRIM_ABOVE` of the budget (trimming on every free instead, with
/// `M_TRIM_THRESHOLD` 16 MiB, held 637 MiB there but cost 18 s more in the kernel).
pub fn keep_freed_memory(budget: &Budget) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets allocator parameters, under the allocator's own lock.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
        }
        let trim_above = (budget.bytes as f64 * TRIM_ABOVE) as u64;
        let _ = std::thread::Builder::new()
            .name("malloc-trim".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(1));
                    if resident_bytes().is_some_and(|r| r > trim_above) {
                        // SAFETY: malloc_trim only releases free memory, under the allocator's
                        // locks.
                        unsafe {
                            libc::malloc_trim(0);
                        }
                    }
                }
            });
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = budget;
}

/// The share of the budget above which freed memory is handed back to the kernel.
pub const TRIM_ABOVE: f64 = 0.5;

/// The process's resident memory of its own (`/proc/self/statm`: resident less shared, so the
/// pages of files it maps, which the kernel may take back, do not count), where Linux tells it.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let mut fields = statm.split_whitespace().skip(1);
    let resident: u64 = fields.next()?.parse().ok()?;
    let shared: u64 = fields.next()?.parse().ok()?;
    let pages = resident.saturating_sub(shared);
    // SAFETY: sysconf only reads a system parameter.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    (page > 0).then(|| pages * page as u64)
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
    fn spilling_consumers_leave_a_quarter_of_the_pool_to_the_others() {
        let pool: Arc<dyn MemoryPool> = Arc::new(ReservePool::new(1000));
        let sort = MemoryConsumer::new("sort")
            .with_can_spill(true)
            .register(&pool);
        let aggregate = MemoryConsumer::new("aggregate")
            .with_can_spill(true)
            .register(&pool);
        sort.try_grow(375).unwrap();
        assert!(sort.try_grow(1).is_err(), "each spiller has half of 750");
        aggregate.try_grow(375).unwrap();
        let merge = MemoryConsumer::new("merge").register(&pool);
        merge.try_grow(250).unwrap();
        assert!(merge.try_grow(1).is_err(), "the pool is full");
        drop(aggregate);
        merge.try_grow(375).unwrap();
        assert!(
            sort.try_grow(1).is_err(),
            "spillers share what the others leave: 1000 - 625"
        );
        sort.shrink(375);
        let err = sort.try_grow(376).unwrap_err().to_string();
        assert!(err.contains("for sort"), "{err}");
        assert_eq!(pool.reserved(), 625);
    }

    #[test]
    fn a_spilling_consumer_that_holds_nothing_may_take_what_is_free_beyond_the_reserve() {
        let pool: Arc<dyn MemoryPool> = Arc::new(ReservePool::new(1000));
        let spiller = |name: &str| {
            MemoryConsumer::new(name)
                .with_can_spill(true)
                .register(&pool)
        };
        let (aggregate, other, sort) = (spiller("aggregate"), spiller("other"), spiller("sort"));
        aggregate.try_grow(200).unwrap();
        other.try_grow(200).unwrap();
        // The fair share is 750 / 3 = 250; 1000 - 400 held - 250 kept in reserve = 350 is free.
        assert!(sort.try_grow(351).is_err(), "the reserve stays kept");
        sort.try_grow(300).unwrap();
        assert!(sort.try_grow(1).is_err(), "once it holds some, it spills");
        assert_eq!(pool.reserved(), 700);
        // The others keep to what is free beyond the reserve, even within their fair share.
        aggregate.try_grow(50).unwrap();
        assert!(other.try_grow(1).is_err(), "the reserve stays kept");
        let merge = MemoryConsumer::new("merge").register(&pool);
        merge.try_grow(250).unwrap();
    }

    #[test]
    fn without_a_setting_or_a_cgroup_limit_the_budget_is_the_machine() {
        let b = Budget::of_this_process().unwrap();
        assert!(b.bytes > 0);
        if b.source == "the machine's memory" {
            assert_eq!(b.bytes, physical_memory());
        }
    }
}
