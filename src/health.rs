//! gRPC health that tells the truth: `""` and every `kpi.v1` service are
//! SERVING exactly while the database answers. A dedicated connection probes
//! it (so a busy pool cannot make a healthy database look dead), and an
//! embedded PostgreSQL that died is started again.

use std::{sync::Arc, time::Duration};

use sqlx::{Connection, PgConnection, postgres::PgConnectOptions};
use tokio::sync::watch;
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::embedded_pg::EmbeddedPostgres;

/// Longest a probe may take before the database counts as unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

pub struct DatabaseHealth {
    pub reporter: HealthReporter,
    /// Reported together with the overall `""` status.
    pub services: Vec<&'static str>,
    pub options: PgConnectOptions,
    pub interval: Duration,
    pub embedded: Option<Arc<EmbeddedPostgres>>,
}

impl DatabaseHealth {
    async fn report(&self, status: ServingStatus) {
        crate::observe::metrics::database_up(status == ServingStatus::Serving);
        self.reporter.set_service_status("", status).await;
        for service in &self.services {
            self.reporter.set_service_status(*service, status).await;
        }
    }

    /// Probes until `stop` turns true, updating the statuses on every
    /// change. Everything starts NOT_SERVING until the first probe answers.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        self.report(ServingStatus::NotServing).await;
        let mut conn: Option<PgConnection> = None;
        let mut serving: Option<bool> = None;
        loop {
            let ok = probe(&mut conn, &self.options).await;
            if serving != Some(ok) {
                if ok {
                    tracing::info!("database reachable: SERVING");
                    self.report(ServingStatus::Serving).await;
                } else {
                    tracing::warn!("database unreachable: NOT_SERVING");
                    self.report(ServingStatus::NotServing).await;
                }
                serving = Some(ok);
            }
            if !ok {
                self.revive_embedded().await;
            }
            tokio::select! {
                () = tokio::time::sleep(self.interval) => {}
                _ = stop.changed() => break,
            }
        }
        self.report(ServingStatus::NotServing).await;
        if let Some(conn) = conn {
            conn.close().await.ok();
        }
    }

    async fn revive_embedded(&self) {
        let Some(pg) = self.embedded.clone() else {
            return;
        };
        if pg.is_running() {
            return;
        }
        tracing::warn!("the embedded PostgreSQL is not running; starting it again");
        match tokio::task::spawn_blocking(move || pg.start()).await {
            Ok(Ok(())) => crate::observe::metrics::embedded_restarted(),
            Ok(Err(err)) => {
                tracing::error!(
                    error = format!("{err:#}"),
                    "cannot restart the embedded PostgreSQL"
                );
            }
            Err(err) => tracing::error!(error = %err, "restart task failed"),
        }
    }
}

/// One round trip on the probe connection, reconnecting when needed.
async fn probe(conn: &mut Option<PgConnection>, options: &PgConnectOptions) -> bool {
    let attempt = async {
        if conn.is_none() {
            *conn = Some(PgConnection::connect_with(options).await?);
        }
        match conn.as_mut() {
            Some(c) => c.ping().await,
            None => Ok(()),
        }
    };
    match tokio::time::timeout(PROBE_TIMEOUT, attempt).await {
        Ok(Ok(())) => true,
        Ok(Err(err)) => {
            tracing::debug!(error = %err, "database probe failed");
            *conn = None;
            false
        }
        Err(_) => {
            tracing::debug!("database probe timed out");
            *conn = None;
            false
        }
    }
}
