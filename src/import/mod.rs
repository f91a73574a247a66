//! `kpi-service import`: backfill from CRM exports. NDJSON files (one
//! `ActivityRecord` per line, in the proto3 JSON that grpcurl takes) and CSV
//! files (one per record type, plus teams.csv and reps.csv) are pushed
//! through the public API like any client would: the directory first, then
//! the activity in batches over concurrent streams.
//!
//! Bad input never blocks good input: what cannot be read, or what the
//! service rejects (split out of its batch by the `BadRequest` indices), goes
//! to a reject file with its file, line and reason, and the rest is sent.
//! Ingestion is idempotent, so running the same import again after an
//! interruption is safe: what was sent before counts `unchanged`.

pub mod columns;
pub mod directory;
pub mod read;
pub mod report;
pub mod send;

use std::{sync::Arc, time::Instant};

use tokio::sync::mpsc;

use self::{
    read::{Input, ReadContext},
    report::{Progress, Rejects, Stats},
};
use crate::config::ImportOptions;

/// An input with its index in the import (reject lines name it).
type Numbered = (usize, Input);

/// An import that ran to its end but did not take everything.
#[derive(Debug, thiserror::Error)]
pub enum Incomplete {
    #[error("{count} records rejected; see {path}")]
    Rejected { count: u64, path: String },
    #[error("interrupted; run the same import again to finish it")]
    Interrupted,
}

impl Incomplete {
    /// 2 when some records were rejected, 130 when interrupted (Ctrl-C).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Rejected { .. } => 2,
            Self::Interrupted => 130,
        }
    }
}

/// `kpi-service import`.
pub async fn run(options: ImportOptions) -> anyhow::Result<()> {
    let started = Instant::now();
    let inputs = read::inputs(&options.files)?;
    let key = options.client.api_key()?;
    let channel = options.client.connect().await?;

    let stats = Arc::new(Stats::default());
    let names = inputs
        .iter()
        .map(|i| i.path.display().to_string())
        .collect();
    let rejects = Arc::new(Rejects::new(&options.rejects, names, stats.clone())?);
    let (directory, activity): (Vec<Numbered>, Vec<Numbered>) = inputs
        .iter()
        .cloned()
        .enumerate()
        .partition(|(_, input)| input.is_directory());
    let total_bytes: u64 = inputs.iter().map(|i| i.size).sum();
    let progress = Progress::start(total_bytes, stats.clone());

    let context = ReadContext {
        zone: options.time_zone,
        rejects: rejects.clone(),
        stats: stats.clone(),
        bytes_before: 0,
    };
    let work = async {
        directory::import(channel.clone(), &key, &directory, &context).await?;
        let (tx, rx) = mpsc::channel(options.concurrency.max(1) * 2);
        let reader_context = ReadContext {
            bytes_before: directory.iter().map(|(_, i)| i.size).sum(),
            ..context.clone()
        };
        let batch_size = options.batch_size;
        let reader = tokio::task::spawn_blocking(move || {
            read::read_activity(&activity, batch_size, reader_context, &tx)
        });
        let sent = send::send_all(
            channel.clone(),
            &key,
            rx,
            options.concurrency,
            rejects.clone(),
            stats.clone(),
        )
        .await;
        // A sender's failure stops the reader (its channel closes); report
        // the cause, not the reader's "stopped".
        let read = reader
            .await
            .map_err(|err| anyhow::anyhow!("the reader failed: {err}"));
        sent?;
        read?
    };
    let outcome = tokio::select! {
        outcome = work => outcome,
        _ = tokio::signal::ctrl_c() => Err(Incomplete::Interrupted.into()),
    };
    progress.finish();
    rejects.finish()?;
    let elapsed = started.elapsed().as_secs_f64();
    let records = Stats::get(&stats.acknowledged);
    println!(
        "import: {records} records from {} file{} in {elapsed:.1} s ({:.0} records/s): {}",
        inputs.len(),
        if inputs.len() == 1 { "" } else { "s" },
        records as f64 / elapsed.max(1e-9),
        stats.summary(),
    );
    if !directory.is_empty() {
        println!(
            "import: directory: {} team rows and {} rep rows upserted",
            Stats::get(&stats.teams),
            Stats::get(&stats.reps)
        );
    }
    let resent = Stats::get(&stats.resent_batches);
    if resent > 0 {
        println!(
            "import: {resent} batches were sent again after a failure (records in them that had been committed count as unchanged)"
        );
    }
    outcome?;
    let rejected = Stats::get(&stats.rejected);
    if rejected > 0 {
        return Err(Incomplete::Rejected {
            count: rejected,
            path: rejects.path().display().to_string(),
        }
        .into());
    }
    Ok(())
}
