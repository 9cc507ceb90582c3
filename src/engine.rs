//! The application core behind every transport: batch validation, writes
//! through the store, reads and searches. Knows nothing of gRPC.

use std::collections::HashMap;
use std::future::Future;

use crate::domain::limits::{MAX_BATCH_ITEMS, MAX_IDS_PER_REQUEST, MAX_SIMILARITY_CANDIDATES};
use crate::domain::validate_customer_id;
use crate::domain::{
    Analysis, AnalysisState, Feedback, FeedbackDraft, FeedbackId, Rejection, SearchHit, SearchPage,
    SearchQuery, SimilarTo, StoredFeedback, UnixMicros,
};
use crate::error::{Error, Result};
use crate::index::SearchIndex;
use crate::nlp::{AnalysisPool, NlpError};
use crate::store::{AnalysisUpdate, Store, StoreStats, WriteOp, WriteOutcome};

/// The outcome for one item of an ingest batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ItemOutcome {
    Stored(FeedbackId),
    Rejected(Rejection),
}

/// How an ingest waits for room in the write queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueMode {
    /// Fail at once with RESOURCE_EXHAUSTED when the queue is full (unary calls).
    FailFast,
    /// Wait for room (streams: the wait is the backpressure).
    Wait,
}

#[derive(Clone)]
pub struct Engine {
    store: Store,
    index: SearchIndex,
    analysis: Option<AnalysisPool>,
}

/// An item as it arrived: already converted (or rejected) by the transport.
pub type IncomingItem = std::result::Result<FeedbackDraft, Rejection>;

impl Engine {
    pub fn new(store: Store, index: SearchIndex, analysis: Option<AnalysisPool>) -> Self {
        Engine {
            store,
            index,
            analysis,
        }
    }

    /// Analyses texts without storing them; per-text rejections in order.
    pub async fn analyze(
        &self,
        texts: Vec<String>,
        include_embeddings: bool,
    ) -> Result<Vec<std::result::Result<Analysis, Rejection>>> {
        check_batch_size("texts", texts.len(), MAX_BATCH_ITEMS)?;
        let pool = self.analysis.as_ref().ok_or(NlpError::Disabled)?;
        Ok(pool.analyze(texts, include_embeddings).await?)
    }

    pub fn index(&self) -> &SearchIndex {
        &self.index
    }

    /// Whether writes can succeed now (false while the storage is full or
    /// read-only); health reports NOT_SERVING meanwhile.
    pub fn writable(&self) -> tokio::sync::watch::Receiver<bool> {
        self.store.writable()
    }

    /// Validates a batch and queues its valid items; the returned future
    /// resolves once they are durable. Queueing happens before this returns,
    /// so callers can keep several batches in flight in order.
    pub async fn submit_ingest(
        &self,
        items: Vec<IncomingItem>,
        mode: QueueMode,
    ) -> Result<impl Future<Output = Result<Vec<ItemOutcome>>> + use<>> {
        check_batch_size("items", items.len(), MAX_BATCH_ITEMS)?;
        let (mut outcomes, accepted) = validate_batch(items, UnixMicros::now());
        let ids: Vec<(usize, FeedbackId)> =
            accepted.iter().map(|(i, f)| (*i, f.id.clone())).collect();
        let pending = if accepted.is_empty() {
            None
        } else {
            let op = WriteOp::Upsert(accepted.into_iter().map(|(_, f)| f).collect());
            Some(match mode {
                QueueMode::FailFast => {
                    let store = self.store.clone();
                    futures::future::Either::Left(async move { store.try_write(op).await })
                }
                QueueMode::Wait => futures::future::Either::Right(self.store.enqueue(op).await?),
            })
        };
        Ok(async move {
            if let Some(pending) = pending {
                match pending.await? {
                    WriteOutcome::Upserted { .. } => {}
                    other => {
                        return Err(Error::Task(format!("unexpected write outcome {other:?}")))
                    }
                }
                for (index, id) in ids {
                    outcomes[index] = Some(ItemOutcome::Stored(id));
                }
            }
            Ok(outcomes
                .into_iter()
                .map(|o| o.expect("every item has an outcome"))
                .collect())
        })
    }

    /// Validates and stores a batch; returns once the accepted items are durable.
    pub async fn ingest(
        &self,
        items: Vec<IncomingItem>,
        mode: QueueMode,
    ) -> Result<Vec<ItemOutcome>> {
        self.submit_ingest(items, mode).await?.await
    }

    pub fn analysis_enabled(&self) -> bool {
        self.analysis.is_some()
    }

