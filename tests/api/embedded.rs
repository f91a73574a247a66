//! The embedded PostgreSQL has one owner: the serving process that claimed
//! the data directory. A second `serve` is refused at once; `keys` and
//! `migrate` use the running cluster and never stop it; two first starts at
//! once create one cluster; a zombie postmaster is not "running"; an
//! interrupted initdb is never taken for a cluster.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use kpi_service::{
    embedded_pg::{EmbeddedPostgres, process_state},
    proto::pb::{self, directory_service_client::DirectoryServiceClient},
};
use tonic::transport::Channel;

use crate::helpers::{BIN, Bearer, start_service, watched_dir};
use kpi_service::testkit::process::{Launch, ServiceProcess};

/// The postmaster pid written in the cluster's pid file.
fn postmaster_pid(data_dir: &Path) -> u32 {
    let content = std::fs::read_to_string(data_dir.join("postgres/postmaster.pid"))
        .unwrap_or_else(|e| panic!("no postmaster.pid: {e}"));
    content.lines().next().unwrap().trim().parse().unwrap()
}

/// Whether `pid` is a live (not zombie) postgres process.
fn live_postgres(pid: u32) -> bool {
    process_state(pid).is_some_and(|p| p.state != 'Z' && p.comm == "postgres")
}

/// Runs `kpi-service ARGS --data-dir DIR` to completion.
fn run(args: &[&str], data_dir: &Path) -> (bool, String) {
    let output = Command::new(BIN)
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("DATABASE_URL")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// The service answers an authenticated call.
async fn answers(service: &ServiceProcess) {
    let channel = Channel::from_shared(service.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let key = service.admin_key().unwrap();
    let mut directory = DirectoryServiceClient::with_interceptor(channel, Bearer::new(&key));
    let listed = directory.list_teams(pb::ListTeamsRequest::default()).await;
    assert!(listed.is_ok(), "the service stopped answering: {listed:?}");
}

#[tokio::test]
async fn a_second_serve_on_the_same_data_dir_is_refused_at_once_and_the_first_keeps_its_database() {
    let dir = watched_dir("owner");
    let first = start_service(&dir, None);
    let postmaster = postmaster_pid(&dir);
    let started = std::time::Instant::now();
    let (ok, text) = run(&["serve", "--listen", "127.0.0.1:0"], &dir);
    assert!(!ok, "a second serve on {} ran: {text}", dir.display());
    assert!(
        text.contains(&format!(
            "data dir {} is in use by pid {}",
            dir.display(),
            first.pid()
        )),
        "{text}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    // The refusal touched nothing of the first one's.
    assert_eq!(postmaster_pid(&dir), postmaster);
    assert!(live_postgres(postmaster));
    answers(&first).await;
    first.terminate().unwrap();
}

#[tokio::test]
async fn keys_and_migrate_on_a_served_data_dir_use_its_postgres_without_stopping_it() {
    let dir = watched_dir("guest");
    let service = start_service(&dir, None);
    let postmaster = postmaster_pid(&dir);
    for args in [
        &["keys", "create", "--name", "ops", "--role", "read"][..],
        &["keys", "list"][..],
        &["migrate"][..],
    ] {
        let (ok, text) = run(args, &dir);
        assert!(ok, "{args:?}: {text}");
        // Same postmaster, still running, and no restart in the service's log.
        assert_eq!(postmaster_pid(&dir), postmaster, "{args:?}");
        assert!(live_postgres(postmaster));
        answers(&service).await;
    }
    let log = service.log();
    assert!(!log.contains("NOT_SERVING"), "{log}");
    assert!(!log.contains("starting it again"), "{log}");
    service.terminate().unwrap();
    // With the owner gone, the cluster is stopped, and a command owns it
    // for its run (starts it, stops it after).
    assert!(!live_postgres(postmaster));
    let (ok, text) = run(&["keys", "list"], &dir);
    assert!(ok, "{text}");
    assert!(!EmbeddedPostgres::new(&dir).unwrap().is_running());
}

#[tokio::test]
async fn two_first_starts_at_once_create_one_cluster_and_one_of_them_serves() {
    let dir = watched_dir("race");
    let starts: Vec<_> = (0..2)
        .map(|_| {
            let dir = dir.clone();
            std::thread::spawn(move || ServiceProcess::start(&Launch::new(BIN, &dir)))
        })
        .collect();
    let results: Vec<_> = starts.into_iter().map(|s| s.join().unwrap()).collect();
    let (served, refused): (Vec<_>, Vec<_>) = results.into_iter().partition(Result::is_ok);
    assert_eq!((served.len(), refused.len()), (1, 1));
    let refusal = format!("{:#}", refused.into_iter().next().unwrap().err().unwrap());
    assert!(refusal.contains("is in use by pid"), "{refusal}");
    assert!(!refusal.contains("initdb"), "{refusal}");
    let service = served.into_iter().next().unwrap().unwrap();
    answers(&service).await;
    service.terminate().unwrap();
}

#[test]
fn a_zombie_postmaster_is_not_running_and_is_reaped() {
    let dir = watched_dir("zombie");
    let pg = EmbeddedPostgres::new(&dir).unwrap();
    // A real `postgres` process that exits at once and is not waited for:
    // a zombie named postgres, as PID 1 in a container would keep.
    let child = Command::new(pg.bin_dir().join("postgres"))
        .arg("--version")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut state = None;
    for _ in 0..100 {
        state = process_state(pid);
        if state.as_ref().is_some_and(|s| s.state == 'Z') {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        state.map(|s| (s.comm, s.state)),
        Some(("postgres".into(), 'Z'))
    );
    std::fs::create_dir_all(pg.pgdata()).unwrap();
    std::fs::write(pg.pgdata().join("postmaster.pid"), format!("{pid}\n")).unwrap();
    assert_eq!(pg.running_pid(), None);
    // Reaped: the pid is gone.
    assert!(process_state(pid).is_none());
    std::mem::forget(child);
}

#[tokio::test]
async fn an_interrupted_initdb_is_never_taken_for_a_cluster() {
    // initdb's scratch directory of an interrupted first start: removed,
    // and a new cluster is created.
    let dir = watched_dir("initdb");
    std::fs::create_dir_all(dir.join("postgres.initdb/global")).unwrap();
    std::fs::write(dir.join("postgres.initdb/PG_VERSION"), "15\n").unwrap();
    let service = start_service(&dir, None);
    answers(&service).await;
    assert!(!dir.join("postgres.initdb").exists());
    service.terminate().unwrap();

    // A data directory whose cluster is half there (PG_VERSION, no
    // pg_control) is refused with what to do, not adopted.
    let dir = watched_dir("half");
    std::fs::create_dir_all(dir.join("postgres")).unwrap();
    std::fs::write(dir.join("postgres/PG_VERSION"), "15\n").unwrap();
    let (ok, text) = run(&["serve", "--listen", "127.0.0.1:0"], &dir);
    assert!(!ok, "{text}");
    assert!(
        text.contains("holds no complete PostgreSQL cluster: move it away"),
        "{text}"
    );
}
