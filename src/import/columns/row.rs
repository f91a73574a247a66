//! A CSV row as the request it becomes.

use chrono_tz::Tz;
use pbjson_types::Timestamp;

use crate::proto::pb::{self, activity_record::Record};

use super::{
    CsvKind, Header,
    values::{
        BOOLEANS, CHANNELS, KINDS, RECORD_TYPES, STAGES, parse_amount, parse_choice, parse_time,
    },
};

/// One data row, read through its header.
pub struct Row<'a> {
    pub header: &'a Header,
    pub fields: &'a csv::StringRecord,
    /// The zone of times written without an offset.
    pub zone: Tz,
}

impl Row<'_> {
    /// The column's text, trimmed; empty when the file has no such column.
    fn text(&self, name: &str) -> &str {
        self.header
            .positions
            .get(name)
            .and_then(|&i| self.fields.get(i))
            .map_or("", str::trim)
    }

    fn string(&self, name: &str) -> String {
        self.text(name).to_owned()
    }

    fn time(&self, name: &str) -> Result<Option<Timestamp>, String> {
        let text = self.text(name);
        if text.is_empty() {
            return Ok(None);
        }
        parse_time(text, self.zone)
            .map(Some)
            .map_err(|why| format!("{name}: {why}"))
    }

    fn int(&self, name: &str) -> Result<Option<i32>, String> {
        let text = self.text(name);
        if text.is_empty() {
            return Ok(None);
        }
        text.parse()
            .map(Some)
            .map_err(|_| format!("{name}: {text:?} is not a whole number"))
    }

    fn choice<T: Copy>(&self, name: &str, choices: &[(&str, T)]) -> Result<Option<T>, String> {
        let text = self.text(name);
        if text.is_empty() {
            return Ok(None);
        }
        parse_choice(text, choices)
            .map(Some)
            .map_err(|why| format!("{name}: {why}"))
    }

    /// The row as the directory request or activity record of its kind.
    pub fn to_item(&self) -> Result<Item, String> {
        Ok(match self.header.kind {
            CsvKind::Teams => Item::Team(pb::UpsertTeamRequest {
                team_id: self.string("team_id"),
                display_name: self.string("display_name"),
                parent_team_id: self.string("parent_team_id"),
            }),
            CsvKind::Reps => Item::Rep(pb::UpsertRepRequest {
                rep_id: self.string("rep_id"),
                display_name: self.string("display_name"),
                email: self.string("email"),
                active: self.choice("active", BOOLEANS)?,
                team_id: self.string("team_id"),
                team_effective_time: self.time("team_effective_time")?,
            }),
            CsvKind::Customers => record(Record::Customer(pb::Customer {
                customer_id: self.string("customer_id"),
                rep_id: self.string("rep_id"),
                lead_at: self.time("lead_at")?,
                converted_at: self.time("converted_at")?,
                churned_at: self.time("churned_at")?,
                updated_at: self.time("updated_at")?,
            })),
            CsvKind::Interactions => record(Record::Interaction(pb::Interaction {
                interaction_id: self.string("interaction_id"),
                rep_id: self.string("rep_id"),
                customer_id: self.string("customer_id"),
                channel: self.choice("channel", CHANNELS)?.unwrap_or_default() as i32,
                occurred_at: self.time("occurred_at")?,
                duration_seconds: self.int("duration_seconds")?,
                updated_at: self.time("updated_at")?,
            })),
            CsvKind::Deals => record(Record::Deal(pb::Deal {
                deal_id: self.string("deal_id"),
                rep_id: self.string("rep_id"),
                customer_id: self.string("customer_id"),
                amount: match self.text("amount") {
                    "" => None,
                    amount => {
                        let (units, nanos) =
                            parse_amount(amount).map_err(|why| format!("amount: {why}"))?;
                        Some(pb::Money {
                            currency_code: self.text("currency_code").to_ascii_uppercase(),
                            units,
                            nanos,
                        })
                    }
                },
                stage: self.choice("stage", STAGES)?.unwrap_or_default() as i32,
                created_at: self.time("created_at")?,
                closed_at: self.time("closed_at")?,
                updated_at: self.time("updated_at")?,
            })),
            CsvKind::Feedback => record(Record::Feedback(pb::Feedback {
                feedback_id: self.string("feedback_id"),
                rep_id: self.string("rep_id"),
                customer_id: self.string("customer_id"),
                kind: self.choice("kind", KINDS)?.unwrap_or_default() as i32,
                score: self
                    .int("score")?
                    .ok_or_else(|| "score: must not be empty".to_owned())?,
                submitted_at: self.time("submitted_at")?,
                comment: self.string("comment"),
                updated_at: self.time("updated_at")?,
            })),
            CsvKind::CustomerRequests => record(Record::CustomerRequest(pb::CustomerRequest {
                request_id: self.string("request_id"),
                rep_id: self.string("rep_id"),
                customer_id: self.string("customer_id"),
                opened_at: self.time("opened_at")?,
                first_response_at: self.time("first_response_at")?,
                resolved_at: self.time("resolved_at")?,
                updated_at: self.time("updated_at")?,
            })),
            CsvKind::Deletions => record(Record::Deletion(pb::Deletion {
                record_type: self
                    .choice("record_type", RECORD_TYPES)?
                    .unwrap_or_default() as i32,
                record_id: self.string("record_id"),
                updated_at: self.time("updated_at")?,
            })),
        })
    }
}

/// What a row becomes.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Team(pb::UpsertTeamRequest),
    Rep(pb::UpsertRepRequest),
    Activity(pb::ActivityRecord),
}

fn record(record: Record) -> Item {
    Item::Activity(pb::ActivityRecord {
        record: Some(record),
    })
}
