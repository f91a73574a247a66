//! Exchange rates: set in bulk (re-converting the deals they affect, KPIs
//! included, in the same transaction), listed, and looked up by the
//! batches that write deals.
//!
//! A batch that writes deals holds a shared advisory lock from the moment
//! it reads rates until it commits; setting rates takes it exclusively.
//! So the rates a batch converts with are exactly those the rollups
//! reflect: a batch never adds a deal converted at a rate that a
//! concurrent change is replacing, and a change never misses a deal a
//! concurrent batch adds.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{PgConnection, PgPool, Row as _};

use super::{activity, records::Table, rollup};
use crate::{
    Error,
    domain::{
        activity::Deal,
        money::MissingRates,
        money::{Rate, RateBook, RateEntry},
        rollup::Deltas,
        tally::TallyQuery,
    },
};

/// The advisory lock between rate changes and deal batches ("kpi_rate").
const RATES_LOCK: i64 = 0x6b70_695f_7261_7465;

/// Takes the shared side of the rates lock for the transaction.
pub async fn lock_shared(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
        .bind(RATES_LOCK)
        .execute(conn)
        .await?;
    Ok(())
}

fn parse_rate(text: &str) -> Result<Rate, sqlx::Error> {
    Rate::parse(text)
        .map_err(|e| sqlx::Error::Decode(format!("stored rate {text} is invalid: {e}").into()))
}

/// The rates `deals` convert at: for each (currency, UTC date of
/// closed_at), the latest rate of that currency dated on or before it.
pub async fn book_for<'d>(
    conn: &mut PgConnection,
    reporting: &str,
    deals: impl Iterator<Item = &'d Deal>,
) -> Result<RateBook, sqlx::Error> {
    let mut book = RateBook::new(reporting);
    let wanted: BTreeSet<(&str, NaiveDate)> = deals
        .filter(|d| d.currency != reporting)
        .filter_map(|d| d.closed_at.map(|at| (d.currency.as_str(), at.date_naive())))
        .collect();
    if wanted.is_empty() {
        return Ok(book);
    }
    let rows = sqlx::query(
        "SELECT u.c, r.effective_date, r.rate::text \
         FROM unnest($1::text[], $2::date[]) AS u (c, d) \
         CROSS JOIN LATERAL ( \
             SELECT effective_date, rate FROM exchange_rates \
             WHERE currency = u.c AND effective_date <= u.d \
             ORDER BY effective_date DESC LIMIT 1) r",
    )
    .bind(wanted.iter().map(|(c, _)| *c).collect::<Vec<_>>())
    .bind(wanted.iter().map(|(_, d)| *d).collect::<Vec<_>>())
    .fetch_all(conn)
    .await?;
    for row in &rows {
        let currency: String = row.try_get(0)?;
        let date: NaiveDate = row.try_get(1)?;
        let rate: String = row.try_get(2)?;
        book.insert(&currency, date, parse_rate(&rate)?);
    }
    Ok(book)
}

/// What setting rates did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetOutcome {
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    /// Won deals whose amount in the reporting currency changed (newly
    /// converted, or at another rate).
    pub deals_reconverted: u64,
}

/// Sets `entries` (one per currency and date) and re-converts, in the same
/// transaction, every won deal whose rate changes with them: its revenue
/// in the rollups is moved from the old conversion (or from "no rate") to
/// the new one.
///
/// Retried like a batch after a deadlock or serialization failure
/// (`store::activity`), with the same jittered backoff.
pub async fn set(
    pool: &PgPool,
    reporting: &str,
    entries: &[RateEntry],
) -> Result<SetOutcome, Error> {
    let mut attempt = 1;
    loop {
        match set_once(pool, reporting, entries).await {
            Err(err) if activity::is_retryable(&err) && attempt < activity::MAX_ATTEMPTS => {
                tokio::time::sleep(activity::backoff(attempt, rand::random::<f64>())).await;
                attempt += 1;
            }
            Err(err) => return Err(err.into()),
            Ok(outcome) => return Ok(outcome),
        }
    }
}

