//! The local PostgreSQL the service runs when no `DATABASE_URL` is given.
//!
//! A cluster in `<data-dir>/postgres`, created on first start with the
//! installed server binaries and reused afterwards. It listens only on a
//! unix socket in `<data-dir>/run` (mode 0700, no TCP port), trusts the
//! connections that reach that socket, and is stopped with the service.
//! PostgreSQL refuses to run as root, so a service running as root runs it
//! as the `postgres` system user, on directories that user owns (`unix`).
//! One process owns a data directory at a time (`lock`).

mod lock;
mod unix;

use std::{
    fs,
    os::unix::{
        ffi::OsStrExt,
        fs::{MetadataExt, PermissionsExt},
        process::CommandExt,
    },
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use anyhow::{Context as _, anyhow, bail};
use sqlx::{Connection, PgConnection, postgres::PgConnectOptions};

use self::unix::{SystemUser, check_reachable, chown_recursive, is_root, lookup_user};
pub use self::{
    lock::DirLock,
    unix::{ProcessState, process_state},
};

/// The database the service uses inside its own cluster.
pub const DATABASE: &str = "kpi";
/// The cluster's superuser.
const SUPERUSER: &str = "postgres";
/// The port only names the socket file; nothing listens on TCP.
const PORT: u16 = 5432;
/// Longest unix socket path the kernel accepts (sun_path minus the NUL).
const MAX_SOCKET_PATH: usize = 107;

/// How a process uses the embedded cluster.
#[derive(Debug)]
pub enum Tenure {
    /// It holds the data directory's claim: it starts the cluster (or
    /// adopts one a killed owner left running), restarts it when it dies,
    /// and stops it when done.
    Owner(DirLock),
    /// A serving process owns the cluster; this one (a `keys` or `migrate`
    /// command) uses it while it runs and never stops it.
    Guest { owner: String },
}

#[derive(Debug, Clone)]
pub struct EmbeddedPostgres {
    bin_dir: PathBuf,
    data_dir: PathBuf,
    pgdata: PathBuf,
    socket_dir: PathBuf,
    log_file: PathBuf,
    run_as: Option<SystemUser>,
    settings: Vec<(String, String)>,
}

impl EmbeddedPostgres {
    /// Locates the server binaries and plans the directories under
    /// `data_dir`; touches nothing yet.
    pub fn new(data_dir: &Path) -> anyhow::Result<Self> {
        let bin_dir = find_bin_dir()?;
        let data_dir = std::path::absolute(data_dir)
            .with_context(|| format!("cannot resolve data directory {}", data_dir.display()))?;
        let run_as = if is_root() {
            Some(lookup_user("postgres").ok_or_else(|| {
                anyhow!(
                    "the service runs as root and PostgreSQL refuses to: create a 'postgres' \
                     system user (the PostgreSQL server package does), run the service as \
                     another user, or set DATABASE_URL"
                )
            })?)
        } else {
            None
        };
        let socket_dir = data_dir.join("run");
        let socket_len = socket_dir.as_os_str().len() + "/.s.PGSQL.5432".len();
        if socket_len > MAX_SOCKET_PATH {
            bail!(
                "the data directory path is too long for PostgreSQL's unix socket ({socket_len} \
                 bytes, at most {MAX_SOCKET_PATH}): choose a shorter --data-dir"
            );
        }
        if data_dir.as_os_str().as_bytes().contains(&b'\'') {
            bail!("the data directory path must not contain a single quote (')");
        }
        Ok(Self {
            bin_dir,
            pgdata: data_dir.join("postgres"),
            log_file: data_dir.join("postgres.log"),
            socket_dir,
            data_dir,
            run_as,
            settings: Vec::new(),
        })
    }

    /// Adds a server setting (`-c name=value`) used at every start.
    #[must_use]
    pub fn with_setting(mut self, name: &str, value: &str) -> Self {
        self.settings.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    pub fn pgdata(&self) -> &Path {
        &self.pgdata
    }

    /// Connection options for `database` over the private socket.
    pub fn connect_options(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new_without_pgpass()
            .socket(&self.socket_dir)
            .port(PORT)
            .username(SUPERUSER)
            .database(database)
    }

    /// Claims the data directory for `holder` ("kpi-service serve"): the
    /// owner if nobody else serves from it, a guest of the serving process
    /// otherwise. Creates the data directory if needed.
    pub fn claim(&self, holder: &str) -> anyhow::Result<Tenure> {
        fs::create_dir_all(&self.data_dir)
            .with_context(|| format!("cannot create data directory {}", self.data_dir.display()))?;
        Ok(
            match DirLock::try_acquire(&self.data_dir.join("kpi-service.lock"), holder)? {
                Ok(lock) => Tenure::Owner(lock),
                Err(owner) => Tenure::Guest { owner },
            },
        )
    }

    /// The data directory, for messages.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Creates the directories and, on first use, the cluster; then starts
    /// it unless it runs (`start` adopts a running one). Serialised across
    /// processes by a lock, so two first starts at once create one cluster.
    pub fn prepare_and_start(&self) -> anyhow::Result<()> {
        fs::create_dir_all(&self.data_dir)
            .with_context(|| format!("cannot create data directory {}", self.data_dir.display()))?;
        let _setup = DirLock::acquire(&self.data_dir.join("postgres.setup.lock"))?;
        self.prepare()?;
        self.start()
    }

    /// Whether `pgdata` holds a complete cluster (initdb writes
    /// `global/pg_control` late; a cluster is only ever moved into place
    /// whole, see `prepare`).
    fn has_cluster(&self) -> bool {
        self.pgdata.join("PG_VERSION").is_file() && self.pgdata.join("global/pg_control").is_file()
    }

    /// Creates the directories and, on first use, the cluster: initdb runs
    /// into a scratch directory that is renamed into place only when it
    /// succeeded, so an interrupted initdb is never taken for a cluster
    /// (its leftovers are removed at the next start).
    fn prepare(&self) -> anyhow::Result<()> {
        self.prepare_files()?;
        if self.has_cluster() {
            return Ok(());
        }
        if self.pgdata.exists() {
            let leftovers = fs::read_dir(&self.pgdata)
                .with_context(|| format!("cannot read {}", self.pgdata.display()))?
                .next()
                .is_some();
            if leftovers {
                bail!(
                    "{} is not empty but holds no complete PostgreSQL cluster: move it away and \
                     start again (the service creates a new one)",
                    self.pgdata.display()
                );
            }
            fs::remove_dir(&self.pgdata)
                .with_context(|| format!("cannot remove empty {}", self.pgdata.display()))?;
        }
        let scratch = self.data_dir.join("postgres.initdb");
        if scratch.exists() {
            tracing::warn!(dir = %scratch.display(), "removing the leftovers of an interrupted initdb");
            fs::remove_dir_all(&scratch)
                .with_context(|| format!("cannot remove {}", scratch.display()))?;
        }
        self.private_dir(&scratch)?;
        tracing::info!(pgdata = %self.pgdata.display(), "creating the embedded PostgreSQL cluster");
        let output = self
            .command("initdb")
            .arg("-D")
            .arg(&scratch)
            .args([
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
            ])
            .arg("--no-instructions")
            .output()
            .context("cannot run initdb")?;
        check_output("initdb", &output)?;
        fs::rename(&scratch, &self.pgdata).with_context(|| {
            format!(
                "cannot move the new cluster {} to {}",
                scratch.display(),
                self.pgdata.display()
            )
        })
    }

    /// Makes this cluster, which must not exist yet, a streaming replica of
    /// `primary` (a running cluster of the same binaries): `pg_basebackup`
    /// over the primary's socket, writing `standby.signal` and the
    /// connection back to the primary (`-R`). Start it with `start`: it
    /// replays the primary's WAL and answers read-only queries.
    pub fn base_backup_from(&self, primary: &EmbeddedPostgres) -> anyhow::Result<()> {
        if self.has_cluster() || self.pgdata.exists() {
            bail!("{} exists already", self.pgdata.display());
        }
        self.prepare_files()?;
        self.private_dir(&self.pgdata)?;
        let tool = self.sibling_tool("pg_basebackup");
        let output = self
            .command(&tool.to_string_lossy())
            .arg("-D")
            .arg(&self.pgdata)
            .arg("-h")
            .arg(&primary.socket_dir)
            .args([
                "-p",
                &PORT.to_string(),
                "-U",
                SUPERUSER,
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
            ])
            .output()
            .with_context(|| format!("cannot run {}", tool.display()))?;
        check_output("pg_basebackup", &output)
    }

    /// The socket directory and the log file, owned by the user the cluster
    /// runs as, who must be able to reach the data directory.
    fn prepare_files(&self) -> anyhow::Result<()> {
        if let Some(user) = &self.run_as {
            check_reachable(&self.data_dir, user)?;
        }
        self.private_dir(&self.socket_dir)?;
        if !self.log_file.exists() {
            fs::write(&self.log_file, b"")
                .with_context(|| format!("cannot create {}", self.log_file.display()))?;
        }
        self.hand_over(&self.log_file)
    }

    /// Starts the cluster and waits until it accepts connections. A cluster
    /// that is already running (left by a service that was killed) is
    /// adopted; a stale `postmaster.pid` from a crash is removed first.
    pub fn start(&self) -> anyhow::Result<()> {
        if let Some(pid) = self.running_pid() {
            tracing::info!(pid, "embedded PostgreSQL is already running; using it");
            return Ok(());
        }
        for stale in [
            self.pgdata.join("postmaster.pid"),
            self.socket_dir.join(format!(".s.PGSQL.{PORT}.lock")),
            self.socket_dir.join(format!(".s.PGSQL.{PORT}")),
        ] {
            if stale.exists() {
                tracing::warn!(file = %stale.display(), "removing stale file of a PostgreSQL that is not running");
                fs::remove_file(&stale)
                    .with_context(|| format!("cannot remove stale {}", stale.display()))?;
            }
        }
        let mut server_options = format!(
            "-c listen_addresses='' -k '{}' -c unix_socket_permissions=0700",
            self.socket_dir.display()
        );
        for (name, value) in &self.settings {
            server_options.push_str(&format!(" -c {name}={value}"));
        }
        let output = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&self.pgdata)
            .arg("-l")
            .arg(&self.log_file)
            .args(["-w", "-t", "60", "-s", "-o"])
            .arg(server_options)
            .arg("start")
            .output()
            .context("cannot run pg_ctl start")?;
        check_output("pg_ctl start", &output).map_err(|err| {
            err.context(format!(
                "the embedded PostgreSQL did not start; its log {} ends with:\n{}",
                self.log_file.display(),
                tail(&self.log_file, 15)
            ))
        })?;
        tracing::info!(socket_dir = %self.socket_dir.display(), "embedded PostgreSQL started");
        Ok(())
    }

    /// The postmaster's pid when it is really running: the pid file names a
    /// live `postgres` process (not a recycled pid, not a zombie).
    pub fn running_pid(&self) -> Option<u32> {
        let content = fs::read_to_string(self.pgdata.join("postmaster.pid")).ok()?;
        let pid: u32 = content.lines().next()?.trim().parse().ok()?;
        process_state(pid)
            .filter(|p| p.is_postgres())
            .filter(|p| !p.is_zombie_reaped(pid))
            .map(|_| pid)
    }

    pub fn is_running(&self) -> bool {
        self.running_pid().is_some()
    }

    /// Stops the cluster (fast shutdown: open sessions are ended, committed
    /// data is flushed).
    pub fn stop(&self) -> anyhow::Result<()> {
        if !self.is_running() {
            return Ok(());
        }
        let output = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&self.pgdata)
            .args(["-m", "fast", "-w", "-t", "60", "-s", "stop"])
            .output()
            .context("cannot run pg_ctl stop")?;
        check_output("pg_ctl stop", &output)?;
        tracing::info!("embedded PostgreSQL stopped");
        Ok(())
    }

    /// Creates `database` in the cluster unless it exists.
    pub async fn ensure_database(&self, database: &str) -> anyhow::Result<()> {
        let mut conn = PgConnection::connect_with(&self.connect_options("postgres"))
            .await
            .context("cannot connect to the embedded PostgreSQL")?;
        let exists: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
                .bind(database)
                .fetch_optional(&mut conn)
                .await?;
        if exists.is_none() {
            let quoted = database.replace('"', "\"\"");
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{quoted}\"")))
                .execute(&mut conn)
                .await
                .with_context(|| format!("cannot create database {database}"))?;
        }
        conn.close().await.ok();
        Ok(())
    }

    /// A tool of the same installation that the bin directory may lack (a
    /// directory of links to initdb, pg_ctl and postgres only): found next
    /// to where `postgres` really is.
    fn sibling_tool(&self, name: &str) -> PathBuf {
        let here = self.bin_dir.join(name);
        if here.exists() {
            return here;
        }
        fs::canonicalize(self.bin_dir.join("postgres"))
            .ok()
            .and_then(|real| real.parent().map(|dir| dir.join(name)))
            .unwrap_or(here)
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin_dir.join(program));
        command
            .current_dir(&self.data_dir)
            .env_remove("PGDATA")
            .env("LC_ALL", "C")
            .stdin(Stdio::null());
        if let Some(user) = &self.run_as {
            command
                .uid(user.uid)
                .gid(user.gid)
                .env("USER", &user.name)
                .env("HOME", &self.pgdata);
        }
        command
    }

    /// Creates `dir` (mode 0700) owned by the user the cluster runs as.
    fn private_dir(&self, dir: &Path) -> anyhow::Result<()> {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot set permissions of {}", dir.display()))?;
        self.hand_over(dir)
    }

    /// Gives `path` (recursively) to the user the cluster runs as, when that
    /// is not us and it does not own it yet.
    fn hand_over(&self, path: &Path) -> anyhow::Result<()> {
        let Some(user) = &self.run_as else {
            return Ok(());
        };
        let meta = fs::symlink_metadata(path)?;
        if meta.uid() == user.uid {
            return Ok(());
        }
        chown_recursive(path, user.uid, user.gid)
            .with_context(|| format!("cannot give {} to user {}", path.display(), user.name))
    }
}

