//! The demo and load generator: a realistic, deterministic (seeded)
//! organisation with a span of activity (`generate`), pushed through the
//! public gRPC API like any CRM integration would (`push`).

use anyhow::Context as _;
use chrono::Utc;

use crate::{
    client::bearer, config::DemoOptions,
    proto::pb::directory_service_client::DirectoryServiceClient,
};

pub mod generate;
pub mod push;
pub mod records;

pub use generate::{batches, moves, rep_activity, reps, span, teams};
pub use push::{PushSummary, chunks, push};

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
