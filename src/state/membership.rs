//! A run's membership and its diff against the last sync, in bounded memory.
//!
//! Members are written as they arrive to a local Arrow IPC file (`members.arrow`, unsorted,
//! each row with its `member_key`). Only the keys are sorted: (key, row) pairs, 20 bytes a
//! member, gathered in runs of bounded size, sorted and spilled to local files, then merged into
//! `keys.arrow` (sorted by key). The merge walks each destination's previous keys file in the
//! same pass: keys only there were removed, keys only here were added. The rows of the adds
//! and removes are then read from the members files by row number into their own files (through
//! a memory map, `mapped`, so only the rows taken are copied). So the diff moves keys, not
//! members: whatever the audience's size, memory holds one run of keys, and only the members
//! that changed are copied.
//!
//! A mirror run whose previous keys fit in a quarter of its memory budget (20 bytes a key: the key,
//! copied into memory, and a row number) diffs as members arrive instead (`Spill::find_adds`,
//! `keyset`): each member's key is looked up in each destination's previous keys file (once per
//! file); the members not found are written to that destination's adds file there and then, and the
//! previous keys not found are its removes. Only the keys not in the largest
//! previous keys file are sorted; the merge interleaves them with the keys found in it (in its
//! order) to write `keys.arrow`, and diffs by walking only the destinations whose keys were not
//! looked up. The members file is then not read back unless such a destination, or one sent
//! the whole membership, needs it.
//!
//! Members and keys files are Arrow IPC rather than Parquet: hashes do not compress, so
//! Parquet's encoding bought nothing, and writing it was about a sixth of an upload run's CPU
//! (members) and half of the merge that ends a run (keys), where IPC writes the column buffers
//! as they are. A members file's footer lists each batch's rows, so rows are found by number
//! without reading the batches before them. Files of earlier builds are Parquet
//! (`members.parquet`, `keys.parquet`); readers take either, told apart by their magic bytes.
//!
//! Hash columns are kept as their 32 bytes (half their hex text; Base64's 44 characters lose a
//! quarter) by `digests`; readers give the text back. Files carry hashes and the few values
//! platforms take raw, never raw PII. The key is 16 bytes, big-endian, so byte order is key
//! order.

use super::digests;
use super::keyset::KeySet;
use super::mapped::MappedIpc;
use crate::direct::DirectSink;
use crate::error::{Error, Result};
use crate::identity::profile::Encoding;
use arrow::array::{
    Array, ArrayRef, AsArray, FixedSizeBinaryArray, RecordBatch, RecordBatchReader, UInt32Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt32Type};
use arrow::ipc::reader::FileReader;
use arrow::ipc::writer::FileWriter;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReaderBuilder, RowSelection, RowSelector};
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const KEY_COLUMN: &str = "member_key";
/// The local members file's name.
const MEMBERS_FILE: &str = "members.arrow";
const ROW_COLUMN: &str = "row";

/// Footer metadata of members files: the rows of each batch, comma-separated.
const BATCH_ROWS: &str = "activator.batch_rows";

/// Keys gathered before a sorted run is spilled (32 bytes each in memory, 20 on disk).
const RUN_KEYS: usize = 2 << 20;
/// Rows per batch of the files written here.
const CHUNK_ROWS: usize = 8192;

/// The schema of members files: the key, then the member columns.
pub fn keyed_schema(members: &SchemaRef) -> SchemaRef {
    let mut fields = vec![Arc::new(Field::new(
        KEY_COLUMN,
        DataType::FixedSizeBinary(16),
        false,
    ))];
    fields.extend(members.fields().iter().cloned());
    Arc::new(Schema::new(fields))
}

fn keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(KEY_COLUMN, DataType::FixedSizeBinary(16), false),
        Field::new(ROW_COLUMN, DataType::UInt32, false),
    ]))
}

/// Strips the key column: what destinations are sent.
pub fn without_key(batch: &RecordBatch) -> RecordBatch {
    match batch.schema().index_of(KEY_COLUMN) {
        Ok(i) => {
            let mut b = batch.clone();
            b.remove_column(i);
            b
        }
        Err(_) => batch.clone(),
    }
}

fn key_array(keys: impl Iterator<Item = u128>) -> ArrayRef {
    let mut bytes = Vec::with_capacity(keys.size_hint().0 * 16);
    for k in keys {
        bytes.extend_from_slice(&k.to_be_bytes());
    }
    Arc::new(FixedSizeBinaryArray::new(16, bytes.into(), None))
}

fn io_error(e: std::io::Error) -> Error {
    Error::transient(format!("local temporary files: {e}"))
}

/// Parquet settings of earlier builds' members and keys files (written here only to test that
/// they are still read).
#[cfg(test)]
fn writer_properties() -> parquet::file::properties::WriterProperties {
    parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::UNCOMPRESSED)
        .set_dictionary_enabled(false)
        .set_statistics_enabled(parquet::file::properties::EnabledStatistics::None)
        .set_max_row_group_row_count(Some(64 * 1024))
        .build()
}

#[cfg(test)]
fn parquet_writer(path: &Path, schema: &SchemaRef) -> Result<parquet::arrow::ArrowWriter<File>> {
    let file = File::create(path).map_err(io_error)?;
    Ok(parquet::arrow::ArrowWriter::try_new(
        file,
        schema.clone(),
        Some(writer_properties()),
    )?)
}

/// Writes a members file (Arrow IPC) and records each batch's rows in its footer. Small batches
/// (a sparse diff's selections, a selective segment's) are gathered into batches of about
/// `CHUNK_ROWS`, as each batch costs a message header and padding; large ones go as they are.
struct MembersWriter {
    writer: FileWriter<BufWriter<ScratchFile>>,
    coalescer: arrow::compute::BatchCoalescer,
    batch_rows: Vec<usize>,
}

impl MembersWriter {
    fn create(path: &Path, schema: &SchemaRef) -> Result<MembersWriter> {
        let file = ScratchFile::create(path, false)?;
        Ok(MembersWriter {
            writer: FileWriter::try_new_buffered(file, schema)?,
            coalescer: arrow::compute::BatchCoalescer::new(schema.clone(), CHUNK_ROWS)
                .with_biggest_coalesce_batch_size(Some(CHUNK_ROWS / 2)),
            batch_rows: vec![],
        })
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() > 0 {
            self.coalescer.push_batch(batch.clone())?;
            self.write_completed()?;
        }
        Ok(())
    }

    fn write_completed(&mut self) -> Result<()> {
        while let Some(batch) = self.coalescer.next_completed_batch() {
            if batch.num_rows() > 0 {
                self.writer.write(&batch)?;
                self.batch_rows.push(batch.num_rows());
            }
        }
        Ok(())
    }

    fn finish(mut self) -> Result<()> {
        self.coalescer.finish_buffered_batch()?;
        self.write_completed()?;
        let rows: Vec<String> = self.batch_rows.iter().map(|n| n.to_string()).collect();
        self.writer.write_metadata(BATCH_ROWS, rows.join(","));
        self.writer.finish()?;
        finish_ipc(self.writer)
    }
}

/// A members or keys file: written through the page cache, or, when the run will not read it back
/// (`run::DiffPlan::prepare` decides), past it (`crate::direct::DirectSink`). On this machine (a VM
/// whose host takes back the pages its guest frees) 1 GiB written through the cache took 1.9-3.3 s
/// of system CPU; asked to be written back and let go of the cache by windows (`posix_fadvise`,
/// earlier builds), 0.3 s; and the copy into the cache was still 4% of an upload run's samples
/// (`copy_folio_from_iter_atomic`). Written directly, the bytes go to the disk from the buffer the
/// IPC writer filled.
struct ScratchFile {
    written: u64,
    sink: Sink,
}

enum Sink {
    Cached(File),
    Direct(DirectSink),
}

impl ScratchFile {
    fn create(path: &Path, direct: bool) -> Result<ScratchFile> {
        let mut file = ScratchFile {
            written: 0,
            sink: Sink::Cached(File::create(path).map_err(io_error)?),
        };
        if direct {
            file.go_direct();
        }
        Ok(file)
    }

    /// Writes past the page cache from here on; only before the first byte reaches the file
    /// (direct writes start at aligned offsets). A file that cannot be opened so stays cached.
    fn go_direct(&mut self) {
        assert_eq!(self.written, 0, "a file goes direct before its first byte");
        if let Sink::Cached(file) = &self.sink
            && let Ok(same) = file.try_clone()
        {
            self.sink = Sink::Direct(DirectSink::new(same));
        }
    }

