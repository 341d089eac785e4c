//! Batching: cuts a stream of member batches into destination-sized batches, by rows and by
//! bytes, without copying more than the cut needs.
//!
//! Every destination goes through here, so each platform's limit (Meta's 10,000 rows, an export's
//! file size) is one `BatchLimits` value, not code of its own.
//!
//! A destination-sized batch usually spans two input batches (the engine's are about 8,000 rows,
//! Meta's and Google's requests 10,000). Encoders that write rows one by one take it as `Parts`,
//! the input slices it spans, so nothing is copied; `batched` gives one `RecordBatch` for those
//! that need one, at the cost of a copy (concatenating was a twentieth of a Meta upload's CPU).

use crate::error::Result;
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::DataType;
use futures::stream::{BoxStream, StreamExt};
use serde::Deserialize;

/// Size limits of a destination's batches. A pending run stores the limits it cut its batches
/// with, so a resume cuts the same batches whatever the job file says by then.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct BatchLimits {
    pub max_rows: usize,
    /// Estimated encoded size of a batch's identifiers.
    pub max_bytes: usize,
}

/// A destination's `batch` table in a job file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchFile {
    pub max_rows: Option<usize>,
    pub max_bytes: Option<usize>,
}

impl BatchFile {
    /// The limits, with a destination's defaults for what the job leaves out.
    pub fn limits(&self, rows: usize, bytes: usize) -> BatchLimits {
        BatchLimits {
            max_rows: self.max_rows.unwrap_or(rows).max(1),
            max_bytes: self.max_bytes.unwrap_or(bytes).max(1),
        }
    }
}

/// Estimated encoded size of each row: its string values' lengths plus a few bytes of framing
/// per value; other types count 8 bytes.
pub fn row_sizes(batch: &RecordBatch) -> Vec<usize> {
    let mut sizes = vec![0usize; batch.num_rows()];
    for column in batch.columns() {
        match column.data_type() {
            DataType::Utf8 => {
                let s = column.as_string::<i32>();
                let lengths = s.value_offsets().windows(2).map(|w| (w[1] - w[0]) as usize);
                let sizes = sizes.iter_mut().zip(lengths);
                match s.nulls() {
                    None => sizes.for_each(|(size, len)| *size += 3 + len),
                    Some(nulls) => sizes
                        .zip(nulls.iter())
                        .for_each(|((size, len), valid)| *size += 3 + if valid { len } else { 0 }),
                }
            }
            _ => sizes.iter_mut().for_each(|s| *s += 8),
        }
    }
    sizes
}

/// A destination-sized batch as the slices of input batches it spans, in order (one or more,
/// none empty, all of the input's schema).
pub type Parts = Vec<RecordBatch>;

/// The rows of a batch in parts.
pub fn num_rows(parts: &[RecordBatch]) -> usize {
    parts.iter().map(RecordBatch::num_rows).sum()
}

/// A batch in parts as one batch: the part itself if there is one, else a copy.
pub fn concat(parts: Parts) -> Result<RecordBatch> {
    if parts.len() == 1 {
        return Ok(parts.into_iter().next().expect("one part"));
    }
    let schema = parts
        .first()
        .map(|p| p.schema())
        .ok_or_else(|| crate::error::Error::internal("a batch of no parts"))?;
    Ok(arrow::compute::concat_batches(&schema, &parts)?)
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
    pub fn push(&mut self, batch: RecordBatch) -> Vec<Parts> {
        let mut full = vec![];
        let sizes = row_sizes(&batch);
        let mut start = 0;
        let mut row = 0;
        while row < batch.num_rows() {
            let size = sizes[row];
            // A batch holds at least one row, whatever the limits say.
            let over_rows = self.rows > 0 && self.rows + 1 > self.limits.max_rows;
            let over_bytes = self.rows > 0 && self.bytes + size > self.limits.max_bytes;
            if over_rows || over_bytes {
                if row > start {
                    self.pending.push(batch.slice(start, row - start));
                }
                full.push(self.take());
                start = row;
            }
            self.rows += 1;
            self.bytes += size;
            row += 1;
        }
        if row > start {
            self.pending.push(batch.slice(start, row - start));
        }
        full
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
    pub fn finish(&mut self) -> Option<Parts> {
        if self.rows == 0 {
            return None;
        }
        Some(self.take())
    }

    fn take(&mut self) -> Parts {
        self.rows = 0;
        self.bytes = 0;
        std::mem::take(&mut self.pending)
    }
}

/// Re-cuts a stream of batches to `limits`, each batch one `RecordBatch`; an error passes
/// through and ends the stream.
pub fn batched(
    input: BoxStream<'static, Result<RecordBatch>>,
    limits: BatchLimits,
) -> BoxStream<'static, Result<RecordBatch>> {
    batched_parts(input, limits)
        .scan(false, |failed, parts| {
            // Nothing after an error: a connector must not send the batches that follow it.
            if *failed {
                return futures::future::ready(None);
            }
            let batch = parts.and_then(concat);
            *failed = batch.is_err();
            futures::future::ready(Some(batch))
        })
        .boxed()
}

