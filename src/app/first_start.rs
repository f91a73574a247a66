//! The first start on the embedded database, a developer's or a trial's:
//! an admin key (and a read key the printed dashboard link signs in with),
//! the demo organisation loaded in the background, the signed-in link on
//! the terminal.

use std::{net::SocketAddr, path::Path};

use anyhow::Context as _;

use sqlx::PgPool;

use crate::{
    config::{ClientOptions, DemoOptions, Settings},
    http::share_link,
    store,
};

/// Where the embedded database's dashboard key is (mode 0600).
pub const DASHBOARD_KEY_FILE: &str = "dashboard.key";

/// Present in the data directory while the demo organisation is still to be
/// loaded (made on the first start, removed once it is loaded).
pub const DEMO_PENDING_FILE: &str = "demo.pending";

/// The dashboard page's URL as a browser on this machine reaches it.
pub fn page_url(addr: SocketAddr, tls: bool) -> String {
    let host = match addr.ip() {
        ip if ip.is_unspecified() => std::net::IpAddr::from([127, 0, 0, 1]),
        ip => ip,
    };
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{}", SocketAddr::new(host, addr.port()))
}

/// With the embedded database: the link that opens the dashboard signed in
/// (the key in its fragment), on the terminal only: a log that is shipped
/// somewhere gets the file's path, never the key.
pub fn print_dashboard_link(data_dir: &Path, page: &str) {
    use std::io::IsTerminal as _;
    let path = data_dir.join(DASHBOARD_KEY_FILE);
    let Ok(token) = std::fs::read_to_string(&path) else {
        return;
    };
    if std::io::stderr().is_terminal() {
        eprintln!(
            "\n  Dashboard: {}\n  (signed in with the read key in {}; keep it to yourself)\n",
            share_link(page, token.trim()),
            path.display()
        );
    } else {
        tracing::info!(
            key_file = %path.display(),
            "dashboard link: the page's URL with #key=<this file's key>"
        );
    }
}

/// On the first start of the embedded database: fills it with the demo
/// organisation through the service's own API, in the background, so the
/// dashboard has something to show (and shows it arriving). Until it is all
/// loaded, every start tries again (the demo is deterministic and
/// idempotent). `--no-demo` skips it; so does TLS (the demo client would
/// need the CA).
pub fn start_demo(settings: &Settings, page: &str) -> Option<tokio::task::JoinHandle<()>> {
    let pending = settings.database.data_dir.join(DEMO_PENDING_FILE);
    if settings.database.database_url.is_some()
        || settings.no_demo
        || settings.tls_cert.is_some()
        || !pending.exists()
    {
        return None;
    }
    let options = DemoOptions {
        // Gentler than the command's default: the service is serving too.
        concurrency: 2,
        ..DemoOptions::defaults(ClientOptions {
            target: Some(page.to_owned()),
            data_dir: settings.database.data_dir.clone(),
            key: None,
            ca_cert: None,
        })
    };
    tracing::info!("first start: loading the demo organisation (--no-demo skips it)");
    Some(tokio::spawn(async move {
        match crate::demo::run(options).await {
            Ok(()) => {
                std::fs::remove_file(&pending).ok();
                tracing::info!("demo organisation loaded");
            }
            Err(err) => tracing::warn!(
                error = format!("{err:#}"),
                "cannot load the demo organisation"
            ),
        }
    }))
}

/// When no API key exists yet: creates the admin key and writes it to
/// `<data-dir>/admin.key` (mode 0600); with the embedded database also the
/// dashboard's read key, and marks the demo organisation as to be loaded.
pub async fn bootstrap_keys(pool: &PgPool, settings: &Settings) -> anyhow::Result<()> {
    let data_dir = &settings.database.data_dir;
    let key_file = data_dir.join("admin.key");
    let embedded = settings.database.database_url.is_none();
    let dashboard_key = data_dir.join(DASHBOARD_KEY_FILE);
    let first_start =
        store::keys::bootstrap_admin(pool, &key_file, embedded.then_some(dashboard_key.as_path()))
            .await?;
    if let Some(key_id) = &first_start {
        tracing::info!(
            key_id,
            path = %std::path::absolute(&key_file).unwrap_or(key_file.clone()).display(),
            "no API key existed: created an admin key and wrote it to this file (mode 0600)"
        );
        if embedded && !settings.no_demo {
            std::fs::write(data_dir.join(DEMO_PENDING_FILE), b"")
                .with_context(|| format!("cannot write {DEMO_PENDING_FILE}"))?;
        }
    }
    Ok(())
}
