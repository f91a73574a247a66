//! Start-up and shut-down: build the server from settings, serve until a
//! signal, drain with a deadline, stop what was started.

use std::{future::Future, net::SocketAddr, str::FromStr, sync::Arc};

use anyhow::{Context as _, anyhow};
use sqlx::{PgPool, postgres::PgConnectOptions};
use tokio::sync::watch;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig, server::TcpIncoming};

use crate::{
    access::AccessControl,
    config::{Cli, Command, DatabaseArgs, KeysCommand, Settings},
    embedded_pg::{self, EmbeddedPostgres, Tenure},
    grpc::auth::AuthLayer,
    grpc::targets::TargetApi,
    grpc::{
        self,
        activity::{ActivityApi, MAX_MESSAGE_BYTES, StreamLimits},
        deadline::DeadlineLayer,
        directory::DirectoryApi,
        kpi::KpiApi,
        pb::{
            activity_service_server::ActivityServiceServer,
            directory_service_server::DirectoryServiceServer,
            exchange_rate_service_server::ExchangeRateServiceServer,
            kpi_service_server::KpiServiceServer, target_service_server::TargetServiceServer,
        },
        rates::RatesApi,
    },
    grpc::{connect::ConnectLayer, page::PageLayer},
    health::DatabaseHealth,
    service::{KpiSettings, Services},
    store::{self, reads::Reads},
    telemetry::RpcTraceLayer,
};

/// How long calls in flight may finish on a connection that reached
/// `--max-connection-age`.
const CONNECTION_AGE_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs what the command line asks for.
pub async fn run_cli(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        None => serve(cli.settings).await,
        Some(Command::Serve(settings)) => serve(settings).await,
        Some(Command::Demo(options)) => crate::demo::run(options).await,
        Some(Command::Import(options)) => crate::import::run(options).await,
        Some(Command::Keys(command)) => {
            let db = Database::open(command.database(), Opener::Command("keys")).await?;
            let result = match store::migrate(&db.pool).await {
                Ok(()) => keys_command(&db.pool, command).await,
                Err(err) => Err(err),
            };
            db.close().await;
            result
        }
        Some(Command::Migrate(database)) => {
            let db = Database::open(&database, Opener::Command("migrate")).await?;
            let migrated = store::migrate(&db.pool).await;
            db.close().await;
            migrated?;
            tracing::info!("migrations applied");
            Ok(())
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let app = Application::build(settings).await?;
    app.run_until_stopped(shutdown_signal()).await
}

async fn keys_command(pool: &PgPool, command: KeysCommand) -> anyhow::Result<()> {
    use crate::domain::{access::Role, ids::TeamId};
    let keys = crate::service::keys::Keys::new(pool.clone());
    match command {
        KeysCommand::Create {
            name,
            role,
            team,
            expires,
            ..
        } => {
            let role = Role::parse(&role).map_err(|e| anyhow!(e))?;
            let team_id = team
                .as_deref()
                .map(TeamId::parse)
                .transpose()
                .map_err(|e| anyhow!("--team {e}"))?;
            let key = keys
                .create(&name, role, team_id.as_ref(), expires.map(Into::into))
                .await
                .map_err(refused)?;
            eprintln!(
                "created {role} key {} ({name}){}{}; it is shown once:",
                key.key_id,
                team.map(|t| format!(" limited to team {t}"))
                    .unwrap_or_default(),
                expires
                    .map(|e| format!(", ending in {e}"))
                    .unwrap_or_default()
            );
            println!("{}", key.token);
        }
        KeysCommand::Share {
            team,
            expires,
            name,
            url,
            ..
        } => {
            let team_id = TeamId::parse(&team).map_err(|e| anyhow!("--team {e}"))?;
            let name = name.unwrap_or_else(|| format!("share link for team {team}"));
            let key = keys
                .create(&name, Role::Read, Some(&team_id), Some(expires.into()))
                .await
                .map_err(refused)?;
            eprintln!(
                "created read key {} ({name}) limited to team {team}, ending in {expires}; \
                 revoke with `kpi-service keys revoke {}`. The link is shown once:",
                key.key_id, key.key_id
            );
            println!("{}", share_link(&url, &key.token));
        }
        KeysCommand::List { .. } => {
            let keys = keys.list().await.map_err(|e| anyhow!("{e}"))?;
            println!(
                "{:<14} {:<7} {:<16} {:<20} {:<25} {:<25} {:<25} REVOKED",
                "KEY ID", "ROLE", "TEAM", "NAME", "CREATED", "LAST USED", "EXPIRES"
            );
            let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
                t.map_or_else(
                    || "-".to_owned(),
                    |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
                )
            };
            for key in keys {
                println!(
                    "{:<14} {:<7} {:<16} {:<20} {:<25} {:<25} {:<25} {}",
                    key.key_id,
                    key.role,
                    key.team_id.as_deref().unwrap_or("-"),
                    key.name,
                    time(Some(key.created_at)),
                    time(key.last_used_at),
                    time(key.expires_at),
                    time(key.revoked_at)
                );
            }
        }
        KeysCommand::Revoke { key_id, .. } => {
            keys.revoke(&key_id).await.map_err(|e| anyhow!("{e}"))?;
            eprintln!("revoked key {key_id}");
        }
    }
    Ok(())
}

