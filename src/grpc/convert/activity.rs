//! An activity batch from protobuf: every record checked against the rules
//! that need no database, each violation named by its record and field;
//! and the counts back.

use chrono::{DateTime, Utc};
use pbjson_types::Timestamp;

use crate::proto::pb::{self, activity_record::Record};
use crate::{
    Error,
    domain::{
        Violations,
        activity::{
            Amount, Batch, Channel, Counts, Customer, CustomerRequest, DELETION_KIND, Deal,
            DealStage, Feedback, FeedbackKind, Interaction, MAX_BATCH_RECORDS, MAX_COMMENT_CHARS,
            MAX_FUTURE, Tombstone, Version, to_micros,
        },
        ids::check_id,
        money::check_currency,
    },
    error::RecordViolation,
    proto::instant,
};

impl From<Counts> for pb::RecordCounts {
    fn from(c: Counts) -> Self {
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        Self {
            inserted: n(c.inserted),
            updated: n(c.updated),
            unchanged: n(c.unchanged),
            stale: n(c.stale),
            deleted: n(c.deleted),
        }
    }
}

/// Validates a batch against the rules that need no database; every
/// violation names its record (index and kind) and field. Returns the
/// valid records and the violations of the others (`Batch::invalid`), so
/// the database checks can still run on the former and the caller hears of
/// everything at once. Fails outright only when the batch has no records
/// or too many.
pub fn parse_batch(records: Vec<pb::ActivityRecord>, now: DateTime<Utc>) -> Result<Batch, Error> {
    let mut v = Violations::new();
    if records.is_empty() {
        v.add("records", "must not be empty");
        return Err(Error::InvalidArgument(v.into_vec()));
    }
    if records.len() > MAX_BATCH_RECORDS {
        v.add(
            "records",
            format!(
                "at most {MAX_BATCH_RECORDS} records per batch (got {})",
                records.len()
            ),
        );
        return Err(Error::InvalidArgument(v.into_vec()));
    }
    let mut batch = Batch::default();
    let latest = now + MAX_FUTURE;
    for (index, record) in records.into_iter().enumerate() {
        let Some(record) = record.record else {
            batch.invalid.push(RecordViolation {
                index,
                kind: None,
                field: "",
                problem: "must hold one record (customer, interaction, deal, feedback, customer_request or deletion)".to_owned(),
            });
            continue;
        };
        let mut c = RecordCheck {
            v: &mut batch.invalid,
            index,
            kind: "",
            latest,
        };
        match record {
            Record::Customer(r) => {
                c.kind = "customer";
                if let Some(r) = c.customer(r) {
                    batch.customers.push((index, Version::Live(r)));
                }
            }
            Record::Interaction(r) => {
                c.kind = "interaction";
                if let Some(r) = c.interaction(r) {
                    batch.interactions.push((index, Version::Live(r)));
                }
            }
            Record::Deal(r) => {
                c.kind = "deal";
                if let Some(r) = c.deal(r) {
                    batch.deals.push((index, Version::Live(r)));
                }
            }
            Record::Deletion(r) => {
                c.kind = DELETION_KIND;
                let Some((record_type, gone)) = c.deletion(r) else {
                    continue;
                };
                match record_type {
                    pb::RecordType::Customer => {
                        batch.customers.push((index, Version::Deleted(gone)))
                    }
                    pb::RecordType::Interaction => {
                        batch.interactions.push((index, Version::Deleted(gone)));
                    }
                    pb::RecordType::Deal => batch.deals.push((index, Version::Deleted(gone))),
                    pb::RecordType::Feedback => {
                        batch.feedback.push((index, Version::Deleted(gone)))
                    }
                    pb::RecordType::CustomerRequest => {
                        batch.requests.push((index, Version::Deleted(gone)));
                    }
                    // Refused by `deletion`.
                    pb::RecordType::Unspecified => {}
                }
            }
            Record::Feedback(r) => {
                c.kind = "feedback";
                if let Some(r) = c.feedback(r) {
                    batch.feedback.push((index, Version::Live(r)));
                }
            }
            Record::CustomerRequest(r) => {
                c.kind = "customer_request";
                if let Some(r) = c.request(r) {
                    batch.requests.push((index, Version::Live(r)));
                }
            }
        }
    }
    Ok(batch)
}

/// Checks the fields of one record, recording violations under its index
/// and kind.
struct RecordCheck<'a> {
    v: &'a mut Vec<RecordViolation>,
    index: usize,
    kind: &'static str,
    /// Timestamps after this are rejected.
    latest: DateTime<Utc>,
}

