//! RPC metrics: a tower layer in front of every service that counts each
//! call by method, tenant and gRPC status code, times it and keeps the
//! in-flight gauge (`crate::metrics`).
//!
//! - **Method label**: the method name for the API (`Search`,
//!   `IngestStream`), `service/Method` for the other services we serve
//!   (`grpc.health.v1.Health/Check`, the reflection streams), read from the
//!   services' descriptors; any other path is `unknown` (tonic answers it
//!   UNIMPLEMENTED), so a client cannot mint label values.
//! - **Code**: the `grpc-status` of the response head when tonic answers
//!   "trailers-only" (errors returned by a handler, unknown methods), else
//!   the one in the trailers as they pass; a response body dropped before
//!   its trailers (the client went away) counts as `CANCELLED`.
//! - **Duration**: from the request head until the call ends, i.e. until
//!   the trailers are handed to the transport (a stream is timed whole,
//!   `IngestStream` until its last ack), or the trailers-only head.
//! - **Tenant**: every request carries an `Arc<TenantSlot>` in its
//!   extensions (`request.extensions().get::<Arc<TenantSlot>>()` in a
//!   handler); whoever authenticates the caller fills it, and the call is
//!   labelled with its value when it ends, `-` when nobody did.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, LazyLock, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use http::HeaderMap;
use http_body::Frame;
use prost::Message as _;

use crate::metrics::GaugeGuard;

/// The method label of paths that no service serves.
const UNKNOWN_METHOD: &str = "unknown";
/// The tenant label of calls whose slot nobody filled.
const NO_TENANT: &str = "-";
const API_SERVICE: &str = "verbatim.v1.FeedbackService";

/// The tenant of a call, set once (after authentication) by the handler;
/// the metrics layer reads it when the call ends.
#[derive(Debug, Default)]
pub struct TenantSlot(OnceLock<String>);

impl TenantSlot {
    /// Records the call's tenant; the first value set stays.
    pub fn set(&self, tenant: &str) {
        let _ = self.0.set(tenant.to_owned());
    }

    pub fn get(&self) -> Option<&str> {
        self.0.get().map(String::as_str)
    }
}

/// Path (`/package.Service/Method`) → method label, for every method of the
/// services the router serves.
static METHODS: LazyLock<HashMap<String, String>> = LazyLock::new(|| {
    let sets = [
        super::pb::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ];
    let mut methods = HashMap::new();
    for set in sets {
        let set = prost_types::FileDescriptorSet::decode(set).expect("compiled-in descriptors");
        for file in set.file {
            let package = file.package();
            for service in &file.service {
                let service_name = if package.is_empty() {
                    service.name().to_owned()
                } else {
                    format!("{package}.{}", service.name())
                };
                for method in &service.method {
                    let label = if service_name == API_SERVICE {
                        method.name().to_owned()
                    } else {
                        format!("{service_name}/{}", method.name())
                    };
                    methods.insert(format!("/{service_name}/{}", method.name()), label);
                }
            }
        }
    }
    methods
});

fn method_label(path: &str) -> &'static str {
    METHODS.get(path).map_or(UNKNOWN_METHOD, String::as_str)
}

/// gRPC status code names by number (grpc/doc/statuscodes.md).
const CODE_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The code name of a `grpc-status` header, if the map has one.
fn status_code(headers: &HeaderMap) -> Option<&'static str> {
    let value = headers.get("grpc-status")?;
    let code = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .and_then(|n| CODE_NAMES.get(n).copied());
    Some(code.unwrap_or("UNKNOWN"))
}

/// One call being measured; records itself when dropped.
struct Call {
    method: &'static str,
    tenant: Arc<TenantSlot>,
    started: Instant,
    code: Option<&'static str>,
    _in_flight: GaugeGuard,
}

impl Call {
    fn start(method: &'static str, tenant: Arc<TenantSlot>) -> Self {
        Call {
            method,
            tenant,
            started: Instant::now(),
            code: None,
            _in_flight: crate::metrics::rpc_in_flight(method).track(),
        }
    }

    /// Ends the call with `code` (recorded as it drops).
    fn end(mut self, code: &'static str) {
        self.code = Some(code);
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        crate::metrics::record_rpc(
            self.method,
            self.tenant.get().unwrap_or(NO_TENANT),
            self.code.unwrap_or("CANCELLED"),
            self.started.elapsed(),
        );
    }
}

/// A response body that ends its call's measurement with the trailers.
pub struct MeteredBody<B> {
    inner: B,
    call: Option<Call>,
}

impl<B> http_body::Body for MeteredBody<B>
where
    B: http_body::Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    if let Some(call) = self.call.take() {
                        call.end(status_code(trailers).unwrap_or("UNKNOWN"));
                    }
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(call) = self.call.take() {
                    call.end("INTERNAL");
                }
            }
            Poll::Ready(None) => {
                if let Some(call) = self.call.take() {
                    // Ended without trailers: not a valid gRPC response.
                    call.end("UNKNOWN");
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Tower layer that measures every call.
#[derive(Clone, Copy, Default)]
pub struct RpcMetricsLayer;

impl<S> tower_layer::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetrics { inner }
    }
}

#[derive(Clone)]
pub struct RpcMetrics<S> {
    inner: S,
}

use super::BoxFuture;

