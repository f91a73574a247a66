//! All SQL lives here, grouped by aggregate. Queries are checked at run time
//! (`sqlx::query_as`), so building the crate needs no database.

use std::time::Duration;

use anyhow::Context as _;
use sqlx::{
    PgPool,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::config::DatabaseArgs;

pub mod activity;
pub mod changes;
pub mod directory;
pub mod explain;
pub mod keys;
pub mod kpi;
pub mod rates;
pub mod reads;
pub mod records;
pub mod rollup;
pub mod targets;

/// The migrations in `migrations/`, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Adds the per-session settings every connection of the service uses.
pub fn session_options(options: PgConnectOptions, settings: &DatabaseArgs) -> PgConnectOptions {
    let statement_timeout_ms = settings.db_statement_timeout.as_millis().max(1);
    // No JIT: every query here reads a few thousand rows at most, and
    // PostgreSQL's cost estimates for the KPI queries (arrays of reps and
    // ranges) are high enough to trigger JIT compilation, which then takes
    // 50-100 ms for a query that runs in 2.
    options.application_name("kpi-service").options([
        ("statement_timeout", format!("{statement_timeout_ms}ms")),
        ("jit", "off".to_owned()),
    ])
}

/// Where a connection goes, for logs: host or socket, port and database;
/// never the user's password.
pub fn describe(options: &PgConnectOptions) -> String {
    let database = options.get_database().unwrap_or("(default)");
    match options.get_socket() {
        Some(socket) => format!("unix socket {} db {database}", socket.display()),
        None => format!(
            "{}:{} db {database}",
            options.get_host(),
            options.get_port()
        ),
    }
}

/// A pool whose waits are bounded: a request never waits longer than
/// `db_acquire_timeout` for a connection, and every connection is checked
/// before use so that a restarted PostgreSQL needs no restart of the
/// service: broken connections are dropped and replaced.
pub async fn connect(options: PgConnectOptions, settings: &DatabaseArgs) -> anyhow::Result<PgPool> {
    let target = describe(&options);
    pool_options(settings)
        .connect_with(options)
        .await
        .with_context(|| format!("cannot connect to PostgreSQL at {target}"))
}

/// A pool like `connect`'s that connects on first use: a read replica that
/// is down when the service starts does not stop it (reads go to the
/// primary until the replica answers).
pub fn connect_lazy(options: PgConnectOptions, settings: &DatabaseArgs) -> PgPool {
    pool_options(settings).connect_lazy_with(options)
}

fn pool_options(settings: &DatabaseArgs) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(settings.db_max_connections.max(1))
        .acquire_timeout(settings.db_acquire_timeout)
        .test_before_acquire(true)
        .idle_timeout(Duration::from_secs(300))
        .max_lifetime(Duration::from_secs(1800))
}

/// Applies pending migrations. sqlx holds an advisory lock meanwhile, so
/// several instances starting together migrate once.
///
/// On a connection of its own without the pool's statement_timeout: the
/// wait for the migration lock while another instance migrates, or one
/// long migration of a big database, must not fail start-up. The
/// connection is closed afterwards, never returned to the pool.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    let mut conn = pool
        .acquire()
        .await
        .context("cannot get a connection to apply migrations")?
        .detach();
    sqlx::raw_sql("SET statement_timeout = 0; SET lock_timeout = 0")
        .execute(&mut conn)
        .await
        .context("cannot lift the statement timeout for migrations")?;
    let migrated = MIGRATOR
        .run(&mut conn)
        .await
        .context("cannot apply database migrations");
    sqlx::Connection::close(conn).await.ok();
    migrated
}
