//! Read replicas: uncached team scorecards per second through a service on
//! the primary alone, and through one that reads from a streaming replica
//! (`--read-database-url`); the same database, the same load generator
//! (32 calls in flight over 4 connections), runs alternated. For each, the
//! CPU time the primary's and the replica's PostgreSQL spent per scorecard:
//! what a replica takes off the primary. Then, while a writer records an
//! interaction every ~10 ms through the other process, the replica
//! service's rate, where its reads went (its /metrics), and a checker that
//! every answer after a write counts it.
//!
//! Everything runs on one machine: a replica adds no cores here, so the
//! rates say what routing costs, and the CPU split says what would move to
//! another machine.
//!
//! `cargo bench --bench replicas` (env REPLICA_BENCH_SECONDS, default 10 per
//! run; REPLICA_BENCH_ROUNDS, 2). Prints the figures; asserts only that no
//! answer missed an acknowledged write.

mod common;

use std::{
    io::{Read, Write},
    net::TcpStream,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use chrono::{TimeZone, Utc};
use kpi_service::{
    client::bearer,
    embedded_pg::EmbeddedPostgres,
    proto::pb::{self, activity_service_client::ActivityServiceClient},
    testkit::{
        cluster,
        process::{Launch, ServiceProcess},
        records,
    },
};
use tonic::transport::Channel;

const REPS: usize = 50;

type Kpis = pb::kpi_service_client::KpiServiceClient<Channel>;

/// The scorecard request, signed with `key`.
fn signed(key: &str) -> tonic::Request<pb::GetScorecardRequest> {
    let mut request = tonic::Request::new(kpi_service::testkit::org::bench_scorecard_request());
    if let Ok(value) = format!("Bearer {key}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// The team's interactions in the quarter, as `client` answers.
async fn interactions(client: &mut Kpis, key: &str) -> Option<f64> {
    let card = client.get_scorecard(signed(key)).await.ok()?;
    card.into_inner()
        .entries
        .iter()
        .filter_map(|e| e.current.as_ref())
        .find(|v| v.kpi == pb::Kpi::Interactions as i32)
        .and_then(|v| v.value)
}

/// CPU seconds (user + system) of a cluster's processes: the postmaster,
/// its running children, and the children that have exited.
fn cluster_cpu_seconds(pg: &EmbeddedPostgres) -> f64 {
    let Some(postmaster) = pg.running_pid() else {
        return 0.0;
    };
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    // The fields after the command's closing parenthesis: state, ppid, ...
    let fields = |pid: &str| -> Option<Vec<u64>> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (_, rest) = stat.rsplit_once(')')?;
        Some(
            rest.split_whitespace()
                .skip(1)
                .map(|f| f.parse().unwrap_or(0))
                .collect(),
        )
    };
    let mut total = 0u64;
    // ppid, then utime, stime, cutime, cstime at 10..=13.
    if let Some(f) = fields(&postmaster.to_string()) {
        total += f.get(10..14).map_or(0, |t| t.iter().sum());
    }
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            if let Some(f) = fields(&name)
                && f.first() == Some(&u64::from(postmaster))
            {
                total += f.get(10..12).map_or(0, |t| t.iter().sum());
            }
        }
    }
    total as f64 / ticks
}

/// The service's `GET /metrics`, over a plain HTTP/1.1 connection.
fn scrape(service: &ServiceProcess) -> anyhow::Result<String> {
    let address = service.endpoint().trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&address)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

