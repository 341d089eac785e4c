//! An object written to a store as a stream of bytes: in one put if it fits a part, else as a
//! multipart upload that leaves nothing behind when it fails.
//!
//! object_store's `BufWriter` (and the `WriteMultipart` under it) abort an upload whose
//! completion fails, but not one whose last parts fail while it is completed: those parts stay
//! in the bucket, billed and invisible to listings, until a lifecycle rule removes them a day
//! later (for an export, a day of hashed identifiers nobody can see). And once it has been shut
//! down, a `BufWriter` cannot be aborted at all. Here any failure after the upload has begun
//! aborts it. Bytes are cut into parts without a copy, as `BufWriter` does.

use bytes::Bytes;
use object_store::path::Path;
use object_store::{MultipartUpload, ObjectStore, ObjectStoreExt, PutPayload};
use std::sync::Arc;
use tokio::task::JoinSet;

/// Parts uploaded at once (`BufWriter`'s default).
const IN_FLIGHT: usize = 8;

pub struct Upload {
    store: Arc<dyn ObjectStore>,
    path: Path,
    part_bytes: usize,
    /// Bytes not yet sent, fewer than a part.
    pending: Vec<Bytes>,
    pending_bytes: usize,
    /// The multipart upload, once a part's worth of bytes has come.
    multipart: Option<Box<dyn MultipartUpload>>,
    parts: JoinSet<object_store::Result<()>>,
    /// A put or the completion failed and the upload was aborted: nothing may complete it now
    /// (a put of the bytes held would store a piece of the object as the whole).
    failed: bool,
}

impl Upload {
    /// An upload to `path` in parts of `part_bytes` (S3: 5 MiB or more, but the last).
    pub fn new(store: Arc<dyn ObjectStore>, path: Path, part_bytes: usize) -> Upload {
        Upload {
            store,
            path,
            part_bytes,
            pending: vec![],
            pending_bytes: 0,
            multipart: None,
            parts: JoinSet::new(),
            failed: false,
        }
    }

    /// Adds `bytes` to the object; a failure aborts the upload.
    pub async fn put(&mut self, mut bytes: Bytes) -> object_store::Result<()> {
        while !bytes.is_empty() {
            let room = self.part_bytes - self.pending_bytes;
            if bytes.len() < room {
                self.hold(bytes);
                return Ok(());
            }
            self.hold(bytes.split_to(room));
            let sent = self.send_part().await;
            self.aborted_on(sent).await?;
        }
        Ok(())
    }

    /// Completes the object: it appears under its path only now. A failure aborts the upload.
    pub async fn finish(mut self) -> object_store::Result<()> {
        if self.failed {
            return Err(object_store::Error::Generic {
                store: "upload",
                source: format!("{} failed earlier and was given up", self.path).into(),
            });
        }
        if self.multipart.is_none() {
            let payload = PutPayload::from_iter(std::mem::take(&mut self.pending));
            return self.store.put(&self.path, payload).await.map(drop);
        }
        let completed = async {
            if self.pending_bytes > 0 {
                self.send_part().await?;
            }
            while !self.parts.is_empty() {
                self.part_done().await?;
            }
            let multipart = self.multipart.as_mut().expect("begun");
            multipart.complete().await.map(drop)
        }
        .await;
        if completed.is_ok() {
            self.multipart = None;
        }
        self.aborted_on(completed).await
    }

    /// Gives the object up: nothing appears under its path, and no part is left in the store.
    pub async fn abort(mut self) -> object_store::Result<()> {
        self.parts.shutdown().await;
        match self.multipart.take() {
            Some(mut multipart) => multipart.abort().await,
            None => Ok(()),
        }
    }

    fn hold(&mut self, bytes: Bytes) {
        self.pending_bytes += bytes.len();
        self.pending.push(bytes);
    }

    /// Sends the bytes held as a part, once fewer than `IN_FLIGHT` are on their way.
    async fn send_part(&mut self) -> object_store::Result<()> {
        if self.multipart.is_none() {
            self.multipart = Some(self.store.put_multipart(&self.path).await?);
        }
        while self.parts.len() >= IN_FLIGHT {
            self.part_done().await?;
        }
        let payload = PutPayload::from_iter(std::mem::take(&mut self.pending));
        self.pending_bytes = 0;
        let multipart = self.multipart.as_mut().expect("begun");
        self.parts.spawn(multipart.put_part(payload));
        Ok(())
    }

