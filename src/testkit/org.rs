//! Organisations to load through the API.

use tonic::transport::Channel;

pub use crate::demo::records::{rep, team};

use crate::{
    client::bearer,
    proto::pb::{self, directory_service_client::DirectoryServiceClient},
};

/// The bench organisation: team `bench`, with `pods` sub-teams `pod-N`
/// (none: the reps are in `bench` itself) and `reps` reps `rep-NNN` spread
/// over them.
pub async fn bench_organisation(
    channel: Channel,
    key: &str,
    pods: usize,
    reps: usize,
) -> anyhow::Result<()> {
    let mut directory = DirectoryServiceClient::with_interceptor(channel, bearer(key)?);
    directory.upsert_team(team("bench", "bench", "")).await?;
    for pod in 0..pods {
        let id = format!("pod-{pod}");
        directory.upsert_team(team(&id, &id, "bench")).await?;
    }
    for r in 0..reps {
        let team_id = if pods == 0 {
            "bench".to_owned()
        } else {
            format!("pod-{}", r % pods)
        };
        directory
            .upsert_rep(rep(&format!("rep-{r:03}"), &team_id))
            .await?;
    }
    Ok(())
}

/// The demo data the cache, watch and replica benches load: `reps` reps,
/// the year to 2026-09-30, 8 interactions a day each (seed 5).
pub fn bench_demo(reps: usize) -> crate::config::DemoOptions {
    crate::config::DemoOptions {
        client: crate::config::ClientOptions::default(),
        seed: 5,
        reps,
        days: 365,
        end_date: chrono::NaiveDate::from_ymd_opt(2026, 9, 30),
        interactions_per_day: 8.0,
        concurrency: 4,
        batch_size: 1000,
    }
}

/// The bench organisation (4 pods, `reps` reps) with the bench demo's year
/// pushed through the API; what was pushed.
pub async fn bench_org_with_demo(
    channel: Channel,
    key: &str,
    reps: usize,
) -> anyhow::Result<crate::demo::PushSummary> {
    use chrono::TimeZone as _;
    bench_organisation(channel.clone(), key, 4, reps).await?;
    let options = bench_demo(reps);
    let end = chrono::Utc
        .with_ymd_and_hms(2026, 9, 30, 23, 0, 0)
        .single()
        .unwrap_or_else(chrono::Utc::now);
    let (start, end) = crate::demo::span(&options, end);
    let pushed = crate::demo::push(
        channel,
        key,
        crate::demo::batches(&options, start, end),
        4,
        "demo data",
    )
    .await?;
    eprintln!("{} records", pushed.records);
    Ok(pushed)
}

/// Their team scorecard request: team `bench`, the quarter, every KPI.
pub fn bench_scorecard_request() -> pb::GetScorecardRequest {
    pb::GetScorecardRequest {
        subject: Some(pb::Subject {
            subject: Some(pb::subject::Subject::TeamId("bench".into())),
        }),
        period: Some(bench_quarter()),
        kpis: vec![],
    }
}

/// The period those benches ask for: 2026 Q3 in Berlin.
pub fn bench_quarter() -> pb::Period {
    pb::Period {
        start_date: "2026-07-01".into(),
        end_date: "2026-09-30".into(),
        time_zone: "Europe/Berlin".into(),
        ..Default::default()
    }
}
