//! Activity records and the versioning rules that make ingestion
//! idempotent: which version of a record wins, and what a batch counts.

use std::collections::HashMap;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};

use crate::error::RecordViolation;

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

/// A record whose identity is its caller-chosen id and whose version is the
/// source system's `updated_at`.
pub trait Versioned: PartialEq {
    /// The record type as it appears in request paths (`deal`).
    const KIND: &'static str;
    fn id(&self) -> &str;
    fn rep_id(&self) -> &str;
    fn updated_at(&self) -> DateTime<Utc>;
}

macro_rules! versioned {
    ($type:ty, $kind:literal) => {
        impl Versioned for $type {
            const KIND: &'static str = $kind;
            fn id(&self) -> &str {
                &self.id
            }
            fn rep_id(&self) -> &str {
                &self.rep_id
            }
            fn updated_at(&self) -> DateTime<Utc> {
                self.updated_at
            }
        }
    };
}

versioned!(Customer, "customer");
versioned!(Interaction, "interaction");
versioned!(Deal, "deal");
versioned!(Feedback, "feedback");
versioned!(CustomerRequest, "customer_request");

/// A deleted record: its id and the deletion's version (the source
/// system's `updated_at` of the deletion).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tombstone {
    pub id: String,
    pub updated_at: DateTime<Utc>,
}

/// One version of a record of type `T`, as it arrives or as it is stored:
/// the record itself, or its deletion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Version<T> {
    Live(T),
    Deleted(Tombstone),
}

/// Where a version stands among the versions of its id: by `updated_at`,
/// and at the same `updated_at` a deletion after the record, so that a
/// deletion removes a stored version with `updated_at` <= its own, and the
/// record arriving after its deletion with the same `updated_at` is stale
/// (the order the two arrive in does not change the outcome).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VersionKey {
    pub at: DateTime<Utc>,
    pub deleted: bool,
}

impl<T: Versioned> Version<T> {
    pub fn id(&self) -> &str {
        match self {
            Version::Live(r) => r.id(),
            Version::Deleted(t) => &t.id,
        }
    }

    pub fn key(&self) -> VersionKey {
        match self {
            Version::Live(r) => VersionKey {
                at: r.updated_at(),
                deleted: false,
            },
            Version::Deleted(t) => VersionKey {
                at: t.updated_at,
                deleted: true,
            },
        }
    }

    /// The record's rep; a deletion names none.
    pub fn rep_id(&self) -> Option<&str> {
        self.live().map(Versioned::rep_id)
    }

    pub fn live(&self) -> Option<&T> {
        match self {
            Version::Live(r) => Some(r),
            Version::Deleted(_) => None,
        }
    }

    /// The kind of record the version arrived as, for request paths
    /// (`deal`, or `deletion`).
    pub fn kind(&self) -> &'static str {
        match self {
            Version::Live(_) => T::KIND,
            Version::Deleted(_) => DELETION_KIND,
        }
    }
}

/// The request path name of a deletion (`records[3].deletion.record_id`).
pub const DELETION_KIND: &str = "deletion";

/// A validated batch, split by record type. Each record keeps its index in
/// the request, to name it in errors. `invalid` holds the violations of the
/// records that did not parse: the database checks still run on the others
/// so that the caller hears of everything at once, but nothing is written.
#[derive(Debug, Default)]
pub struct Batch {
    pub customers: Vec<(usize, Version<Customer>)>,
    pub interactions: Vec<(usize, Version<Interaction>)>,
    pub deals: Vec<(usize, Version<Deal>)>,
    pub feedback: Vec<(usize, Version<Feedback>)>,
    pub requests: Vec<(usize, Version<CustomerRequest>)>,
    pub invalid: Vec<RecordViolation>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.customers.len()
            + self.interactions.len()
            + self.deals.len()
            + self.feedback.len()
            + self.requests.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a call did with its records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub stale: u64,
    pub deleted: u64,
}

impl Counts {
    /// Each count by the name of its outcome, as the API's errors and the
    /// metrics name them.
    pub fn by_outcome(&self) -> [(&'static str, u64); 5] {
        [
            ("inserted", self.inserted),
            ("updated", self.updated),
            ("unchanged", self.unchanged),
            ("stale", self.stale),
            ("deleted", self.deleted),
        ]
    }
}

/// Counts by record type (`Versioned::KIND`), in the order types first
/// counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KindCounts(Vec<(&'static str, Counts)>);

impl KindCounts {
    /// The counts of one type, added to in place.
    pub fn of(&mut self, kind: &'static str) -> &mut Counts {
        let index = match self.0.iter().position(|(k, _)| *k == kind) {
            Some(index) => index,
            None => {
                self.0.push((kind, Counts::default()));
                self.0.len() - 1
            }
        };
        &mut self.0[index].1
    }

