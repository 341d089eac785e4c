//! Local files written with direct I/O (`O_DIRECT`), past the kernel's page cache: exports, and
//! a run's scratch files that it does not read back.
//!
//! An export is written once and not read back by the run. Through the page cache
//! each of its bytes is copied into a cache page the kernel must first find, and on a virtual
//! machine a page the host has taken back costs far more than the copy: B1's 988 MB export
//! spent 1.0 to 2.6 s of system CPU in that copy (perf: `copy_folio_from_iter_atomic`, 23% of
//! the run's samples), more than its whole SHA-256 work. With direct I/O the bytes go to the disk
//! from the aligned buffer the encoder wrote them into (`AlignedBuf`; `dd` here: 1 GB in 0.65 s,
//! 0.08 s of CPU); B1's export run went from 5.4-6.1 s to 4.2-4.5 s. A filesystem without direct
//! I/O (tmpfs before Linux 6.6), or whose blocks are larger than 4 KiB, is written through the
//! cache.
//!
//! The price: the run waits for the disk, where the cache would have let the kernel write
//! later, and a file read back comes from the disk. That suits exports (a local export is the
//! benchmark's and a developer's case; on AWS they go to S3), and the members and keys files of
//! a run that does not read them back (`state::membership`, `DirectSink`), not the others: the
//! members file of a mirror run that diffs by reading it back, written directly, was read (and
//! the previous night's) from the disk: B1's diff went from 1.0 to 2.9 s. On a disk of EBS's
//! baseline 125 MB/s a gigabyte would take 8 s either way.
//!
//! As object_store's local files are, an export file is written under `{name}#{digits}` (which
//! listings skip; the digits are the process id and a count, so no two writers share one),
//! renamed to its name when complete, and removed when given up or dropped, so no partial file
//! appears under the final name. Each write runs on a blocking thread while the encoder fills
//! the other of two buffers with the next row group (or text batch), one write at a time, so
//! the bytes stay in order.

use crate::error::{Error, Result};
use bytes::Bytes;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use tokio::task::JoinHandle;

/// Direct I/O wants buffers, offsets and lengths aligned to the device's logical block: 4 KiB
/// covers the usual 512-byte and 4 KiB ones.
pub const ALIGN: usize = 4096;

/// A growable byte buffer whose bytes start at an `ALIGN`ed address, so a direct write can take
/// them where the encoder put them. The encoder writes into it (`io::Write`), a file writes its
/// aligned part out and the buffer comes back to be filled again: the bytes are copied once, into
/// pages already faulted in (a new buffer a row group cost 1% of B1's CPU in page faults, and
/// copying it into the direct writer's own buffer 1.6% more).
pub struct AlignedBuf {
    /// Padding up to the aligned address `start`, then the bytes. Never grown past its
    /// capacity (so never moved, and never zeroed: a new upload buffer a row group would be).
    bytes: Vec<u8>,
    start: usize,
}

impl AlignedBuf {
    /// The room a file's first buffer has: it grows by doubling to the size of a row group or
    /// a batch, and the buffers after it are made (or recycled) at that size.
    pub const FIRST_CAPACITY: usize = 1 << 20;

    pub fn with_capacity(capacity: usize) -> AlignedBuf {
        let mut bytes: Vec<u8> = Vec::with_capacity(capacity + ALIGN);
        // `align_offset` may in principle decline (usize::MAX); then the buffer is unaligned and
        // a direct write of it is refused and goes through the cache (`DirectWriter::write`).
        let start = bytes.as_ptr().align_offset(ALIGN);
        let start = if start < ALIGN { start } else { 0 };
        bytes.resize(start, 0);
        AlignedBuf { bytes, start }
    }

    pub fn capacity(&self) -> usize {
        self.bytes.capacity() - self.start
    }

    pub fn len(&self) -> usize {
        self.bytes.len() - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[self.start..]
    }

    pub fn clear(&mut self) {
        self.bytes.truncate(self.start);
    }

    /// The bytes, without a copy.
    pub fn into_bytes(self) -> Bytes {
        let start = self.start;
        Bytes::from(self.bytes).slice(start..)
    }

