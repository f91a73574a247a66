use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Parser, Subcommand, ValueEnum};

/// kpi-service: a gRPC service that records sales activity and computes
/// per-rep and per-team KPIs from PostgreSQL.
///
/// Without DATABASE_URL it runs its own PostgreSQL in <data-dir>/postgres.
/// Logging is filtered by RUST_LOG (default: info).
#[derive(Debug, Parser)]
#[command(name = "kpi-service", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub settings: Settings,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gRPC server (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Fill a running service with a generated organisation and a year of
    /// activity, through its gRPC API (deterministic for a seed).
    Demo(crate::demo::DemoOptions),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Every setting of the service. Each flag can also be given through the
/// environment variable named in `--help`.
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// Address the gRPC server listens on. Port 0 picks a free port.
    #[arg(
        long,
        env = "KPI_LISTEN",
        default_value = "127.0.0.1:50051",
        global = true
    )]
    pub listen: SocketAddr,

    /// PostgreSQL to use, e.g. postgres://user:pass@host:5432/kpi. When
    /// absent, the service runs its own PostgreSQL under --data-dir.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    pub database_url: Option<String>,

    /// Directory for the service's own files (the embedded PostgreSQL lives
    /// in <data-dir>/postgres).
    #[arg(long, env = "KPI_DATA_DIR", default_value = "./data", global = true)]
    pub data_dir: PathBuf,

    /// Log format.
    #[arg(
        long,
        env = "KPI_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,

    /// Most database connections the service keeps open.
    #[arg(
        long,
        env = "KPI_DB_MAX_CONNECTIONS",
        default_value_t = 16,
        global = true
    )]
    pub db_max_connections: u32,

    /// Longest a request waits for a free database connection before it
    /// fails with UNAVAILABLE.
    #[arg(long, env = "KPI_DB_ACQUIRE_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration, global = true)]
    pub db_acquire_timeout: Duration,

    /// Longest one SQL statement may run (PostgreSQL statement_timeout).
    #[arg(long, env = "KPI_DB_STATEMENT_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration, global = true)]
    pub db_statement_timeout: Duration,

    /// The currency every amount is reported in (ISO 4217). Deals in any
    /// other currency are rejected until multi-currency support lands.
    #[arg(long, env = "KPI_REPORTING_CURRENCY", default_value = "USD", value_parser = parse_currency, global = true)]
    pub reporting_currency: String,

    /// How often the database is probed for the health service.
    #[arg(long, env = "KPI_HEALTH_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration, global = true)]
    pub health_interval: Duration,

    /// After SIGTERM/SIGINT, how long in-flight calls may run before the
    /// server closes them and exits.
    #[arg(long, env = "KPI_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration, global = true)]
    pub shutdown_timeout: Duration,
}

impl Settings {
    /// Settings as in `--help`, for tests and embedding.
    pub fn defaults() -> Self {
        let cli = Cli::parse_from(["kpi-service"]);
        cli.settings
    }
}

fn parse_currency(raw: &str) -> Result<String, String> {
    if raw.len() == 3 && raw.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(raw.to_owned())
    } else {
        Err(format!("'{raw}' is not an ISO 4217 code like USD"))
    }
}
