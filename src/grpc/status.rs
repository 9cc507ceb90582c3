//! The one place where errors become gRPC statuses. Every variant is listed:
//! client faults are INVALID_ARGUMENT / NOT_FOUND, overload is
//! RESOURCE_EXHAUSTED, a passed deadline DEADLINE_EXCEEDED, and internal faults are logged with their cause and
//! answered INTERNAL without internals.

use tonic::Status;

use crate::auth::AuthError;
use crate::error::Error;
use crate::index::IndexError;
use crate::nlp::NlpError;
use crate::store::StoreError;

impl From<Error> for Status {
    fn from(error: Error) -> Status {
        bounded(status(error))
    }
}

/// Bytes of a status message at most. The message travels percent-encoded
/// in the `grpc-message` header, and grpc-core clients drop a call whose
/// headers pass 16 KiB ("metadata size exceeds hard limit"): the code a
/// client reads must not depend on how much of its input an error names
/// back. Client text is cut short where it is named (`domain::shown`);
/// this is the net under every message.
const MAX_MESSAGE_BYTES: usize = 1_024;

/// `status` with a message past `MAX_MESSAGE_BYTES` cut in the middle: its
/// start (the field) and end (the reason) are kept. Rebuilt from its code
/// and message: no status made here carries details or metadata.
fn bounded(status: Status) -> Status {
    let message = status.message();
    if message.len() <= MAX_MESSAGE_BYTES {
        return status;
    }
    let mut head = MAX_MESSAGE_BYTES / 2;
    while !message.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = message.len() - MAX_MESSAGE_BYTES / 4;
    while !message.is_char_boundary(tail) {
        tail += 1;
    }
    Status::new(
        status.code(),
        format!("{} … {}", &message[..head], &message[tail..]),
    )
}

fn status(error: Error) -> Status {
    match error {
        Error::Store(e) => store_status(e),
        Error::Index(e) => index_status(e),
        Error::Nlp(e) => nlp_status(e),
        Error::InvalidArgument { field, reason } => {
            Status::invalid_argument(format!("{field}: {reason}"))
        }
        Error::NotFound(what) => Status::not_found(format!("{what} not found")),
        Error::FailedPrecondition(why) => Status::failed_precondition(why),
        Error::DeadlineExceeded => {
            Status::deadline_exceeded("the deadline passed before the work started")
        }
        Error::Task(cause) => internal(&cause),
        Error::Busy(why) => Status::resource_exhausted(why),
        Error::Auth(e) => auth_status(e),
        Error::TenantUnavailable(why) => Status::unavailable(why),
    }
}

fn auth_status(error: AuthError) -> Status {
    match error {
        e @ (AuthError::MissingToken
        | AuthError::NotBearer
        | AuthError::UnknownKey
        | AuthError::Revoked(_)) => Status::unauthenticated(e.to_string()),
        e @ AuthError::PermissionDenied { .. } => Status::permission_denied(e.to_string()),
        e @ AuthError::KeysFile(_) => internal(&e),
    }
}

fn store_status(error: StoreError) -> Status {
    match error {
        StoreError::QueueFull { capacity } => Status::resource_exhausted(format!(
            "the write queue is full ({capacity} requests waiting); retry with backoff"
        )),
        StoreError::Closed => Status::unavailable("the server is shutting down"),
        StoreError::Unavailable(reason) => Status::unavailable(format!(
            "storage unavailable: {reason}; the call changed nothing, retry with backoff"
        )),
        // A read that met the storage failing (the store re-opens by itself).
        e @ StoreError::Database(_) if e.is_storage_failure() => {
            tracing::warn!(error = %e, "storage error on a read");
            Status::unavailable(format!(
                "storage unavailable: {e}; the call changed nothing, retry with backoff"
            ))
        }
        e @ (StoreError::Database(_)
        | StoreError::Open { .. }
        | StoreError::InUse { .. }
        | StoreError::Decode { .. }
        | StoreError::Malformed { .. }
        | StoreError::Encode(_)
        | StoreError::WriteFailed(_)) => internal(&e),
    }
}

fn index_status(error: IndexError) -> Status {
    match error {
        IndexError::InvalidQuery { position, message } => Status::invalid_argument(format!(
            "query: malformed query at byte {position}: {message}"
        )),
        IndexError::InvalidCursor(reason) => Status::invalid_argument(format!("cursor: {reason}")),
        e @ IndexError::InvalidFacet(_) => Status::invalid_argument(format!("facets: {e}")),
        IndexError::InvalidSegment(reason) => {
            Status::invalid_argument(format!("segment: {reason}"))
        }
        IndexError::Store(e) => store_status(e),
        e @ IndexError::CatchingUp { .. } => Status::unavailable(e.to_string()),
        e @ (IndexError::Tantivy(_)
        | IndexError::Io { .. }
        | IndexError::CountMismatch { .. }
        | IndexError::StoreMissing { .. }
        | IndexError::Vectors(_)) => internal(&e),
    }
}

fn nlp_status(error: NlpError) -> Status {
    match error {
        NlpError::InvalidText { field, reason } => {
            Status::invalid_argument(format!("{field}: {reason}"))
        }
        e @ NlpError::Overloaded { .. } => {
            Status::resource_exhausted(format!("{e}; retry with backoff"))
        }
        e @ NlpError::Disabled => Status::failed_precondition(e.to_string()),
        NlpError::Closed => Status::unavailable("the server is shutting down"),
        e @ (NlpError::ModelMissing { .. }
        | NlpError::ModelCorrupt { .. }
        | NlpError::Load { .. }
        | NlpError::Inference(_)) => internal(&e),
    }
}

fn internal(cause: &dyn std::fmt::Display) -> Status {
    tracing::error!(%cause, "internal error");
    Status::internal("internal error; the server log has the cause")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message naming 20,000 bytes of client text is cut in the middle,
    /// on character boundaries, keeping the field and the reason.
    #[test]
    fn long_messages_keep_their_field_and_reason() {
        let status = Status::from(Error::InvalidArgument {
            field: format!("filter.attributes.{}", "é".repeat(10_000)),
            reason: "key must be 1 to 64 bytes of [a-z0-9_]".into(),
        });
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        let message = status.message();
        assert!(message.len() <= MAX_MESSAGE_BYTES + 8, "{}", message.len());
        assert!(message.starts_with("filter.attributes.éé"), "{message}");
        assert!(message.ends_with("bytes of [a-z0-9_]"), "{message}");
        assert!(message.contains(" … "), "{message}");
        let short = Status::from(Error::InvalidArgument {
            field: "segment".into(),
            reason: "unknown".into(),
        });
        assert_eq!(short.message(), "segment: unknown");
    }
}
