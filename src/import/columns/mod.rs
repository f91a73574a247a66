//! CSV files: which columns each record type has, and how a row becomes a
//! request. Values are read here (times, amounts, enum names); the rules
//! about them (required fields, ranges, order of times) are the service's,
//! so a CSV row is checked exactly like the same record sent by any client.
//!
//! The columns of each file (here), a row as a request (`row`), the values
//! of its cells (`values`).

mod row;
mod values;

use std::collections::HashMap;

pub use self::row::{Item, Row};

/// What a CSV file holds, from its name (`deals.csv`, `deals-2025.csv`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsvKind {
    Teams,
    Reps,
    Customers,
    Interactions,
    Deals,
    Feedback,
    CustomerRequests,
    Deletions,
}

/// One column of a CSV kind.
#[derive(Debug)]
pub struct Column {
    pub name: &'static str,
    /// Other header names accepted for it.
    pub aliases: &'static [&'static str],
    /// The header must have it (the column may still be empty in a row, for
    /// the service to judge).
    pub required: bool,
}

const fn col(name: &'static str, required: bool) -> Column {
    Column {
        name,
        aliases: &[],
        required,
    }
}

const TEAMS: &[Column] = &[
    col("team_id", true),
    col("display_name", true),
    col("parent_team_id", false),
];
const REPS: &[Column] = &[
    col("rep_id", true),
    col("display_name", true),
    col("email", false),
    col("active", false),
    col("team_id", false),
    col("team_effective_time", false),
];
const CUSTOMERS: &[Column] = &[
    col("customer_id", true),
    col("rep_id", true),
    col("lead_at", true),
    col("converted_at", false),
    col("churned_at", false),
    col("updated_at", true),
];
const INTERACTIONS: &[Column] = &[
    col("interaction_id", true),
    col("rep_id", true),
    col("customer_id", false),
    col("channel", true),
    col("occurred_at", true),
    col("duration_seconds", false),
    col("updated_at", true),
];
const DEALS: &[Column] = &[
    col("deal_id", true),
    col("rep_id", true),
    col("customer_id", false),
    col("amount", true),
    Column {
        name: "currency_code",
        aliases: &["currency"],
        required: true,
    },
    col("stage", true),
    col("created_at", true),
    col("closed_at", false),
    col("updated_at", true),
];
const FEEDBACK: &[Column] = &[
    col("feedback_id", true),
    col("rep_id", true),
    col("customer_id", false),
    col("kind", true),
    col("score", true),
    col("submitted_at", true),
    col("comment", false),
    col("updated_at", true),
];
const CUSTOMER_REQUESTS: &[Column] = &[
    col("request_id", true),
    col("rep_id", true),
    col("customer_id", false),
    col("opened_at", true),
    col("first_response_at", false),
    col("resolved_at", false),
    col("updated_at", true),
];
const DELETIONS: &[Column] = &[
    col("record_type", true),
    col("record_id", true),
    col("updated_at", true),
];

impl CsvKind {
    pub const ALL: [Self; 8] = [
        Self::Teams,
        Self::Reps,
        Self::Customers,
        Self::Interactions,
        Self::Deals,
        Self::Feedback,
        Self::CustomerRequests,
        Self::Deletions,
    ];

    /// The file name (stem) that selects this kind.
    pub fn name(self) -> &'static str {
        match self {
            Self::Teams => "teams",
            Self::Reps => "reps",
            Self::Customers => "customers",
            Self::Interactions => "interactions",
            Self::Deals => "deals",
            Self::Feedback => "feedback",
            Self::CustomerRequests => "customer_requests",
            Self::Deletions => "deletions",
        }
    }

    pub fn columns(self) -> &'static [Column] {
        match self {
            Self::Teams => TEAMS,
            Self::Reps => REPS,
            Self::Customers => CUSTOMERS,
            Self::Interactions => INTERACTIONS,
            Self::Deals => DEALS,
            Self::Feedback => FEEDBACK,
            Self::CustomerRequests => CUSTOMER_REQUESTS,
            Self::Deletions => DELETIONS,
        }
    }

    /// The kind a file stem names: the kind's name alone or followed by
    /// `-`, `_`, `.` or a space and anything (`deals-2025`).
    pub fn from_stem(stem: &str) -> Option<Self> {
        let stem = stem.to_ascii_lowercase();
        // Longest name first, so `customer_requests` is not `customers`.
        let mut kinds = Self::ALL;
        kinds.sort_by_key(|k| std::cmp::Reverse(k.name().len()));
        kinds.into_iter().find(|kind| {
            stem.strip_prefix(kind.name())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['-', '_', '.', ' ']))
        })
    }

    /// Teams and reps go through the directory, before any activity.
    pub fn is_directory(self) -> bool {
        matches!(self, Self::Teams | Self::Reps)
    }
}