    fn extend_from_slice(&mut self, data: &[u8]) {
        let len = self.len();
        if len + data.len() > self.capacity() {
            let mut larger = AlignedBuf::with_capacity((len + data.len()).max(2 * len));
            larger.bytes.extend_from_slice(self.as_slice());
            *self = larger;
        }
        self.bytes.extend_from_slice(data);
    }

    /// Leaves the whole blocks and returns a buffer holding the bytes past them (fewer than
    /// `ALIGN`), for the next bytes to follow: `spare` if it has room for `capacity` bytes and
    /// not many times more (a buffer sized by one large batch is let go), else a new one.
    fn split_tail(&mut self, spare: Option<AlignedBuf>, capacity: usize) -> AlignedBuf {
        let mut next = match spare {
            Some(mut spare) if (capacity..=4 * capacity.max(ALIGN)).contains(&spare.capacity()) => {
                spare.clear();
                spare
            }
            _ => AlignedBuf::with_capacity(capacity),
        };
        let whole = self.len() / ALIGN * ALIGN;
        next.extend_from_slice(&self.as_slice()[whole..]);
        self.bytes.truncate(self.start + whole);
        next
    }
}

impl io::Write for AlignedBuf {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.extend_from_slice(data);
        Ok(data.len())
    }

    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        self.extend_from_slice(data);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A local file being written, visible under its name once `commit`ted.
pub struct DirectFile {
    staging: PathBuf,
    target: PathBuf,
    /// The file between writes; `None` while one is in flight (`writing`).
    idle: Option<DirectWriter>,
    /// The buffer last written, to be filled again.
    spare: Option<AlignedBuf>,
    writing: Option<JoinHandle<io::Result<(DirectWriter, AlignedBuf)>>>,
    ended: bool,
}

impl DirectFile {
    /// Opens a staging file beside `target` (creating its folders).
    pub fn create(target: PathBuf) -> Result<DirectFile> {
        let (file, staging) = staging_file(&target).map_err(|e| failed(&target, e))?;
        Ok(DirectFile {
            staging,
            target,
            idle: Some(DirectWriter::new(file)),
            spare: None,
            writing: None,
            ended: false,
        })
    }

    /// Appends `buffer`'s whole blocks, and exchanges it for a buffer (the one written before, if
    /// it has room for `capacity` bytes, else a new one) holding the bytes past them, for the next
    /// bytes to follow. Returns once the previous write is done and this one is handed to a
    /// blocking thread.
    pub async fn put(&mut self, buffer: &mut AlignedBuf, capacity: usize) -> Result<()> {
        let mut writer = self.ready().await?;
        let next = buffer.split_tail(self.spare.take(), capacity);
        let full = std::mem::replace(buffer, next);
        self.writing = Some(tokio::task::spawn_blocking(move || {
            writer.write(full.as_slice())?;
            Ok((writer, full))
        }));
        Ok(())
    }

    /// Writes `last` (any length) and gives the file its name.
    pub async fn commit(mut self, last: AlignedBuf) -> Result<()> {
        let writer = self.ready().await?;
        let (staging, target) = (self.staging.clone(), self.target.clone());
        tokio::task::spawn_blocking(move || {
            // The disk holds every byte before the file takes its name: a direct write is not
            // durable by itself, and a crash after the rename but before the bytes would leave
            // a short or zeroed file under the name, which a retry takes as written.
            writer.finish(last.as_slice())?.sync_data()?;
            std::fs::rename(&staging, &target)?;
            // The file is in place: a folder that cannot be synced (one this job may write but
            // not read) does not undo that.
            if let Err(e) = sync_folder_of(&target) {
                tracing::warn!(file = %target.display(), error = %e, "the export's folder could not be synced");
            }
            remove_staged_beside(&target);
            Ok(())
        })
        .await
        .map_err(|e| Error::internal(format!("an export writer stopped: {e}")))?
        .map_err(|e| failed(&self.target, e))?;
        self.ended = true;
        Ok(())
    }