/// Finds a directory holding `initdb`, `pg_ctl` and `postgres`: the
/// `KPI_PG_BIN_DIR` environment variable, then PATH, then
/// `pg_config --bindir`, then the newest `/usr/lib/postgresql/*/bin` or
/// `/usr/pgsql-*/bin`.
pub fn find_bin_dir() -> anyhow::Result<PathBuf> {
    let complete = |dir: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|bin| dir.join(bin).is_file())
    };
    if let Some(dir) = std::env::var_os("KPI_PG_BIN_DIR") {
        let dir = PathBuf::from(dir);
        if complete(&dir) {
            return Ok(dir);
        }
        bail!(
            "KPI_PG_BIN_DIR={} does not contain initdb, pg_ctl and postgres",
            dir.display()
        );
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    if let Some(dir) = std::env::split_paths(&path).find(|dir| complete(dir)) {
        return Ok(dir);
    }
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if output.status.success() && complete(&dir) {
            return Ok(dir);
        }
    }
    let mut candidates: Vec<(u32, PathBuf)> = Vec::new();
    for (parent, prefix) in [("/usr/lib/postgresql", ""), ("/usr", "pgsql-")] {
        let Ok(entries) = fs::read_dir(parent) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(version) = name
                .strip_prefix(prefix)
                .and_then(|v| v.parse::<u32>().ok())
            else {
                continue;
            };
            let dir = entry.path().join("bin");
            if complete(&dir) {
                candidates.push((version, dir));
            }
        }
    }
    candidates.sort();
    candidates.pop().map(|(_, dir)| dir).ok_or_else(|| {
        anyhow!(
            "no PostgreSQL server binaries (initdb, pg_ctl, postgres) found on PATH, through \
             `pg_config --bindir`, or in /usr/lib/postgresql/*/bin. Install the PostgreSQL \
             server (Debian/Ubuntu: `apt-get install postgresql`; Fedora: `dnf install \
             postgresql-server`; macOS: `brew install postgresql@16`), point KPI_PG_BIN_DIR at \
             its bin directory, or set DATABASE_URL to use an existing PostgreSQL"
        )
    })
}

fn check_output(what: &str, output: &Output) -> anyhow::Result<()> {
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    bail!(
        "{what} failed ({}): {}{}",
        output.status,
        stderr.trim(),
        stdout.trim()
    )
}

/// The last `lines` lines of a log file, for error messages.
fn tail(path: &Path, lines: usize) -> String {
    let content = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = content.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
