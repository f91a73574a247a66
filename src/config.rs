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
    /// Manage API keys (in the service's database).
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it once. Only its hash is stored.
    Create {
        /// Who or what the key is for.
        #[arg(long)]
        name: String,
        /// ingest (record activity, upsert teams and reps), read (directory
        /// and KPI queries) or admin (everything).
        #[arg(long)]
        role: String,
        /// Limit a read key to this team and its sub-teams.
        #[arg(long)]
        team: Option<String>,
    },
    /// List keys: ids, names, roles, scopes, creation and last use. Never
    /// secrets.
    List,
    /// Revoke a key; every instance refuses it within a second.
    Revoke {
        /// The key's id (the part after `kpi_`, before the second `_`).
        key_id: String,
    },
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

    /// Time zone of periods that do not name one (IANA name).
    #[arg(long, env = "KPI_TIME_ZONE", default_value = "UTC", value_parser = crate::domain::period::parse_zone, global = true)]
    pub time_zone: chrono_tz::Tz,

    /// First month (1-12) of the fiscal year, for quarters.
    #[arg(long, env = "KPI_FISCAL_YEAR_START_MONTH", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=12), global = true)]
    pub fiscal_year_start_month: u32,

    /// How often the database is probed for the health service.
    #[arg(long, env = "KPI_HEALTH_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration, global = true)]
    pub health_interval: Duration,

    /// TLS certificate chain (PEM) to serve with; needs --tls-key.
    #[arg(long, env = "KPI_TLS_CERT", requires = "tls_key", global = true)]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM) of --tls-cert.
    #[arg(long, env = "KPI_TLS_KEY", requires = "tls_cert", global = true)]
    pub tls_key: Option<PathBuf>,

    /// CA certificate(s) (PEM) that client certificates must be signed by:
    /// turns on mutual TLS. Needs --tls-cert.
    #[arg(long, env = "KPI_TLS_CLIENT_CA", requires = "tls_cert", global = true)]
    pub tls_client_ca: Option<PathBuf>,

    /// Allow plaintext on a non-loopback address (API keys and data then
    /// cross the network unencrypted).
    #[arg(long, env = "KPI_ALLOW_INSECURE", global = true)]
    pub allow_insecure: bool,

    /// After SIGTERM/SIGINT, how long in-flight calls may run before the
    /// server closes them and exits.
    #[arg(long, env = "KPI_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration, global = true)]
    pub shutdown_timeout: Duration,
}

impl Settings {
    /// Refuses plaintext on a non-loopback address unless allowed.
    pub fn check_transport(&self) -> Result<(), String> {
        if self.tls_cert.is_none() && !self.listen.ip().is_loopback() && !self.allow_insecure {
            return Err(format!(
                "refusing to listen on {} without TLS: give --tls-cert and --tls-key, listen on \
                 a loopback address, or pass --allow-insecure",
                self.listen
            ));
        }
        Ok(())
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_is_refused_off_loopback_unless_allowed() {
        let mut settings = Settings::defaults();
        assert!(settings.check_transport().is_ok());
        settings.listen = "0.0.0.0:50051".parse().unwrap_or(settings.listen);
        assert!(settings.check_transport().is_err());
        settings.allow_insecure = true;
        assert!(settings.check_transport().is_ok());
        settings.allow_insecure = false;
        settings.tls_cert = Some("cert.pem".into());
        assert!(settings.check_transport().is_ok());
    }
}
