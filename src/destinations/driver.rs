//! The one batched-delivery loop every platform sink runs: batches cut to the destination's
//! limits and numbered from 1, those a killed attempt of the run had acknowledged skipped (and
//! counted as resumed), the rest sent up to `concurrency` at a time (spawned, so requests
//! progress while the next batch is read and encoded), each acknowledged in the checkpoint
//! once sent, and what each send answered given to the sink in turn (`Sends::next`), so the
//! sink's own handling of answers is plain code in its loop.
//!
//! What differs between platforms are a few switches: Meta sends batch 1 alone (it opens the
//! upload session) and the last batch after every other (it carries `last_batch_flag`); TikTok
//! settles its uploads in order and acknowledges them itself, once the files are applied to
//! the audience. What comes after the batches (Google's polling, TikTok's last apply, a
//! replace's clean-up) and finishing the checkpoint's phase are the sink's.

use crate::batch::{self, BatchLimits, Parts};
use crate::destinations::Delivery;
use crate::error::{Error, Result};
use arrow::array::RecordBatch;
use futures::stream::{BoxStream, FuturesOrdered, FuturesUnordered, StreamExt};
use std::future::Future;
use tokio::task::JoinHandle;

/// How a platform takes its batches.
#[derive(Clone, Copy, Debug)]
pub struct Driver {
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Batch 1 is sent alone, before any other.
    pub first_alone: bool,
    /// The last batch is sent after every other has settled, told that it is the last.
    pub last_after_the_rest: bool,
    /// Sends settle in the order the batches were cut, not as they finish.
    pub in_order: bool,
    /// A batch is acknowledged as soon as it is sent; otherwise the sink acknowledges it.
    pub ack_when_sent: bool,
}

impl Driver {
    /// One request per batch, acknowledged when it is answered (Snap, REST, Google).
    pub fn single_step(concurrency: usize) -> Driver {
        Driver {
            concurrency: concurrency.max(1),
            first_alone: false,
            last_after_the_rest: false,
            in_order: false,
            ack_when_sent: true,
        }
    }
}

/// What the driver counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Batches cut, sent or resumed.
    pub batches: u64,
    pub rows: u64,
    /// Batches a killed attempt had acknowledged, not sent again.
    pub resumed_batches: u64,
}

impl Progress {
    /// Adds the counts to the destination's report.
    pub fn count_in(self, report: &mut crate::destinations::SinkReport) {
        report.batches += self.batches;
        report.rows += self.rows;
        report.resumed_batches += self.resumed_batches;
    }
}

/// A spawned send: its batch number and rows, and what it answered (`None`: resumed).
type Task<T> = JoinHandle<Result<(u64, u64, Option<T>)>>;

/// Sends in flight, settled as they finish or in the order they were cut.
enum InFlight<T> {
    AsTheyFinish(FuturesUnordered<Task<T>>),
    InOrder(FuturesOrdered<Task<T>>),
}

impl<T: Send + 'static> InFlight<T> {
    fn push(&mut self, task: Task<T>) {
        match self {
            InFlight::AsTheyFinish(f) => f.push(task),
            InFlight::InOrder(f) => f.push_back(task),
        }
    }

    fn len(&self) -> usize {
        match self {
            InFlight::AsTheyFinish(f) => f.len(),
            InFlight::InOrder(f) => f.len(),
        }
    }

    async fn next(&mut self) -> Option<Result<(u64, u64, Option<T>)>> {
        let done = match self {
            InFlight::AsTheyFinish(f) => f.next().await,
            InFlight::InOrder(f) => f.next().await,
        };
        done.map(joined)
    }
}

impl Driver {
    /// Starts sending the member stream's batches with `send(seq, batch, last)`; the sink
    /// takes each answer in turn from `Sends::next`.
    pub fn start<S, Fut, T>(
        self,
        members: BoxStream<'static, Result<RecordBatch>>,
        limits: BatchLimits,
        delivery: &Delivery,
        send: S,
    ) -> Sends<S, T>
    where
        S: Fn(u64, Parts, bool) -> Fut,
        Fut: Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        Sends {
            driver: self,
            delivery: delivery.clone(),
            send,
            batches: batch::batched_parts(members, limits),
            in_flight: match self.in_order {
                true => InFlight::InOrder(FuturesOrdered::new()),
                false => InFlight::AsTheyFinish(FuturesUnordered::new()),
            },
            held: None,
            seq: 0,
            ended: false,
            progress: Progress::default(),
        }
    }
}

