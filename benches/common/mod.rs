//! What the benches share: a throwaway PostgreSQL cluster with durable
//! defaults, and the service binary running against it as its own process.

use std::{
    io::{BufRead, BufReader},
    os::unix::fs::PermissionsExt,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use kpi_service::{
    demo,
    embedded_pg::EmbeddedPostgres,
    grpc::pb::{self, directory_service_client::DirectoryServiceClient},
};
use sqlx::{Connection, PgConnection};
use tonic::transport::Channel;

/// A numeric setting from the environment, or `default`.
pub fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The bench organisation: team `bench`, with `pods` sub-teams `pod-N`
/// (none: the reps are in `bench` itself) and `reps` reps `rep-NNN` spread
/// over them.
pub async fn organisation(
    channel: Channel,
    key: &str,
    pods: usize,
    reps: usize,
) -> anyhow::Result<()> {
    let mut directory = DirectoryServiceClient::with_interceptor(channel, demo::bearer(key)?);
    let team = |team_id: String, parent_team_id: &str| pb::UpsertTeamRequest {
        display_name: team_id.replace('-', " "),
        team_id,
        parent_team_id: parent_team_id.into(),
    };
    directory.upsert_team(team("bench".into(), "")).await?;
    for pod in 0..pods {
        directory
            .upsert_team(team(format!("pod-{pod}"), "bench"))
            .await?;
    }
    for r in 0..reps {
        directory
            .upsert_rep(pb::UpsertRepRequest {
                rep_id: format!("rep-{r:03}"),
                display_name: format!("Rep {r}"),
                email: String::new(),
                active: None,
                team_id: if pods == 0 {
                    "bench".into()
                } else {
                    format!("pod-{}", r % pods)
                },
                team_effective_time: None,
            })
            .await?;
    }
    Ok(())
}

pub struct Cluster {
    pub pg: EmbeddedPostgres,
    dir: PathBuf,
}

impl Cluster {
    /// A new cluster in /tmp with PostgreSQL's defaults (durable commits)
    /// and a `kpi` database.
    pub async fn start(label: &str) -> anyhow::Result<Self> {
        let dir = PathBuf::from(format!("/tmp/kpi-bench-{label}-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        let pg = EmbeddedPostgres::new(&dir)?
            .with_setting("max_connections", "200")
            .with_setting("shared_buffers", "1GB")
            .with_setting("max_wal_size", "8GB");
        pg.prepare()?;
        pg.start()?;
        let mut admin = PgConnection::connect_with(&pg.connect_options("postgres")).await?;
        sqlx::raw_sql("CREATE DATABASE kpi")
            .execute(&mut admin)
            .await?;
        Ok(Self { pg, dir })
    }

    pub fn url(&self) -> String {
        format!(
            "postgres://postgres@localhost/kpi?host={}",
            self.pg.socket_dir().display()
        )
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("service")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Err(err) = self.pg.stop() {
            eprintln!("could not stop the bench cluster: {err:#}");
        }
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

/// The release binary serving on 127.0.0.1:0 against `database_url`.
pub struct Service {
    child: Child,
    pub addr: String,
    data_dir: PathBuf,
}

impl Service {
    pub fn start(cluster: &Cluster) -> anyhow::Result<Self> {
        let data_dir = cluster.data_dir();
        std::fs::create_dir_all(&data_dir)?;
        let mut child = Command::new(env!("CARGO_BIN_EXE_kpi-service"))
            .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
            .arg("--data-dir")
            .arg(&data_dir)
            .env("DATABASE_URL", cluster.url())
            .env("RUST_LOG", "warn,kpi_service::app=info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stderr"))?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("\"address\":\"").nth(1) {
                    tx.send(rest.split('"').next().unwrap_or_default().to_owned())
                        .ok();
                } else if !line.contains("\"level\":\"INFO\"") {
                    eprintln!("[kpi-service] {line}");
                }
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(60))?;
        Ok(Self {
            child,
            addr,
            data_dir,
        })
    }

    /// The admin key the service wrote on its first start.
    pub fn admin_key(&self) -> anyhow::Result<String> {
        Ok(std::fs::read_to_string(self.data_dir.join("admin.key"))?
            .trim()
            .to_owned())
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Peak resident memory (VmHWM) of the service process, in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .ok();
        self.child.wait().ok();
    }
}
