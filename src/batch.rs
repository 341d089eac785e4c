//! Batching: cuts a stream of member batches into destination-sized batches, by rows and by
//! bytes, without copying more than the cut needs.
//!
//! Every destination goes through here, so each platform's limit (Meta's 10,000 rows, an export's
//! file size) is one `BatchLimits` value, not code of its own.

use crate::error::Result;
use crate::job::BatchLimits;
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::DataType;
use futures::stream::{BoxStream, StreamExt};

/// Estimated encoded size of each row: its string values' lengths plus a few bytes of framing
/// per value; other types count 8 bytes.
pub fn row_sizes(batch: &RecordBatch) -> Vec<usize> {
    let mut sizes = vec![0usize; batch.num_rows()];
    for column in batch.columns() {
        match column.data_type() {
            DataType::Utf8 => {
                let s = column.as_string::<i32>();
                for (i, size) in sizes.iter_mut().enumerate() {
                    *size += 3 + if s.is_valid(i) {
                        s.value_length(i) as usize
                    } else {
                        0
                    };
                }
            }
            _ => sizes.iter_mut().for_each(|s| *s += 8),
        }
    }
    sizes
}

/// Accumulates rows and hands out full batches.
pub struct Batcher {
    limits: BatchLimits,
    pending: Vec<RecordBatch>,
    rows: usize,
    bytes: usize,
}

impl Batcher {
    pub fn new(limits: BatchLimits) -> Batcher {
        Batcher {
            limits,
            pending: vec![],
            rows: 0,
            bytes: 0,
        }
    }

    /// Adds a batch; returns the batches that are now full.
    pub fn push(&mut self, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        let mut full = vec![];
        let sizes = row_sizes(&batch);
        let mut start = 0;
        let mut row = 0;
        while row < batch.num_rows() {
            let size = sizes[row];
            let over_rows = self.rows + 1 > self.limits.max_rows;
            let over_bytes = self.rows > 0 && self.bytes + size > self.limits.max_bytes;
            if over_rows || over_bytes {
                if row > start {
                    self.pending.push(batch.slice(start, row - start));
                }
                full.push(self.take()?);
                start = row;
            }
            self.rows += 1;
            self.bytes += size;
            row += 1;
        }
        if row > start {
            self.pending.push(batch.slice(start, row - start));
        }
        Ok(full)
    }

    /// Cuts without copying: the slices of `batch` in order, each flagged when it completes a
    /// batch (a writer closes its file there). A flagged slice may be empty when the batch
    /// completed with the previous input. The last batch is completed by the input's end.
    pub fn cut(&mut self, batch: &RecordBatch) -> Vec<(RecordBatch, bool)> {
        let sizes = row_sizes(batch);
        let mut out: Vec<(RecordBatch, bool)> = vec![];
        let mut start = 0;
        for (row, size) in sizes.iter().enumerate() {
            let over_rows = self.rows + 1 > self.limits.max_rows;
            let over_bytes = self.rows > 0 && self.bytes + size > self.limits.max_bytes;
            if over_rows || over_bytes {
                out.push((batch.slice(start, row - start), true));
                start = row;
                self.rows = 0;
                self.bytes = 0;
            }
            self.rows += 1;
            self.bytes += size;
        }
        if batch.num_rows() > start {
            out.push((batch.slice(start, batch.num_rows() - start), false));
        }
        out
    }

    /// The last, partly filled batch.
    pub fn finish(&mut self) -> Result<Option<RecordBatch>> {
        if self.rows == 0 {
            return Ok(None);
        }
        self.take().map(Some)
    }

    fn take(&mut self) -> Result<RecordBatch> {
        let parts = std::mem::take(&mut self.pending);
        self.rows = 0;
        self.bytes = 0;
        let batch = if parts.len() == 1 {
            parts.into_iter().next().expect("one part")
        } else {
            arrow::compute::concat_batches(&parts[0].schema(), &parts)?
        };
        Ok(batch)
    }
}

