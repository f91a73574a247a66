//! `kpi-service keys create|share|list|revoke`: API keys in the service's
//! database. A key's secret is printed once; only its hash is stored.

use anyhow::anyhow;
use sqlx::PgPool;

use crate::{
    config::KeysCommand,
    domain::{access::Role, ids::TeamId},
    http::share_link,
    service::keys::Keys,
};

/// Runs a keys subcommand against the database in `pool`.
pub async fn run(pool: &PgPool, command: KeysCommand) -> anyhow::Result<()> {
    let keys = Keys::new(pool.clone());
    match command {
        KeysCommand::Create {
            name,
            role,
            team,
            expires,
            ..
        } => {
            let role = Role::parse(&role).map_err(|e| anyhow!(e))?;
            let team_id = team
                .as_deref()
                .map(TeamId::parse)
                .transpose()
                .map_err(|e| anyhow!("--team {e}"))?;
            let key = keys
                .create(&name, role, team_id.as_ref(), expires.map(Into::into))
                .await
                .map_err(refused)?;
            eprintln!(
                "created {role} key {} ({name}){}{}; it is shown once:",
                key.key_id,
                team.map(|t| format!(" limited to team {t}"))
                    .unwrap_or_default(),
                expires
                    .map(|e| format!(", ending in {e}"))
                    .unwrap_or_default()
            );
            println!("{}", key.token);
        }
        KeysCommand::Share {
            team,
            expires,
            name,
            url,
            ..
        } => {
            let team_id = TeamId::parse(&team).map_err(|e| anyhow!("--team {e}"))?;
            let name = name.unwrap_or_else(|| format!("share link for team {team}"));
            let key = keys
                .create(&name, Role::Read, Some(&team_id), Some(expires.into()))
                .await
                .map_err(refused)?;
            eprintln!(
                "created read key {} ({name}) limited to team {team}, ending in {expires}; \
                 revoke with `kpi-service keys revoke {}`. The link is shown once:",
                key.key_id, key.key_id
            );
            println!("{}", share_link(&url, &key.token));
        }
        KeysCommand::List { .. } => {
            let keys = keys.list().await.map_err(|e| anyhow!("{e}"))?;
            println!(
                "{:<14} {:<7} {:<16} {:<20} {:<25} {:<25} {:<25} REVOKED",
                "KEY ID", "ROLE", "TEAM", "NAME", "CREATED", "LAST USED", "EXPIRES"
            );
            let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
                t.map_or_else(
                    || "-".to_owned(),
                    |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
                )
            };
            for key in keys {
                println!(
                    "{:<14} {:<7} {:<16} {:<20} {:<25} {:<25} {:<25} {}",
                    key.key_id,
                    key.role,
                    key.team_id.as_deref().unwrap_or("-"),
                    key.name,
                    time(Some(key.created_at)),
                    time(key.last_used_at),
                    time(key.expires_at),
                    time(key.revoked_at)
                );
            }
        }
        KeysCommand::Revoke { key_id, .. } => {
            keys.revoke(&key_id).await.map_err(|e| anyhow!("{e}"))?;
            eprintln!("revoked key {key_id}");
        }
    }
    Ok(())
}

/// A refused key command, in the words its gRPC status would use.
fn refused(err: crate::Error) -> anyhow::Error {
    anyhow!("{}", tonic::Status::from(err).message().to_owned())
}
