//! Reads: search pages (query language, filters, sort, facets, snippets),
//! similarity search over document embeddings, and items by id. Search
//! pages run in place on the async worker holding a read-pool slot
//! (`run_search`); other store reads and similarity run on the blocking pool.

use super::{check_batch_size, run_blocking, run_search, Engine, RequestContext};
use crate::domain::limits::{MAX_IDS_PER_REQUEST, MAX_SIMILARITY_CANDIDATES};
use crate::domain::{
    normalize_text, FeedbackId, HitView, SearchHit, SearchPage, SearchQuery, SimilarTo,
    StoredFeedback,
};
use crate::error::{Error, Result};
use crate::nlp::NlpError;

impl Engine {
    /// A page of items matching the query, filters and sort (or, with
    /// `similar_to`, ranked by similarity), with facets and snippets.
    pub async fn search(&self, ctx: &RequestContext, mut query: SearchQuery) -> Result<SearchPage> {
        query.taxonomy_version = self.themes.version();
        if let Some(similar_to) = query.similar_to.clone() {
            return self.search_similar(ctx, query, similar_to).await;
        }
        let index = self.index.clone();
        let store = self.store.clone();
        let slot = self.reads.enter(ctx).await?;
        run_search(ctx, move || {
            let _slot = slot;
            let page = index.search(&query)?;
            let ids: Vec<FeedbackId> = page.hits.iter().map(|(id, _)| id.clone()).collect();
            // An id the index still lists but the store no longer has was
            // deleted after the last index refresh: it is skipped.
            let hits = if query.view == HitView::Ids {
                let present = store.contains_many(&ids)?;
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

    /// Ranks the newest items matching the query and filter by cosine
    /// similarity of their document embeddings to an item's or a text's.
    async fn search_similar(
        &self,
        ctx: &RequestContext,
        query: SearchQuery,
        similar_to: SimilarTo,
    ) -> Result<SearchPage> {
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
            let hits = scored
                .into_iter()
                .zip(items)
                .filter_map(|((score, id), item)| {
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
                total_hits: page.total_hits,
                total_is_lower_bound: page.total_is_lower_bound,
                next_cursor: None,
                facets: page.facets,
                taxonomy_version: query.taxonomy_version,
                retag_pending: page.retag_pending,
            })
        })
        .await
    }

    /// Items by id, in request order, and the ids that were not found.
    pub async fn get(
        &self,
        ctx: &RequestContext,
        ids: Vec<FeedbackId>,
    ) -> Result<(Vec<StoredFeedback>, Vec<FeedbackId>)> {
        check_batch_size("ids", ids.len(), MAX_IDS_PER_REQUEST)?;
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
