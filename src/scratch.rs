//! Scratch folders for a run's temporary files (spilled member keys, diffs, files being sent).
//!
//! Each folder is named after the process that made it (`activator-send-{pid}-XXXXXX` in the
//! system's temporary folder) and is removed when the run is done with it. A killed run cannot
//! remove its folders, and a spilled 10-million-member run leaves gigabytes; so the first
//! scratch folder a process makes sweeps away those of processes that no longer run. (A process
//! of another PID namespace looks gone too: containers that share a temporary folder need a
//! `TMPDIR` each; AWS Batch containers have their own `/tmp`.) Only folders that hold the marker
//! file activator writes into each one it makes (`MARKER`) are swept: a user's folder that merely
//! looks like one of ours is never touched.

use crate::error::{Error, Result};
use std::path::Path;
use std::sync::Once;
use tempfile::TempDir;

const PREFIX: &str = "activator-";

/// The file in every scratch folder activator made, which the sweep looks for.
const MARKER: &str = ".activator-scratch";

/// A new scratch folder for `purpose` (`send`, `diff`, `members`), removed when dropped.
pub fn dir(purpose: &str) -> Result<TempDir> {
    static SWEEP: Once = Once::new();
    SWEEP.call_once(|| sweep(&std::env::temp_dir()));
    let cannot = |e: std::io::Error| {
        Error::transient(format!(
            "cannot create a temporary folder in {}: {e}; set TMPDIR to a writable folder with room",
            std::env::temp_dir().display()
        ))
    };
    let dir = tempfile::Builder::new()
        .prefix(&format!("{PREFIX}{purpose}-{}-", std::process::id()))
        .tempdir()
        .map_err(cannot)?;
    std::fs::write(dir.path().join(MARKER), std::process::id().to_string()).map_err(cannot)?;
    Ok(dir)
}

/// Removes the scratch folders under `root` whose process is gone. Only where `/proc` tells
/// which processes run; elsewhere nothing is removed.
fn sweep(root: &Path) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(owner) else {
            continue;
        };
        if pid != std::process::id()
            && !Path::new(&format!("/proc/{pid}")).exists()
            && entry.path().join(MARKER).is_file()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The process id in a scratch folder's name (`activator-{purpose}-{pid}-{random}`).
fn owner(name: &str) -> Option<u32> {
    let mut parts = name.strip_prefix(PREFIX)?.split('-');
    let _purpose = parts.next()?;
    let pid = parts.next()?.parse().ok()?;
    parts.next()?;
    Some(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_of_gone_processes_are_swept_and_others_kept() {
        let root = tempfile::tempdir().unwrap();
        // Process ids above the kernel's pid_max (at most 2^22) never run.
        let gone = root.path().join("activator-send-4294967-abc123");
        let mine = root
            .path()
            .join(format!("activator-diff-{}-abc123", std::process::id()));
        let init = root.path().join("activator-members-1-abc123");
        let other = root.path().join("activator-send-abc123");
        // A user's folder named like ours, without the marker, of a process that is gone.
        let users = root.path().join("activator-report-4294966-mine");
        for d in [&gone, &mine, &init, &other] {
            std::fs::create_dir(d).unwrap();
            std::fs::write(d.join(MARKER), "").unwrap();
        }
        std::fs::create_dir(&users).unwrap();
        sweep(root.path());
        assert!(!gone.exists());
        assert!(mine.exists() && init.exists() && other.exists());
        assert!(users.exists(), "a folder without the marker was swept");
        assert_eq!(owner("activator-send-77-x"), Some(77));
        assert_eq!(owner("activator-send-x"), None);
    }
}