    /// Ingests, then analyses the accepted items before returning (the
    /// `wait_for_analysis` mode): each stored item's analysis comes back with
    /// its outcome and is saved like the background analysis would.
    pub async fn ingest_and_analyze(
        &self,
        items: Vec<IncomingItem>,
    ) -> Result<Vec<(ItemOutcome, Option<Analysis>)>> {
        let pool = self.analysis.clone().ok_or(NlpError::Disabled)?;
        let outcomes = self.ingest(items, QueueMode::FailFast).await?;
        let ids: Vec<FeedbackId> = outcomes
            .iter()
            .filter_map(|o| match o {
                ItemOutcome::Stored(id) => Some(id.clone()),
                ItemOutcome::Rejected(_) => None,
            })
            .collect();
        if ids.is_empty() {
            return Ok(outcomes.into_iter().map(|o| (o, None)).collect());
        }
        let (versions, _) = self.get(ids).await?;
        let texts: Vec<String> = versions.iter().map(|v| v.feedback.text.clone()).collect();
        // The items are durable now: an analysis problem must not turn the
        // answer into an error, they are left to the background analysis.
        let analyses = match pool.analyze(texts, true).await {
            Ok(analyses) => analyses,
            Err(error) => {
                tracing::warn!(%error, "analysis while ingesting failed; left to the background analysis");
                return Ok(outcomes.into_iter().map(|o| (o, None)).collect());
            }
        };
        let mut by_id: HashMap<FeedbackId, Analysis> = HashMap::new();
        let mut updates = Vec::new();
        for (version, analysis) in versions.into_iter().zip(analyses) {
            let update = AnalysisUpdate::from_result(version.feedback.id, version.seq, analysis);
            if let AnalysisState::Done(analysis) = &update.state {
                by_id.insert(update.id.clone(), analysis.clone());
            }
            updates.push(update);
        }
        self.store.write(WriteOp::SetAnalysis(updates)).await?;
        Ok(outcomes
            .into_iter()
            .map(|o| {
                let analysis = match &o {
                    ItemOutcome::Stored(id) => by_id.remove(id),
                    ItemOutcome::Rejected(_) => None,
                };
                (o, analysis)
            })
            .collect())
    }

    /// Items by id, in request order, and the ids that were not found.
    pub async fn get(
        &self,
        ids: Vec<FeedbackId>,
    ) -> Result<(Vec<StoredFeedback>, Vec<FeedbackId>)> {
        check_batch_size("ids", ids.len(), MAX_IDS_PER_REQUEST)?;
        let store = self.store.clone();
        let found = run_blocking(move || {
            let found = store.get_many(&ids)?;
            Ok((ids, found))
        })
        .await?;
        let (ids, found) = found;
        let mut items = Vec::new();
        let mut missing = Vec::new();
        for (id, item) in ids.into_iter().zip(found) {
            match item {
                Some(item) => items.push(item),
                None => missing.push(id),
            }
        }
        Ok((items, missing))
    }

    /// Deletes by id; returns (deleted count, missing ids).
    pub async fn delete(&self, ids: Vec<FeedbackId>) -> Result<(usize, Vec<FeedbackId>)> {
        check_batch_size("ids", ids.len(), MAX_IDS_PER_REQUEST)?;
        match self.store.try_write(WriteOp::Delete(ids)).await? {
            WriteOutcome::Deleted { deleted, missing } => Ok((deleted.len(), missing)),
            other => Err(Error::Task(format!("unexpected write outcome {other:?}"))),
        }
    }

    /// Erases every item of a customer; returns how many.
    pub async fn delete_customer(&self, customer_id: String) -> Result<usize> {
        // The same rule as an item's customer_id, and not empty.
        let customer_id =
            validate_customer_id(customer_id).map_err(|r| Error::invalid(r.field, r.reason))?;
        if customer_id.is_empty() {
            return Err(Error::invalid("customer_id", "must not be empty"));
        }
        match self
            .store
            .try_write(WriteOp::DeleteCustomer(customer_id.clone()))
            .await?
        {
            WriteOutcome::CustomerErased { deleted } => {
                // The erased customer's id is a personal identifier: it is
                // never written to the log.
                tracing::info!(deleted = deleted.len(), "customer erased");
                Ok(deleted.len())
            }
            other => Err(Error::Task(format!("unexpected write outcome {other:?}"))),
        }
    }

    pub async fn search(&self, query: SearchQuery) -> Result<SearchPage> {
        if let Some(similar_to) = query.similar_to.clone() {
            return self.search_similar(query, similar_to).await;
        }
        let index = self.index.clone();
        let store = self.store.clone();
        run_blocking(move || {
            let page = index.search(&query)?;
            let ids: Vec<FeedbackId> = page.hits.iter().map(|(id, _)| id.clone()).collect();
            let items = store.get_many(&ids)?;
            // An id the index still lists but the store no longer has was
            // deleted after the last index refresh: it is skipped.
            let hits = page
                .hits
                .iter()
                .zip(items)
                .filter_map(|((_, score), item)| {
                    let item = item?;
                    let snippet = page.snippet(&item.feedback.text);
                    Some(SearchHit {
                        item,
                        score: *score,
                        snippet,
                    })
                })
                .collect();
            Ok(SearchPage {
                hits,
                total_hits: page.total_hits,
                next_cursor: page.next_cursor.clone(),
                facets: page.facets.clone(),
            })
        })
        .await
    }

