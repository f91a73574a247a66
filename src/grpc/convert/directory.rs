//! Conversions between protobuf messages and domain types. Converting a
//! request is validating it: every violation is collected with its path.

use crate::proto::{instant, pb, timestamp};
use crate::{
    Error,
    domain::{
        Violations,
        directory::{Membership, Rep, RepUpsert, Team, TeamUpsert},
        ids::{DisplayName, Email, RepId, TeamId},
    },
};

/// Empty means "not given" for optional id fields in proto3.
fn optional_team(raw: &str) -> Result<Option<TeamId>, String> {
    if raw.is_empty() {
        Ok(None)
    } else {
        TeamId::parse(raw).map(Some)
    }
}

pub fn team_id(field: &str, raw: &str) -> Result<TeamId, Error> {
    TeamId::parse(raw).map_err(|e| Error::invalid(field, e))
}

pub fn rep_id(field: &str, raw: &str) -> Result<RepId, Error> {
    RepId::parse(raw).map_err(|e| Error::invalid(field, e))
}

impl TryFrom<pb::UpsertTeamRequest> for TeamUpsert {
    type Error = Error;

    fn try_from(req: pb::UpsertTeamRequest) -> Result<Self, Error> {
        let mut v = Violations::new();
        let id = v.check("team_id", TeamId::parse(&req.team_id));
        let display_name = v.check("display_name", DisplayName::parse(&req.display_name));
        let parent = v.check("parent_team_id", optional_team(&req.parent_team_id));
        if let (Some(id), Some(Some(parent))) = (&id, &parent)
            && id == parent
        {
            v.add("parent_team_id", "a team cannot be its own parent");
        }
        v.finish(|| {
            Some(TeamUpsert {
                id: id?,
                display_name: display_name?,
                parent: parent?,
            })
        })
    }
}

impl TryFrom<pb::UpsertRepRequest> for RepUpsert {
    type Error = Error;

    fn try_from(req: pb::UpsertRepRequest) -> Result<Self, Error> {
        let mut v = Violations::new();
        let id = v.check("rep_id", RepId::parse(&req.rep_id));
        let display_name = v.check("display_name", DisplayName::parse(&req.display_name));
        let email = if req.email.is_empty() {
            Some(None)
        } else {
            v.check("email", Email::parse(&req.email).map(Some))
        };
        let team = v.check("team_id", optional_team(&req.team_id));
        let team_effective = match &req.team_effective_time {
            None => Some(None),
            Some(ts) => v.check("team_effective_time", instant(ts).map(Some)),
        };
        v.finish(|| {
            Some(RepUpsert {
                id: id?,
                display_name: display_name?,
                email: email?,
                active: req.active,
                team: team?,
                team_effective: team_effective?,
            })
        })
    }
}

impl From<Team> for pb::Team {
    fn from(team: Team) -> Self {
        Self {
            team_id: team.id,
            display_name: team.display_name,
            parent_team_id: team.parent.unwrap_or_default(),
            create_time: Some(timestamp(team.created_at)),
            update_time: Some(timestamp(team.updated_at)),
        }
    }
}

impl From<Membership> for pb::TeamMembership {
    fn from(m: Membership) -> Self {
        Self {
            team_id: m.team.unwrap_or_default(),
            effective_from: m.from.map(timestamp),
            effective_until: m.until.map(timestamp),
            team_hidden: m.hidden,
        }
    }
}

impl From<Rep> for pb::Rep {
    fn from(rep: Rep) -> Self {
        Self {
            rep_id: rep.id,
            display_name: rep.display_name,
            email: rep.email.unwrap_or_default(),
            active: rep.active,
            team_id: rep.team.unwrap_or_default(),
            memberships: rep.memberships.into_iter().map(Into::into).collect(),
            create_time: Some(timestamp(rep.created_at)),
            update_time: Some(timestamp(rep.updated_at)),
        }
    }
}

#[cfg(test)]
mod tests {
    use pbjson_types::Timestamp;

    use super::*;

    #[test]
    fn every_violation_of_a_rep_is_reported_at_once() {
        let req = pb::UpsertRepRequest {
            rep_id: String::new(),
            display_name: " ".into(),
            email: "nope".into(),
            team_effective_time: Some(Timestamp {
                seconds: 0,
                nanos: -1,
            }),
            ..Default::default()
        };
        let Err(Error::InvalidArgument(violations)) = RepUpsert::try_from(req) else {
            panic!("expected INVALID_ARGUMENT");
        };
        let fields: Vec<_> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            ["rep_id", "display_name", "email", "team_effective_time"]
        );
    }

    #[test]
    fn a_team_cannot_be_its_own_parent() {
        let req = pb::UpsertTeamRequest {
            team_id: "a".into(),
            display_name: "A".into(),
            parent_team_id: "a".into(),
        };
        assert!(matches!(
            TeamUpsert::try_from(req),
            Err(Error::InvalidArgument(v)) if v[0].field == "parent_team_id"
        ));
    }
}
