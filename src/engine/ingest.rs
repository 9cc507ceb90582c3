//! Writes: validating and storing batches (unary, streams, with or without
//! waiting for the analysis), deleting by id, erasing a customer.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use super::{check_batch_size, Engine, QueueMode, RequestContext};
use crate::domain::limits::{MAX_BATCH_ITEMS, MAX_IDS_PER_REQUEST, MAX_TEXT_BYTES};
use crate::domain::validate_customer_id;
use crate::domain::{
    Analysis, AnalysisState, Feedback, FeedbackDraft, FeedbackId, Rejection, UnixMicros,
};
use crate::error::{Error, Result};
use crate::nlp::{AnalysisPool, NlpError};
use crate::redact::RedactionPolicy;
use crate::store::{AnalysisUpdate, Deleted};

/// Time a `wait_for_analysis` ingest keeps before the caller's deadline to
/// answer without analyses (a tenth of what is left, within these bounds).
const ANSWER_MARGIN_MIN: std::time::Duration = std::time::Duration::from_millis(50);
const ANSWER_MARGIN_MAX: std::time::Duration = std::time::Duration::from_millis(500);

/// The outcome for one item of an ingest batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ItemOutcome {
    Stored(FeedbackId),
    Rejected(Rejection),
}

/// An item as it arrived: already converted (or rejected) by the transport.
pub type IncomingItem = std::result::Result<FeedbackDraft, Rejection>;

/// What a tenant redacts before anything is stored (`crate::redact`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RedactionSettings {
    pub policy: RedactionPolicy,
    /// Keep the text as sent in `Feedback::original_text`.
    pub keep_original: bool,
}

/// Read for every batch, so a change of the tenant's settings applies to
/// the next write without a restart.
pub type RedactionSource = Arc<dyn Fn() -> RedactionSettings + Send + Sync>;

/// Values with their positions in the request.
type Positioned<T> = Vec<(usize, T)>;

/// Replaces the PII the policy names in each item's text, before it is
/// stored, so the index, the analysis, snippets, reports and every read see
/// only the redacted text. A text the placeholders make longer than
/// `MAX_TEXT_BYTES` is refused (its position and why), not stored: every
/// stored text keeps the limit the analysis holds it to (found by review:
/// `a@b.co` is 6 bytes and `[EMAIL]` 7, so 32,767 bytes of short addresses
/// were stored as 37,448 and their analysis failed for good).
fn redact_items(
    items: Positioned<Feedback>,
    settings: &RedactionSettings,
) -> (Positioned<Feedback>, Positioned<Rejection>) {
    let mut kept = Vec::with_capacity(items.len());
    let mut refused = Vec::new();
    for (position, mut item) in items {
        let redacted = crate::redact::redact(&item.text, &settings.policy);
        if redacted.changed() {
            if redacted.text.len() > MAX_TEXT_BYTES {
                refused.push((
                    position,
                    Rejection::new(
                        "text",
                        format!(
                            "must be at most {MAX_TEXT_BYTES} bytes once redacted; the \
                             redaction policy's placeholders make it {} bytes",
                            redacted.text.len()
                        ),
                    ),
                ));
                continue;
            }
            let original = std::mem::replace(&mut item.text, redacted.text);
            if settings.keep_original {
                item.original_text = Some(original);
            }
        }
        kept.push((position, item));
    }
    (kept, refused)
}

