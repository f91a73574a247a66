//! Watches across processes: two service processes on one PostgreSQL,
//! writes through `a`, a WatchScorecard on `b`; the time from each write's
//! OK to the watcher's message, over many changes one after another; then
//! what many idle watches cost `b` in memory, and the latency again while
//! they are open.
//!
//! `cargo bench --bench watch` (env WATCH_BENCH_CHANGES, default 1000;
//! WATCH_BENCH_IDLE, default 1000). Prints the figures; asserts only that
//! every change reached the watcher with the right value.

mod common;

use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use kpi_service::{
    client::bearer,
    proto::pb::{
        self, activity_service_client::ActivityServiceClient, kpi_service_client::KpiServiceClient,
    },
    testkit::{
        process::{Launch, ServiceProcess},
        records,
    },
};
use tonic::{Streaming, transport::Channel};

const REPS: usize = 50;

fn subject(team: bool, id: &str) -> Option<pb::Subject> {
    Some(pb::Subject {
        subject: Some(if team {
            pb::subject::Subject::TeamId(id.into())
        } else {
            pb::subject::Subject::RepId(id.into())
        }),
    })
}

fn watch(subject: Option<pb::Subject>) -> pb::WatchScorecardRequest {
    pb::WatchScorecardRequest {
        subject,
        period: Some(kpi_service::testkit::org::bench_quarter()),
        kpis: vec![],
        min_interval: Some(pbjson_types::Duration {
            seconds: 0,
            nanos: 0,
        }),
    }
}

type Auth =
    Box<dyn FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Send + Sync>;

fn kpis(
    channel: &Channel,
    key: &str,
) -> anyhow::Result<KpiServiceClient<tonic::service::interceptor::InterceptedService<Channel, Auth>>>
{
    let auth: Auth = Box::new(bearer(key)?);
    Ok(KpiServiceClient::with_interceptor(channel.clone(), auth))
}

fn interactions(message: &pb::WatchScorecardResponse) -> Option<f64> {
    message
        .scorecard
        .as_ref()?
        .entries
        .iter()
        .filter_map(|e| e.current.as_ref())
        .find(|v| v.kpi == pb::Kpi::Interactions as i32)
        .and_then(|v| v.value)
}