impl<S, ReqBody, ResBody> tower_service::Service<http::Request<ReqBody>> for RpcMetrics<S>
where
    S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = http::Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        let tenant = Arc::new(TenantSlot::default());
        request.extensions_mut().insert(tenant.clone());
        let call = Call::start(method_label(request.uri().path()), tenant);
        let response = self.inner.call(request);
        Box::pin(async move {
            match response.await {
                Ok(response) => {
                    // Trailers-only: the call ends with the head.
                    let call = match status_code(response.headers()) {
                        Some(code) => {
                            call.end(code);
                            None
                        }
                        None => Some(call),
                    };
                    Ok(response.map(|inner| MeteredBody { inner, call }))
                }
                Err(error) => {
                    call.end("INTERNAL");
                    Err(error)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body::Body as _;

    #[test]
    fn methods_come_from_the_descriptors() {
        assert_eq!(
            method_label("/verbatim.v1.FeedbackService/Search"),
            "Search"
        );
        assert_eq!(
            method_label("/verbatim.v1.FeedbackService/IngestStream"),
            "IngestStream"
        );
        assert_eq!(
            method_label("/grpc.health.v1.Health/Check"),
            "grpc.health.v1.Health/Check"
        );
        assert_eq!(
            method_label("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            "grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
        );
        assert_eq!(
            method_label("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"),
            "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
        );
        for path in ["/verbatim.v1.FeedbackService/Nope", "/", "/x/y", ""] {
            assert_eq!(method_label(path), UNKNOWN_METHOD, "{path:?}");
        }
    }

    #[test]
    fn status_codes_by_name() {
        let mut headers = HeaderMap::new();
        assert_eq!(status_code(&headers), None);
        for (value, name) in [
            ("0", "OK"),
            ("3", "INVALID_ARGUMENT"),
            ("8", "RESOURCE_EXHAUSTED"),
            ("16", "UNAUTHENTICATED"),
            ("17", "UNKNOWN"),
            ("x", "UNKNOWN"),
        ] {
            headers.insert("grpc-status", value.parse().unwrap());
            assert_eq!(status_code(&headers), Some(name), "{value}");
        }
    }

    /// A body of one data frame, then trailers with `grpc-status`.
    struct Answer(Vec<Frame<Bytes>>);

    impl http_body::Body for Answer {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(if self.0.is_empty() {
                None
            } else {
                Some(Ok(self.0.remove(0)))
            })
        }
    }

    fn answer(status: &str) -> Answer {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", status.parse().unwrap());
        Answer(vec![
            Frame::data(Bytes::from_static(b"hello")),
            Frame::trailers(trailers),
        ])
    }

    /// A service that fills the tenant slot and answers with `make`.
    #[derive(Clone)]
    struct Handler(fn() -> http::Response<Answer>);

    impl tower_service::Service<http::Request<()>> for Handler {
        type Response = http::Response<Answer>;
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<()>) -> Self::Future {
            if let Some(slot) = request.extensions().get::<Arc<TenantSlot>>() {
                if request.headers().contains_key("x-tenant") {
                    slot.set("acme");
                    slot.set("ignored: the first value stays");
                }
            }
            std::future::ready(Ok((self.0)()))
        }
    }

    fn request(method: &str, tenant: bool) -> http::Request<()> {
        let mut builder =
            http::Request::builder().uri(format!("http://x/verbatim.v1.FeedbackService/{method}"));
        if tenant {
            builder = builder.header("x-tenant", "1");
        }
        builder.body(()).unwrap()
    }

    async fn drain<B: http_body::Body + Unpin>(mut body: B) {
        while std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx))
            .await
            .is_some()
        {}
    }

    fn count(method: &str, tenant: &str, code: &str) -> u64 {
        crate::metrics::METRICS
            .rpc_requests
            .with(&[method, tenant, code])
            .get()
    }

    #[tokio::test]
    async fn counts_codes_from_trailers_and_trailers_only_heads() {
        use tower_layer::Layer as _;
        use tower_service::Service as _;
        // Methods no other test uses: the registry is process-wide.
        let (get, stats, report) = ("Get", "Stats", "Report");
        let before = (
            count(get, "acme", "NOT_FOUND"),
            count(stats, "-", "OK"),
            count(report, "-", "INVALID_ARGUMENT"),
            count(get, "-", "CANCELLED"),
        );

        let mut trailers = RpcMetricsLayer.layer(Handler(|| http::Response::new(answer("5"))));
        let response = trailers.call(request(get, true)).await.unwrap();
        assert_eq!(crate::metrics::rpc_in_flight(get).get(), 1);
        assert!(!response.body().is_end_stream());
        drain(response.into_body()).await;
        assert_eq!(crate::metrics::rpc_in_flight(get).get(), 0);
        assert_eq!(count(get, "acme", "NOT_FOUND"), before.0 + 1);

        let mut ok = RpcMetricsLayer.layer(Handler(|| http::Response::new(answer("0"))));
        drain(ok.call(request(stats, false)).await.unwrap().into_body()).await;
        assert_eq!(count(stats, "-", "OK"), before.1 + 1);

        // Trailers-only: counted as soon as the head is out.
        let mut head_only = RpcMetricsLayer.layer(Handler(|| {
            http::Response::builder()
                .header("grpc-status", "3")
                .body(Answer(Vec::new()))
                .unwrap()
        }));
        let response = head_only.call(request(report, false)).await.unwrap();
        assert_eq!(count(report, "-", "INVALID_ARGUMENT"), before.2 + 1);
        drain(response.into_body()).await;
        assert_eq!(count(report, "-", "INVALID_ARGUMENT"), before.2 + 1);

        // The client goes away before the trailers.
        drop(trailers.call(request(get, false)).await.unwrap());
        assert_eq!(count(get, "-", "CANCELLED"), before.3 + 1);

        let histogram = crate::metrics::METRICS.rpc_duration.with(&[get, "acme"]);
        assert!(histogram.count() >= 1);
    }
}
