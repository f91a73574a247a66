//! Teams, reps and the history of which rep was in which team when.

use chrono::{DateTime, Utc};

use super::ids::{DisplayName, Email, RepId, TeamId};

/// Create or replace a team.
#[derive(Debug, Clone)]
pub struct TeamUpsert {
    pub id: TeamId,
    pub display_name: DisplayName,
    pub parent: Option<TeamId>,
}

/// Create or replace a rep.
#[derive(Debug, Clone)]
pub struct RepUpsert {
    pub id: RepId,
    pub display_name: DisplayName,
    pub email: Option<Email>,
    /// `None`: true for a new rep, unchanged for an existing one.
    pub active: Option<bool>,
    /// The rep's team from `team_effective` on; `None` for no team.
    pub team: Option<TeamId>,
    /// When a change of team takes effect; `None`: now, or the beginning of
    /// time for a rep's first team.
    pub team_effective: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Team {
    pub id: String,
    pub display_name: String,
    pub parent: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rep {
    pub id: String,
    pub display_name: String,
    /// `None` when the CRM has no address for the rep.
    pub email: Option<String>,
    pub active: bool,
    /// The team now.
    pub team: Option<String>,
    /// Oldest first; empty in lists.
    pub memberships: Vec<Membership>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One period in which a rep belonged to one team (or to none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub team: Option<String>,
    /// The team is outside the caller's scope: `team` is `None` and says
    /// nothing (see `service::authorize::redact_rep`).
    pub hidden: bool,
    /// `None`: since the beginning of time.
    pub from: Option<DateTime<Utc>>,
    /// `None`: still in effect.
    pub until: Option<DateTime<Utc>>,
}

/// A change point of a rep's team history: from `from` on (`None`: the
/// beginning of time), until the next change point, the rep is in `team`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangePoint {
    pub from: Option<DateTime<Utc>>,
    pub team: Option<String>,
}

/// Turns change points (oldest first) into periods, each ending where the
/// next begins.
pub fn memberships(points: &[ChangePoint]) -> Vec<Membership> {
    points
        .iter()
        .enumerate()
        .map(|(i, point)| Membership {
            team: point.team.clone(),
            hidden: false,
            from: point.from,
            until: points.get(i + 1).and_then(|next| next.from),
        })
        .collect()
}

/// The team in force at `at`, given change points oldest first.
pub fn team_at(points: &[ChangePoint], at: DateTime<Utc>) -> Option<String> {
    points
        .iter()
        .rev()
        .find(|p| p.from.is_none_or(|from| from <= at))
        .and_then(|p| p.team.clone())
}

/// Where a move to `team` lands in the history: `None` when no change point
/// is needed (the rep's latest team is already `team`, or a rep without a
/// team stays without one); otherwise the effective time of the new change
/// point (`None` inside: the beginning of time).
pub fn move_effective_from(
    points: &[ChangePoint],
    team: Option<&str>,
    requested: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<Option<DateTime<Utc>>> {
    match points.last() {
        None if team.is_none() => None,
        None => Some(requested),
        Some(latest) if latest.team.as_deref() == team => None,
        Some(_) => Some(Some(requested.unwrap_or(now))),
    }
}

/// The parts of [from, to) during which a rep with these change points
/// (oldest first) belonged to one of `teams`.
pub fn intervals_in(
    points: &[ChangePoint],
    teams: &std::collections::HashSet<String>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let mut out: Vec<(DateTime<Utc>, DateTime<Utc>)> = Vec::new();
    for (i, point) in points.iter().enumerate() {
        if !point.team.as_ref().is_some_and(|t| teams.contains(t)) {
            continue;
        }
        let start = point.from.map_or(from, |f| f.max(from));
        let end = points
            .get(i + 1)
            .and_then(|next| next.from)
            .map_or(to, |until| until.min(to));
        if start < end {
            // Adjacent periods in two teams of the set are one interval.
            match out.last_mut() {
                Some(last) if last.1 == start => last.1 = end,
                _ => out.push((start, end)),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, day, 0, 0, 0)
            .single()
            .unwrap_or_default()
    }

    fn point(from: Option<u32>, team: Option<&str>) -> ChangePoint {
        ChangePoint {
            from: from.map(at),
            team: team.map(str::to_owned),
        }
    }

    #[test]
    fn periods_end_where_the_next_begins() {
        let points = [point(None, Some("a")), point(Some(10), Some("b"))];
        let periods = memberships(&points);
        assert_eq!(periods.len(), 2);
        assert_eq!(periods[0].from, None);
        assert_eq!(periods[0].until, Some(at(10)));
        assert_eq!(periods[1].until, None);
    }

    #[test]
    fn the_team_at_a_moment_is_the_latest_change_point_before_it() {
        let points = [point(None, Some("a")), point(Some(10), Some("b"))];
        assert_eq!(team_at(&points, at(9)).as_deref(), Some("a"));
        assert_eq!(team_at(&points, at(10)).as_deref(), Some("b"));
        let late_start = [point(Some(5), Some("a"))];
        assert_eq!(team_at(&late_start, at(4)), None);
    }

    #[test]
    fn intervals_in_a_set_of_teams_are_clipped_and_merged() {
        let points = [
            point(None, Some("a")),
            point(Some(10), Some("b")),
            point(Some(15), Some("c")),
            point(Some(20), Some("a")),
        ];
        let ab: std::collections::HashSet<String> = ["a".to_owned(), "b".to_owned()].into();
        assert_eq!(
            intervals_in(&points, &ab, at(5), at(25)),
            [(at(5), at(15)), (at(20), at(25))]
        );
        let c: std::collections::HashSet<String> = ["c".to_owned()].into();
        assert_eq!(
            intervals_in(&points, &c, at(16), at(18)),
            [(at(16), at(18))]
        );
        assert!(intervals_in(&points, &c, at(1), at(9)).is_empty());
    }

    #[test]
    fn a_first_team_applies_from_the_beginning_of_time_unless_dated() {
        assert_eq!(
            move_effective_from(&[], Some("a"), None, at(20)),
            Some(None)
        );
        assert_eq!(
            move_effective_from(&[], Some("a"), Some(at(3)), at(20)),
            Some(Some(at(3)))
        );
        assert_eq!(move_effective_from(&[], None, None, at(20)), None);
    }

    #[test]
    fn a_move_defaults_to_now_and_staying_put_changes_nothing() {
        let points = [point(None, Some("a"))];
        assert_eq!(
            move_effective_from(&points, Some("b"), None, at(20)),
            Some(Some(at(20)))
        );
        assert_eq!(
            move_effective_from(&points, Some("a"), Some(at(1)), at(20)),
            None
        );
        assert_eq!(
            move_effective_from(&points, None, None, at(20)),
            Some(Some(at(20)))
        );
    }
}
