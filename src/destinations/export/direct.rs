//! Local export files written with direct I/O (`O_DIRECT`), past the kernel's page cache.
//!
//! An export is written once and not read back by the run. Through the page cache
//! each of its bytes is copied into a cache page the kernel must first find, and on a virtual
//! machine a page the host has taken back costs far more than the copy: B1's 988 MB export
//! spent 1.0 to 2.6 s of system CPU in that copy (perf: `copy_folio_from_iter_atomic`, 23% of
//! the run's samples), more than its whole SHA-256 work. With direct I/O the bytes go to the
//! disk from one reused, aligned buffer (`dd` here: 1 GB in 0.65 s, 0.08 s of CPU); B1's
//! export run went from 5.4-6.1 s to 4.2-4.5 s. A filesystem without direct I/O (tmpfs before
//! Linux 6.6), or whose blocks are larger than 4 KiB, is written through the cache.
//!
//! The price: the run waits for the disk, where the cache would have let the kernel write
//! later. That suits exports (a local export is the benchmark's and a developer's case; on AWS
//! they go to S3), not a run's scratch files: the members file of a mirror run is read back
//! in part by the diff, from the cache when it was written through it. Written directly, the
//! diff of B1's second night read it (and the previous night's) from the disk: 1.0 -> 2.9 s.
//! On a disk of EBS's baseline 125 MB/s a gigabyte would take 8 s either way.
//!
//! As object_store's local files are, an export file is written under `{name}#{digits}` (which
//! listings skip; the digits are the process id and a count, so no two writers share one), renamed to its name when complete, and removed when given up or dropped, so
//! no partial file appears under the final name. Each write runs on a blocking thread while the encoder goes on with the next row
//! group, one at a time, so the bytes stay in order.

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
const ALIGN: usize = 4096;
/// Bytes written per call.
const CHUNK: usize = 8 << 20;

