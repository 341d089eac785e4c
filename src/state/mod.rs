//! Sync state: what each destination was last synced with, the run in progress and its
//! checkpoints, and the run reports, kept in an object store (`s3://…` or a local folder).
//!
//! Layout below the state URL, per job:
//!
//! ```text
//! {job}/destinations/{dest}/syncs/{generation:08}.json   committed syncs; the newest is the head
//! {job}/runs/{date}/pending.json                         a run whose deltas are computed, sending
//! {job}/runs/{date}/{run_id}/members.arrow               that run's members (hashes, keyed)
//! {job}/runs/{date}/{run_id}/keys.arrow                  their keys, sorted, with row numbers
//! {job}/runs/{date}/{run_id}/{dest}.adds.arrow           members to add, to remove
//! {job}/runs/{date}/{run_id}/{dest}.removes.arrow
//! {job}/runs/{date}/{run_id}/{dest}.checkpoint.json      batches the platform acknowledged
//! {job}/runs/{date}/done.json                            the date's finished run
//! {job}/reports/{date}/{run_id}.json                     run reports
//! ```
//!
//! Members and keys files are Arrow IPC files; runs of earlier builds wrote Parquet
//! (`.parquet`), which is still read (see `membership`).
//!
//! A sync commits by creating the next generation's file with a conditional put (create only if
//! absent): of two runs racing on one destination, the second fails to create it and stops with
//! a message instead of overwriting. Files hold member keys and hashes, never raw identifiers.

pub mod digests;
pub mod keyset;
pub mod mapped;
pub mod membership;
pub mod transfer;

use crate::destinations::SyncMode;
use crate::destinations::checkpoint::{self, Checkpoint};
use crate::error::{Error, Result};
use crate::storage;
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use url::Url;

/// A committed sync: the membership a destination holds since.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SyncHead {
    pub generation: u64,
    pub run_date: String,
    pub run_id: String,
    pub mode: SyncMode,
    /// The membership: its members file and its sorted keys, relative to the job's folder.
    pub members_file: String,
    pub keys_file: String,
    pub members: u64,
    pub committed_at: String,
}

/// A run that has computed what to send and is sending it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Pending {
    pub run_id: String,
    pub run_date: String,
    pub members_file: String,
    pub keys_file: String,
    pub members: u64,
    /// Counts of the read phase, for the report of a resumed run.
    pub read: serde_json::Value,
    pub destinations: Vec<PendingDestination>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PendingDestination {
    pub name: String,
    pub mode: SyncMode,
    /// The head this run's diff was computed against.
    pub base_generation: u64,
    pub previous_members: u64,
    pub adds_file: String,
    pub adds: u64,
    pub removes_file: String,
    pub removes: u64,
    /// Sent while the segment was read (`send_adds_while_reading`): only its sync is left to
    /// commit.
    #[serde(default)]
    pub streamed: bool,
    /// Its removes leave out the identifiers current members hold (TikTok, Snap). Pending runs
    /// stored before this existed cut their batches without, and resume so.
    #[serde(default)]
    pub strip_held_identifiers: bool,
    /// The batch limits its batches are cut with. Checkpoints name batches by number, so a
    /// resume must cut the same batches even if the job file's `batch` changed in between.
    /// (Pending runs stored before this existed resume with the job file's limits.)
    #[serde(default)]
    pub batch: Option<crate::batch::BatchLimits>,
}

/// The date's finished run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Done {
    pub run_id: String,
    pub report_file: String,
    pub finished_at: String,
}

/// Whether `rel` is a plain relative path, which cannot lead out of the folder it is joined to.
fn within(rel: &str) -> bool {
    std::path::Path::new(rel)
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)))
}

/// The largest state JSON file (a pending run, a checkpoint, a sync head, a report) read.
pub const MAX_STATE_JSON_BYTES: u64 = 64 << 20;

/// A download into a local file going on in a task of its own (`StateStore::fetch_in_background`).
pub type Download = tokio::task::JoinHandle<Result<()>>;

/// The state store of one job.
#[derive(Clone)]
pub struct StateStore {
    pub url: Url,
    store: Arc<dyn ObjectStore>,
    root: Path,
    job: String,
}

