//! CSV files: which columns each record type has, and how a row becomes a
//! request. Values are read here (times, amounts, enum names); the rules
//! about them (required fields, ranges, order of times) are the service's,
//! so a CSV row is checked exactly like the same record sent by any client.

use std::collections::HashMap;

use chrono::{DateTime, LocalResult, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use pbjson_types::Timestamp;

use crate::proto::pb::{self, activity_record::Record};

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

const BOOLEANS: &[(&str, bool)] = &[
    ("true", true),
    ("yes", true),
    ("1", true),
    ("false", false),
    ("no", false),
    ("0", false),
];
const CHANNELS: &[(&str, pb::Channel)] = &[
    ("call", pb::Channel::Call),
    ("email", pb::Channel::Email),
    ("meeting", pb::Channel::Meeting),
    ("message", pb::Channel::Message),
    ("demo", pb::Channel::Demo),
];
// HubSpot's stage ids for closed deals are `closedwon`/`closedlost`,
// Salesforce's standard stage names `Closed Won`/`Closed Lost`.
const STAGES: &[(&str, pb::DealStage)] = &[
    ("open", pb::DealStage::Open),
    ("won", pb::DealStage::Won),
    ("lost", pb::DealStage::Lost),
    ("closed won", pb::DealStage::Won),
    ("closedwon", pb::DealStage::Won),
    ("closed lost", pb::DealStage::Lost),
    ("closedlost", pb::DealStage::Lost),
];
const KINDS: &[(&str, pb::FeedbackKind)] = &[
    ("nps", pb::FeedbackKind::Nps),
    ("csat", pb::FeedbackKind::Csat),
];
const RECORD_TYPES: &[(&str, pb::RecordType)] = &[
    ("customer", pb::RecordType::Customer),
    ("interaction", pb::RecordType::Interaction),
    ("deal", pb::RecordType::Deal),
    ("feedback", pb::RecordType::Feedback),
    ("customer_request", pb::RecordType::CustomerRequest),
];

/// The proto enum prefixes: `CHANNEL_CALL` is accepted as `call`.
const ENUM_PREFIXES: [&str; 4] = ["channel ", "deal stage ", "feedback kind ", "record type "];

/// A name from `choices`, any case, `_` and space alike; the proto enum
/// value names (`CHANNEL_CALL`) are accepted too.
fn parse_choice<T: Copy>(text: &str, choices: &[(&str, T)]) -> Result<T, String> {
    let wanted = text.to_ascii_lowercase().replace('_', " ");
    let wanted = ENUM_PREFIXES
        .iter()
        .find_map(|prefix| wanted.strip_prefix(prefix))
        .unwrap_or(&wanted);
    choices
        .iter()
        .find(|(name, _)| wanted == name.replace('_', " "))
        .map(|&(_, value)| value)
        .ok_or_else(|| {
            format!(
                "{text:?} is not one of {}",
                choices
                    .iter()
                    .map(|(name, _)| *name)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

/// An instant: RFC 3339 with an offset (`2025-03-01T14:22:05Z`,
/// `2025-03-01 14:22:05+01:00`, also `+0100`), or a local time without one
/// (`2025-03-01 14:22[:05[.123]]`, `T` or space) or a date (`2025-03-01`,
/// its midnight) in `zone`. A local time that falls in a daylight-saving gap
/// does not exist and is refused; one that occurs twice (the hour the
/// clocks go back) is the earlier.
pub fn parse_time(text: &str, zone: Tz) -> Result<Timestamp, String> {
    let to_timestamp = |at: DateTime<Utc>| Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    };
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(to_timestamp(at.to_utc()));
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M:%S%.f%#z"] {
        if let Ok(at) = DateTime::parse_from_str(text, format) {
            return Ok(to_timestamp(at.to_utc()));
        }
    }
    let local = [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ]
    .iter()
    .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
    .or_else(|| {
        NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .ok()
            .and_then(|day| day.and_hms_opt(0, 0, 0))
    })
    .ok_or_else(|| {
        format!("{text:?} is not a time (RFC 3339, YYYY-MM-DD HH:MM[:SS] or YYYY-MM-DD)")
    })?;
    match zone.from_local_datetime(&local) {
        LocalResult::Single(at) | LocalResult::Ambiguous(at, _) => Ok(to_timestamp(at.to_utc())),
        LocalResult::None => Err(format!(
            "{text} does not exist in {zone} (the clocks skip it)"
        )),
    }
}

/// A non-negative decimal amount (`1234`, `1234.5`, `0.000000001`) as
/// whole units and nanos, exactly; at most 9 decimals, no thousands
/// separators, no exponent.
pub fn parse_amount(text: &str) -> Result<(i64, i32), String> {
    let unsigned = text.strip_prefix('+').unwrap_or(text);
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if text.starts_with('-') {
        return Err(format!("{text:?} is negative"));
    }
    if whole.is_empty() && fraction.is_empty() || !digits(whole) || !digits(fraction) {
        return Err(format!(
            "{text:?} is not a decimal amount (digits, an optional '.' and up to 9 decimals; no thousands separators)"
        ));
    }
    if fraction.len() > 9 {
        return Err(format!("{text:?} has more than 9 decimals"));
    }
    let units = if whole.is_empty() {
        0
    } else {
        whole
            .parse::<i64>()
            .map_err(|_| format!("{text:?} is too large"))?
    };
    let nanos = format!("{fraction:0<9}")
        .parse::<i32>()
        .map_err(|_| format!("{text:?} is not a decimal amount"))?;
    Ok((units, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rfc3339: &str) -> Timestamp {
        let at = DateTime::parse_from_rfc3339(rfc3339)
            .unwrap_or_else(|e| panic!("{rfc3339}: {e}"))
            .to_utc();
        Timestamp {
            seconds: at.timestamp(),
            nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
        }
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
    fn times_with_an_offset_are_instants_and_local_times_are_in_the_zone() {
        let utc = Tz::UTC;
        let berlin: Tz = "Europe/Berlin".parse().unwrap_or(Tz::UTC);
        assert_eq!(
            parse_time("2025-03-01T14:22:05Z", berlin),
            Ok(at("2025-03-01T14:22:05Z"))
        );
        assert_eq!(
            parse_time("2025-03-01T14:22:05.000Z", utc),
            Ok(at("2025-03-01T14:22:05Z"))
        );
        assert_eq!(
            parse_time("2025-03-01 14:22:05+01:00", utc),
            Ok(at("2025-03-01T13:22:05Z"))
        );
        assert_eq!(
            parse_time("2025-03-01T14:22:05.000+0000", berlin),
            Ok(at("2025-03-01T14:22:05Z"))
        );
        // Winter in Berlin is UTC+1, summer UTC+2.
        assert_eq!(
            parse_time("2025-03-01 14:22", berlin),
            Ok(at("2025-03-01T13:22:00Z"))
        );
        assert_eq!(
            parse_time("2025-07-01T14:22:05.5", berlin),
            Ok(at("2025-07-01T12:22:05.5Z"))
        );
        assert_eq!(
            parse_time("2025-07-01", berlin),
            Ok(at("2025-06-30T22:00:00Z"))
        );
        assert_eq!(
            parse_time("2025-07-01", utc),
            Ok(at("2025-07-01T00:00:00Z"))
        );
        // 02:30 on the last Sunday of March does not exist in Berlin; on
        // the last Sunday of October it happens twice (the earlier counts).
        assert!(parse_time("2025-03-30 02:30", berlin).is_err_and(|e| e.contains("skip")));
        assert_eq!(
            parse_time("2025-10-26 02:30", berlin),
            Ok(at("2025-10-26T00:30:00Z"))
        );
        for bad in ["03/01/2025", "2025-02-30", "yesterday", "2025-03-01 25:00"] {
            assert!(parse_time(bad, utc).is_err(), "{bad} was read as a time");
        }
    }

    #[test]
    fn amounts_are_exact_units_and_nanos() {
        assert_eq!(parse_amount("1234"), Ok((1234, 0)));
        assert_eq!(parse_amount("1234.5"), Ok((1234, 500_000_000)));
        assert_eq!(parse_amount("0.000000001"), Ok((0, 1)));
        assert_eq!(parse_amount(".25"), Ok((0, 250_000_000)));
        assert_eq!(parse_amount("+7."), Ok((7, 0)));
        assert_eq!(
            parse_amount("9223372036854775807.999999999"),
            Ok((i64::MAX, 999_999_999))
        );
        for bad in [
            "-5",
            "1,234.50",
            "12,50",
            "1e3",
            "",
            ".",
            "1.0000000001",
            "abc",
            "9223372036854775808",
        ] {
            assert!(parse_amount(bad).is_err(), "{bad:?} was read as an amount");
        }
    }

    #[test]
    fn choices_take_any_case_and_the_proto_names() {
        assert_eq!(parse_choice("Call", CHANNELS), Ok(pb::Channel::Call));
        assert_eq!(
            parse_choice("CHANNEL_EMAIL", CHANNELS),
            Ok(pb::Channel::Email)
        );
        assert_eq!(parse_choice("Closed Won", STAGES), Ok(pb::DealStage::Won));
        assert_eq!(parse_choice("closedlost", STAGES), Ok(pb::DealStage::Lost));
        assert_eq!(
            parse_choice("DEAL_STAGE_OPEN", STAGES),
            Ok(pb::DealStage::Open)
        );
        assert_eq!(
            parse_choice("customer_request", RECORD_TYPES),
            Ok(pb::RecordType::CustomerRequest)
        );
        assert_eq!(
            parse_choice("RECORD_TYPE_CUSTOMER", RECORD_TYPES),
            Ok(pb::RecordType::Customer)
        );
        assert!(parse_choice("Prospecting", STAGES).is_err_and(|e| e.contains("open, won")));
        assert!(parse_choice("fax", CHANNELS).is_err());
        assert!(parse_choice("not won", STAGES).is_err());
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
