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
        ctx.check_deadline()?;
        Ok(pool.analyze(texts, include_embeddings).await?)
    }

    /// Stored items, change-log entries not yet indexed, the last seq and
    /// the analysis backlog.
    pub async fn stats(&self, ctx: &RequestContext) -> Result<StoreStats> {
        let store = self.store.clone();
        run_blocking(ctx, move || Ok(store.stats()?)).await
    }
}