/// A CSV header matched against its kind's columns.
#[derive(Debug)]
pub struct Header {
    kind: CsvKind,
    positions: HashMap<&'static str, usize>,
    /// Header names that are no column of the kind (ignored, reported).
    pub ignored: Vec<String>,
}

impl Header {
    /// Matches header names (case and surrounding space ignored, a UTF-8
    /// byte order mark too) to columns; fails naming every required column
    /// that is missing, or a column given twice.
    pub fn new(kind: CsvKind, names: &csv::StringRecord) -> Result<Self, String> {
        let mut positions = HashMap::new();
        let mut ignored = Vec::new();
        for (position, raw) in names.iter().enumerate() {
            let name = raw
                .trim_start_matches('\u{feff}')
                .trim()
                .to_ascii_lowercase();
            let column = kind
                .columns()
                .iter()
                .find(|c| c.name == name || c.aliases.contains(&name.as_str()));
            match column {
                Some(column) => {
                    if positions.insert(column.name, position).is_some() {
                        return Err(format!("the header names column {} twice", column.name));
                    }
                }
                None => ignored.push(raw.trim().to_owned()),
            }
        }
        let missing: Vec<&str> = kind
            .columns()
            .iter()
            .filter(|c| c.required && !positions.contains_key(c.name))
            .map(|c| c.name)
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "the header lacks column{} {} ({} files need: {})",
                if missing.len() > 1 { "s" } else { "" },
                missing.join(", "),
                kind.name(),
                kind.columns()
                    .iter()
                    .filter(|c| c.required)
                    .map(|c| c.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        Ok(Self {
            kind,
            positions,
            ignored,
        })
    }

    pub fn kind(&self) -> CsvKind {
        self.kind
    }
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;
    use chrono_tz::Tz;
    use pbjson_types::Timestamp;

    use super::*;
    use crate::proto::{
        pb::{self, activity_record::Record},
        timestamp,
    };

    fn at(rfc3339: &str) -> Timestamp {
        let at = DateTime::parse_from_rfc3339(rfc3339);
        timestamp(at.unwrap_or_else(|e| panic!("{rfc3339}: {e}")).to_utc())
    }

    #[test]
    fn files_are_named_after_their_kind() {
        assert_eq!(CsvKind::from_stem("deals"), Some(CsvKind::Deals));
        assert_eq!(CsvKind::from_stem("Deals-2025"), Some(CsvKind::Deals));
        assert_eq!(
            CsvKind::from_stem("customer_requests"),
            Some(CsvKind::CustomerRequests)
        );
        assert_eq!(CsvKind::from_stem("customers_eu"), Some(CsvKind::Customers));
        assert_eq!(CsvKind::from_stem("dealsx"), None);
        assert_eq!(CsvKind::from_stem("export"), None);
    }

    #[test]
    fn headers_need_the_required_columns_and_ignore_others() {
        let names = csv::StringRecord::from(vec![
            "\u{feff}Deal_ID",
            " rep_id ",
            "amount",
            "Currency",
            "stage",
            "created_at",
            "updated_at",
            "Pipeline",
        ]);
        let header = Header::new(CsvKind::Deals, &names).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(header.ignored, ["Pipeline"]);
        let fields = csv::StringRecord::from(vec![
            "d1",
            "anna",
            "1200.50",
            "eur",
            "Closed Won",
            "2025-01-02",
            "2025-02-01T10:00:00Z",
            "x",
        ]);
        let row = Row {
            header: &header,
            fields: &fields,
            zone: Tz::UTC,
        };
        let Ok(Item::Activity(pb::ActivityRecord {
            record: Some(Record::Deal(deal)),
        })) = row.to_item()
        else {
            panic!("not a deal");
        };
        assert_eq!(
            deal.amount,
            Some(pb::Money {
                currency_code: "EUR".into(),
                units: 1200,
                nanos: 500_000_000
            })
        );
        assert_eq!(deal.stage, pb::DealStage::Won as i32);
        assert_eq!(deal.created_at, Some(at("2025-01-02T00:00:00Z")));
        assert_eq!(deal.closed_at, None);

        let missing = csv::StringRecord::from(vec!["deal_id", "amount"]);
        let err = Header::new(CsvKind::Deals, &missing)
            .map(|_| ())
            .unwrap_err();
        assert!(
            err.contains("rep_id, currency_code, stage, created_at, updated_at"),
            "{err}"
        );
        let twice = csv::StringRecord::from(vec!["deal_id", "currency", "currency_code"]);
        assert!(Header::new(CsvKind::Deals, &twice).is_err_and(|e| e.contains("twice")));
    }
}
