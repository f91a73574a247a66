//! `kpi-service demo`: what to generate and how fast to push it.

use chrono::NaiveDate;

use super::ClientOptions;

/// What to generate.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoOptions {
    #[command(flatten)]
    pub client: ClientOptions,
    /// Seed of the generator: the same seed gives the same data.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Number of reps.
    #[arg(long, default_value_t = 40)]
    pub reps: usize,
    /// Days of activity, ending with --end-date.
    #[arg(long, default_value_t = 365)]
    pub days: u32,
    /// Last day of activity (default: today, UTC). Nothing later than now is
    /// generated.
    #[arg(long)]
    pub end_date: Option<NaiveDate>,
    /// Mean interactions per rep and working day.
    #[arg(long, default_value_t = 8.0)]
    pub interactions_per_day: f64,
    /// Concurrent StreamActivities calls.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Records per batch (at most 1000).
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
}

impl DemoOptions {
    /// The `demo` command's defaults (its flags' defaults: one source),
    /// calling `client`.
    pub fn defaults(client: ClientOptions) -> Self {
        #[derive(clap::Parser)]
        struct Demo {
            #[command(flatten)]
            options: DemoOptions,
        }
        let mut options = <Demo as clap::Parser>::parse_from(["demo"]).options;
        options.client = client;
        options
    }
}
