//! What the benches share, on top of `kpi_service::testkit`: a throwaway
//! PostgreSQL cluster with durable defaults and room for a 10M-row load,
//! and the service binary running against it as its own process.

use std::path::PathBuf;

use kpi_service::{
    embedded_pg::EmbeddedPostgres,
    testkit::{
        cluster::{self, Durability},
        process::{Launch, ServiceProcess},
    },
};

/// A numeric setting from the environment, or `default`.
pub fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub struct Cluster {
    pub pg: EmbeddedPostgres,
    data_dir: PathBuf,
}

impl Cluster {
    /// A throwaway cluster with PostgreSQL's defaults (durable commits),
    /// large buffers and a `kpi` database; gone when the bench exits.
    pub async fn start(label: &str) -> anyhow::Result<Self> {
        Self::start_with(label, &[]).await
    }

    /// `start`, with more server settings.
    pub async fn start_with(label: &str, settings: &[(&str, &str)]) -> anyhow::Result<Self> {
        let mut all = vec![("shared_buffers", "1GB"), ("max_wal_size", "8GB")];
        all.extend_from_slice(settings);
        let pg = cluster::throwaway_cluster(&format!("bench-{label}"), Durability::On, &all)?;
        pg.ensure_database("kpi").await?;
        let data_dir = cluster::watched_dir(&format!("bench-{label}-service"))?;
        Ok(Self { pg, data_dir })
    }

    pub fn url(&self) -> String {
        cluster::socket_url(&self.pg, "kpi")
    }
}

/// The release binary serving on 127.0.0.1:0 against the cluster (with
/// room for 8 heavy calls at once: the KPI bench measures 8 concurrent
/// 10-year series) and the flags in `extra`; only its warnings reach
/// stderr.
pub fn start_service(cluster: &Cluster, extra: &[&str]) -> anyhow::Result<ServiceProcess> {
    let url = cluster.url();
    let mut args = vec!["--max-heavy-calls", "8"];
    args.extend_from_slice(extra);
    ServiceProcess::start(&Launch {
        database_url: Some(&url),
        args: &args,
        log_filter: "warn,kpi_service::app=info",
        echo_all: false,
        ..Launch::new(env!("CARGO_BIN_EXE_kpi-service"), &cluster.data_dir)
    })
}