    /// Gives the file up: nothing appears under its name.
    pub async fn abort(mut self) -> Result<()> {
        let _ = self.ready().await;
        self.ended = true;
        match std::fs::remove_file(&self.staging) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(failed(&self.staging, e)),
        }
    }

    /// Whether writes still go past the page cache, once the one in flight is done.
    #[cfg(test)]
    async fn direct_io(&mut self) -> bool {
        let writer = self.ready().await.unwrap();
        let direct = writer.direct;
        self.idle = Some(writer);
        direct
    }

    /// The file once no write is in flight (keeping the buffer written as the spare), or the
    /// error the last write met.
    async fn ready(&mut self) -> Result<DirectWriter> {
        if let Some(writing) = self.writing.take() {
            let (writer, written) = writing
                .await
                .map_err(|e| Error::internal(format!("an export writer stopped: {e}")))?
                .map_err(|e| failed(&self.target, e))?;
            self.spare = Some(written);
            return Ok(writer);
        }
        self.idle
            .take()
            .ok_or_else(|| Error::internal("an export file was written after an error"))
    }
}

impl Drop for DirectFile {
    fn drop(&mut self) {
        if !self.ended {
            // A write still in flight goes on into the unlinked file, which goes with it.
            let _ = std::fs::remove_file(&self.staging);
        }
    }
}

/// A file written directly by a writer on a plain thread (`io::Write`), as `DirectFile` is by
/// an async one: bytes gather in an `AlignedBuf`; each `CHUNK` of them is written by a thread
/// of its own while the next gathers in the other buffer, one write at a time. `finish` writes
/// the rest. Unlike `DirectFile`, the file is the caller's, under its own name.
pub struct DirectSink {
    buffer: AlignedBuf,
    /// The buffer last written, to be filled again.
    spare: Option<AlignedBuf>,
    /// The file between writes; `None` while one is in flight (`writing`).
    idle: Option<DirectWriter>,
    writing: Option<std::thread::JoinHandle<io::Result<(DirectWriter, AlignedBuf)>>>,
}

impl DirectSink {
    /// Bytes gathered per write: large enough that a write costs the disk's time, not a call's.
    const CHUNK: usize = 8 << 20;

    /// Writes `file` (empty, and then written by this sink only) from its start.
    pub fn new(file: File) -> DirectSink {
        DirectSink {
            buffer: AlignedBuf::with_capacity(Self::CHUNK + ALIGN),
            spare: None,
            idle: Some(DirectWriter::new(file)),
            writing: None,
        }
    }

    /// Writes the bytes still gathered and waits for every write: the file is then complete.
    pub fn finish(mut self) -> io::Result<()> {
        let writer = self.ready()?;
        writer.finish(self.buffer.as_slice()).map(drop)
    }

    /// Hands the gathered whole blocks to a writing thread, once the one before is done.
    fn put(&mut self) -> io::Result<()> {
        let mut writer = self.ready()?;
        let next = self
            .buffer
            .split_tail(self.spare.take(), Self::CHUNK + ALIGN);
        let full = std::mem::replace(&mut self.buffer, next);
        self.writing = Some(std::thread::spawn(move || {
            writer.write(full.as_slice())?;
            Ok((writer, full))
        }));
        Ok(())
    }

    /// The file once no write is in flight (keeping the buffer written as the spare), or the
    /// error the last write met.
    fn ready(&mut self) -> io::Result<DirectWriter> {
        if let Some(writing) = self.writing.take() {
            let (writer, written) = writing
                .join()
                .map_err(|_| io::Error::other("a direct write stopped"))??;
            self.spare = Some(written);
            return Ok(writer);
        }
        self.idle
            .take()
            .ok_or_else(|| io::Error::other("a file was written after an error"))
    }

    /// Whether writes still go past the page cache, once the one in flight is done.
    #[cfg(test)]
    fn direct_io(&mut self) -> bool {
        let writer = self.ready().unwrap();
        let direct = writer.direct;
        self.idle = Some(writer);
        direct
    }
}