impl StateStore {
    /// Opens the job's state; `create` makes a local state folder if there is none.
    pub fn open(url: &Url, job: &str, create: bool) -> Result<StateStore> {
        let (store, root) = storage::store_for(url)?;
        if create
            && url.scheme() == "file"
            && let Ok(p) = url.to_file_path()
        {
            std::fs::create_dir_all(&p).map_err(|e| {
                Error::config(format!(
                    "cannot create the state folder {}: {e}; set `state` in the job to a writable folder or an s3:// URL",
                    p.display()
                ))
            })?;
        }
        Ok(StateStore {
            url: url.clone(),
            store,
            root,
            job: job.to_string(),
        })
    }

    /// A path below the job's folder.
    pub fn path(&self, rel: &str) -> Path {
        let mut p = self.root.clone().join(self.job.as_str());
        for part in rel.split('/').filter(|s| !s.is_empty()) {
            p = p.join(part);
        }
        p
    }

    /// A URL for a path below the job's folder, for messages.
    pub fn display(&self, rel: &str) -> String {
        format!("{}{}/{}", self.url, self.job, rel)
    }

    /// A failure of the store that may pass (a local file error, serialization): exit 3.
    fn at(&self, e: impl std::fmt::Display) -> Error {
        Error::transient(format!("state store {}: {e}", self.url))
    }

    /// An object store error, classed by its kind: a permission or not-found error fails the
    /// same way on every retry (exit 2), a network or server error may pass (exit 3).
    fn store_error(&self, e: object_store::Error) -> Error {
        let class = crate::error::object_store_class(&e);
        let hint = match class {
            crate::ErrorClass::Config => {
                "; check that the job's role may read, write and list the state prefix and that the bucket exists"
            }
            _ => "",
        };
        Error {
            class,
            message: format!("state store {}: {e}{hint}", self.url),
        }
    }

    pub async fn read_json<T: for<'de> Deserialize<'de>>(&self, rel: &str) -> Result<Option<T>> {
        match self.store.get(&self.path(rel)).await {
            Ok(r) => {
                // State files are kilobytes; one that is not was not written by activator.
                if r.meta.size > MAX_STATE_JSON_BYTES {
                    return Err(Error::config(format!(
                        "{}: {} bytes, more than the {} MiB a state file of activator takes; move it away to start this job's state afresh",
                        self.display(rel),
                        r.meta.size,
                        MAX_STATE_JSON_BYTES >> 20
                    )));
                }
                let bytes = r.bytes().await.map_err(|e| self.store_error(e))?;
                let value = serde_json::from_slice(&bytes).map_err(|e| {
                    Error::config(format!(
                        "{}: unreadable state ({e}); move it away to start this job's state afresh",
                        self.display(rel)
                    ))
                })?;
                Ok(Some(value))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.store_error(e)),
        }
    }

    /// A destination's checkpoint at `rel`, as an earlier attempt left it, written back on
    /// every change.
    pub async fn checkpoint(&self, rel: String) -> Result<Checkpoint> {
        let data = self.read_json(&rel).await?.unwrap_or_default();
        let (state, rel) = (self.clone(), Arc::new(rel));
        let writer: checkpoint::Writer = Arc::new(move |data| {
            let (state, rel) = (state.clone(), rel.clone());
            Box::pin(async move { state.write_json(&rel, &data).await })
        });
        Ok(Checkpoint::stored(data, writer))
    }

