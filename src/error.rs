//! The one error type at the service boundary. Each variant says which gRPC
//! code it becomes; the mapping itself lives in `grpc::status`. A leaf:
//! the violations it carries are defined here, the domain builds them.

/// One problem with one field of a request, named by its path in the request
/// (`team.parent_team_id`, `records[17].deal.closed_at`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// One problem with one field of one record of a batch: the record's
/// index in the batch, its kind (`deal`), the field (`closed_at`,
/// `amount.currency_code`) and what is wrong. A transport turns it into
/// its own path (`records[17].deal.closed_at` in gRPC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordViolation {
    pub index: usize,
    /// `None`: the record holds no record of any kind.
    pub kind: Option<&'static str>,
    /// Empty: the record as a whole.
    pub field: &'static str,
    pub problem: String,
}

impl RecordViolation {
    pub fn new(
        index: usize,
        kind: &'static str,
        field: &'static str,
        problem: impl Into<String>,
    ) -> Self {
        Self {
            index,
            kind: Some(kind),
            field,
            problem: problem.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// INVALID_ARGUMENT, with one `BadRequest` listing every violation.
    #[error("invalid request: {} field violation(s)", .0.len())]
    InvalidArgument(Vec<FieldViolation>),

    /// INVALID_ARGUMENT for the records of a batch: one `BadRequest` whose
    /// field paths the transport builds from each record's index and kind
    /// (`records[17].deal.closed_at`), in request order.
    #[error("invalid batch: {} record violation(s)", .0.len())]
    InvalidRecords(Vec<RecordViolation>),

    /// NOT_FOUND, with a `ResourceInfo` naming the resource.
    #[error("{kind} '{id}' not found")]
    NotFound { kind: &'static str, id: String },

    /// ALREADY_EXISTS.
    #[error("{kind} '{id}' already exists")]
    AlreadyExists { kind: &'static str, id: String },

    /// UNAUTHENTICATED: no key, or an unknown or revoked one.
    #[error("{0}")]
    Unauthenticated(String),

    /// PERMISSION_DENIED: a valid key without the role or the team scope.
    #[error("{0}")]
    PermissionDenied(String),

    /// FAILED_PRECONDITION: the request is well-formed but the system is not
    /// in a state that allows it. `reason` is an UPPER_SNAKE ErrorInfo reason.
    #[error("{message}")]
    FailedPrecondition {
        reason: &'static str,
        message: String,
    },

    /// A client stream stopped at a failing batch: the cause's code, with
    /// `committed_batches` and their counts by outcome (`inserted`,
    /// `updated`, ...: `domain::activity::Counts::by_outcome`) in
    /// the ErrorInfo metadata (and, for invalid batches, the reason
    /// BATCH_REJECTED) so the caller can resume and still add up.
    #[error("batch {committed_batches} failed: {cause}")]
    StreamInterrupted {
        committed_batches: u64,
        committed: Vec<(&'static str, u64)>,
        cause: Box<Error>,
    },

    /// DEADLINE_EXCEEDED: the database gave up on a statement
    /// (statement_timeout). The cause is logged, never sent.
    #[error("the database did not answer in time")]
    Timeout(#[source] anyhow::Error),

    /// UNAVAILABLE, reason SHUTTING_DOWN: the service is stopping; another
    /// instance (or this one after its restart) will take the call.
    #[error("the service is shutting down; retry (on another instance)")]
    ShuttingDown,

    /// RESOURCE_EXHAUSTED with retry info: as many heavy calls
    /// (TOO_MANY_HEAVY_CALLS) or watches (TOO_MANY_WATCHES) as the process
    /// allows are running.
    #[error("{message}")]
    Busy {
        reason: &'static str,
        message: String,
    },

    /// DEADLINE_EXCEEDED, reason CALL_DEADLINE: the call (or one batch of
    /// a stream) ran longer than the server's `--call-timeout`.
    #[error("the call did not finish within the server's deadline of {0:?} (--call-timeout)")]
    Deadline(std::time::Duration),

    /// UNAVAILABLE: the database cannot be reached or no connection was free
    /// in time; retrying later may succeed. The cause is logged, never sent.
    #[error("the database is unavailable")]
    Unavailable(#[source] anyhow::Error),

    /// ABORTED: the transaction kept colliding with concurrent ones
    /// (deadlock, serialization failure, the same new ids) after every
    /// retry; the whole call may be retried. The cause is logged.
    #[error("the request conflicted with concurrent requests; retry it")]
    Aborted(#[source] anyhow::Error),

    /// INTERNAL: a bug or an unexpected database error. The cause is logged,
    /// never sent.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl Error {
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![FieldViolation::new(field, description)])
    }

    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        Self::Internal(cause.into())
    }
}

impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Self {
        // SQLSTATE classes that mean "not now" rather than "never":
        // 08 connection exception, 57P01-03 shutdown / cannot connect now,
        // 53 insufficient resources.
        let transient_state = |code: &str| {
            code.starts_with("08") || code.starts_with("53") || code.starts_with("57P")
        };
        match &err {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => Self::Unavailable(err.into()),
            sqlx::Error::Database(db) => match db.code().as_deref() {
                Some("57014") => Self::Timeout(err.into()),
                Some("40P01" | "40001") => Self::Aborted(err.into()),
                Some(code) if transient_state(code) => Self::Unavailable(err.into()),
                _ => Self::Internal(err.into()),
            },
            _ => Self::Internal(err.into()),
        }
    }
}
