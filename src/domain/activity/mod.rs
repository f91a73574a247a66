//! Activity records (here), the versioning rules that make ingestion
//! idempotent (`version`: which version of a record wins) and batches
//! (`batch`: what a batch holds, counts and writes).

mod batch;
mod version;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};

pub use self::{
    batch::{Batch, BatchPlan, Counts, DELETION_KIND, KindCounts},
    version::{
        Deduped, History, Outcome, Tombstone, Version, VersionKey, Versioned, classify, dedupe,
    },
};

/// Most records in one batch.
pub const MAX_BATCH_RECORDS: usize = 1000;
/// Longest feedback comment, in characters.
pub const MAX_COMMENT_CHARS: usize = 4000;
/// How far in the future a timestamp may be (clock skew between systems).
pub const MAX_FUTURE: TimeDelta = TimeDelta::hours(24);

/// PostgreSQL keeps microseconds; so does the service, so that a record
/// read back compares equal to the one that was sent.
pub fn to_micros(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(TimeDelta::microseconds(1)).unwrap_or(at)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    Call,
    Email,
    Meeting,
    Message,
    Demo,
}

impl Channel {
    pub const ALL: [Channel; 5] = [
        Channel::Call,
        Channel::Email,
        Channel::Meeting,
        Channel::Message,
        Channel::Demo,
    ];

    /// The stored code (also the protobuf enum number).
    pub fn code(self) -> i16 {
        match self {
            Channel::Call => 1,
            Channel::Email => 2,
            Channel::Meeting => 3,
            Channel::Message => 4,
            Channel::Demo => 5,
        }
    }

