//! Sending batches over concurrent StreamActivities calls, like `demo`,
//! but answering for every record: a rejected batch is split by its
//! `BadRequest` (the records it names go to the reject file, the rest is
//! sent again), a stream that fails for another reason is resumed after the
//! batches it committed, and the counts of every committed batch are added
//! up, from the reply or from the error's `ErrorInfo`.
//!
//! A stream carries at most `STREAM_BATCHES` batches, which the sender
//! keeps until the reply says they are committed; that bounds the memory
//! of an import whatever the size of its files.

use std::{collections::VecDeque, sync::Arc, time::Duration};

use tokio::sync::{Mutex, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status, transport::Channel};
use tonic_types::StatusExt as _;

use super::{
    read::Batch,
    report::{Evidence, Rejects, Stats},
};
use crate::{
    client::bearer,
    proto::pb::{self, activity_service_client::ActivityServiceClient},
};

/// Batches per stream before it is closed and its reply awaited.
pub const STREAM_BATCHES: usize = 32;
/// Failures in a row (without a batch committed in between) before the
/// import gives up.
const MAX_ATTEMPTS: u32 = 8;

/// What to do about an error the service (or the network) returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// The input is at fault: reject it, go on.
    Reject,
    /// The service or the network is: wait and send again.
    Retry,
    /// Neither (a bad key, a missing permission): stop the import.
    Fatal,
}

pub fn disposition(code: Code) -> Disposition {
    match code {
        Code::InvalidArgument | Code::NotFound | Code::AlreadyExists | Code::OutOfRange => {
            Disposition::Reject
        }
        Code::Unavailable
        | Code::Aborted
        | Code::DeadlineExceeded
        | Code::ResourceExhausted
        | Code::Cancelled
        | Code::Unknown
        | Code::Internal => Disposition::Retry,
        _ => Disposition::Fatal,
    }
}

/// The pause before attempt `attempt` + 1 (1-based): 250 ms doubling, at
/// most 10 s.
pub fn pause(attempt: u32) -> Duration {
    Duration::from_millis(250u64 << attempt.clamp(1, 7).saturating_sub(1))
        .min(Duration::from_secs(10))
}

/// Sends everything `rx` yields over `concurrency` streams; returns when
/// it is all committed or rejected, or at the first fatal error.
pub async fn send_all(
    channel: Channel,
    key: &str,
    rx: mpsc::Receiver<Batch>,
    concurrency: usize,
    rejects: Arc<Rejects>,
    stats: Arc<Stats>,
) -> anyhow::Result<()> {
    let auth = bearer(key)?;
    let rx = Arc::new(Mutex::new(rx));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let client = ActivityServiceClient::with_interceptor(channel.clone(), auth.clone())
            .max_encoding_message_size(crate::proto::MAX_MESSAGE_BYTES);
        let sender = Sender {
            client,
            rx: rx.clone(),
            rejects: rejects.clone(),
            stats: stats.clone(),
            queue: VecDeque::new(),
        };
        workers.spawn(sender.run());
    }
    // The first failure stops the others (dropping the set aborts them).
    while let Some(done) = workers.join_next().await {
        done.map_err(|err| anyhow::anyhow!("an import sender failed: {err}"))??;
    }
    Ok(())
}

struct Sender<I> {
    client: ActivityServiceClient<tonic::service::interceptor::InterceptedService<Channel, I>>,
    rx: Arc<Mutex<mpsc::Receiver<Batch>>>,
    rejects: Arc<Rejects>,
    stats: Arc<Stats>,
    /// Batches to send (again) before taking new ones.
    queue: VecDeque<Batch>,
}

