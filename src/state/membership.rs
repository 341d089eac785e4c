//! A run's membership, sorted by member key, and its diff against the last sync, in bounded
//! memory.
//!
//! Members arrive in whatever order DataFusion produces them. They are gathered into sorted runs
//! of a bounded size, spilled to local Arrow IPC files, then merged (a k-way merge on the 128-bit
//! member key). The merge writes the new membership file and, in the same pass, walks each
//! destination's previous membership file (sorted the same way) to write the members added and
//! removed since. Memory is a few batches per run file whatever the audience's size.
//!
//! Files carry a `member_key` column (16 bytes, big-endian, so byte order is key order) in front
//! of the member columns: hashes, and the few values platforms take raw. Never raw PII.

use crate::error::{Error, Result};
use arrow::array::{ArrayRef, AsArray, FixedSizeBinaryArray, RecordBatch, RecordBatchReader};
use arrow::compute::interleave_record_batch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const KEY_COLUMN: &str = "member_key";

/// Rows gathered before a sorted run is spilled.
const RUN_ROWS: usize = 1 << 18;
/// Rows per output batch of the merge.
const CHUNK_ROWS: usize = 8192;
/// Source batches an output file may hold on to before it writes what it gathered: adds and
/// removes are sparse, and without a bound they would keep every batch they took a row from.
const MAX_SOURCES: usize = 8;

/// The schema of membership files: the key, then the member columns.
pub fn keyed_schema(members: &SchemaRef) -> SchemaRef {
    let mut fields = vec![Arc::new(Field::new(
        KEY_COLUMN,
        DataType::FixedSizeBinary(16),
        false,
    ))];
    fields.extend(members.fields().iter().cloned());
    Arc::new(Schema::new(fields))
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

fn key_array(keys: &[u128]) -> ArrayRef {
    let bytes: Vec<[u8; 16]> = keys.iter().map(|k| k.to_be_bytes()).collect();
    Arc::new(
        FixedSizeBinaryArray::try_from_iter(bytes.into_iter()).expect("16-byte keys"),
    )
}

fn key_at(column: &FixedSizeBinaryArray, row: usize) -> u128 {
    u128::from_be_bytes(column.value(row).try_into().expect("16-byte keys"))
}

/// Gathers members into sorted runs spilled to local files.
pub struct Spill {
    dir: tempfile::TempDir,
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    rows: usize,
    runs: Vec<PathBuf>,
    pub members: u64,
}

impl Spill {
    pub fn new(members_schema: &SchemaRef) -> Result<Spill> {
        let dir = tempfile::Builder::new()
            .prefix("activator-members-")
            .tempdir()
            .map_err(|e| Error::transient(format!("cannot create a temporary folder: {e}")))?;
        Ok(Spill {
            dir,
            schema: keyed_schema(members_schema),
            batches: vec![],
            rows: 0,
            runs: vec![],
            members: 0,
        })
    }

    /// Adds members (already deduplicated) and their keys.
    pub fn push(&mut self, batch: &RecordBatch, keys: &[u128]) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let mut columns = vec![key_array(keys)];
        columns.extend(batch.columns().iter().cloned());
        self.batches
            .push(RecordBatch::try_new(self.schema.clone(), columns)?);
        self.rows += batch.num_rows();
        self.members += batch.num_rows() as u64;
        if self.rows >= RUN_ROWS {
            self.spill()?;
        }
        Ok(())
    }

    fn spill(&mut self) -> Result<()> {
        if self.batches.is_empty() {
            return Ok(());
        }
        let batches = std::mem::take(&mut self.batches);
        self.rows = 0;
        let mut order: Vec<(u128, u32, u32)> = Vec::new();
        for (b, batch) in batches.iter().enumerate() {
            let keys = batch.column(0).as_fixed_size_binary();
            for r in 0..batch.num_rows() {
                order.push((key_at(keys, r), b as u32, r as u32));
            }
        }
        order.sort_unstable_by_key(|(k, _, _)| *k);
        let path = self.dir.path().join(format!("run-{:05}.arrow", self.runs.len()));
        let file = File::create(&path).map_err(io_error)?;
        let mut writer = arrow::ipc::writer::FileWriter::try_new(file, &self.schema)?;
        let refs: Vec<&RecordBatch> = batches.iter().collect();
        for chunk in order.chunks(CHUNK_ROWS) {
            let indices: Vec<(usize, usize)> = chunk
                .iter()
                .map(|(_, b, r)| (*b as usize, *r as usize))
                .collect();
            writer.write(&interleave_record_batch(&refs, &indices)?)?;
        }
        writer.finish()?;
        self.runs.push(path);
        Ok(())
    }

    /// Spills what is left; the sorted runs, ready to merge.
    pub fn finish(mut self) -> Result<SortedRuns> {
        self.spill()?;
        Ok(SortedRuns {
            _dir: self.dir,
            schema: self.schema,
            runs: self.runs,
            members: self.members,
        })
    }
}

