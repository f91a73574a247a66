//! The use cases, one module each, shared by every transport: a caller
//! (`Principal`) and a typed, already-validated query in, domain values
//! out. Authorization, query planning, ranking and target planning live
//! here, once; the transports (`grpc/`, and `http/` through it) only parse
//! requests into the typed queries and convert the answers.

use std::sync::Arc;

use chrono_tz::Tz;
use sqlx::PgPool;

use crate::store::reads::Reads;

pub mod access;
pub mod authorize;
pub mod cache;
pub mod directory;
pub mod explain;
pub mod feed;
pub mod ingest;
pub mod keys;
pub mod leaderboard;
pub mod plan;
pub mod rates;
pub mod scorecard;
pub mod targets;
pub mod watch;

/// Settings the KPI use cases need.
#[derive(Debug, Clone)]
pub struct KpiSettings {
    /// Zone of periods that name none.
    pub default_zone: Tz,
    pub fiscal_year_start_month: u32,
    pub reporting_currency: String,
    /// Heavy calls (series of more than `scorecard::HEAVY_SERIES_POINTS`
    /// points) that may run at once in this process.
    pub max_heavy_calls: usize,
    /// Estimated bytes of answers the result cache may hold (0: none).
    pub cache_bytes: usize,
    /// Watches that may be open at once in this process.
    pub max_watches: usize,
}

impl KpiSettings {
    /// The dates of a period as asked for, now (a relative period against
    /// today in its zone; fiscal units by `fiscal_year_start_month`).
    pub fn resolve(
        &self,
        spec: &crate::domain::period::PeriodSpec,
    ) -> crate::domain::period::Period {
        spec.resolve(chrono::Utc::now(), self.fiscal_year_start_month)
    }

    /// Says, on each money KPI value that leaves won deals out for want of an
    /// exchange rate, which currencies and since when (`values`: each value
    /// with the index of its query in `queries`). One query for all of them,
    /// and none when no value leaves anything out.
    pub async fn explain_unconverted(
        &self,
        pool: &PgPool,
        queries: &[crate::domain::tally::TallyQuery],
        values: Vec<(usize, &mut crate::domain::kpi::KpiValue)>,
    ) -> Result<(), crate::Error> {
        let values: Vec<_> = values
            .into_iter()
            .filter(|(_, v)| v.unconverted_deals > 0)
            .collect();
        if values.is_empty() {
            return Ok(());
        }
        let mut slots: Vec<usize> = values.iter().map(|(slot, _)| *slot).collect();
        slots.sort_unstable();
        slots.dedup();
        let wanted: Vec<_> = slots
            .iter()
            .filter_map(|slot| queries.get(*slot).map(|q| (*slot, q)))
            .collect();
        let missing =
            crate::store::rates::missing_rates(pool, &self.reporting_currency, &wanted).await?;
        for (slot, value) in values {
            value.missing_rates = missing.get(&slot).cloned();
        }
        Ok(())
    }
}

/// Every use case, built once per process and cloned into each transport
/// (clones share the pool and caches).
#[derive(Debug, Clone)]
pub struct Services {
    pub directory: directory::Directory,
    pub ingest: ingest::Ingest,
    pub scorecards: scorecard::Scorecards,
    pub leaderboards: leaderboard::Leaderboards,
    pub explainer: explain::Explainer,
    pub targets: targets::Targets,
    pub rates: rates::Rates,
    /// Open watches and the change feed they follow (the process listens
    /// with `watches.feed().listen_until`).
    pub watches: watch::Watches,
}

impl Services {
    /// The use cases on `reads`' primary (writes, authorization, version
    /// checks), computing KPIs wherever `reads` sends them.
    pub fn new(reads: Reads, settings: KpiSettings) -> Self {
        let pool = reads.primary().clone();
        let settings = Arc::new(settings);
        let caches = Arc::new(cache::Caches::new(settings.cache_bytes, pool.clone()));
        Self {
            directory: directory::Directory::new(pool.clone()),
            ingest: ingest::Ingest::new(pool.clone(), settings.reporting_currency.clone()),
            scorecards: scorecard::Scorecards::new(reads.clone(), settings.clone(), caches.clone()),
            leaderboards: leaderboard::Leaderboards::new(reads.clone(), settings.clone(), caches),
            explainer: explain::Explainer::new(reads.clone(), settings.clone()),
            targets: targets::Targets::new(reads, settings.clone()),
            rates: rates::Rates::new(pool, settings.reporting_currency.clone()),
            watches: watch::Watches::new(feed::Feed::default(), settings.max_watches),
        }
    }
}
