//! A team's reps ranked by one KPI.

use std::{collections::HashMap, sync::Arc};

use super::{
    KpiSettings, authorize,
    cache::{self, Caches, Lookup},
    plan::Planner,
    plan::without_unneeded_retention,
};
use crate::{
    Error,
    domain::{
        directory::intervals_in,
        ids::{RepId, TeamId},
        kpi::{self, Kpi},
        period::PeriodSpec,
        report::{Candidate, Leaderboard, rank},
        tally::{TallyQuery, rep_query},
    },
    service::access::Principal,
    store::reads::Reads,
    store::{
        kpi::{self as store, Source},
        targets as targets_store,
    },
};

/// A leaderboard to compute.
#[derive(Debug, Clone)]
pub struct LeaderboardQuery {
    pub kpi: Kpi,
    pub team: TeamId,
    pub period: PeriodSpec,
    /// Rates and means with a smaller sample are listed unranked; default
    /// `kpi::default_min_sample`.
    pub min_sample: Option<i64>,
    /// At most this many entries; 0: all.
    pub limit: usize,
}

#[derive(Debug, Clone)]
pub struct Leaderboards {
    /// The primary (authorization, the cache's version checks) and where
    /// the KPIs are computed: it or a caught-up replica.
    reads: Reads,
    settings: Arc<KpiSettings>,
    caches: Arc<Caches>,
}

impl Leaderboards {
    pub fn new(reads: Reads, settings: Arc<KpiSettings>, caches: Arc<Caches>) -> Self {
        Self {
            reads,
            settings,
            caches,
        }
    }

    /// Every rep who was in the team (or a sub-team) at some time in the
    /// period, ranked by their own value of the KPI over the whole period.
    /// A scoped key sees only the reps now in its teams.
    pub async fn leaderboard(
        &self,
        caller: &Principal,
        query: LeaderboardQuery,
    ) -> Result<Leaderboard, Error> {
        Ok(self.leaderboard_scoped(caller, query).await?.0)
    }

    /// The leaderboard and the scopes it read (what a watch must follow).
    pub async fn leaderboard_scoped(
        &self,
        caller: &Principal,
        query: LeaderboardQuery,
    ) -> Result<(Leaderboard, Arc<[String]>), Error> {
        let LeaderboardQuery {
            kpi,
            team,
            period,
            min_sample,
            limit,
        } = query;
        let period = self.settings.resolve(&period);
        authorize::team(caller, &team)?;
        // A scoped key sees fewer reps: its scope is part of the question.
        let key = format!(
            "{kpi:?}|{team:?}|{period:?}|{min_sample:?}|{limit}|{:?}",
            caller.scope
        );
        let mut miss = match self
            .caches
            .leaderboards
            .lookup(self.reads.primary(), &key)
            .await?
        {
            Lookup::Hit(board, scopes) => return Ok((Leaderboard::clone(&board), scopes)),
            Lookup::Miss(miss) => miss,
        };
        let db = self.reads.pool().await;
        let mut planner = Planner::new(&db);
        let team = planner.team(&team).await?;
        let (from, to) = (period.start_time(), period.end_time());
        let mut members: Vec<String> = team
            .histories
            .iter()
            .filter(|(_, points)| !intervals_in(points, &team.teams, from, to).is_empty())
            .map(|(rep, _)| rep.to_string())
            .collect();
        let mut cards = crate::store::directory::rep_cards(&db, &members).await?;
        if caller.scope.is_some() {
            members.retain(|rep| {
                cards
                    .get(rep)
                    .and_then(|card| card.team.as_deref())
                    .is_some_and(|team| caller.sees_team(team))
            });
        }
        let mut queries: Vec<TallyQuery> =
            members.iter().map(|rep| rep_query(rep, from, to)).collect();
        without_unneeded_retention(&mut queries, &[kpi]);
        miss.stamp.read(&db, cache::rep_scopes(&queries)).await?;
        let (tallies, targets) = tokio::try_join!(
            store::tallies(
                &db,
                &queries,
                Source::Rollups,
                &self.settings.reporting_currency
            ),
            targets_store::for_period(&db, "rep", &members, &period)
        )?;
        let targets: HashMap<String, f64> = targets
            .into_iter()
            .filter(|t| t.kpi == kpi)
            .map(|t| (t.subject.id().to_owned(), t.value))
            .collect();
        let mut candidates = Vec::with_capacity(members.len());
        for (rep, tally) in members.into_iter().zip(&tallies) {
            let rep_id = RepId::parse(&rep).map_err(|e| {
                Error::internal(anyhow::anyhow!("stored rep id '{rep}' is invalid: {e}"))
            })?;
            candidates.push(Candidate {
                display_name: cards
                    .remove(&rep)
                    .map(|card| card.display_name)
                    .unwrap_or_default(),
                target: targets.get(&rep).copied(),
                value: kpi::evaluate(kpi, tally),
                rep_id,
            });
        }
        let values = candidates
            .iter_mut()
            .enumerate()
            .map(|(i, c)| (i, &mut c.value))
            .collect();
        self.settings
            .explain_unconverted(&db, &queries, values)
            .await?;
        let min_sample = min_sample.unwrap_or_else(|| kpi::default_min_sample(kpi));
        let board = Leaderboard {
            period,
            currency: self.settings.reporting_currency.clone(),
            entries: rank(kpi, candidates, min_sample, limit),
        };
        let bytes = 1024 * (board.entries.len() + 1);
        let scopes = self
            .caches
            .leaderboards
            .insert(key, miss, Arc::new(board.clone()), bytes);
        Ok((board, scopes))
    }
}
