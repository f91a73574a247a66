//! Opening the database: the one `DATABASE_URL` names, or the embedded
//! PostgreSQL (owned by the serving process, used as a guest by the `keys`
//! and `migrate` commands), and the read replicas' connection options.

use std::{str::FromStr, sync::Arc};

use anyhow::{Context as _, anyhow};
use sqlx::{PgPool, postgres::PgConnectOptions};

use crate::{
    config::{DatabaseArgs, Settings},
    embedded_pg::{self, EmbeddedPostgres, Tenure},
    store,
};

/// Who opens the database: the serving process owns the embedded cluster;
/// the `keys` and `migrate` commands use it as guests when a service runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opener {
    Serve,
    Command(&'static str),
}

/// How long a guest waits for the owner's cluster to be up (the owner's
/// health loop restarts one that died within a probe interval or two).
const GUEST_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// How to reach the read replicas (`--read-database-url`), with the
/// primary's session settings.
pub fn replica_options(settings: &Settings) -> anyhow::Result<Vec<PgConnectOptions>> {
    settings
        .read_database_urls
        .iter()
        .enumerate()
        .map(|(n, url)| {
            // The parse error could quote the URL, password included.
            let options = PgConnectOptions::from_str(url).map_err(|_| {
                anyhow!(
                    "read database URL number {} is not a valid postgres:// URL",
                    n + 1
                )
            })?;
            Ok(store::session_options(options, &settings.database))
        })
        .collect()
}

/// The database the service uses: the one `DATABASE_URL` names, or the
/// embedded PostgreSQL. Only the owner of the data directory (see
/// `embedded_pg::Tenure`) starts and stops the embedded cluster.
pub struct Database {
    pub pool: PgPool,
    /// How to reach it (session settings included), for the health probe.
    pub options: PgConnectOptions,
    /// The embedded cluster this process owns (restarted by the health
    /// loop, stopped by `close`); `None` with DATABASE_URL or as a guest.
    pub embedded: Option<Arc<EmbeddedPostgres>>,
    /// Held while the database is open: the data directory's claim.
    _tenure: Option<Tenure>,
}

impl Database {
    pub async fn open(settings: &DatabaseArgs, opener: Opener) -> anyhow::Result<Self> {
        let (options, embedded, tenure) = match &settings.database_url {
            Some(url) => {
                // The parse error could quote the URL, password included.
                let options = PgConnectOptions::from_str(url)
                    .map_err(|_| anyhow!("DATABASE_URL is not a valid postgres:// URL"))?;
                (options, None, None)
            }
            None => {
                let pg = Arc::new(EmbeddedPostgres::new(&settings.data_dir)?);
                tracing::info!(
                    bin_dir = %pg.bin_dir().display(),
                    pgdata = %pg.pgdata().display(),
                    "no DATABASE_URL: using the embedded PostgreSQL"
                );
                let holder = match opener {
                    Opener::Serve => "kpi-service serve".to_owned(),
                    Opener::Command(name) => format!("kpi-service {name}"),
                };
                let tenure = pg.claim(&holder)?;
                match (&tenure, opener) {
                    (Tenure::Guest { owner }, Opener::Serve) => {
                        return Err(anyhow!(
                            "data dir {} is in use by {owner}: one service serves from a \
                             data directory; stop it first, or give this one another \
                             --data-dir",
                            pg.data_dir().display()
                        ));
                    }
                    (Tenure::Guest { owner }, Opener::Command(_)) => {
                        tracing::info!(%owner, "the data directory is served by another process: using its PostgreSQL without stopping it");
                        wait_until_running(&pg, owner).await?;
                        (
                            pg.connect_options(embedded_pg::DATABASE),
                            None,
                            Some(tenure),
                        )
                    }
                    (Tenure::Owner(_), _) => {
                        let starting = pg.clone();
                        tokio::task::spawn_blocking(move || starting.prepare_and_start())
                            .await
                            .context("embedded PostgreSQL start-up task failed")??;
                        if let Err(err) = pg.ensure_database(embedded_pg::DATABASE).await {
                            stop_embedded(pg).await;
                            return Err(err);
                        }
                        (
                            pg.connect_options(embedded_pg::DATABASE),
                            Some(pg),
                            Some(tenure),
                        )
                    }
                }
            }
        };
        let options = store::session_options(options, settings);
        tracing::info!(database = %store::describe(&options), "connecting");
        match store::connect(options.clone(), settings).await {
            Ok(pool) => Ok(Self {
                pool,
                options,
                embedded,
                _tenure: tenure,
            }),
            Err(err) => {
                if let Some(pg) = embedded {
                    stop_embedded(pg).await;
                }
                Err(err)
            }
        }
    }

    /// Closes the pool and stops the embedded PostgreSQL this process owns,
    /// then gives up the data directory's claim.
    pub async fn close(self) {
        self.pool.close().await;
        if let Some(pg) = self.embedded {
            stop_embedded(pg).await;
        }
    }
}

/// A guest waits (bounded) for the owner's cluster to run.
async fn wait_until_running(pg: &EmbeddedPostgres, owner: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + GUEST_WAIT;
    while !pg.is_running() {
        if tokio::time::Instant::now() >= deadline {
            return Err(anyhow!(
                "data dir {} is in use by {owner}, whose PostgreSQL has not been running for \
                 {GUEST_WAIT:?}: check that service's log",
                pg.data_dir().display()
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    Ok(())
}

async fn stop_embedded(pg: Arc<EmbeddedPostgres>) {
    match tokio::task::spawn_blocking(move || pg.stop()).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::error!(
            error = format!("{err:#}"),
            "cannot stop the embedded PostgreSQL"
        ),
        Err(err) => tracing::error!(error = %err, "stop task failed"),
    }
}
