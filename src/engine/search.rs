//! Reads: search pages (query language, filters, sort, facets, snippets),
//! similarity search over document embeddings, and items by id. Search
//! pages run in place on the async worker holding a read-pool slot
//! (`run_search`); other store reads and similarity run on the blocking pool.
//! Similarity ranks every match through the vector index
//! (`index::vectors`), re-ranking its candidates by the exact cosine.

use super::{check_batch_size, run_blocking, run_search, Engine, RequestContext};
use crate::domain::limits::{MAX_IDS_PER_REQUEST, MAX_SIMILARITY_CANDIDATES};
use crate::domain::{
    normalize_text, FeedbackId, HitView, SearchHit, SearchPage, SearchQuery, SimilarTo,
    StoredFeedback,
};
use crate::error::{Error, Result};
use crate::index::vectors::{self, KeyFilter};
use crate::index::SearchIndex;
use crate::nlp::NlpError;
use crate::store::Store;

impl Engine {
    /// A page of items matching the query, filters and sort (or, with
    /// `similar_to`, ranked by similarity), with facets and snippets.
    pub async fn search(&self, ctx: &RequestContext, mut query: SearchQuery) -> Result<SearchPage> {
        query.taxonomy_version = self.themes.version();
        if let Some(similar_to) = query.similar_to.clone() {
            return self.search_similar(ctx, query, similar_to).await;
        }
        self.removals_applied(ctx).await?;
        let index = self.index.clone();
        let store = self.store.clone();
        let slot = self.reads.enter(ctx).await?;
        let reads = self.reads.clone();
        run_search(&self.reads, ctx, slot, move || {
            // Read before the search takes its searcher, which then holds
            // every change through it.
            let indexed = index.indexed_seq();
            let page = index.search_with(&query, reads.spread_if_idle())?;
            let ids: Vec<FeedbackId> = page.hits.iter().map(|(id, _)| id.clone()).collect();
            // An id the index still lists but the store no longer has was
            // deleted after the last index refresh: it is skipped.
            let hits = if query.view == HitView::Ids {
                // Ids alone: the store is read only when it removed an item
                // the searcher may not have applied yet.
                let present = if store.last_removal_seq() <= indexed {
                    vec![true; ids.len()]
                } else {
                    store.contains_many(&ids)?
                };
                page.hits
                    .iter()
                    .zip(present)
                    .filter(|(_, present)| *present)
                    .map(|((id, score), _)| SearchHit {
                        id: id.clone(),
                        item: None,
                        score: *score,
                        snippet: None,
                    })
                    .collect()
            } else {
                let items = store.get_many(&ids)?;
                page.hits
                    .iter()
                    .zip(items)
                    .filter_map(|((id, score), item)| {
                        let item = item?;
                        let snippet = page.snippet(&item.feedback.text);
                        Some(SearchHit {
                            id: id.clone(),
                            item: Some(query.view.trim(item)),
                            score: *score,
                            snippet,
                        })
                    })
                    .collect()
            };
            Ok(SearchPage {
                hits,
                total_hits: page.total_hits,
                total_is_lower_bound: page.total_is_lower_bound,
                next_cursor: page.next_cursor.clone(),
                facets: page.facets.clone(),
                taxonomy_version: query.taxonomy_version,
                retag_pending: page.retag_pending,
            })
        })
        .await
    }

    /// Ranks the items matching the query and filter by cosine similarity
    /// of their document embeddings to an item's or a text's: over every
    /// match with the vector index, over the newest matches until it is
    /// built (or with it off).
    async fn search_similar(
        &self,
        ctx: &RequestContext,
        query: SearchQuery,
        similar_to: SimilarTo,
    ) -> Result<SearchPage> {
        // Before the text's inference, which a refusal would waste.
        self.removals_applied(ctx).await?;
        let target = match &similar_to {
            SimilarTo::Item(id) => {
                let store = self.store.clone();
                let id = id.clone();
                run_blocking(ctx, move || Ok(store.embedding(&id)?))
                    .await?
                    .ok_or_else(|| Error::invalid("similar_to_id", "no analysed item with this id (it may not exist or not be analysed yet)"))?
            }
            SimilarTo::Text(text) => {
                let pool = self.analysis.as_ref().ok_or(NlpError::Disabled)?;
                crate::nlp::check_text(text)
                    .map_err(|r| Error::invalid("similar_to_text", r.reason))?;
                ctx.check_deadline()?;
                pool.embed(vec![normalize_text(text).into_owned()])
                    .await?
                    .pop()
                    .unwrap_or_default()
            }
        };
        let index = self.index.clone();
        let store = self.store.clone();
        let slot = self.reads.enter(ctx).await?;
        run_blocking(ctx, move || {
            let _slot = slot;
            let source = match &similar_to {
                SimilarTo::Item(source) => Some(source.clone()),
                SimilarTo::Text(_) => None,
            };
            let ranked = if index.vectors_ready() {
                rank_with_vector_index(&index, &store, &query, &target, source.as_ref())?
            } else {
                rank_newest(&index, &store, &query, &target, source.as_ref())?
            };
            let ids: Vec<FeedbackId> = ranked.hits.iter().map(|(id, _)| id.clone()).collect();
            let items = match query.view {
                HitView::Ids => store
                    .contains_many(&ids)?
                    .into_iter()
                    .map(|present| present.then_some(None))
                    .collect::<Vec<_>>(),
                HitView::Full | HitView::Summary => store
                    .get_many(&ids)?
                    .into_iter()
                    .map(|item| item.map(|item| Some(query.view.trim(item))))
                    .collect(),
            };
            let hits = ranked
                .hits
                .into_iter()
                .zip(items)
                .filter_map(|((id, score), item)| {
                    Some(SearchHit {
                        id,
                        item: item?,
                        score,
                        snippet: None,
                    })
                })
                .collect();
            Ok(SearchPage {
                hits,
                total_hits: ranked.total_hits,
                total_is_lower_bound: ranked.total_is_lower_bound,
                next_cursor: None,
                facets: ranked.facets,
                taxonomy_version: query.taxonomy_version,
                retag_pending: ranked.retag_pending,
            })
        })
        .await
    }

