//! `kpi-service keys ...`: create, share, list and revoke API keys.

use clap::Subcommand;

use super::DatabaseArgs;

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it once. Only its hash is stored.
    Create {
        /// Who or what the key is for.
        #[arg(long)]
        name: String,
        /// ingest (record activity, upsert teams and reps), read (directory
        /// and KPI queries) or admin (everything).
        #[arg(long)]
        role: String,
        /// Limit a read key to this team and its sub-teams.
        #[arg(long)]
        team: Option<String>,
        /// End the key by itself after this long (e.g. 90d, 12h).
        #[arg(long)]
        expires: Option<humantime::Duration>,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Make a share link to a team's dashboard: a read key limited to the
    /// team (and its sub-teams) that ends by itself, printed as the page's
    /// URL with the key in the fragment (`#key=...`), which browsers never
    /// send to a server. Revoke it like any key.
    Share {
        /// The team whose dashboard the link opens.
        #[arg(long)]
        team: String,
        /// How long the link works (e.g. 30d, 12h); at most 10 years.
        #[arg(long, default_value = "30d")]
        expires: humantime::Duration,
        /// Who the link is for (shown by `keys list`).
        #[arg(long)]
        name: Option<String>,
        /// The service's address as the browser reaches it.
        #[arg(long, env = "KPI_PUBLIC_URL", default_value = "http://127.0.0.1:50051")]
        url: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// List keys: ids, names, roles, scopes, creation and last use. Never
    /// secrets.
    List {
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Revoke a key; every instance refuses it within a second.
    Revoke {
        /// The key's id (the part after `kpi_`, before the second `_`).
        key_id: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

impl KeysCommand {
    /// The database the keys live in.
    pub fn database(&self) -> &DatabaseArgs {
        match self {
            Self::Create { database, .. }
            | Self::Share { database, .. }
            | Self::List { database }
            | Self::Revoke { database, .. } => database,
        }
    }
}
