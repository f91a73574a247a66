//! The demo's builders, which the tests and benches use too (through
//! `testkit`): a team and a rep to upsert, and the minimal valid activity
//! record of each kind (the version, `updated_at`, is the record's own
//! instant; optional fields empty), with `with_*` setters for the rest.
//! `.record()` wraps any of them for a batch.

use chrono::{DateTime, Utc};

use crate::proto::{
    pb::{self, activity_record::Record},
    timestamp,
};

/// A team to upsert.
pub fn team(id: &str, name: &str, parent: &str) -> pb::UpsertTeamRequest {
    pb::UpsertTeamRequest {
        team_id: id.into(),
        display_name: name.into(),
        parent_team_id: parent.into(),
    }
}

/// A rep to upsert: in `team_id` from the beginning of time, with a name
/// and email derived from its id.
pub fn rep(rep_id: &str, team_id: &str) -> pb::UpsertRepRequest {
    pb::UpsertRepRequest {
        rep_id: rep_id.into(),
        display_name: format!("Rep {rep_id}"),
        email: format!("{rep_id}@example.com"),
        active: None,
        team_id: team_id.into(),
        team_effective_time: None,
    }
}

/// An amount in US dollars.
pub fn usd(units: i64, nanos: i32) -> pb::Money {
    pb::Money {
        currency_code: "USD".into(),
        units,
        nanos,
    }
}

/// An amount in US cents.
pub fn usd_cents(cents: i64) -> pb::Money {
    usd(
        cents / 100,
        i32::try_from(cents % 100).unwrap_or(0) * 10_000_000,
    )
}

pub fn interaction(
    id: impl Into<String>,
    rep: impl Into<String>,
    channel: pb::Channel,
    at: DateTime<Utc>,
) -> pb::Interaction {
    pb::Interaction {
        interaction_id: id.into(),
        rep_id: rep.into(),
        customer_id: String::new(),
        channel: channel as i32,
        occurred_at: Some(timestamp(at)),
        duration_seconds: None,
        updated_at: Some(timestamp(at)),
    }
}

pub fn customer(
    id: impl Into<String>,
    rep: impl Into<String>,
    lead_at: DateTime<Utc>,
) -> pb::Customer {
    pb::Customer {
        customer_id: id.into(),
        rep_id: rep.into(),
        lead_at: Some(timestamp(lead_at)),
        converted_at: None,
        churned_at: None,
        updated_at: Some(timestamp(lead_at)),
    }
}

/// A deal; closed (won or lost) when `closed_at` is given, open otherwise.
/// Its version is its closing, or its creation.
pub fn deal(
    id: impl Into<String>,
    rep: impl Into<String>,
    stage: pb::DealStage,
    amount: pb::Money,
    created_at: DateTime<Utc>,
    closed_at: Option<DateTime<Utc>>,
) -> pb::Deal {
    pb::Deal {
        deal_id: id.into(),
        rep_id: rep.into(),
        customer_id: String::new(),
        amount: Some(amount),
        stage: stage as i32,
        created_at: Some(timestamp(created_at)),
        closed_at: closed_at.map(timestamp),
        updated_at: Some(timestamp(closed_at.unwrap_or(created_at))),
    }
}

pub fn feedback(
    id: impl Into<String>,
    rep: impl Into<String>,
    kind: pb::FeedbackKind,
    score: i32,
    submitted_at: DateTime<Utc>,
) -> pb::Feedback {
    pb::Feedback {
        feedback_id: id.into(),
        rep_id: rep.into(),
        customer_id: String::new(),
        kind: kind as i32,
        score,
        submitted_at: Some(timestamp(submitted_at)),
        comment: String::new(),
        updated_at: Some(timestamp(submitted_at)),
    }
}

pub fn request(
    id: impl Into<String>,
    rep: impl Into<String>,
    opened_at: DateTime<Utc>,
) -> pb::CustomerRequest {
    pb::CustomerRequest {
        request_id: id.into(),
        rep_id: rep.into(),
        customer_id: String::new(),
        opened_at: Some(timestamp(opened_at)),
        first_response_at: None,
        resolved_at: None,
        updated_at: Some(timestamp(opened_at)),
    }
}

