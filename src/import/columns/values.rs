//! The values of a CSV cell: times (with an offset, or local in the
//! export's zone), exact amounts, enum names in any case.

use chrono::{DateTime, LocalResult, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use pbjson_types::Timestamp;

use crate::proto::pb::{self};

pub(super) const BOOLEANS: &[(&str, bool)] = &[
    ("true", true),
    ("yes", true),
    ("1", true),
    ("false", false),
    ("no", false),
    ("0", false),
];
pub(super) const CHANNELS: &[(&str, pb::Channel)] = &[
    ("call", pb::Channel::Call),
    ("email", pb::Channel::Email),
    ("meeting", pb::Channel::Meeting),
    ("message", pb::Channel::Message),
    ("demo", pb::Channel::Demo),
];
// HubSpot's stage ids for closed deals are `closedwon`/`closedlost`,
// Salesforce's standard stage names `Closed Won`/`Closed Lost`.
pub(super) const STAGES: &[(&str, pb::DealStage)] = &[
    ("open", pb::DealStage::Open),
    ("won", pb::DealStage::Won),
    ("lost", pb::DealStage::Lost),
    ("closed won", pb::DealStage::Won),
    ("closedwon", pb::DealStage::Won),
    ("closed lost", pb::DealStage::Lost),
    ("closedlost", pb::DealStage::Lost),
];
pub(super) const KINDS: &[(&str, pb::FeedbackKind)] = &[
    ("nps", pb::FeedbackKind::Nps),
    ("csat", pb::FeedbackKind::Csat),
];
pub(super) const RECORD_TYPES: &[(&str, pb::RecordType)] = &[
    ("customer", pb::RecordType::Customer),
    ("interaction", pb::RecordType::Interaction),
    ("deal", pb::RecordType::Deal),
    ("feedback", pb::RecordType::Feedback),
    ("customer_request", pb::RecordType::CustomerRequest),
];

/// The proto enum prefixes: `CHANNEL_CALL` is accepted as `call`.
pub(super) const ENUM_PREFIXES: [&str; 4] =
    ["channel ", "deal stage ", "feedback kind ", "record type "];

/// A name from `choices`, any case, `_` and space alike; the proto enum
/// value names (`CHANNEL_CALL`) are accepted too.
pub(super) fn parse_choice<T: Copy>(text: &str, choices: &[(&str, T)]) -> Result<T, String> {
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
    use crate::proto::timestamp;

    fn at(rfc3339: &str) -> Timestamp {
        let at = DateTime::parse_from_rfc3339(rfc3339);
        timestamp(at.unwrap_or_else(|e| panic!("{rfc3339}: {e}")).to_utc())
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
}