    /// Ranks the newest items matching the query and filter by cosine
    /// similarity of their document embeddings to an item's or a text's.
    async fn search_similar(
        &self,
        query: SearchQuery,
        similar_to: SimilarTo,
    ) -> Result<SearchPage> {
        let target = match &similar_to {
            SimilarTo::Item(id) => {
                let store = self.store.clone();
                let id = id.clone();
                run_blocking(move || Ok(store.embedding(&id)?))
                    .await?
                    .ok_or_else(|| Error::invalid("similar_to_id", "no analysed item with this id (it may not exist or not be analysed yet)"))?
            }
            SimilarTo::Text(text) => {
                let pool = self.analysis.as_ref().ok_or(NlpError::Disabled)?;
                crate::nlp::check_text(text)
                    .map_err(|r| Error::invalid("similar_to_text", r.reason))?;
                pool.embed(vec![text.clone()])
                    .await?
                    .pop()
                    .unwrap_or_default()
            }
        };
        let index = self.index.clone();
        let store = self.store.clone();
        run_blocking(move || {
            let candidates = SearchQuery {
                sort: crate::domain::SortOrder::Newest,
                limit: MAX_SIMILARITY_CANDIDATES,
                cursor: None,
                similar_to: None,
                ..query.clone()
            };
            let page = index.search(&candidates)?;
            let candidate_ids: Vec<FeedbackId> = page
                .hits
                .into_iter()
                .map(|(id, _)| id)
                .filter(|id| !matches!(&similar_to, SimilarTo::Item(source) if source == id))
                .collect();
            let embeddings = store.embeddings(&candidate_ids)?;
            let mut scored: Vec<(f32, FeedbackId)> = candidate_ids
                .into_iter()
                .zip(embeddings)
                .filter_map(|(id, embedding)| {
                    let cosine: f32 = embedding?.iter().zip(&target).map(|(a, b)| a * b).sum();
                    Some((cosine, id))
                })
                .collect();
            scored.sort_by(|a, b| b.0.total_cmp(&a.0));
            scored.truncate(query.limit);
            let ids: Vec<FeedbackId> = scored.iter().map(|(_, id)| id.clone()).collect();
            let items = store.get_many(&ids)?;
            let hits = scored
                .into_iter()
                .zip(items)
                .filter_map(|((score, _), item)| {
                    Some(SearchHit {
                        item: item?,
                        score,
                        snippet: None,
                    })
                })
                .collect();
            Ok(SearchPage {
                hits,
                total_hits: page.total_hits,
                next_cursor: None,
                facets: page.facets,
            })
        })
        .await
    }

    pub async fn stats(&self) -> Result<StoreStats> {
        let store = self.store.clone();
        run_blocking(move || Ok(store.stats()?)).await
    }
}

fn check_batch_size(field: &str, len: usize, max: usize) -> Result<()> {
    if len == 0 || len > max {
        return Err(Error::invalid(
            field,
            format!("must hold 1 to {max} entries, got {len}"),
        ));
    }
    Ok(())
}

/// Validates every item; rejects the later of two items with the same id.
/// Returns per-position outcomes (None: accepted, filled in after the write)
/// and the accepted items with their positions.
fn validate_batch(
    items: Vec<IncomingItem>,
    now: UnixMicros,
) -> (Vec<Option<ItemOutcome>>, Vec<(usize, Feedback)>) {
    let mut outcomes = vec![None; items.len()];
    let mut accepted = Vec::with_capacity(items.len());
    let mut first_position: HashMap<FeedbackId, usize> = HashMap::new();
    for (position, item) in items.into_iter().enumerate() {
        match item.and_then(|draft| draft.validate(now)) {
            Ok(feedback) => {
                if let Some(first) = first_position.get(&feedback.id) {
                    outcomes[position] = Some(ItemOutcome::Rejected(Rejection::new(
                        "id",
                        format!("duplicate of item {first} in this batch"),
                    )));
                } else {
                    first_position.insert(feedback.id.clone(), position);
                    accepted.push((position, feedback));
                }
            }
            Err(rejection) => outcomes[position] = Some(ItemOutcome::Rejected(rejection)),
        }
    }
    (outcomes, accepted)
}

async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Task(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(id: &str) -> IncomingItem {
        Ok(FeedbackDraft {
            id: id.into(),
            text: "fine".into(),
            ..Default::default()
        })
    }

    #[test]
    fn batch_validation_keeps_order_and_rejects_duplicates() {
        let items = vec![
            draft("a"),
            Err(Rejection::new("channel", "unknown value 99")),
            draft("b"),
            draft("a"),
        ];
        let (outcomes, accepted) = validate_batch(items, UnixMicros(0));
        assert_eq!(
            accepted.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            vec![0, 2]
        );
        assert!(outcomes[0].is_none() && outcomes[2].is_none());
        assert!(matches!(&outcomes[1], Some(ItemOutcome::Rejected(r)) if r.field == "channel"));
        assert!(
            matches!(&outcomes[3], Some(ItemOutcome::Rejected(r)) if r.field == "id" && r.reason.contains("item 0"))
        );
    }
}
