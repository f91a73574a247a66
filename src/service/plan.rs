//! Planning the tally queries of a call: which reps and ranges make up
//! each subject's KPIs over each period, with each team's membership read
//! once per call however many subjects and periods name it.

use std::collections::{HashMap, hash_map::Entry};

use chrono::{NaiveDate, Utc};
use chrono_tz::Tz;
use sqlx::PgPool;

use crate::{
    Error,
    domain::{
        ids::TeamId,
        kpi::{self, Kpi},
        period::Period,
        rollup::touches_month,
        tally::{TallyQuery, TeamMembers, rep_query, team_query},
        target::Subject,
    },
    store::{directory, kpi as store},
};

/// From this many periods (a daily series of two months and more), the
/// periods without activity are not planned (see `Planner::queries_for`).
const SKIP_QUIET_MIN_PERIODS: usize = 60;

/// Builds tally queries, reading each team's membership once however many
/// subjects and periods of one call name it (ListTargets: one per target).
pub struct Planner<'p> {
    pool: &'p PgPool,
    teams: HashMap<TeamId, TeamMembers>,
}

impl<'p> Planner<'p> {
    pub fn new(pool: &'p PgPool) -> Self {
        Self {
            pool,
            teams: HashMap::new(),
        }
    }

    /// A team's membership (read once per planner), or NOT_FOUND.
    pub async fn team(&mut self, team: &TeamId) -> Result<&TeamMembers, Error> {
        Ok(match self.teams.entry(team.clone()) {
            Entry::Occupied(known) => known.into_mut(),
            Entry::Vacant(new) => new.insert(
                directory::membership(self.pool, team.as_str())
                    .await?
                    .ok_or_else(|| Error::NotFound {
                        kind: "team",
                        id: team.to_string(),
                    })?,
            ),
        })
    }

    /// The tally queries of `subject` over each period. Retention
    /// (customers active at each period start) is computed only if one of
    /// `kpis` needs it.
    ///
    /// With many periods and no retention, the periods in which none of
    /// the subject's reps has any activity are not planned at all: their
    /// tallies are zero (one read of the month rollups says which; see
    /// `store::kpi::active_months_of`). A 10-year daily series over a team
    /// with a year of activity then costs the year. Retention cannot skip
    /// them: customers converted before a quiet period are active in it.
    pub async fn queries_for(
        &mut self,
        subject: &Subject,
        periods: &[Period],
        kpis: &[Kpi],
    ) -> Result<Vec<TallyQuery>, Error> {
        let pool = self.pool;
        let skip_quiet = periods.len() >= SKIP_QUIET_MIN_PERIODS
            && !kpis.iter().any(|k| kpi::needs_retention(*k));
        let span = periods
            .iter()
            .map(Period::start_time)
            .min()
            .zip(periods.iter().map(Period::end_time).max())
            .filter(|_| skip_quiet);
        let team = match subject {
            Subject::Team(team) => Some(self.team(team).await?),
            Subject::Rep(_) => None,
        };
        let active = match span {
            Some((from, to)) => {
                let reps: Vec<&str> = team.map_or_else(
                    || vec![subject.id()],
                    |team| team.histories.iter().map(|(r, _)| &**r).collect(),
                );
                Some(store::active_months_of(pool, &reps, from, to).await?)
            }
            None => None,
        };
        let mut queries: Vec<TallyQuery> = periods
            .iter()
            .map(|p| {
                let (from, to) = (p.start_time(), p.end_time());
                match (&active, team) {
                    (Some(months), _) if !touches_month(months, from, to) => TallyQuery::default(),
                    (_, Some(team)) => team_query(team, from, to),
                    (_, None) => rep_query(subject.id(), from, to),
                }
            })
            .collect();
        without_unneeded_retention(&mut queries, kpis);
        Ok(queries)
    }
}

/// Narrows `queries` to what `kpis` need: the sums they are made of, and
/// the retention part only if one of them needs it.
pub fn without_unneeded_retention(queries: &mut [TallyQuery], kpis: &[Kpi]) {
    let retention = kpis.iter().any(|k| kpi::needs_retention(*k));
    let metrics = kpi::metrics_for(kpis);
    for query in queries {
        query.metrics = metrics;
        if !retention {
            query.retention = None;
        }
    }
}

/// Today's date in `zone`.
pub fn today(zone: Tz) -> NaiveDate {
    Utc::now().with_timezone(&zone).date_naive()
}
