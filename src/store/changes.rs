//! The change feed and the data versions behind the result cache.
//!
//! Every transaction that changes KPI inputs calls `publish` before it
//! commits: it bumps the version of each scope it changed (`kpi_versions`)
//! and NOTIFYs channel `kpi_changes` with the same scopes (and, for
//! records, the time range they were credited in). Both take effect at
//! commit, with the data: a reader that sees the data sees the versions,
//! and every listener of every replica hears of it.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use crate::Error;

/// The NOTIFY channel.
pub const CHANNEL: &str = "kpi_changes";
/// Teams, reps and memberships.
pub const DIRECTORY: &str = "directory";
pub const TARGETS: &str = "targets";
pub const RATES: &str = "rates";
/// In a payload: everything may have changed (too many scopes to list).
pub const EVERYTHING: &str = "*";
/// NOTIFY payloads must stay under 8000 bytes.
const MAX_PAYLOAD: usize = 7000;

/// The scope of one rep's records.
pub fn rep_scope(rep_id: &str) -> String {
    format!("rep:{rep_id}")
}

/// What one transaction changed, as its NOTIFY payload carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Sorted, unique; `["*"]` when too many to list.
    pub scopes: Vec<String>,
    /// The instants the changed records were credited in, `[from, until)`.
    pub range: Option<(DateTime<Utc>, DateTime<Utc>)>,
}

impl Change {
    pub fn new(mut scopes: Vec<String>, range: Option<(DateTime<Utc>, DateTime<Utc>)>) -> Self {
        scopes.sort_unstable();
        scopes.dedup();
        Self { scopes, range }
    }

    /// The payload: `{"scopes": [...], "from": ..., "until": ...}`.
    pub fn payload(&self) -> String {
        let mut json = serde_json::json!({ "scopes": self.scopes });
        if let (Some((from, until)), Some(object)) = (self.range, json.as_object_mut()) {
            object.insert("from".into(), from.to_rfc3339().into());
            object.insert("until".into(), until.to_rfc3339().into());
        }
        let text = json.to_string();
        if text.len() <= MAX_PAYLOAD {
            text
        } else {
            serde_json::json!({ "scopes": [EVERYTHING] }).to_string()
        }
    }

    /// Reads a payload; `None` for anything else (another writer on the
    /// channel): the caller treats that as "everything changed".
    pub fn parse(payload: &str) -> Option<Self> {
        Self::parse_noted(payload).map(|(change, _)| change)
    }

    /// Reads a payload and, when it has one, the database's clock when the
    /// change was noted in its transaction (`publish` adds it as `at`,
    /// microseconds since the epoch): what the change feed's lag is
    /// measured from.
    pub fn parse_noted(payload: &str) -> Option<(Self, Option<DateTime<Utc>>)> {
        let value: serde_json::Value = serde_json::from_str(payload).ok()?;
        let noted = value
            .get("at")
            .and_then(serde_json::Value::as_i64)
            .and_then(DateTime::from_timestamp_micros);
        let scopes = value
            .get("scopes")?
            .as_array()?
            .iter()
            .map(|s| s.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()?;
        let time = |key: &str| {
            value
                .get(key)
                .and_then(|v| v.as_str())
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .map(|t| t.to_utc())
        };
        Some((Self::new(scopes, time("from").zip(time("until"))), noted))
    }

    /// Whether a reader of `scopes` is affected.
    pub fn touches(&self, scopes: &[String]) -> bool {
        self.scopes.iter().any(|s| s == EVERYTHING)
            || scopes.iter().any(|s| self.scopes.binary_search(s).is_ok())
    }
}

/// Bumps the versions of the change's scopes and NOTIFYs it, inside the
/// caller's transaction (both happen at its commit). Scopes are locked in
/// sorted order, so concurrent writers cannot deadlock on them.
pub async fn publish(conn: &mut PgConnection, change: &Change) -> Result<(), sqlx::Error> {
    if change.scopes.is_empty() {
        return Ok(());
    }
    // One statement, one round trip on the ingest path: a data-modifying
    // WITH runs whether or not the query reads it. The payload (a JSON
    // object) gets the database's clock as `at`, for the feed's lag.
    sqlx::query(
        "WITH bumped AS ( \
             INSERT INTO kpi_versions AS v (scope, version) \
             SELECT s, 1 FROM unnest($1::text[]) WITH ORDINALITY AS u(s, n) ORDER BY n \
             ON CONFLICT (scope) DO UPDATE SET version = v.version + 1) \
         SELECT pg_notify($2, left($3, -1) || ',\"at\":' \
             || (extract(epoch FROM clock_timestamp()) * 1000000)::bigint || '}')",
    )
    .bind(&change.scopes)
    .bind(CHANNEL)
    .bind(change.payload())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The sum of the versions of `scopes` (versions only grow, so an equal
/// sum over the same scopes means nothing in them changed).
pub async fn version(pool: &PgPool, scopes: &[String]) -> Result<i64, Error> {
    let sum: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(version), 0)::bigint FROM kpi_versions WHERE scope = ANY($1)",
    )
    .bind(scopes)
    .fetch_one(pool)
    .await?;
    Ok(sum)
}

/// The versions of `scopes` that have one.
pub async fn versions(
    pool: &PgPool,
    scopes: &[String],
) -> Result<std::collections::HashMap<String, i64>, Error> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT scope, version FROM kpi_versions WHERE scope = ANY($1)")
            .bind(scopes)
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_fall_back_to_everything() {
        let at = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.to_utc())
                .unwrap_or_default()
        };
        let change = Change::new(
            vec![rep_scope("bob"), rep_scope("anna"), rep_scope("bob")],
            Some((at("2026-01-01T10:00:00Z"), at("2026-01-02T00:00:00Z"))),
        );
        assert_eq!(change.scopes, ["rep:anna", "rep:bob"]);
        assert_eq!(Change::parse(&change.payload()), Some(change.clone()));
        // As publish sends it: the database's clock appended as `at`.
        let payload = change.payload();
        let noted = format!(
            "{},\"at\":1767261600000000}}",
            &payload[..payload.len() - 1]
        );
        assert_eq!(
            Change::parse_noted(&noted),
            Some((change.clone(), Some(at("2026-01-01T10:00:00Z"))))
        );
        assert_eq!(Change::parse_noted(&payload), Some((change.clone(), None)));
        assert!(change.touches(&[rep_scope("bob")]));
        assert!(!change.touches(&[rep_scope("cara"), DIRECTORY.to_owned()]));

        let many = Change::new(
            (0..2000)
                .map(|i| rep_scope(&format!("rep-{i:05}")))
                .collect(),
            None,
        );
        let parsed = Change::parse(&many.payload());
        assert_eq!(parsed.map(|c| c.scopes), Some(vec![EVERYTHING.to_owned()]));
        assert!(Change::new(vec![EVERYTHING.into()], None).touches(&[TARGETS.to_owned()]));
        assert_eq!(Change::parse("not json"), None);
    }
}
