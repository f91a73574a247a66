//! Pushing batches through concurrent StreamActivities calls, with a
//! progress line.

use std::{
    io::{IsTerminal, Write},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::{
    client::bearer,
    proto::pb::{self, activity_service_client::ActivityServiceClient},
};

/// What a push did.
#[derive(Debug, Default, Clone)]
pub struct PushSummary {
    pub records: u64,
    pub batches: u64,
    pub counts: pb::RecordCounts,
    pub elapsed: Duration,
}

impl PushSummary {
    pub fn records_per_second(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Pushes `batches` over `concurrency` StreamActivities calls, round robin,
/// with a progress line on stderr.
pub async fn push(
    channel: Channel,
    api_key: &str,
    batches: impl Iterator<Item = Vec<pb::ActivityRecord>> + Send,
    concurrency: usize,
    label: &str,
) -> anyhow::Result<PushSummary> {
    let auth = bearer(api_key)?;
    let started = Instant::now();
    let sent = Arc::new(AtomicU64::new(0));
    let mut senders = Vec::new();
    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (tx, rx) = tokio::sync::mpsc::channel::<pb::StreamActivitiesRequest>(2);
        let mut client = ActivityServiceClient::with_interceptor(channel.clone(), auth.clone())
            .max_encoding_message_size(64 * 1024 * 1024);
        workers.push(tokio::spawn(async move {
            client.stream_activities(ReceiverStream::new(rx)).await
        }));
        senders.push(tx);
    }
    let progress = tokio::spawn(report_progress(label.to_owned(), sent.clone(), started));

    let mut summary = PushSummary::default();
    for (n, records) in batches.enumerate() {
        let size = records.len() as u64;
        let worker = &senders[n % senders.len()];
        if worker
            .send(pb::StreamActivitiesRequest { records })
            .await
            .is_err()
        {
            break; // that stream failed; its error is reported below
        }
        summary.records += size;
        sent.fetch_add(size, Ordering::Relaxed);
    }
    drop(senders);
    for worker in workers {
        let reply = worker
            .await
            .context("a push worker panicked")?
            .context("the service rejected a stream")?
            .into_inner();
        let counts = reply.counts.unwrap_or_default();
        summary.batches += u64::try_from(reply.batches).unwrap_or(0);
        summary.counts.inserted += counts.inserted;
        summary.counts.updated += counts.updated;
        summary.counts.unchanged += counts.unchanged;
        summary.counts.stale += counts.stale;
        summary.counts.deleted += counts.deleted;
    }
    progress.abort();
    summary.elapsed = started.elapsed();
    eprintln!();
    Ok(summary)
}

async fn report_progress(label: String, sent: Arc<AtomicU64>, started: Instant) {
    let terminal = std::io::stderr().is_terminal();
    let every = if terminal {
        Duration::from_millis(250)
    } else {
        Duration::from_secs(5)
    };
    let spinner = ['|', '/', '-', '\\'];
    let mut tick = 0usize;
    loop {
        tokio::time::sleep(every).await;
        tick += 1;
        let records = sent.load(Ordering::Relaxed);
        let rate = records as f64 / started.elapsed().as_secs_f64().max(1e-9);
        let line = format!(
            "{label}: {} {records:>10} records sent, {rate:>9.0} records/s",
            spinner[tick % spinner.len()]
        );
        let mut err = std::io::stderr();
        if terminal {
            let _ = write!(err, "\r{line}");
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }
}

/// Batches of `size` consecutive records.
pub fn chunks<T: Send>(
    records: impl Iterator<Item = T> + Send,
    size: usize,
) -> impl Iterator<Item = Vec<T>> + Send {
    let mut records = records.peekable();
    std::iter::from_fn(move || {
        let batch: Vec<T> = records.by_ref().take(size.max(1)).collect();
        (!batch.is_empty()).then_some(batch)
    })
}
