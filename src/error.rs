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

/// An error and its causes as one line (`a: b: c`, as `{:#}` prints them),
/// each cause once: a cause whose message the line already ends with (as
/// its last part, after a `: `) is skipped. Errors of other crates often hold their cause in their message
/// and link it as their `source()` as well (tonic's connect error read
/// "tcp connect error: tcp connect error: Connection refused").
pub fn chain_text(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line == text || line.ends_with(&format!(": {text}")) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error whose message holds its cause, which it also links.
    #[derive(Debug)]
    struct Holds(std::io::Error);

    impl std::fmt::Display for Holds {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "tcp connect error: {}", self.0)
        }
    }

    impl std::error::Error for Holds {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_chain_names_each_cause_once() {
        let refused = || std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let error = anyhow::Error::new(Holds(refused())).context("cannot connect");
        assert_eq!(
            format!("{error:#}"),
            "cannot connect: tcp connect error: refused: refused"
        );
        assert_eq!(
            chain_text(&error),
            "cannot connect: tcp connect error: refused"
        );
        // Causes that differ all stay, in order.
        let error = anyhow::Error::new(refused())
            .context("reading x")
            .context("import");
        assert_eq!(chain_text(&error), "import: reading x: refused");
        // A cause that merely ends the words before it stays.
        let error = anyhow::Error::new(refused()).context("the request was refused");
        assert_eq!(chain_text(&error), "the request was refused: refused");
    }
}
