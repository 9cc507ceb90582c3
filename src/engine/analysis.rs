//! Analysis without storage, and the store's figures.

use super::{check_batch_size, run_blocking, Engine, RequestContext};
use crate::domain::limits::MAX_BATCH_ITEMS;
use crate::domain::{Analysis, Rejection};
use crate::error::Result;
use crate::nlp::NlpError;
use crate::store::StoreStats;

impl Engine {
    /// Analyses texts without storing them; per-text rejections in order.
    pub async fn analyze(
        &self,
        ctx: &RequestContext,
        texts: Vec<String>,
        include_embeddings: bool,
    ) -> Result<Vec<std::result::Result<Analysis, Rejection>>> {
        check_batch_size("texts", texts.len(), MAX_BATCH_ITEMS)?;
        let pool = self.analysis.as_ref().ok_or(NlpError::Disabled)?;
        self.themes_ready(ctx).await?;
        ctx.check_deadline()?;
        // The document embedding orders the themes (the text's own theme
        // first): always computed, returned only when asked for.
        let mut results = pool.analyze(texts, true).await?;
        self.tag_all(&mut results);
        if !include_embeddings {
            for analysis in results.iter_mut().flatten() {
                analysis.embedding = Vec::new();
            }
        }
        Ok(results)
    }

    /// Tags every analysis of `results` with the current theme model.
    pub(super) fn tag_all(&self, results: &mut [std::result::Result<Analysis, Rejection>]) {
        let model = self.themes.current();
        for analysis in results.iter_mut().flatten() {
            super::themes::tag_with(&model, analysis);
        }
    }

    /// The store's figures, the taxonomy version and the re-tag backlog.
    pub async fn stats(&self, ctx: &RequestContext) -> Result<ServiceStats> {
        let store = self.store.clone();
        let engine = self.clone();
        run_blocking(ctx, move || {
            let (taxonomy_version, retag_backlog) = engine.retag_backlog()?;
            Ok(ServiceStats {
                store: store.stats()?,
                taxonomy_version,
                retag_backlog,
            })
        })
        .await
    }
}

/// What `Stats` reports.
pub struct ServiceStats {
    pub store: StoreStats,
    pub taxonomy_version: u64,
    /// Analysed items tagged with an older taxonomy version (as indexed).
    pub retag_backlog: u64,
}