    pub fn from_code(code: i32) -> Option<Self> {
        Self::ALL.into_iter().find(|c| i32::from(c.code()) == code)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DealStage {
    Open,
    Won,
    Lost,
}

impl DealStage {
    pub fn code(self) -> i16 {
        match self {
            DealStage::Open => 1,
            DealStage::Won => 2,
            DealStage::Lost => 3,
        }
    }

    pub fn from_code(code: i32) -> Option<Self> {
        [DealStage::Open, DealStage::Won, DealStage::Lost]
            .into_iter()
            .find(|s| i32::from(s.code()) == code)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FeedbackKind {
    /// Net Promoter Score: 0-10.
    Nps,
    /// Customer satisfaction: 1-5.
    Csat,
}

impl FeedbackKind {
    pub fn code(self) -> i16 {
        match self {
            FeedbackKind::Nps => 1,
            FeedbackKind::Csat => 2,
        }
    }

    pub fn from_code(code: i32) -> Option<Self> {
        [FeedbackKind::Nps, FeedbackKind::Csat]
            .into_iter()
            .find(|k| i32::from(k.code()) == code)
    }

    /// The scores a response of this kind may have.
    pub fn scores(self) -> std::ops::RangeInclusive<i16> {
        match self {
            FeedbackKind::Nps => 0..=10,
            FeedbackKind::Csat => 1..=5,
        }
    }
}

/// Largest whole units of one amount: a thousand trillion, beyond any deal
/// in any currency, and small enough that nine million such deals still
/// sum inside a `Money` (i64 units).
pub const MAX_AMOUNT_UNITS: i64 = 999_999_999_999_999;

/// A non-negative exact amount: whole units plus billionths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Amount {
    units: i64,
    nanos: i32,
}

impl Amount {
    pub fn new(units: i64, nanos: i32) -> Result<Self, String> {
        if units < 0 || nanos < 0 {
            return Err("must not be negative".into());
        }
        if units > MAX_AMOUNT_UNITS {
            return Err(format!(
                "must be at most {MAX_AMOUNT_UNITS} units (got {units})"
            ));
        }
        if nanos >= 1_000_000_000 {
            return Err(format!("nanos must be below 1000000000 (got {nanos})"));
        }
        Ok(Self { units, nanos })
    }

    pub fn units(self) -> i64 {
        self.units
    }

    pub fn nanos(self) -> i32 {
        self.nanos
    }

    /// Exact decimal text with nine decimals, e.g. `1250.500000000`.
    pub fn to_decimal(self) -> String {
        format!("{}.{:09}", self.units, self.nanos)
    }

    /// Parses decimal text as PostgreSQL prints a `numeric` (at most nine
    /// decimals).
    pub fn from_decimal(text: &str) -> Result<Self, String> {
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        if fraction.len() > 9 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("not an amount with at most nine decimals: {text}"));
        }
        let units: i64 = whole
            .parse()
            .map_err(|_| format!("not an amount: {text}"))?;
        let nanos: i32 = format!("{fraction:0<9}")
            .parse()
            .map_err(|_| format!("not an amount: {text}"))?;
        // Stored amounts are taken as they are (no cap: rows written before
        // the cap existed must still load); only the sign is checked.
        if units < 0 {
            return Err(format!("not a non-negative amount: {text}"));
        }
        Ok(Self { units, nanos })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Customer {
    pub id: String,
    pub rep_id: String,
    pub lead_at: DateTime<Utc>,
    pub converted_at: Option<DateTime<Utc>>,
    pub churned_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interaction {
    pub id: String,
    pub rep_id: String,
    pub customer_id: Option<String>,
    pub channel: Channel,
    pub occurred_at: DateTime<Utc>,
    pub duration_seconds: Option<i32>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deal {
    pub id: String,
    pub rep_id: String,
    pub customer_id: Option<String>,
    pub currency: String,
    pub amount: Amount,
    pub stage: DealStage,
    pub created_at: DateTime<Utc>,
    /// Present exactly when the stage is WON or LOST.
    pub closed_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feedback {
    pub id: String,
    pub rep_id: String,
    pub customer_id: Option<String>,
    pub kind: FeedbackKind,
    /// Within `kind.scores()`.
    pub score: i16,
    pub submitted_at: DateTime<Utc>,
    pub comment: Option<String>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerRequest {
    pub id: String,
    pub rep_id: String,
    pub customer_id: Option<String>,
    pub opened_at: DateTime<Utc>,
    pub first_response_at: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 5, 1, hour, 0, 0)
            .single()
            .unwrap_or_default()
    }

    fn call(id: &str, updated: u32, duration: i32) -> Version<Interaction> {
        Version::Live(Interaction {
            id: id.into(),
            rep_id: "anna".into(),
            customer_id: None,
            channel: Channel::Call,
            occurred_at: at(1),
            duration_seconds: Some(duration),
            updated_at: at(updated),
        })
    }

    fn deletion(id: &str, updated: u32) -> Version<Interaction> {
        Version::Deleted(Tombstone {
            id: id.into(),
            updated_at: at(updated),
        })
    }

    fn live(hour: u32) -> VersionKey {
        VersionKey {
            at: at(hour),
            deleted: false,
        }
    }

    fn gone(hour: u32) -> VersionKey {
        VersionKey {
            at: at(hour),
            deleted: true,
        }
    }

    #[test]
    fn the_newest_version_wins_and_the_rest_is_counted() {
        let stored = call("i1", 5, 60);
        assert_eq!(
            classify(&call("i1", 5, 60), Some(&stored)),
            Outcome::Unchanged
        );
        assert_eq!(classify(&call("i1", 6, 90), Some(&stored)), Outcome::Update);
        assert_eq!(classify(&call("i1", 4, 90), Some(&stored)), Outcome::Stale);
        assert_eq!(
            classify(&call("i1", 5, 90), Some(&stored)),
            Outcome::Conflict
        );
        assert_eq!(classify(&call("i1", 5, 90), None), Outcome::Insert);
    }

    #[test]
    fn a_deletion_removes_versions_up_to_its_own_and_keeps_older_ones_out() {
        let stored = call("i1", 5, 60);
        // A deletion at or after the stored version removes it; before, it
        // is stale.
        assert_eq!(classify(&deletion("i1", 5), Some(&stored)), Outcome::Update);
        assert_eq!(classify(&deletion("i1", 6), Some(&stored)), Outcome::Update);
        assert_eq!(classify(&deletion("i1", 4), Some(&stored)), Outcome::Stale);
        // Of an id never seen: kept as a tombstone.
        assert_eq!(classify(&deletion("i1", 4), None), Outcome::Insert);
        // After the deletion: a replay is unchanged, an older or equal
        // version of the record stale, a newer one restores it.
        let tombstone = deletion("i1", 5);
        assert_eq!(
            classify(&deletion("i1", 5), Some(&tombstone)),
            Outcome::Unchanged
        );
        assert_eq!(
            classify(&call("i1", 5, 60), Some(&tombstone)),
            Outcome::Stale
        );
        assert_eq!(
            classify(&call("i1", 4, 60), Some(&tombstone)),
            Outcome::Stale
        );
        assert_eq!(
            classify(&call("i1", 6, 60), Some(&tombstone)),
            Outcome::Update
        );
        assert_eq!(
            classify(&deletion("i1", 7), Some(&tombstone)),
            Outcome::Update
        );
    }

    #[test]
    fn a_batch_keeps_one_version_per_id() {
        let records = vec![
            (0, call("b", 5, 60)),
            (1, call("a", 5, 60)),
            (2, call("b", 7, 70)),
            (3, call("b", 6, 65)),
            (4, call("a", 5, 60)),
            (5, call("a", 5, 61)),
        ];
        let Deduped {
            winners,
            counts,
            conflicts,
            history,
            ..
        } = dedupe(records);
        let kept: Vec<_> = winners.iter().map(|(i, r)| (*i, r.id())).collect();
        assert_eq!(kept, [(1, "a"), (2, "b")]);
        // b at 6 arrived after b at 7: stale whatever is stored.
        assert_eq!(
            counts,
            Counts {
                stale: 1,
                ..Counts::default()
            }
        );
        assert_eq!(conflicts, [(5, "interaction")]);
        assert_eq!(
            history.get(&1),
            Some(&History {
                before: vec![],
                repeats_after: 1
            })
        );
        assert_eq!(
            history.get(&2),
            Some(&History {
                before: vec![live(5)],
                repeats_after: 0
            })
        );
    }

    #[test]
    fn in_a_batch_a_deletion_wins_over_the_record_of_its_version() {
        let Deduped {
            winners,
            counts,
            conflicts,
            history,
            dropped,
        } = dedupe(vec![
            (0, call("a", 5, 60)),
            (1, deletion("a", 5)),
            (2, call("a", 5, 60)),
        ]);
        assert!(conflicts.is_empty());
        assert_eq!(winners.len(), 1);
        assert_eq!(winners.first().map(|(i, _)| *i), Some(1));
        // The record after its deletion is stale; the record before it is
        // in the deletion's history (and its rep must exist).
        assert_eq!(counts.stale, 1);
        assert_eq!(
            history.get(&1),
            Some(&History {
                before: vec![live(5)],
                repeats_after: 0
            })
        );
        assert_eq!(dropped.len(), 2);
    }

    fn counted(inserted: u64, updated: u64, unchanged: u64, stale: u64) -> Counts {
        Counts {
            inserted,
            updated,
            unchanged,
            stale,
            deleted: 0,
        }
    }

    #[test]
    fn versions_of_one_batch_count_as_if_they_arrived_one_after_another() {
        // v1 then v2 of a new id: inserted, then updated.
        let v1_v2 = History {
            before: vec![live(1)],
            repeats_after: 0,
        };
        assert_eq!(
            v1_v2.counts(None, live(2), Outcome::Insert),
            counted(1, 1, 0, 0)
        );
        // Stored at 0: both update it.
        assert_eq!(
            v1_v2.counts(Some(live(0)), live(2), Outcome::Update),
            counted(0, 2, 0, 0)
        );
        // Stored between them: v1 stale, v2 updates.
        let v1_v3 = History {
            before: vec![live(1)],
            repeats_after: 2,
        };
        assert_eq!(
            v1_v3.counts(Some(live(2)), live(3), Outcome::Update),
            counted(0, 1, 2, 1)
        );
        // Stored after both: all stale, the winner's repeats too.
        assert_eq!(
            v1_v3.counts(Some(live(9)), live(3), Outcome::Stale),
            counted(0, 0, 0, 4)
        );
        // v1, v1 again, v2: inserted, unchanged, updated.
        let repeat = History {
            before: vec![live(1), live(1)],
            repeats_after: 0,
        };
        assert_eq!(
            repeat.counts(None, live(2), Outcome::Insert),
            counted(1, 1, 1, 0)
        );
    }

    #[test]
    fn deletions_in_a_batch_count_as_if_they_arrived_one_after_another() {
        let deleted = |n: u64| Counts {
            deleted: n,
            ..Counts::default()
        };
        // A new id, then its deletion: inserted, deleted.
        let insert_then_delete = History {
            before: vec![live(1)],
            repeats_after: 0,
        };
        let mut expected = counted(1, 0, 0, 0);
        expected += deleted(1);
        assert_eq!(
            insert_then_delete.counts(None, gone(2), Outcome::Insert),
            expected
        );
        // Stored, deleted, then restored by a newer version: deleted,
        // inserted.
        let delete_then_restore = History {
            before: vec![gone(2)],
            repeats_after: 0,
        };
        let mut expected = counted(1, 0, 0, 0);
        expected += deleted(1);
        assert_eq!(
            delete_then_restore.counts(Some(live(1)), live(3), Outcome::Update),
            expected
        );
        // A deletion of an id never seen, replayed twice: deleted,
        // unchanged, unchanged.
        let replayed = History {
            before: vec![],
            repeats_after: 2,
        };
        let mut expected = counted(0, 0, 2, 0);
        expected += deleted(1);
        assert_eq!(replayed.counts(None, gone(4), Outcome::Insert), expected);
        // A deletion replayed after it was stored: unchanged.
        assert_eq!(
            History::default().counts(Some(gone(4)), gone(4), Outcome::Unchanged),
            counted(0, 0, 1, 0)
        );
    }

    #[test]
    fn amounts_are_exact_decimals() {
        let amount = Amount::new(1250, 500_000_000).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(amount.to_decimal(), "1250.500000000");
        assert_eq!(Amount::from_decimal("1250.500000000"), Ok(amount));
        assert_eq!(Amount::from_decimal("1250.5"), Ok(amount));
        assert_eq!(Amount::from_decimal("7"), Amount::new(7, 0));
        assert!(Amount::new(-1, 0).is_err());
        assert!(Amount::new(0, -1).is_err());
        assert!(Amount::new(0, 1_000_000_000).is_err());
        assert!(Amount::new(MAX_AMOUNT_UNITS, 999_999_999).is_ok());
        assert!(Amount::new(MAX_AMOUNT_UNITS + 1, 0).is_err());
        assert!(Amount::new(i64::MAX, 0).is_err());
        assert!(Amount::from_decimal("1.0000000001").is_err());
    }

    #[test]
    fn timestamps_keep_microseconds() {
        let at = DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap_or_default();
        assert_eq!(to_micros(at).timestamp_subsec_nanos(), 123_456_000);
    }

    #[test]
    fn feedback_scores_depend_on_the_kind() {
        assert!(FeedbackKind::Nps.scores().contains(&0));
        assert!(!FeedbackKind::Csat.scores().contains(&0));
        assert!(FeedbackKind::Csat.scores().contains(&5));
        assert!(!FeedbackKind::Nps.scores().contains(&11));
    }
}