    /// Writes what is still held back: the file is then complete.
    fn finish(self) -> Result<()> {
        match self.sink {
            Sink::Cached(mut file) => file.flush(),
            Sink::Direct(sink) => sink.finish(),
        }
        .map_err(io_error)
    }
}

impl Write for ScratchFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = match &mut self.sink {
            Sink::Cached(file) => file.write(buf)?,
            Sink::Direct(sink) => sink.write(buf)?,
        };
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.sink {
            Sink::Cached(file) => file.flush(),
            Sink::Direct(sink) => sink.flush(),
        }
    }
}

/// The scratch file under an IPC writer (after its buffer), complete.
fn finish_ipc(writer: FileWriter<BufWriter<ScratchFile>>) -> Result<()> {
    let buffered = writer.into_inner()?;
    let file = buffered
        .into_inner()
        .map_err(|e| io_error(e.into_error()))?;
    file.finish()
}

/// Whether a members or keys file is Arrow IPC (this build) or Parquet (earlier builds).
fn is_ipc(path: &Path) -> Result<bool> {
    let mut magic = [0u8; 6];
    let mut file = File::open(path).map_err(io_error)?;
    match file.read_exact(&mut magic) {
        Ok(()) => Ok(&magic == b"ARROW1"),
        // Too short for either: the Parquet reader says what is wrong with it.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(io_error(e)),
    }
}

fn ipc_reader(path: &Path) -> Result<FileReader<BufReader<File>>> {
    let file = File::open(path).map_err(io_error)?;
    Ok(FileReader::try_new_buffered(file, None)?)
}

/// Writes the run's members to a local file and gathers their keys into sorted runs: all of
/// them, or where adds are looked up (`find_adds`), those not in the largest previous keys file.
pub struct Spill {
    dir: tempfile::TempDir,
    /// Targets whose adds are found as members arrive (`find_adds`), and the previous keys
    /// files they are looked up in.
    early: Vec<EarlyAdds>,
    deltas: Vec<Delta>,
    direct: bool,
    /// The members' schema as stored (`digests`), and with the key (the file's).
    stored: SchemaRef,
    schema: SchemaRef,
    members: MembersWriter,
    keys: Vec<(u128, u32)>,
    runs: Vec<PathBuf>,
    rows: u64,
}

impl Spill {
    /// A spill of members of `members_schema`, whose columns named in `hashes` hold hashes in
    /// `encoding` (kept as their bytes: `digests`).
    pub fn new(members_schema: &SchemaRef, hashes: &[String], encoding: Encoding) -> Result<Spill> {
        let dir = crate::scratch::dir("members")?;
        let stored = digests::stored_schema(members_schema, hashes, encoding);
        let schema = keyed_schema(&stored);
        let members = MembersWriter::create(&dir.path().join(MEMBERS_FILE), &schema)?;
        Ok(Spill {
            dir,
            early: vec![],
            deltas: vec![],
            direct: false,
            stored,
            schema,
            members,
            keys: vec![],
            runs: vec![],
            rows: 0,
        })
    }

    /// Finds the adds of each `(previous keys, adds file)` as members arrive: members whose key
    /// the previous keys lack are written to the adds file (`keyset`), and the previous keys
    /// that no member has are the removes. Call before any `push`.
    ///
    /// The keys file of this run is then made from the largest previous keys file (its keys
    /// still present, in order, with their rows in this run) and the keys not in it, the only
    /// keys sorted and spilled: on a usual night a few percent, not the whole membership.
    pub fn find_adds(&mut self, mut targets: Vec<(Arc<KeySet>, PathBuf)>) -> Result<()> {
        assert_eq!(self.rows, 0, "adds are looked up from the first member on");
        // The largest keys file first: `deltas[0]` is the one walked for this run's keys.
        targets.sort_by_key(|(set, _)| std::cmp::Reverse(set.keys()));
        for (set, adds) in targets {
            let delta = match self.deltas.iter().position(|d| Arc::ptr_eq(&d.set, &set)) {
                Some(i) => i,
                None => {
                    self.deltas.push(Delta {
                        rows: vec![GONE; set.keys()],
                        set,
                    });
                    self.deltas.len() - 1
                }
            };
            self.early.push(EarlyAdds {
                writer: MembersWriter::create(&adds, &self.schema)?,
                delta,
                adds,
                adds_written: 0,
            });
        }
        Ok(())
    }

    /// Writes the members file, and the keys file the merge writes, past the page cache
    /// (`ScratchFile`): for a run that will not read them back. Call before any `push`.
    pub fn write_direct(&mut self) {
        assert_eq!(self.rows, 0, "files go direct from their start");
        self.members.writer.get_mut().get_mut().go_direct();
        self.direct = true;
    }

    /// Adds members (already deduplicated) and their keys; `digests`, where given, are the
    /// bytes of their hash columns (`MemberBatch::digests`), else the text is decoded.
    pub fn push(
        &mut self,
        batch: &RecordBatch,
        keys: &[u128],
        digests: Option<&[ArrayRef]>,
    ) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if self.rows + batch.num_rows() as u64 > u32::MAX as u64 {
            return Err(Error::config(
                "more than 4 billion members in one segment: split the job",
            ));
        }
        let stored = match digests {
            Some(d) => digests::with_digests(batch, &self.stored, d)?,
            None => digests::to_stored(batch, &self.stored)?,
        };
        let mut columns = vec![key_array(keys.iter().copied())];
        columns.extend(stored.columns().iter().cloned());
        let keyed = RecordBatch::try_new(self.schema.clone(), columns)?;
        let first = self.rows as u32;
        // Targets last synced by the same run share their keys file: looked up once.
        let mut absent_by_delta = Vec::with_capacity(self.deltas.len());
        for delta in &mut self.deltas {
            let mut absent = vec![];
            delta.set.look_up(keys, first, &mut delta.rows, &mut absent);
            absent_by_delta.push(UInt32Array::from(absent));
        }
        for early in &mut self.early {
            let new = &absent_by_delta[early.delta];
            if !new.is_empty() {
                early.adds_written += new.len() as u64;
                early
                    .writer
                    .write(&arrow::compute::take_record_batch(&keyed, new)?)?;
            }
        }
        self.members.write(&keyed)?;
        // The keys to sort: all, or those the largest previous keys file lacks.
        match absent_by_delta.first() {
            None => self
                .keys
                .extend(keys.iter().enumerate().map(|(i, k)| (*k, first + i as u32))),
            Some(absent) => self.keys.extend(
                absent
                    .values()
                    .iter()
                    .map(|&i| (keys[i as usize], first + i)),
            ),
        }
        self.rows += batch.num_rows() as u64;
        if self.keys.len() >= RUN_KEYS {
            self.spill()?;
        }
        Ok(())
    }

    fn spill(&mut self) -> Result<()> {
        if self.keys.is_empty() {
            return Ok(());
        }
        self.keys.sort_unstable_by_key(|(k, _)| *k);
        let path = self
            .dir
            .path()
            .join(format!("keys-{:05}.bin", self.runs.len()));
        // Written a block of records at a time, a whole number of pages: a write that ends
        // within a page has the filesystem zero the rest of it first (`zero_user_segments` under
        // ext4's `write_begin`). With 8 KiB writes that zeroing took 0.7% of a B1 upload's
        // samples, as much as copying the runs in; with whole pages it is gone from the profile.
        let mut out = File::create(&path).map_err(io_error)?;
        let mut block = Vec::with_capacity(RunFile::BLOCK * 20);
        for records in self.keys.chunks(RunFile::BLOCK) {
            block.clear();
            for (k, r) in records {
                block.extend_from_slice(&k.to_be_bytes());
                block.extend_from_slice(&r.to_le_bytes());
            }
            out.write_all(&block).map_err(io_error)?;
        }
        self.keys.clear();
        self.runs.push(path);
        Ok(())
    }

    /// Completes the members file and spills the last keys: ready to merge.
    pub fn finish(mut self) -> Result<SortedRuns> {
        self.spill()?;
        self.members.finish()?;
        let mut early_adds = HashMap::new();
        for early in self.early {
            early.writer.finish()?;
            early_adds.insert(early.adds, (early.delta, early.adds_written));
        }
        Ok(SortedRuns {
            early_adds,
            deltas: self.deltas,
            direct: self.direct,
            members_file: self.dir.path().join(MEMBERS_FILE),
            _dir: self.dir,
            runs: self.runs,
            members: self.rows,
        })
    }
}

