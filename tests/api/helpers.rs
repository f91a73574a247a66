//! The test harness.
//!
//! One throwaway PostgreSQL cluster per test run, started from the installed
//! server binaries in a temporary directory (or the server `DATABASE_URL`
//! names, when set). Every test gets its own fresh database, and its own
//! kpi-service listening on 127.0.0.1:0 with migrations applied. A watchdog
//! process stops the cluster and deletes its directory as soon as the test
//! process exits, however it exits; databases made on a `DATABASE_URL`
//! server are dropped when their test ends.

use std::{
    path::{Path, PathBuf},
    process::Command,
    str::FromStr,
    sync::{
        OnceLock,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

pub use kpi_service::testkit::{
    cluster::{Durability, socket_url},
    org::rep,
    process::ServiceProcess,
};
use kpi_service::{
    app::Application,
    config::Settings,
    domain::access::Role,
    embedded_pg::EmbeddedPostgres,
    proto::pb::{
        self, activity_service_client::ActivityServiceClient,
        directory_service_client::DirectoryServiceClient,
    },
    testkit::{cluster, process::Launch},
};
use sqlx::{
    Connection, PgConnection, PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::{
    Code, Status,
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_types::StatusExt;

/// Where test databases are created.
enum TestServer {
    /// `DATABASE_URL` was set: use that server; drop test databases after.
    External { url: String },
    /// A cluster of our own, gone with the test process.
    Throwaway { pg: EmbeddedPostgres },
}

impl TestServer {
    fn url_for(&self, database: &str) -> String {
        match self {
            Self::External { url } => {
                let mut parsed = url.clone();
                // Replace the path (database name), keep everything else.
                if let Some(scheme_end) = parsed.find("://") {
                    let rest = &parsed[scheme_end + 3..];
                    let path_start = rest.find('/').map(|i| scheme_end + 3 + i);
                    let query_start = parsed.find('?');
                    let query = query_start
                        .map(|q| parsed[q..].to_owned())
                        .unwrap_or_default();
                    let base_end = path_start.or(query_start).unwrap_or(parsed.len());
                    parsed = format!("{}/{database}{query}", &parsed[..base_end]);
                }
                parsed
            }
            Self::Throwaway { pg } => socket_url(pg, database),
        }
    }

    fn admin_options(&self) -> PgConnectOptions {
        match self {
            Self::External { url } => PgConnectOptions::from_str(url)
                .unwrap_or_else(|_| panic!("DATABASE_URL is not a valid URL")),
            Self::Throwaway { pg } => pg.connect_options("postgres"),
        }
    }
}

static SERVER: OnceLock<TestServer> = OnceLock::new();

fn test_server() -> &'static TestServer {
    SERVER.get_or_init(|| match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => TestServer::External { url },
        _ => TestServer::Throwaway {
            pg: throwaway_cluster("run", Durability::Off),
        },
    })
}

/// A throwaway cluster for this test process (see `testkit::cluster`).
pub fn throwaway_cluster(label: &str, durability: Durability) -> EmbeddedPostgres {
    cluster::throwaway_cluster(label, durability, &[]).unwrap_or_else(|e| panic!("{e:#}"))
}

/// A cluster of the test's own (`throwaway_cluster`) with an empty `kpi`
/// database.
pub async fn throwaway_cluster_with_kpi(
    label: &'static str,
    durability: Durability,
) -> EmbeddedPostgres {
    let pg = tokio::task::spawn_blocking(move || throwaway_cluster(label, durability))
        .await
        .unwrap();
    pg.ensure_database("kpi")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    pg
}

/// A new directory removed when the test process exits.
pub fn watched_dir(label: &str) -> PathBuf {
    cluster::watched_dir(label).unwrap_or_else(|e| panic!("{e:#}"))
}

fn unique_suffix() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A fresh, empty database of the run's PostgreSQL (nothing migrated),
/// dropped with the value when the run's PostgreSQL is external.
pub struct EmptyDatabase {
    pub url: String,
    _database: TestDatabase,
}

impl EmptyDatabase {
    pub async fn create() -> Self {
        let database = TestDatabase::create().await;
        Self {
            url: test_server().url_for(&database.name),
            _database: database,
        }
    }
}

/// A database of its own for one test.
struct TestDatabase {
    name: String,
    external: bool,
}

impl TestDatabase {
    async fn create() -> Self {
        let server = test_server();
        let name = format!("kpi_test_{}_{}", std::process::id(), unique_suffix());
        let mut admin = PgConnection::connect_with(&server.admin_options())
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the test PostgreSQL: {e}"));
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
        admin.close().await.ok();
        Self {
            name,
            external: matches!(server, TestServer::External { .. }),
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if !self.external {
            return; // the whole cluster goes away with the process
        }
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let mut admin = PgConnection::connect_with(&test_server().admin_options()).await?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut admin)
                .await?;
                Ok::<_, anyhow::Error>(())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("warning: could not drop test database {}", self.name);
        }
    }
}

/// Adds `authorization: Bearer <key>` to every call.
#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl Bearer {
    pub fn new(token: &str) -> Self {
        Self(
            format!("Bearer {token}")
                .parse()
                .unwrap_or_else(|_| panic!("not a header value: {token}")),
        )
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// A channel whose calls carry an API key.
pub type Authed = InterceptedService<Channel, Bearer>;

/// A running kpi-service on a fresh database, and clients for it (with an
/// admin key).
pub struct TestApp {
    /// The database URL the server uses.
    pub url: String,
    /// `http://127.0.0.1:PORT`, for clients in other processes.
    pub endpoint: String,
    pub directory: DirectoryServiceClient<Authed>,
    pub activity: ActivityServiceClient<Authed>,
    /// The admin key the clients use.
    pub admin_key: String,
    pub channel: Channel,
    pub health: HealthClient<Channel>,
    /// A separate pool on the app's database, for checking what is stored.
    pub db: PgPool,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
    _database: Option<TestDatabase>,
}

/// Settings for a test server: an ephemeral port, quick health probes.
pub fn test_settings(database_url: String) -> Settings {
    let mut settings = Settings::defaults();
    settings.listen = "127.0.0.1:0".parse().unwrap_or_else(|_| unreachable!());
    settings.database.database_url = Some(database_url);
    settings.database.db_max_connections = 8;
    settings.health_interval = Duration::from_millis(250);
    settings
}

impl TestApp {
    /// A server on a fresh database of the run's PostgreSQL.
    pub async fn spawn() -> Self {
        let database = TestDatabase::create().await;
        let url = test_server().url_for(&database.name);
        let mut app = Self::spawn_with(test_settings(url)).await;
        app._database = Some(database);
        app
    }

    /// A server with the given settings (the database must exist). An admin
    /// key is created first, so the server writes no admin.key file.
    pub async fn spawn_with(settings: Settings) -> Self {
        let url = settings.database.database_url.clone().unwrap_or_default();
        let setup = PgPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the test database: {e}"));
        kpi_service::store::migrate(&setup)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        let admin_key = kpi_service::store::keys::create(&setup, "tests", Role::Admin, None, None)
            .await
            .unwrap_or_else(|e| panic!("cannot create a key: {e}"))
            .token;
        setup.close().await;
        let application = Application::build(settings)
            .await
            .unwrap_or_else(|e| panic!("cannot build the app: {e:#}"));
        let addr = application.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(application.run_until_stopped(async {
            stopped.await.ok();
        }));
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap_or_else(|e| panic!("bad address: {e}"))
            .connect()
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the app: {e}"));
        let db = PgPoolOptions::new()
            .max_connections(2)
            .connect(&url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the test database: {e}"));
        let app = Self {
            url: url.clone(),
            endpoint: format!("http://{addr}"),
            directory: DirectoryServiceClient::with_interceptor(
                channel.clone(),
                Bearer::new(&admin_key),
            ),
            activity: ActivityServiceClient::with_interceptor(
                channel.clone(),
                Bearer::new(&admin_key),
            ),
            admin_key,
            channel: channel.clone(),
            health: HealthClient::new(channel.clone()),
            db,
            stop: Some(stop),
            server: Some(server),
            _database: None,
        };
        app.wait_for_health("", ServingStatus::Serving, Duration::from_secs(10))
            .await;
        app
    }

    /// Sends the shutdown signal and waits for the server to finish.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            stop.send(()).ok();
        }
        match self.server.take() {
            Some(server) => server.await?,
            None => Ok(()),
        }
    }

    /// A new key with `role` (and team scope), as its token.
    pub async fn key(&self, role: Role, team: Option<&str>) -> String {
        kpi_service::store::keys::create(&self.db, "test key", role, team, None)
            .await
            .unwrap_or_else(|e| panic!("cannot create a key: {e}"))
            .token
    }

    /// A directory client using `token`.
    pub fn directory_as(&self, token: &str) -> DirectoryServiceClient<Authed> {
        DirectoryServiceClient::with_interceptor(self.channel.clone(), Bearer::new(token))
    }

    /// Waits until the server's key cache has caught up with the database.
    pub async fn keys_refreshed(&self) {
        tokio::time::sleep(kpi_service::service::access::REFRESH_EVERY * 3).await;
    }

    pub async fn health_of(&self, service: &str) -> Result<ServingStatus, Status> {
        let response = self
            .health
            .clone()
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await?;
        Ok(response.into_inner().status())
    }

    /// Polls health until `service` reports `want`; returns how long it
    /// took, or panics after `within`.
    pub async fn wait_for_health(
        &self,
        service: &str,
        want: ServingStatus,
        within: Duration,
    ) -> Duration {
        let started = tokio::time::Instant::now();
        loop {
            if let Ok(status) = self.health_of(service).await
                && status == want
            {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < within,
                "health of '{service}' did not become {want:?} within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn upsert_team(
        &self,
        team_id: &str,
        display_name: &str,
        parent_team_id: &str,
    ) -> Result<pb::Team, Status> {
        let response = self
            .directory
            .clone()
            .upsert_team(pb::UpsertTeamRequest {
                team_id: team_id.into(),
                display_name: display_name.into(),
                parent_team_id: parent_team_id.into(),
            })
            .await?;
        Ok(response.into_inner().team.unwrap_or_default())
    }

    pub async fn upsert_rep(&self, request: pb::UpsertRepRequest) -> Result<pb::Rep, Status> {
        let response = self.directory.clone().upsert_rep(request).await?;
        Ok(response.into_inner().rep.unwrap_or_default())
    }

    /// A rep in `team_id` with default name and email.
    pub async fn rep_in(&self, rep_id: &str, team_id: &str) -> pb::Rep {
        self.upsert_rep(rep(rep_id, team_id))
            .await
            .unwrap_or_else(|e| panic!("cannot upsert rep {rep_id}: {e:?}"))
    }

    pub async fn get_rep(&self, rep_id: &str) -> Result<pb::Rep, Status> {
        let response = self
            .directory
            .clone()
            .get_rep(pb::GetRepRequest {
                rep_id: rep_id.into(),
            })
            .await?;
        Ok(response.into_inner().rep.unwrap_or_default())
    }

    pub async fn get_team(&self, team_id: &str) -> Result<pb::Team, Status> {
        let response = self
            .directory
            .clone()
            .get_team(pb::GetTeamRequest {
                team_id: team_id.into(),
            })
            .await?;
        Ok(response.into_inner().team.unwrap_or_default())
    }

    pub async fn list_reps(
        &self,
        request: pb::ListRepsRequest,
    ) -> Result<pb::ListRepsResponse, Status> {
        Ok(self
            .directory
            .clone()
            .list_reps(request)
            .await?
            .into_inner())
    }

    pub async fn list_teams(
        &self,
        request: pb::ListTeamsRequest,
    ) -> Result<pb::ListTeamsResponse, Status> {
        Ok(self
            .directory
            .clone()
            .list_teams(request)
            .await?
            .into_inner())
    }

    pub async fn record(
        &self,
        records: Vec<pb::ActivityRecord>,
    ) -> Result<pb::RecordCounts, Status> {
        let response = self
            .activity
            .clone()
            .record_activities(pb::RecordActivitiesRequest { records })
            .await?;
        Ok(response.into_inner().counts.unwrap_or_default())
    }

    /// Sends each batch as one message of a StreamActivities call.
    pub async fn stream(
        &self,
        batches: Vec<Vec<pb::ActivityRecord>>,
    ) -> Result<pb::StreamActivitiesResponse, Status> {
        let messages = batches
            .into_iter()
            .map(|records| pb::StreamActivitiesRequest { records });
        let response = self
            .activity
            .clone()
            .stream_activities(futures::stream::iter(messages))
            .await?;
        Ok(response.into_inner())
    }

    /// Counts rows of `table` (a fixed name from the test itself).
    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&self.db)
            .await
            .unwrap_or_else(|e| panic!("cannot count {table}: {e}"))
    }
}

/// An RFC 3339 instant of a test's data.
pub fn at(rfc3339: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .unwrap_or_else(|e| panic!("bad timestamp {rfc3339}: {e}"))
        .to_utc()
}

/// The same as a protobuf timestamp.
pub fn ts(rfc3339: &str) -> pbjson_types::Timestamp {
    kpi_service::proto::timestamp(at(rfc3339))
}

/// Asserts `status` is INVALID_ARGUMENT whose BadRequest names exactly
/// `fields` (in order).
#[track_caller]
pub fn assert_invalid(status: &Status, fields: &[&str]) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let details = status.get_error_details();
    let named: Vec<String> = details
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default();
    assert_eq!(named, fields, "{status:?}");
    assert_eq!(
        details.error_info().map(|i| i.reason.as_str()),
        Some("INVALID_FIELDS")
    );
}

