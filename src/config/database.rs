//! Which PostgreSQL, and how the pool uses it: `serve`, `migrate` and
//! `keys` share these.

use std::{path::PathBuf, time::Duration};

/// The database settings: which PostgreSQL (or the embedded one under
/// `--data-dir`) and how the pool uses it. Shared by `serve`, `migrate` and
/// `keys`.
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseArgs {
    /// PostgreSQL to use, e.g. postgres://user:pass@host:5432/kpi. When
    /// absent, the service runs its own PostgreSQL under --data-dir.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Directory for the service's own files (the embedded PostgreSQL lives
    /// in <data-dir>/postgres).
    #[arg(long, env = "KPI_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Most database connections the service keeps open.
    #[arg(long, env = "KPI_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,

    /// Longest a request waits for a free database connection before it
    /// fails with UNAVAILABLE.
    #[arg(long, env = "KPI_DB_ACQUIRE_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub db_acquire_timeout: Duration,

    /// Longest one SQL statement may run (PostgreSQL statement_timeout).
    #[arg(long, env = "KPI_DB_STATEMENT_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub db_statement_timeout: Duration,
}