/// A row number that is no member's: a previous key no member of this run has.
const GONE: u32 = u32::MAX;

/// A previous keys file and this run's members in it.
struct Delta {
    set: Arc<KeySet>,
    /// Per key of `set`, in its order: the row of this run's member with that key, or `GONE`.
    rows: Vec<u32>,
}

/// A target's adds as found while members arrived.
struct EarlyAdds {
    /// Its previous keys, in `Spill::deltas`.
    delta: usize,
    adds: PathBuf,
    writer: MembersWriter,
    adds_written: u64,
}

/// A run's members file and its sorted key runs (and, where adds were looked up, the previous
/// keys files and which of their keys this run's members have).
pub struct SortedRuns {
    /// Adds files written as members arrived, with their previous keys (in `deltas`) and the
    /// number of adds.
    early_adds: HashMap<PathBuf, (usize, u64)>,
    deltas: Vec<Delta>,
    /// The keys file is written past the page cache too.
    direct: bool,
    _dir: tempfile::TempDir,
    /// The local members file (unsorted, keyed).
    pub members_file: PathBuf,
    runs: Vec<PathBuf>,
    pub members: u64,
}

impl SortedRuns {
    /// Lets go of the previous keys looked up (their mapped files, the rows found): once
    /// merged, before the files are stored.
    pub fn release_lookups(&mut self) {
        self.deltas.clear();
    }
}

/// A sorted source of (key, row) pairs.
trait Keys {
    fn next_key(&mut self) -> Result<Option<(u128, u32)>>;
}

/// A sorted run of (key, row) records, 20 bytes each, read a block at a time.
struct RunFile {
    file: File,
    block: Vec<u8>,
    at: usize,
}

impl RunFile {
    /// Records read (and written) per block: 20 bytes each, so 80 whole pages.
    const BLOCK: usize = 1 << 14;

    fn open(path: &Path) -> Result<RunFile> {
        Ok(RunFile {
            file: File::open(path).map_err(io_error)?,
            block: Vec::with_capacity(Self::BLOCK * 20),
            at: 0,
        })
    }

    /// Reads the next block; false at the end of the file.
    fn refill(&mut self) -> Result<bool> {
        self.block.clear();
        self.at = 0;
        let mut chunk = (&mut self.file).take((Self::BLOCK * 20) as u64);
        chunk.read_to_end(&mut self.block).map_err(io_error)?;
        if !self.block.len().is_multiple_of(20) {
            return Err(Error::internal("a sorted run of keys was cut short"));
        }
        Ok(!self.block.is_empty())
    }
}

impl Keys for RunFile {
    fn next_key(&mut self) -> Result<Option<(u128, u32)>> {
        if self.at == self.block.len() && !self.refill()? {
            return Ok(None);
        }
        let record = &self.block[self.at..self.at + 20];
        self.at += 20;
        Ok(Some((
            u128::from_be_bytes(record[..16].try_into().expect("16 bytes")),
            u32::from_le_bytes(record[16..].try_into().expect("4 bytes")),
        )))
    }
}

/// The record batches of a file being read.
type Batches =
    Box<dyn Iterator<Item = std::result::Result<RecordBatch, arrow::error::ArrowError>> + Send>;

/// A keys file (`keys.arrow`, or an earlier build's `keys.parquet`), read in order. The diff
/// trusts its order, so a file that does not read, or whose keys are not 16 bytes each in
/// strictly increasing order, stops the run with an error naming it (exit 2): diffed as it is,
/// it would remove and add members at random.
struct KeysFile {
    path: PathBuf,
    batches: Batches,
    /// The batch being read: its keys and rows.
    batch: Option<(FixedSizeBinaryArray, UInt32Array)>,
    row: usize,
    /// The key read last.
    last: Option<u128>,
}

impl KeysFile {
    fn open(path: &Path) -> Result<KeysFile> {
        let batches = Self::reader(path).map_err(|e| damaged_keys(path, e))?;
        Ok(KeysFile {
            path: path.to_path_buf(),
            batches,
            batch: None,
            row: 0,
            last: None,
        })
    }

    fn reader(path: &Path) -> Result<Batches> {
        Ok(if is_ipc(path)? {
            Box::new(ipc_reader(path)?)
        } else {
            Box::new(
                ParquetRecordBatchReaderBuilder::try_new(File::open(path).map_err(io_error)?)?
                    .with_batch_size(CHUNK_ROWS)
                    .build()?,
            )
        })
    }

    /// A batch's keys and rows, checked: two columns, 16-byte keys and row numbers, no nulls.
    fn columns(b: &RecordBatch) -> Option<(FixedSizeBinaryArray, UInt32Array)> {
        let keys = b.columns().first()?.as_fixed_size_binary_opt()?;
        let rows = b.columns().get(1)?.as_primitive_opt::<UInt32Type>()?;
        (keys.value_length() == 16 && keys.null_count() == 0 && rows.null_count() == 0)
            .then(|| (keys.clone(), rows.clone()))
    }
}

/// The error of a keys file that cannot be diffed against, naming it and what to do.
fn damaged_keys(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::config(format!(
        "{}: the last sync's keys file cannot be read ({e}); restore it in the state store, or \
         run the date once with the destination's sync = \"replace\" (where the platform has \
         one), which needs no earlier keys",
        path.display()
    ))
}

impl Keys for KeysFile {
    fn next_key(&mut self) -> Result<Option<(u128, u32)>> {
        loop {
            if let Some((keys, rows)) = &self.batch
                && self.row < rows.len()
            {
                let k = u128::from_be_bytes(keys.value(self.row).try_into().expect("16 bytes"));
                let r = rows.value(self.row);
                self.row += 1;
                if self.last.is_some_and(|last| last >= k) {
                    return Err(damaged_keys(&self.path, "its keys are out of order"));
                }
                self.last = Some(k);
                return Ok(Some((k, r)));
            }
            match self.batches.next() {
                Some(b) => {
                    let b = b.map_err(|e| damaged_keys(&self.path, e))?;
                    let columns = Self::columns(&b).ok_or_else(|| {
                        damaged_keys(
                            &self.path,
                            "not two columns of 16-byte keys and row numbers",
                        )
                    })?;
                    self.batch = Some(columns);
                    self.row = 0;
                }
                None => return Ok(None),
            }
        }
    }
}

/// Writes (key, row) pairs to a keys file (Arrow IPC).
struct KeysWriter {
    writer: FileWriter<BufWriter<ScratchFile>>,
    keys: Vec<u128>,
    rows: Vec<u32>,
}

impl KeysWriter {
    fn create(path: &Path, direct: bool) -> Result<KeysWriter> {
        let file = ScratchFile::create(path, direct)?;
        Ok(KeysWriter {
            writer: FileWriter::try_new_buffered(file, &keys_schema())?,
            keys: Vec::with_capacity(CHUNK_ROWS),
            rows: Vec::with_capacity(CHUNK_ROWS),
        })
    }

    fn push(&mut self, key: u128, row: u32) -> Result<()> {
        self.keys.push(key);
        self.rows.push(row);
        if self.keys.len() >= CHUNK_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.keys.is_empty() {
            return Ok(());
        }
        let batch = RecordBatch::try_new(
            keys_schema(),
            vec![
                key_array(self.keys.drain(..)),
                Arc::new(UInt32Array::from_iter_values(self.rows.drain(..))),
            ],
        )?;
        self.writer.write(&batch)?;
        Ok(())
    }

    fn close(mut self) -> Result<()> {
        self.flush()?;
        self.writer.finish()?;
        finish_ipc(self.writer)
    }
}

