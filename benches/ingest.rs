//! Ingest throughput through gRPC against a raw PostgreSQL COPY of the same
//! rows into the same table, in one run on one cluster.
//!
//! `cargo bench --bench ingest` (env INGEST_ROWS, default 1,000,000;
//! INGEST_STREAMS, default 4; INGEST_ROUNDS, default 3: each round inserts
//! into emptied tables, then COPYs; the medians are compared). Prints the figures; asserts nothing about
//! speed (the machine may be noisy).

mod common;

use std::time::Instant;

use chrono::{DateTime, TimeDelta, Utc};
use kpi_service::{demo, proto::pb, testkit::records};
use sqlx::{Connection, PgConnection};
use tonic::transport::Channel;

const REPS: usize = 50;
const BATCH: usize = 1000;

struct Row {
    id: String,
    rep: String,
    channel: i32,
    occurred: DateTime<Utc>,
    duration: Option<i32>,
}

fn rows(n: usize) -> impl Iterator<Item = Row> {
    let base = DateTime::parse_from_rfc3339("2025-01-01T00:00:00Z")
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default();
    (0..n).map(move |i| Row {
        id: format!("bench-i{i:09}"),
        rep: format!("rep-{:03}", i % REPS),
        channel: (i % 5) as i32 + 1,
        occurred: base + TimeDelta::seconds((i as i64) * 31),
        duration: (i % 3 != 0).then_some((i % 1800) as i32),
    })
}

fn record(row: Row, updated: DateTime<Utc>) -> pb::ActivityRecord {
    let channel = pb::Channel::try_from(row.channel).unwrap_or(pb::Channel::Call);
    let mut interaction =
        records::interaction(row.id, row.rep, channel, row.occurred).with_updated(updated);
    interaction.duration_seconds = row.duration;
    interaction.record()
}

fn batches(
    n: usize,
    updated: DateTime<Utc>,
) -> impl Iterator<Item = Vec<pb::ActivityRecord>> + Send {
    demo::chunks(rows(n).map(move |r| record(r, updated)), BATCH)
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}

/// COPYs the bench rows into `interactions`; rows per second.
async fn copy_rows(
    conn: &mut PgConnection,
    n: usize,
    updated: DateTime<Utc>,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut copy = conn
        .copy_in_raw(
            "COPY interactions (interaction_id, rep_id, customer_id, channel, occurred_at, \
             duration_seconds, source_updated_at) FROM STDIN",
        )
        .await?;
    let updated_text = updated.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string();
    let mut buffer = String::with_capacity(1 << 20);
    for row in rows(n) {
        let duration = row.duration.map_or("\\N".to_owned(), |d| d.to_string());
        buffer.push_str(&format!(
            "{}\t{}\t\\N\t{}\t{}\t{}\t{}\n",
            row.id,
            row.rep,
            row.channel,
            row.occurred.format("%Y-%m-%d %H:%M:%S+00"),
            duration,
            updated_text
        ));
        if buffer.len() > (1 << 20) {
            copy.send(buffer.as_bytes()).await?;
            buffer.clear();
        }
    }
    copy.send(buffer.as_bytes()).await?;
    let copied = copy.finish().await?;
    Ok(copied as f64 / started.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n = common::env_or("INGEST_ROWS", 1_000_000);
    let streams = common::env_or("INGEST_STREAMS", 4);
    let rounds = common::env_or("INGEST_ROUNDS", 3).max(1);
    let cluster = common::Cluster::start("ingest").await?;
    let service = common::start_service(&cluster, &[])?;
    let channel = Channel::from_shared(service.endpoint())?.connect().await?;
    let key = service.admin_key()?;
    kpi_service::testkit::org::bench_organisation(channel.clone(), &key, 0, REPS).await?;
    let updated = Utc::now() - TimeDelta::days(1);

    let mut conn = PgConnection::connect(&cluster.url()).await?;
    let mut inserts = Vec::new();
    let mut copies = Vec::new();
    let mut replay = None;
    let mut peak_after_insert = 0.0;
    for round in 1..=rounds {
        // Fresh tables each round: the same work every time.
        sqlx::raw_sql("TRUNCATE interactions, kpi_rollups")
            .execute(&mut conn)
            .await?;
        let fresh = demo::push(
            channel.clone(),
            &key,
            batches(n, updated),
            streams,
            &format!("grpc insert {round}/{rounds}"),
        )
        .await?;
        anyhow::ensure!(
            fresh.counts.inserted as usize == n,
            "unexpected counts: {:?}",
            fresh.counts
        );
        inserts.push(fresh.records_per_second());
        peak_after_insert = service.peak_rss_mib();
        if replay.is_none() {
            let again = demo::push(
                channel.clone(),
                &key,
                batches(n, updated),
                streams,
                "grpc replay",
            )
            .await?;
            anyhow::ensure!(
                again.counts.unchanged as usize == n,
                "unexpected counts: {:?}",
                again.counts
            );
            replay = Some(again);
        }
        // Baseline: the same rows, COPY'd into the same (emptied) table
        // with the same indexes, on one connection.
        sqlx::raw_sql("TRUNCATE interactions")
            .execute(&mut conn)
            .await?;
        copies.push(copy_rows(&mut conn, n, updated).await?);
    }
    let peak = service.peak_rss_mib();
    let replay = replay.ok_or_else(|| anyhow::anyhow!("no round ran"))?;
    let (insert, copy) = (median(&inserts), median(&copies));

    println!();
    println!(
        "ingest bench: {n} interactions, batches of {BATCH}, {streams} concurrent streams, {rounds} rounds (median)"
    );
    let each = |rates: &[f64]| {
        rates
            .iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "  gRPC StreamActivities, new rows:    {insert:>9.0} rows/s (rounds: {})",
        each(&inserts)
    );
    println!(
        "  gRPC StreamActivities, replay:      {:>9.0} rows/s ({:.2} s, all unchanged)",
        replay.records_per_second(),
        replay.elapsed.as_secs_f64()
    );
    println!(
        "  PostgreSQL COPY (1 connection):     {copy:>9.0} rows/s (rounds: {})",
        each(&copies)
    );
    println!(
        "  ratio gRPC insert / COPY:           {:>9.2} (per round: {})",
        insert / copy,
        inserts
            .iter()
            .zip(&copies)
            .map(|(i, c)| format!("{:.2}", i / c))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  service peak RSS (VmHWM): {peak_after_insert:.1} MiB after insert, {peak:.1} MiB after replay"
    );
    Ok(())
}
