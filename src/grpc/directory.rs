//! `kpi.v1.DirectoryService`: teams, reps and their membership history.

use sqlx::PgPool;
use tonic::{Request, Response, Status};

use super::{
    auth::{principal, require_team},
    convert::{rep_id, team_id},
    pb::{self, directory_service_server::DirectoryService},
};
use crate::{
    Error,
    domain::{
        Violations,
        directory::{RepUpsert, TeamUpsert},
        ids::TeamId,
        paging::{PageToken, page_size},
    },
    store::directory::{self as store, RepFilter},
};

#[derive(Debug, Clone)]
pub struct DirectoryApi {
    pool: PgPool,
}

impl DirectoryApi {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

/// Parses `page_size` and `page_token` for a query described by `query`.
fn page(size: i32, token: &str, query: &str) -> Result<(u32, Option<String>), Error> {
    let mut v = Violations::new();
    let size = v.check("page_size", page_size(size));
    let token = v.check("page_token", PageToken::decode(token, query));
    v.finish(|| Some((size?, token?.map(|t| t.after))))
}

/// Cuts a fetch of `size + 1` rows down to one page and the token for the
/// next, if there is more.
fn paginate<T>(
    mut rows: Vec<T>,
    size: u32,
    query: &str,
    key: impl Fn(&T) -> String,
) -> (Vec<T>, String) {
    let size = size as usize;
    if rows.len() <= size {
        return (rows, String::new());
    }
    rows.truncate(size);
    let next = rows
        .last()
        .map(|last| PageToken::new(query, key(last)).encode())
        .unwrap_or_default();
    (rows, next)
}

fn optional_team(field: &str, raw: &str) -> Result<Option<TeamId>, Error> {
    if raw.is_empty() {
        Ok(None)
    } else {
        team_id(field, raw).map(Some)
    }
}

#[tonic::async_trait]
impl DirectoryService for DirectoryApi {
    async fn upsert_team(
        &self,
        request: Request<pb::UpsertTeamRequest>,
    ) -> Result<Response<pb::UpsertTeamResponse>, Status> {
        let upsert = TeamUpsert::try_from(request.into_inner())?;
        let team = store::upsert_team(&self.pool, &upsert).await?;
        Ok(Response::new(pb::UpsertTeamResponse {
            team: Some(team.into()),
        }))
    }

    async fn get_team(
        &self,
        request: Request<pb::GetTeamRequest>,
    ) -> Result<Response<pb::GetTeamResponse>, Status> {
        let caller = principal(&request)?;
        let id = team_id("team_id", &request.into_inner().team_id)?;
        require_team(&caller, id.as_str())?;
        let team = store::get_team(&self.pool, id.as_str())
            .await?
            .ok_or_else(|| Error::NotFound {
                kind: "team",
                id: id.to_string(),
            })?;
        Ok(Response::new(pb::GetTeamResponse {
            team: Some(team.into()),
        }))
    }

    async fn list_teams(
        &self,
        request: Request<pb::ListTeamsRequest>,
    ) -> Result<Response<pb::ListTeamsResponse>, Status> {
        let caller = principal(&request)?;
        let req = request.into_inner();
        let parent = optional_team("parent_team_id", &req.parent_team_id)?;
        if let Some(parent) = &parent {
            require_team(&caller, parent.as_str())?;
        }
        let query = format!("teams|parent={}", req.parent_team_id);
        let (size, after) = page(req.page_size, &req.page_token, &query)?;
        let visible = caller
            .scope
            .as_ref()
            .map(|teams| teams.iter().cloned().collect());
        let rows = store::list_teams(
            &self.pool,
            parent.as_ref(),
            visible,
            after.as_deref(),
            size + 1,
        )
        .await?;
        let (teams, next_page_token) = paginate(rows, size, &query, |t| t.id.clone());
        Ok(Response::new(pb::ListTeamsResponse {
            teams: teams.into_iter().map(Into::into).collect(),
            next_page_token,
        }))
    }

    async fn upsert_rep(
        &self,
        request: Request<pb::UpsertRepRequest>,
    ) -> Result<Response<pb::UpsertRepResponse>, Status> {
        let upsert = RepUpsert::try_from(request.into_inner())?;
        let rep = store::upsert_rep(&self.pool, &upsert).await?;
        Ok(Response::new(pb::UpsertRepResponse {
            rep: Some(rep.into()),
        }))
    }

    async fn get_rep(
        &self,
        request: Request<pb::GetRepRequest>,
    ) -> Result<Response<pb::GetRepResponse>, Status> {
        let caller = principal(&request)?;
        let id = rep_id("rep_id", &request.into_inner().rep_id)?;
        let rep = store::get_rep(&self.pool, id.as_str()).await?;
        // A scoped key gets the same answer for a rep outside its teams and
        // for one that does not exist: nothing leaks.
        if caller.scope.is_some()
            && !rep
                .as_ref()
                .and_then(|r| r.team.as_deref())
                .is_some_and(|team| caller.sees_team(team))
        {
            return Err(Error::PermissionDenied(format!("this key may not see rep '{id}'")).into());
        }
        let rep = rep.ok_or_else(|| Error::NotFound {
            kind: "rep",
            id: id.to_string(),
        })?;
        Ok(Response::new(pb::GetRepResponse {
            rep: Some(rep.into()),
        }))
    }

    async fn list_reps(
        &self,
        request: Request<pb::ListRepsRequest>,
    ) -> Result<Response<pb::ListRepsResponse>, Status> {
        let caller = principal(&request)?;
        let req = request.into_inner();
        let filter = RepFilter {
            team: optional_team("team_id", &req.team_id)?,
            include_sub_teams: req.include_sub_teams,
            visible: caller
                .scope
                .as_ref()
                .map(|teams| teams.iter().cloned().collect()),
        };
        if let Some(team) = &filter.team {
            require_team(&caller, team.as_str())?;
        }
        let query = format!("reps|team={}|sub={}", req.team_id, req.include_sub_teams);
        let (size, after) = page(req.page_size, &req.page_token, &query)?;
        let rows = store::list_reps(&self.pool, &filter, after.as_deref(), size + 1).await?;
        let (reps, next_page_token) = paginate(rows, size, &query, |r| r.id.clone());
        Ok(Response::new(pb::ListRepsResponse {
            reps: reps.into_iter().map(Into::into).collect(),
            next_page_token,
        }))
    }
}
