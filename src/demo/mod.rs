//! The demo and load generator: a realistic, deterministic (seeded)
//! organisation with a span of activity (`generate`), pushed through the
//! public gRPC API like any CRM integration would (`push`).

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
};

use anyhow::Context as _;
use chrono::{NaiveDate, Utc};
use tonic::transport::Channel;

use crate::grpc::pb::directory_service_client::DirectoryServiceClient;

pub mod generate;
pub mod push;

pub use generate::{batches, moves, rep_activity, reps, span, teams};
pub use push::{PushSummary, bearer, chunks, push};

/// What to generate.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoOptions {
    /// The service to fill (default: the address `serve` listens on,
    /// KPI_LISTEN, else http://127.0.0.1:50051).
    #[arg(long, env = "KPI_TARGET")]
    pub target: Option<String>,
    /// The service's data directory: without --key, the demo uses the
    /// first-start admin key in <data-dir>/admin.key.
    #[arg(long, env = "KPI_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
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
    /// API key (ingest or admin) to call the service with; default: the
    /// first-start admin key in <data-dir>/admin.key.
    #[arg(long, env = "KPI_API_KEY", hide_env_values = true)]
    pub key: Option<String>,
}

impl DemoOptions {
    /// `--target`, else the address `serve` listens on (`KPI_LISTEN`; an
    /// unspecified address means this machine), else the default.
    pub fn target_url(&self) -> String {
        self.target_url_for(std::env::var("KPI_LISTEN").ok().as_deref())
    }

    fn target_url_for(&self, listen: Option<&str>) -> String {
        if let Some(target) = &self.target {
            return target.clone();
        }
        match listen.and_then(|raw| raw.parse::<SocketAddr>().ok()) {
            Some(mut addr) => {
                if addr.ip().is_unspecified() {
                    addr.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
                }
                format!("http://{addr}")
            }
            None => "http://127.0.0.1:50051".to_owned(),
        }
    }
}

/// `kpi-service demo`: creates the organisation and pushes the activity.
pub async fn run(options: DemoOptions) -> anyhow::Result<()> {
    let key = match &options.key {
        Some(key) => key.clone(),
        None => {
            let path = options.data_dir.join("admin.key");
            std::fs::read_to_string(&path)
                .with_context(|| format!("no --key given and cannot read {}", path.display()))?
                .trim()
                .to_owned()
        }
    };
    let target = options.target_url();
    let channel = Channel::from_shared(target.clone())
        .context("--target is not a valid URL")?
        .connect()
        .await
        .with_context(|| format!("cannot reach kpi-service at {target}"))?;
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Demo {
        #[command(flatten)]
        options: DemoOptions,
    }

    #[test]
    fn the_demo_follows_the_servers_listen_address_unless_given_a_target() {
        let options = Demo::parse_from(["demo"]).options;
        assert_eq!(options.target_url_for(None), "http://127.0.0.1:50051");
        assert_eq!(
            options.target_url_for(Some("127.0.0.1:6000")),
            "http://127.0.0.1:6000"
        );
        assert_eq!(
            options.target_url_for(Some("0.0.0.0:7000")),
            "http://127.0.0.1:7000"
        );
        let given = Demo::parse_from(["demo", "--target", "http://10.1.2.3:1"]).options;
        assert_eq!(
            given.target_url_for(Some("127.0.0.1:6000")),
            "http://10.1.2.3:1"
        );
    }
}
