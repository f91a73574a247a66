//! Which version of a record wins: the versioning rules (by the source
//! system's `updated_at`, a deletion after the record of the same instant)
//! that make ingestion idempotent and out-of-order safe.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::{Counts, Customer, CustomerRequest, DELETION_KIND, Deal, Feedback, Interaction};

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
