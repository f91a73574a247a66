//! The one place where the crate's `Error` becomes a `tonic::Status`.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

use crate::{Error, error::RecordViolation};

/// `ErrorInfo.domain` of every error this service sends.
pub const ERROR_DOMAIN: &str = "kpi-service";

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        let (code, reason, message, mut details, metadata) = parts(&err);
        details.set_error_info(reason, ERROR_DOMAIN, metadata);
        Status::with_error_details(code, message, details)
    }
}

/// The path of a record's field in a `RecordActivities` request.
pub fn record_path(v: &RecordViolation) -> String {
    let mut path = format!("records[{}]", v.index);
    if let Some(kind) = v.kind {
        path.push('.');
        path.push_str(kind);
    }
    if !v.field.is_empty() {
        path.push('.');
        path.push_str(v.field);
    }
    path
}

/// INVALID_ARGUMENT with a `BadRequest` of every violation; the message
/// says "invalid FIELD: WHY" for one, the count and the first ten fields
/// for more.
fn bad_request(
    details: &mut ErrorDetails,
    violations: Vec<FieldViolation>,
) -> (Code, String, String) {
    let message = match violations.as_slice() {
        [only] => format!("invalid {}: {}", only.field, only.description),
        many => {
            let mut fields: Vec<&str> = many.iter().map(|v| v.field.as_str()).collect();
            let more = fields.len().saturating_sub(10);
            fields.truncate(10);
            let suffix = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            format!(
                "{} invalid fields: {}{suffix}",
                many.len(),
                fields.join(", ")
            )
        }
    };
    details.set_bad_request(violations);
    (Code::InvalidArgument, "INVALID_FIELDS".to_owned(), message)
}