/// Asserts `status` has `code` and the ErrorInfo `reason`.
#[track_caller]
pub fn assert_status(status: &Status, code: Code, reason: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(
        status
            .get_error_details()
            .error_info()
            .map(|i| i.reason.clone()),
        Some(reason.to_owned()),
        "{status:?}"
    );
}

/// Runs the real `grpcurl` (`GRPCURL`, else `grpcurl` on PATH; `cargo xtask
/// test` provides it) with `args`. Panics with the way to get it if it is
/// missing.
pub fn grpcurl_output(args: &[&str]) -> std::process::Output {
    let bin = std::env::var("GRPCURL").unwrap_or_else(|_| "grpcurl".to_owned());
    Command::new(&bin).args(args).output().unwrap_or_else(|e| {
        panic!(
            "cannot run grpcurl ({bin}): {e}; run the suite with `cargo xtask test`, \
             which installs it, or set GRPCURL to the binary"
        )
    })
}

/// `grpcurl_output`: whether it succeeded, and its stdout followed by its
/// stderr.
pub fn run_grpcurl(args: &[&str]) -> (bool, String) {
    let output = grpcurl_output(args);
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

/// A timestamp as microseconds since the epoch (0 when absent), to compare.
pub fn micros(at: &Option<pbjson_types::Timestamp>) -> i64 {
    at.as_ref()
        .map_or(0, |t| t.seconds * 1_000_000 + i64::from(t.nanos / 1000))
}

/// The `kpi-service` binary of this build.
pub const BIN: &str = env!("CARGO_BIN_EXE_kpi-service");

/// Starts the binary on 127.0.0.1:0 with `data_dir`, on the embedded
/// PostgreSQL or on `database_url`.
pub fn start_service(data_dir: &Path, database_url: Option<&str>) -> ServiceProcess {
    start_service_with(data_dir, database_url, &[], "info")
}

/// Like `start_service`, with extra flags and a RUST_LOG filter.
pub fn start_service_with(
    data_dir: &Path,
    database_url: Option<&str>,
    args: &[&str],
    log_filter: &str,
) -> ServiceProcess {
    ServiceProcess::start(&Launch {
        database_url,
        args,
        log_filter,
        ..Launch::new(BIN, data_dir)
    })
    .unwrap_or_else(|e| panic!("{e:#}"))
}