/// Re-cuts a stream of batches to `limits`, each batch in parts; an error passes through and
/// ends the stream.
pub fn batched_parts(
    input: BoxStream<'static, Result<RecordBatch>>,
    limits: BatchLimits,
) -> BoxStream<'static, Result<Parts>> {
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
                    Some(Ok(batch)) => ready.extend(batcher.push(batch)),
                    Some(Err(e)) => {
                        done = true;
                        return Some((Err(e), (input, batcher, ready, done)));
                    }
                    None => {
                        done = true;
                        ready.extend(batcher.finish());
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
    fn a_row_counts_its_text_and_three_bytes_a_value_and_eight_for_other_types() {
        let batch = RecordBatch::try_from_iter([
            (
                "email_sha256",
                Arc::new(StringArray::from(vec![
                    Some("ab"),
                    None,
                    Some(""),
                    Some("abcd"),
                ])) as _,
            ),
            (
                "consent",
                Arc::new(arrow::array::BooleanArray::from(vec![true; 4])) as _,
            ),
        ])
        .unwrap();
        assert_eq!(row_sizes(&batch), [13, 11, 11, 15]);
        // A slice counts its own rows.
        assert_eq!(row_sizes(&batch.slice(1, 3)), [11, 11, 15]);
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
    fn a_batch_in_parts_is_the_input_slices_it_spans_uncopied() {
        let limits = BatchLimits {
            max_rows: 4,
            max_bytes: usize::MAX,
        };
        let inputs = vec![batch(&["a"; 3]), batch(&["b"; 3]), batch(&["c"; 5])];
        let values_of_b = inputs[1].column(0).to_data().buffers()[1].as_ptr();
        let stream = futures::stream::iter(inputs.into_iter().map(Ok)).boxed();
        let batches: Vec<Parts> = futures::executor::block_on(
            batched_parts(stream, limits).map(|b| b.unwrap()).collect(),
        );
        let shape: Vec<Vec<usize>> = batches
            .iter()
            .map(|parts| parts.iter().map(RecordBatch::num_rows).collect())
            .collect();
        assert_eq!(shape, [vec![3, 1], vec![2, 2], vec![3]]);
        assert_eq!(
            batches[1][0].column(0).to_data().buffers()[1].as_ptr(),
            values_of_b,
            "a part (the last two rows of b) shares its input's buffers"
        );
        let first = concat(batches[0].clone()).unwrap();
        let first = first.column(0).as_string::<i32>();
        assert_eq!(
            first.iter().flatten().collect::<Vec<_>>(),
            ["a", "a", "a", "b"]
        );
        assert_eq!(num_rows(&batches[1]), 4);
    }

    #[test]
    fn a_batch_that_cannot_be_joined_ends_the_stream() {
        let limits = BatchLimits {
            max_rows: 4,
            max_bytes: usize::MAX,
        };
        // Another type under the same name: the copy that joins the parts fails.
        let other = RecordBatch::try_from_iter([(
            "email_sha256",
            Arc::new(arrow::array::Int32Array::from(vec![1; 3])) as _,
        )])
        .unwrap();
        let inputs = vec![batch(&["a"; 3]), other, batch(&["c"; 5])];
        let stream = futures::stream::iter(inputs.into_iter().map(Ok)).boxed();
        let results: Vec<Result<RecordBatch>> =
            futures::executor::block_on(batched(stream, limits).collect());
        assert_eq!(results.len(), 1, "nothing follows the error");
        assert!(results[0].is_err());
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
