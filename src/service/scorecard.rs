//! A subject's scorecard (every KPI, with the previous period, change and
//! target progress) and one KPI's series over calendar buckets.

use std::sync::Arc;

use chrono::Utc;

use tokio::sync::{Semaphore, SemaphorePermit};

use super::{
    KpiSettings, authorize,
    cache::{self, Caches, Lookup},
    plan::Planner,
    plan::today,
};
use crate::{
    Error,
    domain::{
        kpi::{self, Kpi, KpiValue},
        period::{self, Granularity, Period, PeriodSpec},
        report::{Scorecard, ScorecardEntry, Series, SeriesPoint},
        target::{Subject, Target, TargetProgress},
    },
    service::access::Principal,
    store::reads::Reads,
    store::{
        kpi::{self as store, Source},
        targets as targets_store,
    },
};

/// The most buckets one series may have.
pub const MAX_SERIES_POINTS: usize = 5000;
/// A series of more points is a heavy call (see `KpiSettings::max_heavy_calls`).
pub const HEAVY_SERIES_POINTS: usize = 366;
/// How long a heavy call waits for a slot before RESOURCE_EXHAUSTED.
const HEAVY_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// A scorecard to compute.
#[derive(Debug, Clone)]
pub struct ScorecardQuery {
    pub subject: Subject,
    /// Resolved (relative periods: against today) when the call runs.
    pub period: PeriodSpec,
    /// The KPIs to show, in this order; empty: every KPI.
    pub kpis: Vec<Kpi>,
}

/// A series to compute.
#[derive(Debug, Clone)]
pub struct SeriesQuery {
    pub subject: Subject,
    pub kpi: Kpi,
    pub period: PeriodSpec,
    pub granularity: Granularity,
}

#[derive(Debug, Clone)]
pub struct Scorecards {
    /// The primary (authorization, the cache's version checks) and where
    /// the KPIs are computed: it or a caught-up replica.
    reads: Reads,
    settings: Arc<KpiSettings>,
    heavy: Arc<Semaphore>,
    caches: Arc<Caches>,
}

/// A target's progress on a KPI's current value, as of now.
fn progress_now(kpi: Kpi, target: &Target, current: &KpiValue, period: &Period) -> TargetProgress {
    TargetProgress {
        progress: kpi::progress(
            kpi,
            target.value,
            current.value,
            period.elapsed_fraction(Utc::now()),
        ),
        as_of: today(period.zone()).clamp(period.start(), period.end()),
    }
}

impl Scorecards {
    pub fn new(reads: Reads, settings: Arc<KpiSettings>, caches: Arc<Caches>) -> Self {
        let heavy = Arc::new(Semaphore::new(settings.max_heavy_calls.max(1)));
        Self {
            reads,
            settings,
            heavy,
            caches,
        }
    }

