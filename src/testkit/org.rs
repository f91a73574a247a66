//! Organisations to load through the API.

use tonic::transport::Channel;

use crate::{
    demo::bearer,
    grpc::pb::{self, directory_service_client::DirectoryServiceClient},
};

/// A team to upsert.
pub fn team(id: &str, name: &str, parent: &str) -> pb::UpsertTeamRequest {
    pb::UpsertTeamRequest {
        team_id: id.into(),
        display_name: name.into(),
        parent_team_id: parent.into(),
    }
}

/// A rep to upsert: in `team_id` from the beginning of time, with a name
/// and email derived from its id.
pub fn rep(rep_id: &str, team_id: &str) -> pb::UpsertRepRequest {
    pb::UpsertRepRequest {
        rep_id: rep_id.into(),
        display_name: format!("Rep {rep_id}"),
        email: format!("{rep_id}@example.com"),
        active: None,
        team_id: team_id.into(),
        team_effective_time: None,
    }
}

/// The bench organisation: team `bench`, with `pods` sub-teams `pod-N`
/// (none: the reps are in `bench` itself) and `reps` reps `rep-NNN` spread
/// over them.
pub async fn bench_organisation(
    channel: Channel,
    key: &str,
    pods: usize,
    reps: usize,
) -> anyhow::Result<()> {
    let mut directory = DirectoryServiceClient::with_interceptor(channel, bearer(key)?);
    directory.upsert_team(team("bench", "bench", "")).await?;
    for pod in 0..pods {
        let id = format!("pod-{pod}");
        directory.upsert_team(team(&id, &id, "bench")).await?;
    }
    for r in 0..reps {
        let team_id = if pods == 0 {
            "bench".to_owned()
        } else {
            format!("pod-{}", r % pods)
        };
        directory
            .upsert_rep(rep(&format!("rep-{r:03}"), &team_id))
            .await?;
    }
    Ok(())
}
