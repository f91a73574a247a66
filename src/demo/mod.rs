//! The demo and load generator: a realistic, deterministic (seeded)
//! organisation with a span of activity (`generate`), pushed through the
//! public gRPC API like any CRM integration would (`push`).

use anyhow::Context as _;
use chrono::{NaiveDate, Utc};

use crate::{client::ClientOptions, grpc::pb::directory_service_client::DirectoryServiceClient};

pub mod generate;
pub mod push;

pub use generate::{batches, moves, rep_activity, reps, span, teams};
pub use push::{PushSummary, bearer, chunks, push};

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

/// `kpi-service demo`: creates the organisation and pushes the activity.
pub async fn run(options: DemoOptions) -> anyhow::Result<()> {
    let key = options.client.api_key()?;
    let channel = options.client.connect().await?;
    let mut directory = DirectoryServiceClient::with_interceptor(channel.clone(), bearer(&key)?);
    let now = Utc::now();
    let (start, end) = span(&options, now);
    let teams = teams();
    let reps = reps(&options);
    for team in &teams {
        directory
            .upsert_team(team.clone())
            .await
            .context("UpsertTeam failed")?;
    }
    for rep in reps.iter().chain(moves(&options, start, end).iter()) {
        directory
            .upsert_rep(rep.clone())
            .await
            .context("UpsertRep failed")?;
    }
    eprintln!(
        "demo: {} teams, {} reps; activity from {} to {} (seed {})",
        teams.len(),
        reps.len(),
        start.date_naive(),
        end.date_naive(),
        options.seed
    );
    let summary = push(
        channel,
        &key,
        batches(&options, start, end),
        options.concurrency,
        "demo",
    )
    .await?;
    let c = &summary.counts;
    println!(
        "demo: {} records in {} batches in {:.1} s: {:.0} records/s (inserted {}, updated {}, unchanged {}, stale {}, deleted {})",
        summary.records,
        summary.batches,
        summary.elapsed.as_secs_f64(),
        summary.records_per_second(),
        c.inserted,
        c.updated,
        c.unchanged,
        c.stale,
        c.deleted
    );
    Ok(())
}