impl Engine {
    /// Validates a batch and queues its valid items; the returned future
    /// resolves once they are durable. Queueing happens before this returns,
    /// so callers can keep several batches in flight in order.
    pub async fn submit_ingest(
        &self,
        ctx: &RequestContext,
        items: Vec<IncomingItem>,
        mode: QueueMode,
    ) -> Result<impl Future<Output = Result<Vec<ItemOutcome>>> + use<>> {
        check_batch_size("items", items.len(), MAX_BATCH_ITEMS)?;
        ctx.check_deadline()?;
        crate::metrics::observe_batch_size(crate::metrics::pool::INGEST, items.len());
        let queued = crate::metrics::queue_depth(crate::metrics::pool::INGEST).track();
        let (mut outcomes, mut accepted) = validate_batch(items, UnixMicros::now());
        let redaction = (self.redaction)();
        // Redaction before the duplicate check: an item redaction refuses
        // is not the first of its id (found by review: its later duplicate
        // was rejected as "duplicate of item N" and nothing was stored).
        if !redaction.policy.is_empty() && !accepted.is_empty() {
            // Regular expressions over up to 32 MiB: off the async executor.
            let refused;
            (accepted, refused) =
                tokio::task::spawn_blocking(move || redact_items(accepted, &redaction))
                    .await
                    .map_err(|e| Error::Task(e.to_string()))?;
            for (position, rejection) in refused {
                outcomes[position] = Some(ItemOutcome::Rejected(rejection));
            }
        }
        let accepted = reject_duplicates(&mut outcomes, accepted);
        let ids: Vec<(usize, FeedbackId)> =
            accepted.iter().map(|(i, f)| (*i, f.id.clone())).collect();
        let pending = if accepted.is_empty() {
            None
        } else {
            let items = accepted.into_iter().map(|(_, f)| f).collect();
            Some(self.store.submit_upsert(items, mode).await?)
        };
        Ok(async move {
            let _queued = queued;
            if let Some(pending) = pending {
                pending.await?;
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
        ctx: &RequestContext,
        items: Vec<IncomingItem>,
        mode: QueueMode,
    ) -> Result<Vec<ItemOutcome>> {
        self.submit_ingest(ctx, items, mode).await?.await
    }

    /// Ingests, then analyses the accepted items before returning (the
    /// `wait_for_analysis` mode): each stored item's analysis comes back with
    /// its outcome and is saved like the background analysis would.
    pub async fn ingest_and_analyze(
        &self,
        ctx: &RequestContext,
        items: Vec<IncomingItem>,
    ) -> Result<Vec<(ItemOutcome, Option<Analysis>)>> {
        let pool = self.analysis.clone().ok_or(NlpError::Disabled)?;
        let outcomes = self
            .ingest(ctx, items, QueueMode::brief(ctx.deadline))
            .await?;
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
        // The items are durable now: neither the deadline nor an analysis
        // or store problem may turn the answer into an error (a retry of
        // items with generated ids would store them twice); what is not
        // analysed here is left to the background analysis.
        if ctx.check_deadline().is_err() {
            return Ok(outcomes.into_iter().map(|o| (o, None)).collect());
        }
        let work = self.analyse_stored(ctx, pool, ids);
        // The answer must reach the caller before its deadline, analysed or
        // not: reading, analysing and saving all run under the cutoff.
        let analysed = match ctx.deadline {
            None => work.await,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                let margin = (left / 10).clamp(ANSWER_MARGIN_MIN, ANSWER_MARGIN_MAX);
                tokio::time::timeout(left.saturating_sub(margin), work)
                    .await
                    .unwrap_or_else(|_| {
                        tracing::info!("the deadline of a wait_for_analysis ingest is near; its analysis is left to the background");
                        None
                    })
            }
        };
        let mut by_id = analysed.unwrap_or_default();
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

    /// The `wait_for_analysis` work on stored items: reads their versions,
    /// analyses and saves them; the analyses by id, or `None` where a read,
    /// the analysis or the save failed (logged; the background analysis
    /// does them). Versions the background saved first are answered with
    /// what the store holds.
    async fn analyse_stored(
        &self,
        ctx: &RequestContext,
        pool: AnalysisPool,
        ids: Vec<FeedbackId>,
    ) -> Option<HashMap<FeedbackId, Analysis>> {
        let after_write = RequestContext {
            deadline: None,
            ..ctx.clone()
        };
        let versions = match self.get(&after_write, ids).await {
            Ok((versions, _)) => versions,
            Err(error) => {
                tracing::warn!(%error, "reading the items to analyse while ingesting failed; left to the background analysis");
                return None;
            }
        };
        let texts: Vec<String> = versions.iter().map(|v| v.feedback.text.clone()).collect();
        let analyses = match pool.analyze(texts, true).await {
            Ok(mut analyses) => {
                self.tag_all(&mut analyses);
                analyses
            }
            Err(error) => {
                tracing::warn!(%error, "analysis while ingesting failed; left to the background analysis");
                return None;
            }
        };
        let mut by_id: HashMap<FeedbackId, Analysis> = HashMap::new();
        let mut seqs: HashMap<FeedbackId, u64> = HashMap::new();
        let mut updates = Vec::new();
        for (version, analysis) in versions.into_iter().zip(analyses) {
            let update = AnalysisUpdate::from_result(version.feedback.id, version.seq, analysis);
            if let AnalysisState::Done(analysis) = &update.state {
                by_id.insert(update.id.clone(), analysis.clone());
            }
            seqs.insert(update.id.clone(), version.seq);
            updates.push(update);
        }
        let saved = match self.store.set_analysis(updates).await {
            Ok(saved) => saved,
            Err(error) => {
                tracing::warn!(%error, "saving the analyses of an ingest failed; left to the background analysis");
                return None;
            }
        };
        if saved.stale > 0 {
            // The background analysis saved some of these versions first (or
            // the items changed): answer with what the store holds, so the
            // answer agrees with Get and Search.
            for (id, _) in &saved.saved {
                seqs.remove(id);
            }
            by_id.retain(|id, _| !seqs.contains_key(id));
            let unsaved: Vec<FeedbackId> = seqs.keys().cloned().collect();
            // Best effort: those left out are read with Get later.
            let stored = match self.get(&after_write, unsaved).await {
                Ok((stored, _)) => stored,
                Err(error) => {
                    tracing::warn!(%error, "reading back analyses saved by the background analysis failed");
                    Vec::new()
                }
            };
            for item in stored {
                if let (AnalysisState::Done(analysis), Some(&seq)) =
                    (item.analysis, seqs.get(&item.feedback.id))
                {
                    if item.seq == seq {
                        by_id.insert(item.feedback.id, analysis);
                    }
                }
            }
        }
        Some(by_id)
    }

    /// Deletes by id; returns (deleted count, missing ids).
    pub async fn delete(
        &self,
        ctx: &RequestContext,
        ids: Vec<FeedbackId>,
    ) -> Result<(usize, Vec<FeedbackId>)> {
        check_batch_size("ids", ids.len(), MAX_IDS_PER_REQUEST)?;
        ctx.check_deadline()?;
        // An id named twice is deleted once, and not also reported missing.
        let mut seen = std::collections::HashSet::with_capacity(ids.len());
        let ids: Vec<FeedbackId> = ids
            .into_iter()
            .filter(|id| seen.insert(id.clone()))
            .collect();
        let Deleted { deleted, missing } = self
            .store
            .delete(ids, QueueMode::brief(ctx.deadline))
            .await?;
        Ok((deleted.len(), missing))
    }

    /// Erases every item of a customer; returns how many.
    pub async fn delete_customer(
        &self,
        ctx: &RequestContext,
        customer_id: String,
    ) -> Result<usize> {
        // The same rule as an item's customer_id, and not empty.
        let customer_id =
            validate_customer_id(customer_id).map_err(|r| Error::invalid(r.field, r.reason))?;
        if customer_id.is_empty() {
            return Err(Error::invalid("customer_id", "must not be empty"));
        }
        ctx.check_deadline()?;
        let deleted = self
            .store
            .delete_customer(customer_id, QueueMode::brief(ctx.deadline))
            .await?;
        // The erased customer's id is a personal identifier: it is never
        // written to the log.
        tracing::info!(deleted = deleted.len(), "customer erased");
        Ok(deleted.len())
    }
}

/// Validates every item. Returns per-position outcomes (None: accepted,
/// filled in after the write) and the valid items with their positions.
fn validate_batch(
    items: Vec<IncomingItem>,
    now: UnixMicros,
) -> (Vec<Option<ItemOutcome>>, Positioned<Feedback>) {
    let mut outcomes = vec![None; items.len()];
    let mut accepted = Vec::with_capacity(items.len());
    for (position, item) in items.into_iter().enumerate() {
        match item.and_then(|draft| draft.validate(now)) {
            Ok(feedback) => accepted.push((position, feedback)),
            Err(rejection) => outcomes[position] = Some(ItemOutcome::Rejected(rejection)),
        }
    }
    (outcomes, accepted)
}

/// Rejects the later of two accepted items with the same id; returns the
/// rest.
fn reject_duplicates(
    outcomes: &mut [Option<ItemOutcome>],
    accepted: Positioned<Feedback>,
) -> Positioned<Feedback> {
    let mut first_position: HashMap<FeedbackId, usize> = HashMap::new();
    let mut kept = Vec::with_capacity(accepted.len());
    for (position, feedback) in accepted {
        if let Some(first) = first_position.get(&feedback.id) {
            outcomes[position] = Some(ItemOutcome::Rejected(Rejection::new(
                "id",
                format!("duplicate of item {first} in this batch"),
            )));
        } else {
            first_position.insert(feedback.id.clone(), position);
            kept.push((position, feedback));
        }
    }
    kept
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
        let (mut outcomes, accepted) = validate_batch(items, UnixMicros(0));
        let accepted = reject_duplicates(&mut outcomes, accepted);
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
