//! Checkpoints: which batches of a delivery the platform acknowledged, and the session or job it
//! opened, written after every acknowledgement so a rerun after a crash sends only the rest.
//!
//! Batching is deterministic for a run (the batches are cut from the run's sorted delta files),
//! so a batch is known by its phase (`add`, `remove`, `replace`) and its index.

//!
//! The checkpoint does not know where it is kept: the state store gives it a writer
//! (`StateStore::checkpoint`), so destinations depend on no part of the state.

use crate::error::Result;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Writes a checkpoint's data where it is kept.
pub type Writer = Arc<dyn Fn(CheckpointData) -> BoxFuture<'static, Result<()>> + Send + Sync>;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CheckpointData {
    /// Acknowledged batch indices per phase.
    pub acked: BTreeMap<String, BTreeSet<u64>>,
    /// Platform sessions or jobs (Meta's session id, the start time of a Google replace) per phase.
    pub sessions: BTreeMap<String, String>,
    /// Phases whose delivery finished (sessions closed, requests processed).
    pub finished: BTreeSet<String>,
    /// The destination's sync is committed.
    pub committed: bool,
}

/// A destination's checkpoint for one run; kept in memory only when the run has no state.
pub struct Checkpoint {
    writer: Option<Writer>,
    data: tokio::sync::Mutex<CheckpointData>,
}

impl Checkpoint {
    /// A checkpoint that records nothing (runs without state, `plan`).
    pub fn in_memory() -> Checkpoint {
        Checkpoint {
            writer: None,
            data: Default::default(),
        }
    }

    /// A checkpoint as an earlier attempt left it (`data`), written with `writer` on each change.
    pub fn stored(data: CheckpointData, writer: Writer) -> Checkpoint {
        Checkpoint {
            writer: Some(writer),
            data: tokio::sync::Mutex::new(data),
        }
    }

    async fn update(&self, f: impl FnOnce(&mut CheckpointData)) -> Result<()> {
        let mut data = self.data.lock().await;
        f(&mut data);
        // Written under the lock, so the file never goes back in time.
        if let Some(write) = &self.writer {
            write(data.clone()).await?;
        }
        Ok(())
    }

    pub async fn is_acked(&self, phase: &str, index: u64) -> bool {
        self.data
            .lock()
            .await
            .acked
            .get(phase)
            .is_some_and(|s| s.contains(&index))
    }

    pub async fn acked_count(&self, phase: &str) -> u64 {
        self.data
            .lock()
            .await
            .acked
            .get(phase)
            .map_or(0, |s| s.len() as u64)
    }

    pub async fn ack(&self, phase: &str, index: u64) -> Result<()> {
        self.update(|d| {
            d.acked.entry(phase.to_string()).or_default().insert(index);
        })
        .await
    }

    pub async fn session(&self, phase: &str) -> Option<String> {
        self.data.lock().await.sessions.get(phase).cloned()
    }

    pub async fn set_session(&self, phase: &str, session: &str) -> Result<()> {
        self.update(|d| {
            d.sessions.insert(phase.to_string(), session.to_string());
        })
        .await
    }

    pub async fn is_finished(&self, phase: &str) -> bool {
        self.data.lock().await.finished.contains(phase)
    }

    pub async fn finish(&self, phase: &str) -> Result<()> {
        self.update(|d| {
            d.finished.insert(phase.to_string());
        })
        .await
    }

    pub async fn is_committed(&self) -> bool {
        self.data.lock().await.committed
    }

    pub async fn committed(&self) -> Result<()> {
        self.update(|d| d.committed = true).await
    }
}
