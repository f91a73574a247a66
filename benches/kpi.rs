//! KPI query latency through gRPC at 1M, 10M, ... interactions (plus
//! proportional customers, deals, feedback and requests), against the same
//! team scorecard computed naively from the raw rows, in one run.
//!
//! The stages are KPI_BENCH_SMALL interactions, ten times that, and so on
//! below KPI_BENCH_LARGE, then KPI_BENCH_LARGE: the defaults (1,000,000 and
//! 10,000,000) measure at 1M and 10M; `KPI_BENCH_LARGE=100000000` at 1M,
//! 10M and 100M (about 50 GB of disk at 100M: the run prints the database's
//! size at every stage). KPI_BENCH_CALLS, default 200. KPI_BENCH_KEEP=1
//! keeps the cluster and the service up at the end, until Ctrl-C, to look
//! into the data (psql, EXPLAIN). KPI_BENCH_STATEMENTS=1 loads
//! pg_stat_statements and prints, per stage, the statements of the team
//! scorecards with their planning and execution times.
//!
//! The service runs with `--cache-mib 0`: every call computes.
//! Prints the figures; asserts nothing about speed.

mod common;

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use kpi_service::{
    client::bearer,
    demo,
    domain::period::{Period, parse_date, parse_zone},
    proto::pb::{self, kpi_service_client::KpiServiceClient},
    store::kpi::{self as store, Source},
    testkit::records::{self, usd},
};
use sqlx::postgres::PgPoolOptions;
use tonic::transport::Channel;

const REPS: usize = 50;
const PODS: usize = 5;