/// A delivery under way: `next` gives each batch's answer as it settles.
pub struct Sends<S, T> {
    driver: Driver,
    delivery: Delivery,
    send: S,
    batches: BoxStream<'static, Result<Parts>>,
    in_flight: InFlight<T>,
    /// The batch held back until the next one comes (`last_after_the_rest`).
    held: Option<Parts>,
    seq: u64,
    ended: bool,
    progress: Progress,
}

impl<S, Fut, T> Sends<S, T>
where
    S: Fn(u64, Parts, bool) -> Fut,
    Fut: Future<Output = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    /// The next batch sent, with the number it was cut with and what its send answered;
    /// `None` once every batch is sent or resumed. Batches a killed attempt had acknowledged
    /// are counted, not given. Before an error is given, the sends in flight finish and record
    /// their acknowledgements (their answers dropped), so a rerun does not send them again and
    /// nothing goes on after the delivery has failed.
    pub async fn next(&mut self) -> Option<Result<(u64, T)>> {
        let next = self.next_settled().await;
        if let Some(Err(_)) = &next {
            while self.in_flight.next().await.is_some() {}
        }
        next
    }

    async fn next_settled(&mut self) -> Option<Result<(u64, T)>> {
        loop {
            if !self.ended && self.in_flight.len() < self.driver.concurrency.max(1) {
                let parts = match self.batches.next().await {
                    Some(Ok(parts)) => parts,
                    Some(Err(e)) => return Some(Err(e)),
                    None => {
                        self.ended = true;
                        continue;
                    }
                };
                let ready = match self.driver.last_after_the_rest {
                    // One batch held back, so the last is known when the stream ends.
                    true => match self.held.replace(parts) {
                        Some(ready) => ready,
                        None => continue,
                    },
                    false => parts,
                };
                let task = self.spawn(ready, false);
                if self.seq == 1 && self.driver.first_alone {
                    match self.settled(joined(task.await)) {
                        Some(done) => return Some(done),
                        None => continue,
                    }
                }
                self.in_flight.push(task);
                continue;
            }
            if self.in_flight.len() > 0 {
                let done = self.in_flight.next().await.expect("a task in flight");
                match self.settled(done) {
                    Some(done) => return Some(done),
                    None => continue,
                }
            }
            let last = self.held.take()?;
            let task = self.spawn(last, true);
            if let Some(done) = self.settled(joined(task.await)) {
                return Some(done);
            }
        }
    }

    /// What was counted so far: every batch, once `next` has given `None`.
    pub fn progress(&self) -> Progress {
        self.progress
    }

    /// Sends the next batch on a task of its own, unless a killed attempt had it acknowledged.
    fn spawn(&mut self, parts: Parts, last: bool) -> Task<T> {
        self.seq += 1;
        let seq = self.seq;
        let (checkpoint, phase) = (self.delivery.checkpoint.clone(), self.delivery.op.phase());
        let rows = batch::num_rows(&parts) as u64;
        let sent = (self.send)(seq, parts, last);
        let ack = self.driver.ack_when_sent;
        tokio::spawn(async move {
            if checkpoint.is_acked(phase, seq).await {
                return Ok((seq, rows, None));
            }
            let answer = sent.await?;
            if ack {
                checkpoint.ack(phase, seq).await?;
            }
            Ok((seq, rows, Some(answer)))
        })
    }

    /// Counts a settled send; what to give the sink (`None` for a resumed batch).
    fn settled(&mut self, done: Result<(u64, u64, Option<T>)>) -> Option<Result<(u64, T)>> {
        let (seq, rows, answer) = match done {
            Ok(done) => done,
            Err(e) => return Some(Err(e)),
        };
        self.progress.batches += 1;
        self.progress.rows += rows;
        match answer {
            Some(answer) => Some(Ok((seq, answer))),
            None => {
                self.progress.resumed_batches += 1;
                None
            }
        }
    }
}

