//! What a caller may see: the one place that answers "may this key see
//! this team, this rep, this subject?". A team-scoped key sees its team,
//! the sub-teams and the reps now in them; for anything else it gets
//! PERMISSION_DENIED, the same answer whether or not the thing exists, so
//! nothing leaks.

use sqlx::PgPool;

use crate::{
    Error,
    domain::{
        directory::{Rep, Team},
        ids::{RepId, TeamId},
        target::Subject,
    },
    service::access::Principal,
    store::directory as store,
};

/// PERMISSION_DENIED unless the caller may see `team`.
pub fn team(caller: &Principal, team: &TeamId) -> Result<(), Error> {
    if caller.sees_team(team.as_str()) {
        Ok(())
    } else {
        Err(Error::PermissionDenied(format!(
            "this key may not see team '{team}'"
        )))
    }
}

/// The teams a scoped caller sees (`None`: every team), for filtering
/// lists in the query itself.
pub fn visible_teams(caller: &Principal) -> Option<Vec<String>> {
    caller
        .scope
        .as_ref()
        .map(|teams| teams.iter().cloned().collect())
}

/// The rep `id` as looked up (`found`), if the caller may see it: a scoped
/// key sees a rep whose current team is in its scope; a missing rep is
/// NOT_FOUND only for an unscoped key.
pub fn rep(caller: &Principal, id: &RepId, found: Option<Rep>) -> Result<Rep, Error> {
    if caller.scope.is_some()
        && !found
            .as_ref()
            .and_then(|r| r.team.as_deref())
            .is_some_and(|team| caller.sees_team(team))
    {
        return Err(Error::PermissionDenied(format!(
            "this key may not see rep '{id}'"
        )));
    }
    found.ok_or_else(|| Error::NotFound {
        kind: "rep",
        id: id.to_string(),
    })
}

/// A team as the caller may see it: a scoped key's top team shows no
/// parent (the parent is outside the scope).
pub fn redact_team(caller: &Principal, mut team: Team) -> Team {
    if team.parent.as_deref().is_some_and(|p| !caller.sees_team(p)) {
        team.parent = None;
    }
    team
}

/// A rep as the caller may see it: periods in teams outside a scoped key's
/// scope keep their dates but not the team's id.
pub fn redact_rep(caller: &Principal, mut rep: Rep) -> Rep {
    for membership in &mut rep.memberships {
        if membership
            .team
            .as_deref()
            .is_some_and(|t| !caller.sees_team(t))
        {
            membership.team = None;
            membership.hidden = true;
        }
    }
    rep
}

/// Checks that the subject exists and the caller may see it.
pub async fn subject(pool: &PgPool, caller: &Principal, subject: &Subject) -> Result<(), Error> {
    match subject {
        Subject::Team(id) => {
            team(caller, id)?;
            if store::get_team(pool, id.as_str()).await?.is_none() {
                return Err(Error::NotFound {
                    kind: "team",
                    id: id.to_string(),
                });
            }
        }
        Subject::Rep(id) => {
            rep(caller, id, store::get_rep(pool, id.as_str()).await?)?;
        }
    }
    Ok(())
}

/// Checks the caller may read the subject's KPIs: for a team, the key's
/// scope alone (whether it exists is found with its membership, in the
/// same round trip as the rest); for a rep, as `subject`.
pub async fn read(pool: &PgPool, caller: &Principal, subject: &Subject) -> Result<(), Error> {
    match subject {
        Subject::Team(id) => team(caller, id),
        Subject::Rep(_) => self::subject(pool, caller, subject).await,
    }
}