/// One destination's side of the diff: its previous membership (members and sorted keys), and
/// where the adds and removes go.
#[derive(Clone)]
pub struct DiffTarget {
    pub previous_members: PathBuf,
    pub previous_keys: PathBuf,
    pub adds: PathBuf,
    pub removes: PathBuf,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiffCounts {
    pub previous: u64,
    pub adds: u64,
    pub removes: u64,
}

struct Diff {
    previous: KeysFile,
    head: Option<(u128, u32)>,
    add_rows: Vec<u32>,
    remove_rows: Vec<u32>,
    counts: DiffCounts,
}

impl Diff {
    /// Previous keys below `key` (all, for `None`) have left.
    fn removes_until(&mut self, key: Option<u128>) -> Result<()> {
        while let Some((k, row)) = self.head {
            if key.is_some_and(|key| k >= key) {
                break;
            }
            self.remove_rows.push(row);
            self.counts.previous += 1;
            self.head = self.previous.next_key()?;
        }
        Ok(())
    }

    fn member(&mut self, key: u128, row: u32) -> Result<()> {
        self.removes_until(Some(key))?;
        match self.head {
            Some((k, _)) if k == key => {
                self.counts.previous += 1;
                self.head = self.previous.next_key()?;
            }
            _ => self.add_rows.push(row),
        }
        Ok(())
    }
}

/// Merges the key runs (and the members still in the largest previous keys file adds were
/// looked up in) into `keys` (the sorted keys of the new membership), and diffs them against
/// each target's previous keys where its adds were not found as members arrived; then copies
/// the rows removed (and those added, where not found so) into each target's files. Blocking:
/// run it on a blocking thread.
pub fn merge(
    runs: &SortedRuns,
    keys: Option<&Path>,
    targets: &[DiffTarget],
) -> Result<Vec<DiffCounts>> {
    let started = std::time::Instant::now();
    let sorted = RunsMerge::open(&runs.runs)?;
    let mut source: Box<dyn Keys + '_> = match runs.deltas.first() {
        Some(delta) => Box::new(Interleaved::new(Present { delta, next: 0 }, sorted)?),
        None => Box::new(sorted),
    };
    let out = keys
        .map(|k| KeysWriter::create(k, runs.direct))
        .transpose()?;
    // Targets whose adds were found as members arrived are diffed already: their removes are
    // taken on a thread of their own while the keys are merged.
    let mut diffs = vec![];
    for t in targets {
        if runs.early_adds.contains_key(&t.adds) {
            diffs.push(None);
            continue;
        }
        let mut previous = KeysFile::open(&t.previous_keys)?;
        let head = previous.next_key()?;
        diffs.push(Some(Diff {
            previous,
            head,
            add_rows: vec![],
            remove_rows: vec![],
            counts: DiffCounts::default(),
        }));
    }
    std::thread::scope(|scope| {
        let early = scope.spawn(|| early_diffs(runs, targets));
        let merged = merge_keys(runs, source.as_mut(), out, &mut diffs);
        let early = early
            .join()
            .map_err(|_| Error::internal("the diff's removes stopped"));
        // The merge's error first: the removes' may only follow from it.
        let merged = merged?;
        let mut early_counts = early??.into_iter();
        let merged_in = started.elapsed();
        let mut counts = vec![];
        for (d, t) in diffs.into_iter().zip(targets) {
            counts.push(match d {
                Some(mut d) => {
                    d.removes_until(None)?;
                    d.counts.adds = d.add_rows.len() as u64;
                    d.counts.removes = d.remove_rows.len() as u64;
                    extract(&runs.members_file, d.add_rows, &t.adds)?;
                    extract(&t.previous_members, d.remove_rows, &t.removes)?;
                    d.counts
                }
                None => early_counts.next().expect("a count per early target"),
            });
        }
        tracing::debug!(
            keys = merged,
            merge_seconds = merged_in.as_secs_f64(),
            seconds = started.elapsed().as_secs_f64(),
            "diff merged"
        );
        Ok(counts)
    })
}

/// Writes this run's keys, in order, to `out`, and diffs them against each target's previous
/// keys in `diffs`; returns how many there were, which must be the run's members, each key
/// above the one before.
fn merge_keys(
    runs: &SortedRuns,
    source: &mut dyn Keys,
    mut out: Option<KeysWriter>,
    diffs: &mut [Option<Diff>],
) -> Result<u64> {
    let mut merged = 0u64;
    let mut last = None;
    while let Some((key, row)) = source.next_key()? {
        if last.is_some_and(|l| l >= key) {
            return Err(Error::internal(
                "the diff met a key out of order or twice; nothing was sent: report this",
            ));
        }
        last = Some(key);
        merged += 1;
        if let Some(o) = out.as_mut() {
            o.push(key, row)?;
        }
        for d in diffs.iter_mut().flatten() {
            d.member(key, row)?;
        }
    }
    if merged != runs.members {
        return Err(Error::internal(format!(
            "the diff found {merged} keys for {} members; nothing was sent: report this",
            runs.members
        )));
    }
    if let Some(o) = out {
        o.close()?;
    }
    Ok(merged)
}

/// The counts of the targets whose adds were found as members arrived, in order, with their
/// removes taken into their files: once per previous keys file, copied for the targets that
/// share it.
fn early_diffs(runs: &SortedRuns, targets: &[DiffTarget]) -> Result<Vec<DiffCounts>> {
    let mut done: HashMap<usize, (DiffCounts, &Path)> = HashMap::new();
    let mut counts = vec![];
    for t in targets {
        let Some(&(delta, _)) = runs.early_adds.get(&t.adds) else {
            continue;
        };
        match done.get(&delta) {
            Some((c, removes)) => {
                std::fs::copy(removes, &t.removes).map_err(io_error)?;
                counts.push(*c);
            }
            None => {
                let (c, remove_rows) = early_diff(runs, &t.adds)?;
                extract(&t.previous_members, remove_rows, &t.removes)?;
                done.insert(delta, (c, &t.removes));
                counts.push(c);
            }
        }
    }
    Ok(counts)
}

/// The sorted key runs, merged.
struct RunsMerge {
    runs: Vec<RunFile>,
    heads: Heads,
}

/// Each unfinished run's next key. Up to `FEW_RUNS` runs, the least is found by comparing them
/// all: B1's upload merges 3 runs, and a binary heap's sift took twice as long a key (5.2 million
/// keys of 3 runs, in memory: 130 ms against 66). The gap closes as runs are added (12 runs: 243
/// against 200 ms for 7.2 million keys; 16: even), so more runs than 12 go in the heap.
enum Heads {
    /// In run order, so of equal keys the earlier run's comes first, as in the heap.
    Few(Vec<Head>),
    Many(BinaryHeap<Head>),
}

const FEW_RUNS: usize = 12;

/// A run's next key in `RunsMerge`: (key, row, run).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Head(u128, u32, usize);

impl Ord for Head {
    fn cmp(&self, other: &Self) -> Ordering {
        other.0.cmp(&self.0).then(other.2.cmp(&self.2))
    }
}

impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl RunsMerge {
    fn open(paths: &[PathBuf]) -> Result<RunsMerge> {
        let mut runs = paths
            .iter()
            .map(|p| RunFile::open(p))
            .collect::<Result<Vec<_>>>()?;
        let mut heads = vec![];
        for (i, r) in runs.iter_mut().enumerate() {
            if let Some((k, row)) = r.next_key()? {
                heads.push(Head(k, row, i));
            }
        }
        let heads = match runs.len() <= FEW_RUNS {
            true => Heads::Few(heads),
            false => Heads::Many(BinaryHeap::from(heads)),
        };
        Ok(RunsMerge { runs, heads })
    }
}

impl Keys for RunsMerge {
    fn next_key(&mut self) -> Result<Option<(u128, u32)>> {
        match &mut self.heads {
            Heads::Few(heads) => {
                // The first of the least keys: `min_by_key` keeps the first of equals.
                let Some(least) = (0..heads.len()).min_by_key(|&h| heads[h].0) else {
                    return Ok(None);
                };
                let Head(key, row, i) = heads[least];
                match self.runs[i].next_key()? {
                    Some((k, r)) => heads[least] = Head(k, r, i),
                    None => {
                        heads.remove(least);
                    }
                }
                Ok(Some((key, row)))
            }
            Heads::Many(heap) => {
                let Some(mut top) = heap.peek_mut() else {
                    return Ok(None);
                };
                let Head(key, row, i) = *top;
                // The run's next key takes its place (one sift), or the run is done.
                match self.runs[i].next_key()? {
                    Some((k, r)) => *top = Head(k, r, i),
                    None => {
                        std::collections::binary_heap::PeekMut::pop(top);
                    }
                }
                Ok(Some((key, row)))
            }
        }
    }
}

