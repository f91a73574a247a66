//! `kpi-service serve`: every setting of the server.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser as _;

use super::{Cli, DatabaseArgs};

/// Every setting of the service. Each flag can also be given through the
/// environment variable named in `--help`.
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// Address the gRPC server listens on. Port 0 picks a free port.
    #[arg(long, env = "KPI_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// Where the data lives and how the service reaches it.
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// A PostgreSQL streaming replica of the database, for KPI reads
    /// (scorecards, series, leaderboards, ExplainKpi, target progress);
    /// repeat the flag (or separate URLs with commas in the variable) for
    /// more. A read uses a replica only once it has replayed everything the
    /// primary had written when the read began, so reads are never stale.
    #[arg(
        long = "read-database-url",
        env = "KPI_READ_DATABASE_URLS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub read_database_urls: Vec<String>,

    /// Longest a read waits for a replica to catch up before it runs on the
    /// primary instead.
    #[arg(long, env = "KPI_READ_REPLICA_MAX_WAIT", default_value = "100ms", value_parser = humantime::parse_duration)]
    pub read_replica_max_wait: Duration,

    /// The currency every amount is reported in (ISO 4217). Deals in any
    /// other currency are rejected until multi-currency support lands.
    #[arg(long, env = "KPI_REPORTING_CURRENCY", default_value = "USD", value_parser = parse_currency)]
    pub reporting_currency: String,

    /// Time zone of periods that do not name one (IANA name).
    #[arg(long, env = "KPI_TIME_ZONE", default_value = "UTC", value_parser = crate::domain::period::parse_zone)]
    pub time_zone: chrono_tz::Tz,

    /// First month (1-12) of the fiscal year, for quarters.
    #[arg(long, env = "KPI_FISCAL_YEAR_START_MONTH", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=12))]
    pub fiscal_year_start_month: u32,

    /// How often the database is probed for the health service.
    #[arg(long, env = "KPI_HEALTH_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub health_interval: Duration,

    /// TLS certificate chain (PEM) to serve with; needs --tls-key.
    #[arg(long, env = "KPI_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM) of --tls-cert.
    #[arg(long, env = "KPI_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// CA certificate(s) (PEM) that client certificates must be signed by:
    /// turns on mutual TLS. Needs --tls-cert.
    #[arg(long, env = "KPI_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// Allow plaintext on a non-loopback address (API keys and data then
    /// cross the network unencrypted).
    #[arg(long, env = "KPI_ALLOW_INSECURE")]
    pub allow_insecure: bool,

    /// After SIGTERM/SIGINT, how long in-flight calls may run before the
    /// server closes them and exits.
    #[arg(long, env = "KPI_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,

    /// Longest a unary call (or one batch of a stream) may take before it
    /// answers DEADLINE_EXCEEDED; a paused database cannot hold a caller
    /// longer than this.
    #[arg(long, env = "KPI_CALL_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub call_timeout: Duration,

    /// Longest a client connection lives; the client is then asked to
    /// reconnect (HTTP/2 GOAWAY), with 30 s for calls in flight to finish.
    #[arg(long, env = "KPI_MAX_CONNECTION_AGE", default_value = "1h", value_parser = humantime::parse_duration)]
    pub max_connection_age: Duration,

    /// Heavy calls (a series of more than 366 points) that may run at once;
    /// one more waits up to a second for a slot, then gets
    /// RESOURCE_EXHAUSTED with retry info. Bounds the memory and database
    /// time a burst of them can take.
    #[arg(long, env = "KPI_MAX_HEAVY_CALLS", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_heavy_calls: u16,

    /// Memory for the result cache of scorecards, series and leaderboards
    /// (MiB, estimated from the answers' sizes; 0 turns it off). Answers
    /// are never stale: each hit checks in PostgreSQL that nothing it read
    /// changed since.
    #[arg(long, env = "KPI_CACHE_MIB", default_value_t = 64)]
    pub cache_mib: u32,

    /// Watches (WatchScorecard, WatchLeaderboard) that may be open at once
    /// in this process; one more gets RESOURCE_EXHAUSTED (reason
    /// TOO_MANY_WATCHES) at once. An idle watch costs a few KiB.
    #[arg(long, env = "KPI_MAX_WATCHES", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_watches: u32,

    /// On the first start of its own PostgreSQL (no DATABASE_URL), do not
    /// fill it with the demo organisation (`kpi-service demo`'s data).
    #[arg(long, env = "KPI_NO_DEMO")]
    pub no_demo: bool,
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

    /// Settings as in `--help` (and the environment), for tests and
    /// embedding.
    pub fn defaults() -> Self {
        Cli::parse_from(["kpi-service"]).settings
    }
}

fn parse_currency(raw: &str) -> Result<String, String> {
    if raw.len() == 3 && raw.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(raw.to_owned())
    } else {
        Err(format!("'{raw}' is not an ISO 4217 code like USD"))
    }
}
