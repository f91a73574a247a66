//! `kpi-service import`: which exports, and how to send them.

use std::path::PathBuf;

use chrono_tz::Tz;

use super::ClientOptions;

/// What to import, and how.
#[derive(Debug, Clone, clap::Args)]
pub struct ImportOptions {
    #[command(flatten)]
    pub client: ClientOptions,
    /// Files to import: NDJSON (.ndjson, .jsonl, .json: one ActivityRecord
    /// per line) or CSV named after what they hold (teams.csv, reps.csv,
    /// customers.csv, interactions.csv, deals.csv, feedback.csv,
    /// customer_requests.csv, deletions.csv; or e.g. deals-2025.csv).
    /// Teams and reps go first, whatever the order given.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Where rejected records go: one JSON object per line with file, line,
    /// reason and the record. Removed when an import starts.
    #[arg(long, default_value = "import-rejects.ndjson")]
    pub rejects: PathBuf,
    /// Time zone of CSV times written without an offset
    /// (`2025-03-01 14:22`), as the CRM's export shows them.
    #[arg(long, default_value = "UTC")]
    pub time_zone: Tz,
    /// Concurrent StreamActivities calls.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Records per batch (at most 1000).
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
}