    /// A slot for a heavy call: waits up to a second, then
    /// RESOURCE_EXHAUSTED.
    async fn heavy_slot(&self) -> Result<SemaphorePermit<'_>, Error> {
        let busy = || Error::Busy {
            reason: "TOO_MANY_HEAVY_CALLS",
            message: format!(
                "{} heavy calls (series of more than {HEAVY_SERIES_POINTS} points) are running, \
                 the most this instance allows (--max-heavy-calls); retry shortly",
                self.settings.max_heavy_calls
            ),
        };
        match tokio::time::timeout(HEAVY_WAIT, self.heavy.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(busy()),
        }
    }

    pub async fn scorecard(
        &self,
        caller: &Principal,
        query: ScorecardQuery,
    ) -> Result<Scorecard, Error> {
        Ok(self.scorecard_scoped(caller, query).await?.0)
    }

    /// The scorecard and the scopes it read (what a watch must follow).
    pub async fn scorecard_scoped(
        &self,
        caller: &Principal,
        query: ScorecardQuery,
    ) -> Result<(Scorecard, Arc<[String]>), Error> {
        let ScorecardQuery {
            subject,
            period,
            kpis,
        } = query;
        let period = self.settings.resolve(&period);
        let kpis = if kpis.is_empty() {
            Kpi::ALL.to_vec()
        } else {
            kpis
        };
        authorize::read(self.reads.primary(), caller, &subject).await?;

        // Answered from memory when nothing it read changed; the pace of a
        // target moves with the clock, so it is worked out again.
        let key = format!("{subject:?}|{period:?}|{kpis:?}");
        let hit = |card: Arc<Scorecard>| {
            let mut card = Scorecard::clone(&card);
            for entry in &mut card.entries {
                if let Some((target, progress)) = &mut entry.target {
                    *progress =
                        progress_now(entry.current.kpi, target, &entry.current, &card.period);
                }
            }
            card
        };
        let mut miss = match self
            .caches
            .scorecards
            .lookup(self.reads.primary(), &key)
            .await?
        {
            Lookup::Hit(card, scopes) => return Ok((hit(card), scopes)),
            Lookup::Miss(miss) => miss,
        };
        let previous = period.previous();
        let db = self.reads.pool().await;
        let queries = Planner::new(&db)
            .queries_for(&subject, &[period, previous], &kpis)
            .await?;
        miss.stamp.read(&db, cache::rep_scopes(&queries)).await?;
        let subject_ids = [subject.id().to_owned()];
        let (tallies, targets) = tokio::try_join!(
            store::tallies(
                &db,
                &queries,
                Source::Rollups,
                &self.settings.reporting_currency
            ),
            targets_store::for_period(&db, subject.kind(), &subject_ids, &period)
        )?;
        let (Some(now_tally), Some(before_tally)) = (tallies.first(), tallies.get(1)) else {
            return Err(Error::internal(anyhow::anyhow!(
                "expected 2 tallies, got {}",
                tallies.len()
            )));
        };
        let mut entries: Vec<ScorecardEntry> = kpis
            .iter()
            .map(|kpi| {
                let current = kpi::evaluate(*kpi, now_tally);
                let previous = kpi::evaluate(*kpi, before_tally);
                let change = current.value.zip(previous.value).map(|(a, b)| a - b);
                let target = targets.iter().find(|t| t.kpi == *kpi).map(|t| {
                    let progress = progress_now(*kpi, t, &current, &period);
                    (t.clone(), progress)
                });
                ScorecardEntry {
                    current,
                    previous,
                    change,
                    target,
                }
            })
            .collect();
        let values = entries
            .iter_mut()
            .flat_map(|e| [(0, &mut e.current), (1, &mut e.previous)])
            .collect();
        self.settings
            .explain_unconverted(&db, &queries, values)
            .await?;
        let card = Scorecard {
            subject,
            period,
            previous_period: previous,
            currency: self.settings.reporting_currency.clone(),
            entries,
        };
        let bytes = 2048 * (card.entries.len() + 1);
        let scopes = self
            .caches
            .scorecards
            .insert(key, miss, Arc::new(card.clone()), bytes);
        Ok((card, scopes))
    }

    pub async fn series(&self, caller: &Principal, query: SeriesQuery) -> Result<Series, Error> {
        let SeriesQuery {
            subject,
            kpi,
            period,
            granularity,
        } = query;
        let period = self.settings.resolve(&period);
        let buckets = period::buckets(&period, granularity, self.settings.fiscal_year_start_month);
        if buckets.len() > MAX_SERIES_POINTS {
            return Err(Error::invalid(
                "granularity",
                format!(
                    "{} buckets: choose a coarser granularity or a shorter period",
                    buckets.len()
                ),
            ));
        }
        authorize::read(self.reads.primary(), caller, &subject).await?;
        // A heavy call holds its slot from here, cache check included: when
        // the database is slow, the slots are what bounds the waiting.
        let heavy_slot = if buckets.len() > HEAVY_SERIES_POINTS {
            Some(self.heavy_slot().await?)
        } else {
            None
        };
        let key = format!("{subject:?}|{kpi:?}|{period:?}|{granularity:?}");
        let mut miss = match self
            .caches
            .series
            .lookup(self.reads.primary(), &key)
            .await?
        {
            Lookup::Hit(series, _) => return Ok(Series::clone(&series)),
            Lookup::Miss(miss) => miss,
        };
        let db = self.reads.pool().await;
        let queries = Planner::new(&db)
            .queries_for(&subject, &buckets, &[kpi])
            .await?;
        miss.stamp.read(&db, cache::rep_scopes(&queries)).await?;
        let tallies = store::tallies(
            &db,
            &queries,
            Source::Rollups,
            &self.settings.reporting_currency,
        )
        .await?;
        let mut points: Vec<SeriesPoint> = buckets
            .into_iter()
            .zip(&tallies)
            .map(|(bucket, tally)| SeriesPoint {
                bucket,
                value: kpi::evaluate(kpi, tally),
            })
            .collect();
        let values = points
            .iter_mut()
            .enumerate()
            .map(|(i, p)| (i, &mut p.value))
            .collect();
        self.settings
            .explain_unconverted(&db, &queries, values)
            .await?;
        drop(queries);
        drop(tallies);
        if heavy_slot.is_some() {
            crate::memory::release_free_memory();
        }
        let series = Series {
            period,
            currency: self.settings.reporting_currency.clone(),
            points,
        };
        let bytes = 768 * (series.points.len() + 1);
        self.caches
            .series
            .insert(key, miss, Arc::new(series.clone()), bytes);
        Ok(series)
    }
}
