//! The gRPC edge: the only module that knows tonic and the generated types.
//! Handlers convert, call the engine, convert back; errors become statuses in
//! `status.rs`.

mod budget;
pub mod codec;
mod context;
mod convert;
mod gate;
pub mod listen;
mod metrics;
mod report;
mod request_id;
mod response_budget;
mod service;
mod status;
pub mod tls;

use budget::ByteBudget;

/// The future of a tower layer's `call` (the layers in this module).
type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'static>>;
pub use convert::{channel_to_pb, stage_to_pb};
pub use metrics::TenantSlot;
pub use report::report_from_pb;
pub use service::FeedbackApi;

/// The router with its layers in front of every service, outermost first:
/// RPC metrics, the request id, authentication (from the headers, before
/// the body), the request byte budget, the response byte budget.
pub type ApiRouter = tonic::transport::server::Router<
    tower_layer::Stack<
        response_budget::ResponseBudgetLayer,
        tower_layer::Stack<
            budget::RequestBudgetLayer,
            tower_layer::Stack<
                gate::AuthGateLayer,
                tower_layer::Stack<
                    request_id::RequestIdLayer,
                    tower_layer::Stack<metrics::RpcMetricsLayer, tower_layer::Identity>,
                >,
            >,
        >,
    >,
>;

/// HTTP/2 flow control: bytes a client may send on one call before the
/// server reads them (hyper's default).
pub const STREAM_WINDOW_BYTES: u32 = 1024 * 1024;
/// The same for all calls of one connection together: bytes a call has
/// received and the server not yet read count here too, so with hyper's
/// default (as large as one call's window) one call held back (a stream the
/// server reads no further while its batches wait, a client that reads no
/// answers) held up every other call on the connection (found by probing:
/// `Stats` on a channel carrying a stalled IngestStream waited past its
/// 5 s deadline). Four calls' worth: three can be held back before a
/// fourth waits. Transport buffers are bounded by this per connection.
pub const CONNECTION_WINDOW_BYTES: u32 = 4 * STREAM_WINDOW_BYTES;

/// The unary methods that change nothing: when the response budget is
/// full their answer is refused (RESOURCE_EXHAUSTED; asking again is safe).
/// `WRITES` answer changes made (unary or streams): never counted or
/// refused. Every unary method is in one list (a unit test checks), so a
/// new method is classified on purpose; other streams wait for room.
const READS: &[&str] = &[
    "/verbatim.v1.FeedbackService/Get",
    "/verbatim.v1.FeedbackService/Search",
    "/verbatim.v1.FeedbackService/Analyze",
    "/verbatim.v1.FeedbackService/Stats",
    "/verbatim.v1.FeedbackService/ListThemes",
    "/verbatim.v1.FeedbackService/DiscoverThemes",
    "/verbatim.v1.FeedbackService/Report",
    "/grpc.health.v1.Health/Check",
];
/// The methods whose answers say a change was made (see `READS`).
const WRITES: &[&str] = &[
    "/verbatim.v1.FeedbackService/Ingest",
    "/verbatim.v1.FeedbackService/IngestStream",
    "/verbatim.v1.FeedbackService/Delete",
    "/verbatim.v1.FeedbackService/DeleteCustomer",
    "/verbatim.v1.FeedbackService/UpsertTheme",
    "/verbatim.v1.FeedbackService/DeleteTheme",
];

/// The encoded descriptor sets of the services whose methods the byte
/// budgets tell apart (the API and health).
const DESCRIPTORS: &[&[u8]] = &[
    pb::FILE_DESCRIPTOR_SET,
    tonic_health::pb::FILE_DESCRIPTOR_SET,
];

/// Transport limits of the server (see `Config`).
#[derive(Clone, Copy, Debug)]
pub struct TransportLimits {
    pub max_inflight_request_bytes: usize,
    pub max_inflight_response_bytes: usize,
    pub max_concurrent_streams: u32,
}

/// Types and clients generated from `proto/verbatim/v1/*.proto`.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("verbatim.v1");

    /// Encoded descriptors of the API, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("verbatim_descriptor");
}

use std::time::Duration;

use crate::domain::limits::MAX_MESSAGE_BYTES;
use crate::engine::Tenants;

/// Builds the router with every service: the API, health and reflection
/// (v1 and v1alpha). Returns the router, the health reporter and the scrape
/// hook of the byte budgets' gauges (removed when dropped).
pub async fn router(
    tenants: std::sync::Arc<Tenants>,
    auth: std::sync::Arc<crate::auth::Authenticator>,
    mut writable: tokio::sync::watch::Receiver<bool>,
    streams_end: tokio::sync::watch::Receiver<bool>,
    limits: TransportLimits,
) -> anyhow::Result<(
    ApiRouter,
    tonic_health::server::HealthReporter,
    crate::metrics::ScrapeHook,
)> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<pb::feedback_service_server::FeedbackServiceServer<FeedbackApi>>()
        .await;
    // NOT_SERVING (overall and for the API) while writes cannot succeed
    // (disk full, read-only): load balancers route around; reads still work.
    let reporter = health_reporter.clone();
    tokio::spawn(async move {
        loop {
            let status = if *writable.borrow_and_update() {
                tonic_health::ServingStatus::Serving
            } else {
                tonic_health::ServingStatus::NotServing
            };
            reporter.set_service_status("", status).await;
            reporter
                .set_service_status(
                    <pb::feedback_service_server::FeedbackServiceServer<FeedbackApi> as tonic::server::NamedService>::NAME,
                    status,
                )
                .await;
            if writable.changed().await.is_err() {
                return;
            }
        }
    });
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let api = pb::feedback_service_server::FeedbackServiceServer::new(FeedbackApi::new(
        tenants,
        auth.clone(),
        streams_end,
    ))
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(crate::domain::limits::MAX_RESPONSE_BYTES);
    let requests = ByteBudget::new(limits.max_inflight_request_bytes);
    let responses = response_budget::ResponseBudget::new(limits.max_inflight_response_bytes);
    let budget_gauges = crate::metrics::on_scrape({
        let (requests, responses) = (requests.clone(), responses.clone());
        move || crate::metrics::set_inflight_bytes(requests.in_use(), responses.in_use())
    });
    let router = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .max_concurrent_streams(Some(limits.max_concurrent_streams))
        .layer(metrics::RpcMetricsLayer)
        .layer(request_id::RequestIdLayer)
        .layer(gate::AuthGateLayer::new(auth.clone()))
        .layer(budget::RequestBudgetLayer::new(requests, DESCRIPTORS))
        .layer(response_budget::ResponseBudgetLayer::new(
            responses,
            DESCRIPTORS,
            READS,
            WRITES,
        ))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(api);
    Ok((router, health_reporter, budget_gauges))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unary_method_is_a_read_or_a_write() {
        let unary = budget::method_paths(DESCRIPTORS, |method| !method.server_streaming());
        let all = budget::method_paths(DESCRIPTORS, |_| true);
        let mut listed: Vec<&str> = READS
            .iter()
            .chain(WRITES)
            .copied()
            .filter(|path| unary.contains(*path))
            .collect();
        listed.sort_unstable();
        let mut unary: Vec<&str> = unary.iter().map(String::as_str).collect();
        unary.sort_unstable();
        assert_eq!(listed, unary, "each unary method once, in READS or WRITES");
        for path in READS.iter().chain(WRITES) {
            assert!(all.contains(*path), "{path} is a method served");
        }
    }
}
