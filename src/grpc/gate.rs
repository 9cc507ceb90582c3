//! Authentication at the door: a call to the API whose key does not
//! authenticate (missing, unknown, revoked) is answered UNAUTHENTICATED
//! from its headers alone, before any of its body is received, decoded or
//! counted against the request byte budget; an anonymous caller cannot hold
//! the budget that callers with keys need. Whether the key's roles allow the
//! call is checked by the handler (`FeedbackApi::enter`), which knows what
//! the call needs; it authenticates again (a hash and a lookup).
//! Health and reflection need no key.

use std::sync::Arc;
use std::task::{Context, Poll};

use super::pb;
use crate::auth::Authenticator;

/// Tower layer that authenticates calls to the API before their body.
#[derive(Clone)]
pub struct AuthGateLayer {
    auth: Arc<Authenticator>,
}

impl AuthGateLayer {
    pub fn new(auth: Arc<Authenticator>) -> Self {
        AuthGateLayer { auth }
    }
}

impl<S> tower_layer::Layer<S> for AuthGateLayer {
    type Service = AuthGate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthGate {
            inner,
            auth: self.auth.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AuthGate<S> {
    inner: S,
    auth: Arc<Authenticator>,
}

use super::BoxFuture;

/// Whether `path` names a method of the API (`/verbatim.v1.FeedbackService/...`).
fn is_api(path: &str) -> bool {
    use tonic::server::NamedService;
    let service = <pb::feedback_service_server::FeedbackServiceServer<super::FeedbackApi> as NamedService>::NAME;
    path.strip_prefix('/')
        .and_then(|rest| rest.strip_prefix(service))
        .is_some_and(|rest| rest.starts_with('/'))
}

impl<S, B, ResBody> tower_service::Service<http::Request<B>> for AuthGate<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<ResBody>> + Clone,
    S::Future: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // The service made ready by `poll_ready` is taken (and dropped
        // unused when the call is refused, releasing whatever it reserved);
        // a clone waits for the next `poll_ready`.
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        if is_api(request.uri().path()) {
            let header = request
                .headers()
                .get("authorization")
                .map(|value| value.to_str().unwrap_or(""));
            if let Err(error) = self.auth.authenticate(header) {
                let status = tonic::Status::from(crate::error::Error::from(error));
                return Box::pin(async move { Ok(status.into_http()) });
            }
        }
        Box::pin(inner.call(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_api_is_gated() {
        assert!(is_api("/verbatim.v1.FeedbackService/Search"));
        assert!(is_api("/verbatim.v1.FeedbackService/IngestStream"));
        assert!(!is_api("/grpc.health.v1.Health/Check"));
        assert!(!is_api(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
        ));
        assert!(!is_api("/verbatim.v1.FeedbackServiceX/Search"));
        assert!(!is_api("/verbatim.v1.FeedbackService"));
    }
}
