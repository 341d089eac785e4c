//! State files moved between the local disk and an object store (S3) in large pieces.
//!
//! A mirror night with its state on S3 downloads the last sync's members (1.08 GB for B1) and
//! keys and uploads its own. Done through tokio's file type, each 8 KiB read of an upload (the
//! size `tokio::io::copy` asks for) and each chunk of a download, as the HTTP body gave it, was a
//! trip to a blocking thread and back, and each chunk a write of its own. In a profile of B1's
//! night against moto (`benches/nightly_s3.sh`), thread switches and wake-ups
//! (`finish_task_switch`, `_raw_spin_unlock_irqrestore`) were 10% of activator's samples (under
//! 1% with a local state), and copying the download into the page cache in those small writes
//! (`copy_folio_from_iter_atomic`) 12.7%.
//!
//! Here a file is read a part at a time (16 MiB, the multipart upload's part size) and handed to
//! the upload without a copy (`crate::upload::Upload`); a download is gathered and written 4 MiB at
//! a time, each write on a blocking thread while the next chunks arrive. The page-cache copy fell
//! to 2.9% of the samples, the switches out of the profile's top, and activator's CPU for the night
//! from 10.2-11.0 s to 8.5-9.9 s (four alternating rounds each). The wall time did not move: moto,
//! on the same two cores, is the bottleneck. The price is memory: up to eight parts are in flight
//! (`Upload`'s `IN_FLIGHT`), and the run's peak went from 630-654 MiB to 604-821 MiB in those
//! rounds, its upload now holding about as much as its read.
//!
//! An upload that fails is aborted, so S3 keeps no parts of it (the stack's lifecycle rule would
//! remove them after a day).

use crate::upload::Upload;
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path as StorePath;
use object_store::{GetResult, ObjectStore};
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;
use tokio::task::JoinHandle;

/// A multipart upload's part, read from the file in one go. Up to 8 are in flight (`Upload`'s
/// `IN_FLIGHT`) and one is being read, so an upload holds up to 144 MiB.
pub const PART_BYTES: usize = 16 << 20;
/// The bytes of a download gathered before they are written to the file.
const WRITE_BYTES: usize = 4 << 20;

/// A failure of a transfer: of the local file, or of the store.
#[derive(Debug)]
pub enum TransferError {
    Local(io::Error),
    Store(object_store::Error),
}

/// Uploads the file at `local` to `path`: one put if smaller than a part, else a multipart
/// upload, aborted if it fails.
pub async fn upload(
    store: Arc<dyn ObjectStore>,
    path: StorePath,
    local: &Path,
) -> Result<(), TransferError> {
    let file = Arc::new(File::open(local).map_err(TransferError::Local)?);
    let mut out = Upload::new(store, path, PART_BYTES);
    loop {
        let part = match read_part(file.clone()).await {
            Ok(part) => part,
            Err(e) => {
                // The file's error is the one to report; a failed abort leaves parts to the
                // lifecycle rule.
                let _ = out.abort().await;
                return Err(TransferError::Local(e));
            }
        };
        if part.is_empty() {
            return out.finish().await.map_err(TransferError::Store);
        }
        out.put(part).await.map_err(TransferError::Store)?;
    }
}

/// The file's next part (empty at its end), read on a blocking thread.
async fn read_part(file: Arc<File>) -> io::Result<Bytes> {
    tokio::task::spawn_blocking(move || {
        let mut part = Vec::with_capacity(PART_BYTES);
        Read::take(&*file, PART_BYTES as u64).read_to_end(&mut part)?;
        Ok(Bytes::from(part))
    })
    .await
    .map_err(io::Error::other)?
}

/// Writes the body of `got` to a new file at `local`.
pub async fn download(got: GetResult, local: &Path) -> Result<(), TransferError> {
    let mut body = got.into_stream();
    let mut out = PieceWriter::create(local).map_err(TransferError::Local)?;
    while let Some(chunk) = body.try_next().await.map_err(TransferError::Store)? {
        out.push(chunk).await.map_err(TransferError::Local)?;
    }
    out.finish().await.map_err(TransferError::Local)
}

