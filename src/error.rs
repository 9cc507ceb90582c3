//! The crate's error type: one variant per module error. It becomes a gRPC
//! `Status` in exactly one place (`grpc::status`).

use crate::index::IndexError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Nlp(#[from] crate::nlp::NlpError),
    /// A request that breaks a documented limit or rule, with the field path.
    #[error("{field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    #[error("{0} not found")]
    NotFound(String),
    /// The request is valid but the current state refuses it (for example
    /// deleting a theme that has sub-themes without `cascade`).
    #[error("{0}")]
    FailedPrecondition(String),
    /// A bounded pool is full; the caller should retry with backoff.
    #[error("{0}")]
    Busy(String),
    /// The caller's deadline passed before the work started.
    #[error("deadline exceeded before the work started")]
    DeadlineExceeded,
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    /// A tenant's data cannot be opened (disk, permissions).
    #[error("{0}")]
    TenantUnavailable(String),
    /// A blocking task died (panic) or the runtime is shutting down.
    #[error("background task failed: {0}")]
    Task(String),
}

impl Error {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
