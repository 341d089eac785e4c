//! The single-step delivery pattern (Snap, a REST endpoint): each batch is one request, so a
//! batch is sent, acknowledged in the checkpoint, and done. Batches are cut to the destination's
//! limits and numbered from 1; up to `concurrency` requests are in flight (spawned, so they
//! progress while the next batch is read and encoded); batches a killed attempt of the run had
//! acknowledged are skipped and counted as resumed.

use crate::batch;
use crate::batch::BatchLimits;
use crate::destinations::{Delivery, SinkReport};
use crate::error::{Error, Result};
use arrow::array::RecordBatch;
use futures::stream::{BoxStream, StreamExt};
use std::future::Future;

/// What sending one batch did.
pub struct Sent {
    /// Members of the batch without any identifier the destination takes (not sent).
    pub without_identifier: u64,
}

/// Sends every batch with `send(seq, batch)`, fills the report's batch, row and resume counts,
/// and finishes the phase; the number of members that had nothing to send.
pub async fn send_batches<F, Fut>(
    members: BoxStream<'static, Result<RecordBatch>>,
    limits: BatchLimits,
    concurrency: usize,
    delivery: &Delivery,
    report: &mut SinkReport,
    send: F,
) -> Result<u64>
where
    F: Fn(u64, RecordBatch) -> Fut,
    Fut: Future<Output = Result<Sent>> + Send + 'static,
{
    let phase = delivery.op.phase();
    let mut results = batch::batched(members, limits)
        .enumerate()
        .map(|(i, batch)| {
            let seq = i as u64 + 1;
            let checkpoint = delivery.checkpoint.clone();
            let sent = batch.map(|b| (b.num_rows() as u64, send(seq, b)));
            tokio::spawn(async move {
                let (rows, sent) = sent?;
                if checkpoint.is_acked(phase, seq).await {
                    return Ok((rows, None));
                }
                let sent = sent.await?;
                checkpoint.ack(phase, seq).await?;
                Ok::<_, Error>((rows, Some(sent)))
            })
        })
        .buffer_unordered(concurrency);
    let mut without_identifier = 0;
    while let Some(result) = results.next().await {
        let (rows, sent) =
            result.map_err(|e| Error::internal(format!("an upload task failed: {e}")))??;
        report.batches += 1;
        report.rows += rows;
        match sent {
            Some(s) => without_identifier += s.without_identifier,
            None => report.resumed_batches += 1,
        }
    }
    delivery.checkpoint.finish(phase).await?;
    Ok(without_identifier)
}
