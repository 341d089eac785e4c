//! Arrow IPC files read through a memory map, for a diff's picking of rows by number.
//!
//! A diff takes a few rows out of gigabyte members files: the adds from this run's, the removes
//! from the last sync's. The rows that changed are spread over every batch, so a reader that
//! copies whole batches copies both files whole: on B1's usual night (43,577 rows sent of 5.2
//! million) that copy, `_copy_to_iter` in the kernel, was the largest part of the diff. Mapped,
//! a batch is decoded in place (its buffers point into the file's pages) and only the rows taken
//! are copied out; pages of fixed-width columns (hashes, keys) that no row is taken from are
//! not touched (text columns are checked whole, as any IPC reader checks them). The diff went from 0.72-0.75 s to
//! 0.40-0.46 s. Pages read are page cache: the kernel can take them back whenever it needs
//! them, but they count as the process's resident memory while mapped (the run's peak went from
//! about 450 MiB to 1,350 MiB), so each batch's pages are let go once its rows are taken
//! (`release`).
//!
//! The files are the run's own and its state's. A file cut short while mapped would stop the
//! process (SIGBUS) rather than give a wrong row.

use crate::error::{Error, Result};
use arrow::array::RecordBatch;
use arrow::buffer::Buffer;
use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::{FileDecoder, read_footer_length};
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::Arc;

/// A mapped IPC file: its schema, footer metadata and batches, decoded on demand.
pub struct MappedIpc {
    buffer: Buffer,
    decoder: FileDecoder,
    blocks: Vec<arrow::ipc::Block>,
    /// Each batch's bytes in the file, checked to lie within it.
    ranges: Vec<std::ops::Range<usize>>,
    schema: SchemaRef,
    metadata: HashMap<String, String>,
}

impl MappedIpc {
    /// Maps the file at `path`; every error names it.
    pub fn open(path: &Path) -> Result<MappedIpc> {
        MappedIpc::read(path).map_err(|e| e.context(path.display()))
    }

    fn read(path: &Path) -> Result<MappedIpc> {
        // A damaged state file: exit 2, since a retry would read it alike.
        let bad = |what: &str| {
            Error::config(format!(
                "not a readable members file ({what}); if it is the last sync's, in the state \
                 store, restore it, or run the date once with the destination's sync = \"replace\" \
                 (where the platform has one), which needs no earlier members"
            ))
        };
        let buffer = map(path)?;
        let len = buffer.len();
        if len < 10 + 8 {
            return Err(bad("too short"));
        }
        let trailer: [u8; 10] = buffer[len - 10..].try_into().expect("10 bytes");
        let footer_len = read_footer_length(trailer).map_err(|e| bad(&e.to_string()))?;
        let footer_start = (len - 10)
            .checked_sub(footer_len)
            .ok_or_else(|| bad("footer"))?;
        let footer = arrow::ipc::root_as_footer(&buffer[footer_start..len - 10])
            .map_err(|e| bad(&e.to_string()))?;
        let fb_schema = footer.schema().ok_or_else(|| bad("no schema"))?;
        if !fb_schema.endianness().equals_to_target_endianness() {
            return Err(bad("written on a machine of the other byte order"));
        }
        let schema = Arc::new(arrow::ipc::convert::fb_to_schema(fb_schema));
        let mut decoder = FileDecoder::new(schema.clone(), footer.version());
        for block in footer.dictionaries().iter().flatten() {
            let range = block_range(&buffer, block).ok_or_else(|| bad("footer"))?;
            decoder.read_dictionary(block, &buffer.slice_with_length(range.start, range.len()))?;
        }
        let blocks: Vec<arrow::ipc::Block> = footer
            .recordBatches()
            .map(|b| b.iter().copied().collect())
            .unwrap_or_default();
        let ranges = blocks
            .iter()
            .map(|b| block_range(&buffer, b))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad("a batch beyond the end"))?;
        let metadata = footer
            .custom_metadata()
            .into_iter()
            .flatten()
            .filter_map(|kv| Some((kv.key()?.to_string(), kv.value()?.to_string())))
            .collect();
        Ok(MappedIpc {
            buffer,
            decoder,
            blocks,
            ranges,
            schema,
            metadata,
        })
    }

    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    pub fn num_batches(&self) -> usize {
        self.blocks.len()
    }

    pub fn custom_metadata(&self) -> &HashMap<String, String> {
        &self.metadata
    }

    /// Lets go of the pages of batch `index` (and of the pages it shares with its neighbours):
    /// read again from the file, through the page cache, if touched again.
    pub fn release(&self, index: usize) {
        // SAFETY: sysconf only reads a system parameter.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as usize;
        let base = self.buffer.as_ptr() as usize;
        let range = &self.ranges[index];
        // Within the mapping, which mmap made of whole pages from `base`.
        let start = base + range.start / page * page;
        let end = base + range.end.next_multiple_of(page);
        // SAFETY: [start, end) lies within this read-only private mapping (`ranges` were checked
        // against its length); dropping its pages only makes the next read fault them in again
        // from the file.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
        }
    }

    /// Batch `index`, its buffers in the mapped file.
    pub fn batch(&self, index: usize) -> Result<RecordBatch> {
        let range = &self.ranges[index];
        let bytes = self.buffer.slice_with_length(range.start, range.len());
        self.decoder
            .read_record_batch(&self.blocks[index], &bytes)?
            .ok_or_else(|| Error::internal(format!("batch {index} of a members file is empty")))
    }
}

/// A block's bytes in the file, if they lie within it.
fn block_range(buffer: &Buffer, block: &arrow::ipc::Block) -> Option<std::ops::Range<usize>> {
    let start = usize::try_from(block.offset()).ok()?;
    let len =
        usize::try_from(i64::from(block.metaDataLength()).checked_add(block.bodyLength())?).ok()?;
    let end = start.checked_add(len)?;
    (end <= buffer.len()).then_some(start..end)
}

/// A read-only, private mapping of a whole file, unmapped when the last buffer into it goes.
struct Mapping {
    address: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is read-only and lives until dropped; any thread may read it.
unsafe impl Send for Mapping {}
unsafe impl Sync for Mapping {}
impl std::panic::RefUnwindSafe for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the address and length are those mmap returned, unmapped once.
        unsafe {
            libc::munmap(self.address.as_ptr().cast(), self.len);
        }
    }
}

fn map(path: &Path) -> Result<Buffer> {
    let io = |e: std::io::Error| Error::transient(e.to_string());
    let file = File::open(path).map_err(io)?;
    let len = usize::try_from(file.metadata().map_err(io)?.len())
        .map_err(|_| Error::internal("too large to map"))?;
    if len == 0 {
        return Ok(Buffer::from_vec(Vec::<u8>::new()));
    }
    // SAFETY: a private read-only mapping of an open file; the file may be closed after.
    let address = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            file.as_raw_fd(),
            0,
        )
    };
    if address == libc::MAP_FAILED {
        return Err(io(std::io::Error::last_os_error()));
    }
    let address = NonNull::new(address.cast::<u8>()).expect("mmap gives a non-null address");
    let mapping = Arc::new(Mapping { address, len });
    // SAFETY: the mapping holds `len` readable bytes for as long as `mapping` lives, which the
    // buffer (and every slice of it) keeps alive.
    Ok(unsafe { Buffer::from_custom_allocation(address, len, mapping) })
}