async fn set_once(
    pool: &PgPool,
    reporting: &str,
    entries: &[RateEntry],
) -> Result<SetOutcome, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(RATES_LOCK)
        .execute(&mut *tx)
        .await?;
    let currencies: Vec<&str> = entries
        .iter()
        .map(|e| e.currency.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    // Every rate of the currencies concerned: the book before, and after.
    let mut before = RateBook::new(reporting);
    let rows = sqlx::query(
        "SELECT currency, effective_date, rate::text FROM exchange_rates WHERE currency = ANY($1)",
    )
    .bind(&currencies)
    .fetch_all(&mut *tx)
    .await?;
    let mut stored: HashMap<(String, NaiveDate), Rate> = HashMap::new();
    for row in &rows {
        let currency: String = row.try_get(0)?;
        let date: NaiveDate = row.try_get(1)?;
        let rate = parse_rate(&row.try_get::<String, _>(2)?)?;
        before.insert(&currency, date, rate);
        stored.insert((currency, date), rate);
    }
    let mut after = before.clone();
    let mut outcome = SetOutcome::default();
    let mut earliest: HashMap<&str, NaiveDate> = HashMap::new();
    for entry in entries {
        match stored.get(&(entry.currency.clone(), entry.date)) {
            Some(rate) if *rate == entry.rate => outcome.unchanged += 1,
            Some(_) => outcome.updated += 1,
            None => outcome.inserted += 1,
        }
        after.insert(&entry.currency, entry.date, entry.rate);
        let first = earliest.entry(&entry.currency).or_insert(entry.date);
        *first = (*first).min(entry.date);
    }
    // The won deals of those currencies closed from the earliest changed
    // date on: only theirs can convert differently.
    let (names, froms): (Vec<&str>, Vec<DateTime<Utc>>) = earliest
        .iter()
        .map(|(c, d)| (*c, d.and_time(chrono::NaiveTime::MIN).and_utc()))
        .unzip();
    let sql = format!(
        "SELECT {} FROM deals d JOIN unnest($1::text[], $2::timestamptz[]) AS u (c, f) \
         ON d.currency = u.c AND d.closed_at >= u.f WHERE d.stage = 2",
        Deal::sql().columns("d")
    );
    let deals = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(&names)
        .bind(&froms)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(Deal::decode)
        .collect::<Result<Vec<_>, _>>()?;
    let mut deltas = Deltas::default();
    for deal in &deals {
        if before.converted(deal) != after.converted(deal) {
            deltas.apply(&deal.rep_id, &deal.contributions(&before), -1);
            deltas.apply(&deal.rep_id, &deal.contributions(&after), 1);
            outcome.deals_reconverted += 1;
        }
    }
    drop(deals);
    let reconverted = rollup::apply(&mut tx, deltas).await?;
    sqlx::query(
        "INSERT INTO exchange_rates (currency, effective_date, rate) \
         SELECT unnest($1::text[]), unnest($2::date[]), unnest($3::text[])::numeric \
         ON CONFLICT (currency, effective_date) DO UPDATE SET rate = EXCLUDED.rate, recorded_at = now() \
         WHERE exchange_rates.rate <> EXCLUDED.rate",
    )
    .bind(entries.iter().map(|e| e.currency.as_str()).collect::<Vec<_>>())
    .bind(entries.iter().map(|e| e.date).collect::<Vec<_>>())
    .bind(entries.iter().map(|e| e.rate.to_decimal()).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;
    // The rates, and the reps whose re-converted deals moved their sums.
    let mut scopes = reconverted.scopes;
    scopes.push(super::changes::RATES.to_owned());
    super::changes::publish(
        &mut tx,
        &super::changes::Change::new(scopes, reconverted.range),
    )
    .await?;
    tx.commit().await?;
    Ok(outcome)
}

/// A page of rates in (currency, date) order, after `after` if given,
/// only of `currency` if given; one more than `limit` tells that there is
/// a next page.
pub async fn list(
    pool: &PgPool,
    currency: Option<&str>,
    after: Option<(String, NaiveDate)>,
    limit: i64,
) -> Result<Vec<RateEntry>, Error> {
    let (after_currency, after_date) = after.unzip();
    let rows = sqlx::query(
        "SELECT currency, effective_date, rate::text FROM exchange_rates \
         WHERE ($1::text IS NULL OR currency = $1) \
           AND ($2::text IS NULL OR (currency, effective_date) > ($2, $3)) \
         ORDER BY currency, effective_date LIMIT $4",
    )
    .bind(currency)
    .bind(after_currency)
    .bind(after_date)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(RateEntry {
                currency: row.try_get(0)?,
                date: row.try_get(1)?,
                rate: parse_rate(&row.try_get::<String, _>(2)?)?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(Error::from)
}

/// For the queries at `slots` (their index in the caller's list): the
/// currencies of their won deals without an exchange rate at closed_at,
/// and the earliest such closed_at. Read from the deals themselves (the
/// rollups count them, `Metric::WonUnconverted`, but not by currency).
pub async fn missing_rates(
    pool: &PgPool,
    reporting: &str,
    slots: &[(usize, &TallyQuery)],
) -> Result<HashMap<usize, MissingRates>, Error> {
    use sqlx::Row;
    let mut slot_ids = Vec::new();
    let mut reps = Vec::new();
    let mut froms = Vec::new();
    let mut tos = Vec::new();
    for (slot, query) in slots {
        for segment in &query.segments {
            slot_ids.push(i32::try_from(*slot).unwrap_or(i32::MAX));
            reps.push(&*segment.rep);
            froms.push(segment.from);
            tos.push(segment.to);
        }
    }
    if slot_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = sqlx::query(
        "SELECT s.slot, d.currency, min(d.closed_at) \
         FROM unnest($1::int[], $2::text[], $3::timestamptz[], $4::timestamptz[]) AS s (slot, rep, f, t) \
         JOIN deals d ON d.rep_id = s.rep AND d.closed_at >= s.f AND d.closed_at < s.t \
         WHERE d.stage = 2 AND d.currency <> $5 AND NOT EXISTS ( \
             SELECT 1 FROM exchange_rates r \
             WHERE r.currency = d.currency AND r.effective_date <= (d.closed_at AT TIME ZONE 'UTC')::date) \
         GROUP BY s.slot, d.currency ORDER BY s.slot, d.currency",
    )
    .bind(&slot_ids)
    .bind(&reps)
    .bind(&froms)
    .bind(&tos)
    .bind(reporting)
    .fetch_all(pool)
    .await?;
    let mut out: HashMap<usize, MissingRates> = HashMap::new();
    for row in &rows {
        let slot: i32 = row.try_get(0)?;
        let currency: String = row.try_get(1)?;
        let earliest: DateTime<Utc> = row.try_get(2)?;
        let entry = out
            .entry(usize::try_from(slot).unwrap_or(usize::MAX))
            .or_insert_with(|| MissingRates {
                currencies: Vec::new(),
                earliest_closed_at: earliest,
            });
        entry.currencies.push(currency);
        entry.earliest_closed_at = entry.earliest_closed_at.min(earliest);
    }
    Ok(out)
}
