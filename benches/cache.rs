//! Repeated identical calls: a dashboard asking for the same team scorecard
//! over and over, against the same load generator's rate for the gRPC
//! health Check of the same server (the cheapest call it has), with the
//! result cache and without it (`--cache-mib 0`), and with writes
//! interleaved (each must show in the next answer).
//!
//! `cargo bench --bench cache` (env CACHE_BENCH_SECONDS, default 10 per
//! run; CACHE_BENCH_CLIENTS, 32 calls in flight). Prints the figures;
//! asserts only that no answer missed an acknowledged write.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use chrono::{TimeZone, Utc};
use kpi_service::{
    client::bearer,
    proto::pb::{self, kpi_service_client::KpiServiceClient},
    testkit::{
        process::{Launch, ServiceProcess},
        records,
    },
};
use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

const REPS: usize = 50;

type Auth =
    Box<dyn FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Send + Sync>;
type Kpis = KpiServiceClient<tonic::service::interceptor::InterceptedService<Channel, Auth>>;

fn kpi_client(channel: &Channel, key: &str) -> anyhow::Result<Kpis> {
    let auth: Auth = Box::new(bearer(key)?);
    Ok(KpiServiceClient::with_interceptor(channel.clone(), auth))
}

async fn interactions(client: &mut Kpis) -> Option<f64> {
    let answer = client
        .get_scorecard(kpi_service::testkit::org::bench_scorecard_request())
        .await
        .ok()?;
    answer
        .into_inner()
        .entries
        .iter()
        .filter_map(|e| e.current.as_ref())
        .find(|v| v.kpi == pb::Kpi::Interactions as i32)
        .and_then(|v| v.value)
}

/// Scorecard and health rates against one service process.
async fn measure(
    service: &ServiceProcess,
    key: &str,
    clients: usize,
    seconds: u64,
) -> anyhow::Result<(f64, f64)> {
    // A few channels: one HTTP/2 connection would serialise on one core.
    let mut channels = Vec::new();
    for _ in 0..4 {
        channels.push(Channel::from_shared(service.endpoint())?.connect().await?);
    }
    let channels = Arc::new(channels);
    let next = Arc::new(AtomicU64::new(0));
    let pick = {
        let (channels, next) = (channels.clone(), next.clone());
        move || channels[next.fetch_add(1, Ordering::Relaxed) as usize % channels.len()].clone()
    };
    let health = {
        let pick = pick.clone();
        kpi_service::testkit::load::rate(clients, seconds, move || {
            let mut client = HealthClient::new(pick());
            async move {
                client
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .is_ok()
            }
        })
        .await
    };
    let key = key.to_owned();
    let scorecards = kpi_service::testkit::load::rate(clients, seconds, move || {
        let client = kpi_client(&pick(), &key);
        async move {
            match client {
                Ok(mut client) => client
                    .get_scorecard(kpi_service::testkit::org::bench_scorecard_request())
                    .await
                    .is_ok(),
                Err(_) => false,
            }
        }
    })
    .await;
    Ok((scorecards, health))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds = common::env_or("CACHE_BENCH_SECONDS", 10) as u64;
    let clients = common::env_or("CACHE_BENCH_CLIENTS", 32);
    let cluster = common::Cluster::start("cache").await?;
    let cached = common::start_service(&cluster, &[])?;
    let channel = Channel::from_shared(cached.endpoint())?.connect().await?;
    let key = cached.admin_key()?;
    let pushed =
        kpi_service::testkit::org::bench_org_with_demo(channel.clone(), &key, REPS).await?;

    // The same database, no cache.
    let uncached_dir = kpi_service::testkit::cluster::watched_dir("bench-cache-off")?;
    let url = cluster.url();
    let uncached = ServiceProcess::start(&Launch {
        database_url: Some(&url),
        args: &["--cache-mib", "0"],
        log_filter: "warn,kpi_service::app=info",
        echo_all: false,
        ..Launch::new(env!("CARGO_BIN_EXE_kpi-service"), &uncached_dir)
    })?;

    let (off, off_health) = measure(&uncached, &key, clients, seconds).await?;
    let (on, on_health) = measure(&cached, &key, clients, seconds).await?;

    // Writes interleaved: a writer records one interaction (through the
    // other process), then asks the cached one; every answer must count
    // it, while the readers keep asking.
    let mut writer =
        kpi_service::proto::pb::activity_service_client::ActivityServiceClient::with_interceptor(
            Channel::from_shared(uncached.endpoint())?.connect().await?,
            bearer(&key)?,
        );
    let mut checker = kpi_client(&channel, &key)?;
    let base = interactions(&mut checker).await.unwrap_or(0.0);
    let stop = Arc::new(AtomicBool::new(false));
    let (writes, missed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let write_loop = {
        let (stop, writes, missed) = (stop.clone(), writes.clone(), missed.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let when = Utc
                    .with_ymd_and_hms(2026, 8, 15, 12, 0, 0)
                    .single()
                    .unwrap_or_else(Utc::now);
                let record =
                    records::interaction(format!("w{n}"), "rep-000", pb::Channel::Call, when)
                        .with_updated(when)
                        .record();
                if writer
                    .record_activities(pb::RecordActivitiesRequest {
                        records: vec![record],
                    })
                    .await
                    .is_err()
                {
                    continue;
                }
                writes.fetch_add(1, Ordering::Relaxed);
                if interactions(&mut checker).await != Some(base + n as f64) {
                    missed.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let (mixed, _) = measure(&cached, &key, clients, seconds).await?;
    stop.store(true, Ordering::Relaxed);
    let _ = write_loop.await;
    let (writes, missed) = (
        writes.load(Ordering::Relaxed),
        missed.load(Ordering::Relaxed),
    );
    anyhow::ensure!(
        missed == 0,
        "{missed} of {writes} answers missed an acknowledged write"
    );

    println!();
    println!(
        "cache bench: team of {REPS} reps (4 sub-teams), a quarter, all KPIs, {} records; {clients} calls in flight, {seconds} s per run",
        pushed.records
    );
    println!(
        "  without cache (--cache-mib 0): {off:>9.0} scorecards/s, health {off_health:>9.0}/s, ratio {:.3}",
        off / off_health
    );
    println!(
        "  with cache:                    {on:>9.0} scorecards/s, health {on_health:>9.0}/s, ratio {:.3}",
        on / on_health
    );
    println!(
        "  with cache, a write every ~10 ms through the other process: {mixed:>9.0} scorecards/s ({writes} writes, each seen by the next answer)"
    );
    println!(
        "  service peak RSS (VmHWM): {:.1} MiB with cache, {:.1} MiB without",
        cached.peak_rss_mib(),
        uncached.peak_rss_mib()
    );
    Ok(())
}
