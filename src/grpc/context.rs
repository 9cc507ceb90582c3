//! The engine's `RequestContext` from a gRPC request: the caller (anonymous
//! until API keys arrive) and the deadline from the `grpc-timeout` header.

use std::time::{Duration, Instant};

use tonic::metadata::MetadataMap;
use tonic::Request;

use crate::engine::{Caller, RequestContext};

/// The context of one call, read from its metadata (take it before
/// `into_inner`). A malformed `grpc-timeout` is ignored, as tonic does.
pub(super) fn request_context<T>(request: &Request<T>) -> RequestContext {
    // From the headers' arrival (a unary body may take a while to come), as
    // the transport's layer stamped it; without the layer, from now.
    let deadline = match request.extensions().get::<super::request_id::Deadline>() {
        Some(stamped) => stamped.0,
        None => deadline(request.metadata(), Instant::now()),
    };
    RequestContext {
        caller: Caller::Anonymous,
        deadline,
    }
}

fn deadline(metadata: &MetadataMap, from: Instant) -> Option<Instant> {
    let timeout = metadata.get("grpc-timeout")?.to_str().ok()?;
    from.checked_add(parse_grpc_timeout(timeout)?)
}

/// `grpc-timeout`: 1 to 8 ASCII digits and a unit, H (hours), M (minutes),
/// S (seconds), m (milliseconds), u (microseconds) or n (nanoseconds).
pub(super) fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let digits = value.get(..value.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match value.as_bytes()[value.len() - 1] {
        b'H' => Duration::from_secs(amount * 3600),
        b'M' => Duration::from_secs(amount * 60),
        b'S' => Duration::from_secs(amount),
        b'm' => Duration::from_millis(amount),
        b'u' => Duration::from_micros(amount),
        b'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units() {
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(
            parse_grpc_timeout("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        for bad in ["", "S", "5", "5s", "123456789S", "-5S", "5 S", "1.5S", "5é"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn context_from_request() {
        let mut request = Request::new(());
        assert_eq!(request_context(&request).deadline, None);
        request.set_timeout(Duration::from_secs(30));
        let deadline = request_context(&request).deadline.expect("a deadline");
        assert!(deadline > Instant::now() + Duration::from_secs(29));
        let mut request = Request::new(());
        request
            .metadata_mut()
            .insert("grpc-timeout", "soon".parse().unwrap());
        assert_eq!(request_context(&request).deadline, None);
    }
}