/// SplitMix64: a well-mixed 64-bit hash of `i`.
fn mix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Interaction number `i` of the data set and, every so often, another
/// record type, spread evenly over the year from 2025-07-01.
fn records(from: usize, to: usize, total: usize) -> impl Iterator<Item = pb::ActivityRecord> {
    let base = DateTime::parse_from_rfc3339("2025-07-01T00:00:00Z")
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default();
    let step = 365.0 * 86_400.0 / total as f64;
    let updated = Utc::now() - TimeDelta::days(1);
    (from..to).flat_map(move |i| {
        let at = base + TimeDelta::milliseconds((i as f64 * step * 1000.0) as i64);
        // Every choice from a hash of i, not i itself: the small stage loads
        // every 10th i, and must still have every rep, channel and kind.
        let x = mix(i as u64);
        let rep = format!("rep-{:03}", (x >> 32) as usize % REPS);
        let x = (x & 0xffff_ffff) as usize;
        let channel = pb::Channel::try_from((x % 5) as i32 + 1).unwrap_or(pb::Channel::Call);
        let mut out = vec![
            records::interaction(format!("i{i:09}"), rep.clone(), channel, at)
                .with_duration((x % 1800) as i32)
                .with_updated(updated)
                .record(),
        ];
        if x.is_multiple_of(16) {
            let converted = (x.is_multiple_of(48)).then(|| at + TimeDelta::days(12));
            out.push(
                records::customer(format!("c{i:09}"), rep.clone(), at)
                    .with_converted(converted.filter(|c| *c < Utc::now()))
                    .with_updated(updated)
                    .record(),
            );
        }
        if x.is_multiple_of(20) {
            let stage = if x.is_multiple_of(60) {
                pb::DealStage::Won
            } else {
                pb::DealStage::Lost
            };
            out.push(
                records::deal(
                    format!("d{i:09}"),
                    rep.clone(),
                    stage,
                    usd(1000 + (x % 50_000) as i64, 0),
                    at - TimeDelta::days((x % 90) as i64),
                    Some(at),
                )
                .with_updated(updated)
                .record(),
            );
        }
        if x.is_multiple_of(40) {
            let (kind, score) = if x.is_multiple_of(80) {
                (pb::FeedbackKind::Nps, (x % 11) as i32)
            } else {
                (pb::FeedbackKind::Csat, (x % 5) as i32 + 1)
            };
            out.push(
                records::feedback(format!("f{i:09}"), rep.clone(), kind, score, at)
                    .with_updated(updated)
                    .record(),
            );
        }
        if x.is_multiple_of(30) {
            out.push(
                records::request(format!("r{i:09}"), rep, at)
                    .with_first_response(Some(at + TimeDelta::minutes((x % 300) as i64)))
                    .with_resolved((!x.is_multiple_of(90)).then(|| at + TimeDelta::hours(20)))
                    .with_updated(updated)
                    .record(),
            );
        }
        out
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(index).copied().unwrap_or_default()
}

async fn measure<F, Fut>(calls: usize, mut call: F) -> anyhow::Result<(Duration, Duration)>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    for _ in 0..(calls / 10).clamp(1, 20) {
        call().await?;
    }
    let mut times = Vec::with_capacity(calls);
    for _ in 0..calls {
        let started = Instant::now();
        call().await?;
        times.push(started.elapsed());
    }
    times.sort();
    Ok((percentile(&times, 0.5), percentile(&times, 0.99)))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct Figures {
    team_p50: Duration,
    team_p99: Duration,
    team_kathmandu_p50: Duration,
    rep_p50: Duration,
    rep_p99: Duration,
    series_p50: Duration,
    retention_p50: Duration,
    board_p50: Duration,
    explain_revenue_p50: Duration,
    explain_interactions_p50: Duration,
    naive_p50: Duration,
    /// The team scorecard measured again after the other figures: how far
    /// two measurements of one figure in one stage differ.
    team_again_p50: Duration,
    /// Per team scorecard, rollup blocks: heap hit, heap read, index hit,
    /// index read.
    team_blocks: [f64; 4],
}

/// The rollup partitions' block accesses so far: heap hit, heap read
/// (from the OS), index hit, index read.
async fn rollup_io(pool: &sqlx::PgPool) -> anyhow::Result<[i64; 4]> {
    let (a, b, c, d): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT coalesce(sum(heap_blks_hit), 0)::bigint, coalesce(sum(heap_blks_read), 0)::bigint, \
                coalesce(sum(idx_blks_hit), 0)::bigint, coalesce(sum(idx_blks_read), 0)::bigint \
         FROM pg_statio_user_tables WHERE relname LIKE 'kpi\\_rollups\\_%'",
    )
    .fetch_one(pool)
    .await?;
    Ok([a, b, c, d])
}

/// KPI_BENCH_STATEMENTS=1: the statements of the team scorecards
/// (pg_stat_statements since its reset), the costliest first: calls, mean
/// planning and execution time, shared blocks hit and read per call. The
/// service's own background statements in that time (the key reload every
/// 500 ms) are listed too, with their few calls. With the extension loaded
/// and planning tracked, a run's figures are not comparable with a run
/// without it.
async fn print_statements(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    type Row = (i64, f64, f64, f64, f64, String);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT calls, mean_plan_time, mean_exec_time, \
                shared_blks_hit::float8 / calls, shared_blks_read::float8 / calls, \
                regexp_replace(left(query, 400), '\\s+', ' ', 'g') \
         FROM pg_stat_statements WHERE calls > 0 AND query NOT LIKE '%pg_stat%' \
         ORDER BY total_plan_time + total_exec_time DESC LIMIT 12",
    )
    .fetch_all(pool)
    .await?;
    for (calls, plan, exec, hit, read, query) in rows {
        println!(
            "      {calls:>5} x plan {plan:.3} ms, exec {exec:.3} ms, blocks {hit:.0} hit {read:.1} read: {}",
            query.chars().take(160).collect::<String>()
        );
    }
    Ok(())
}

/// The machine's memory (/proc/meminfo): available and in the page
/// cache, in GiB; empty where there is no /proc.
fn memory() -> String {
    let info = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let gib = |name: &str| {
        info.lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .map_or(f64::NAN, |kib| kib / 1048576.0)
    };
    format!(
        "{:.1} GiB available, {:.1} GiB page cache",
        gib("MemAvailable:"),
        gib("Cached:")
    )
}

/// Heap and index sizes of the rollup partitions and the customers, in MiB.
async fn relation_sizes(pool: &sqlx::PgPool) -> anyhow::Result<String> {
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT relname::text, pg_relation_size(relid), pg_indexes_size(relid) \
         FROM pg_stat_user_tables \
         WHERE relname LIKE 'kpi\\_rollups\\_%' OR relname = 'customers' ORDER BY relname",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|(name, heap, index)| {
            format!(
                "{name} {:.0}+{:.0}",
                *heap as f64 / 1048576.0,
                *index as f64 / 1048576.0
            )
        })
        .collect::<Vec<_>>()
        .join(", "))
}

