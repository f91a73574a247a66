//! `kpi.v1.ActivityService`: batches of activity records, validated here
//! (every violation with its path) and recorded by `store::activity`.

use chrono::{DateTime, Utc};
use prost_types::Timestamp;
use sqlx::PgPool;
use tonic::{Code, Request, Response, Status, Streaming};

use super::{
    convert::instant,
    pb::{self, activity_record::Record, activity_service_server::ActivityService},
};
use crate::{
    Error,
    domain::{
        FieldViolation, Violations,
        activity::{
            Amount, Batch, Channel, Counts, Customer, CustomerRequest, Deal, DealStage, Feedback,
            FeedbackKind, Interaction, MAX_BATCH_RECORDS, MAX_COMMENT_CHARS, MAX_FUTURE, to_micros,
        },
        ids::check_id,
    },
    store::activity as store,
};

/// Largest request message the service decodes (a batch of 1000 records
/// with long comments fits easily); larger ones get RESOURCE_EXHAUSTED.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct ActivityApi {
    pool: PgPool,
    reporting_currency: String,
    known_reps: std::sync::Arc<store::KnownReps>,
}

impl ActivityApi {
    pub fn new(pool: PgPool, reporting_currency: String) -> Self {
        Self {
            pool,
            reporting_currency,
            known_reps: std::sync::Arc::default(),
        }
    }

    async fn record(&self, records: Vec<pb::ActivityRecord>) -> Result<Counts, Error> {
        let (batch, violations) = parse_batch(records, Utc::now(), &self.reporting_currency)?;
        store::record_batch(&self.pool, &self.known_reps, batch, violations).await
    }
}

impl From<Counts> for pb::RecordCounts {
    fn from(c: Counts) -> Self {
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        Self {
            inserted: n(c.inserted),
            updated: n(c.updated),
            unchanged: n(c.unchanged),
            stale: n(c.stale),
        }
    }
}

/// tonic reports a request over the size limit as OUT_OF_RANGE; gRPC's
/// convention (and every other implementation) says RESOURCE_EXHAUSTED.
pub fn normalise_transport_status(status: Status) -> Status {
    if status.code() == Code::OutOfRange && status.message().contains("message length too large") {
        Status::resource_exhausted(status.message().to_owned())
    } else {
        status
    }
}

#[tonic::async_trait]
impl ActivityService for ActivityApi {
    async fn record_activities(
        &self,
        request: Request<pb::RecordActivitiesRequest>,
    ) -> Result<Response<pb::RecordActivitiesResponse>, Status> {
        let counts = self.record(request.into_inner().records).await?;
        Ok(Response::new(pb::RecordActivitiesResponse {
            counts: Some(counts.into()),
        }))
    }

    async fn stream_activities(
        &self,
        request: Request<Streaming<pb::StreamActivitiesRequest>>,
    ) -> Result<Response<pb::StreamActivitiesResponse>, Status> {
        let mut stream = request.into_inner();
        let mut counts = Counts::default();
        let mut batches: u64 = 0;
        loop {
            let message = match stream.message().await {
                Ok(Some(message)) => message,
                Ok(None) => break,
                Err(status) => {
                    let status = normalise_transport_status(status);
                    return Err(Status::new(
                        status.code(),
                        format!(
                            "{} ({batches} batches were committed before this)",
                            status.message()
                        ),
                    ));
                }
            };
            match self.record(message.records).await {
                Ok(batch_counts) => {
                    counts += batch_counts;
                    batches += 1;
                }
                Err(cause) => {
                    return Err(Error::StreamInterrupted {
                        committed_batches: batches,
                        cause: Box::new(cause),
                    }
                    .into());
                }
            }
        }
        Ok(Response::new(pb::StreamActivitiesResponse {
            counts: Some(counts.into()),
            batches: i64::try_from(batches).unwrap_or(i64::MAX),
        }))
    }
}