fn io_error(e: std::io::Error) -> Error {
    Error::transient(format!("local temporary files: {e}"))
}

/// Sorted run files of one run's members.
pub struct SortedRuns {
    _dir: tempfile::TempDir,
    pub schema: SchemaRef,
    runs: Vec<PathBuf>,
    pub members: u64,
}

/// A sorted source of keyed member rows, a batch at a time.
struct Cursor {
    batches: Box<dyn Iterator<Item = Result<RecordBatch>> + Send>,
    batch: Option<RecordBatch>,
    row: usize,
}

impl Cursor {
    fn new(batches: Box<dyn Iterator<Item = Result<RecordBatch>> + Send>) -> Result<Cursor> {
        let mut c = Cursor {
            batches,
            batch: None,
            row: 0,
        };
        c.load()?;
        Ok(c)
    }

    fn load(&mut self) -> Result<()> {
        self.batch = None;
        self.row = 0;
        for b in self.batches.by_ref() {
            let b = b?;
            if b.num_rows() > 0 {
                self.batch = Some(b);
                break;
            }
        }
        Ok(())
    }

    fn key(&self) -> Option<u128> {
        self.batch
            .as_ref()
            .map(|b| key_at(b.column(0).as_fixed_size_binary(), self.row))
    }

    fn advance(&mut self) -> Result<()> {
        self.row += 1;
        if self.row >= self.batch.as_ref().map_or(0, |b| b.num_rows()) {
            self.load()?;
        }
        Ok(())
    }
}

fn ipc_batches(path: &Path) -> Result<Box<dyn Iterator<Item = Result<RecordBatch>> + Send>> {
    let file = File::open(path).map_err(io_error)?;
    let reader = arrow::ipc::reader::FileReader::try_new(file, None)?;
    Ok(Box::new(reader.map(|b| b.map_err(Error::from))))
}

/// Reads a Parquet membership file, a batch at a time.
pub fn parquet_batches(
    path: &Path,
) -> Result<(SchemaRef, Box<dyn Iterator<Item = Result<RecordBatch>> + Send>)> {
    let file = File::open(path).map_err(io_error)?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)?
        .with_batch_size(CHUNK_ROWS)
        .build()?;
    let schema = reader.schema();
    Ok((schema, Box::new(reader.map(|b| b.map_err(Error::from)))))
}

/// Collects rows from sources into output batches.
struct Gather {
    sources: Vec<RecordBatch>,
    indices: Vec<(usize, usize)>,
}

impl Gather {
    fn new() -> Gather {
        Gather {
            sources: vec![],
            indices: vec![],
        }
    }

    fn push(&mut self, batch: &RecordBatch, row: usize) {
        // Sources are compared by identity: the same batch is added once.
        let i = match self.sources.last() {
            Some(last) if same(last, batch) => self.sources.len() - 1,
            _ => match self.sources.iter().position(|s| same(s, batch)) {
                Some(i) => i,
                None => {
                    self.sources.push(batch.clone());
                    self.sources.len() - 1
                }
            },
        };
        self.indices.push((i, row));
    }

    fn take(&mut self) -> Result<Option<RecordBatch>> {
        if self.indices.is_empty() {
            self.sources.clear();
            return Ok(None);
        }
        let refs: Vec<&RecordBatch> = self.sources.iter().collect();
        let out = interleave_record_batch(&refs, &self.indices)?;
        self.indices.clear();
        self.sources.clear();
        Ok(Some(out))
    }
}

fn same(a: &RecordBatch, b: &RecordBatch) -> bool {
    a.num_rows() == b.num_rows()
        && Arc::ptr_eq(a.column(0), b.column(0))
}

/// A Parquet file written on local disk.
pub struct LocalFile {
    pub path: PathBuf,
    writer: Option<ArrowWriter<File>>,
    gather: Gather,
    pub rows: u64,
}

impl LocalFile {
    pub fn create(path: PathBuf, schema: &SchemaRef) -> Result<LocalFile> {
        let file = File::create(&path).map_err(io_error)?;
        // Row groups are buffered whole: keep them small. Hashes do not compress and every
        // value is distinct: no compression, dictionaries or statistics to spend time on.
        let props = parquet::file::properties::WriterProperties::builder()
            .set_compression(parquet::basic::Compression::UNCOMPRESSED)
            .set_dictionary_enabled(false)
            .set_statistics_enabled(parquet::file::properties::EnabledStatistics::None)
            .set_max_row_group_row_count(Some(64 * 1024))
            .build();
        Ok(LocalFile {
            path,
            writer: Some(ArrowWriter::try_new(file, schema.clone(), Some(props))?),
            gather: Gather::new(),
            rows: 0,
        })
    }