/// A refused key command, in the words its gRPC status would use.
fn refused(err: crate::Error) -> anyhow::Error {
    anyhow!("{}", tonic::Status::from(err).message().to_owned())
}

/// The dashboard's URL at `base` that signs in with `token`: the key is in
/// the fragment, which a browser keeps to itself (never in a request, a
/// server log or a Referer), and the page moves it to the tab's session
/// storage and out of the address bar at once.
pub fn share_link(base: &str, token: &str) -> String {
    format!("{}/#key={token}", base.trim_end_matches('/'))
}

/// Where the embedded database's dashboard key is (mode 0600).
pub const DASHBOARD_KEY_FILE: &str = "dashboard.key";

/// Present in the data directory while the demo organisation is still to be
/// loaded (made on the first start, removed once it is loaded).
pub const DEMO_PENDING_FILE: &str = "demo.pending";

/// The dashboard page's URL as a browser on this machine reaches it.
fn page_url(addr: SocketAddr, tls: bool) -> String {
    let host = match addr.ip() {
        ip if ip.is_unspecified() => std::net::IpAddr::from([127, 0, 0, 1]),
        ip => ip,
    };
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{}", SocketAddr::new(host, addr.port()))
}

/// With the embedded database: the link that opens the dashboard signed in
/// (the key in its fragment), on the terminal only: a log that is shipped
/// somewhere gets the file's path, never the key.
fn print_dashboard_link(data_dir: &std::path::Path, page: &str) {
    use std::io::IsTerminal as _;
    let path = data_dir.join(DASHBOARD_KEY_FILE);
    let Ok(token) = std::fs::read_to_string(&path) else {
        return;
    };
    if std::io::stderr().is_terminal() {
        eprintln!(
            "\n  Dashboard: {}\n  (signed in with the read key in {}; keep it to yourself)\n",
            share_link(page, token.trim()),
            path.display()
        );
    } else {
        tracing::info!(
            key_file = %path.display(),
            "dashboard link: the page's URL with #key=<this file's key>"
        );
    }
}

