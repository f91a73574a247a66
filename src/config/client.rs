//! How a command-line client (`demo`, `import`) reaches the service.

use std::path::PathBuf;

/// How to reach the service.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClientOptions {
    /// The service to call (default: the address `serve` listens on,
    /// KPI_LISTEN, else http://127.0.0.1:50051). `https://` uses TLS.
    #[arg(long, env = "KPI_TARGET")]
    pub target: Option<String>,
    /// The service's data directory: without --key, the first-start admin
    /// key in <data-dir>/admin.key is used.
    #[arg(long, env = "KPI_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// API key (ingest or admin) to call the service with; default: the
    /// first-start admin key in <data-dir>/admin.key.
    #[arg(long, env = "KPI_API_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// CA certificate (PEM) to trust for an `https://` target (the
    /// service's --tls-cert, or the CA that signed it).
    #[arg(long, env = "KPI_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
}