    fn push(&mut self, batch: &RecordBatch, row: usize) -> Result<()> {
        if self.gather.sources.len() >= MAX_SOURCES
            && !self.gather.sources.iter().any(|s| same(s, batch))
        {
            self.flush()?;
        }
        self.gather.push(batch, row);
        self.rows += 1;
        if self.gather.indices.len() >= CHUNK_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes what is gathered (the gather holds its source batches until then).
    fn flush(&mut self) -> Result<()> {
        if let Some(b) = self.gather.take()?
            && let Some(w) = self.writer.as_mut()
        {
            w.write(&b)?;
        }
        Ok(())
    }

    fn close(&mut self) -> Result<()> {
        self.flush()?;
        if let Some(w) = self.writer.take() {
            w.close()?;
        }
        Ok(())
    }
}

/// One destination's side of the merge: its previous membership, and where its adds and removes
/// go. `previous: None` means no earlier sync: every member is an add.
pub struct DiffTarget {
    pub previous: Option<PathBuf>,
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
    previous: Option<Cursor>,
    adds: LocalFile,
    removes: LocalFile,
    counts: DiffCounts,
}

impl Diff {
    /// Old members with keys below `key` (all when `None`) have left.
    fn removes_until(&mut self, key: Option<u128>) -> Result<()> {
        while let Some(old) = self.previous.as_mut() {
            let Some(k) = old.key() else {
                break;
            };
            if key.is_some_and(|key| k >= key) {
                break;
            }
            let batch = old.batch.clone().expect("a row");
            self.removes.push(&batch, old.row)?;
            self.counts.removes += 1;
            self.counts.previous += 1;
            old.advance()?;
        }
        Ok(())
    }

    /// A new member: an add unless the previous membership has it.
    fn member(&mut self, key: u128, batch: &RecordBatch, row: usize) -> Result<()> {
        self.removes_until(Some(key))?;
        let kept = match self.previous.as_mut() {
            Some(old) if old.key() == Some(key) => {
                old.advance()?;
                self.counts.previous += 1;
                true
            }
            _ => false,
        };
        if !kept {
            self.adds.push(batch, row)?;
            self.counts.adds += 1;
        }
        Ok(())
    }
}

/// Merges the sorted runs into `members` (the new membership file) and diffs them against each
/// target's previous membership. Blocking: run it on a blocking thread.
pub fn merge(
    runs: &SortedRuns,
    members: Option<PathBuf>,
    targets: Vec<DiffTarget>,
) -> Result<Vec<DiffCounts>> {
    let mut cursors = runs
        .runs
        .iter()
        .map(|p| Cursor::new(ipc_batches(p)?))
        .collect::<Result<Vec<_>>>()?;
    let mut out = match members {
        Some(p) => Some(LocalFile::create(p, &runs.schema)?),
        None => None,
    };
    let mut diffs = vec![];
    for t in targets {
        let previous = match &t.previous {
            Some(p) => {
                let (schema, batches) = parquet_batches(p)?;
                let c = Cursor::new(batches)?;
                Some((schema, c))
            }
            None => None,
        };
        let removes_schema = previous
            .as_ref()
            .map(|(s, _)| s.clone())
            .unwrap_or_else(|| runs.schema.clone());
        diffs.push(Diff {
            previous: previous.map(|(_, c)| c),
            adds: LocalFile::create(t.adds, &runs.schema)?,
            removes: LocalFile::create(t.removes, &removes_schema)?,
            counts: DiffCounts::default(),
        });
    }

    // Min-heap of (key, run).
    #[derive(PartialEq, Eq)]
    struct Head(u128, usize);
    impl Ord for Head {
        fn cmp(&self, other: &Self) -> Ordering {
            other.0.cmp(&self.0).then(other.1.cmp(&self.1))
        }
    }
    impl PartialOrd for Head {
        fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
            Some(self.cmp(other))
        }
    }
    let mut heap: BinaryHeap<Head> = cursors
        .iter()
        .enumerate()
        .filter_map(|(i, c)| c.key().map(|k| Head(k, i)))
        .collect();
    while let Some(Head(key, i)) = heap.pop() {
        let cursor = &mut cursors[i];
        let batch = cursor.batch.clone().expect("a row");
        let row = cursor.row;
        if let Some(o) = out.as_mut() {
            o.push(&batch, row)?;
        }
        for d in diffs.iter_mut() {
            d.member(key, &batch, row)?;
        }
        cursor.advance()?;
        if let Some(k) = cursor.key() {
            heap.push(Head(k, i));
        }
    }
    if let Some(o) = out.as_mut() {
        o.close()?;
    }
    let mut counts = vec![];
    for mut d in diffs {
        d.removes_until(None)?;
        d.adds.close()?;
        d.removes.close()?;
        counts.push(d.counts);
    }
    Ok(counts)
}

