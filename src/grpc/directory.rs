//! `kpi.v1.DirectoryService`: parse -> `service::directory` -> convert.

use tonic::{Request, Response, Status};

use super::{
    auth::principal,
    convert::directory::{rep_id, team_id},
    pb::{self, directory_service_server::DirectoryService},
};
use crate::{
    Error,
    domain::{
        directory::{RepUpsert, TeamUpsert},
        ids::TeamId,
        paging::PageRequest,
    },
    service::{
        Services,
        directory::{RepList, TeamList},
    },
};

#[derive(Debug, Clone)]
pub struct DirectoryApi {
    services: Services,
}

impl DirectoryApi {
    pub fn new(services: Services) -> Self {
        Self { services }
    }
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
        let team = self.services.directory.upsert_team(&upsert).await?;
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
        let team = self.services.directory.get_team(&caller, &id).await?;
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
        let list = TeamList {
            parent: optional_team("parent_team_id", &req.parent_team_id)?,
        };
        let page = PageRequest::parse(req.page_size, &req.page_token, &list.paging_key())?;
        let page = self
            .services
            .directory
            .list_teams(&caller, &list, &page)
            .await?;
        Ok(Response::new(pb::ListTeamsResponse {
            teams: page.items.into_iter().map(Into::into).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn upsert_rep(
        &self,
        request: Request<pb::UpsertRepRequest>,
    ) -> Result<Response<pb::UpsertRepResponse>, Status> {
        let upsert = RepUpsert::try_from(request.into_inner())?;
        let rep = self.services.directory.upsert_rep(&upsert).await?;
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
        let rep = self.services.directory.get_rep(&caller, &id).await?;
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
        let list = RepList {
            team: optional_team("team_id", &req.team_id)?,
            include_sub_teams: req.include_sub_teams,
        };
        let page = PageRequest::parse(req.page_size, &req.page_token, &list.paging_key())?;
        let page = self
            .services
            .directory
            .list_reps(&caller, &list, &page)
            .await?;
        Ok(Response::new(pb::ListRepsResponse {
            reps: page.items.into_iter().map(Into::into).collect(),
            next_page_token: page.next_page_token,
        }))
    }
}
