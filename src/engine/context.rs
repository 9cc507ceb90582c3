//! Who asks, and until when: the first argument of every engine operation.

use std::time::Instant;

use crate::error::{Error, Result};

/// Who is calling: anonymous (`--auth off`, internal work) or an API key
/// (by id). The tenant is not here: each tenant has its own `Engine`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    Anonymous,
    Key(String),
}

/// The context of one request, built by the transport (`grpc`) from the
/// request, or by internal callers with `RequestContext::internal()`.
#[derive(Clone, Debug)]
pub struct RequestContext {
    pub caller: Caller,
    /// When the caller stops waiting (gRPC `grpc-timeout`); `None`: never.
    pub deadline: Option<Instant>,
}

impl RequestContext {
    /// The context of work the server does on its own behalf (startup,
    /// offline commands): no deadline.
    pub fn internal() -> Self {
        RequestContext {
            caller: Caller::Anonymous,
            deadline: None,
        }
    }

    /// `DeadlineExceeded` once the deadline has passed: checked before
    /// blocking work starts, so nobody's abandoned request occupies the
    /// blocking pool, the inference thread or the write queue.
    pub fn check_deadline(&self) -> Result<()> {
        match self.deadline {
            Some(deadline) if Instant::now() >= deadline => Err(Error::DeadlineExceeded),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn deadline_is_checked() {
        assert!(RequestContext::internal().check_deadline().is_ok());
        let later = RequestContext {
            deadline: Some(Instant::now() + Duration::from_secs(60)),
            ..RequestContext::internal()
        };
        assert!(later.check_deadline().is_ok());
        let passed = RequestContext {
            deadline: Some(Instant::now()),
            ..RequestContext::internal()
        };
        assert!(matches!(
            passed.check_deadline(),
            Err(Error::DeadlineExceeded)
        ));
    }
}
