//! Start-up and shut-down: build the server from settings, serve until a
//! signal, drain with a deadline, stop what was started.

mod first_start;

use std::{future::Future, net::SocketAddr, sync::Arc};

use anyhow::{Context as _, anyhow};
use sqlx::PgPool;
use tokio::sync::watch;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig, server::TcpIncoming};

pub use self::first_start::{DASHBOARD_KEY_FILE, DEMO_PENDING_FILE};
use crate::{
    config::Settings,
    database::{Database, Opener, replica_options},
    grpc::{self, auth::AuthLayer, deadline::DeadlineLayer, streams::StreamLimits},
    health::DatabaseHealth,
    http::HttpLayer,
    observe::telemetry::RpcTraceLayer,
    service::{KpiSettings, Services, access::AccessControl},
    store::{self, reads::Reads},
};

/// How long calls in flight may finish on a connection that reached
/// `--max-connection-age`.
const CONNECTION_AGE_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGTERM; only SIGINT stops the service");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}

/// A built server: listening, connected and migrated, not yet serving.
pub struct Application {
    incoming: TcpIncoming,
    local_addr: SocketAddr,
    db: Database,
    /// Where KPI reads go (the primary, and any read replicas).
    reads: Reads,
    settings: Settings,
    access: Arc<AccessControl>,
    tls: Option<ServerTlsConfig>,
}

