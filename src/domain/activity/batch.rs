//! A validated batch, split by record type, what it counts, and the plan
//! of its writes.

use std::collections::HashMap;

use super::{
    Customer, CustomerRequest, Deal, Feedback, History, Interaction, Version, VersionKey,
    Versioned, dedupe,
};
use crate::error::RecordViolation;

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
    pub(super) fn apply(&mut self, key: VersionKey, previous: Option<VersionKey>) {
        match previous {
            _ if key.deleted => self.deleted += 1,
            Some(p) if !p.deleted => self.updated += 1,
            _ => self.inserted += 1,
        }
    }
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
