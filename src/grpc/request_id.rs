//! A request id per call: the client's `x-request-id` (1 to 128 printable
//! ASCII characters but the brackets, braces, quote and backslash the text
//! log writes spans with) or a new ULID. Every log line of the call carries it
//! (a `request` span around the handler, whose RPC span is its child) and
//! the response returns it in the same header (initial metadata, on errors
//! too), so a client can quote it and an operator can find the call's logs.

use std::task::{Context, Poll};

use http::HeaderValue;
use tracing::Instrument;

pub const HEADER: &str = "x-request-id";
const MAX_LEN: usize = 128;

/// Tower layer that gives every request an id.
#[derive(Clone, Copy, Default)]
pub struct RequestIdLayer;

impl<S> tower_layer::Layer<S> for RequestIdLayer {
    type Service = RequestId<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestId { inner }
    }
}

#[derive(Clone)]
pub struct RequestId<S> {
    inner: S,
}

/// The client's id when it is usable as a header value and a log field.
/// Found by probing: the text log writes the id as it is inside
/// `request{id=...}`, so an id spelling `x}:DeleteCustomer{tenant="acme"}`
/// made a line read as another tenant's call; the characters that shape a
/// span are refused (a new id is used instead).
fn client_id(value: &HeaderValue) -> Option<&str> {
    let id = value.to_str().ok()?;
    let usable = !id.is_empty()
        && id.len() <= MAX_LEN
        && id.bytes().all(|b| {
            b.is_ascii_graphic() && !matches!(b, b'{' | b'}' | b'[' | b']' | b'"' | b'\\')
        });
    usable.then_some(id)
}

use super::BoxFuture;

/// The call's deadline: its `grpc-timeout` counted from the arrival of its
/// headers, read once here (`request_context` takes it).
#[derive(Clone, Copy, Debug)]
pub(super) struct Deadline(pub(super) Option<std::time::Instant>);

/// How much sooner than tonic's own `grpc-timeout` timer this layer ends a
/// call whose deadline passed. Found by probing: tonic answers a passed
/// deadline CANCELLED "Timeout expired" (which clients read as "the client
/// went away" and do not retry), not DEADLINE_EXCEEDED. Its timer starts
/// just after this layer's call (it calls inside first) and polls the call
/// before its timer, so a timer tick sooner is enough.
const BEFORE_TONIC: std::time::Duration = std::time::Duration::from_millis(1);

impl<S, B, ResBody> tower_service::Service<http::Request<B>> for RequestId<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let id = request
            .headers()
            .get(HEADER)
            .and_then(client_id)
            .map(str::to_string)
            .unwrap_or_else(|| ulid::Ulid::new().to_string());
        let value = HeaderValue::from_str(&id).expect("checked printable ASCII");
        request.headers_mut().insert(HEADER, value.clone());
        // The call's deadline counts from here, as tonic's own timeout does
        // (it starts when the headers arrive, not after the body is read).
        let arrived = std::time::Instant::now();
        let timeout = request
            .headers()
            .get("grpc-timeout")
            .and_then(|value| value.to_str().ok())
            .and_then(super::context::parse_grpc_timeout);
        request
            .extensions_mut()
            .insert(Deadline(timeout.and_then(|t| arrived.checked_add(t))));
        let deadline =
            timeout.and_then(|timeout| arrived.checked_add(timeout.saturating_sub(BEFORE_TONIC)));
        let span = tracing::info_span!("request", id = %id, path = %request.uri().path());
        let response = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        Box::pin(
            async move {
                // As tonic's timer: until the response's headers (a stream's
                // messages come after).
                let mut response = match deadline {
                    Some(deadline) => {
                        match tokio::time::timeout_at(deadline.into(), response).await {
                            Ok(response) => response?,
                            Err(_) => tonic::Status::deadline_exceeded(
                                "the call's deadline (grpc-timeout) passed before it was answered",
                            )
                            .into_http(),
                        }
                    }
                    None => response.await?,
                };
                response.headers_mut().insert(HEADER, value);
                Ok(response)
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::client_id;
    use http::HeaderValue;

    #[test]
    fn only_printable_bounded_client_ids_are_kept() {
        let ok = HeaderValue::from_static("batch-7/run-42");
        assert_eq!(client_id(&ok), Some("batch-7/run-42"));
        for bad in [
            "",
            "has space",
            &"x".repeat(129),
            "x}:DeleteCustomer{tenant=\"acme\"}",
            "a[b]",
            "back\\slash",
        ] {
            assert_eq!(
                client_id(&HeaderValue::from_str(bad).unwrap()),
                None,
                "{bad:?}"
            );
        }
    }
}