    pub async fn write_json<T: Serialize>(&self, rel: &str, value: &T) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(value).map_err(|e| self.at(e))?;
        self.store
            .put(&self.path(rel), PutPayload::from(Bytes::from(bytes)))
            .await
            .map_err(|e| self.store_error(e))?;
        Ok(())
    }

    /// Creates `rel` only if it does not exist; `false` if it does.
    pub async fn create_json<T: Serialize>(&self, rel: &str, value: &T) -> Result<bool> {
        let bytes = serde_json::to_vec_pretty(value).map_err(|e| self.at(e))?;
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(
                &self.path(rel),
                PutPayload::from(Bytes::from(bytes)),
                options,
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(object_store::Error::Precondition { .. }) => Ok(false),
            Err(e) => Err(self.store_error(e)),
        }
    }

    pub async fn delete(&self, rel: &str) -> Result<()> {
        match self.store.delete(&self.path(rel)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.store_error(e)),
        }
    }

    /// Whether `upload` moves a file of `dir` rather than copying it: a local store on the same
    /// filesystem (by device; a bind mount of the same one would still be copied).
    pub fn moves_from(&self, dir: &std::path::Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        let Ok(root) = self.url.to_file_path() else {
            return false;
        };
        let device = |p: &std::path::Path| {
            p.ancestors()
                .find_map(|a| std::fs::metadata(a).ok())
                .map(|m| m.dev())
        };
        self.url.scheme() == "file" && device(&root).is_some() && device(&root) == device(dir)
    }

    /// Uploads a local file to `rel` (moves it, in a local state store on the same disk).
    pub async fn upload(&self, local: &std::path::Path, rel: &str) -> Result<()> {
        if self.url.scheme() == "file"
            && within(rel)
            && let Ok(root) = self.url.to_file_path()
        {
            let target = root.join(&self.job).join(rel);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(|e| self.at(e))?;
            }
            if std::fs::rename(local, &target).is_ok() {
                return Ok(());
            }
        }
        transfer::upload(self.store.clone(), self.path(rel), local)
            .await
            .map_err(|e| {
                self.transfer_error(e, local)
                    .context(format!("storing {}", self.display(rel)))
            })
    }

    /// A local path to read `rel` from: the file itself in a local state store, else a download
    /// into `dir`.
    pub async fn fetch(&self, rel: &str, dir: &std::path::Path) -> Result<std::path::PathBuf> {
        if let Some(p) = self.in_place(rel) {
            return Ok(p);
        }
        let local = dir.join(rel.replace('/', "_"));
        self.download(rel, &local).await?;
        Ok(local)
    }

    /// As `fetch`, but the download (if any) goes on in a task of its own: the path, and the
    /// task, to be awaited before the file is read.
    pub fn fetch_in_background(
        &self,
        rel: &str,
        dir: &std::path::Path,
    ) -> (std::path::PathBuf, Option<Download>) {
        if let Some(p) = self.in_place(rel) {
            return (p, None);
        }
        let local = dir.join(rel.replace('/', "_"));
        let (state, rel, to) = (self.clone(), rel.to_string(), local.clone());
        let task = tokio::spawn(async move { state.download(&rel, &to).await });
        (local, Some(task))
    }

    /// `rel` itself, in a local state store that has it. Only a plain relative path is looked
    /// up so: the names of state files come from state files (a sync head names its members),
    /// and one edited to name `../..` or `/etc/...` is then looked for in the store, where it
    /// is not found, never read from elsewhere on this machine.
    fn in_place(&self, rel: &str) -> Option<std::path::PathBuf> {
        if self.url.scheme() == "file"
            && within(rel)
            && let Ok(root) = self.url.to_file_path()
        {
            let p = root.join(&self.job).join(rel);
            if p.is_file() {
                return Some(p);
            }
        }
        None
    }

    /// Downloads `rel` into a local file.
    pub async fn download(&self, rel: &str, local: &std::path::Path) -> Result<()> {
        let r = self.store.get(&self.path(rel)).await.map_err(|e| {
            self.store_error(e).context(format!(
                "cannot read {} (state written by an earlier run)",
                self.display(rel)
            ))
        })?;
        transfer::download(r, local).await.map_err(|e| {
            self.transfer_error(e, local)
                .context(format!("fetching {}", self.display(rel)))
        })
    }

    fn transfer_error(&self, e: transfer::TransferError, local: &std::path::Path) -> Error {
        match e {
            transfer::TransferError::Local(e) => {
                Error::transient(format!("{}: {e}", local.display()))
            }
            transfer::TransferError::Store(e) => self.store_error(e),
        }
    }

    fn syncs(destination: &str) -> String {
        format!("destinations/{destination}/syncs")
    }

    /// Deletes the run folders (`runs/{date}/{run_id}/`) of finished dates before `before`
    /// (YYYY-MM-DD) that no destination's current sync refers to: the members, diffs and
    /// checkpoints of old runs, which nothing reads again. An unfinished date (no `done.json`, or
    /// a `pending.json`) is kept whole, since a rerun resumes it; reports and `done.json` stay.
    /// Returns the files and bytes deleted.
    pub async fn prune(&self, before: &str) -> Result<(u64, u64)> {
        let mut referenced = std::collections::BTreeSet::new();
        for destination in self.children("destinations").await? {
            if let Some(head) = self.head(&destination).await? {
                for file in [&head.members_file, &head.keys_file] {
                    if let Some((folder, _)) = file.rsplit_once('/') {
                        referenced.insert(folder.to_string());
                    }
                }
            }
        }
        let (mut files, mut bytes) = (0, 0);
        for date in self.children("runs").await? {
            if date.as_str() >= before
                || self
                    .read_json::<Done>(&Self::done_file(&date))
                    .await?
                    .is_none()
                || self
                    .read_json::<serde_json::Value>(&Self::pending_file(&date))
                    .await?
                    .is_some()
            {
                continue;
            }
            for run_id in self.children(&format!("runs/{date}")).await? {
                let folder = Self::run_dir(&date, &run_id);
                if referenced.contains(&folder) {
                    continue;
                }
                let objects: Vec<_> = self
                    .store
                    .list(Some(&self.path(&folder)))
                    .try_collect()
                    .await
                    .map_err(|e| self.store_error(e))?;
                for o in objects {
                    match self.store.delete(&o.location).await {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                        Err(e) => return Err(self.store_error(e)),
                    }
                    files += 1;
                    bytes += o.size;
                }
            }
        }
        Ok((files, bytes))
    }

    /// The names of the folders directly below `rel`.
    async fn children(&self, rel: &str) -> Result<Vec<String>> {
        match self.store.list_with_delimiter(Some(&self.path(rel))).await {
            Ok(listing) => Ok(listing
                .common_prefixes
                .iter()
                .filter_map(|p| p.filename().map(str::to_string))
                .collect()),
            Err(object_store::Error::NotFound { .. }) => Ok(vec![]),
            Err(e) => Err(self.store_error(e)),
        }
    }

    /// The unfinished runs of every date: `(date, pending run)`.
    pub async fn pending_runs(&self) -> Result<Vec<(String, Pending)>> {
        let mut out = vec![];
        for date in self.children("runs").await? {
            if let Some(p) = self
                .read_json::<Pending>(&Self::pending_file(&date))
                .await?
            {
                out.push((date, p));
            }
        }
        Ok(out)
    }

    /// The destination's last committed sync.
    pub async fn head(&self, destination: &str) -> Result<Option<SyncHead>> {
        let prefix = self.path(&Self::syncs(destination));
        let objects: Vec<_> = match self.store.list(Some(&prefix)).try_collect().await {
            Ok(o) => o,
            Err(object_store::Error::NotFound { .. }) => vec![],
            Err(e) => return Err(self.store_error(e)),
        };
        let newest = objects
            .iter()
            .filter_map(|o| o.location.filename().map(str::to_string))
            .filter(|n| n.ends_with(".json"))
            .max();
        let Some(name) = newest else {
            return Ok(None);
        };
        let rel = format!("{}/{name}", Self::syncs(destination));
        let head: Option<SyncHead> = self.read_json(&rel).await?;
        // The newest is found by its name and the next is committed by its content: a head
        // copied or restored under another name would have the next run commit a generation
        // that is not the newest, unseen by the run after it.
        match head {
            Some(h) if format!("{:08}.json", h.generation) != name => Err(Error::config(format!(
                "{}: holds sync generation {}, not the one its name says; it was copied or \
                 edited: restore the destination's syncs folder as activator wrote it",
                self.display(&rel),
                h.generation
            ))),
            head => Ok(head),
        }
    }

    /// Commits a sync as the next generation; fails if another run committed it first.
    pub async fn commit(&self, destination: &str, head: &SyncHead) -> Result<()> {
        let rel = format!("{}/{:08}.json", Self::syncs(destination), head.generation);
        if !self.create_json(&rel, head).await? {
            return Err(Error::transient(format!(
                "destination {destination}: another run of job {} committed sync {} first (it ran at the same time); \
                 this run's changes were sent, but its state is not recorded: rerun the job to sync against the newer state",
                self.job, head.generation
            )));
        }
        Ok(())
    }

    pub fn run_dir(run_date: &str, run_id: &str) -> String {
        format!("runs/{run_date}/{run_id}")
    }

    pub fn pending_file(run_date: &str) -> String {
        format!("runs/{run_date}/pending.json")
    }

    pub fn done_file(run_date: &str) -> String {
        format!("runs/{run_date}/done.json")
    }

    pub fn report_file(run_date: &str, run_id: &str) -> String {
        format!("reports/{run_date}/{run_id}.json")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(generation: u64, run_id: &str) -> SyncHead {
        SyncHead {
            generation,
            run_date: "2026-11-25".into(),
            run_id: run_id.into(),
            mode: SyncMode::Mirror,
            members_file: "runs/x/members.arrow".into(),
            keys_file: "runs/x/keys.arrow".into(),
            members: 1,
            committed_at: String::new(),
        }
    }

    #[test]
    fn files_are_moved_into_a_local_store_on_the_same_filesystem_only() {
        let dir = tempfile::tempdir().unwrap();
        let local =
            StateStore::open(&Url::from_directory_path(dir.path()).unwrap(), "job", true).unwrap();
        // The job's folder need not exist yet: its nearest existing parent decides.
        assert!(local.moves_from(dir.path()));
        assert!(!local.moves_from(std::path::Path::new("/proc")));
        let s3 =
            StateStore::open(&Url::parse("s3://bucket/state/").unwrap(), "job", false).unwrap();
        assert!(!s3.moves_from(dir.path()));
    }

    #[tokio::test]
    async fn of_two_runs_committing_the_same_generation_the_second_fails() {
        let dir = tempfile::tempdir().unwrap();
        let url = Url::from_directory_path(dir.path()).unwrap();
        let state = StateStore::open(&url, "job", true).unwrap();
        assert!(state.head("meta").await.unwrap().is_none());
        state.commit("meta", &head(1, "first")).await.unwrap();
        let err = state.commit("meta", &head(1, "second")).await.unwrap_err();
        assert!(
            err.message
                .contains("another run of job job committed sync 1 first"),
            "{err}"
        );
        assert_eq!(state.head("meta").await.unwrap().unwrap().run_id, "first");
        state.commit("meta", &head(2, "third")).await.unwrap();
        assert_eq!(state.head("meta").await.unwrap().unwrap().generation, 2);
    }

    #[tokio::test]
    async fn a_head_whose_name_is_not_its_generation_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let url = Url::from_directory_path(dir.path()).unwrap();
        let state = StateStore::open(&url, "job", true).unwrap();
        state.commit("meta", &head(1, "first")).await.unwrap();
        // Restored under a newer name than its generation's.
        let syncs = dir.path().join("job/destinations/meta/syncs");
        std::fs::copy(syncs.join("00000001.json"), syncs.join("00000007.json")).unwrap();
        let err = state.head("meta").await.unwrap_err();
        assert_eq!(err.class, crate::ErrorClass::Config);
        assert!(
            err.message
                .contains("00000007.json: holds sync generation 1"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_state_file_named_outside_the_store_is_not_read_from_this_machine() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("state");
        let state =
            StateStore::open(&Url::from_directory_path(&root).unwrap(), "job", true).unwrap();
        std::fs::create_dir_all(root.join("job/runs/x")).unwrap();
        std::fs::write(root.join("job/runs/x/keys.arrow"), b"keys").unwrap();
        std::fs::write(dir.path().join("secret"), b"not the state's").unwrap();
        let work = tempfile::tempdir().unwrap();
        let found = state.fetch("runs/x/keys.arrow", work.path()).await.unwrap();
        assert_eq!(std::fs::read(found).unwrap(), b"keys");
        let secret = dir.path().join("secret").display().to_string();
        for rel in ["../../secret", secret.as_str()] {
            let err = state.fetch(rel, work.path()).await.unwrap_err();
            assert!(err.message.contains("cannot read"), "{rel}: {err}");
        }
    }

    #[tokio::test]
    async fn a_state_file_that_cannot_be_stored_or_fetched_is_named_with_the_local_file() {
        let dir = tempfile::tempdir().unwrap();
        let url = Url::from_directory_path(dir.path()).unwrap();
        let state = StateStore::open(&url, "job", true).unwrap();
        let gone = dir.path().join("scratch").join("members.arrow");
        let err = state
            .upload(&gone, "runs/x/members.arrow")
            .await
            .unwrap_err();
        assert_eq!(err.class, crate::ErrorClass::Transient, "{err}");
        let stored = format!("storing {url}job/runs/x/members.arrow: ");
        assert!(err.message.starts_with(&stored), "{err}");
        assert!(err.message.contains(&gone.display().to_string()), "{err}");
        // A download into a folder that does not exist fails on the local side, after the get.
        std::fs::create_dir_all(dir.path().join("job/runs/x")).unwrap();
        std::fs::write(dir.path().join("job/runs/x/keys.arrow"), b"keys").unwrap();
        let err = state
            .download("runs/x/keys.arrow", &gone)
            .await
            .unwrap_err();
        let fetched = format!("fetching {url}job/runs/x/keys.arrow: ");
        assert!(err.message.starts_with(&fetched), "{err}");
        assert!(err.message.contains(&gone.display().to_string()), "{err}");
    }
}