/// Reads a keyed Parquet file as member batches (key stripped), for sending.
pub fn member_batches(path: &Path) -> Result<Box<dyn Iterator<Item = Result<RecordBatch>> + Send>> {
    let (_, batches) = parquet_batches(path)?;
    Ok(Box::new(batches.map(|b| b.map(|b| without_key(&b)))))
}

/// The member schema of a keyed Parquet file.
pub fn member_schema(path: &Path) -> Result<SchemaRef> {
    let (schema, _) = parquet_batches(path)?;
    let fields: Vec<_> = schema
        .fields()
        .iter()
        .filter(|f| f.name() != KEY_COLUMN)
        .cloned()
        .collect();
    Ok(Arc::new(Schema::new(fields)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::StringArray;

    fn members(keys: &[u128]) -> (RecordBatch, Vec<u128>) {
        let schema = Arc::new(Schema::new(vec![Field::new("email_sha256", DataType::Utf8, true)]));
        let values: Vec<String> = keys.iter().map(|k| format!("h{k}")).collect();
        (
            RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(values))]).unwrap(),
            keys.to_vec(),
        )
    }

    fn keys_of(path: &Path) -> Vec<String> {
        let mut out = vec![];
        for b in member_batches(path).unwrap() {
            let b = b.unwrap();
            let s = b.column(0).as_string::<i32>();
            out.extend(s.iter().map(|v| v.unwrap().to_string()));
        }
        out
    }

    fn sorted_runs(chunks: &[&[u128]]) -> SortedRuns {
        let (first, _) = members(&[]);
        let mut spill = Spill::new(&first.schema()).unwrap();
        for c in chunks {
            let (b, k) = members(c);
            spill.push(&b, &k).unwrap();
            spill.spill().unwrap(); // one run per chunk, to exercise the merge
        }
        spill.finish().unwrap()
    }

    #[test]
    fn merge_sorts_and_diffs_against_the_previous_membership() {
        let dir = tempfile::tempdir().unwrap();
        let first = sorted_runs(&[&[5, 1, 9], &[3, 7]]);
        let m1 = dir.path().join("m1.parquet");
        let counts = merge(
            &first,
            Some(m1.clone()),
            vec![DiffTarget {
                previous: None,
                adds: dir.path().join("a1.parquet"),
                removes: dir.path().join("r1.parquet"),
            }],
        )
        .unwrap();
        assert_eq!(keys_of(&m1), ["h1", "h3", "h5", "h7", "h9"]);
        assert_eq!(counts[0], DiffCounts { previous: 0, adds: 5, removes: 0 });

        // 1 and 9 leave, 2 and 10 join.
        let second = sorted_runs(&[&[10, 3], &[5, 2, 7]]);
        let m2 = dir.path().join("m2.parquet");
        let (adds, removes) = (dir.path().join("a2.parquet"), dir.path().join("r2.parquet"));
        let counts = merge(
            &second,
            Some(m2.clone()),
            vec![DiffTarget {
                previous: Some(m1),
                adds: adds.clone(),
                removes: removes.clone(),
            }],
        )
        .unwrap();
        assert_eq!(counts[0], DiffCounts { previous: 5, adds: 2, removes: 2 });
        assert_eq!(keys_of(&adds), ["h2", "h10"]);
        assert_eq!(keys_of(&removes), ["h1", "h9"]);
        assert_eq!(keys_of(&m2), ["h2", "h3", "h5", "h7", "h10"]);
    }

    #[test]
    fn large_merges_keep_every_member_once_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut x = 88172645463325252u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let all: Vec<u128> = (0..50_000).map(|_| next() as u128 * 3).collect();
        let chunks: Vec<&[u128]> = all.chunks(7_000).collect();
        let runs = sorted_runs(&chunks);
        let m = dir.path().join("m.parquet");
        merge(&runs, Some(m.clone()), vec![]).unwrap();
        let mut expected: Vec<u128> = all.clone();
        expected.sort_unstable();
        expected.dedup();
        let got = keys_of(&m);
        assert_eq!(got.len(), expected.len());
        assert!(got.iter().zip(&expected).all(|(g, e)| *g == format!("h{e}")));
    }
}