impl<I> Sender<I>
where
    I: tonic::service::Interceptor + Clone + Send + 'static,
{
    async fn next(&mut self) -> Option<Batch> {
        match self.queue.pop_front() {
            Some(batch) => Some(batch),
            None => self.rx.lock().await.recv().await,
        }
    }

    async fn run(mut self) -> anyhow::Result<()> {
        let mut attempt = 0u32;
        loop {
            let (tx, requests) = mpsc::channel::<pb::StreamActivitiesRequest>(2);
            let mut client = self.client.clone();
            let call = tokio::spawn(async move {
                client
                    .stream_activities(ReceiverStream::new(requests))
                    .await
                    .map(tonic::Response::into_inner)
            });
            let mut sent: Vec<Batch> = Vec::new();
            let mut finished = false;
            while sent.len() < STREAM_BATCHES {
                let Some(batch) = self.next().await else {
                    finished = true;
                    break;
                };
                let request = pb::StreamActivitiesRequest {
                    records: batch.records.clone(),
                };
                sent.push(batch);
                if tx.send(request).await.is_err() {
                    break; // the call ended early; its status says why
                }
            }
            drop(tx);
            if sent.is_empty() {
                call.abort();
                return Ok(());
            }
            let reply = call
                .await
                .map_err(|err| anyhow::anyhow!("a stream task failed: {err}"))?;
            match reply {
                Ok(reply) => {
                    attempt = 0;
                    self.stats.add_counts(&reply.counts.unwrap_or_default());
                    self.acknowledge(&sent);
                }
                Err(status) => {
                    attempt = self.recover(status, sent, attempt).await?;
                    finished = false; // the queue may hold batches again
                }
            }
            if finished && self.queue.is_empty() {
                return Ok(());
            }
        }
    }

    fn acknowledge(&self, batches: &[Batch]) {
        let records: usize = batches.iter().map(|b| b.records.len()).sum();
        Stats::bump(&self.stats.acknowledged, records as u64);
    }

    /// Handles a stream's error: counts what it committed, rejects what it
    /// names, queues the rest again. Returns the attempt count after it.
    async fn recover(
        &mut self,
        status: Status,
        mut sent: Vec<Batch>,
        attempt: u32,
    ) -> anyhow::Result<u32> {
        let details = status.get_error_details();
        let info = details.error_info();
        let committed = info
            .and_then(|i| i.metadata.get("committed_batches"))
            .and_then(|n| n.parse::<usize>().ok());
        if let (Some(info), Some(committed)) = (info, committed) {
            let count = |name: &str| {
                info.metadata
                    .get(name)
                    .and_then(|n| n.parse::<i64>().ok())
                    .unwrap_or(0)
            };
            self.stats.add_counts(&pb::RecordCounts {
                inserted: count("inserted"),
                updated: count("updated"),
                unchanged: count("unchanged"),
                stale: count("stale"),
                deleted: count("deleted"),
            });
            let committed = committed.min(sent.len());
            self.acknowledge(&sent[..committed]);
            sent.drain(..committed);
        }
        let attempt = match disposition(status.code()) {
            Disposition::Reject if committed.is_some() && !sent.is_empty() => {
                // The first batch left is the one the service judged.
                let rejected = sent.remove(0);
                let violations = details
                    .bad_request()
                    .map(|b| b.field_violations.clone())
                    .unwrap_or_default();
                if let Some(rest) = self.split(rejected, &violations, status.message())? {
                    sent.insert(0, rest);
                }
                0
            }
            Disposition::Retry | Disposition::Reject if attempt + 1 < MAX_ATTEMPTS => {
                tracing::warn!(code = ?status.code(), message = status.message(), attempt = attempt + 1, "a stream failed; sending its uncommitted batches again");
                Stats::bump(&self.stats.resent_batches, sent.len() as u64);
                tokio::time::sleep(pause(attempt + 1)).await;
                attempt + 1
            }
            _ => anyhow::bail!(
                "the service refused the import: {:?}: {}",
                status.code(),
                status.message()
            ),
        };
        for batch in sent.into_iter().rev() {
            self.queue.push_front(batch);
        }
        Ok(attempt)
    }

    /// Writes the records a `BadRequest` names (`records[17].deal.amount`)
    /// to the reject file, with every reason given for each; returns the
    /// others as a batch to send again. A rejection that names no record
    /// rejects the whole batch with the status message.
    fn split(
        &self,
        batch: Batch,
        violations: &[tonic_types::FieldViolation],
        message: &str,
    ) -> anyhow::Result<Option<Batch>> {
        let mut reasons: Vec<Vec<String>> = vec![Vec::new(); batch.records.len()];
        for violation in violations {
            if let Some((index, field)) = record_index(&violation.field)
                && let Some(reasons) = reasons.get_mut(index)
            {
                reasons.push(if field.is_empty() {
                    violation.description.clone()
                } else {
                    format!("{field}: {}", violation.description)
                });
            }
        }
        let none_named = reasons.iter().all(Vec::is_empty);
        let mut rest = Batch::default();
        for ((record, origin), reasons) in batch.records.into_iter().zip(batch.origins).zip(reasons)
        {
            if none_named {
                self.rejects
                    .add(origin, message, Evidence::Record(&record))?;
            } else if reasons.is_empty() {
                rest.records.push(record);
                rest.origins.push(origin);
            } else {
                self.rejects
                    .add(origin, &reasons.join("; "), Evidence::Record(&record))?;
            }
        }
        Ok((!rest.records.is_empty()).then_some(rest))
    }
}

/// `records[17].deal.amount` -> (17, "deal.amount"); `records[4]` -> (4, "").
fn record_index(field: &str) -> Option<(usize, &str)> {
    let rest = field.strip_prefix("records[")?;
    let (index, after) = rest.split_once(']')?;
    let index = index.parse().ok()?;
    Some((index, after.strip_prefix('.').unwrap_or(after)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn violations_name_their_record() {
        assert_eq!(
            record_index("records[17].deal.closed_at"),
            Some((17, "deal.closed_at"))
        );
        assert_eq!(record_index("records[4]"), Some((4, "")));
        assert_eq!(record_index("records"), None);
        assert_eq!(record_index("records[x].deal"), None);
    }

    #[test]
    fn input_errors_are_rejected_outages_retried_and_refusals_fatal() {
        assert_eq!(disposition(Code::InvalidArgument), Disposition::Reject);
        assert_eq!(disposition(Code::Unavailable), Disposition::Retry);
        assert_eq!(disposition(Code::Aborted), Disposition::Retry);
        assert_eq!(disposition(Code::PermissionDenied), Disposition::Fatal);
        assert_eq!(disposition(Code::Unauthenticated), Disposition::Fatal);
        assert_eq!(pause(1), Duration::from_millis(250));
        assert_eq!(pause(3), Duration::from_secs(1));
        assert_eq!(pause(30), Duration::from_secs(10));
    }
}
