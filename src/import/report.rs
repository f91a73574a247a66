//! What an import tells its user: the counts, the reject file and the
//! progress (a bar on a terminal, plain lines otherwise).

use std::{
    fs::File,
    io::{BufWriter, IsTerminal, Write},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};

use crate::proto::pb;

/// Where a record came from: the file (its index in the import) and the
/// line its text starts on (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    pub file: usize,
    pub line: u64,
}

/// Running totals, shared by the reader, the senders and the progress.
#[derive(Debug, Default)]
pub struct Stats {
    pub inserted: AtomicU64,
    pub updated: AtomicU64,
    pub unchanged: AtomicU64,
    pub stale: AtomicU64,
    pub deleted: AtomicU64,
    pub rejected: AtomicU64,
    /// Activity records the service has answered for.
    pub acknowledged: AtomicU64,
    /// Bytes of the input files read so far.
    pub bytes_read: AtomicU64,
    /// Batches sent again after a failure that was not theirs.
    pub resent_batches: AtomicU64,
    pub teams: AtomicU64,
    pub reps: AtomicU64,
}

impl Stats {
    pub fn add_counts(&self, counts: &pb::RecordCounts) {
        let add = |total: &AtomicU64, n: i64| {
            total.fetch_add(u64::try_from(n).unwrap_or(0), Ordering::Relaxed);
        };
        add(&self.inserted, counts.inserted);
        add(&self.updated, counts.updated);
        add(&self.unchanged, counts.unchanged);
        add(&self.stale, counts.stale);
        add(&self.deleted, counts.deleted);
    }

    pub fn get(total: &AtomicU64) -> u64 {
        total.load(Ordering::Relaxed)
    }

    pub fn bump(total: &AtomicU64, n: u64) {
        total.fetch_add(n, Ordering::Relaxed);
    }

    /// `inserted 5, updated 0, ...` of everything so far.
    pub fn summary(&self) -> String {
        format!(
            "inserted {}, updated {}, unchanged {}, stale {}, deleted {}, rejected {}",
            Self::get(&self.inserted),
            Self::get(&self.updated),
            Self::get(&self.unchanged),
            Self::get(&self.stale),
            Self::get(&self.deleted),
            Self::get(&self.rejected),
        )
    }
}

/// What a reject line shows of the rejected input.
pub enum Evidence<'a> {
    /// The record as sent (proto3 JSON, the way it would be imported).
    Record(&'a pb::ActivityRecord),
    /// A line that could not be read as a record.
    Text(&'a str),
    /// The fields of a CSV row.
    Fields(&'a csv::StringRecord),
}

/// The reject file: one JSON object per rejected input,
/// `{"file", "line", "reason", "record" | "text" | "fields"}`, created at
/// the first reject (an earlier run's file is removed when an import
/// starts, so it never describes another run).
pub struct Rejects {
    path: PathBuf,
    files: Vec<String>,
    out: Mutex<Option<BufWriter<File>>>,
    stats: Arc<Stats>,
}

impl Rejects {
    pub fn new(path: &Path, files: Vec<String>, stats: Arc<Stats>) -> anyhow::Result<Self> {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                return Err(err).with_context(|| format!("cannot remove {}", path.display()));
            }
        }
        Ok(Self {
            path: path.to_owned(),
            files,
            out: Mutex::new(None),
            stats,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file_name(&self, file: usize) -> &str {
        self.files.get(file).map_or("?", String::as_str)
    }

    pub fn add(&self, origin: Origin, reason: &str, evidence: Evidence<'_>) -> anyhow::Result<()> {
        let mut line = serde_json::json!({
            "file": self.file_name(origin.file),
            "line": origin.line,
            "reason": reason,
        });
        let (key, value) = match evidence {
            Evidence::Record(record) => ("record", serde_json::to_value(record)?),
            Evidence::Text(text) => ("text", serde_json::Value::from(text)),
            Evidence::Fields(fields) => (
                "fields",
                serde_json::Value::from(fields.iter().collect::<Vec<_>>()),
            ),
        };
        if let Some(object) = line.as_object_mut() {
            object.insert(key.to_owned(), value);
        }
        let mut out = self
            .out
            .lock()
            .map_err(|_| anyhow::anyhow!("the reject file's writer panicked"))?;
        if out.is_none() {
            let file = File::create(&self.path)
                .with_context(|| format!("cannot create {}", self.path.display()))?;
            *out = Some(BufWriter::new(file));
        }
        if let Some(out) = out.as_mut() {
            serde_json::to_writer(&mut *out, &line)?;
            out.write_all(b"\n")
                .with_context(|| format!("cannot write {}", self.path.display()))?;
        }
        Stats::bump(&self.stats.rejected, 1);
        Ok(())
    }

    /// Flushes the file to disk.
    pub fn finish(&self) -> anyhow::Result<()> {
        let mut out = self
            .out
            .lock()
            .map_err(|_| anyhow::anyhow!("the reject file's writer panicked"))?;
        if let Some(out) = out.as_mut() {
            out.flush()
                .with_context(|| format!("cannot write {}", self.path.display()))?;
            out.get_ref().sync_all()?;
        }
        Ok(())
    }
}

/// The progress display, until `finish`.
pub struct Progress {
    ticker: tokio::task::JoinHandle<()>,
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A bar (records, rate, ETA from the bytes read of `total_bytes`) when
    /// stderr is a terminal, else a plain line every 10 seconds.
    pub fn start(total_bytes: u64, stats: Arc<Stats>) -> Self {
        let started = Instant::now();
        let bar = std::io::stderr().is_terminal().then(|| {
            let style = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] [{wide_bar}] {percent:>3}% {msg} ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            ProgressBar::new(total_bytes.max(1)).with_style(style)
        });
        let every = if bar.is_some() {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(10)
        };
        let shown = bar.clone();
        let ticker = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let line = status_line(&stats, started);
                let read = Stats::get(&stats.bytes_read);
                match &shown {
                    Some(bar) => {
                        bar.set_position(read);
                        bar.set_message(line);
                    }
                    None => {
                        let percent = 100.0 * read as f64 / total_bytes.max(1) as f64;
                        let elapsed = started.elapsed().as_secs_f64();
                        let left = if read > 0 {
                            format!(
                                ", about {:.0} s left",
                                elapsed * (total_bytes.saturating_sub(read)) as f64 / read as f64
                            )
                        } else {
                            String::new()
                        };
                        eprintln!("import: {percent:.0}% read, {line}{left}");
                    }
                }
            }
        });
        Self { ticker, bar }
    }

    pub fn finish(self) {
        self.ticker.abort();
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

fn status_line(stats: &Stats, started: Instant) -> String {
    let records = Stats::get(&stats.acknowledged);
    let rate = records as f64 / started.elapsed().as_secs_f64().max(1e-9);
    format!(
        "{records} records, {rate:.0}/s, {} rejected",
        Stats::get(&stats.rejected)
    )
}
