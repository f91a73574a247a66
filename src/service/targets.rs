//! Targets per KPI, subject and period, and progress against them.

use std::sync::Arc;

use chrono::{Days, Utc};

use super::{KpiSettings, authorize, plan::Planner, plan::today};
use crate::{
    Error,
    domain::{
        kpi, period,
        sums::Tally,
        target::{NewTarget, Target, TargetFilter, TargetProgress, TargetStatus},
    },
    service::access::Principal,
    store::reads::Reads,
    store::{
        kpi::{self as store, Source},
        targets as targets_store,
    },
};

#[derive(Debug, Clone)]
pub struct Targets {
    /// The primary (targets are read and written there) and where progress
    /// is computed: it or a caught-up replica.
    reads: Reads,
    settings: Arc<KpiSettings>,
}

impl Targets {
    pub fn new(reads: Reads, settings: Arc<KpiSettings>) -> Self {
        Self { reads, settings }
    }

    /// Sets a target; the same KPI, subject and dates replace the old value.
    pub async fn set(&self, caller: &Principal, target: NewTarget) -> Result<Target, Error> {
        authorize::subject(self.reads.primary(), caller, target.subject()).await?;
        targets_store::set(self.reads.primary(), &target).await
    }

    /// The targets matching `filter` that the caller may see (filtered in
    /// the one query that lists them), each with its progress through the
    /// end of the as-of day (default: today in the target's zone, up to
    /// now); every tally in one go.
    pub async fn list(
        &self,
        caller: &Principal,
        filter: TargetFilter,
    ) -> Result<Vec<TargetStatus>, Error> {
        if let Some(subject) = &filter.subject {
            authorize::subject(self.reads.primary(), caller, subject).await?;
        }
        let period = filter.period.map(|spec| self.settings.resolve(&spec));
        let targets = targets_store::list(
            self.reads.primary(),
            &filter,
            period.as_ref(),
            authorize::visible_teams(caller),
        )
        .await?;

        if targets.is_empty() {
            return Ok(Vec::new());
        }
        let db = self.reads.pool().await;
        let mut planner = Planner::new(&db);
        let mut queries = Vec::new();
        // Per target: the slot of its tally (none before its period) and
        // its progress so far.
        let mut plans = Vec::with_capacity(targets.len());
        for target in &targets {
            let full = target.period;
            let zone = full.zone();
            let day = filter.as_of.unwrap_or_else(|| today(zone));
            let at = match filter.as_of {
                Some(day) => day
                    .checked_add_days(Days::new(1))
                    .map_or(full.end_time(), |next| period::local_midnight(zone, next)),
                None => Utc::now(),
            };
            let slot = match full.through(day) {
                Some(through) => {
                    let slot = queries.len();
                    queries.extend(
                        planner
                            .queries_for(&target.subject, &[through], &[target.kpi])
                            .await?,
                    );
                    Some(slot)
                }
                None => None,
            };
            plans.push((
                slot,
                day.clamp(full.start(), full.end()),
                full.elapsed_fraction(at),
            ));
        }
        let tallies = store::tallies(
            &db,
            &queries,
            Source::Rollups,
            &self.settings.reporting_currency,
        )
        .await?;
        Ok(targets
            .into_iter()
            .zip(plans)
            .map(|(target, (slot, as_of, elapsed))| {
                let empty = Tally::default();
                let tally = slot.and_then(|i| tallies.get(i)).unwrap_or(&empty);
                let actual = kpi::evaluate(target.kpi, tally).value;
                TargetStatus {
                    progress: TargetProgress {
                        progress: kpi::progress(target.kpi, target.value, actual, elapsed),
                        as_of,
                    },
                    target,
                }
            })
            .collect())
    }

    /// Deletes a target, or NOT_FOUND.
    pub async fn delete(&self, _caller: &Principal, target_id: &str) -> Result<(), Error> {
        if targets_store::delete(self.reads.primary(), target_id).await? {
            Ok(())
        } else {
            Err(Error::NotFound {
                kind: "target",
                id: target_id.to_owned(),
            })
        }
    }
}
