//! Background analysis of stored items. Follows the store's durable
//! analysis queue (one entry per stored version), analyses the texts through
//! the shared `AnalysisPool`, and writes the results back through the store's
//! writer, which re-indexes the item. The queue lives in the store, so a
//! crash or restart resumes where it stopped: nothing stays pending forever.
//! Updates for a version that has been replaced or deleted meanwhile are
//! dropped (the newer version has its own queue entry).

use std::sync::Arc;
use std::time::Duration;

use crate::domain::{AnalysisState, Rejection};
use crate::engine::ThemeState;
use crate::nlp::{AnalysisPool, NlpError};
use crate::store::{AnalysisUpdate, Store};

/// Items read from the queue per round at most.
const ROUND_ITEMS: usize = 64;
/// Embeddings (a document plus its sentences) per round: a round ends at the
/// item that reaches it (a round has at least one item, of any size: the
/// pool streams a large text through in jobs).
const ROUND_EMBEDDINGS: usize = 1_024;

pub(crate) fn spawn(
    store: Store,
    pool: AnalysisPool,
    themes: Arc<ThemeState>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut idle_rounds = 0u32;
        // Rounds failed in a row.
        let mut failures = 0u32;
        let mut writable = store.writable();
        let mut paused = false;
        loop {
            // While the store refuses writes (a full disk, a read-only file
            // system) no analysis can be saved: a round would analyse the
            // same texts again every second, taking the cores from the
            // searches the server still answers. Wait for writes instead.
            if !*writable.borrow_and_update() {
                if !paused {
                    tracing::warn!("background analysis paused: the store refuses writes");
                    paused = true;
                }
                // The store's writer holds the sender as long as the
                // store lives; without it, nothing more can be saved.
                if let Ok(Err(_)) =
                    tokio::time::timeout(Duration::from_secs(1), writable.wait_for(|w| *w)).await
                {
                    return;
                }
                continue;
            }
            if paused {
                tracing::info!("background analysis resumes: the store takes writes again");
                paused = false;
            }
            match round(&store, &pool, &themes).await {
                Ok(0) => {
                    failures = 0;
                    idle_rounds = idle_rounds.saturating_add(1);
                    tokio::time::sleep(Duration::from_millis(if idle_rounds > 20 {
                        200
                    } else {
                        20
                    }))
                    .await;
                }
                Ok(_) => {
                    idle_rounds = 0;
                    failures = 0;
                }
                Err(RoundError::Stopped) => return,
                Err(RoundError::Failed(error)) => {
                    // A cause that lasts (a model that cannot run) is logged
                    // once a minute, not every second.
                    failures = failures.saturating_add(1);
                    if failures % 60 == 1 {
                        tracing::error!(%error, failures, "background analysis round failed; retrying every second");
                    } else {
                        tracing::debug!(%error, failures, "background analysis round failed again");
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    })
}

/// Whether an item's text can be why a batch failed (an inference error,
/// a text the model refuses), as opposed to the model not running at all.
fn item_may_cause(error: &NlpError) -> bool {
    matches!(error, NlpError::Inference(_) | NlpError::InvalidText { .. })
}

enum RoundError {
    Stopped,
    Failed(String),
}

/// Analyses one round of queued items; returns how many queue entries it settled.
async fn round(
    store: &Store,
    pool: &AnalysisPool,
    themes: &ThemeState,
) -> Result<usize, RoundError> {
    let reader = store.clone();
    let backlog = tokio::task::spawn_blocking(move || {
        let mut backlog = reader.analysis_backlog(ROUND_ITEMS)?;
        let mut embeddings = 0;
        let keep = backlog
            .iter()
            .position(|(_, _, item)| {
                embeddings += item.as_ref().map_or(0, |item| {
                    1 + crate::nlp::split_sentences(&item.feedback.text).len()
                });
                embeddings >= ROUND_EMBEDDINGS
            })
            .map_or(backlog.len(), |i| i + 1);
        backlog.truncate(keep);
        Ok::<_, crate::store::StoreError>(backlog)
    })
    .await
    .map_err(|e| RoundError::Failed(e.to_string()))?
    .map_err(|e| RoundError::Failed(e.to_string()))?;
    if backlog.is_empty() {
        return Ok(0);
    }
    let live: Vec<usize> = (0..backlog.len())
        .filter(|&i| backlog[i].2.is_some())
        .collect();
    let texts: Vec<String> = live
        .iter()
        .map(|&i| backlog[i].2.as_ref().expect("live").feedback.text.clone())
        .collect();
    let mut results: Vec<Option<Result<crate::domain::Analysis, Rejection>>> =
        vec![None; backlog.len()];
    let failed = |error: &NlpError| Rejection::new("text", format!("analysis failed: {error}"));
    if !texts.is_empty() {
        match pool.analyze_background(texts, true).await {
            Ok(analyses) => {
                for (&i, mut analysis) in live.iter().zip(analyses) {
                    if let Ok(analysis) = &mut analysis {
                        themes.tag(analysis);
                    }
                    results[i] = Some(analysis);
                }
            }
            Err(NlpError::Closed) => return Err(RoundError::Stopped),
            // The model could not run at all (not loaded, gone): nothing is
            // the items' fault, so none is marked; they stay queued and the
            // round is retried.
            Err(error) if !item_may_cause(&error) => {
                return Err(RoundError::Failed(error.to_string()))
            }
            Err(error) => {
                // One failure of a shared batch must not fail every item of
                // the round for good, nor a transient failure a batch of one:
                // each is tried alone once more, and only those that fail
                // alone are marked FAILED.
                tracing::warn!(%error, items = live.len(), "a background analysis batch failed; analysing its items one at a time");
                for &i in &live {
                    let text = backlog[i].2.as_ref().expect("live").feedback.text.clone();
                    results[i] = Some(match pool.analyze_background(vec![text], true).await {
                        Ok(mut one) if one.len() == 1 => {
                            let mut analysis = one.remove(0);
                            if let Ok(analysis) = &mut analysis {
                                themes.tag(analysis);
                            }
                            analysis
                        }
                        Ok(_) => Err(failed(&error)),
                        Err(NlpError::Closed) => return Err(RoundError::Stopped),
                        Err(error) if !item_may_cause(&error) => {
                            return Err(RoundError::Failed(error.to_string()))
                        }
                        Err(error) => Err(failed(&error)),
                    });
                }
            }
        }
    }
    let settled = backlog.len();
    let updates = backlog
        .into_iter()
        .zip(results)
        .map(|((version_seq, id, _), result)| match result {
            // Gone or replaced meanwhile: the store drops the update as stale.
            None => AnalysisUpdate {
                id,
                version_seq,
                state: AnalysisState::Pending,
                embedding: Vec::new(),
                units: Vec::new(),
            },
            Some(result) => AnalysisUpdate::from_result(id, version_seq, result),
        })
        .collect();
    store
        .set_analysis(updates)
        .await
        .map_err(|e| RoundError::Failed(e.to_string()))?;
    Ok(settled)
}