    async fn part_done(&mut self) -> object_store::Result<()> {
        match self.parts.join_next().await {
            Some(done) => done?,
            None => Ok(()),
        }
    }

    /// `result`, after aborting the upload if it is an error. The abort's own failure is not
    /// reported over the error that caused it: its parts are then left to the lifecycle rule.
    async fn aborted_on<T>(&mut self, result: object_store::Result<T>) -> object_store::Result<T> {
        if result.is_err() {
            self.failed = true;
            self.parts.shutdown().await;
            if let Some(mut multipart) = self.multipart.take() {
                let _ = multipart.abort().await;
            }
        }
        result
    }
}

impl Drop for Upload {
    /// An upload dropped before it completed or was given up (its task cancelled, or its
    /// writer dropped on an error between puts) is aborted on the runtime, if one still runs.
    fn drop(&mut self) {
        if let Some(mut multipart) = self.multipart.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                let _ = multipart.abort().await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use futures::stream::BoxStream;
    use object_store::memory::InMemory;
    use object_store::{
        CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta,
        ObjectStoreExt, PutMultipartOptions, PutOptions, PutResult, UploadPart,
    };
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// An in-memory store whose multipart uploads fail their part `fail_part` (counted from 1;
    /// 0: the upload cannot begin) and count what was begun and aborted.
    #[derive(Debug)]
    struct Flaky {
        inner: InMemory,
        fail_part: usize,
        begun: AtomicUsize,
        aborted: Arc<AtomicUsize>,
    }

    impl std::fmt::Display for Flaky {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "Flaky")
        }
    }

    #[derive(Debug)]
    struct FlakyUpload {
        inner: Box<dyn MultipartUpload>,
        fail_part: usize,
        parts: usize,
        aborted: Arc<AtomicUsize>,
    }

    #[async_trait]
    impl MultipartUpload for FlakyUpload {
        fn put_part(&mut self, data: PutPayload) -> UploadPart {
            self.parts += 1;
            if self.parts == self.fail_part {
                return Box::pin(async {
                    Err(object_store::Error::Generic {
                        store: "Flaky",
                        source: "the part was refused".into(),
                    })
                });
            }
            self.inner.put_part(data)
        }
        async fn complete(&mut self) -> object_store::Result<PutResult> {
            self.inner.complete().await
        }
        async fn abort(&mut self) -> object_store::Result<()> {
            self.aborted.fetch_add(1, Ordering::SeqCst);
            self.inner.abort().await
        }
    }

    #[async_trait]
    impl ObjectStore for Flaky {
        async fn put_opts(
            &self,
            location: &Path,
            payload: PutPayload,
            opts: PutOptions,
        ) -> object_store::Result<PutResult> {
            self.inner.put_opts(location, payload, opts).await
        }
        async fn put_multipart_opts(
            &self,
            location: &Path,
            opts: PutMultipartOptions,
        ) -> object_store::Result<Box<dyn MultipartUpload>> {
            if self.fail_part == 0 {
                return Err(object_store::Error::Generic {
                    store: "Flaky",
                    source: "no upload today".into(),
                });
            }
            self.begun.fetch_add(1, Ordering::SeqCst);
            Ok(Box::new(FlakyUpload {
                inner: self.inner.put_multipart_opts(location, opts).await?,
                fail_part: self.fail_part,
                parts: 0,
                aborted: self.aborted.clone(),
            }))
        }
        async fn get_opts(
            &self,
            location: &Path,
            options: GetOptions,
        ) -> object_store::Result<GetResult> {
            self.inner.get_opts(location, options).await
        }
        fn delete_stream(
            &self,
            locations: BoxStream<'static, object_store::Result<Path>>,
        ) -> BoxStream<'static, object_store::Result<Path>> {
            self.inner.delete_stream(locations)
        }
        fn list(
            &self,
            prefix: Option<&Path>,
        ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
            self.inner.list(prefix)
        }
        async fn list_with_delimiter(
            &self,
            prefix: Option<&Path>,
        ) -> object_store::Result<ListResult> {
            self.inner.list_with_delimiter(prefix).await
        }
        async fn copy_opts(
            &self,
            from: &Path,
            to: &Path,
            options: CopyOptions,
        ) -> object_store::Result<()> {
            self.inner.copy_opts(from, to, options).await
        }
    }

    fn flaky(fail_part: usize) -> Arc<Flaky> {
        Arc::new(Flaky {
            inner: InMemory::new(),
            fail_part,
            begun: AtomicUsize::new(0),
            aborted: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// Bytes that differ from part to part, so a part sent twice or out of order shows.
    fn numbered(len: usize) -> Bytes {
        (0..len)
            .map(|i| (i / 97 + i) as u8)
            .collect::<Vec<_>>()
            .into()
    }

    /// Where the tests' uploads go.
    fn file() -> Path {
        Path::from("out/file")
    }

    /// An upload to `file()` in parts of 1,000 bytes.
    fn upload_to(store: &Arc<Flaky>) -> Upload {
        Upload::new(store.clone(), file(), 1000)
    }

    /// Puts `bytes` in pieces of `piece` bytes, then finishes.
    async fn send(store: Arc<Flaky>, bytes: &Bytes, piece: usize) -> object_store::Result<()> {
        let mut upload = upload_to(&store);
        for i in (0..bytes.len()).step_by(piece) {
            upload
                .put(bytes.slice(i..(i + piece).min(bytes.len())))
                .await?;
        }
        upload.finish().await
    }

    #[tokio::test]
    async fn objects_of_any_size_arrive_whole_in_one_put_or_in_parts() {
        for len in [0, 1, 999, 1000, 1001, 20_345] {
            for piece in [1, 333, 1000, 4096] {
                let store = flaky(usize::MAX);
                let bytes = numbered(len);
                send(store.clone(), &bytes, piece).await.unwrap();
                let stored = store.get(&file()).await.unwrap();
                assert!(stored.bytes().await.unwrap() == bytes, "{len} in {piece}");
                // A part's worth or more goes in parts; less, in one put.
                let in_parts = store.begun.load(Ordering::SeqCst) == 1;
                assert_eq!(in_parts, len >= 1000, "{len} in {piece}");
            }
        }
    }

    #[tokio::test]
    async fn a_part_that_fails_while_sending_or_at_the_end_aborts_the_upload_and_stores_nothing() {
        // 10,500 bytes in parts of 1,000: eleven parts, the last one short. Part 3 fails while
        // bytes still come; part 11 only as the upload is completed.
        for fail_part in [1, 3, 10, 11] {
            let store = flaky(fail_part);
            let err = send(store.clone(), &numbered(10_500), 700)
                .await
                .unwrap_err();
            assert!(err.to_string().contains("the part was refused"), "{err}");
            assert_eq!(store.aborted.load(Ordering::SeqCst), 1, "part {fail_part}");
            assert!(store.head(&file()).await.is_err(), "part {fail_part}");
        }
    }

    #[tokio::test]
    async fn an_upload_whose_put_failed_cannot_be_completed() {
        // The multipart upload cannot begin: the first part's bytes are still held, and a
        // single put of them would store a piece as the whole.
        let store = flaky(0);
        let mut upload = upload_to(&store);
        assert!(upload.put(numbered(1500)).await.is_err());
        let err = upload.finish().await.unwrap_err();
        assert!(err.to_string().contains("failed earlier"), "{err}");
        assert!(store.head(&file()).await.is_err());
    }

    #[tokio::test]
    async fn an_upload_dropped_unfinished_is_aborted_and_a_finished_one_is_not() {
        let store = flaky(usize::MAX);
        let mut upload = upload_to(&store);
        upload.put(numbered(2500)).await.unwrap();
        drop(upload);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert_eq!(store.aborted.load(Ordering::SeqCst), 1);
        send(store.clone(), &numbered(2500), 700).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert_eq!(
            store.aborted.load(Ordering::SeqCst),
            1,
            "the finished one stays"
        );
        assert!(store.head(&file()).await.is_ok());
    }

    #[tokio::test]
    async fn an_upload_given_up_is_aborted_and_stores_nothing() {
        let store = flaky(usize::MAX);
        let mut upload = upload_to(&store);
        upload.put(numbered(2500)).await.unwrap();
        upload.abort().await.unwrap();
        assert_eq!(store.aborted.load(Ordering::SeqCst), 1);
        assert!(store.head(&file()).await.is_err());
    }
}
