//! `kpi-service import` of an NDJSON file against the same records pushed
//! by `demo`-style streams, on one service and cluster, and the importer's
//! peak memory.
//!
//! `cargo bench --bench import` (env IMPORT_LINES, default 1,000,000;
//! IMPORT_STREAMS, default 4; IMPORT_ROUNDS, default 1: each round pushes
//! into emptied tables, then imports into emptied tables). Prints the
//! figures; asserts only that every record was inserted both ways.

mod common;

use std::{
    io::{BufWriter, Read as _, Write as _},
    process::{Command, Stdio},
    time::Instant,
};

use chrono::{NaiveDate, TimeZone, Utc};
use kpi_service::{
    config::{ClientOptions, DemoOptions},
    demo,
    proto::pb,
};
use sqlx::{Connection, PgConnection};
use tonic::transport::Channel;

const REPS: usize = 100;

fn options() -> DemoOptions {
    DemoOptions {
        client: ClientOptions::default(),
        seed: 11,
        reps: REPS,
        days: 730,
        end_date: NaiveDate::from_ymd_opt(2026, 6, 30),
        interactions_per_day: 20.0,
        concurrency: 4,
        batch_size: 1000,
    }
}

/// The first `n` records the demo generator makes for the bench's reps.
fn records(n: usize) -> impl Iterator<Item = pb::ActivityRecord> + Send {
    let options = options();
    let end = Utc
        .with_ymd_and_hms(2026, 6, 30, 23, 0, 0)
        .single()
        .unwrap_or_else(Utc::now);
    let (start, end) = demo::span(&options, end);
    demo::batches(&options, start, end).flatten().take(n)
}

async fn empty_activity(conn: &mut PgConnection) -> anyhow::Result<()> {
    sqlx::raw_sql(
        "TRUNCATE customers, interactions, deals, feedback, customer_requests, kpi_rollups",
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Runs the importer binary; its summary line, wall time and peak RSS.
fn import(
    endpoint: &str,
    key: &str,
    file: &str,
    streams: usize,
) -> anyhow::Result<(String, f64, f64)> {
    let rejects = std::env::temp_dir().join("kpi-bench-import-rejects.ndjson");
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kpi-service"))
        .args([
            "import",
            "--target",
            endpoint,
            "--key",
            key,
            "--concurrency",
        ])
        .arg(streams.to_string())
        .arg("--rejects")
        .arg(&rejects)
        .arg(file)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut summary = String::new();
    if let Some(mut out) = child.stdout.take() {
        out.read_to_string(&mut summary)?;
    }
    let pid = i32::try_from(child.id())?;
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it and reaps the
    // child, which `child` does not wait for afterwards.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our child; status and usage are valid for writes.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(reaped == pid, "wait4 failed");
    anyhow::ensure!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the import failed: {summary}"
    );
    // ru_maxrss is in KiB on Linux.
    Ok((summary, seconds, usage.ru_maxrss as f64 / 1024.0))
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n = common::env_or("IMPORT_LINES", 1_000_000);
    let streams = common::env_or("IMPORT_STREAMS", 4);
    let rounds = common::env_or("IMPORT_ROUNDS", 1).max(1);
    let cluster = common::Cluster::start("import").await?;
    let service = common::start_service(&cluster, &[])?;
    let channel = Channel::from_shared(service.endpoint())?.connect().await?;
    let key = service.admin_key()?;
    kpi_service::testkit::org::bench_organisation(channel.clone(), &key, 4, REPS).await?;

    let path = std::env::temp_dir().join("kpi-bench-import.ndjson");
    let written = Instant::now();
    let mut out = BufWriter::new(std::fs::File::create(&path)?);
    let mut lines = 0usize;
    for record in records(n) {
        serde_json::to_writer(&mut out, &record)?;
        out.write_all(b"\n")?;
        lines += 1;
    }
    out.flush()?;
    drop(out);
    let bytes = std::fs::metadata(&path)?.len();
    eprintln!(
        "wrote {lines} lines ({:.0} MiB) in {:.1} s",
        bytes as f64 / 1048576.0,
        written.elapsed().as_secs_f64()
    );
    let file = path.display().to_string();

    let mut conn = PgConnection::connect(&cluster.url()).await?;
    let (mut pushes, mut imports, mut peaks) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        empty_activity(&mut conn).await?;
        let pushed = demo::push(
            channel.clone(),
            &key,
            demo::chunks(records(n), 1000),
            streams,
            &format!("demo-style push {round}/{rounds}"),
        )
        .await?;
        anyhow::ensure!(
            pushed.counts.inserted as usize == lines,
            "unexpected push counts: {:?}",
            pushed.counts
        );
        pushes.push(pushed.records_per_second());

        empty_activity(&mut conn).await?;
        let (summary, seconds, peak) = import(&service.endpoint(), &key, &file, streams)?;
        anyhow::ensure!(
            summary.contains(&format!("inserted {lines},")),
            "unexpected import summary: {summary}"
        );
        imports.push(lines as f64 / seconds);
        peaks.push(peak);
    }
    let _ = std::fs::remove_file(&path);

    let each = |values: &[f64]| {
        values
            .iter()
            .map(|v| format!("{v:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (push, import) = (median(&pushes), median(&imports));
    println!();
    println!(
        "import bench: {lines} NDJSON lines ({:.0} MiB, the demo generator's mix of record types), {streams} streams, {rounds} round(s), median",
        bytes as f64 / 1048576.0
    );
    println!(
        "  demo-style push (records in memory):   {push:>9.0} records/s (rounds: {})",
        each(&pushes)
    );
    println!(
        "  kpi-service import (file, process):    {import:>9.0} records/s (rounds: {})",
        each(&imports)
    );
    println!(
        "  ratio import / push:                   {:>9.2}",
        import / push
    );
    println!(
        "  importer peak RSS (ru_maxrss):         {:>9.1} MiB (rounds: {})",
        peaks.iter().copied().fold(0.0, f64::max),
        peaks
            .iter()
            .map(|p| format!("{p:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  service peak RSS (VmHWM):              {:>9.1} MiB",
        service.peak_rss_mib()
    );
    Ok(())
}