/// The members found in the previous keys, interleaved with the sorted adds: this run's keys
/// in order. A comparison a key, where a heap of the two cost a sift.
struct Interleaved<'a> {
    present: Present<'a>,
    adds: RunsMerge,
    next_present: Option<(u128, u32)>,
    next_add: Option<(u128, u32)>,
}

impl<'a> Interleaved<'a> {
    fn new(mut present: Present<'a>, mut adds: RunsMerge) -> Result<Interleaved<'a>> {
        Ok(Interleaved {
            next_present: present.next_key()?,
            next_add: adds.next_key()?,
            present,
            adds,
        })
    }
}

impl Keys for Interleaved<'_> {
    fn next_key(&mut self) -> Result<Option<(u128, u32)>> {
        match (self.next_present, self.next_add) {
            (Some(p), Some(a)) if a.0 < p.0 => {
                self.next_add = self.adds.next_key()?;
                Ok(Some(a))
            }
            (Some(p), _) => {
                self.next_present = self.present.next_key()?;
                Ok(Some(p))
            }
            (None, Some(a)) => {
                self.next_add = self.adds.next_key()?;
                Ok(Some(a))
            }
            (None, None) => Ok(None),
        }
    }
}

/// The counts and removed rows of a target whose adds were found as members arrived: its
/// previous keys that no member has.
fn early_diff(runs: &SortedRuns, adds: &Path) -> Result<(DiffCounts, Vec<u32>)> {
    let (delta, adds) = runs.early_adds[adds];
    let delta = &runs.deltas[delta];
    let remove_rows: Vec<u32> = (0..delta.rows.len())
        .filter(|&i| delta.rows[i] == GONE)
        .map(|i| delta.set.entry(i).1)
        .collect();
    let counts = DiffCounts {
        previous: delta.rows.len() as u64,
        adds,
        removes: remove_rows.len() as u64,
    };
    if counts.previous - counts.removes + counts.adds != runs.members {
        return Err(Error::internal(format!(
            "the diff found {} members kept and {} added of {}; nothing was sent: report this",
            counts.previous - counts.removes,
            counts.adds,
            runs.members
        )));
    }
    Ok((counts, remove_rows))
}

/// This run's members in a previous keys file, in key order, with their rows in this run.
struct Present<'a> {
    delta: &'a Delta,
    next: usize,
}

impl Keys for Present<'_> {
    fn next_key(&mut self) -> Result<Option<(u128, u32)>> {
        while let Some(&row) = self.delta.rows.get(self.next) {
            let i = self.next;
            self.next += 1;
            if row != GONE {
                return Ok(Some((self.delta.set.key(i), row)));
            }
        }
        Ok(None)
    }
}

/// Copies the rows numbered `rows` of the members file `src` into the members file `out`, in
/// file order.
fn extract(src: &Path, mut rows: Vec<u32>, out: &Path) -> Result<()> {
    rows.sort_unstable();
    if is_ipc(src)? {
        let file = MappedIpc::open(src)?;
        let mut writer = MembersWriter::create(out, &file.schema())?;
        extract_ipc(&file, &rows, &mut writer).map_err(|e| e.context(src.display()))?;
        writer.finish()
    } else {
        let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(src).map_err(io_error)?)?;
        let mut writer = MembersWriter::create(out, builder.schema())?;
        extract_parquet(builder, &rows, &mut writer)?;
        writer.finish()
    }
}

/// `extract` from a mapped IPC file (`mapped`): only the batches that hold selected rows are
/// decoded, found through the footer's batch sizes (each decoded in order without them), and
/// only the selected rows are copied.
fn extract_ipc(file: &MappedIpc, rows: &[u32], writer: &mut MembersWriter) -> Result<()> {
    // Trusted only if it names every batch; each batch read is checked against it.
    let batch_rows: Option<Vec<u64>> = file
        .custom_metadata()
        .get(BATCH_ROWS)
        .and_then(|v| v.split(',').map(|n| n.parse().ok()).collect())
        .filter(|sizes: &Vec<u64>| sizes.len() == file.num_batches());
    let (mut index, mut start, mut i) = (0usize, 0u64, 0usize);
    while i < rows.len() {
        let row = rows[i] as u64;
        if let Some(sizes) = &batch_rows {
            while index < sizes.len() && start + sizes[index] <= row {
                start += sizes[index];
                index += 1;
            }
        }
        if index == file.num_batches() {
            break;
        }
        let batch = file.batch(index)?;
        if let Some(sizes) = &batch_rows
            && sizes[index] != batch.num_rows() as u64
        {
            return Err(Error::internal(format!(
                "a members file's batch {index} has {} rows where its footer says {}",
                batch.num_rows(),
                sizes[index]
            )));
        }
        let end = start + batch.num_rows() as u64;
        let mut take = vec![];
        while i < rows.len() && (rows[i] as u64) < end {
            take.push((rows[i] as u64 - start) as u32);
            i += 1;
        }
        if !take.is_empty() {
            let selected = arrow::compute::take_record_batch(&batch, &UInt32Array::from(take))?;
            writer.write(&selected)?;
        }
        drop(batch);
        file.release(index);
        start = end;
        index += 1;
    }
    if i < rows.len() {
        return Err(Error::internal(format!(
            "a members file has fewer rows than its keys name (row {})",
            rows[i]
        )));
    }
    Ok(())
}

/// `extract` from a Parquet members file of an earlier build, by row selection.
fn extract_parquet(
    builder: ParquetRecordBatchReaderBuilder<File>,
    rows: &[u32],
    writer: &mut MembersWriter,
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut selectors = vec![];
    let mut at = 0usize;
    let mut i = 0;
    while i < rows.len() {
        let start = rows[i] as usize;
        let mut end = start + 1;
        i += 1;
        while i < rows.len() && rows[i] as usize == end {
            end += 1;
            i += 1;
        }
        if start > at {
            selectors.push(RowSelector::skip(start - at));
        }
        selectors.push(RowSelector::select(end - start));
        at = end;
    }
    let reader = builder
        .with_batch_size(CHUNK_ROWS)
        .with_row_selection(RowSelection::from(selectors))
        .build()?;
    for b in reader {
        writer.write(&b?)?;
    }
    Ok(())
}

/// Reads a members file as member batches (key stripped, hashes as text), for sending.
pub fn member_batches(path: &Path) -> Result<Box<dyn Iterator<Item = Result<RecordBatch>> + Send>> {
    if is_ipc(path)? {
        return Ok(Box::new(
            ipc_reader(path)?.map(|b| digests::to_text(&without_key(&b?))),
        ));
    }
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path).map_err(io_error)?)?
        .with_batch_size(CHUNK_ROWS)
        .build()?;
    Ok(Box::new(
        reader.map(|b| b.map(|b| without_key(&b)).map_err(Error::from)),
    ))
}

