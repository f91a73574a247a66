//! Prometheus metrics: what the service measures, under which names, and
//! the exposition `GET /metrics` answers. Recorded through the `metrics`
//! facade, rendered by `metrics-exporter-prometheus` (no hand-written
//! exposition).
//!
//! Names follow the Prometheus conventions: a `kpi_` prefix, base units
//! (`_seconds`), `_total` for counters, and labels with a bounded set of
//! values: a method label is one of the API's methods (anything else is
//! `other`), never an id, a key, a team or a rep.

use std::{collections::HashMap, sync::OnceLock, time::Duration};

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tonic::Code;

use crate::domain::activity::Counts;

/// Latency buckets, in seconds: 0.5 ms to 30 s.
const SECONDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process's recorder, once (later calls return the same
/// handle; in-process test servers share it). `None` if another recorder
/// was installed first: then nothing is recorded and `/metrics` says so.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(SECONDS)
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            describe();
            gauge!("kpi_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            Some(handle)
        })
        .clone()
}

/// The exposition, in the Prometheus text format.
pub fn render() -> Option<String> {
    let handle = install()?;
    // Histograms are summarised on upkeep; a scrape is a good moment.
    handle.run_upkeep();
    Some(handle.render())
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "kpi_rpc_requests_total",
        "Calls, by service, method and the gRPC status code they ended with (a stream's trailers; CANCELLED when the caller went away first; Connect JSON calls included)."
    );
    describe_histogram!(
        "kpi_rpc_duration_seconds",
        Unit::Seconds,
        "Time to the end of the answer (for a stream: its whole life), by service, method and the code it ended with."
    );
    describe_counter!(
        "kpi_ingest_records_total",
        "Records in committed batches, by record type and outcome (inserted, updated, unchanged, stale, deleted)."
    );
    describe_counter!(
        "kpi_ingest_batches_total",
        "Batches, by outcome: committed, rejected (invalid records), failed (database)."
    );
    describe_histogram!(
        "kpi_query_duration_seconds",
        Unit::Seconds,
        "KPI tally queries, by source: rollup (daily and coarser sums) or raw (records)."
    );
    describe_counter!(
        "kpi_cache_lookups_total",
        "Result cache lookups, by result: hit or miss."
    );
    describe_gauge!(
        "kpi_watches_open",
        "Open WatchScorecard and WatchLeaderboard calls."
    );
    describe_counter!(
        "kpi_change_feed_events_total",
        "Change-feed events, by kind: change (a notification), and what makes watches recompute everything: reconnected (the listener lost its connection), lagged (a subscriber fell behind), unparsed (a notification it could not read)."
    );
    describe_histogram!(
        "kpi_change_feed_lag_seconds",
        Unit::Seconds,
        "From a change noted in its write transaction (the database's clock, just before commit) to this process hearing its notification (this process's clock: skew between the two machines adds to it)."
    );
    describe_gauge!(
        "kpi_db_pool_connections",
        "Database pool connections, by state: idle or in_use."
    );
    describe_gauge!("kpi_db_pool_max_connections", "The pool's maximum size.");
    describe_histogram!(
        "kpi_db_pool_acquire_duration_seconds",
        Unit::Seconds,
        "Time to acquire a pool connection, sampled once a second (a failed or timed-out acquire counts with the time it took)."
    );
    describe_gauge!(
        "kpi_database_up",
        "1 while the database answers the health probe, else 0."
    );
    describe_counter!(
        "kpi_embedded_postgres_restarts_total",
        "Times the embedded PostgreSQL was found dead and started again."
    );
    describe_counter!(
        "kpi_reads_total",
        "KPI reads that needed the database, by target (replica or primary) and route: caught_up, waited (the replica replayed the primary's position within the wait), behind (none did: primary), replica_unavailable, no_position (the primary's WAL position could not be read). Only with --read-database-url."
    );
    describe_histogram!(
        "kpi_read_routing_duration_seconds",
        Unit::Seconds,
        "Time spent choosing where a read runs (the primary's WAL position, the replicas' replay positions, the wait), by target."
    );
    describe_gauge!("kpi_build_info", "1, labelled with the service's version.");
}

/// The labels of one of the API's methods (metrics and span names).
#[derive(Debug)]
pub(crate) struct MethodLabels {
    pub service: String,
    pub method: String,
    /// `service/method`, the span name.
    pub name: String,
}

impl MethodLabels {
    fn new(service: &str, method: &str) -> Self {
        Self {
            service: service.to_owned(),
            method: method.to_owned(),
            name: format!("{service}/{method}"),
        }
    }
}

/// The labels of a request path: one of the API's methods, else
/// `other/other`, so hostile paths cannot grow the number of series (or of
/// span names). Looked up once per call, without allocating.
pub(crate) fn method_labels(path: &str) -> &'static MethodLabels {
    static KNOWN: OnceLock<HashMap<String, MethodLabels>> = OnceLock::new();
    static OTHER: OnceLock<MethodLabels> = OnceLock::new();
    let known = KNOWN.get_or_init(|| {
        let mut known = HashMap::new();
        for method in crate::proto::methods() {
            if let Some((service, name)) = method.path.trim_start_matches('/').split_once('/') {
                let labels = MethodLabels::new(service, name);
                known.insert(method.path.clone(), labels);
            }
        }
        for (service, method) in [
            ("grpc.health.v1.Health", "Check"),
            ("grpc.health.v1.Health", "Watch"),
            (
                "grpc.reflection.v1.ServerReflection",
                "ServerReflectionInfo",
            ),
            (
                "grpc.reflection.v1alpha.ServerReflection",
                "ServerReflectionInfo",
            ),
        ] {
            known.insert(
                format!("/{service}/{method}"),
                MethodLabels::new(service, method),
            );
        }
        known
    });
    known
        .get(path)
        .unwrap_or_else(|| OTHER.get_or_init(|| MethodLabels::new("other", "other")))
}