impl RecordCheck<'_> {
    fn add(&mut self, field: &'static str, problem: impl Into<String>) {
        self.v
            .push(RecordViolation::new(self.index, self.kind, field, problem));
    }

    /// Keeps a valid value; records the violation under `field` otherwise.
    fn check<T>(&mut self, field: &'static str, parsed: Result<T, String>) -> Option<T> {
        match parsed {
            Ok(value) => Some(value),
            Err(problem) => {
                self.add(field, problem);
                None
            }
        }
    }

    fn id(&mut self, name: &'static str, raw: String) -> Option<String> {
        self.check(name, check_id(&raw).map(|()| raw))
    }

    fn optional_id(&mut self, name: &'static str, raw: String) -> Option<Option<String>> {
        if raw.is_empty() {
            Some(None)
        } else {
            self.id(name, raw).map(Some)
        }
    }

    fn time(&mut self, name: &'static str, ts: &Timestamp) -> Option<DateTime<Utc>> {
        let latest = self.latest;
        let parsed = instant(ts).map(to_micros).and_then(|at| {
            if at > latest {
                Err(format!(
                    "is more than 24 h in the future ({at}); check the sender's clock"
                ))
            } else {
                Ok(at)
            }
        });
        self.check(name, parsed)
    }

    fn required_time(
        &mut self,
        name: &'static str,
        ts: Option<&Timestamp>,
    ) -> Option<DateTime<Utc>> {
        match ts {
            Some(ts) => self.time(name, ts),
            None => {
                self.add(name, "is required");
                None
            }
        }
    }

    fn optional_time(
        &mut self,
        name: &'static str,
        ts: Option<&Timestamp>,
    ) -> Option<Option<DateTime<Utc>>> {
        match ts {
            Some(ts) => self.time(name, ts).map(Some),
            None => Some(None),
        }
    }

    /// `later` must not be before `earlier` (both valid and present).
    fn not_before(
        &mut self,
        later_name: &'static str,
        later: Option<Option<DateTime<Utc>>>,
        earlier_name: &str,
        earlier: Option<DateTime<Utc>>,
    ) {
        if let (Some(Some(later)), Some(earlier)) = (later, earlier)
            && later < earlier
        {
            self.add(
                later_name,
                format!("must not be before {earlier_name} ({later} < {earlier})"),
            );
        }
    }

    fn customer(&mut self, r: pb::Customer) -> Option<Customer> {
        let id = self.id("customer_id", r.customer_id);
        let rep_id = self.id("rep_id", r.rep_id);
        let lead_at = self.required_time("lead_at", r.lead_at.as_ref());
        let converted_at = self.optional_time("converted_at", r.converted_at.as_ref());
        let churned_at = self.optional_time("churned_at", r.churned_at.as_ref());
        let updated_at = self.required_time("updated_at", r.updated_at.as_ref());
        self.not_before("converted_at", converted_at, "lead_at", lead_at);
        match (churned_at, converted_at) {
            (Some(Some(_)), Some(None)) => self.add(
                "churned_at",
                "needs converted_at: only a customer can churn",
            ),
            (churned, Some(Some(converted))) => {
                self.not_before("churned_at", churned, "converted_at", Some(converted));
            }
            _ => {}
        }
        Some(Customer {
            id: id?,
            rep_id: rep_id?,
            lead_at: lead_at?,
            converted_at: converted_at?,
            churned_at: churned_at?,
            updated_at: updated_at?,
        })
    }

    fn interaction(&mut self, r: pb::Interaction) -> Option<Interaction> {
        let id = self.id("interaction_id", r.interaction_id);
        let rep_id = self.id("rep_id", r.rep_id);
        let customer_id = self.optional_id("customer_id", r.customer_id);
        let channel = self.check("channel",
            Channel::from_code(r.channel).ok_or_else(|| {
                format!(
                    "must be CHANNEL_CALL, CHANNEL_EMAIL, CHANNEL_MEETING, CHANNEL_MESSAGE or CHANNEL_DEMO (got {})",
                    r.channel
                )
            }),
        );
        let occurred_at = self.required_time("occurred_at", r.occurred_at.as_ref());
        let duration_seconds = match r.duration_seconds {
            Some(d) if d < 0 => {
                self.add(
                    "duration_seconds",
                    format!("must not be negative (got {d})"),
                );
                None
            }
            other => Some(other),
        };
        let updated_at = self.required_time("updated_at", r.updated_at.as_ref());
        Some(Interaction {
            id: id?,
            rep_id: rep_id?,
            customer_id: customer_id?,
            channel: channel?,
            occurred_at: occurred_at?,
            duration_seconds: duration_seconds?,
            updated_at: updated_at?,
        })
    }

    fn deal(&mut self, r: pb::Deal) -> Option<Deal> {
        let id = self.id("deal_id", r.deal_id);
        let rep_id = self.id("rep_id", r.rep_id);
        let customer_id = self.optional_id("customer_id", r.customer_id);
        let (currency, amount) = match &r.amount {
            None => {
                self.add("amount", "is required");
                (None, None)
            }
            Some(money) => {
                let currency = self
                    .check("amount.currency_code", check_currency(&money.currency_code))
                    .map(|()| money.currency_code.clone());
                let amount = self.check("amount", Amount::new(money.units, money.nanos));
                (currency, amount)
            }
        };
        let stage = self.check(
            "stage",
            DealStage::from_code(r.stage).ok_or_else(|| {
                format!(
                    "must be DEAL_STAGE_OPEN, DEAL_STAGE_WON or DEAL_STAGE_LOST (got {})",
                    r.stage
                )
            }),
        );
        let created_at = self.required_time("created_at", r.created_at.as_ref());
        let closed_at = self.optional_time("closed_at", r.closed_at.as_ref());
        match (stage, closed_at) {
            (Some(DealStage::Open), Some(Some(_))) => {
                self.add("closed_at", "must be absent for an OPEN deal")
            }
            (Some(DealStage::Won | DealStage::Lost), Some(None)) => {
                self.add("closed_at", "is required for a WON or LOST deal")
            }
            _ => self.not_before("closed_at", closed_at, "created_at", created_at),
        }
        let updated_at = self.required_time("updated_at", r.updated_at.as_ref());
        Some(Deal {
            id: id?,
            rep_id: rep_id?,
            customer_id: customer_id?,
            currency: currency?,
            amount: amount?,
            stage: stage?,
            created_at: created_at?,
            closed_at: closed_at?,
            updated_at: updated_at?,
        })
    }

    fn feedback(&mut self, r: pb::Feedback) -> Option<Feedback> {
        let id = self.id("feedback_id", r.feedback_id);
        let rep_id = self.id("rep_id", r.rep_id);
        let customer_id = self.optional_id("customer_id", r.customer_id);
        let kind = self.check(
            "kind",
            FeedbackKind::from_code(r.kind).ok_or_else(|| {
                format!(
                    "must be FEEDBACK_KIND_NPS or FEEDBACK_KIND_CSAT (got {})",
                    r.kind
                )
            }),
        );
        let score = kind.and_then(|kind| {
            let range = kind.scores();
            let score = i16::try_from(r.score).ok().filter(|s| range.contains(s));
            self.check(
                "score",
                score.ok_or_else(|| {
                    format!(
                        "must be {}-{} for {} (got {})",
                        range.start(),
                        range.end(),
                        if kind == FeedbackKind::Nps {
                            "NPS"
                        } else {
                            "CSAT"
                        },
                        r.score
                    )
                }),
            )
        });
        let submitted_at = self.required_time("submitted_at", r.submitted_at.as_ref());
        let chars = r.comment.chars().count();
        let comment = if chars > MAX_COMMENT_CHARS {
            self.add(
                "comment",
                format!("must be at most {MAX_COMMENT_CHARS} characters (got {chars})"),
            );
            None
        } else if r.comment.contains('\0') {
            self.add("comment", "must not contain NUL (U+0000) characters");
            None
        } else {
            Some(Some(r.comment).filter(|c| !c.is_empty()))
        };
        let updated_at = self.required_time("updated_at", r.updated_at.as_ref());
        Some(Feedback {
            id: id?,
            rep_id: rep_id?,
            customer_id: customer_id?,
            kind: kind?,
            score: score?,
            submitted_at: submitted_at?,
            comment: comment?,
            updated_at: updated_at?,
        })
    }

    /// A deletion: the record type it deletes, and its tombstone.
    fn deletion(&mut self, r: pb::Deletion) -> Option<(pb::RecordType, Tombstone)> {
        let record_type = self.check(
            "record_type",
            pb::RecordType::try_from(r.record_type)
                .ok()
                .filter(|t| *t != pb::RecordType::Unspecified)
                .ok_or_else(|| {
                    format!(
                        "must be RECORD_TYPE_CUSTOMER, RECORD_TYPE_INTERACTION, RECORD_TYPE_DEAL, \
                         RECORD_TYPE_FEEDBACK or RECORD_TYPE_CUSTOMER_REQUEST (got {})",
                        r.record_type
                    )
                }),
        );
        let id = self.id("record_id", r.record_id);
        let updated_at = self.required_time("updated_at", r.updated_at.as_ref());
        Some((
            record_type?,
            Tombstone {
                id: id?,
                updated_at: updated_at?,
            },
        ))
    }

    fn request(&mut self, r: pb::CustomerRequest) -> Option<CustomerRequest> {
        let id = self.id("request_id", r.request_id);
        let rep_id = self.id("rep_id", r.rep_id);
        let customer_id = self.optional_id("customer_id", r.customer_id);
        let opened_at = self.required_time("opened_at", r.opened_at.as_ref());
        let first_response_at =
            self.optional_time("first_response_at", r.first_response_at.as_ref());
        let resolved_at = self.optional_time("resolved_at", r.resolved_at.as_ref());
        self.not_before(
            "first_response_at",
            first_response_at,
            "opened_at",
            opened_at,
        );
        self.not_before("resolved_at", resolved_at, "opened_at", opened_at);
        let updated_at = self.required_time("updated_at", r.updated_at.as_ref());
        Some(CustomerRequest {
            id: id?,
            rep_id: rep_id?,
            customer_id: customer_id?,
            opened_at: opened_at?,
            first_response_at: first_response_at?,
            resolved_at: resolved_at?,
            updated_at: updated_at?,
        })
    }
}