/// On the first start of the embedded database: fills it with the demo
/// organisation through the service's own API, in the background, so the
/// dashboard has something to show (and shows it arriving). Until it is all
/// loaded, every start tries again (the demo is deterministic and
/// idempotent). `--no-demo` skips it; so does TLS (the demo client would
/// need the CA).
fn first_start_demo(settings: &Settings, page: &str) -> Option<tokio::task::JoinHandle<()>> {
    let pending = settings.database.data_dir.join(DEMO_PENDING_FILE);
    if settings.database.database_url.is_some()
        || settings.no_demo
        || settings.tls_cert.is_some()
        || !pending.exists()
    {
        return None;
    }
    let options = crate::demo::DemoOptions {
        // Gentler than the command's default: the service is serving too.
        concurrency: 2,
        ..crate::demo::DemoOptions::defaults(crate::client::ClientOptions {
            target: Some(page.to_owned()),
            data_dir: settings.database.data_dir.clone(),
            key: None,
            ca_cert: None,
        })
    };
    tracing::info!("first start: loading the demo organisation (--no-demo skips it)");
    Some(tokio::spawn(async move {
        match crate::demo::run(options).await {
            Ok(()) => {
                std::fs::remove_file(&pending).ok();
                tracing::info!("demo organisation loaded");
            }
            Err(err) => tracing::warn!(
                error = format!("{err:#}"),
                "cannot load the demo organisation"
            ),
        }
    }))
}

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
fn replica_options(settings: &Settings) -> anyhow::Result<Vec<PgConnectOptions>> {
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
    /// dashboard key and the demo to load), the key cache.
    async fn prepare(
        db: &Database,
        settings: &Settings,
        access: &AccessControl,
    ) -> anyhow::Result<()> {
        store::migrate(&db.pool).await?;
        let data_dir = &settings.database.data_dir;
        let key_file = data_dir.join("admin.key");
        // The embedded database is a developer's or a trial's: its first
        // start also makes a read key the printed dashboard link signs in
        // with, and marks the demo organisation as to be loaded.
        let embedded = settings.database.database_url.is_none();
        let dashboard_key = data_dir.join(DASHBOARD_KEY_FILE);
        let first_start = store::keys::bootstrap_admin(
            &db.pool,
            &key_file,
            embedded.then_some(dashboard_key.as_path()),
        )
        .await?;
        if let Some(key_id) = &first_start {
            tracing::info!(
                key_id,
                path = %std::path::absolute(&key_file).unwrap_or(key_file.clone()).display(),
                "no API key existed: created an admin key and wrote it to this file (mode 0600)"
            );
            if embedded && !settings.no_demo {
                std::fs::write(data_dir.join(DEMO_PENDING_FILE), b"")
                    .with_context(|| format!("cannot write {DEMO_PENDING_FILE}"))?;
            }
        }
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

        if crate::scrape::install().is_none() {
            tracing::warn!("another metrics recorder is installed: /metrics records nothing");
        }
        let (reporter, health_service) = tonic_health::server::health_reporter();
        let (stop_health, stop_rx) = watch::channel(false);
        let health = DatabaseHealth {
            reporter,
            services: grpc::service_names(),
            options: db.options.clone(),
            interval: settings.health_interval,
            embedded: db.embedded.clone(),
        };
        let health_task = tokio::spawn(health.run(stop_rx.clone()));
        let keys_task = tokio::spawn(access.clone().refresh_until(db.pool.clone(), stop_rx));

        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(grpc::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = reflection().build_v1()?;
        let reflection_v1alpha = reflection().build_v1alpha()?;

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
        let sampler = tokio::spawn({
            let watches = services.watches.clone();
            crate::scrape::sample_until(
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
        let (stop_streams, streams_stopped) = watch::channel(false);
        let stream_limits = StreamLimits {
            access: access.clone(),
            shutdown: streams_stopped,
            batch_timeout: settings.call_timeout,
        };
        let mut builder = Server::builder()
            // HTTP/1.1 too, for Connect's JSON (grpc::connect).
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
                    .layer(PageLayer)
                    .layer(ConnectLayer)
                    .layer(RpcTraceLayer)
                    .layer(AuthLayer::new(access))
                    .layer(DeadlineLayer {
                        timeout: settings.call_timeout,
                    }),
            )
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(DirectoryServiceServer::new(DirectoryApi::new(
                services.clone(),
            )))
            .add_service(
                ActivityServiceServer::new(ActivityApi::new(
                    services.clone(),
                    stream_limits.clone(),
                ))
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            )
            .add_service(KpiServiceServer::new(KpiApi::new(
                services.clone(),
                settings.time_zone,
                stream_limits.clone(),
            )))
            .add_service(ExchangeRateServiceServer::new(RatesApi::new(
                services.clone(),
            )))
            .add_service(TargetServiceServer::new(TargetApi::new(
                services,
                settings.time_zone,
            )))
            .serve_with_incoming_shutdown(incoming, async {
                drain_rx.await.ok();
            });
        tracing::info!(address = %local_addr, "kpi-service listening");
        let page = page_url(local_addr, settings.tls_cert.is_some());
        tracing::info!(url = %page, "dashboard page");
        let demo = first_start_demo(&settings, &page);
        if settings.database.database_url.is_none() {
            print_dashboard_link(&settings.database.data_dir, &page);
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