/// A file written `WRITE_BYTES` at a time on a blocking thread, one write at a time (so the
/// bytes stay in order) while the next are gathered.
struct PieceWriter {
    file: Arc<File>,
    gathered: Vec<Bytes>,
    gathered_bytes: usize,
    writing: Option<JoinHandle<io::Result<()>>>,
}

impl PieceWriter {
    fn create(path: &Path) -> io::Result<PieceWriter> {
        Ok(PieceWriter {
            file: Arc::new(File::create(path)?),
            gathered: vec![],
            gathered_bytes: 0,
            writing: None,
        })
    }

    async fn push(&mut self, chunk: Bytes) -> io::Result<()> {
        self.gathered_bytes += chunk.len();
        self.gathered.push(chunk);
        if self.gathered_bytes >= WRITE_BYTES {
            self.write_gathered().await?;
        }
        Ok(())
    }

    /// Waits for the write before, then starts writing what was gathered.
    async fn write_gathered(&mut self) -> io::Result<()> {
        self.written().await?;
        let (file, chunks) = (self.file.clone(), std::mem::take(&mut self.gathered));
        self.gathered_bytes = 0;
        self.writing = Some(tokio::task::spawn_blocking(move || {
            chunks.iter().try_for_each(|c| (&*file).write_all(c))
        }));
        Ok(())
    }

    async fn written(&mut self) -> io::Result<()> {
        match self.writing.take() {
            Some(w) => w.await.map_err(io::Error::other)?,
            None => Ok(()),
        }
    }

    async fn finish(mut self) -> io::Result<()> {
        self.write_gathered().await?;
        self.written().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use object_store::memory::InMemory;
    use object_store::{GetResultPayload, ObjectStoreExt};

    /// Bytes that differ from part to part, so a part sent twice or out of order shows.
    fn numbered(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i / 4093 + i) as u8).collect()
    }

    fn chunks_of(bytes: Bytes, size: usize) -> Vec<object_store::Result<Bytes>> {
        (0..bytes.len())
            .step_by(size)
            .map(|i| Ok(bytes.slice(i..(i + size).min(bytes.len()))))
            .collect()
    }

    #[tokio::test]
    async fn files_of_every_size_around_a_part_arrive_whole_and_come_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        for len in [
            0,
            1,
            PART_BYTES - 1,
            PART_BYTES,
            PART_BYTES + 1,
            2 * PART_BYTES + 4099,
        ] {
            let bytes = numbered(len);
            let (sent, back) = (dir.path().join("sent"), dir.path().join("back"));
            std::fs::write(&sent, &bytes).unwrap();
            let path = StorePath::from(format!("state/{len}"));
            upload(store.clone(), path.clone(), &sent).await.unwrap();
            let stored = store.get(&path).await.unwrap().bytes().await.unwrap();
            assert!(stored == bytes, "{len} bytes stored as {}", stored.len());
            // As an HTTP body comes: in small chunks, gathered into writes.
            let got = store.get(&path).await.unwrap();
            let got = GetResult {
                payload: GetResultPayload::Stream(
                    futures::stream::iter(chunks_of(stored, 65_536)).boxed(),
                ),
                ..got
            };
            download(got, &back).await.unwrap();
            assert!(
                std::fs::read(&back).unwrap() == bytes,
                "{len} bytes downloaded"
            );
        }
    }

    #[tokio::test]
    async fn a_missing_local_file_is_a_local_error_and_stores_nothing() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let path = StorePath::from("state/members.arrow");
        let missing = Path::new("/nonexistent/members.arrow");
        let err = upload(store.clone(), path.clone(), missing).await.err();
        assert!(matches!(err, Some(TransferError::Local(_))));
        assert!(store.head(&path).await.is_err());
    }
}
