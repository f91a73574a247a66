use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Parser, Subcommand, ValueEnum};

/// kpi-service: a gRPC service that records sales activity and computes
/// per-rep and per-team KPIs from PostgreSQL.
///
/// Without DATABASE_URL it runs its own PostgreSQL in <data-dir>/postgres.
/// Logging is filtered by RUST_LOG (default: info).
#[derive(Debug, Parser)]
#[command(
    name = "kpi-service",
    version,
    about,
    long_about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Without a subcommand: `serve` with these settings.
    #[command(flatten)]
    pub settings: Settings,
    /// Log format (every subcommand).
    #[arg(
        long,
        env = "KPI_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
}

/// Each subcommand takes only its own flags: `serve` every setting, `migrate`
/// and `keys` the database ones, `demo` the target, key and generator ones.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gRPC server (the default).
    Serve(Settings),
    /// Apply database migrations and exit.
    Migrate(DatabaseArgs),
    /// Fill a running service with a generated organisation and a year of
    /// activity, through its gRPC API (deterministic for a seed).
    Demo(crate::demo::DemoOptions),
    /// Backfill from CRM exports: NDJSON and CSV files pushed through the
    /// API (teams and reps first), bad records to a reject file.
    Import(crate::import::ImportOptions),
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
        /// End the key by itself after this long (e.g. 90d, 12h).
        #[arg(long)]
        expires: Option<humantime::Duration>,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Make a share link to a team's dashboard: a read key limited to the
    /// team (and its sub-teams) that ends by itself, printed as the page's
    /// URL with the key in the fragment (`#key=...`), which browsers never
    /// send to a server. Revoke it like any key.
    Share {
        /// The team whose dashboard the link opens.
        #[arg(long)]
        team: String,
        /// How long the link works (e.g. 30d, 12h); at most 10 years.
        #[arg(long, default_value = "30d")]
        expires: humantime::Duration,
        /// Who the link is for (shown by `keys list`).
        #[arg(long)]
        name: Option<String>,
        /// The service's address as the browser reaches it.
        #[arg(long, env = "KPI_PUBLIC_URL", default_value = "http://127.0.0.1:50051")]
        url: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// List keys: ids, names, roles, scopes, creation and last use. Never
    /// secrets.
    List {
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Revoke a key; every instance refuses it within a second.
    Revoke {
        /// The key's id (the part after `kpi_`, before the second `_`).
        key_id: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

impl KeysCommand {
    /// The database the keys live in.
    pub fn database(&self) -> &DatabaseArgs {
        match self {
            Self::Create { database, .. }
            | Self::Share { database, .. }
            | Self::List { database }
            | Self::Revoke { database, .. } => database,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

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

#[cfg(test)]
mod tests {
    use super::*;

    /// The long flags of a subcommand path (`["keys", "list"]`).
    fn flags(path: &[&str]) -> Vec<String> {
        use clap::CommandFactory;
        let mut command = Cli::command();
        command.build();
        let mut current = &command;
        for name in path {
            current = current
                .find_subcommand(name)
                .unwrap_or_else(|| panic!("no subcommand {name}"));
        }
        current
            .get_arguments()
            .filter_map(|a| a.get_long().map(str::to_owned))
            .collect()
    }

    #[test]
    fn each_subcommand_shows_only_its_own_flags() {
        let serve = flags(&["serve"]);
        for flag in [
            "listen",
            "tls-cert",
            "shutdown-timeout",
            "database-url",
            "read-database-url",
            "time-zone",
        ] {
            assert!(serve.iter().any(|f| f == flag), "serve lacks --{flag}");
        }
        for path in [&["keys", "list"][..], &["keys", "create"], &["migrate"]] {
            let got = flags(path);
            assert!(got.iter().any(|f| f == "database-url"), "{path:?}: {got:?}");
            for foreign in [
                "listen",
                "tls-cert",
                "shutdown-timeout",
                "seed",
                "read-database-url",
            ] {
                assert!(
                    !got.iter().any(|f| f == foreign),
                    "{path:?} shows --{foreign}"
                );
            }
        }
        let demo = flags(&["demo"]);
        assert!(demo.iter().any(|f| f == "target") && demo.iter().any(|f| f == "seed"));
        for foreign in ["tls-cert", "database-url", "shutdown-timeout", "listen"] {
            assert!(!demo.iter().any(|f| f == foreign), "demo shows --{foreign}");
        }
    }

    #[test]
    fn read_replicas_repeat_the_flag() {
        let cli = Cli::parse_from([
            "kpi-service",
            "--read-database-url",
            "postgres://a/kpi",
            "--read-database-url",
            "postgres://b/kpi",
            "--read-replica-max-wait",
            "250ms",
        ]);
        assert_eq!(
            cli.settings.read_database_urls,
            ["postgres://a/kpi", "postgres://b/kpi"]
        );
        assert_eq!(
            cli.settings.read_replica_max_wait,
            Duration::from_millis(250)
        );
        assert!(Settings::defaults().read_database_urls.is_empty());
    }

    #[test]
    fn flags_work_with_and_without_the_serve_subcommand() {
        let bare = Cli::parse_from(["kpi-service", "--listen", "127.0.0.1:9"]);
        assert!(bare.command.is_none());
        assert_eq!(bare.settings.listen.port(), 9);
        let serve = Cli::parse_from(["kpi-service", "serve", "--listen", "127.0.0.1:8"]);
        assert!(matches!(serve.command, Some(Command::Serve(s)) if s.listen.port() == 8));
        assert!(Cli::try_parse_from(["kpi-service", "keys", "list", "--listen", "x"]).is_err());
    }

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
