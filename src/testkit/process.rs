//! The `kpi-service` binary running as its own process, as a user runs it:
//! on 127.0.0.1:0 with a JSON log, its address read from that log.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};

/// How to start the service.
#[derive(Debug, Clone, Copy)]
pub struct Launch<'a> {
    /// The binary (`env!("CARGO_BIN_EXE_kpi-service")` in tests and benches).
    pub binary: &'a str,
    pub data_dir: &'a Path,
    /// `None`: the embedded PostgreSQL under `data_dir`.
    pub database_url: Option<&'a str>,
    /// Extra flags of `serve`.
    pub args: &'a [&'a str],
    /// `RUST_LOG`.
    pub log_filter: &'a str,
    /// Echo every log line to stderr (tests: a failing run shows the log);
    /// otherwise only lines above INFO (benches).
    pub echo_all: bool,
    /// Let a first start on the embedded database load the demo
    /// organisation (off: `--no-demo`).
    pub demo: bool,
    /// Extra environment variables.
    pub env: &'a [(&'a str, &'a str)],
}

impl<'a> Launch<'a> {
    pub fn new(binary: &'a str, data_dir: &'a Path) -> Self {
        Self {
            binary,
            data_dir,
            database_url: None,
            args: &[],
            log_filter: "info",
            echo_all: true,
            demo: false,
            env: &[],
        }
    }
}

pub struct ServiceProcess {
    child: Child,
    /// The address it listens on.
    pub addr: String,
    data_dir: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
}

/// The `address` of the "kpi-service listening" line of a JSON log.
fn listening_address(line: &str) -> Option<String> {
    if !line.contains("kpi-service listening") {
        return None;
    }
    line.split("\"address\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .map(str::to_owned)
}

impl ServiceProcess {
    /// Starts the service and waits (up to 60 s) until it listens.
    pub fn start(launch: &Launch<'_>) -> anyhow::Result<Self> {
        let mut command = Command::new(launch.binary);
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(launch.args)
            .args((!launch.demo).then_some("--no-demo"))
            .arg("--data-dir")
            .arg(launch.data_dir)
            .env_remove("DATABASE_URL")
            .env("RUST_LOG", launch.log_filter)
            // The runner's own OpenTelemetry settings must not redirect a
            // test service's spans.
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_HEADERS")
            .envs(launch.env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(url) = launch.database_url {
            command.env("DATABASE_URL", url);
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {}", launch.binary))?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| anyhow!("the service's stderr is not piped"))?;
        let (tx, rx) = std::sync::mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let log_writer = log.clone();
        let echo_all = launch.echo_all;
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = listening_address(&line) {
                    tx.send(addr).ok();
                }
                if echo_all || !line.contains("\"level\":\"INFO\"") {
                    eprintln!("[kpi-service] {line}");
                }
                if let Ok(mut log) = log_writer.lock() {
                    log.push(line);
                }
            }
        });
        let mut service = Self {
            child,
            addr: String::new(),
            data_dir: launch.data_dir.to_owned(),
            log,
        };
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => service.addr = addr,
            Err(_) => bail!(
                "the service did not start listening within 60 s; its log:\n{}",
                service.log()
            ),
        }
        Ok(service)
    }

    /// `http://ADDR`, for a tonic channel.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The service's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the service logged so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    /// The admin key the service wrote on its first start.
    pub fn admin_key(&self) -> anyhow::Result<String> {
        let path = self.data_dir.join("admin.key");
        Ok(std::fs::read_to_string(&path)
            .with_context(|| format!("no admin key at {}", path.display()))?
            .trim()
            .to_owned())
    }

    /// Peak resident memory (VmHWM) of the service process, in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        self.status_mib("VmHWM:")
    }

    /// Resident memory now (VmRSS), in MiB.
    pub fn rss_mib(&self) -> f64 {
        self.status_mib("VmRSS:")
    }

    /// Starts a new peak (`peak_rss_mib`) from the current resident size
    /// (Linux: `5` to /proc/PID/clear_refs).
    pub fn reset_peak_rss(&self) -> anyhow::Result<()> {
        let path = format!("/proc/{}/clear_refs", self.child.id());
        std::fs::write(&path, "5").with_context(|| format!("cannot write {path}"))
    }

    fn status_mib(&self, field: &str) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    }

    /// SIGTERM, then wait; how long the exit took. An error unless the
    /// service exited cleanly.
    pub fn terminate(mut self) -> anyhow::Result<Duration> {
        let started = Instant::now();
        match self.stop() {
            Some(status) if status.success() => Ok(started.elapsed()),
            other => bail!("the service did not exit cleanly on SIGTERM: {other:?}"),
        }
    }

    /// SIGKILL: no shutdown, no draining.
    pub fn kill(mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }

    /// SIGTERM and up to 30 s of waiting, then SIGKILL.
    fn stop(&mut self) -> Option<ExitStatus> {
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

impl Drop for ServiceProcess {
    /// A failed test must not leave the service (or its PostgreSQL) behind.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_is_read_from_the_listening_line_only() {
        let line = r#"{"level":"INFO","fields":{"message":"kpi-service listening","address":"127.0.0.1:4242"}}"#;
        assert_eq!(listening_address(line).as_deref(), Some("127.0.0.1:4242"));
        let other = r#"{"fields":{"message":"connecting","address":"x"}}"#;
        assert_eq!(listening_address(other), None);
    }
}
