//! Teams, reps and their membership history.

use sqlx::PgPool;

use super::authorize;
use crate::{
    Error,
    domain::{
        directory::{Rep, RepUpsert, Team, TeamUpsert},
        ids::{RepId, TeamId},
        paging::{Page, PageRequest},
    },
    service::access::Principal,
    store::directory::{self as store, RepFilter},
};

/// Which teams a list returns.
#[derive(Debug, Clone, Default)]
pub struct TeamList {
    /// Only the children of this team.
    pub parent: Option<TeamId>,
}

impl TeamList {
    /// The query a page token belongs to.
    pub fn paging_key(&self) -> String {
        format!(
            "teams|parent={}",
            self.parent.as_ref().map_or("", TeamId::as_str)
        )
    }
}

/// Which reps a list returns.
#[derive(Debug, Clone, Default)]
pub struct RepList {
    /// Only the current members of this team.
    pub team: Option<TeamId>,
    /// With `team`: also the members of its sub-teams, at any depth.
    pub include_sub_teams: bool,
}

impl RepList {
    /// The query a page token belongs to.
    pub fn paging_key(&self) -> String {
        format!(
            "reps|team={}|sub={}",
            self.team.as_ref().map_or("", TeamId::as_str),
            self.include_sub_teams
        )
    }
}

#[derive(Debug, Clone)]
pub struct Directory {
    pool: PgPool,
}

impl Directory {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub async fn upsert_team(&self, upsert: &TeamUpsert) -> Result<Team, Error> {
        store::upsert_team(&self.pool, upsert).await
    }

    pub async fn get_team(&self, caller: &Principal, id: &TeamId) -> Result<Team, Error> {
        authorize::team(caller, id)?;
        store::get_team(&self.pool, id.as_str())
            .await?
            .map(|team| authorize::redact_team(caller, team))
            .ok_or_else(|| Error::NotFound {
                kind: "team",
                id: id.to_string(),
            })
    }

    pub async fn list_teams(
        &self,
        caller: &Principal,
        list: &TeamList,
        page: &PageRequest,
    ) -> Result<Page<Team>, Error> {
        if let Some(parent) = &list.parent {
            authorize::team(caller, parent)?;
        }
        let rows = store::list_teams(
            &self.pool,
            list.parent.as_ref(),
            authorize::visible_teams(caller),
            page.after.as_deref(),
            page.fetch(),
        )
        .await?;
        let rows = rows
            .into_iter()
            .map(|team| authorize::redact_team(caller, team))
            .collect();
        Ok(Page::cut(rows, page, &list.paging_key(), |t| t.id.clone()))
    }

    pub async fn upsert_rep(&self, upsert: &RepUpsert) -> Result<Rep, Error> {
        store::upsert_rep(&self.pool, upsert).await
    }

    pub async fn get_rep(&self, caller: &Principal, id: &RepId) -> Result<Rep, Error> {
        let found = store::get_rep(&self.pool, id.as_str()).await?;
        authorize::rep(caller, id, found).map(|rep| authorize::redact_rep(caller, rep))
    }

    pub async fn list_reps(
        &self,
        caller: &Principal,
        list: &RepList,
        page: &PageRequest,
    ) -> Result<Page<Rep>, Error> {
        if let Some(team) = &list.team {
            authorize::team(caller, team)?;
        }
        let filter = RepFilter {
            team: list.team.clone(),
            include_sub_teams: list.include_sub_teams,
            visible: authorize::visible_teams(caller),
        };
        let rows =
            store::list_reps(&self.pool, &filter, page.after.as_deref(), page.fetch()).await?;
        Ok(Page::cut(rows, page, &list.paging_key(), |r| r.id.clone()))
    }
}