impl io::Write for DirectSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(data);
        if self.buffer.len() >= Self::CHUNK {
            self.put()?;
        }
        Ok(data.len())
    }

    /// Bytes are written by the chunk, and the last of them by `finish`.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn failed(path: &Path, e: io::Error) -> Error {
    let at = format!("writing export file {}: {e}", path.display());
    match e.kind() {
        // A retry would meet them alike: exit 2.
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => Error::config(
            format!("{at}; make the export's folder writable for this job, or export elsewhere"),
        ),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => Error::transient(format!(
            "{at}; free space on that disk, or export to S3 (a retry may run on another host)"
        )),
        _ => Error::transient(at),
    }
}

/// Staging files made by this process, for their names.
static STAGED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// `{target}#{pid}{count}`, created new (with its folders). A name of this process is never
/// used twice, so a file given up while its last write is still in flight (a stopped run)
/// cannot be renamed over another writer's.
fn staging_file(target: &Path) -> io::Result<(File, PathBuf)> {
    let mut made_folders = false;
    loop {
        let count = STAGED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut name = target.as_os_str().to_owned();
        // Digits only (listings skip such names), of fixed widths, so no two are alike.
        name.push(format!("#{:010}{count:010}", std::process::id()));
        let path = PathBuf::from(name);
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => return Ok((file, path)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound && !made_folders => {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                made_folders = true;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Turns direct I/O on or off for an open file; fails where the filesystem has none.
fn set_direct(file: &File, on: bool) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor this File owns, reading and setting its status flags only.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        let flags = if on {
            flags | libc::O_DIRECT
        } else {
            flags & !libc::O_DIRECT
        };
        if libc::fcntl(fd, libc::F_SETFL, flags) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A file written with direct I/O where its filesystem allows, from the caller's buffers.
struct DirectWriter {
    file: File,
    direct: bool,
    offset: u64,
}

impl DirectWriter {
    fn new(file: File) -> DirectWriter {
        let direct = set_direct(&file, true).is_ok();
        DirectWriter {
            file,
            direct,
            offset: 0,
        }
    }

    /// Writes `bytes` at the file's end. Direct I/O takes them where they are if their address
    /// and length are block-aligned (an `AlignedBuf`'s whole blocks are); a write it refuses
    /// (a device whose blocks are larger than ALIGN, a misaligned buffer) goes again, and so
    /// does every later one, through the cache.
    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self.file.write_all_at(bytes, self.offset) {
            Err(e) if self.direct && e.raw_os_error() == Some(libc::EINVAL) => {
                set_direct(&self.file, false)?;
                self.direct = false;
                self.file.write_all_at(bytes, self.offset)?;
            }
            other => other?,
        }
        self.offset += bytes.len() as u64;
        Ok(())
    }

    /// Writes the last bytes: their whole blocks directly, the tail through the cache. The
    /// file, to be synced where it must last.
    fn finish(mut self, bytes: &[u8]) -> io::Result<File> {
        let (blocks, tail) = bytes.split_at(bytes.len() / ALIGN * ALIGN);
        if !blocks.is_empty() {
            self.write(blocks)?;
        }
        if !tail.is_empty() {
            if self.direct {
                set_direct(&self.file, false)?;
                self.direct = false;
            }
            self.write(tail)?;
        }
        Ok(self.file)
    }
}

/// How old a staging file or folder must be to belong to no live run: the longest attempt the
/// stack gives a job (`timeout_minutes`, 7 days at most). A younger one may be another run of
/// the same date still writing (a `--force` beside the scheduled run).
pub const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// Removes the staging files of `target` that earlier runs left beside it (`staging_file`'s
/// names: a process killed outright, or one that panicked, cannot remove its own), once they
/// are `STALE_AFTER` old: a younger one may be another run of the date still writing. Best
/// effort: what is left now, a later commit removes.
fn remove_staged_beside(target: &Path) {
    let (Some(folder), Some(name)) = (target.parent(), target.file_name()) else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(folder) else {
        return;
    };
    let mut prefix = name.to_owned();
    prefix.push("#");
    for entry in entries.flatten() {
        let entry_name = entry.file_name();
        let staged = entry_name
            .as_encoded_bytes()
            .strip_prefix(prefix.as_encoded_bytes())
            .is_some_and(|rest| rest.len() == 20 && rest.iter().all(u8::is_ascii_digit));
        let stale = || {
            let modified = entry.metadata().and_then(|m| m.modified()).ok();
            modified
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|age| age > STALE_AFTER)
        };
        if staged && stale() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Makes a rename into `path`'s folder durable (the folder's entry is what names the file).
fn sync_folder_of(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(folder) if !folder.as_os_str().is_empty() => File::open(folder)?.sync_all(),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes that differ at every offset, so a misplaced chunk shows.
    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3] ^ seed)
            .collect()
    }

    /// A buffer holding `data`.
    fn filled(data: &[u8]) -> AlignedBuf {
        let mut buffer = AlignedBuf::with_capacity(0);
        buffer.extend_from_slice(data);
        buffer
    }

    #[tokio::test]
    async fn a_committed_file_holds_every_byte_in_order_whatever_the_piece_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out/file.parquet");
        let mut file = DirectFile::create(target.clone()).unwrap();
        let direct_at_first = file.direct_io().await;
        let mut expected = vec![];
        let mut buffer = AlignedBuf::with_capacity(0);
        // Pieces across and within block bounds, buffers recycled smaller and larger than
        // wanted, and an unaligned tail.
        let big = 3 << 20;
        for (i, len) in [1, 4095, 4097, big - 3, big + 5, 3 * big, 10_000, 7]
            .into_iter()
            .enumerate()
        {
            let piece = pattern(len, i as u8);
            expected.extend_from_slice(&piece);
            io::Write::write_all(&mut buffer, &piece).unwrap();
            file.put(&mut buffer, 2 * len).await.unwrap();
            assert!(
                buffer.len() < ALIGN,
                "only the bytes past whole blocks stay"
            );
        }
        assert!(!target.exists(), "nothing under the name before commit");
        assert_eq!(
            file.direct_io().await,
            direct_at_first,
            "every write went past the cache where the filesystem allows it"
        );
        io::Write::write_all(&mut buffer, b"footer").unwrap();
        expected.extend_from_slice(b"footer");
        file.commit(buffer).await.unwrap();
        assert!(std::fs::read(&target).unwrap() == expected);
        let names: Vec<_> = std::fs::read_dir(dir.path().join("out")).unwrap().collect();
        assert_eq!(names.len(), 1, "no staging file left: {names:?}");
    }

    #[test]
    fn a_sink_writes_every_byte_in_order_past_the_cache_where_it_can() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("members.arrow");
        let mut sink = DirectSink::new(File::create(&path).unwrap());
        let direct_at_first = sink.direct_io();
        let mut expected = vec![];
        // Pieces smaller and larger than a chunk, across block bounds, and an unaligned end.
        let chunk = DirectSink::CHUNK;
        for (i, len) in [1, 4095, chunk - 3, 2 * chunk + 5, 10_000, 7]
            .into_iter()
            .enumerate()
        {
            let piece = pattern(len, i as u8);
            expected.extend_from_slice(&piece);
            io::Write::write_all(&mut sink, &piece).unwrap();
        }
        assert_eq!(
            sink.direct_io(),
            direct_at_first,
            "every chunk went past the cache where the filesystem allows it"
        );
        sink.finish().unwrap();
        assert!(std::fs::read(&path).unwrap() == expected);
    }

    #[test]
    fn a_buffer_keeps_its_bytes_aligned_as_it_grows() {
        let mut buffer = AlignedBuf::with_capacity(10);
        let data = pattern(3 * ALIGN + 17, 9);
        for piece in data.chunks(1000) {
            io::Write::write_all(&mut buffer, piece).unwrap();
            assert_eq!(buffer.as_slice().as_ptr() as usize % ALIGN, 0);
        }
        assert!(buffer.as_slice() == data);
        let next = buffer.split_tail(None, 100);
        assert_eq!(buffer.len(), 3 * ALIGN);
        assert!(next.as_slice() == &data[3 * ALIGN..]);
        assert!(buffer.into_bytes() == data[..3 * ALIGN]);
    }

    #[test]
    fn a_write_refused_for_good_stops_the_run_and_a_full_disk_may_be_retried() {
        let path = Path::new("/exports/job-2026-11-25.csv");
        let classed = |kind: io::ErrorKind| {
            let e = failed(path, io::Error::from(kind));
            assert!(e.message.contains("/exports/job-2026-11-25.csv"), "{e}");
            (e.class, e.message)
        };
        for kind in [
            io::ErrorKind::PermissionDenied,
            io::ErrorKind::ReadOnlyFilesystem,
        ] {
            let (class, message) = classed(kind);
            assert_eq!(class, crate::ErrorClass::Config, "{message}");
            assert!(message.contains("writable"), "{message}");
        }
        let (class, message) = classed(io::ErrorKind::StorageFull);
        assert_eq!(class, crate::ErrorClass::Transient);
        assert!(message.contains("free space"), "{message}");
        assert_eq!(
            classed(io::ErrorKind::Interrupted).0,
            crate::ErrorClass::Transient
        );
    }

    #[tokio::test]
    async fn a_commit_removes_the_staging_files_earlier_runs_left_beside_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("job-2026-11-25.csv");
        let killed = dir.path().join("job-2026-11-25.csv#00000000070000000003");
        let others = [
            // Another run of the date, still writing.
            dir.path().join("job-2026-11-25.csv#00000000080000000001"),
            dir.path().join("job-2026-11-25.csv.bak"),
            dir.path().join("job-2026-11-25.csv#notes"),
            dir.path().join("other.csv#00000000070000000003"),
        ];
        for f in others.iter().chain([&killed]) {
            std::fs::write(f, b"x").unwrap();
        }
        let eight_days = std::time::Duration::from_secs(8 * 24 * 3600);
        let long_ago = std::time::SystemTime::now() - eight_days;
        File::options()
            .write(true)
            .open(&killed)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        let file = DirectFile::create(target.clone()).unwrap();
        file.commit(filled(b"a,b\n")).await.unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"a,b\n");
        assert!(!killed.exists(), "the killed run's staging file is gone");
        for f in &others {
            assert!(f.exists(), "{} stays", f.display());
        }
    }

    #[tokio::test]
    async fn an_aborted_or_dropped_file_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("file.csv");
        let mut aborted = DirectFile::create(target.clone()).unwrap();
        let mut buffer = filled(&pattern(2 * ALIGN + 1, 1));
        aborted.put(&mut buffer, 0).await.unwrap();
        aborted.abort().await.unwrap();
        let mut dropped = DirectFile::create(target.clone()).unwrap();
        // Dropped with a write of two blocks in flight.
        let mut buffer = filled(&pattern(2 * ALIGN + 10, 2));
        dropped.put(&mut buffer, 0).await.unwrap();
        drop(dropped);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_write_the_device_refuses_goes_again_through_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file.parquet");
        let mut writer = DirectWriter::new(File::create(&path).unwrap());
        let had_direct_io = writer.direct;
        let bytes = pattern(6 * ALIGN + 10, 5);
        // Bytes one byte off their alignment, as a device of larger blocks would find them.
        let buffer = filled(&[&[0u8][..], &bytes].concat());
        let (first, second) = buffer.as_slice()[1..].split_at(3 * ALIGN);
        writer.write(first).unwrap();
        assert!(
            !writer.direct,
            "direct I/O is off after the refusal (or was never on)"
        );
        writer.finish(second).unwrap();
        assert!(std::fs::read(&path).unwrap() == bytes);
        // Where this filesystem has direct I/O, a refusal really happened above.
        if had_direct_io {
            let mut aligned = DirectWriter::new(File::create(&path).unwrap());
            aligned
                .write(&filled(&bytes).as_slice()[..6 * ALIGN])
                .unwrap();
            assert!(aligned.direct, "an aligned buffer is written directly");
        }
    }
}
