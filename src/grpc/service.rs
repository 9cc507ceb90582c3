use std::pin::Pin;

use futures::stream::{FuturesOrdered, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use super::context::request_context;
use super::convert::{self, incoming_item, item_results};
use super::pb;
use crate::domain::{ReportRequest, SearchQuery};
use std::sync::Arc;

use crate::auth::{Authenticator, Need, Role};
use crate::engine::{Caller, Engine, QueueMode, RequestContext, Tenants};

/// Batches of one IngestStream that may wait for durability at once.
const STREAM_BATCHES_IN_FLIGHT: usize = 8;

fn without_analysis(
    outcomes: Vec<crate::engine::ItemOutcome>,
) -> Vec<(crate::engine::ItemOutcome, Option<crate::domain::Analysis>)> {
    outcomes.into_iter().map(|o| (o, None)).collect()
}

pub struct FeedbackApi {
    tenants: Arc<Tenants>,
    auth: Arc<Authenticator>,
    /// Turns true when the shutdown grace has passed: client streams then
    /// take no more messages (see `streams_ended`).
    streams_end: watch::Receiver<bool>,
}

/// The status a client stream ends with once the shutdown grace has
/// passed: what it sent before was answered (and is durable for writes);
/// nothing after was read.
fn streams_ended() -> Status {
    Status::unavailable(
        "the server is shutting down (--shutdown-grace-ms passed): messages after the last \
         answer were not read; send them again to a running server",
    )
}

/// Resolves once the shutdown grace has passed (never, when the sender is
/// gone without it).
async fn grace_passed(mut end: watch::Receiver<bool>) {
    if end.wait_for(|ended| *ended).await.is_err() {
        std::future::pending::<()>().await;
    }
}

impl FeedbackApi {
    pub fn new(
        tenants: Arc<Tenants>,
        auth: Arc<Authenticator>,
        streams_end: watch::Receiver<bool>,
    ) -> Self {
        FeedbackApi {
            tenants,
            auth,
            streams_end,
        }
    }

    /// Authenticates the call (the `authorization` metadata), checks that
    /// the key may do what the call needs, and returns the engine of the
    /// caller's tenant with the call's context. The tenant goes on the
    /// call's span.
    async fn enter<T>(
        &self,
        request: &Request<T>,
        need: Need,
    ) -> Result<(Engine, RequestContext), Status> {
        let header = request
            .metadata()
            .get("authorization")
            .map(|value| value.to_str().unwrap_or(""));
        let principal = self
            .auth
            .authenticate(header)
            .map_err(crate::error::Error::from)?;
        tracing::Span::current().record("tenant", principal.tenant.as_str());
        if let Some(slot) = request.extensions().get::<Arc<super::TenantSlot>>() {
            slot.set(principal.tenant.as_str());
        }
        principal.require(need).map_err(crate::error::Error::from)?;
        let mut ctx = request_context(request);
        if let Some(key) = &principal.key_id {
            ctx.caller = Caller::Key(key.clone());
        }
        let engine = self.tenants.get(&principal.tenant).await?;
        Ok((engine, ctx))
    }

    /// Checks a stream's key again for each of its messages: a key revoked
    /// or rotated while a stream is open ends the stream at its next message
    /// (UNAUTHENTICATED), as it refuses new calls, instead of writing on
    /// for as long as the stream lasts. The principal's tenant and roles
    /// come from the key, so a valid key still has what `enter` checked.
    fn key_check<T>(&self, request: &Request<T>, need: Need) -> impl Fn() -> Result<(), Status> {
        let auth = self.auth.clone();
        let header = request
            .metadata()
            .get("authorization")
            .map(|value| value.to_str().unwrap_or("").to_owned());
        // The stream's tenant: a key edited to name another one (the file
        // is the operator's) does not move the stream.
        let tenant = auth.authenticate(header.as_deref()).ok().map(|p| p.tenant);
        move || {
            let principal = auth
                .authenticate(header.as_deref())
                .and_then(|principal| principal.require(need).map(|()| principal))
                .map_err(|e| Status::from(crate::error::Error::from(e)))?;
            if Some(&principal.tenant) != tenant.as_ref() {
                return Err(Status::unauthenticated(
                    "the key now belongs to another tenant than this stream's",
                ));
            }
            Ok(())
        }
    }
}

type AckStream = Pin<Box<dyn futures::Stream<Item = Result<pb::IngestAck, Status>> + Send>>;

#[tonic::async_trait]
impl pb::feedback_service_server::FeedbackService for FeedbackApi {
    #[tracing::instrument(name = "Ingest", skip_all, fields(tenant, items))]
    async fn ingest(
        &self,
        request: Request<pb::IngestRequest>,
    ) -> Result<Response<pb::IngestResponse>, Status> {
        let (engine, ctx) = self.enter(&request, Need::Role(Role::Ingest)).await?;
        let request = request.into_inner();
        tracing::Span::current().record("items", request.items.len());
        let incoming = request.items.into_iter().map(incoming_item).collect();
        let outcomes = if request.wait_for_analysis {
            engine.ingest_and_analyze(&ctx, incoming).await?
        } else {
            without_analysis(
                engine
                    .ingest(&ctx, incoming, QueueMode::brief(ctx.deadline))
                    .await?,
            )
        };
        let (results, accepted, rejected) = item_results(outcomes);
        Ok(Response::new(pb::IngestResponse {
            results,
            accepted,
            rejected,
        }))
    }

    type IngestStreamStream = AckStream;

    #[tracing::instrument(name = "IngestStream", skip_all, fields(tenant))]
    async fn ingest_stream(
        &self,
        request: Request<Streaming<pb::IngestRequest>>,
    ) -> Result<Response<Self::IngestStreamStream>, Status> {
        let (engine, ctx) = self.enter(&request, Need::Role(Role::Ingest)).await?;
        let key_check = self.key_check(&request, Need::Role(Role::Ingest));
        let mut inbound = request.into_inner();
        let (acks, ack_stream) = mpsc::channel(STREAM_BATCHES_IN_FLIGHT);
        let ended = grace_passed(self.streams_end.clone());
        let task = async move {
            tokio::pin!(ended);
            let mut in_flight = FuturesOrdered::new();
            let mut sequence: u64 = 0;
            let mut inbound_open = true;
            // A bad message ends the stream with its status, after the acks of
            // the batches before it (they are being written and will be durable).
            let mut final_error: Option<Status> = None;
            loop {
                tokio::select! {
                    // In this order: the end of the grace first (once), then
                    // acks, then new messages.
                    biased;
                    () = &mut ended, if inbound_open => {
                        final_error = Some(streams_ended());
                        inbound_open = false;
                    }
                    Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                        let (sequence, outcome): (u64, crate::error::Result<_>) = done;
                        let ack = outcome.map_err(Status::from).map(|outcomes| {
                            let (results, accepted, rejected) = item_results(without_analysis(outcomes));
                            pb::IngestAck { sequence, results, accepted, rejected }
                        });
                        let failed = ack.is_err();
                        if acks.send(ack).await.is_err() || failed {
                            return; // client gone, or the stream ends with the error
                        }
                    }
                    message = inbound.message(), if inbound_open && in_flight.len() < STREAM_BATCHES_IN_FLIGHT => {
                        match message {
                            Ok(Some(request)) if request.wait_for_analysis => {
                                // Acks come as batches are durable; analysis runs behind.
                                final_error = Some(Status::invalid_argument(
                                    "wait_for_analysis: IngestStream does not wait for analysis; \
                                     use Ingest for that, or read analyses with Get",
                                ));
                                inbound_open = false;
                            }
                            Ok(Some(request)) => {
                                if let Err(status) = key_check() {
                                    final_error = Some(status);
                                    inbound_open = false;
                                    continue;
                                }
                                let incoming = request.items.into_iter().map(incoming_item).collect();
                                // Waits for room in the write queue: this wait is the backpressure.
                                match engine.submit_ingest(&ctx, incoming, QueueMode::Wait).await {
                                    Ok(pending) => {
                                        let this = sequence;
                                        in_flight.push_back(async move { (this, pending.await) });
                                    }
                                    Err(error) => {
                                        final_error = Some(Status::from(error));
                                        inbound_open = false;
                                    }
                                }
                                sequence += 1;
                            }
                            Ok(None) => inbound_open = false,
                            Err(status) => {
                                // Undecodable or oversized message (INVALID_ARGUMENT,
                                // OUT_OF_RANGE), or the client went away.
                                tracing::debug!(%status, "ingest stream input ended with an error");
                                final_error = Some(status);
                                inbound_open = false;
                            }
                        }
                    }
                    else => break,
                }
            }
            if let Some(status) = final_error {
                let _ = acks.send(Err(status)).await;
            }
            tracing::debug!(messages = sequence, "ingest stream finished");
        };
        tokio::spawn(task.instrument(tracing::Span::current()));
        Ok(Response::new(Box::pin(ReceiverStream::new(ack_stream))))
    }

    #[tracing::instrument(name = "Get", skip_all, fields(tenant, ids))]
    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let need = if request.get_ref().include_original {
            Need::Role(Role::Admin)
        } else {
            Need::Role(Role::Read)
        };
        let (engine, ctx) = self.enter(&request, need).await?;
        let request = request.into_inner();
        let ids = convert::ids(request.ids)?;
        tracing::Span::current().record("ids", ids.len());
        let (items, missing) = engine.get(&ctx, ids).await?;
        Ok(Response::new(pb::GetResponse {
            items: items
                .into_iter()
                .map(|item| {
                    let original = item.feedback.original_text.clone();
                    let mut item = pb::Feedback::from(item);
                    if request.include_original {
                        item.original_text = original.unwrap_or_default();
                    }
                    item
                })
                .collect(),
            missing_ids: missing.into_iter().map(|id| id.to_string()).collect(),
        }))
    }

    #[tracing::instrument(name = "Delete", skip_all, fields(tenant, ids))]
    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let (engine, ctx) = self.enter(&request, Need::Role(Role::Admin)).await?;
        let ids = convert::ids(request.into_inner().ids)?;
        tracing::Span::current().record("ids", ids.len());
        let (deleted, missing) = engine.delete(&ctx, ids).await?;
        Ok(Response::new(pb::DeleteResponse {
            deleted: deleted as u32,
            missing_ids: missing.into_iter().map(|id| id.to_string()).collect(),
        }))
    }

    #[tracing::instrument(name = "DeleteCustomer", skip_all, fields(tenant))]
    async fn delete_customer(
        &self,
        request: Request<pb::DeleteCustomerRequest>,
    ) -> Result<Response<pb::DeleteCustomerResponse>, Status> {
        let (engine, ctx) = self.enter(&request, Need::Role(Role::Admin)).await?;
        let deleted = engine
            .delete_customer(&ctx, request.into_inner().customer_id)
            .await?;
        Ok(Response::new(pb::DeleteCustomerResponse {
            deleted: deleted as u32,
        }))
    }

    #[tracing::instrument(name = "Analyze", skip_all, fields(tenant, texts))]
    async fn analyze(
        &self,
        request: Request<pb::AnalyzeRequest>,
    ) -> Result<Response<pb::AnalyzeResponse>, Status> {
        let (engine, ctx) = self.enter(&request, Need::AnyRole).await?;
        let request = request.into_inner();
        tracing::Span::current().record("texts", request.texts.len());
        let results = engine
            .analyze(&ctx, request.texts, request.include_embeddings)
            .await?;
        Ok(Response::new(convert::analyze_response(results)))
    }

    type AnalyzeStreamStream =
        Pin<Box<dyn futures::Stream<Item = Result<pb::AnalyzeResponse, Status>> + Send>>;

    #[tracing::instrument(name = "AnalyzeStream", skip_all, fields(tenant))]
    async fn analyze_stream(
        &self,
        request: Request<Streaming<pb::AnalyzeRequest>>,
    ) -> Result<Response<Self::AnalyzeStreamStream>, Status> {
        let (engine, ctx) = self.enter(&request, Need::AnyRole).await?;
        let key_check = self.key_check(&request, Need::AnyRole);
        let mut inbound = request.into_inner();
        let (responses, stream) = mpsc::channel(2);
        let ended = grace_passed(self.streams_end.clone());
        let task = async move {
            tokio::pin!(ended);
            // One message at a time: the next is read only after this one is
            // answered, so a fast producer is held back by flow control.
            loop {
                let message = tokio::select! {
                    biased;
                    () = &mut ended => {
                        let _ = responses.send(Err(streams_ended())).await;
                        return;
                    }
                    message = inbound.message() => message,
                };
                let Some(message) = message.transpose() else {
                    return;
                };
                let result = match message {
                    Ok(request) => match key_check() {
                        Err(status) => Err(status),
                        // A client that goes away (cancel, deadline) drops
                        // the answer's receiver: the analysis is dropped
                        // with its queued jobs, as a unary call's is.
                        Ok(()) => tokio::select! {
                            biased;
                            () = responses.closed() => return,
                            analysed = engine.analyze(&ctx, request.texts, request.include_embeddings) => analysed
                                .map(convert::analyze_response)
                                .map_err(Status::from),
                        },
                    },
                    Err(status) => {
                        tracing::debug!(%status, "analyze stream input ended with an error");
                        let _ = responses.send(Err(status)).await;
                        return;
                    }
                };
                let failed = result.is_err();
                if responses.send(result).await.is_err() || failed {
                    return;
                }
            }
        };
        tokio::spawn(task.instrument(tracing::Span::current()));
        Ok(Response::new(Box::pin(ReceiverStream::new(stream))))
    }

    #[tracing::instrument(name = "Stats", skip_all, fields(tenant))]
    async fn stats(
        &self,
        request: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsResponse>, Status> {
        let (engine, ctx) = self.enter(&request, Need::Role(Role::Read)).await?;
        let stats = engine.stats(&ctx).await?;
        Ok(Response::new(pb::StatsResponse {
            items: stats.store.items,
            analysis_backlog: stats.store.analysis_backlog,
            index_lag: stats
                .store
                .last_seq
                .saturating_sub(engine.index().indexed_seq()),
            analysis_enabled: engine.analysis_enabled(),
            taxonomy_version: stats.taxonomy_version,
            retag_backlog: stats.retag_backlog,
        }))
    }

    #[tracing::instrument(name = "UpsertTheme", skip_all, fields(tenant, theme_id))]
    async fn upsert_theme(
        &self,
        request: Request<pb::UpsertThemeRequest>,
    ) -> Result<Response<pb::UpsertThemeResponse>, Status> {
        let (engine, ctx) = self.enter(&request, Need::Role(Role::Admin)).await?;
        let theme = request
            .into_inner()
            .theme
            .ok_or_else(|| Status::invalid_argument("theme: required"))?;
        let edit = engine.upsert_theme(&ctx, theme.into()).await?;
        tracing::Span::current().record("theme_id", edit.theme.id.as_str());
        Ok(Response::new(pb::UpsertThemeResponse {
            theme: Some(edit.theme.into()),
            taxonomy_version: edit.taxonomy_version,
        }))
    }

    #[tracing::instrument(name = "ListThemes", skip_all, fields(tenant))]
    async fn list_themes(
        &self,
        request: Request<pb::ListThemesRequest>,
    ) -> Result<Response<pb::ListThemesResponse>, Status> {
        let (engine, ctx) = self.enter(&request, Need::Role(Role::Read)).await?;
        let taxonomy = engine.list_themes(&ctx).await?;
        Ok(Response::new(convert::list_themes_response(
            taxonomy,
            crate::themes::THRESHOLD,
        )))
    }

    #[tracing::instrument(name = "DeleteTheme", skip_all, fields(tenant))]
    async fn delete_theme(
        &self,
        request: Request<pb::DeleteThemeRequest>,
    ) -> Result<Response<pb::DeleteThemeResponse>, Status> {
        let (engine, ctx) = self.enter(&request, Need::Role(Role::Admin)).await?;
        let request = request.into_inner();
        let (deleted_ids, taxonomy_version) = engine
            .delete_theme(&ctx, request.id, request.cascade)
            .await?;
        Ok(Response::new(pb::DeleteThemeResponse {
            deleted_ids,
            taxonomy_version,
        }))
    }

    #[tracing::instrument(name = "DiscoverThemes", skip_all, fields(tenant))]
    async fn discover_themes(
        &self,
        request: Request<pb::DiscoverThemesRequest>,
    ) -> Result<Response<pb::DiscoverThemesResponse>, Status> {
        let (engine, ctx) = self.enter(&request, Need::Role(Role::Read)).await?;
        let request = request.into_inner();
        let (limit, min_size) = (request.limit as usize, request.min_size as usize);
        let query = convert::discovery_request(request)?;
        let report = engine.discover_themes(&ctx, query, limit, min_size).await?;
        Ok(Response::new(report.into()))
    }

    #[tracing::instrument(name = "Report", skip_all, fields(tenant, query_bytes, items))]
    async fn report(
        &self,
        request: Request<pb::ReportRequest>,
    ) -> Result<Response<pb::ReportResponse>, Status> {
        let (engine, ctx) = self.enter(&request, Need::Role(Role::Read)).await?;
        let report_request = ReportRequest::try_from(request.into_inner())?;
        tracing::Span::current().record("query_bytes", report_request.query.text.len());
        let report = engine.report(&ctx, report_request).await?;
        tracing::Span::current().record("items", report.items);
        Ok(Response::new(report.into()))
    }

    #[tracing::instrument(name = "Search", skip_all, fields(tenant, query_bytes))]
    async fn search(
        &self,
        request: Request<pb::SearchRequest>,
    ) -> Result<Response<pb::SearchResponse>, Status> {
        let (engine, ctx) = self.enter(&request, Need::Role(Role::Read)).await?;
        let query = SearchQuery::try_from(request.into_inner())?;
        tracing::Span::current().record("query_bytes", query.text.len());
        let page = engine.search(&ctx, query).await?;
        Ok(Response::new(page.into()))
    }
}