    /// Adds another's counts, type by type.
    pub fn merge(&mut self, other: &Self) {
        for (kind, counts) in &other.0 {
            *self.of(kind) += *counts;
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &(&'static str, Counts)> {
        self.0.iter()
    }

    /// Every type's together.
    pub fn total(&self) -> Counts {
        let mut total = Counts::default();
        for (_, counts) in &self.0 {
            total += *counts;
        }
        total
    }
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, other: Self) {
        self.inserted += other.inserted;
        self.updated += other.updated;
        self.unchanged += other.unchanged;
        self.stale += other.stale;
        self.deleted += other.deleted;
    }
}

impl Counts {
    pub fn total(&self) -> u64 {
        self.inserted + self.updated + self.unchanged + self.stale + self.deleted
    }

    /// Counts a version that becomes the current one over `previous`: a
    /// deletion is `deleted` (whatever it removes, a tombstone included); a
    /// record is `updated` when it replaces a record, `inserted` when
    /// there was none (nothing stored, or a deletion: it is restored).
    fn apply(&mut self, key: VersionKey, previous: Option<VersionKey>) {
        match previous {
            _ if key.deleted => self.deleted += 1,
            Some(p) if !p.deleted => self.updated += 1,
            _ => self.inserted += 1,
        }
    }
}

/// What to do with an incoming version given the stored one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Insert,
    Update,
    Unchanged,
    Stale,
    /// Same id, same `updated_at`, different content: a caller's bug.
    Conflict,
}

/// What an incoming version does over the stored one (see `VersionKey`
/// for how a deletion and a record of the same `updated_at` order).
pub fn classify<T: Versioned>(incoming: &Version<T>, stored: Option<&Version<T>>) -> Outcome {
    let Some(stored) = stored else {
        return Outcome::Insert;
    };
    match incoming.key().cmp(&stored.key()) {
        std::cmp::Ordering::Greater => Outcome::Update,
        std::cmp::Ordering::Less => Outcome::Stale,
        std::cmp::Ordering::Equal if incoming == stored => Outcome::Unchanged,
        std::cmp::Ordering::Equal => Outcome::Conflict,
    }
}

/// The other versions of a winner's id in its batch that a one-after-another
/// count must see: those that arrived before it and were not stale among
/// the batch (each was, at its arrival, the newest or an identical repeat
/// of the newest), and how many identical repeats of the winner followed
/// it. Stale ones among the batch are stale whatever is stored and are
/// counted by `dedupe` itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    pub before: Vec<VersionKey>,
    pub repeats_after: u64,
}

impl History {
    /// The counts of the winner's id as if its versions had arrived one
    /// after another on top of the stored version (`stored`: its key),
    /// given the winner's key and what it is against the stored version
    /// (`outcome`: from `classify`).
    pub fn counts(
        &self,
        stored: Option<VersionKey>,
        winner: VersionKey,
        outcome: Outcome,
    ) -> Counts {
        let mut counts = Counts::default();
        let mut current = stored;
        for &key in &self.before {
            match current {
                Some(c) if key < c => counts.stale += 1,
                Some(c) if key == c => counts.unchanged += 1,
                _ => counts.apply(key, current),
            }
            current = current.max(Some(key));
        }
        // Earlier versions of the batch were written first: the winner
        // then replaces the newest of them.
        match outcome {
            Outcome::Insert | Outcome::Update => counts.apply(winner, current),
            Outcome::Unchanged => counts.unchanged += 1,
            Outcome::Stale => counts.stale += 1,
            Outcome::Conflict => {}
        }
        if outcome == Outcome::Stale {
            counts.stale += self.repeats_after;
        } else {
            counts.unchanged += self.repeats_after;
        }
        counts
    }
}

/// The records of one type in a batch, reduced to one version per id: the
/// newest wins (the first of identical ones). Older ones that were stale
/// at their arrival are counted here; the rest of each id's versions go to
/// its `History`, counted against the stored version by `History::counts`,
/// so that the counts are those of the records arriving one after another.
pub fn dedupe<T: Versioned>(mut records: Vec<(usize, Version<T>)>) -> Deduped<T> {
    let mut counts = Counts::default();
    let mut conflicts = Vec::new();
    let mut dropped = Vec::new();
    let mut histories: Vec<History> = Vec::new();
    // Sorting by (id, request index) groups each id's records in arrival
    // order without hashing or copying ids.
    records.sort_by(|a, b| a.1.id().cmp(b.1.id()).then(a.0.cmp(&b.0)));
    let mut winners: Vec<(usize, Version<T>)> = Vec::with_capacity(records.len());
    for (index, record) in records {
        match (winners.last_mut(), histories.last_mut()) {
            (Some(current), Some(history)) if current.1.id() == record.id() => {
                let loser = match classify(&record, Some(&current.1)) {
                    // (Insert cannot happen: there is a version to compare.)
                    Outcome::Update | Outcome::Insert => {
                        history.before.push(current.1.key());
                        let repeats = usize::try_from(history.repeats_after).unwrap_or(0);
                        history
                            .before
                            .extend(std::iter::repeat_n(current.1.key(), repeats));
                        history.repeats_after = 0;
                        std::mem::replace(current, (index, record))
                    }
                    Outcome::Stale => {
                        counts.stale += 1;
                        (index, record)
                    }
                    Outcome::Unchanged => {
                        history.repeats_after += 1;
                        (index, record)
                    }
                    Outcome::Conflict => {
                        conflicts.push((index, record.kind()));
                        (index, record)
                    }
                };
                if let Some(rep) = loser.1.rep_id() {
                    dropped.push((loser.0, rep.to_owned()));
                }
            }
            _ => {
                winners.push((index, record));
                histories.push(History::default());
            }
        }
    }
    conflicts.sort_unstable();
    let history = winners
        .iter()
        .zip(histories)
        .filter(|(_, h)| *h != History::default())
        .map(|((index, _), h)| (*index, h))
        .collect();
    Deduped {
        winners,
        counts,
        conflicts,
        dropped,
        history,
    }
}