/// The sum of `kpi_reads_total` samples whose labels include `label`.
fn reads(metrics: &str, label: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("kpi_reads_total{") && l.contains(label))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// One run: scorecards per second through `service`, and the CPU seconds
/// per scorecard of the primary's and the replica's PostgreSQL.
async fn run(
    service: &ServiceProcess,
    key: &str,
    clients: usize,
    seconds: u64,
    primary: &EmbeddedPostgres,
    replica: &EmbeddedPostgres,
) -> anyhow::Result<(f64, f64, f64)> {
    let mut channels = Vec::new();
    for _ in 0..4 {
        channels.push(Channel::from_shared(service.endpoint())?.connect().await?);
    }
    let next = Arc::new(AtomicU64::new(0));
    let key = key.to_owned();
    let (p0, r0) = (cluster_cpu_seconds(primary), cluster_cpu_seconds(replica));
    let rate = kpi_service::testkit::load::rate(clients, seconds, move || {
        let channel =
            channels[next.fetch_add(1, Ordering::Relaxed) as usize % channels.len()].clone();
        let request = signed(&key);
        async move { Kpis::new(channel).get_scorecard(request).await.is_ok() }
    })
    .await;
    let calls = (rate * seconds as f64).max(1.0);
    let primary_cpu = (cluster_cpu_seconds(primary) - p0) / calls;
    let replica_cpu = (cluster_cpu_seconds(replica) - r0) / calls;
    Ok((rate, primary_cpu, replica_cpu))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds = common::env_or("REPLICA_BENCH_SECONDS", 10) as u64;
    let rounds = common::env_or("REPLICA_BENCH_ROUNDS", 2).max(1);
    let clients = 32;
    let primary = common::Cluster::start("replicas").await?;
    let alone = common::start_service(&primary, &["--cache-mib", "0"])?;
    let channel = Channel::from_shared(alone.endpoint())?.connect().await?;
    let key = alone.admin_key()?;
    let pushed =
        kpi_service::testkit::org::bench_org_with_demo(channel.clone(), &key, REPS).await?;
    {
        use sqlx::Connection as _;
        let mut admin = sqlx::PgConnection::connect(&primary.url()).await?;
        sqlx::raw_sql("VACUUM ANALYZE").execute(&mut admin).await?;
        sqlx::raw_sql("CHECKPOINT").execute(&mut admin).await?;
    }

    // The standby: a base backup of the loaded primary, streaming from it.
    let replica = {
        let pg = primary.pg.clone();
        tokio::task::spawn_blocking(move || {
            cluster::throwaway_standby("bench-standby", &pg, &[("shared_buffers", "1GB")])
        })
        .await??
    };
    let replica_url = cluster::socket_url(&replica, "kpi");
    let primary_url = primary.url();
    let dir = cluster::watched_dir("bench-replicas-reader")?;
    let reader = ServiceProcess::start(&Launch {
        database_url: Some(&primary_url),
        args: &["--cache-mib", "0", "--read-database-url", &replica_url],
        log_filter: "warn,kpi_service::app=info",
        echo_all: false,
        ..Launch::new(env!("CARGO_BIN_EXE_kpi-service"), &dir)
    })?;

    let start = scrape(&reader)?;
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        without.push(run(&alone, &key, clients, seconds, &primary.pg, &replica).await?);
        with.push(run(&reader, &key, clients, seconds, &primary.pg, &replica).await?);
    }
    let before = scrape(&reader)?;

    // A write every ~10 ms through the other process; after each, the
    // checker asks the replica service, which must count it.
    let mut writer = ActivityServiceClient::with_interceptor(
        Channel::from_shared(alone.endpoint())?.connect().await?,
        bearer(&key)?,
    );
    let mut checker = Kpis::new(Channel::from_shared(reader.endpoint())?.connect().await?);
    let base = interactions(&mut checker, &key).await.unwrap_or(0.0);
    let stop = Arc::new(AtomicBool::new(false));
    let (writes, missed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let write_loop = {
        let (stop, writes, missed) = (stop.clone(), writes.clone(), missed.clone());
        let key = key.clone();
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
                    n -= 1;
                    continue;
                }
                writes.fetch_add(1, Ordering::Relaxed);
                match interactions(&mut checker, &key).await {
                    Some(seen) if seen == base + n as f64 => {}
                    Some(_) => {
                        missed.fetch_add(1, Ordering::Relaxed);
                    }
                    // A failed check is no answer, so no miss; counted by
                    // the rate's failures if it repeats.
                    None => eprintln!("  (a check after write {n} failed)"),
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let (mixed, _, _) = run(&reader, &key, clients, seconds, &primary.pg, &replica).await?;
    stop.store(true, Ordering::Relaxed);
    let _ = write_loop.await;
    let after = scrape(&reader)?;
    let (writes, missed) = (
        writes.load(Ordering::Relaxed),
        missed.load(Ordering::Relaxed),
    );
    anyhow::ensure!(
        missed == 0,
        "{missed} of {writes} answers missed an acknowledged write"
    );
    let routed = |label: &str| reads(&after, label) - reads(&before, label);

    println!();
    println!(
        "replica bench: team of {REPS} reps (4 sub-teams), a quarter, all KPIs, uncached (--cache-mib 0), {} records; {clients} calls in flight, {seconds} s per run, {rounds} rounds (median); primary and replica on the same 2 cores",
        pushed.records
    );
    let line = |label: &str, runs: &[(f64, f64, f64)]| {
        println!(
            "  {label:<28} {:>7.0} scorecards/s; PostgreSQL CPU per scorecard: primary {:.2} ms, replica {:.2} ms",
            median(runs.iter().map(|r| r.0).collect()),
            median(runs.iter().map(|r| r.1).collect()) * 1000.0,
            median(runs.iter().map(|r| r.2).collect()) * 1000.0,
        );
    };
    line("0 replicas:", &without);
    line("1 replica:", &with);
    let steady = |label: &str| reads(&before, label) - reads(&start, label);
    println!(
        "    its reads: {:.0} on the replica (caught up {:.0}, waited {:.0}), {:.0} on the primary",
        steady("target=\"replica\""),
        steady("route=\"caught_up\""),
        steady("route=\"waited\""),
        steady("target=\"primary\""),
    );
    println!(
        "  1 replica, a write every ~10 ms through the other process: {mixed:.0} scorecards/s; {writes} writes, each counted by the next answer; reads: {:.0} on the replica (caught up {:.0}, waited {:.0}), {:.0} on the primary (behind {:.0}, unavailable {:.0})",
        routed("target=\"replica\""),
        routed("route=\"caught_up\""),
        routed("route=\"waited\""),
        routed("target=\"primary\""),
        routed("route=\"behind\""),
        routed("route=\"replica_unavailable\""),
    );
    Ok(())
}
