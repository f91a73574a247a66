//! Teams, reps and their team membership history, and what the KPI
//! queries read of it (a team's members over time, the reps' cards).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use crate::{
    Error,
    domain::{
        directory::{self, ChangePoint, Rep, RepUpsert, Team, TeamUpsert},
        ids::TeamId,
        tally::TeamMembers,
    },
    error::FieldViolation,
};

/// Serialises changes to the team tree, so two concurrent re-parentings
/// cannot build a cycle that neither would build alone. Teams change rarely;
/// the lock costs nothing that matters.
const TEAM_TREE_LOCK: i64 = 0x6b70_695f_7472_6565;

#[derive(sqlx::FromRow)]
struct TeamRow {
    team_id: String,
    display_name: String,
    parent_team_id: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<TeamRow> for Team {
    fn from(row: TeamRow) -> Self {
        Self {
            id: row.team_id,
            display_name: row.display_name,
            parent: row.parent_team_id,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

#[derive(sqlx::FromRow)]
struct RepRow {
    rep_id: String,
    display_name: String,
    email: String,
    active: bool,
    team_id: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl RepRow {
    fn into_rep(self, points: &[ChangePoint]) -> Rep {
        Rep {
            id: self.rep_id,
            display_name: self.display_name,
            email: Some(self.email).filter(|e| !e.is_empty()),
            active: self.active,
            team: self.team_id,
            memberships: directory::memberships(points),
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

/// Creates or replaces a team. The parent must exist and must not be the
/// team itself or one of its descendants.
pub async fn upsert_team(pool: &PgPool, team: &TeamUpsert) -> Result<Team, Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(TEAM_TREE_LOCK)
        .execute(&mut *tx)
        .await?;

    if let Some(parent) = &team.parent {
        // Walk up from the proposed parent; meeting the team itself means the
        // change would close a cycle.
        let (parent_exists, cycle): (bool, bool) = sqlx::query_as(
            r#"
            WITH RECURSIVE chain (team_id, parent_team_id) AS (
                SELECT team_id, parent_team_id FROM teams WHERE team_id = $1
                UNION
                SELECT t.team_id, t.parent_team_id
                FROM teams t JOIN chain c ON t.team_id = c.parent_team_id
            )
            SELECT count(*) > 0, coalesce(bool_or(team_id = $2), false) FROM chain
            "#,
        )
        .bind(parent.as_str())
        .bind(team.id.as_str())
        .fetch_one(&mut *tx)
        .await?;
        if !parent_exists {
            return Err(Error::invalid(
                "parent_team_id",
                format!("team '{parent}' does not exist"),
            ));
        }
        if cycle {
            return Err(Error::invalid(
                "parent_team_id",
                format!(
                    "team '{parent}' is '{}' itself or one of its sub-teams: teams cannot form a cycle",
                    team.id
                ),
            ));
        }
    }

    let row: TeamRow = sqlx::query_as(
        r#"
        INSERT INTO teams AS t (team_id, display_name, parent_team_id)
        VALUES ($1, $2, $3)
        ON CONFLICT (team_id) DO UPDATE SET
            display_name = EXCLUDED.display_name,
            parent_team_id = EXCLUDED.parent_team_id,
            updated_at = CASE
                WHEN (t.display_name, t.parent_team_id)
                     IS DISTINCT FROM (EXCLUDED.display_name, EXCLUDED.parent_team_id)
                THEN now() ELSE t.updated_at END
        RETURNING team_id, display_name, parent_team_id, created_at, updated_at
        "#,
    )
    .bind(team.id.as_str())
    .bind(team.display_name.as_str())
    .bind(team.parent.as_ref().map(TeamId::as_str))
    .fetch_one(&mut *tx)
    .await?;
    super::changes::publish(&mut tx, &directory_change()).await?;
    tx.commit().await?;
    Ok(row.into())
}

/// Any directory write: teams, reps, memberships.
fn directory_change() -> super::changes::Change {
    super::changes::Change::new(vec![super::changes::DIRECTORY.to_owned()], None)
}

pub async fn get_team(pool: &PgPool, team_id: &str) -> Result<Option<Team>, Error> {
    let row: Option<TeamRow> = sqlx::query_as(
        r#"
        SELECT team_id, display_name, parent_team_id, created_at, updated_at
        FROM teams WHERE team_id = $1
        "#,
    )
    .bind(team_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(Team::from))
}

async fn team_exists(conn: &mut PgConnection, team_id: &str) -> Result<bool, Error> {
    let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM teams WHERE team_id = $1")
        .bind(team_id)
        .fetch_optional(conn)
        .await?;
    Ok(found.is_some())
}

/// NOT_FOUND unless the team a filter names exists.
async fn require_team(conn: &mut PgConnection, team: &TeamId) -> Result<(), Error> {
    if team_exists(conn, team.as_str()).await? {
        Ok(())
    } else {
        Err(Error::NotFound {
            kind: "team",
            id: team.to_string(),
        })
    }
}

/// Teams ordered by id after `after`, at most `limit`; only the direct
/// children of `parent` when given; only `visible` ones when given.
pub async fn list_teams(
    pool: &PgPool,
    parent: Option<&TeamId>,
    visible: Option<Vec<String>>,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<Team>, Error> {
    let mut conn = pool.acquire().await?;
    if let Some(parent) = parent {
        require_team(&mut conn, parent).await?;
    }
    let rows: Vec<TeamRow> = sqlx::query_as(
        r#"
        SELECT team_id, display_name, parent_team_id, created_at, updated_at
        FROM teams
        WHERE ($1::text IS NULL OR parent_team_id = $1)
          AND ($2::text IS NULL OR team_id > $2)
          AND ($4::text[] IS NULL OR team_id = ANY($4))
        ORDER BY team_id
        LIMIT $3
        "#,
    )
    .bind(parent.map(TeamId::as_str))
    .bind(after)
    .bind(i64::from(limit))
    .bind(visible)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(Team::from).collect())
}

/// A rep's change points, oldest first ('-infinity' read as `None`).
async fn change_points(conn: &mut PgConnection, rep_id: &str) -> Result<Vec<ChangePoint>, Error> {
    let rows: Vec<(Option<DateTime<Utc>>, Option<String>)> = sqlx::query_as(
        r#"
        SELECT CASE WHEN isfinite(effective_from) THEN effective_from END, team_id
        FROM rep_team_history
        WHERE rep_id = $1
        ORDER BY effective_from
        "#,
    )
    .bind(rep_id)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(from, team)| ChangePoint { from, team })
        .collect())
}

/// The columns of a `RepRow`, from `reps r`, with the team in force now.
macro_rules! rep_columns {
    () => {
        r#"
        r.rep_id, r.display_name, r.email, r.active, r.created_at, r.updated_at,
        (SELECT h.team_id FROM rep_team_history h
         WHERE h.rep_id = r.rep_id AND h.effective_from <= now()
         ORDER BY h.effective_from DESC LIMIT 1) AS team_id
        "#
    };
}

async fn load_rep(conn: &mut PgConnection, rep_id: &str) -> Result<Option<Rep>, Error> {
    let row: Option<RepRow> = sqlx::query_as(concat!(
        "SELECT ",
        rep_columns!(),
        " FROM reps r WHERE r.rep_id = $1"
    ))
    .bind(rep_id)
    .fetch_optional(&mut *conn)
    .await?;
    match row {
        Some(row) => {
            let points = change_points(conn, rep_id).await?;
            Ok(Some(row.into_rep(&points)))
        }
        None => Ok(None),
    }
}

/// One rep with its membership history.
pub async fn get_rep(pool: &PgPool, rep_id: &str) -> Result<Option<Rep>, Error> {
    let mut conn = pool.acquire().await?;
    load_rep(&mut conn, rep_id).await
}

/// Creates or replaces a rep and records a change of team in its history.
pub async fn upsert_rep(pool: &PgPool, rep: &RepUpsert) -> Result<Rep, Error> {
    let mut tx = pool.begin().await?;
    let rep_id = rep.id.as_str();

    if let Some(team) = &rep.team
        && !team_exists(&mut tx, team.as_str()).await?
    {
        return Err(Error::InvalidArgument(vec![FieldViolation::new(
            "team_id",
            format!("team '{team}' does not exist"),
        )]));
    }

    // Create the row if needed, then hold its lock for the rest of the
    // transaction so concurrent upserts of one rep apply one after another.
    sqlx::query(
        r#"
        INSERT INTO reps (rep_id, display_name, email, active)
        VALUES ($1, $2, $3, coalesce($4, true))
        ON CONFLICT (rep_id) DO NOTHING
        "#,
    )
    .bind(rep_id)
    .bind(rep.display_name.as_str())
    .bind(rep.email.as_ref().map_or("", |e| e.as_str()))
    .bind(rep.active)
    .execute(&mut *tx)
    .await?;
    sqlx::query("SELECT 1 FROM reps WHERE rep_id = $1 FOR UPDATE")
        .bind(rep_id)
        .execute(&mut *tx)
        .await?;

    let points = change_points(&mut tx, rep_id).await?;
    let team = rep.team.as_ref().map(TeamId::as_str);
    // The transaction's own clock, so that "now" here is the "now" the
    // current team is read at below.
    let now: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(&mut *tx)
        .await?;
    let moved = match directory::move_effective_from(&points, team, rep.team_effective, now) {
        None => false,
        Some(from) => {
            // A move replaces whatever history came after it, so the rep's
            // latest team is always the one the caller last asked for.
            sqlx::query(
                r#"
                DELETE FROM rep_team_history
                WHERE rep_id = $1 AND effective_from >= coalesce($2, '-infinity'::timestamptz)
                "#,
            )
            .bind(rep_id)
            .bind(from)
            .execute(&mut *tx)
            .await?;
            // Merge with the period before when it already has this team
            // (or, at the start of the history, no team).
            let before = points.iter().rev().find(|p| p.from < from);
            let same_as_before = match before {
                Some(previous) => previous.team.as_deref() == team,
                None => team.is_none(),
            };
            if !same_as_before {
                sqlx::query(
                    r#"
                    INSERT INTO rep_team_history (rep_id, effective_from, team_id)
                    VALUES ($1, coalesce($2, '-infinity'::timestamptz), $3)
                    "#,
                )
                .bind(rep_id)
                .bind(from)
                .bind(team)
                .execute(&mut *tx)
                .await?;
            }
            true
        }
    };

    sqlx::query(
        r#"
        UPDATE reps SET
            display_name = $2,
            email = $3,
            active = coalesce($4, active),
            updated_at = CASE
                WHEN $5 OR (display_name, email, active)
                           IS DISTINCT FROM ($2, $3, coalesce($4, active))
                THEN now() ELSE updated_at END
        WHERE rep_id = $1
        "#,
    )
    .bind(rep_id)
    .bind(rep.display_name.as_str())
    .bind(rep.email.as_ref().map_or("", |e| e.as_str()))
    .bind(rep.active)
    .bind(moved)
    .execute(&mut *tx)
    .await?;

    let stored = load_rep(&mut tx, rep_id).await?.ok_or_else(|| {
        Error::internal(anyhow::anyhow!(
            "rep {rep_id} vanished inside its own transaction"
        ))
    })?;
    super::changes::publish(&mut tx, &directory_change()).await?;
    tx.commit().await?;
    Ok(stored)
}

/// Which reps a list returns.
#[derive(Debug, Clone, Default)]
pub struct RepFilter {
    /// Only the current members of this team.
    pub team: Option<TeamId>,
    /// With `team`: also the members of its sub-teams, at any depth.
    pub include_sub_teams: bool,
    /// Only reps whose current team is one of these (a key's team scope).
    pub visible: Option<Vec<String>>,
}

/// Reps ordered by id after `after`, at most `limit`, without history.
pub async fn list_reps(
    pool: &PgPool,
    filter: &RepFilter,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<Rep>, Error> {
    let mut conn = pool.acquire().await?;
    if let Some(team) = &filter.team {
        require_team(&mut conn, team).await?;
    }
    let sql = concat!(
        r#"
        WITH RECURSIVE scope (team_id) AS (
            SELECT $1::text WHERE $1::text IS NOT NULL
            UNION
            SELECT t.team_id FROM teams t JOIN scope s ON t.parent_team_id = s.team_id
            WHERE $2
        )
        SELECT rep_id, display_name, email, active, created_at, updated_at, team_id
        FROM (SELECT "#,
        rep_columns!(),
        r#" FROM reps r) r
        WHERE ($3::text IS NULL OR r.rep_id > $3)
          AND ($1::text IS NULL OR r.team_id IN (SELECT team_id FROM scope))
          AND ($5::text[] IS NULL OR r.team_id = ANY($5))
        ORDER BY r.rep_id
        LIMIT $4
        "#
    );
    let rows: Vec<RepRow> = sqlx::query_as(sql)
        .bind(filter.team.as_ref().map(TeamId::as_str))
        .bind(filter.include_sub_teams)
        .bind(after)
        .bind(i64::from(limit))
        .bind(filter.visible.clone())
        .fetch_all(&mut *conn)
        .await?;
    Ok(rows.into_iter().map(|row| row.into_rep(&[])).collect())
}

/// The membership of `team_id` in one round trip; `None` if there is no
/// such team.
pub async fn membership(pool: &PgPool, team_id: &str) -> Result<Option<TeamMembers>, Error> {
    // (is a team of the subtree, team or rep id, effective from, team)
    type MembershipRow = (bool, String, Option<DateTime<Utc>>, Option<String>);
    let rows: Vec<MembershipRow> = sqlx::query_as(
        r#"
        WITH RECURSIVE tree (team_id) AS (
            SELECT team_id FROM teams WHERE team_id = $1
            UNION
            SELECT t.team_id FROM teams t JOIN tree ON t.parent_team_id = tree.team_id
        )
        SELECT true, team_id, NULL::timestamptz, NULL::text FROM tree
        UNION ALL
        SELECT false, h.rep_id, CASE WHEN isfinite(h.effective_from) THEN h.effective_from END,
               h.team_id
        FROM rep_team_history h
        WHERE h.rep_id IN (SELECT rep_id FROM rep_team_history WHERE team_id IN (SELECT team_id FROM tree))
        ORDER BY 1 DESC, 2, 3 NULLS FIRST
        "#,
    )
    .bind(team_id)
    .fetch_all(pool)
    .await?;
    let mut out = TeamMembers::default();
    for (is_team, id, from, team) in rows {
        if is_team {
            out.teams.insert(id);
            continue;
        }
        let point = ChangePoint { from, team };
        match out.histories.last_mut() {
            Some((last, points)) if **last == *id => points.push(point),
            _ => out.histories.push((id.into(), vec![point])),
        }
    }
    Ok((!out.teams.is_empty()).then_some(out))
}

/// What a leaderboard shows of a rep besides its value.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RepCard {
    pub rep_id: String,
    pub display_name: String,
    /// The team the rep is in now.
    pub team: Option<String>,
}

/// Display name and current team of each rep, in one query.
pub async fn rep_cards(pool: &PgPool, reps: &[String]) -> Result<HashMap<String, RepCard>, Error> {
    let cards: Vec<RepCard> = sqlx::query_as(
        r#"
        SELECT r.rep_id, r.display_name,
               (SELECT h.team_id FROM rep_team_history h
                WHERE h.rep_id = r.rep_id AND h.effective_from <= now()
                ORDER BY h.effective_from DESC LIMIT 1) AS team
        FROM reps r WHERE r.rep_id = ANY($1)
        "#,
    )
    .bind(reps)
    .fetch_all(pool)
    .await?;
    Ok(cards
        .into_iter()
        .map(|card| (card.rep_id.clone(), card))
        .collect())
}