/// Validates a batch against the rules that need no database; every
/// violation is named by its path (`records[17].deal.closed_at`). Returns
/// the valid records and the violations of the others, so the database
/// checks can still run on the former and the caller hears of everything
/// at once. Fails outright only when the batch has no records or too many.
pub fn parse_batch(
    records: Vec<pb::ActivityRecord>,
    now: DateTime<Utc>,
    reporting_currency: &str,
) -> Result<(Batch, Vec<FieldViolation>), Error> {
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
    for (index, record) in records.into_iter().enumerate() {
        let mut c = RecordCheck {
            v: &mut v,
            path: format!("records[{index}]"),
            latest: now + MAX_FUTURE,
        };
        match record.record {
            None => c.v.add(
                c.path.clone(),
                "must hold one record (customer, interaction, deal, feedback or customer_request)",
            ),
            Some(Record::Customer(r)) => {
                c.path.push_str(".customer");
                if let Some(r) = c.customer(r) {
                    batch.customers.push((index, r));
                }
            }
            Some(Record::Interaction(r)) => {
                c.path.push_str(".interaction");
                if let Some(r) = c.interaction(r) {
                    batch.interactions.push((index, r));
                }
            }
            Some(Record::Deal(r)) => {
                c.path.push_str(".deal");
                if let Some(r) = c.deal(r, reporting_currency) {
                    batch.deals.push((index, r));
                }
            }
            Some(Record::Feedback(r)) => {
                c.path.push_str(".feedback");
                if let Some(r) = c.feedback(r) {
                    batch.feedback.push((index, r));
                }
            }
            Some(Record::CustomerRequest(r)) => {
                c.path.push_str(".customer_request");
                if let Some(r) = c.request(r) {
                    batch.requests.push((index, r));
                }
            }
        }
    }
    Ok((batch, v.into_vec()))
}

/// Checks the fields of one record, recording violations under `path`.
struct RecordCheck<'a> {
    v: &'a mut Violations,
    path: String,
    /// Timestamps after this are rejected.
    latest: DateTime<Utc>,
}

impl RecordCheck<'_> {
    fn field(&self, name: &str) -> String {
        format!("{}.{name}", self.path)
    }

    /// Keeps a valid value; records the violation under `name` otherwise
    /// (the path is only built for violations: this runs per field of
    /// every record of every batch).
    fn check<T>(&mut self, name: &str, parsed: Result<T, String>) -> Option<T> {
        match parsed {
            Ok(value) => Some(value),
            Err(description) => {
                self.v.add(self.field(name), description);
                None
            }
        }
    }

    fn id(&mut self, name: &str, raw: String) -> Option<String> {
        self.check(name, check_id(&raw).map(|()| raw))
    }

    fn optional_id(&mut self, name: &str, raw: String) -> Option<Option<String>> {
        if raw.is_empty() {
            Some(None)
        } else {
            self.id(name, raw).map(Some)
        }
    }

    fn time(&mut self, name: &str, ts: &Timestamp) -> Option<DateTime<Utc>> {
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

    fn required_time(&mut self, name: &str, ts: Option<&Timestamp>) -> Option<DateTime<Utc>> {
        match ts {
            Some(ts) => self.time(name, ts),
            None => {
                self.v.add(self.field(name), "is required");
                None
            }
        }
    }

    fn optional_time(
        &mut self,
        name: &str,
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
        later_name: &str,
        later: Option<Option<DateTime<Utc>>>,
        earlier_name: &str,
        earlier: Option<DateTime<Utc>>,
    ) {
        if let (Some(Some(later)), Some(earlier)) = (later, earlier)
            && later < earlier
        {
            self.v.add(
                self.field(later_name),
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
            (Some(Some(_)), Some(None)) => self.v.add(
                self.field("churned_at"),
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
                self.v.add(
                    self.field("duration_seconds"),
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

    fn deal(&mut self, r: pb::Deal, reporting_currency: &str) -> Option<Deal> {
        let id = self.id("deal_id", r.deal_id);
        let rep_id = self.id("rep_id", r.rep_id);
        let customer_id = self.optional_id("customer_id", r.customer_id);
        let (currency, amount) = match &r.amount {
            None => {
                self.v.add(self.field("amount"), "is required");
                (None, None)
            }
            Some(money) => {
                let currency = if money.currency_code == reporting_currency {
                    Some(money.currency_code.clone())
                } else {
                    self.v.add(
                        self.field("amount.currency_code"),
                        format!(
                            "must be the reporting currency {reporting_currency} (got '{}')",
                            money.currency_code
                        ),
                    );
                    None
                };
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
            (Some(DealStage::Open), Some(Some(_))) => self
                .v
                .add(self.field("closed_at"), "must be absent for an OPEN deal"),
            (Some(DealStage::Won | DealStage::Lost), Some(None)) => self.v.add(
                self.field("closed_at"),
                "is required for a WON or LOST deal",
            ),
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
            self.v.add(
                self.field("comment"),
                format!("must be at most {MAX_COMMENT_CHARS} characters (got {chars})"),
            );
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