/// Re-cuts a stream of batches to `limits`; an error passes through and ends the stream.
pub fn batched(
    input: BoxStream<'static, Result<RecordBatch>>,
    limits: BatchLimits,
) -> BoxStream<'static, Result<RecordBatch>> {
    let state = (
        input,
        Batcher::new(limits),
        std::collections::VecDeque::new(),
        false,
    );
    futures::stream::unfold(
        state,
        |(mut input, mut batcher, mut ready, mut done)| async move {
            loop {
                if let Some(b) = ready.pop_front() {
                    return Some((Ok(b), (input, batcher, ready, done)));
                }
                if done {
                    return None;
                }
                match input.next().await {
                    Some(Ok(batch)) => match batcher.push(batch) {
                        Ok(full) => ready.extend(full),
                        Err(e) => {
                            done = true;
                            return Some((Err(e), (input, batcher, ready, done)));
                        }
                    },
                    Some(Err(e)) => {
                        done = true;
                        return Some((Err(e), (input, batcher, ready, done)));
                    }
                    None => {
                        done = true;
                        match batcher.finish() {
                            Ok(Some(last)) => ready.push_back(last),
                            Ok(None) => {}
                            Err(e) => return Some((Err(e), (input, batcher, ready, done))),
                        }
                    }
                }
            }
        },
    )
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::StringArray;
    use std::sync::Arc;

    fn batch(values: &[&str]) -> RecordBatch {
        RecordBatch::try_from_iter([(
            "email_sha256",
            Arc::new(StringArray::from(values.to_vec())) as _,
        )])
        .unwrap()
    }

    fn run(limits: BatchLimits, inputs: Vec<RecordBatch>) -> Vec<usize> {
        let stream = futures::stream::iter(inputs.into_iter().map(Ok)).boxed();
        futures::executor::block_on(
            batched(stream, limits)
                .map(|b| b.unwrap().num_rows())
                .collect(),
        )
    }

    #[test]
    fn cuts_by_rows_across_input_batches() {
        let limits = BatchLimits {
            max_rows: 4,
            max_bytes: usize::MAX,
        };
        let sizes = run(
            limits,
            vec![batch(&["a"; 3]), batch(&["b"; 3]), batch(&["c"; 5])],
        );
        assert_eq!(sizes, [4, 4, 3]);
    }

    #[test]
    fn cuts_by_bytes() {
        // Each row is 3 bytes of framing + 10 bytes of value = 13.
        let limits = BatchLimits {
            max_rows: 100,
            max_bytes: 30,
        };
        let sizes = run(limits, vec![batch(&["0123456789"; 5])]);
        assert_eq!(sizes, [2, 2, 1]);
    }

    #[test]
    fn a_row_larger_than_the_byte_limit_goes_alone() {
        let limits = BatchLimits {
            max_rows: 100,
            max_bytes: 5,
        };
        assert_eq!(run(limits, vec![batch(&["0123456789"; 2])]), [1, 1]);
    }

    #[test]
    fn cut_flags_where_batches_end_without_copying() {
        let mut b = Batcher::new(BatchLimits {
            max_rows: 4,
            max_bytes: usize::MAX,
        });
        let shape = |pieces: Vec<(RecordBatch, bool)>| {
            pieces
                .iter()
                .map(|(p, end)| (p.num_rows(), *end))
                .collect::<Vec<_>>()
        };
        assert_eq!(shape(b.cut(&batch(&["a"; 3]))), [(3, false)]);
        assert_eq!(
            shape(b.cut(&batch(&["b"; 6]))),
            [(1, true), (4, true), (1, false)]
        );
        assert_eq!(shape(b.cut(&batch(&["c"; 3]))), [(3, false)]);
        // The batch filled up exactly: it ends before the next input's first row.
        assert_eq!(shape(b.cut(&batch(&["d"; 2]))), [(0, true), (2, false)]);
    }

    #[test]
    fn nothing_in_nothing_out() {
        let limits = BatchLimits {
            max_rows: 4,
            max_bytes: 100,
        };
        assert!(run(limits, vec![]).is_empty());
    }
}