/// What every record kind has: a version, a customer, and a place in a
/// batch.
macro_rules! common_setters {
    ($($ty:ident => $variant:ident),+ $(,)?) => {$(
        impl pb::$ty {
            /// Sets the version (`updated_at`).
            pub fn with_updated(mut self, at: DateTime<Utc>) -> Self {
                self.updated_at = Some(timestamp(at));
                self
            }

            /// Wraps the record for a batch.
            pub fn record(self) -> pb::ActivityRecord {
                pb::ActivityRecord {
                    record: Some(Record::$variant(self)),
                }
            }
        }
    )+};
}

common_setters!(
    Customer => Customer,
    Interaction => Interaction,
    Deal => Deal,
    Feedback => Feedback,
    CustomerRequest => CustomerRequest,
);

macro_rules! customer_setter {
    ($($ty:ident),+) => {$(
        impl pb::$ty {
            /// Sets the customer the record is about.
            pub fn with_customer(mut self, customer_id: impl Into<String>) -> Self {
                self.customer_id = customer_id.into();
                self
            }
        }
    )+};
}

customer_setter!(Interaction, Deal, Feedback, CustomerRequest);

impl pb::Interaction {
    pub fn with_duration(mut self, seconds: i32) -> Self {
        self.duration_seconds = Some(seconds);
        self
    }
}

impl pb::Customer {
    pub fn with_converted(mut self, at: Option<DateTime<Utc>>) -> Self {
        self.converted_at = at.map(timestamp);
        self
    }

    pub fn with_churned(mut self, at: Option<DateTime<Utc>>) -> Self {
        self.churned_at = at.map(timestamp);
        self
    }
}

impl pb::Feedback {
    pub fn with_comment(mut self, comment: impl Into<String>) -> Self {
        self.comment = comment.into();
        self
    }
}

impl pb::CustomerRequest {
    pub fn with_first_response(mut self, at: Option<DateTime<Utc>>) -> Self {
        self.first_response_at = at.map(timestamp);
        self
    }

    pub fn with_resolved(mut self, at: Option<DateTime<Utc>>) -> Self {
        self.resolved_at = at.map(timestamp);
        self
    }
}

/// The deletion of record `id` of `record_type` at version `at`.
pub fn deletion(
    record_type: pb::RecordType,
    id: impl Into<String>,
    at: DateTime<Utc>,
) -> pb::ActivityRecord {
    pb::ActivityRecord {
        record: Some(Record::Deletion(pb::Deletion {
            record_type: record_type as i32,
            record_id: id.into(),
            updated_at: Some(timestamp(at)),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap_or_default()
    }

    #[test]
    fn builders_make_minimal_records_and_setters_fill_the_rest() {
        let d = deal(
            "d1",
            "anna",
            pb::DealStage::Won,
            usd_cents(1_250_050),
            at("2026-04-01T09:00:00Z"),
            Some(at("2026-05-15T17:30:00Z")),
        );
        assert_eq!(d.updated_at, d.closed_at);
        let money = d.amount.clone().unwrap_or_default();
        assert_eq!((money.units, money.nanos), (12_500, 500_000_000));
        let r = d
            .with_customer("c1")
            .with_updated(at("2026-06-01T00:00:00Z"))
            .record();
        let Some(Record::Deal(d)) = r.record else {
            panic!("not a deal: {r:?}");
        };
        assert_eq!(d.customer_id, "c1");
        assert_eq!(d.updated_at, Some(timestamp(at("2026-06-01T00:00:00Z"))));
        let c = customer("c1", "anna", at("2026-01-10T08:00:00Z"))
            .with_converted(Some(at("2026-02-10T08:00:00Z")));
        assert!(c.converted_at.is_some() && c.churned_at.is_none());
        assert_eq!(c.updated_at, c.lead_at);
    }
}