/// What `dedupe` makes of a batch's records of one type.
pub struct Deduped<T> {
    /// One version per id, sorted by id (the order rows are locked in).
    pub winners: Vec<(usize, Version<T>)>,
    pub counts: Counts,
    /// Request indexes (and kinds) of records that conflict with another
    /// of the same id and `updated_at`.
    pub conflicts: Vec<(usize, &'static str)>,
    /// (request index, rep) of the records left out: their reps must
    /// exist too.
    pub dropped: Vec<(usize, String)>,
    /// By the winner's request index: the other versions its count needs.
    pub history: HashMap<usize, History>,
}

/// A batch reduced to one version per id, with what that reduction found.
pub struct BatchPlan {
    pub customers: Vec<(usize, Version<Customer>)>,
    pub interactions: Vec<(usize, Version<Interaction>)>,
    pub deals: Vec<(usize, Version<Deal>)>,
    pub feedback: Vec<(usize, Version<Feedback>)>,
    pub requests: Vec<(usize, Version<CustomerRequest>)>,
    /// The records the reduction left out, by (index, kind, rep_id): their
    /// reps must exist too.
    pub dropped: Vec<(usize, &'static str, String)>,
    /// What the reduction decided alone (versions stale within the batch).
    pub counts: KindCounts,
    /// By winner's request index (unique across kinds): the other versions
    /// of its id that its one-after-another count needs.
    pub history: HashMap<usize, History>,
    /// The batch's parse violations and the conflicts the reduction found.
    pub violations: Vec<RecordViolation>,
}

fn reduce<T: Versioned>(
    records: Vec<(usize, Version<T>)>,
    dropped: &mut Vec<(usize, &'static str, String)>,
    counts: &mut KindCounts,
    history: &mut HashMap<usize, History>,
    violations: &mut Vec<RecordViolation>,
) -> Vec<(usize, Version<T>)> {
    let deduped = dedupe(records);
    *counts.of(T::KIND) += deduped.counts;
    history.extend(deduped.history);
    violations.extend(deduped.conflicts.into_iter().map(|(index, kind)| {
        RecordViolation::new(
            index,
            kind,
            "updated_at",
            "another record of this batch has the same id and updated_at but different content",
        )
    }));
    dropped.extend(
        deduped
            .dropped
            .into_iter()
            .map(|(index, rep)| (index, T::KIND, rep)),
    );
    deduped.winners
}

/// (index, kind, rep_id) of the records among `versions` (a deletion
/// names no rep).
fn reps_of<T: Versioned>(
    versions: &[(usize, Version<T>)],
) -> impl Iterator<Item = (usize, &'static str, &str)> {
    versions
        .iter()
        .filter_map(|(index, v)| v.rep_id().map(|rep| (*index, T::KIND, rep)))
}

impl BatchPlan {
    pub fn new(batch: Batch) -> Self {
        let mut dropped = Vec::new();
        let mut counts = KindCounts::default();
        let mut history = HashMap::new();
        let mut violations = batch.invalid;
        let (d, c, h, v) = (&mut dropped, &mut counts, &mut history, &mut violations);
        Self {
            customers: reduce(batch.customers, d, c, h, v),
            interactions: reduce(batch.interactions, d, c, h, v),
            deals: reduce(batch.deals, d, c, h, v),
            feedback: reduce(batch.feedback, d, c, h, v),
            requests: reduce(batch.requests, d, c, h, v),
            dropped,
            counts,
            history,
            violations,
        }
    }

    /// Every record's (index, kind, rep_id), the left-out ones included.
    pub fn reps(&self) -> impl Iterator<Item = (usize, &'static str, &str)> {
        reps_of(&self.customers)
            .chain(reps_of(&self.interactions))
            .chain(reps_of(&self.deals))
            .chain(reps_of(&self.feedback))
            .chain(reps_of(&self.requests))
            .chain(
                self.dropped
                    .iter()
                    .map(|(index, kind, rep)| (*index, *kind, rep.as_str())),
            )
    }
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
