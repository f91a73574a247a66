//! Every setting and command line of the binary, typed, from flags and the
//! environment: one clap struct per command (`serve`, `database`, `client`,
//! `demo`, `import`, `keys`). A leaf: nothing here calls the service.

mod client;
mod database;
mod demo;
mod import;
mod keys;
mod serve;

use clap::{Parser, Subcommand, ValueEnum};

pub use self::{
    client::ClientOptions, database::DatabaseArgs, demo::DemoOptions, import::ImportOptions,
    keys::KeysCommand, serve::Settings,
};

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
    Demo(DemoOptions),
    /// Backfill from CRM exports: NDJSON and CSV files pushed through the
    /// API (teams and reps first), bad records to a reject file.
    Import(ImportOptions),
    /// Manage API keys (in the service's database).
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
