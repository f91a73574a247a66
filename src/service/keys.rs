//! API keys: created, listed and revoked by the `keys` command. Every
//! change is written to the audit log.

use sqlx::PgPool;

use crate::{
    Error,
    domain::{
        access::{NewKey, Role},
        ids::TeamId,
    },
    store::{
        directory as directory_store,
        keys::{self as store, KeyInfo},
    },
};

/// The lifetimes a key may be given.
const MIN_LIFETIME: std::time::Duration = std::time::Duration::from_secs(60);
const MAX_LIFETIME: std::time::Duration = std::time::Duration::from_secs(3653 * 86_400);

#[derive(Debug, Clone)]
pub struct Keys {
    pool: PgPool,
}

impl Keys {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Creates a key; only read keys may be limited to a team, which must
    /// exist; a key may end by itself after `lifetime`. The key's full text
    /// is in the answer, to show once.
    pub async fn create(
        &self,
        name: &str,
        role: Role,
        team: Option<&TeamId>,
        lifetime: Option<std::time::Duration>,
    ) -> Result<NewKey, Error> {
        if let Some(lifetime) = lifetime
            && !(MIN_LIFETIME..=MAX_LIFETIME).contains(&lifetime)
        {
            return Err(Error::invalid(
                "expires",
                "a key's lifetime is 1 minute to 10 years",
            ));
        }
        if let Some(team) = team {
            if role != Role::Read {
                return Err(Error::invalid(
                    "team",
                    "only read keys can be limited to a team",
                ));
            }
            if directory_store::get_team(&self.pool, team.as_str())
                .await?
                .is_none()
            {
                return Err(Error::invalid(
                    "team",
                    format!("team '{team}' does not exist"),
                ));
            }
        }
        let key = store::create(&self.pool, name, role, team.map(TeamId::as_str), lifetime).await?;
        tracing::info!(target: "audit", key_id = %key.key_id, %role, method = "keys create", outcome = "Ok", "audit");
        Ok(key)
    }

    /// Every key, revoked ones included; never a secret.
    pub async fn list(&self) -> Result<Vec<KeyInfo>, Error> {
        store::list(&self.pool).await
    }

    /// Revokes a key: refused everywhere within a second.
    pub async fn revoke(&self, key_id: &str) -> Result<(), Error> {
        store::revoke(&self.pool, key_id).await?;
        tracing::info!(target: "audit", key_id = %key_id, method = "keys revoke", outcome = "Ok", "audit");
        Ok(())
    }
}