fn joined<T>(
    r: std::result::Result<Result<(u64, u64, Option<T>)>, tokio::task::JoinError>,
) -> Result<(u64, u64, Option<T>)> {
    r.map_err(|e| Error::internal(format!("an upload task failed: {e}")))
        .and_then(|done| done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::destinations::Op;
    use arrow::array::{ArrayRef, StringArray};
    use std::sync::{Arc, Mutex};

    /// `n` batches of one member each.
    fn members(n: usize) -> BoxStream<'static, Result<RecordBatch>> {
        let batches: Vec<Result<RecordBatch>> = (0..n)
            .map(|i| {
                let column: ArrayRef = Arc::new(StringArray::from(vec![format!("m{i}")]));
                Ok(RecordBatch::try_from_iter([("email_sha256", column)]).unwrap())
            })
            .collect();
        futures::stream::iter(batches).boxed()
    }

    #[tokio::test]
    async fn sends_the_first_alone_and_the_last_after_the_rest_and_skips_what_was_acknowledged() {
        let delivery = Delivery::fresh(Op::Add);
        delivery.checkpoint.ack("add", 2).await.unwrap();
        let sent = Arc::new(Mutex::new(vec![]));
        let send = |seq: u64, _parts: Parts, last: bool| {
            let sent = sent.clone();
            async move {
                sent.lock().unwrap().push((seq, last));
                Ok(seq * 10)
            }
        };
        let driver = Driver {
            concurrency: 2,
            first_alone: true,
            last_after_the_rest: true,
            in_order: false,
            ack_when_sent: true,
        };
        let limits = BatchLimits {
            max_rows: 1,
            max_bytes: usize::MAX,
        };
        let mut sends = driver.start(members(5), limits, &delivery, send);
        let mut answers = vec![];
        while let Some(done) = sends.next().await {
            answers.push(done.unwrap());
        }
        let sent = sent.lock().unwrap().clone();
        assert_eq!(sent.first(), Some(&(1, false)), "batch 1 first");
        assert_eq!(
            sent.last(),
            Some(&(5, true)),
            "the last batch last, told so"
        );
        assert!(
            !sent.iter().any(|(seq, _)| *seq == 2),
            "batch 2 was acknowledged"
        );
        answers.sort();
        assert_eq!(answers, [(1, 10), (3, 30), (4, 40), (5, 50)]);
        let progress = sends.progress();
        assert_eq!((progress.batches, progress.rows), (5, 5));
        assert_eq!(progress.resumed_batches, 1);
        assert_eq!(delivery.checkpoint.acked_count("add").await, 5);
    }

    #[tokio::test]
    async fn a_failed_send_lets_the_sends_in_flight_finish_and_be_acknowledged() {
        let delivery = Delivery::fresh(Op::Add);
        let limits = BatchLimits {
            max_rows: 1,
            max_bytes: usize::MAX,
        };
        let send = |seq: u64, _parts: Parts, _last: bool| async move {
            if seq == 1 {
                return Err(Error::transient("batch 1 refused"));
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            Ok(())
        };
        let mut sends = Driver::single_step(4).start(members(4), limits, &delivery, send);
        let first = sends.next().await.expect("an answer");
        assert!(first.unwrap_err().message.contains("batch 1 refused"));
        assert_eq!(
            delivery.checkpoint.acked_count("add").await,
            3,
            "the three sends in flight finished and were acknowledged before the error was given"
        );
    }

    #[tokio::test]
    async fn an_error_upstream_stops_the_delivery() {
        let delivery = Delivery::fresh(Op::Add);
        let failing = members(2)
            .chain(futures::stream::iter([Err(Error::internal(
                "the read failed",
            ))]))
            .boxed();
        let limits = BatchLimits {
            max_rows: 1,
            max_bytes: usize::MAX,
        };
        let send = |_, _, _| async { Ok(()) };
        let mut sends = Driver::single_step(4).start(failing, limits, &delivery, send);
        let mut error = None;
        while let Some(done) = sends.next().await {
            if let Err(e) = done {
                error = Some(e);
                break;
            }
        }
        assert!(error.unwrap().message.contains("the read failed"));
    }
}
