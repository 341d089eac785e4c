//! Stopping well on SIGTERM, which AWS Batch sends on a timeout, a Spot reclaim or a scale-in,
//! followed by SIGKILL 30 seconds later.
//!
//! On SIGTERM the run starts no new platform request (`Service` asks `requested()` before each
//! one, and a retry's wait ends at once), lets the requests in flight finish, so their batches
//! are acknowledged in the checkpoints, and fails with a transient error: exit 3, which the job
//! definition retries, and the retry resumes from the checkpoints. `main` gives the run
//! `GRACE` to get there and exits 3 itself after that, well before the SIGKILL.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::Notify;

/// How long a run may take to stop after SIGTERM before the process exits anyway.
pub const GRACE: Duration = Duration::from_secs(20);

static REQUESTED: AtomicBool = AtomicBool::new(false);
static NOTIFY: Notify = Notify::const_new();

/// Asks the run to stop (SIGTERM was received).
pub fn request() {
    REQUESTED.store(true, Ordering::SeqCst);
    NOTIFY.notify_waiters();
}

/// Whether a stop was asked for.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// Completes once a stop is asked for.
pub async fn wait() {
    loop {
        let notified = NOTIFY.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if requested() {
            return;
        }
        notified.await;
    }
}

static IN_FLIGHT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A platform call under way (`Service::call`), counted while it lives, so that after SIGTERM
/// the process waits for the calls in flight (and their checkpoint writes) before it exits,
/// even when the run itself has already returned its error.
pub struct InFlight(());

impl InFlight {
    pub fn enter() -> InFlight {
        IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
        InFlight(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Waits until no platform call is under way, or `deadline`; then a moment more, for the
/// checkpoint written after a call's answer.
pub async fn drain(deadline: tokio::time::Instant) {
    while IN_FLIGHT.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    tokio::time::sleep(Duration::from_millis(300).min(left)).await;
}

/// The error a run stops with after SIGTERM.
pub fn stopped(what: &str) -> crate::Error {
    crate::Error::transient(format!(
        "{what}: stopped on SIGTERM (a timeout, a Spot reclaim or a scale-in) before sending it; \
         the acknowledged batches are in the checkpoints: rerun the same command to resume"
    ))
}