/// The Prometheus label of a gRPC code: its canonical name.
fn code_label(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// A call answered.
pub(crate) fn rpc(labels: &'static MethodLabels, code: Code, elapsed: Duration) {
    let (service, method) = (labels.service.as_str(), labels.method.as_str());
    let code = code_label(code);
    counter!("kpi_rpc_requests_total", "service" => service, "method" => method, "code" => code)
        .increment(1);
    histogram!("kpi_rpc_duration_seconds", "service" => service, "method" => method, "code" => code)
        .record(elapsed.as_secs_f64());
}

/// A committed batch's records of one type.
pub fn ingested(kind: &'static str, counts: &Counts) {
    for (outcome, n) in counts.by_outcome() {
        if n > 0 {
            counter!("kpi_ingest_records_total", "type" => kind, "outcome" => outcome).increment(n);
        }
    }
}

/// A batch's end: committed, rejected or failed.
pub fn batch(outcome: &'static str) {
    counter!("kpi_ingest_batches_total", "outcome" => outcome).increment(1);
}

/// One tally query, from rollups or raw records.
pub fn kpi_query(source: &'static str, elapsed: Duration) {
    histogram!("kpi_query_duration_seconds", "source" => source).record(elapsed.as_secs_f64());
}

/// A result cache lookup.
pub fn cache_lookup(hit: bool) {
    counter!("kpi_cache_lookups_total", "result" => if hit { "hit" } else { "miss" }).increment(1);
}

/// Watches open now.
pub fn watches_open(open: usize) {
    gauge!("kpi_watches_open").set(open as f64);
}

/// A change notification (or a resync) received.
pub fn change_feed(kind: &'static str) {
    counter!("kpi_change_feed_events_total", "kind" => kind).increment(1);
}

/// From a change's note in its transaction (the database's clock) to this
/// process hearing it.
pub fn change_feed_lag(lag: Duration) {
    histogram!("kpi_change_feed_lag_seconds").record(lag.as_secs_f64());
}

/// The pool as sampled now, and what acquiring a connection took.
pub fn pool(size: u32, idle: usize, max: u32, acquire: Duration) {
    let idle = idle as f64;
    gauge!("kpi_db_pool_connections", "state" => "idle").set(idle);
    gauge!("kpi_db_pool_connections", "state" => "in_use").set((f64::from(size) - idle).max(0.0));
    gauge!("kpi_db_pool_max_connections").set(f64::from(max));
    histogram!("kpi_db_pool_acquire_duration_seconds").record(acquire.as_secs_f64());
}

/// Whether the database answers.
pub fn database_up(up: bool) {
    gauge!("kpi_database_up").set(if up { 1.0 } else { 0.0 });
}

/// Where a KPI read went, and what choosing took.
pub fn read_routed(route: &'static str, replica: bool, elapsed: Duration) {
    let target = if replica { "replica" } else { "primary" };
    counter!("kpi_reads_total", "target" => target, "route" => route).increment(1);
    histogram!("kpi_read_routing_duration_seconds", "target" => target)
        .record(elapsed.as_secs_f64());
}

/// The embedded PostgreSQL was started again.
pub fn embedded_restarted() {
    counter!("kpi_embedded_postgres_restarts_total").increment(1);
}

/// Once a second until `stop`: samples the pool and the open watches, and
/// summarises the histograms (the recorder keeps every sample until then,
/// so this bounds its memory whether or not anyone scrapes).
pub async fn sample_until(
    pool: sqlx::PgPool,
    open_watches: impl Fn() -> usize + Send + 'static,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let max = pool.options().get_max_connections();
    loop {
        // The pool as callers find it, before this sampler takes a
        // connection itself.
        let (size, idle) = (pool.size(), pool.num_idle());
        let started = std::time::Instant::now();
        tokio::select! {
            acquired = tokio::time::timeout(Duration::from_secs(5), pool.acquire()) => drop(acquired),
            _ = stop.changed() => return,
        }
        self::pool(size, idle, max, started.elapsed());
        watches_open(open_watches());
        if let Some(handle) = install() {
            handle.run_upkeep();
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_apis_methods_are_labels() {
        let labels = |path| {
            let l = method_labels(path);
            (l.service.as_str(), l.method.as_str(), l.name.as_str())
        };
        assert_eq!(
            labels("/kpi.v1.KpiService/GetScorecard"),
            (
                "kpi.v1.KpiService",
                "GetScorecard",
                "kpi.v1.KpiService/GetScorecard"
            )
        );
        assert_eq!(
            labels("/grpc.health.v1.Health/Check"),
            (
                "grpc.health.v1.Health",
                "Check",
                "grpc.health.v1.Health/Check"
            )
        );
        assert_eq!(
            labels("/kpi.v1.KpiService/rep-0042"),
            ("other", "other", "other/other")
        );
        assert_eq!(code_label(Code::InvalidArgument), "INVALID_ARGUMENT");
    }
}