/// The member schema of a members file.
pub fn member_schema(path: &Path) -> Result<SchemaRef> {
    let schema = if is_ipc(path)? {
        ipc_reader(path)?.schema()
    } else {
        ParquetRecordBatchReaderBuilder::try_new(File::open(path).map_err(io_error)?)?
            .build()?
            .schema()
    };
    let fields: Vec<_> = schema
        .fields()
        .iter()
        .filter(|f| f.name() != KEY_COLUMN)
        .cloned()
        .collect();
    Ok(digests::text_schema(&Arc::new(Schema::new(fields))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::StringArray;

    fn members(keys: &[u128]) -> (RecordBatch, Vec<u128>) {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "email_sha256",
            DataType::Utf8,
            true,
        )]));
        // Member k's hash is k in 64 hex digits (`values_of` names it `h{k}`).
        let values: Vec<String> = keys.iter().map(|k| format!("{k:064x}")).collect();
        (
            RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(values))]).unwrap(),
            keys.to_vec(),
        )
    }

    fn values_of(path: &Path) -> Vec<String> {
        let mut out = vec![];
        for b in member_batches(path).unwrap() {
            let b = b.unwrap();
            let s = b.column(0).as_string::<i32>();
            out.extend(s.iter().map(|v| {
                let v = v.unwrap();
                assert_eq!(v.len(), 64, "read back as the text written");
                format!("h{}", u128::from_str_radix(v, 16).unwrap())
            }));
        }
        out
    }

    #[test]
    fn a_keys_file_that_is_cut_short_out_of_order_or_of_other_columns_is_named_as_damaged() {
        let d = tempfile::tempdir().unwrap();
        let d = d.path();
        let write = |name: &str, keys: &[u128], width: i32| {
            let path = d.join(name);
            let keys = FixedSizeBinaryArray::try_from_iter(
                keys.iter()
                    .map(|k| k.to_be_bytes()[..width as usize].to_vec()),
            )
            .unwrap();
            let rows = UInt32Array::from_iter_values(0..keys.len() as u32);
            let batch = RecordBatch::try_from_iter([
                ("key", Arc::new(keys) as ArrayRef),
                ("row", Arc::new(rows) as ArrayRef),
            ])
            .unwrap();
            let mut w = FileWriter::try_new(File::create(&path).unwrap(), &batch.schema()).unwrap();
            w.write(&batch).unwrap();
            w.finish().unwrap();
            path
        };
        let read_all = |path: &Path| -> Result<Vec<u128>> {
            let mut f = KeysFile::open(path)?;
            let mut out = vec![];
            while let Some((k, _)) = f.next_key()? {
                out.push(k);
            }
            Ok(out)
        };
        assert_eq!(
            read_all(&write("good.arrow", &[1, 5, 9], 16)).unwrap(),
            [1, 5, 9]
        );
        let whole = std::fs::read(d.join("good.arrow")).unwrap();
        std::fs::write(d.join("cut.arrow"), &whole[..whole.len() / 2]).unwrap();
        std::fs::write(d.join("empty.arrow"), b"").unwrap();
        for (name, why) in [
            ("cut.arrow", ""),
            ("empty.arrow", ""),
            ("repeated.arrow", "out of order"),
            ("unordered.arrow", "out of order"),
            ("narrow.arrow", "16-byte keys"),
        ] {
            match name {
                "repeated.arrow" => write(name, &[1, 5, 5], 16),
                "unordered.arrow" => write(name, &[1, 9, 5], 16),
                "narrow.arrow" => write(name, &[1, 5, 9], 8),
                _ => d.join(name),
            };
            let err = read_all(&d.join(name)).unwrap_err();
            assert_eq!(err.class, crate::ErrorClass::Config, "{name}: {err}");
            assert!(
                err.message.contains(name)
                    && err.message.contains("keys file cannot be read")
                    && err.message.contains(why)
                    && err.message.contains("sync = \"replace\""),
                "{name}: {err}"
            );
        }
    }

    fn keys_of(path: &Path) -> Vec<u128> {
        let mut f = KeysFile::open(path).unwrap();
        let mut out = vec![];
        while let Some((k, _)) = f.next_key().unwrap() {
            out.push(k);
        }
        out
    }

    /// A run's members, one key run per chunk (to exercise the merge), their hashes stored as
    /// bytes.
    fn sorted_runs(chunks: &[&[u128]]) -> SortedRuns {
        let (first, _) = members(&[]);
        let hashes = ["email_sha256".to_string()];
        let mut spill = Spill::new(&first.schema(), &hashes, Encoding::Hex).unwrap();
        for c in chunks {
            let (b, k) = members(c);
            spill.push(&b, &k, None).unwrap();
            spill.spill().unwrap();
        }
        spill.finish().unwrap()
    }

    /// A spill that looks up the adds of each `(previous keys file, adds file)`.
    fn finding_adds(targets: &[(&Path, PathBuf)]) -> Spill {
        let (b, _) = members(&[]);
        let mut spill =
            Spill::new(&b.schema(), &["email_sha256".to_string()], Encoding::Hex).unwrap();
        let mut sets: Vec<(PathBuf, Arc<KeySet>)> = vec![];
        let mut found = vec![];
        for (keys, adds) in targets {
            if !sets.iter().any(|(p, _)| p == keys) {
                sets.push((keys.to_path_buf(), Arc::new(KeySet::open(keys).unwrap())));
            }
            let set = &sets.iter().find(|(p, _)| p == keys).unwrap().1;
            found.push((set.clone(), adds.clone()));
        }
        spill.find_adds(found).unwrap();
        spill
    }

    fn keep(runs: &SortedRuns, dir: &Path, name: &str) -> PathBuf {
        let p = dir.join(format!("{name}.members.arrow"));
        std::fs::copy(&runs.members_file, &p).unwrap();
        p
    }

    /// The diff tests' first sync (members 5, 1, 9, 3, 7) and its keys file.
    fn first_sync(d: &Path) -> (SortedRuns, PathBuf) {
        let first = sorted_runs(&[&[5, 1, 9], &[3, 7]]);
        let k1 = d.join("k1.arrow");
        merge(&first, Some(&k1), &[]).unwrap();
        (first, k1)
    }

    /// The diff tests' second sync (1 and 9 leave, 2 and 10 join), diffed against a previous
    /// membership.
    fn second_diff(d: &Path, previous_members: PathBuf, previous_keys: PathBuf) -> DiffTarget {
        let second = sorted_runs(&[&[10, 3], &[5, 2, 7]]);
        let target = DiffTarget {
            previous_members,
            previous_keys,
            adds: d.join("a2.arrow"),
            removes: d.join("r2.arrow"),
        };
        merge(&second, None, std::slice::from_ref(&target)).unwrap();
        target
    }

    #[test]
    fn adds_found_as_members_arrive_are_the_merges_and_spare_reading_the_members_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (first, k1) = first_sync(d);
        let m1 = keep(&first, d, "m1");
        let adds = d.join("a2.arrow");
        let mut spill = finding_adds(&[(&k1, adds.clone())]);
        spill.write_direct();
        // 1 and 9 leave, 2 and 10 join.
        for c in [&[10u128, 3][..], &[5, 2, 7]] {
            let (b, k) = members(c);
            spill.push(&b, &k, None).unwrap();
        }
        let second = spill.finish().unwrap();
        // The merge has no need of the members file for the adds.
        std::fs::remove_file(&second.members_file).unwrap();
        let target = DiffTarget {
            previous_members: m1,
            previous_keys: k1,
            adds,
            removes: d.join("r2.arrow"),
        };
        let k2 = d.join("k2.arrow");
        let counts = merge(&second, Some(&k2), std::slice::from_ref(&target)).unwrap();
        assert_eq!((counts[0].adds, counts[0].removes), (2, 2));
        assert_eq!(values_of(&target.adds), ["h10", "h2"]);
        assert_eq!(values_of(&target.removes), ["h1", "h9"]);
        assert_eq!(keys_of(&k2), [2, 3, 5, 7, 10]);
    }

    #[test]
    fn targets_diffed_as_members_arrive_and_by_the_merge_get_the_same_adds_and_removes() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (first, k1) = first_sync(d);
        let m1 = keep(&first, d, "m1");
        // Two destinations last synced by the same run share its keys, looked up once.
        let mut spill =
            finding_adds(&[(&k1, d.join("a.adds.arrow")), (&k1, d.join("b.adds.arrow"))]);
        let (b, k) = members(&[10, 3, 5, 2, 7]);
        spill.push(&b, &k, None).unwrap();
        let second = spill.finish().unwrap();
        let target = |name: &str| DiffTarget {
            previous_members: m1.clone(),
            previous_keys: k1.clone(),
            adds: d.join(format!("{name}.adds.arrow")),
            removes: d.join(format!("{name}.removes.arrow")),
        };
        // A third destination's adds were not looked up: the merge diffs it.
        let targets = [target("a"), target("b"), target("c")];
        let k2 = d.join("k2.arrow");
        let counts = merge(&second, Some(&k2), &targets).unwrap();
        for (c, t) in counts.iter().zip(&targets) {
            assert_eq!(
                *c,
                DiffCounts {
                    previous: 5,
                    adds: 2,
                    removes: 2
                }
            );
            assert_eq!(values_of(&t.adds), ["h10", "h2"]);
            assert_eq!(values_of(&t.removes), ["h1", "h9"]);
        }
        assert_eq!(keys_of(&k2), [2, 3, 5, 7, 10]);
    }

    #[test]
    fn targets_last_synced_by_different_runs_each_get_their_own_adds_and_removes() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // A was last synced with 5, 1, 9, 3, 7; B, with 2, 3, 4. A's keys file, the larger,
        // is the one walked for the keys.
        let (first, ka) = first_sync(d);
        let ma = keep(&first, d, "ma");
        let other = sorted_runs(&[&[2, 3, 4]]);
        let kb = d.join("kb.arrow");
        merge(&other, Some(&kb), &[]).unwrap();
        let mb = keep(&other, d, "mb");
        let target = |name: &str, keys: &Path, members: &Path| DiffTarget {
            previous_members: members.to_path_buf(),
            previous_keys: keys.to_path_buf(),
            adds: d.join(format!("{name}.adds.arrow")),
            removes: d.join(format!("{name}.removes.arrow")),
        };
        let targets = [target("a", &ka, &ma), target("b", &kb, &mb)];
        let mut spill = finding_adds(&[
            (&kb, targets[1].adds.clone()),
            (&ka, targets[0].adds.clone()),
        ]);
        let (b, k) = members(&[10, 3, 5, 2, 7]);
        spill.push(&b, &k, None).unwrap();
        let second = spill.finish().unwrap();
        let k2 = d.join("k2.arrow");
        let counts = merge(&second, Some(&k2), &targets).unwrap();
        assert_eq!(keys_of(&k2), [2, 3, 5, 7, 10]);
        assert_eq!(
            (counts[0].previous, counts[0].adds, counts[0].removes),
            (5, 2, 2)
        );
        assert_eq!(values_of(&targets[0].adds), ["h10", "h2"]);
        assert_eq!(values_of(&targets[0].removes), ["h1", "h9"]);
        assert_eq!(
            (counts[1].previous, counts[1].adds, counts[1].removes),
            (3, 3, 1)
        );
        assert_eq!(values_of(&targets[1].adds), ["h10", "h5", "h7"]);
        assert_eq!(values_of(&targets[1].removes), ["h4"]);
    }

    #[test]
    fn only_the_keys_not_in_the_previous_file_are_sorted_and_the_keys_file_holds_all() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // The first sync: the even numbers below 2000.
        let evens: Vec<u128> = (0..1000).map(|i| i * 2).collect();
        let first = sorted_runs(&[&evens]);
        let k1 = d.join("k1.arrow");
        merge(&first, Some(&k1), &[]).unwrap();
        let m1 = keep(&first, d, "m1");
        // The second: every number below 1500, in batches, the adds spilled in several runs.
        let adds = d.join("a.adds.arrow");
        let mut spill = finding_adds(&[(&k1, adds.clone())]);
        let all: Vec<u128> = (0..1500).rev().collect();
        for chunk in all.chunks(400) {
            let (b, k) = members(chunk);
            spill.push(&b, &k, None).unwrap();
            // Only the odd numbers (not in the first sync) are kept to sort.
            assert!(spill.keys.iter().all(|(k, _)| k % 2 == 1));
            spill.spill().unwrap();
        }
        let second = spill.finish().unwrap();
        assert!(second.runs.len() >= 3);
        let target = DiffTarget {
            previous_members: m1,
            previous_keys: k1,
            adds,
            removes: d.join("a.removes.arrow"),
        };
        let k2 = d.join("k2.arrow");
        let counts = merge(&second, Some(&k2), std::slice::from_ref(&target)).unwrap();
        assert_eq!(
            counts[0],
            DiffCounts {
                previous: 1000,
                adds: 750,
                removes: 250
            }
        );
        assert_eq!(keys_of(&k2), (0..1500).collect::<Vec<u128>>());
        let removed: Vec<String> = (1500..2000).step_by(2).map(|k| format!("h{k}")).collect();
        assert_eq!(values_of(&target.removes), removed);
        // In members-file order: 1499 first.
        let added: Vec<String> = (0..1500)
            .rev()
            .filter(|k| k % 2 == 1)
            .map(|k| format!("h{k}"))
            .collect();
        assert_eq!(values_of(&target.adds), added);
        // Each key's row is its member's in this run's members file.
        let rows = KeySet::open(&k2).unwrap();
        for i in 0..1500 {
            assert_eq!(rows.entry(i), (i as u128, 1499 - i as u32));
        }
    }

    #[test]
    fn a_scratch_file_holds_every_byte_in_order_cached_or_direct() {
        let dir = tempfile::tempdir().unwrap();
        let bytes: Vec<u8> = (0..20_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for direct in [false, true] {
            let path = dir.path().join(format!("direct-{direct}"));
            let mut w = ScratchFile::create(&path, direct).unwrap();
            assert_eq!(matches!(w.sink, Sink::Direct(_)), direct);
            // Pieces of uneven sizes, and one larger than a direct write's chunk.
            let (small, large) = bytes.split_at(60_000);
            for piece in small.chunks(3001) {
                w.write_all(piece).unwrap();
            }
            w.write_all(large).unwrap();
            w.finish().unwrap();
            assert!(std::fs::read(&path).unwrap() == bytes, "direct: {direct}");
        }
    }

    #[test]
    fn a_spill_keeps_hash_columns_as_their_bytes_and_reads_them_back_as_text() {
        let runs = sorted_runs(&[&[5, 1]]);
        let stored = ipc_reader(&runs.members_file).unwrap().schema();
        assert_eq!(
            stored.field_with_name("email_sha256").unwrap().data_type(),
            &DataType::FixedSizeBinary(32)
        );
        let (text, _) = members(&[]);
        assert_eq!(member_schema(&runs.members_file).unwrap(), text.schema());
        assert_eq!(values_of(&runs.members_file), ["h5", "h1"]);
    }

    #[test]
    fn merge_sorts_keys_and_diffs_against_the_previous_membership() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (first, k1) = first_sync(d);
        assert_eq!(keys_of(&k1), [1, 3, 5, 7, 9]);
        let m1 = keep(&first, d, "m1");
        assert_eq!(values_of(&m1), ["h5", "h1", "h9", "h3", "h7"]);

        // 1 and 9 leave, 2 and 10 join.
        let second = sorted_runs(&[&[10, 3], &[5, 2, 7]]);
        let k2 = d.join("k2.arrow");
        let target = DiffTarget {
            previous_members: m1,
            previous_keys: k1,
            adds: d.join("a2.arrow"),
            removes: d.join("r2.arrow"),
        };
        let counts = merge(&second, Some(&k2), std::slice::from_ref(&target)).unwrap();
        assert_eq!(
            counts[0],
            DiffCounts {
                previous: 5,
                adds: 2,
                removes: 2
            }
        );
        assert_eq!(keys_of(&k2), [2, 3, 5, 7, 10]);
        // In members-file order.
        assert_eq!(values_of(&target.adds), ["h10", "h2"]);
        assert_eq!(values_of(&target.removes), ["h1", "h9"]);
    }

    #[test]
    fn large_merges_keep_every_key_once_in_order_and_diff_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut x = 88172645463325252u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let all: Vec<u128> = (0..60_000).map(|_| (next() as u128) << 40 | 7).collect();
        let (old, new) = (&all[..40_000], &all[20_000..]);
        let runs_old = sorted_runs(&old.chunks(7_000).collect::<Vec<_>>());
        let k_old = d.join("old.keys.arrow");
        merge(&runs_old, Some(&k_old), &[]).unwrap();
        let m_old = keep(&runs_old, d, "old");
        let runs_new = sorted_runs(&new.chunks(9_000).collect::<Vec<_>>());
        let k_new = d.join("new.keys.arrow");
        let target = DiffTarget {
            previous_members: m_old,
            previous_keys: k_old,
            adds: d.join("adds.arrow"),
            removes: d.join("removes.arrow"),
        };
        let counts = merge(&runs_new, Some(&k_new), std::slice::from_ref(&target)).unwrap();
        let mut expected = new.to_vec();
        expected.sort_unstable();
        assert_eq!(keys_of(&k_new), expected);
        assert_eq!(counts[0].adds, 20_000);
        assert_eq!(counts[0].removes, 20_000);
        let adds: Vec<String> = all[40_000..].iter().map(|k| format!("h{k}")).collect();
        let removes: Vec<String> = all[..20_000].iter().map(|k| format!("h{k}")).collect();
        assert_eq!(values_of(&target.adds), adds);
        assert_eq!(values_of(&target.removes), removes);
    }

    #[test]
    fn merges_of_few_or_many_runs_and_of_runs_longer_than_a_block_keep_every_key_in_order() {
        let mut x = 0x2545f4914f6cdd1du64;
        let all: Vec<u128> = (0..50_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x as u128) << 40 | 9
            })
            .collect();
        let mut expected = all.clone();
        expected.sort_unstable();
        // 2 runs of several blocks each; 4 runs (compared all together); 25 (a heap).
        for run_keys in [2 * RunFile::BLOCK + 100, 12_500, 2_000] {
            let dir = tempfile::tempdir().unwrap();
            let keys = dir.path().join("keys.arrow");
            let runs = sorted_runs(&all.chunks(run_keys).collect::<Vec<_>>());
            let count = all.len().div_ceil(run_keys);
            assert_eq!(runs.runs.len(), count);
            assert_eq!(count <= FEW_RUNS, run_keys != 2_000);
            merge(&runs, Some(&keys), &[]).unwrap();
            assert_eq!(keys_of(&keys), expected, "{count} runs");
        }
    }

    #[test]
    fn after_a_sync_of_no_members_every_member_is_an_add() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let none = sorted_runs(&[]);
        let k0 = d.join("k0.arrow");
        merge(&none, Some(&k0), &[]).unwrap();
        assert!(is_ipc(&k0).unwrap());
        assert!(keys_of(&k0).is_empty());
        let target = DiffTarget {
            previous_members: keep(&none, d, "m0"),
            previous_keys: k0,
            adds: d.join("a1.arrow"),
            removes: d.join("r1.arrow"),
        };
        let counts = merge(
            &sorted_runs(&[&[4, 2]]),
            None,
            std::slice::from_ref(&target),
        )
        .unwrap();
        assert_eq!((counts[0].adds, counts[0].removes), (2, 0));
        assert_eq!(values_of(&target.adds), ["h4", "h2"]);
        assert!(values_of(&target.removes).is_empty());
    }

    #[test]
    fn parquet_members_and_keys_files_of_earlier_builds_still_diff() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // An earlier build's sync: members and keys as Parquet.
        let (first, k1_ipc) = first_sync(d);
        assert!(is_ipc(&k1_ipc).unwrap());
        let k1 = d.join("k1.parquet");
        let mut writer = parquet_writer(&k1, &keys_schema()).unwrap();
        for b in ipc_reader(&k1_ipc).unwrap() {
            writer.write(&b.unwrap()).unwrap();
        }
        writer.close().unwrap();
        assert!(!is_ipc(&k1).unwrap());
        assert_eq!(keys_of(&k1), [1, 3, 5, 7, 9]);
        let m1 = d.join("m1.members.parquet");
        let mut writer = parquet_writer(&m1, &keyed_schema(&members(&[]).0.schema())).unwrap();
        for b in ipc_reader(&first.members_file).unwrap() {
            // Earlier builds kept hashes as text.
            writer
                .write(&digests::to_text(&b.unwrap()).unwrap())
                .unwrap();
        }
        writer.close().unwrap();
        assert!(!is_ipc(&m1).unwrap());
        assert_eq!(values_of(&m1), ["h5", "h1", "h9", "h3", "h7"]);
        assert_eq!(member_schema(&m1).unwrap().fields().len(), 1);

        let target = second_diff(d, m1, k1);
        assert!(is_ipc(&target.removes).unwrap());
        assert_eq!(values_of(&target.adds), ["h10", "h2"]);
        assert_eq!(values_of(&target.removes), ["h1", "h9"]);
    }

    #[test]
    fn a_membership_with_hashes_as_text_of_earlier_builds_still_diffs() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // An earlier build's sync: Arrow IPC with the hashes as text.
        let (first, k1) = first_sync(d);
        let m1 = d.join("m1.members.arrow");
        let text_schema = keyed_schema(&members(&[]).0.schema());
        let mut writer = MembersWriter::create(&m1, &text_schema).unwrap();
        for b in ipc_reader(&first.members_file).unwrap() {
            writer
                .write(&digests::to_text(&b.unwrap()).unwrap())
                .unwrap();
        }
        writer.finish().unwrap();
        assert_eq!(ipc_reader(&m1).unwrap().schema(), text_schema);

        let target = second_diff(d, m1, k1);
        // Adds come from this run's file (bytes), removes from the earlier one (text): both
        // read back as text.
        assert_eq!(values_of(&target.adds), ["h10", "h2"]);
        assert_eq!(values_of(&target.removes), ["h1", "h9"]);
        assert_eq!(
            member_schema(&target.adds).unwrap(),
            member_schema(&target.removes).unwrap()
        );
    }

    #[test]
    fn base64_hashes_are_kept_as_bytes_and_read_back_as_the_same_text() {
        use base64::Engine;
        let text: Vec<String> = (0..50u8)
            .map(|i| base64::engine::general_purpose::STANDARD.encode([i; 32]))
            .collect();
        let (schema_of, _) = members(&[]);
        let batch = RecordBatch::try_new(
            schema_of.schema(),
            vec![Arc::new(StringArray::from(text.clone()))],
        )
        .unwrap();
        let keys: Vec<u128> = (0..50).collect();
        let hashes = ["email_sha256".to_string()];
        let mut spill = Spill::new(&batch.schema(), &hashes, Encoding::Base64).unwrap();
        spill.push(&batch, &keys, None).unwrap();
        let runs = spill.finish().unwrap();
        let mut back = vec![];
        for b in member_batches(&runs.members_file).unwrap() {
            let b = b.unwrap();
            back.extend(
                b.column(0)
                    .as_string::<i32>()
                    .iter()
                    .map(|v| v.unwrap().to_string()),
            );
        }
        assert_eq!(back, text);
    }

    #[test]
    fn ipc_members_files_are_read_with_or_without_their_footer_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (b1, _) = members(&[1, 2, 3]);
        let (b2, _) = members(&[4, 5]);
        // Written without the footer's sizes: read in order.
        let bare = d.join("bare.arrow");
        let mut w = FileWriter::try_new(File::create(&bare).unwrap(), &b1.schema()).unwrap();
        w.write(&b1).unwrap();
        w.write(&b2).unwrap();
        w.finish().unwrap();
        let out = d.join("out.arrow");
        extract(&bare, vec![4, 1], &out).unwrap();
        assert_eq!(values_of(&out), ["h2", "h5"]);
        let past = extract(&bare, vec![1, 5], &d.join("past.arrow")).unwrap_err();
        assert!(past.to_string().contains("row 5"), "{past}");

        // Small batches are gathered; the footer's sizes lead to the rows.
        let gathered = d.join("gathered.arrow");
        let mut w = MembersWriter::create(&gathered, &b1.schema()).unwrap();
        for k in 0..100u128 {
            w.write(&members(&[k]).0).unwrap();
        }
        w.write(&members(&(100..20_000).collect::<Vec<_>>()).0)
            .unwrap();
        w.finish().unwrap();
        let reader = ipc_reader(&gathered).unwrap();
        assert!(
            reader.num_batches() <= 4,
            "{} batches",
            reader.num_batches()
        );
        extract(&gathered, vec![19_999, 3, 8_500], &out).unwrap();
        assert_eq!(values_of(&out), ["h3", "h8500", "h19999"]);
        let mapped = MappedIpc::open(&gathered).unwrap();
        assert!(
            mapped.custom_metadata().contains_key(BATCH_ROWS),
            "the mapped reader finds the footer's batch sizes"
        );
        let last = mapped.num_batches() - 1;
        let before = mapped.batch(last).unwrap();
        for i in 0..mapped.num_batches() {
            mapped.release(i);
        }
        // Pages let go are read again from the file; arrays decoded before still read the same.
        assert_eq!(mapped.batch(last).unwrap(), before);

        // A members file cut short: an error naming the file, no panic.
        let cut = d.join("cut.arrow");
        let whole = std::fs::read(&gathered).unwrap();
        std::fs::write(&cut, &whole[..whole.len() / 2]).unwrap();
        let damaged = extract(&cut, vec![3], &d.join("from-cut.arrow")).unwrap_err();
        assert_eq!(
            damaged.class,
            crate::ErrorClass::Config,
            "a retry reads it alike"
        );
        assert!(
            damaged.to_string().contains("cut.arrow")
                && damaged.to_string().contains("not a readable members file"),
            "{damaged}"
        );

        // No members at all.
        let empty = d.join("empty.arrow");
        MembersWriter::create(&empty, &b1.schema())
            .unwrap()
            .finish()
            .unwrap();
        assert!(values_of(&empty).is_empty());
        assert_eq!(member_schema(&empty).unwrap().fields().len(), 1);
        extract(&empty, vec![], &out).unwrap();
        assert!(values_of(&out).is_empty());
    }
}