fn period(zone: &str) -> Option<pb::Period> {
    Some(pb::Period {
        start_date: "2026-04-01".into(),
        end_date: "2026-06-30".into(),
        time_zone: zone.into(),
        ..Default::default()
    })
}

fn subject(team: bool, id: &str) -> Option<pb::Subject> {
    Some(pb::Subject {
        subject: Some(if team {
            pb::subject::Subject::TeamId(id.into())
        } else {
            pb::subject::Subject::RepId(id.into())
        }),
    })
}

/// Measures in the steady state autovacuum keeps a live system in: a bulk
/// load leaves every rollup row with a chain of dead versions. Then a
/// checkpoint, so that writing out the load's dirty pages does not run
/// during the measurements.
async fn settle(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    sqlx::raw_sql("VACUUM ANALYZE").execute(pool).await?;
    sqlx::raw_sql("CHECKPOINT").execute(pool).await?;
    Ok(())
}

async fn measure_all(
    kpi: &KpiServiceClient<
        tonic::service::interceptor::InterceptedService<
            Channel,
            impl tonic::service::Interceptor + Clone,
        >,
    >,
    pool: &sqlx::PgPool,
    calls: usize,
    statements: bool,
) -> anyhow::Result<Figures> {
    let scorecard = |team: bool, id: &'static str, zone: &'static str| {
        let client = kpi.clone();
        move || {
            let mut client = client.clone();
            async move {
                client
                    .get_scorecard(pb::GetScorecardRequest {
                        subject: subject(team, id),
                        period: period(zone),
                        kpis: vec![],
                    })
                    .await?;
                Ok(())
            }
        }
    };
    // The rollups' block accesses during the team scorecards (PostgreSQL
    // reports a backend's I/O counts within a second of its going idle;
    // autovacuum's count too, when it runs meanwhile).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let io_before = rollup_io(pool).await?;
    if statements {
        sqlx::raw_sql("SELECT pg_stat_statements_reset()")
            .execute(pool)
            .await?;
    }
    let (team_p50, team_p99) = measure(calls, scorecard(true, "bench", "Europe/Berlin")).await?;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let io_after = rollup_io(pool).await?;
    if statements {
        print_statements(pool).await?;
    }
    let team_calls = (calls + (calls / 10).clamp(1, 20)) as f64;
    let team_blocks = [0, 1, 2, 3].map(|i| (io_after[i] - io_before[i]) as f64 / team_calls);
    let (team_kathmandu_p50, _) =
        measure(calls, scorecard(true, "bench", "Asia/Kathmandu")).await?;
    let (rep_p50, rep_p99) = measure(calls, scorecard(false, "rep-007", "Europe/Berlin")).await?;
    let client = kpi.clone();
    let (series_p50, _) = measure(calls / 4, || {
        let mut client = client.clone();
        async move {
            client
                .get_kpi_series(pb::GetKpiSeriesRequest {
                    subject: subject(true, "bench"),
                    kpi: pb::Kpi::WinRate as i32,
                    period: Some(pb::Period {
                        start_date: "2025-07-01".into(),
                        end_date: "2026-06-30".into(),
                        time_zone: "Europe/Berlin".into(),
                        ..Default::default()
                    }),
                    granularity: pb::Granularity::Month as i32,
                })
                .await?;
            Ok(())
        }
    })
    .await?;
    // Retention reads the customers active at the period's start (and the
    // previous period's): everything converted or churned before it.
    let (retention_p50, _) = measure(calls / 4, || {
        let mut client = client.clone();
        async move {
            client
                .get_scorecard(pb::GetScorecardRequest {
                    subject: subject(true, "bench"),
                    period: period("Europe/Berlin"),
                    kpis: vec![pb::Kpi::RetentionRate as i32],
                })
                .await?;
            Ok(())
        }
    })
    .await?;
    let (board_p50, _) = measure(calls / 4, || {
        let mut client = client.clone();
        async move {
            client
                .get_leaderboard(pb::GetLeaderboardRequest {
                    kpi: pb::Kpi::Revenue as i32,
                    team_id: "bench".into(),
                    period: period("Europe/Berlin"),
                    min_sample: None,
                    limit: 0,
                })
                .await?;
            Ok(())
        }
    })
    .await?;

    // ExplainKpi's first page (50 records) of the team's quarter.
    let explain = |kpi: pb::Kpi| {
        let client = client.clone();
        move || {
            let mut client = client.clone();
            async move {
                let page = client
                    .explain_kpi(pb::ExplainKpiRequest {
                        subject: subject(true, "bench"),
                        kpi: kpi as i32,
                        period: period("Europe/Berlin"),
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                anyhow::ensure!(page.contributions.len() == 50, "a short first page");
                Ok(())
            }
        }
    };
    let (explain_revenue_p50, _) = measure(calls / 4, explain(pb::Kpi::Revenue)).await?;
    let (explain_interactions_p50, _) = measure(calls / 4, explain(pb::Kpi::Interactions)).await?;
    let (team_again_p50, _) = measure(calls, scorecard(true, "bench", "Europe/Berlin")).await?;

    // The naive baseline: the same two tallies (period and previous
    // period, all KPIs) aggregated from the raw rows in SQL.
    let zone = parse_zone("Europe/Berlin").map_err(anyhow::Error::msg)?;
    let q = Period::new(
        parse_date("2026-04-01").map_err(anyhow::Error::msg)?,
        parse_date("2026-06-30").map_err(anyhow::Error::msg)?,
        zone,
    )
    .map_err(anyhow::Error::msg)?;
    let team = kpi_service::store::directory::membership(pool, "bench")
        .await?
        .ok_or_else(|| anyhow::anyhow!("no bench team"))?;
    let queries: Vec<_> = [q, q.previous()]
        .iter()
        .map(|p| kpi_service::domain::tally::team_query(&team, p.start_time(), p.end_time()))
        .collect();
    // Each call takes seconds at 10M, a minute at 100M: a few suffice.
    let naive_calls = (calls / 40).max(5);
    let (naive_p50, _) = measure(naive_calls, || {
        let queries = queries.clone();
        async move {
            store::tallies(pool, &queries, Source::Raw, "USD").await?;
            Ok(())
        }
    })
    .await?;
    Ok(Figures {
        team_again_p50,
        team_p50,
        team_p99,
        team_kathmandu_p50,
        rep_p50,
        rep_p99,
        series_p50,
        retention_p50,
        board_p50,
        explain_revenue_p50,
        explain_interactions_p50,
        naive_p50,
        team_blocks,
    })
}

fn report(label: &str, f: &Figures) {
    println!("  {label}:");
    println!(
        "    team scorecard (50 reps, quarter, all KPIs, Europe/Berlin): p50 {:.2} ms, p99 {:.2} ms",
        ms(f.team_p50),
        ms(f.team_p99)
    );
    println!(
        "      measured again after the other figures:                  p50 {:.2} ms",
        ms(f.team_again_p50)
    );
    println!(
        "      rollup blocks per team scorecard: heap {:.0} hit, {:.1} read; index {:.0} hit, {:.1} read",
        f.team_blocks[0], f.team_blocks[1], f.team_blocks[2], f.team_blocks[3]
    );
    println!(
        "    team scorecard, Asia/Kathmandu (raw sub-hour edges):       p50 {:.2} ms",
        ms(f.team_kathmandu_p50)
    );
    println!(
        "    rep scorecard:                                             p50 {:.2} ms, p99 {:.2} ms",
        ms(f.rep_p50),
        ms(f.rep_p99)
    );
    println!(
        "    12-month MONTH series (team, win rate):                    p50 {:.2} ms",
        ms(f.series_p50)
    );
    println!(
        "    team RETENTION_RATE alone (quarter, Europe/Berlin):        p50 {:.2} ms",
        ms(f.retention_p50)
    );
    println!(
        "    50-rep leaderboard (revenue, quarter):                     p50 {:.2} ms",
        ms(f.board_p50)
    );
    println!(
        "    ExplainKpi first page (team, quarter, REVENUE):            p50 {:.2} ms",
        ms(f.explain_revenue_p50)
    );
    println!(
        "    ExplainKpi first page (team, quarter, INTERACTIONS):       p50 {:.2} ms",
        ms(f.explain_interactions_p50)
    );
    println!(
        "    naive team scorecard from raw rows (SQL, no gRPC):         p50 {:.2} ms ({:.0}x the rollups)",
        ms(f.naive_p50),
        ms(f.naive_p50) / ms(f.team_p50)
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let small = common::env_or("KPI_BENCH_SMALL", 1_000_000);
    let large = common::env_or("KPI_BENCH_LARGE", 10_000_000);
    let calls = common::env_or("KPI_BENCH_CALLS", 200);
    let statements = std::env::var_os("KPI_BENCH_STATEMENTS").is_some();
    let cluster = if statements {
        common::Cluster::start_with(
            "kpi",
            &[
                ("shared_preload_libraries", "pg_stat_statements"),
                ("pg_stat_statements.track_planning", "on"),
            ],
        )
        .await?
    } else {
        common::Cluster::start("kpi").await?
    };
    // Without the result cache: this bench measures computing the answers
    // (the cache bench measures answering repeated calls from memory).
    let service = common::start_service(&cluster, &["--cache-mib", "0"])?;
    let key = service.admin_key()?;
    let channel = Channel::from_shared(service.endpoint())?.connect().await?;
    kpi_service::testkit::org::bench_organisation(channel.clone(), &key, PODS, REPS).await?;
    let kpi = KpiServiceClient::with_interceptor(channel.clone(), bearer(&key)?);
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(&cluster.url())
        .await?;
    if statements {
        sqlx::raw_sql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .execute(&pool)
            .await?;
    }

    // The data set is `large` interactions spread over a year. Each stage
    // loads every (large/size)-th of them not loaded yet, so that every
    // stage covers the same year, at a higher density than the one before.
    let sizes = stage_sizes(small, large);
    let mut ratios: Vec<usize> = Vec::new();
    let mut stages = Vec::new();
    for (n, &size) in sizes.iter().enumerate() {
        let ratio = (large / size.max(1)).max(1);
        let earlier = ratios.clone();
        let indexes = (0..large).filter(move |i| {
            i.is_multiple_of(ratio) && !earlier.iter().any(|r| i.is_multiple_of(*r))
        });
        ratios.push(ratio);
        let loaded = demo::push(
            channel.clone(),
            &key,
            batch_indexes(indexes, large),
            4,
            &format!("load {}", n + 1),
        )
        .await?;
        println!(
            "stage {}: loaded {} records in {:.1} s: {:.0} records/s",
            n + 1,
            loaded.records,
            loaded.elapsed.as_secs_f64(),
            loaded.records_per_second()
        );
        let settle_started = Instant::now();
        settle(&pool).await?;
        let interactions: i64 = sqlx::query_scalar("SELECT count(*) FROM interactions")
            .fetch_one(&pool)
            .await?;
        let bytes: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())")
            .fetch_one(&pool)
            .await?;
        println!(
            "stage {}: {interactions} interactions, database {:.1} GiB, VACUUM ANALYZE {:.1} s",
            n + 1,
            bytes as f64 / (1u64 << 30) as f64,
            settle_started.elapsed().as_secs_f64()
        );
        println!(
            "stage {}: heap+index MiB: {}; machine: {}",
            n + 1,
            relation_sizes(&pool).await?,
            memory()
        );
        let figures = measure_all(&kpi, &pool, calls, statements).await?;
        report(&format!("{interactions} interactions"), &figures);
        stages.push((interactions, bytes, figures));
    }

    let heavy = measure_heavy_series(&kpi, &service, calls).await?;

    let rollups: i64 = sqlx::query_scalar("SELECT count(*) FROM kpi_rollups")
        .fetch_one(&pool)
        .await?;
    println!();
    println!(
        "kpi bench: {REPS} reps in {PODS} pods under one team; {calls} calls per figure; rollup rows: {rollups}"
    );
    for (interactions, bytes, figures) in &stages {
        report(
            &format!(
                "{interactions} interactions (database {:.1} GiB)",
                *bytes as f64 / (1u64 << 30) as f64
            ),
            figures,
        );
    }
    if let Some((first, _, base)) = stages.first() {
        for (interactions, _, figures) in stages.iter().skip(1) {
            println!(
                "  growth {interactions} / {first}: team scorecard p50 x{:.2} (measured again: x{:.2}), p99 x{:.2}; series x{:.2}; leaderboard x{:.2}; retention x{:.2}",
                ms(figures.team_p50) / ms(base.team_p50),
                ms(figures.team_again_p50) / ms(base.team_again_p50),
                ms(figures.team_p99) / ms(base.team_p99),
                ms(figures.series_p50) / ms(base.series_p50),
                ms(figures.board_p50) / ms(base.board_p50),
                ms(figures.retention_p50) / ms(base.retention_p50),
            );
        }
    }
    println!(
        "  at {large}: 10-year DAY series (team, calls, Europe/Berlin, 3,653 points): p50 {:.2} ms, p99 {:.2} ms",
        ms(heavy.p50),
        ms(heavy.p99)
    );
    println!(
        "    1-year DAY series over the data's year (365 active days):      p50 {:.2} ms",
        ms(heavy.dense_p50)
    );
    println!(
        "    8 at once, {} rounds: peak RSS {:.1} MiB (RSS before {:.1} MiB, after {:.1} MiB: {:+.1} MiB)",
        HEAVY_ROUNDS,
        heavy.peak_mib,
        heavy.before_mib,
        heavy.after_mib,
        heavy.after_mib - heavy.before_mib
    );
    println!(
        "  service peak RSS over the whole run (VmHWM): {:.1} MiB",
        service.peak_rss_mib()
    );
    if std::env::var_os("KPI_BENCH_KEEP").is_some() {
        println!(
            "KPI_BENCH_KEEP: the cluster and the service stay up until Ctrl-C; database {}, service {}",
            cluster.url(),
            service.endpoint()
        );
        tokio::signal::ctrl_c().await?;
    }
    Ok(())
}

/// Rounds of 8 concurrent 10-year series for the memory figure.
const HEAVY_ROUNDS: usize = 3;

struct Heavy {
    p50: Duration,
    p99: Duration,
    dense_p50: Duration,
    before_mib: f64,
    peak_mib: f64,
    after_mib: f64,
}

/// The 10-year DAY series: latency one at a time, then the service's
/// memory with 8 at once (peak reset first), and its RSS a moment after.
async fn measure_heavy_series(
    kpi: &KpiServiceClient<
        tonic::service::interceptor::InterceptedService<
            Channel,
            impl tonic::service::Interceptor + Clone + Send + 'static,
        >,
    >,
    service: &kpi_service::testkit::process::ServiceProcess,
    calls: usize,
) -> anyhow::Result<Heavy> {
    let daily = |client: &KpiServiceClient<_>, start: &'static str, points: usize| {
        let mut client = client.clone();
        async move {
            let answer = client
                .get_kpi_series(pb::GetKpiSeriesRequest {
                    subject: subject(true, "bench"),
                    kpi: pb::Kpi::Calls as i32,
                    period: Some(pb::Period {
                        start_date: start.into(),
                        end_date: "2026-06-30".into(),
                        time_zone: "Europe/Berlin".into(),
                        ..Default::default()
                    }),
                    granularity: pb::Granularity::Day as i32,
                })
                .await?
                .into_inner();
            anyhow::ensure!(
                answer.points.len() == points,
                "{} points",
                answer.points.len()
            );
            Ok(())
        }
    };
    let series = |client: &KpiServiceClient<_>| daily(client, "2016-07-01", 3652);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before_mib = service.rss_mib();
    let (p50, p99) = measure((calls / 10).max(10), || series(kpi)).await?;
    // The year the data covers, every day of it active: what each year of
    // a long series costs when every year has activity.
    let (dense_p50, _) = measure((calls / 10).max(10), || daily(kpi, "2025-07-01", 365)).await?;
    service.reset_peak_rss()?;
    for _ in 0..HEAVY_ROUNDS {
        let round: Vec<_> = (0..8).map(|_| series(kpi)).collect();
        for result in futures::future::join_all(round).await {
            result?;
        }
    }
    let peak_mib = service.peak_rss_mib();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after_mib = service.rss_mib();
    Ok(Heavy {
        p50,
        p99,
        dense_p50,
        before_mib,
        peak_mib,
        after_mib,
    })
}

/// Batches of the records of the given interaction numbers.
fn batch_indexes(
    indexes: impl Iterator<Item = usize> + Send,
    total: usize,
) -> impl Iterator<Item = Vec<pb::ActivityRecord>> + Send {
    demo::chunks(indexes.flat_map(move |i| records(i, i + 1, total)), 1000)
}

/// `small`, ten times that, and so on while below `large`, then `large`.
fn stage_sizes(small: usize, large: usize) -> Vec<usize> {
    let mut sizes = Vec::new();
    let mut size = small.max(1);
    while size < large {
        sizes.push(size);
        size = size.saturating_mul(10);
    }
    sizes.push(large);
    sizes
}