/// A local file being written, visible under its name once `commit`ted.
pub struct DirectFile {
    staging: PathBuf,
    target: PathBuf,
    /// The file between writes; `None` while one is in flight (`writing`).
    idle: Option<DirectWriter>,
    writing: Option<JoinHandle<io::Result<DirectWriter>>>,
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
            writing: None,
            ended: false,
        })
    }

    /// Appends `data`; returns once the previous write is done and this one is handed to a
    /// blocking thread.
    pub async fn put(&mut self, data: Bytes) -> Result<()> {
        let mut writing = self.ready().await?;
        self.writing = Some(tokio::task::spawn_blocking(move || {
            writing.push(&data)?;
            Ok(writing)
        }));
        Ok(())
    }

    /// Writes what is left and gives the file its name.
    pub async fn commit(mut self) -> Result<()> {
        let writing = self.ready().await?;
        let (staging, target) = (self.staging.clone(), self.target.clone());
        tokio::task::spawn_blocking(move || {
            writing.finish()?;
            std::fs::rename(&staging, &target)
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

    /// The file once no write is in flight, or the error the last write met.
    async fn ready(&mut self) -> Result<DirectWriter> {
        if let Some(writing) = self.writing.take() {
            return writing
                .await
                .map_err(|e| Error::internal(format!("an export writer stopped: {e}")))?
                .map_err(|e| failed(&self.target, e));
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

fn failed(path: &Path, e: io::Error) -> Error {
    Error::transient(format!("writing export file {}: {e}", path.display()))
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

/// A file written with direct I/O where its filesystem allows: bytes gather in an aligned
/// buffer and go out a `chunk` at a time; `finish` writes the tail.
struct DirectWriter {
    file: File,
    direct: bool,
    /// `chunk + ALIGN` bytes, of which the `chunk` from `start` are aligned; sized by the first
    /// piece (up to `CHUNK`), so a small file does not take 8 MiB.
    buffer: Vec<u8>,
    chunk: usize,
    start: usize,
    filled: usize,
    offset: u64,
}

impl DirectWriter {
    fn new(file: File) -> DirectWriter {
        let direct = set_direct(&file, true).is_ok();
        DirectWriter {
            file,
            direct,
            buffer: vec![],
            chunk: 0,
            start: 0,
            filled: 0,
            offset: 0,
        }
    }

    /// The buffer for pieces of about `len` bytes, made at the first piece and again, larger,
    /// whenever it is empty and a larger piece comes (a small CSV batch first).
    fn make_buffer(&mut self, len: usize) {
        self.chunk = len.next_multiple_of(ALIGN).clamp(ALIGN, CHUNK);
        self.buffer = vec![0u8; self.chunk + ALIGN];
        let address = self.buffer.as_ptr() as usize;
        self.start = (ALIGN - address % ALIGN) % ALIGN;
    }

    fn push(&mut self, mut data: &[u8]) -> io::Result<()> {
        if self.filled == 0 && self.chunk < CHUNK && data.len() > self.chunk {
            self.make_buffer(data.len());
        }
        while !data.is_empty() {
            let n = (self.chunk - self.filled).min(data.len());
            let at = self.start + self.filled;
            self.buffer[at..at + n].copy_from_slice(&data[..n]);
            self.filled += n;
            data = &data[n..];
            if self.filled == self.chunk {
                self.write_out(self.chunk)?;
            }
        }
        Ok(())
    }

    /// Writes the aligned part of what is buffered directly, then the tail through the cache.
    fn finish(mut self) -> io::Result<()> {
        let aligned = self.filled / ALIGN * ALIGN;
        if aligned > 0 {
            self.write_out(aligned)?;
        }
        if self.filled > 0 {
            if self.direct {
                set_direct(&self.file, false)?;
                self.direct = false;
            }
            self.write_out(self.filled)?;
        }
        Ok(())
    }

    /// Writes the first `len` buffered bytes at the file's end and moves the rest up.
    fn write_out(&mut self, len: usize) -> io::Result<()> {
        let bytes = &self.buffer[self.start..self.start + len];
        match self.file.write_all_at(bytes, self.offset) {
            // A device whose blocks are larger than ALIGN (or a partial write that left the
            // offset unaligned): the whole range again, through the cache.
            Err(e) if self.direct && e.raw_os_error() == Some(libc::EINVAL) => {
                set_direct(&self.file, false)?;
                self.direct = false;
                self.file.write_all_at(bytes, self.offset)?;
            }
            other => other?,
        }
        self.offset += len as u64;
        let rest = self.start + len..self.start + self.filled;
        self.buffer.copy_within(rest, self.start);
        self.filled -= len;
        Ok(())
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

    #[tokio::test]
    async fn a_committed_file_holds_every_byte_in_order_whatever_the_piece_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out/file.parquet");
        let mut file = DirectFile::create(target.clone()).unwrap();
        let mut expected = vec![];
        // Pieces across and within chunk and block bounds, and an unaligned tail.
        for (i, len) in [1, 4095, 4097, CHUNK - 3, CHUNK + 5, 3 * CHUNK, 10_000, 7]
            .into_iter()
            .enumerate()
        {
            let piece = pattern(len, i as u8);
            expected.extend_from_slice(&piece);
            file.put(Bytes::from(piece)).await.unwrap();
        }
        assert!(!target.exists(), "nothing under the name before commit");
        file.commit().await.unwrap();
        assert!(std::fs::read(&target).unwrap() == expected);
        let names: Vec<_> = std::fs::read_dir(dir.path().join("out")).unwrap().collect();
        assert_eq!(names.len(), 1, "no staging file left: {names:?}");
    }

    #[tokio::test]
    async fn an_aborted_or_dropped_file_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("file.csv");
        let mut aborted = DirectFile::create(target.clone()).unwrap();
        aborted
            .put(Bytes::from(pattern(CHUNK + 1, 1)))
            .await
            .unwrap();
        aborted.abort().await.unwrap();
        let mut dropped = DirectFile::create(target.clone()).unwrap();
        dropped.put(Bytes::from(pattern(10, 2))).await.unwrap();
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
        // A buffer one byte off its alignment, as a device of larger blocks would find it.
        writer.make_buffer(4 * ALIGN);
        writer.start += 1;
        let (first, second) = bytes.split_at(3 * ALIGN + 10);
        writer.push(first).unwrap();
        writer.push(second).unwrap();
        assert!(
            !writer.direct,
            "direct I/O is off after the refusal (or was never on)"
        );
        writer.finish().unwrap();
        assert!(std::fs::read(&path).unwrap() == bytes);
        // Where this filesystem has direct I/O, a refusal really happened above.
        if had_direct_io {
            let mut aligned = DirectWriter::new(File::create(&path).unwrap());
            aligned.push(&bytes).unwrap();
            assert!(aligned.direct, "an aligned buffer is written directly");
        }
    }
}