    /// Items by id, in request order, and the ids that were not found; an
    /// id asked for more than once is answered once, where it first comes
    /// (found by review: a request of one large item's id 1,000 times
    /// decoded it 1,000 times into a ~40 MB response).
    pub async fn get(
        &self,
        ctx: &RequestContext,
        ids: Vec<FeedbackId>,
    ) -> Result<(Vec<StoredFeedback>, Vec<FeedbackId>)> {
        check_batch_size("ids", ids.len(), MAX_IDS_PER_REQUEST)?;
        let mut seen = std::collections::HashSet::with_capacity(ids.len());
        let ids: Vec<FeedbackId> = ids
            .into_iter()
            .filter(|id| seen.insert(id.clone()))
            .collect();
        let store = self.store.clone();
        let found = run_blocking(ctx, move || {
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
}

/// A similarity ranking before the items are read.
struct Ranked {
    hits: Vec<(FeedbackId, f32)>,
    total_hits: u64,
    total_is_lower_bound: bool,
    facets: Vec<crate::domain::FacetCounts>,
    retag_pending: u64,
}

/// Over every match (blocking): candidates from the vector index (the graph,
/// or a scan of the matches' vectors when a filter leaves few), re-ranked by
/// the exact cosine of their stored embeddings.
fn rank_with_vector_index(
    index: &SearchIndex,
    store: &Store,
    query: &SearchQuery,
    target: &[f32],
    source: Option<&FeedbackId>,
) -> Result<Ranked> {
    let scope = index.similar_scope(query)?;
    let mut hits = Vec::new();
    let empty_scope = scope.keys.as_ref().is_some_and(|keys| keys.is_empty());
    if let (Some(vectors), false) = (index.vectors(), empty_scope) {
        // One more: the source item itself is left out.
        let wanted = vectors::candidates_for(query.limit) + usize::from(source.is_some());
        let filter = match &scope.keys {
            Some(keys) => KeyFilter::Bits(keys),
            None => KeyFilter::All,
        };
        let keys: Vec<u64> = vectors
            .search(target, wanted, filter)
            .map_err(crate::index::IndexError::from)?
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        let ids = index.ids_of_keys(&keys)?.into_iter().flatten();
        hits = rerank(store, target, ids, source, query.limit)?;
    }
    // The scope counts every match (the vector search needs them all):
    // a bounded count is cut to its bound as the other sorts cut theirs.
    let (total_hits, total_is_lower_bound) = match query.total_hits_up_to {
        Some(bound) if scope.total_hits > bound => (bound, true),
        _ => (scope.total_hits, false),
    };
    Ok(Ranked {
        hits,
        total_hits,
        total_is_lower_bound,
        facets: scope.facets,
        retag_pending: scope.retag_pending,
    })
}

/// Before the vector index is built, or with it off (blocking): the exact
/// cosine over the newest `MAX_SIMILARITY_CANDIDATES` matches.
fn rank_newest(
    index: &SearchIndex,
    store: &Store,
    query: &SearchQuery,
    target: &[f32],
    source: Option<&FeedbackId>,
) -> Result<Ranked> {
    let candidates = SearchQuery {
        sort: crate::domain::SortOrder::Newest,
        limit: MAX_SIMILARITY_CANDIDATES,
        cursor: None,
        similar_to: None,
        ..query.clone()
    };
    let page = index.search(&candidates)?;
    let ids = page.hits.into_iter().map(|(id, _)| id);
    Ok(Ranked {
        hits: rerank(store, target, ids, source, query.limit)?,
        total_hits: page.total_hits,
        total_is_lower_bound: page.total_is_lower_bound,
        facets: page.facets,
        retag_pending: page.retag_pending,
    })
}

/// The `limit` candidates most similar to `target` by the exact cosine of
/// their stored embeddings, the source item left out.
fn rerank(
    store: &Store,
    target: &[f32],
    candidates: impl Iterator<Item = FeedbackId>,
    source: Option<&FeedbackId>,
    limit: usize,
) -> Result<Vec<(FeedbackId, f32)>> {
    let ids: Vec<FeedbackId> = candidates.filter(|id| Some(id) != source).collect();
    let embeddings = store.embeddings(&ids)?;
    Ok(vectors::rerank(
        target,
        ids.into_iter().zip(embeddings).collect(),
        limit,
    ))
}
