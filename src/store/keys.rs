//! API keys: created, listed and revoked by the `keys` command; read by the
//! access control cache.

use std::path::Path;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::{
    Error,
    domain::access::{KeyBytes, NewKey, Role, key_from},
};

/// Makes a key from the operating system's random number generator.
pub fn generate_key() -> Result<NewKey, getrandom::Error> {
    let mut bytes: KeyBytes = Default::default();
    getrandom::fill(&mut bytes.0)?;
    getrandom::fill(&mut bytes.1)?;
    Ok(key_from(bytes))
}

/// A key as `keys list` shows it: never the secret, not even its hash.
#[derive(Debug, Clone)]
pub struct KeyInfo {
    pub key_id: String,
    pub name: String,
    pub role: Role,
    pub team_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A usable key, as the access cache holds it.
#[derive(Debug, Clone)]
pub struct ActiveKey {
    pub key_id: String,
    pub role: Role,
    pub team_id: Option<String>,
    pub secret_hash: Vec<u8>,
}

/// Serialises first-start key creation between instances.
const BOOTSTRAP_LOCK: i64 = 0x6b70_695f_6b65_7973;

fn role_of(raw: &str) -> Result<Role, Error> {
    Role::parse(raw).map_err(|e| Error::internal(anyhow::anyhow!("stored key role: {e}")))
}

/// Stores a new key (rules checked by `service::keys`); returns it with its
/// full text, to show once.
pub async fn create(
    pool: &PgPool,
    name: &str,
    role: Role,
    team_id: Option<&str>,
    lifetime: Option<std::time::Duration>,
) -> Result<NewKey, Error> {
    let key = generate_key().map_err(|e| Error::internal(anyhow::anyhow!("OS RNG: {e}")))?;
    // The end is set by the database's clock, the one `active` checks it by.
    let seconds = lifetime.map(|l| l.as_secs_f64());
    sqlx::query(
        "INSERT INTO api_keys (key_id, name, role, team_id, secret_hash, expires_at) \
         VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6))",
    )
    .bind(&key.key_id)
    .bind(name)
    .bind(role.as_str())
    .bind(team_id)
    .bind(&key.secret_hash)
    .bind(seconds)
    .execute(pool)
    .await?;
    Ok(key)
}

type KeyRow = (
    String,
    String,
    String,
    Option<String>,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
);

pub async fn list(pool: &PgPool) -> Result<Vec<KeyInfo>, Error> {
    let rows: Vec<KeyRow> = sqlx::query_as(
        r#"
        SELECT key_id, name, role, team_id, created_at, revoked_at, last_used_at, expires_at
        FROM api_keys ORDER BY created_at, key_id
        "#,
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(
            |(key_id, name, role, team_id, created_at, revoked_at, last_used_at, expires_at)| {
                Ok(KeyInfo {
                    key_id,
                    name,
                    role: role_of(&role)?,
                    team_id,
                    created_at,
                    revoked_at,
                    last_used_at,
                    expires_at,
                })
            },
        )
        .collect()
}

/// Revokes a key; NOT_FOUND if there is none with this id. Revoking twice
/// is harmless.
pub async fn revoke(pool: &PgPool, key_id: &str) -> Result<(), Error> {
    let result = sqlx::query(
        "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE key_id = $1",
    )
    .bind(key_id)
    .execute(pool)
    .await?;
    if result.rows_affected() == 0 {
        return Err(Error::NotFound {
            kind: "key",
            id: key_id.to_owned(),
        });
    }
    Ok(())
}

/// Every key that is neither revoked nor expired (by the database's clock,
/// the one `expires_at` was set by).
pub async fn active(pool: &PgPool) -> Result<Vec<ActiveKey>, Error> {
    let rows: Vec<(String, String, Option<String>, Vec<u8>)> = sqlx::query_as(
        "SELECT key_id, role, team_id, secret_hash FROM api_keys \
         WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())",
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(key_id, role, team_id, secret_hash)| {
            Ok(ActiveKey {
                key_id,
                role: role_of(&role)?,
                team_id,
                secret_hash,
            })
        })
        .collect()
}

/// (team, parent) for every team, to expand team scopes.
pub async fn team_parents(pool: &PgPool) -> Result<Vec<(String, Option<String>)>, Error> {
    Ok(sqlx::query_as("SELECT team_id, parent_team_id FROM teams")
        .fetch_all(pool)
        .await?)
}

/// Records that these keys were used (batched by the caller).
pub async fn touch(pool: &PgPool, key_ids: &[String]) -> Result<(), Error> {
    sqlx::query("UPDATE api_keys SET last_used_at = now() WHERE key_id = ANY($1)")
        .bind(key_ids)
        .execute(pool)
        .await?;
    Ok(())
}

/// On first start (no key at all), creates an admin key and writes it to
/// `path` (mode 0600), and with `dashboard` a read key for the dashboard
/// written there, in one transaction (a failure leaves no key, so the next
/// start tries again). Returns the admin key's id, or `None` when keys
/// exist.
pub async fn bootstrap_admin(
    pool: &PgPool,
    path: &Path,
    dashboard: Option<&Path>,
) -> anyhow::Result<Option<String>> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(BOOTSTRAP_LOCK)
        .execute(&mut *tx)
        .await?;
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM api_keys")
        .fetch_one(&mut *tx)
        .await?;
    if keys > 0 {
        return Ok(None);
    }
    let key = generate_key().map_err(|e| anyhow::anyhow!("OS RNG: {e}"))?;
    sqlx::query(
        "INSERT INTO api_keys (key_id, name, role, secret_hash) VALUES ($1, 'first admin', 'admin', $2)",
    )
    .bind(&key.key_id)
    .bind(&key.secret_hash)
    .execute(&mut *tx)
    .await?;
    write_secret(path, &key.token)?;
    if let Some(dashboard) = dashboard {
        let read = generate_key().map_err(|e| anyhow::anyhow!("OS RNG: {e}"))?;
        sqlx::query(
            "INSERT INTO api_keys (key_id, name, role, secret_hash) \
             VALUES ($1, 'dashboard (first start)', 'read', $2)",
        )
        .bind(&read.key_id)
        .bind(&read.secret_hash)
        .execute(&mut *tx)
        .await?;
        write_secret(dashboard, &read.token)?;
    }
    tx.commit().await?;
    Ok(Some(key.key_id))
}

/// Writes a secret to `path`, created with mode 0600 from the start
/// (replacing a stale file), and syncs it.
pub fn write_secret(path: &Path, secret: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;

    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::remove_file(path).ok();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    writeln!(file, "{secret}")?;
    file.sync_all()?;
    Ok(())
}