async fn next(
    watch: &mut Streaming<pb::WatchScorecardResponse>,
) -> anyhow::Result<pb::WatchScorecardResponse> {
    match tokio::time::timeout(Duration::from_secs(10), watch.message()).await {
        Ok(Ok(Some(message))) => Ok(message),
        Ok(Ok(None)) => anyhow::bail!("the watch ended"),
        Ok(Err(status)) => anyhow::bail!("the watch failed: {status:?}"),
        Err(_) => anyhow::bail!("no message within 10 s"),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `changes` writes through `writer`, one after another, each followed by
/// the watcher's message; the latencies, sorted.
async fn latencies(
    writer: &mut ActivityServiceClient<
        tonic::service::interceptor::InterceptedService<Channel, Auth>,
    >,
    watcher: &mut Streaming<pb::WatchScorecardResponse>,
    first: usize,
    changes: usize,
    mut expected: f64,
) -> anyhow::Result<Vec<Duration>> {
    let when = Utc
        .with_ymd_and_hms(2026, 8, 15, 12, 0, 0)
        .single()
        .unwrap_or_else(Utc::now);
    let mut times = Vec::with_capacity(changes);
    for n in first..first + changes {
        let record = records::interaction(
            format!("watch-{n}"),
            format!("rep-{:03}", n % REPS),
            pb::Channel::Call,
            when,
        )
        .with_updated(when)
        .record();
        writer
            .record_activities(pb::RecordActivitiesRequest {
                records: vec![record],
            })
            .await?;
        let acknowledged = Instant::now();
        let message = next(watcher).await?;
        times.push(acknowledged.elapsed());
        expected += 1.0;
        anyhow::ensure!(
            interactions(&message) == Some(expected),
            "change {n}: the watcher saw {:?}, not {expected}",
            interactions(&message)
        );
    }
    times.sort();
    Ok(times)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let changes = common::env_or("WATCH_BENCH_CHANGES", 1000);
    let idle = common::env_or("WATCH_BENCH_IDLE", 1000);
    let cluster = common::Cluster::start("watch").await?;
    let a = common::start_service(&cluster, &[])?;
    let key = a.admin_key()?;
    let a_channel = Channel::from_shared(a.endpoint())?.connect().await?;
    let pushed =
        kpi_service::testkit::org::bench_org_with_demo(a_channel.clone(), &key, REPS).await?;

    let b_dir = kpi_service::testkit::cluster::watched_dir("bench-watch-b")?;
    let url = cluster.url();
    let b = ServiceProcess::start(&Launch {
        database_url: Some(&url),
        log_filter: "warn,kpi_service::app=info",
        echo_all: false,
        ..Launch::new(env!("CARGO_BIN_EXE_kpi-service"), &b_dir)
    })?;
    let b_channel = Channel::from_shared(b.endpoint())?.connect().await?;
    let auth: Auth = Box::new(bearer(&key)?);
    let mut writer = ActivityServiceClient::with_interceptor(a_channel.clone(), auth);

    // The team's scorecard (50 reps, a quarter, all KPIs), watched on b.
    let mut watcher = kpis(&b_channel, &key)?
        .watch_scorecard(watch(subject(true, "bench")))
        .await?
        .into_inner();
    let base = interactions(&next(&mut watcher).await?).unwrap_or(0.0);
    let alone = latencies(&mut writer, &mut watcher, 0, changes, base).await?;

    // Idle watches: the reps' scorecards, `idle / 50` watches of each rep,
    // over 10 connections.
    // Measured from a warm service: each rep's scorecard computed once
    // (the database connections, prepared statements and cached answers
    // the watches will use are not what a watch costs).
    let mut warm = kpis(&b_channel, &key)?;
    for rep in 0..REPS {
        let request = watch(subject(false, &format!("rep-{rep:03}")));
        warm.get_scorecard(pb::GetScorecardRequest {
            subject: request.subject,
            period: request.period,
            kpis: request.kpis,
        })
        .await?;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = b.rss_mib();
    let mut channels = Vec::new();
    for _ in 0..10 {
        channels.push(Channel::from_shared(b.endpoint())?.connect().await?);
    }
    let mut idle_watches = Vec::with_capacity(idle);
    for i in 0..idle {
        let channel = &channels[i % channels.len()];
        let request = watch(subject(false, &format!("rep-{:03}", i % REPS)));
        let mut stream = kpis(channel, &key)?
            .watch_scorecard(request)
            .await?
            .into_inner();
        next(&mut stream).await?;
        idle_watches.push(stream);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = b.rss_mib();

    // The latency again with them open (each write touches the watches of
    // one rep: idle/50 of them recompute, the rest only hear of it).
    let extra = (changes / 5).max(50);
    let base = base + changes as f64;
    let crowded = latencies(&mut writer, &mut watcher, changes, extra, base).await?;
    // The idle watches of the reps written to have messages waiting.
    drop(idle_watches);

    println!();
    println!(
        "watch bench: 2 service processes on one PostgreSQL, writes through one, WatchScorecard (team of {REPS} reps, a quarter, all KPIs, min_interval 0) on the other; {} records",
        pushed.records
    );
    println!(
        "  write OK -> watcher message, {changes} changes one after another: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(percentile(&alone, 0.5)),
        ms(percentile(&alone, 0.99)),
        ms(percentile(&alone, 1.0))
    );
    println!(
        "  {idle} idle watches (rep scorecards, 10 connections): service RSS {before:.1} -> {after:.1} MiB, {:.1} MiB ({:.1} KiB a watch)",
        after - before,
        (after - before) * 1024.0 / idle as f64
    );
    println!(
        "  with them open, {extra} more changes: p50 {:.2} ms, p99 {:.2} ms",
        ms(percentile(&crowded, 0.5)),
        ms(percentile(&crowded, 0.99))
    );
    println!("  service b peak RSS (VmHWM): {:.1} MiB", b.peak_rss_mib());
    Ok(())
}
