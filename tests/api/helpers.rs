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
    io::{BufRead, BufReader},
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::Child,
    process::{Command, Stdio},
    str::FromStr,
    sync::{
        OnceLock,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
    time::Instant,
};

use kpi_service::{
    app::Application,
    config::Settings,
    domain::access::Role,
    embedded_pg::EmbeddedPostgres,
    grpc::pb::{
        self, activity_service_client::ActivityServiceClient,
        directory_service_client::DirectoryServiceClient,
    },
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

/// A `postgres://` URL reaching `database` over the cluster's socket.
pub fn socket_url(pg: &EmbeddedPostgres, database: &str) -> String {
    format!(
        "postgres://postgres@localhost/{database}?host={}",
        pg.socket_dir().display()
    )
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

/// Whether a throwaway cluster flushes commits to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// PostgreSQL's defaults: a commit survives a crash.
    On,
    /// No fsync, asynchronous commit: fast, for tests that do not crash it.
    Off,
}

/// Starts a PostgreSQL cluster in a new temporary directory that a watchdog
/// removes (stopping the cluster first) when this process exits.
pub fn throwaway_cluster(label: &str, durability: Durability) -> EmbeddedPostgres {
    let dir = watched_dir(label);
    let mut pg = EmbeddedPostgres::new(&dir)
        .unwrap_or_else(|e| panic!("{e:#}"))
        .with_setting("max_connections", "300");
    if durability == Durability::Off {
        pg = pg
            .with_setting("fsync", "off")
            .with_setting("full_page_writes", "off")
            .with_setting("synchronous_commit", "off");
    }
    pg.prepare().unwrap_or_else(|e| panic!("{e:#}"));
    pg.start().unwrap_or_else(|e| panic!("{e:#}"));
    pg
}

/// A new directory under /tmp that a watchdog removes (stopping any
/// PostgreSQL in it first) when the test process exits, however it exits.
/// Mode 0755: a PostgreSQL run as the postgres user must enter it.
pub fn watched_dir(label: &str) -> PathBuf {
    let dir = PathBuf::from(format!(
        "/tmp/kpi-test-{}-{label}-{}",
        std::process::id(),
        unique_suffix()
    ));
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", dir.display()));
    spawn_watchdog(&dir);
    dir
}

/// A shell that waits for this process to end, then stops the cluster in
/// `dir` (immediate shutdown) and deletes `dir`. It runs in its own process
/// group so that a Ctrl-C of the test run does not kill it first.
// It must outlive this process, so nobody waits for it here.
#[allow(clippy::zombie_processes)]
fn spawn_watchdog(dir: &Path) {
    let script = r#"
        while kill -0 "$0" 2>/dev/null; do sleep 0.2; done
        pidfile="$1/postgres/postmaster.pid"
        if [ -f "$pidfile" ]; then
            pid=$(head -n 1 "$pidfile")
            kill -QUIT "$pid" 2>/dev/null
            for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        fi
        rm -rf "$1"
    "#;
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(std::process::id().to_string())
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the cleanup watchdog: {e}"));
}

fn unique_suffix() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
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
        let admin_key = kpi_service::store::keys::create(&setup, "tests", Role::Admin, None)
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
        kpi_service::store::keys::create(&self.db, "test key", role, team)
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
        tokio::time::sleep(kpi_service::access::REFRESH_EVERY * 3).await;
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

/// An upsert request for a rep with a derived name and email.
pub fn rep(rep_id: &str, team_id: &str) -> pb::UpsertRepRequest {
    pb::UpsertRepRequest {
        rep_id: rep_id.into(),
        display_name: format!("Rep {rep_id}"),
        email: format!("{rep_id}@example.com"),
        active: None,
        team_id: team_id.into(),
        team_effective_time: None,
    }
}

pub fn ts(rfc3339: &str) -> prost_types::Timestamp {
    let at = chrono::DateTime::parse_from_rfc3339(rfc3339)
        .unwrap_or_else(|e| panic!("bad timestamp {rfc3339}: {e}"));
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: 0,
    }
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
pub fn micros(at: &Option<prost_types::Timestamp>) -> i64 {
    at.as_ref()
        .map_or(0, |t| t.seconds * 1_000_000 + i64::from(t.nanos / 1000))
}

/// The `kpi-service` binary running as a separate process, as a user would
/// run it.
pub struct ServiceProcess {
    child: Child,
    /// The address it listens on.
    pub addr: String,
    data_dir: PathBuf,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl ServiceProcess {
    /// Starts the binary on 127.0.0.1:0 with `data_dir`, on the embedded
    /// PostgreSQL or on `database_url`, and reads the bound address from its
    /// JSON log.
    pub fn start(data_dir: &Path, database_url: Option<&str>) -> Self {
        Self::start_with(data_dir, database_url, &[], "info")
    }

    /// Like `start`, with extra flags and a RUST_LOG filter.
    pub fn start_with(
        data_dir: &Path,
        database_url: Option<&str>,
        args: &[&str],
        log_filter: &str,
    ) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_kpi-service"));
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(args)
            .arg("--data-dir")
            .arg(data_dir)
            .env_remove("DATABASE_URL")
            .env("RUST_LOG", log_filter)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(url) = database_url {
            command.env("DATABASE_URL", url);
        }
        let mut child = command.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log_writer = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(mut log) = log_writer.lock() {
                    log.push(line.clone());
                }
                if line.contains("kpi-service listening") {
                    let addr = line
                        .split("\"address\":\"")
                        .nth(1)
                        .and_then(|rest| rest.split('"').next())
                        .unwrap_or_default()
                        .to_owned();
                    tx.send(addr).ok();
                }
                // Echo so a failing run shows the service's log.
                eprintln!("[kpi-service] {line}");
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("the service did not start listening within 60 s"));
        Self {
            child,
            addr,
            data_dir: data_dir.to_owned(),
            log,
        }
    }

    /// Everything the service logged so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    /// The admin key the service wrote on its first start.
    pub fn admin_key(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("admin.key"))
            .unwrap_or_else(|e| panic!("no admin.key in {}: {e}", self.data_dir.display()))
            .trim()
            .to_owned()
    }

    /// SIGTERM, then wait; returns how long the exit took.
    pub fn terminate(mut self) -> Duration {
        let started = Instant::now();
        let status = self.stop();
        assert!(
            status.is_some_and(|s| s.success()),
            "the service did not exit cleanly on SIGTERM: {status:?}"
        );
        started.elapsed()
    }

    /// SIGTERM and up to 30 s of waiting, then SIGKILL.
    fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().ok();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child.kill().ok();
        self.child.wait().ok();
        None
    }
}

impl ServiceProcess {
    /// SIGKILL: no shutdown, no draining.
    pub fn kill(mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

impl Drop for ServiceProcess {
    /// A failed test must not leave the service (or its PostgreSQL) behind.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.stop();
        }
    }
}