/// Reads the TLS files named in the settings.
fn tls_config(settings: &Settings) -> anyhow::Result<Option<ServerTlsConfig>> {
    let (Some(cert), Some(key)) = (&settings.tls_cert, &settings.tls_key) else {
        return Ok(None);
    };
    let read = |path: &std::path::Path| {
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
    };
    let mut config = ServerTlsConfig::new().identity(Identity::from_pem(read(cert)?, read(key)?));
    if let Some(ca) = &settings.tls_client_ca {
        config = config.client_ca_root(Certificate::from_pem(read(ca)?));
    }
    Ok(Some(config))
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        settings.check_transport().map_err(|e| anyhow!(e))?;
        let tls = tls_config(&settings)?;
        let incoming = TcpIncoming::bind(settings.listen)
            .map_err(|err| anyhow!("cannot listen on {}: {err}", settings.listen))?
            .with_nodelay(Some(true));
        let local_addr = incoming
            .local_addr()
            .context("cannot read the listening address")?;
        let replicas = replica_options(&settings)?;
        let db = Database::open(&settings.database, Opener::Serve).await?;
        let access = Arc::new(AccessControl::default());
        if let Err(err) = Self::prepare(&db, &settings, &access).await {
            db.close().await;
            return Err(err);
        }
        let reads = Reads::new(
            db.pool.clone(),
            replicas,
            &settings.database,
            settings.read_replica_max_wait,
        );
        if let Err(err) = reads.check_primary().await {
            db.close().await;
            return Err(err);
        }
        Ok(Self {
            incoming,
            local_addr,
            db,
            reads,
            settings,
            access,
            tls,
        })
    }

    /// Migrations, the first admin key (and with the embedded database a
    /// dashboard key and the demo to load: `first_start`), the key cache.
    async fn prepare(
        db: &Database,
        settings: &Settings,
        access: &AccessControl,
    ) -> anyhow::Result<()> {
        store::migrate(&db.pool).await?;
        first_start::bootstrap_keys(&db.pool, settings).await?;
        access
            .reload(&db.pool)
            .await
            .map_err(|e| anyhow!("cannot load API keys: {e}"))?;
        Ok(())
    }

    /// The address actually bound (tests listen on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn pool(&self) -> &PgPool {
        &self.db.pool
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets in-flight
    /// calls finish until the drain deadline, and stops what `build` started.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Self {
            incoming,
            local_addr,
            db,
            reads,
            settings,
            access,
            tls,
        } = self;

        if crate::observe::metrics::install().is_none() {
            tracing::warn!("another metrics recorder is installed: /metrics records nothing");
        }
        let (reporter, health_service) = tonic_health::server::health_reporter();
        let (stop_health, stop_rx) = watch::channel(false);
        let health = DatabaseHealth {
            reporter,
            services: grpc::server::service_names(),
            options: db.options.clone(),
            interval: settings.health_interval,
            embedded: db.embedded.clone(),
        };
        let health_task = tokio::spawn(health.run(stop_rx.clone()));
        let keys_task = tokio::spawn(access.clone().refresh_until(db.pool.clone(), stop_rx));

        let services = Services::new(
            reads.clone(),
            KpiSettings {
                default_zone: settings.time_zone,
                fiscal_year_start_month: settings.fiscal_year_start_month,
                reporting_currency: settings.reporting_currency.clone(),
                max_heavy_calls: usize::from(settings.max_heavy_calls),
                cache_bytes: usize::try_from(settings.cache_mib)
                    .unwrap_or(0)
                    .saturating_mul(1 << 20),
                max_watches: usize::try_from(settings.max_watches).unwrap_or(usize::MAX),
            },
        );
        let (stop_streams, streams_stopped) = watch::channel(false);
        let stream_limits = StreamLimits {
            access: access.clone(),
            shutdown: streams_stopped,
            batch_timeout: settings.call_timeout,
        };
        let routes = grpc::server::routes(
            services.clone(),
            stream_limits,
            settings.time_zone,
            health_service,
        )?;
        let sampler = tokio::spawn({
            let watches = services.watches.clone();
            crate::observe::metrics::sample_until(
                db.pool.clone(),
                move || watches.open(),
                stop_health.subscribe(),
            )
        });
        // Every change committed through any replica reaches this
        // process's watches.
        let feed_task = tokio::spawn(
            services
                .watches
                .feed()
                .clone()
                .listen_until(db.pool.clone(), stop_health.subscribe()),
        );
        let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
        let mut builder = Server::builder()
            // HTTP/1.1 too, for the page and Connect's JSON (`http`).
            .accept_http1(true)
            .max_connection_age(settings.max_connection_age)
            .max_connection_age_grace(CONNECTION_AGE_GRACE);
        if let Some(tls) = tls {
            builder = builder
                .tls_config(tls)
                .context("invalid TLS configuration")?;
        }
        let server = builder
            .layer(
                tower::ServiceBuilder::new()
                    .layer(HttpLayer)
                    .layer(RpcTraceLayer)
                    .layer(AuthLayer::new(access))
                    .layer(DeadlineLayer {
                        timeout: settings.call_timeout,
                    }),
            )
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming, async {
                drain_rx.await.ok();
            });
        tracing::info!(address = %local_addr, "kpi-service listening");
        let page = first_start::page_url(local_addr, settings.tls_cert.is_some());
        tracing::info!(url = %page, "dashboard page");
        let demo = first_start::start_demo(&settings, &page);
        if settings.database.database_url.is_none() {
            first_start::print_dashboard_link(&settings.database.data_dir, &page);
        }

        tokio::pin!(server);
        let served = tokio::select! {
            served = &mut server => served.context("the gRPC server failed"),
            () = shutdown => {
                tracing::info!(deadline = ?settings.shutdown_timeout, "shutting down: draining in-flight calls");
                if let Some(demo) = &demo {
                    demo.abort();
                }
                // Open streams first: they finish the batch in flight and end
                // with SHUTTING_DOWN and their committed batches.
                stop_streams.send(true).ok();
                drain_tx.send(()).ok();
                match tokio::time::timeout(settings.shutdown_timeout, &mut server).await {
                    Ok(served) => served.context("the gRPC server failed while draining"),
                    Err(_) => {
                        tracing::warn!("drain deadline passed; closing the remaining calls");
                        Ok(())
                    }
                }
            }
        };

        stop_health.send(true).ok();
        health_task.await.ok();
        keys_task.await.ok();
        feed_task.await.ok();
        sampler.await.ok();
        reads.close_replicas().await;
        db.close().await;
        tracing::info!("kpi-service stopped");
        served
    }
}
