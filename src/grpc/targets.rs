//! `kpi.v1.TargetService`: parse -> `service::targets` -> convert.

use chrono_tz::Tz;
use tonic::{Request, Response, Status};

use super::{
    auth::principal,
    convert::{
        kpi::{progress_to_pb, target_to_pb},
        targets::{new_target, target_filter},
    },
    pb::{self, target_service_server::TargetService},
};
use crate::{Error, domain::ids::check_id, service::Services};

#[derive(Debug, Clone)]
pub struct TargetApi {
    services: Services,
    default_zone: Tz,
}

impl TargetApi {
    pub fn new(services: Services, default_zone: Tz) -> Self {
        Self {
            services,
            default_zone,
        }
    }
}

#[tonic::async_trait]
impl TargetService for TargetApi {
    async fn set_target(
        &self,
        request: Request<pb::SetTargetRequest>,
    ) -> Result<Response<pb::SetTargetResponse>, Status> {
        let caller = principal(&request)?;
        let target = new_target(request.into_inner(), self.default_zone)?;
        let target = self.services.targets.set(&caller, target).await?;
        Ok(Response::new(pb::SetTargetResponse {
            target: Some(target_to_pb(&target)),
        }))
    }

    async fn list_targets(
        &self,
        request: Request<pb::ListTargetsRequest>,
    ) -> Result<Response<pb::ListTargetsResponse>, Status> {
        let caller = principal(&request)?;
        let filter = target_filter(request.get_ref(), self.default_zone)?;
        let targets = self.services.targets.list(&caller, filter).await?;
        Ok(Response::new(pb::ListTargetsResponse {
            targets: targets
                .iter()
                .map(|t| pb::TargetWithProgress {
                    target: Some(target_to_pb(&t.target)),
                    progress: Some(progress_to_pb(&t.progress)),
                })
                .collect(),
        }))
    }

    async fn delete_target(
        &self,
        request: Request<pb::DeleteTargetRequest>,
    ) -> Result<Response<pb::DeleteTargetResponse>, Status> {
        let caller = principal(&request)?;
        let id = request.into_inner().target_id;
        check_id(&id).map_err(|e| Error::invalid("target_id", e))?;
        self.services.targets.delete(&caller, &id).await?;
        Ok(Response::new(pb::DeleteTargetResponse {}))
    }
}