/// Code, ErrorInfo reason, message, other details and ErrorInfo metadata.
fn parts(err: &Error) -> (Code, String, String, ErrorDetails, HashMap<String, String>) {
    let mut details = ErrorDetails::new();
    let mut metadata = HashMap::new();
    let (code, reason, message) = match err {
        Error::InvalidArgument(violations) => bad_request(
            &mut details,
            violations
                .iter()
                .map(|v| FieldViolation::new(&v.field, &v.description))
                .collect(),
        ),
        Error::InvalidRecords(violations) => bad_request(
            &mut details,
            violations
                .iter()
                .map(|v| FieldViolation::new(record_path(v), &v.problem))
                .collect(),
        ),
        Error::NotFound { kind, id } => {
            details.set_resource_info(*kind, id, "", format!("no {kind} has this id"));
            (
                Code::NotFound,
                format!("{}_NOT_FOUND", kind.to_uppercase()),
                err.to_string(),
            )
        }
        Error::AlreadyExists { kind, id } => {
            details.set_resource_info(*kind, id, "", format!("a {kind} with this id exists"));
            (
                Code::AlreadyExists,
                format!("{}_ALREADY_EXISTS", kind.to_uppercase()),
                err.to_string(),
            )
        }
        Error::Unauthenticated(message) => (
            Code::Unauthenticated,
            "API_KEY_INVALID".to_owned(),
            message.clone(),
        ),
        Error::PermissionDenied(message) => (
            Code::PermissionDenied,
            "PERMISSION_DENIED".to_owned(),
            message.clone(),
        ),
        Error::FailedPrecondition { reason, message } => (
            Code::FailedPrecondition,
            (*reason).to_owned(),
            message.clone(),
        ),
        Error::StreamInterrupted {
            committed_batches,
            committed,
            cause,
        } => {
            let (code, reason, message, inner_details, inner_metadata) = parts(cause);
            details = inner_details;
            metadata = inner_metadata;
            metadata.insert(
                "committed_batches".to_owned(),
                committed_batches.to_string(),
            );
            for &(name, count) in committed {
                metadata.insert(name.to_owned(), count.to_string());
            }
            let reason = if code == Code::InvalidArgument {
                "BATCH_REJECTED".to_owned()
            } else {
                reason
            };
            (
                code,
                reason,
                format!(
                    "batch {} of the stream failed, {committed_batches} committed before it: {message}",
                    committed_batches + 1
                ),
            )
        }
        Error::Timeout(cause) => {
            tracing::warn!(error = format!("{cause:#}"), "database statement timed out");
            (
                Code::DeadlineExceeded,
                "DATABASE_TIMEOUT".to_owned(),
                err.to_string(),
            )
        }
        Error::Unavailable(cause) => {
            tracing::warn!(error = format!("{cause:#}"), "database unavailable");
            details.set_retry_info(Some(std::time::Duration::from_secs(1)));
            (
                Code::Unavailable,
                "DATABASE_UNAVAILABLE".to_owned(),
                err.to_string(),
            )
        }
        Error::ShuttingDown => {
            details.set_retry_info(Some(std::time::Duration::from_secs(1)));
            (
                Code::Unavailable,
                "SHUTTING_DOWN".to_owned(),
                err.to_string(),
            )
        }
        Error::Busy { reason, message } => {
            details.set_retry_info(Some(std::time::Duration::from_secs(1)));
            (
                Code::ResourceExhausted,
                (*reason).to_owned(),
                message.clone(),
            )
        }
        Error::Deadline(_) => {
            tracing::warn!("call deadline passed");
            details.set_retry_info(Some(std::time::Duration::from_secs(1)));
            (
                Code::DeadlineExceeded,
                "CALL_DEADLINE".to_owned(),
                err.to_string(),
            )
        }
        Error::Aborted(cause) => {
            tracing::warn!(
                error = format!("{cause:#}"),
                "transaction aborted by concurrency"
            );
            details.set_retry_info(Some(std::time::Duration::from_millis(100)));
            (
                Code::Aborted,
                "CONCURRENT_CONFLICT".to_owned(),
                err.to_string(),
            )
        }
        Error::Internal(cause) => {
            tracing::error!(error = format!("{cause:#}"), "internal error");
            (Code::Internal, "INTERNAL".to_owned(), err.to_string())
        }
    };
    (code, reason, message, details, metadata)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::FieldViolation as Violation;

    #[test]
    fn record_violations_become_request_paths_here_only() {
        let status = Status::from(Error::InvalidRecords(vec![
            RecordViolation::new(17, "deal", "closed_at", "is required for a WON deal"),
            RecordViolation::new(3, "deal", "amount.currency_code", "must be USD"),
            RecordViolation {
                index: 4,
                kind: None,
                field: "",
                problem: "must hold one record".into(),
            },
        ]));
        assert_eq!(status.code(), Code::InvalidArgument);
        let fields: Vec<String> = status
            .get_error_details()
            .bad_request()
            .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
            .unwrap_or_default();
        assert_eq!(
            fields,
            [
                "records[17].deal.closed_at",
                "records[3].deal.amount.currency_code",
                "records[4]"
            ]
        );
    }

    #[test]
    fn invalid_arguments_list_every_field() {
        let status = Status::from(Error::InvalidArgument(vec![
            Violation::new("a", "bad"),
            Violation::new("b.c", "worse"),
        ]));
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let fields: Vec<_> = details
            .bad_request()
            .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
            .unwrap_or_default();
        assert_eq!(fields, ["a", "b.c"]);
        assert_eq!(
            details.error_info().map(|i| i.reason.as_str()),
            Some("INVALID_FIELDS")
        );
    }

    #[test]
    fn internal_errors_never_carry_their_cause() {
        let status = Status::from(Error::internal(anyhow::anyhow!(
            "relation \"secret_table\" does not exist"
        )));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("secret_table"));
        assert_eq!(status.message(), "internal error");
    }

    #[test]
    fn exhausted_retries_are_aborted_with_retry_info_and_no_cause() {
        let status = Status::from(Error::Aborted(anyhow::anyhow!(
            "duplicate key value violates unique constraint \"interactions_pkey\""
        )));
        assert_eq!(status.code(), Code::Aborted);
        assert!(!status.message().contains("interactions_pkey"));
        let details = status.get_error_details();
        assert!(details.retry_info().is_some());
        assert_eq!(
            details.error_info().map(|i| i.reason.as_str()),
            Some("CONCURRENT_CONFLICT")
        );
    }
}
