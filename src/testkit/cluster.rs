//! Throwaway PostgreSQL clusters: started from the installed server
//! binaries in a new directory under /tmp that a watchdog removes (stopping
//! the cluster first) as soon as this process exits, however it exits.

use std::{
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

use crate::embedded_pg::EmbeddedPostgres;
use anyhow::Context as _;

/// Whether a throwaway cluster flushes commits to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// PostgreSQL's defaults: a commit survives a crash (crash tests,
    /// benches).
    On,
    /// No fsync, asynchronous commit: fast, for tests that do not crash it.
    Off,
}

fn unique_suffix() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Starts a cluster in a new watched directory, with `settings` (name,
/// value) on top of 300 connections and `durability`.
pub fn throwaway_cluster(
    label: &str,
    durability: Durability,
    settings: &[(&str, &str)],
) -> anyhow::Result<EmbeddedPostgres> {
    let unsafe_speed: &[(&str, &str)] = match durability {
        Durability::On => &[],
        Durability::Off => &[
            ("fsync", "off"),
            ("full_page_writes", "off"),
            ("synchronous_commit", "off"),
        ],
    };
    let all: Vec<(&str, &str)> = unsafe_speed.iter().chain(settings).copied().collect();
    let pg = planned(label, &all)?;
    pg.prepare_and_start()?;
    Ok(pg)
}

/// Starts a streaming replica of `primary` (a throwaway cluster) in a new
/// watched directory, with `settings` on top of 300 connections (a hot
/// standby needs at least the primary's `max_connections`).
pub fn throwaway_standby(
    label: &str,
    primary: &EmbeddedPostgres,
    settings: &[(&str, &str)],
) -> anyhow::Result<EmbeddedPostgres> {
    let pg = planned(label, settings)?;
    pg.base_backup_from(primary)?;
    pg.start()?;
    Ok(pg)
}

/// A cluster planned in a new watched directory with 300 connections and
/// `settings`; nothing created yet.
fn planned(label: &str, settings: &[(&str, &str)]) -> anyhow::Result<EmbeddedPostgres> {
    let dir = watched_dir(label)?;
    let mut pg = EmbeddedPostgres::new(&dir)?.with_setting("max_connections", "300");
    for (name, value) in settings {
        pg = pg.with_setting(name, value);
    }
    Ok(pg)
}

/// A `postgres://` URL reaching `database` over the cluster's socket.
pub fn socket_url(pg: &EmbeddedPostgres, database: &str) -> String {
    format!(
        "postgres://postgres@localhost/{database}?host={}",
        pg.socket_dir().display()
    )
}

/// A new directory under /tmp that a watchdog removes (stopping any
/// PostgreSQL in it first) when this process exits, however it exits.
/// Mode 0755: a PostgreSQL run as the postgres user must enter it.
pub fn watched_dir(label: &str) -> anyhow::Result<PathBuf> {
    let dir = PathBuf::from(format!(
        "/tmp/kpi-test-{}-{label}-{}",
        std::process::id(),
        unique_suffix()
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot chmod {}", dir.display()))?;
    spawn_watchdog(&dir)?;
    Ok(dir)
}

/// A shell that waits for this process to end, then stops the cluster in
/// `dir` (immediate shutdown) and deletes `dir`. It runs in its own process
/// group so that a Ctrl-C of the test run does not kill it first.
// It must outlive this process, so nobody waits for it here.
#[allow(clippy::zombie_processes)]
fn spawn_watchdog(dir: &Path) -> anyhow::Result<()> {
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
        .context("cannot start the cleanup watchdog")?;
    Ok(())
}
