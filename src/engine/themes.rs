//! Themes: taxonomy edits, the compiled model every analysis is tagged with,
//! the background re-tag after an edit, and discovery.
//!
//! Invariants:
//! - Taxonomy edits run one at a time (`edits` lock): each reads the
//!   committed taxonomy, checks the edit against it (`Taxonomy::check_*`),
//!   embeds the new texts *before* writing (so an edit that cannot be
//!   compiled is refused, not half-applied), commits, then swaps the model.
//! - Every analysis is tagged with exactly one model version, recorded in
//!   `Analysis::taxonomy_version`; the re-tag brings stored items to the
//!   current version from their stored units, without the encoder.

use std::collections::HashMap;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::watch;

use super::{run_blocking, Engine, QueueMode, RequestContext};
use crate::domain::limits::{MAX_DISCOVERY_CANDIDATES, MAX_DISCOVERY_SENTENCES};
use crate::domain::{
    normalize_text, theme_terms_digest, Analysis, AnalysisState, DeleteRefusal, SearchQuery,
    SentenceAnalysis, Sentiment, StoredFeedback, Taxonomy, Theme, ThemeDraft, ThemeMention,
};
use crate::error::{Error, Result};
use crate::nlp::{AnalysisPool, NlpError, SentimentHead};
use crate::store::{Store, ThemeConfirm, ThemeUpdate, UnitsOfItem};
use crate::themes::{self, discover, units::DecodedUnits, ThemeModel, UnitRef};

/// Embedding dimension of the encoder (e5-small).
const DIM: usize = 384;
/// Items the re-tag reads per step (one read snapshot, one or two writes:
/// ~8 MB of units and document embeddings).
const RETAG_PAGE: usize = 4096;
/// Threads a re-tag page is scored on at most (each scores a slice of it).
const RETAG_THREADS: usize = 4;
/// How often the re-tag looks for items tagged with an older version that
/// an analysis in flight during an edit may have written.
const RETAG_RECHECK: Duration = Duration::from_secs(5);

/// The compiled model and what it took to build it.
pub(crate) struct ThemeState {
    model: RwLock<Arc<ThemeModel>>,
    /// Embeddings of theme texts and the background, by text.
    cache: Mutex<HashMap<String, Arc<[f32]>>>,
    background: Mutex<Option<Arc<Vec<Vec<f32>>>>>,
    /// Whether the shared cache of fixed texts was read.
    shared_loaded: AtomicBool,
    /// Taxonomy edits, one at a time.
    edits: tokio::sync::Mutex<()>,
    /// The version of the model in use (0 until the first compile); the
    /// re-tag and `Analyze` wait on it.
    compiled: watch::Sender<Option<u64>>,
    /// The taxonomy version searches refer to: the model's, or with
    /// analysis off the store's.
    version: AtomicU64,
    /// The aspect-sentiment head every compiled model uses.
    aspect: Option<Arc<SentimentHead>>,
}

impl ThemeState {
    pub(crate) fn new() -> Arc<ThemeState> {
        Arc::new(ThemeState {
            model: RwLock::new(Arc::new(ThemeModel::empty(0))),
            cache: Mutex::new(HashMap::new()),
            background: Mutex::new(None),
            shared_loaded: AtomicBool::new(false),
            edits: tokio::sync::Mutex::new(()),
            compiled: watch::channel(None).0,
            version: AtomicU64::new(0),
            aspect: match SentimentHead::aspect(DIM) {
                Ok(head) => Some(Arc::new(head)),
                Err(error) => {
                    tracing::error!(%error, "aspect head not loaded; themes take their unit's sentiment");
                    None
                }
            },
        })
    }

    /// The taxonomy version items are tagged with now.
    pub(crate) fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    pub(crate) fn current(&self) -> Arc<ThemeModel> {
        self.model.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Tags an analysis with the current model.
    pub(crate) fn tag(&self, analysis: &mut Analysis) {
        let model = self.current();
        tag_with(&model, analysis);
    }

    /// Waits (up to `limit`) for the first compiled model.
    pub(crate) async fn ready(&self, limit: Duration) -> bool {
        let mut rx = self.compiled.subscribe();
        tokio::time::timeout(limit, rx.wait_for(|v| v.is_some()))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Embeds what the taxonomy needs (memory cache, then the store's cache,
    /// then the encoder) and compiles it; the model is not swapped in.
    async fn build(
        &self,
        store: &Store,
        pool: &AnalysisPool,
        taxonomy: &Taxonomy,
        interactive: bool,
    ) -> Result<Arc<ThemeModel>> {
        let background = self.background(store, pool).await?;
        let texts = themes::texts_needed(taxonomy);
        self.ensure_embedded(store, pool, texts, interactive)
            .await?;
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let taxonomy = taxonomy.clone();
        let aspect = self.aspect.clone();
        run_blocking(&RequestContext::internal(), move || {
            Ok(Arc::new(
                ThemeModel::compile(&taxonomy, |t| cache.get(t).map(|v| &v[..]), &background)
                    .with_aspect_head(aspect.as_deref()),
            ))
        })
        .await
    }

    fn swap(&self, model: Arc<ThemeModel>) {
        let version = model.version;
        *self.model.write().unwrap_or_else(|e| e.into_inner()) = model;
        self.version.store(version, Ordering::Release);
        self.compiled.send_replace(Some(version));
    }

    async fn background(&self, store: &Store, pool: &AnalysisPool) -> Result<Arc<Vec<Vec<f32>>>> {
        if let Some(background) = self
            .background
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return Ok(background);
        }
        let texts: Vec<String> = themes::background_sentences()
            .into_iter()
            .map(String::from)
            .collect();
        self.ensure_embedded(store, pool, texts.clone(), false)
            .await?;
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let background: Arc<Vec<Vec<f32>>> = Arc::new(
            texts
                .iter()
                .filter_map(|t| cache.get(t).map(|v| v.to_vec()))
                .collect(),
        );
        drop(cache);
        *self.background.lock().unwrap_or_else(|e| e.into_inner()) = Some(background.clone());
        Ok(background)
    }

    async fn ensure_embedded(
        &self,
        store: &Store,
        pool: &AnalysisPool,
        texts: Vec<String>,
        interactive: bool,
    ) -> Result<()> {
        let missing: Vec<String> = {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            texts
                .into_iter()
                .filter(|t| !cache.contains_key(t))
                .collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        self.load_shared(pool);
        let missing: Vec<String> = {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            missing
                .into_iter()
                .filter(|t| !cache.contains_key(t))
                .collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let reader = store.clone();
        let lookup = missing.clone();
        let stored = run_blocking(&RequestContext::internal(), move || {
            Ok(reader.text_embeddings(&lookup)?)
        })
        .await?;
        let mut to_embed = Vec::new();
        {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            for (text, vector) in missing.into_iter().zip(stored) {
                match vector {
                    Some(v) if v.len() == DIM => {
                        cache.insert(text, v.into());
                    }
                    _ => to_embed.push(text),
                }
            }
        }
        if to_embed.is_empty() {
            return Ok(());
        }
        let vectors = if interactive {
            pool.embed(to_embed.clone()).await?
        } else {
            pool.embed_background(to_embed.clone()).await?
        };
        let pairs: Vec<(String, Vec<f32>)> = to_embed.into_iter().zip(vectors).collect();
        {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            for (text, vector) in &pairs {
                cache.insert(text.clone(), vector.clone().into());
            }
        }
        let fixed = fixed_texts();
        if pairs.iter().any(|(text, _)| fixed.contains(text.as_str())) {
            self.save_shared(pool, fixed);
        }
        // A lost cache write only costs a re-embedding after a restart.
        if let Err(error) = store.cache_text_embeddings(pairs).await {
            tracing::warn!(%error, "theme text embeddings not cached");
        }
        Ok(())
    }

    /// Loads the shared cache of the server's fixed texts once.
    fn load_shared(&self, pool: &AnalysisPool) {
        if self.shared_loaded.swap(true, Ordering::AcqRel) {
            return;
        }
        let loaded = crate::nlp::text_cache::load(pool.shared_cache_path());
        let fixed = fixed_texts();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        for (text, vector) in loaded {
            if vector.len() == DIM && fixed.contains(text.as_str()) {
                cache.entry(text).or_insert_with(|| vector.into());
            }
        }
    }

    /// Writes the fixed texts known so far to the shared cache (best effort:
    /// a read-only models directory only means a slower first start).
    fn save_shared(&self, pool: &AnalysisPool, fixed: &HashSet<String>) {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let entries = cache
            .iter()
            .filter(|(text, _)| fixed.contains(text.as_str()))
            .map(|(text, vector)| (text.as_str(), &vector[..]));
        if let Err(error) = crate::nlp::text_cache::store(pool.shared_cache_path(), entries) {
            tracing::debug!(%error, "shared text-embedding cache not written");
        }
    }
}

/// The built-in taxonomy, checked by the same rules as any edit.
fn builtin() -> std::result::Result<Taxonomy, crate::domain::Rejection> {
    let mut taxonomy = Taxonomy::default();
    for draft in themes::builtin_taxonomy() {
        let theme = taxonomy.check_upsert(draft)?;
        taxonomy.themes.insert(theme.id.clone(), theme);
    }
    Ok(taxonomy)
}

/// The server's own fixed texts: the built-in taxonomy's and the background
/// (computed once).
fn fixed_texts() -> &'static HashSet<String> {
    static FIXED: std::sync::OnceLock<HashSet<String>> = std::sync::OnceLock::new();
    FIXED.get_or_init(|| {
        let mut fixed: HashSet<String> = builtin()
            .map(|taxonomy| themes::texts_needed(&taxonomy))
            .unwrap_or_default()
            .into_iter()
            .collect();
        fixed.extend(themes::background_sentences().into_iter().map(String::from));
        fixed
    })
}

/// Tags `analysis` from its units with `model`.
pub(crate) fn tag_with(model: &ThemeModel, analysis: &mut Analysis) {
    let refs: Vec<UnitRef<'_>> = analysis
        .units
        .iter()
        .map(|u| UnitRef {
            sentence: u.sentence,
            start: u.start,
            end: u.end,
            sentiment: u.sentiment,
            embedding: &u.embedding,
        })
        .collect();
    // An analysis without its document embedding has it empty: `assign`
    // ignores a vector of the wrong size.
    analysis.themes = model.assign(&refs, Some(&analysis.embedding));
    analysis.taxonomy_version = model.version;
}

/// Whether a unit spans its whole sentence (not one of its clauses).
/// The analysed sentences of some items that the theme model leaves
/// uncovered (at most `MAX_DISCOVERY_SENTENCES` sentences looked at).
pub(super) struct Uncovered {
    pub texts: Vec<String>,
    pub embeddings: Vec<Vec<f32>>,
    /// Class probabilities of each sentence.
    pub sentiments: Vec<[f32; 3]>,
    /// Each sentence's item, as a position in the input.
    pub owners: Vec<u32>,
    /// Whole sentences looked at (covered or not).
    pub total: u64,
    /// Per input position: whether the item's sentences were looked at.
    pub looked_at: Vec<bool>,
}

/// Reads the stored units of `items` (same order as `units`) and keeps the
/// whole sentences the model assigns no theme.
pub(super) fn uncovered_sentences(
    model: &ThemeModel,
    items: &[Option<StoredFeedback>],
    units: &[Option<Vec<u8>>],
) -> Uncovered {
    let mut out = Uncovered {
        texts: Vec::new(),
        embeddings: Vec::new(),
        sentiments: Vec::new(),
        owners: Vec::new(),
        total: 0,
        looked_at: vec![false; items.len()],
    };
    'items: for (position, (item, bytes)) in items.iter().zip(units).enumerate() {
        let (Some(item), Some(bytes)) = (item, bytes) else {
            continue;
        };
        let AnalysisState::Done(analysis) = &item.analysis else {
            continue;
        };
        let Some(decoded) = DecodedUnits::new(bytes, DIM) else {
            continue;
        };
        let refs = decoded.refs();
        let covered: std::collections::BTreeSet<usize> = model
            .assign(&refs, None)
            .into_iter()
            .flat_map(|m| m.sentences)
            .collect();
        let chars: Vec<char> = item.feedback.text.chars().collect();
        for unit in &refs {
            if !is_whole(&analysis.sentences, unit.sentence, unit.start, unit.end) {
                continue;
            }
            out.total += 1;
            if out.total as usize > MAX_DISCOVERY_SENTENCES {
                out.total -= 1;
                break 'items;
            }
            out.looked_at[position] = true;
            if covered.contains(&unit.sentence) {
                continue;
            }
            let sentence: String = chars[unit.start..unit.end.min(chars.len())]
                .iter()
                .collect();
            out.texts.push(normalize_text(&sentence).into_owned());
            out.embeddings.push(unit.embedding.to_vec());
            out.sentiments.push(unit.sentiment.probabilities());
            out.owners.push(position as u32);
        }
    }
    out
}

fn is_whole(sentences: &[SentenceAnalysis], sentence: usize, start: usize, end: usize) -> bool {
    sentences
        .get(sentence)
        .is_some_and(|s| s.start == start && s.end == end)
}

/// A theme as committed, and the taxonomy version after the edit.
pub struct ThemeEdit {
    pub theme: Theme,
    pub taxonomy_version: u64,
}

impl Engine {
    /// Installs the built-in taxonomy in a store that never had one, then
    /// compiles the taxonomy in the background and starts the re-tag task.
    pub async fn start_themes(&self) -> Result<()> {
        let store = self.store.clone();
        let internal = RequestContext::internal();
        let installed = run_blocking(&internal, move || Ok(store.taxonomy_installed()?)).await?;
        if !installed {
            let taxonomy = builtin().map_err(|r| Error::Task(format!("built-in taxonomy: {r}")))?;
            let version = self
                .store
                .install_taxonomy(taxonomy.themes.into_values().collect())
                .await?;
            tracing::info!(version, "built-in taxonomy installed");
        }
        // Until the first compilation, searches and reports filter on the
        // committed version: they used 0, so right after a start no theme
        // filter matched and every item counted as waiting for a re-tag.
        let store = self.store.clone();
        let committed = run_blocking(&internal, move || Ok(store.taxonomy_version()?)).await?;
        self.themes.version.fetch_max(committed, Ordering::AcqRel);
        let Some(pool) = self.analysis.clone() else {
            let store = self.store.clone();
            let taxonomy = run_blocking(&internal, move || Ok(store.taxonomy()?)).await?;
            self.themes
                .swap(Arc::new(ThemeModel::empty(taxonomy.version)));
            return Ok(());
        };
        let engine = self.clone();
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(200);
            loop {
                match engine.recompile(&pool, false).await {
                    Ok(version) => {
                        tracing::info!(version, "theme model compiled");
                        break;
                    }
                    Err(Error::Nlp(NlpError::Closed)) => return,
                    Err(error) => {
                        tracing::warn!(%error, "theme model not compiled; retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(10));
                    }
                }
            }
            engine.retag_loop().await;
        });
        Ok(())
    }

    /// Compiles the committed taxonomy and swaps it in; its version.
    async fn recompile(&self, pool: &AnalysisPool, interactive: bool) -> Result<u64> {
        let store = self.store.clone();
        let taxonomy =
            run_blocking(&RequestContext::internal(), move || Ok(store.taxonomy()?)).await?;
        let model = self
            .themes
            .build(&self.store, pool, &taxonomy, interactive)
            .await?;
        let version = model.version;
        self.themes.swap(model);
        Ok(version)
    }

    /// Creates or replaces a theme.
    pub async fn upsert_theme(&self, ctx: &RequestContext, draft: ThemeDraft) -> Result<ThemeEdit> {
        ctx.check_deadline()?;
        let _edit = self.themes.edits.lock().await;
        let store = self.store.clone();
        let taxonomy = run_blocking(ctx, move || Ok(store.taxonomy()?)).await?;
        let theme = taxonomy
            .check_upsert(draft)
            .map_err(|r| Error::invalid(r.field, r.reason))?;
        let mut next = taxonomy.clone();
        next.themes.insert(theme.id.clone(), theme.clone());
        if let Some(pool) = &self.analysis {
            // Embed first: an edit the server cannot compile is not written.
            let texts = themes::texts_needed(&next);
            self.themes
                .ensure_embedded(&self.store, pool, texts, true)
                .await?;
        }
        let theme = self
            .store
            .put_theme(theme, QueueMode::brief(ctx.deadline))
            .await?;
        let version = theme.version;
        self.after_edit(version).await;
        Ok(ThemeEdit {
            theme,
            taxonomy_version: version,
        })
    }

    /// Deletes a theme (and its sub-themes with `cascade`); the deleted ids
    /// and the new taxonomy version.
    pub async fn delete_theme(
        &self,
        ctx: &RequestContext,
        id: String,
        cascade: bool,
    ) -> Result<(Vec<String>, u64)> {
        ctx.check_deadline()?;
        crate::domain::check_theme_id("id", &id).map_err(|r| Error::invalid(r.field, r.reason))?;
        let _edit = self.themes.edits.lock().await;
        let store = self.store.clone();
        let taxonomy = run_blocking(ctx, move || Ok(store.taxonomy()?)).await?;
        let ids = taxonomy
            .check_delete(&id, cascade)
            .map_err(|refusal| match refusal {
                DeleteRefusal::NotFound => Error::NotFound(format!("theme {id:?}")),
                DeleteRefusal::HasChildren(children) => Error::FailedPrecondition(format!(
                    "theme {id:?} has sub-themes ({}); delete them first or set cascade",
                    children.join(", ")
                )),
            })?;
        let version = self
            .store
            .delete_themes(ids.clone(), QueueMode::brief(ctx.deadline))
            .await?;
        self.after_edit(version).await;
        Ok((ids, version))
    }

    /// Recompiles after a committed edit; a failure leaves the previous model
    /// in use and is retried by the re-tag loop's periodic check.
    async fn after_edit(&self, version: u64) {
        match &self.analysis {
            Some(pool) => {
                if let Err(error) = self.recompile(pool, true).await {
                    tracing::warn!(%error, "theme model not recompiled after an edit");
                }
            }
            None => self.themes.swap(Arc::new(ThemeModel::empty(version))),
        }
    }

    /// The taxonomy, parents first.
    pub async fn list_themes(&self, ctx: &RequestContext) -> Result<Taxonomy> {
        let store = self.store.clone();
        run_blocking(ctx, move || Ok(store.taxonomy()?)).await
    }

    /// Waits for the first theme model (a fresh server compiles it in the
    /// background) so `Analyze` never answers without themes silently.
    pub(super) async fn themes_ready(&self, ctx: &RequestContext) -> Result<()> {
        let limit = ctx
            .deadline
            .map(|d| d.saturating_duration_since(std::time::Instant::now()))
            .unwrap_or(Duration::from_secs(60));
        if self.themes.ready(limit).await {
            Ok(())
        } else {
            Err(Error::Nlp(NlpError::Overloaded { capacity: 0 }))
        }
    }

    /// Brings every analysed item to the current taxonomy version, then
    /// checks again after each edit and every `RETAG_RECHECK`.
    async fn retag_loop(&self) {
        let mut changes = self.themes.compiled.subscribe();
        let mut done: Option<u64> = None;
        loop {
            let model = self.themes.current();
            let stale = match self.index.count_retag_pending(model.version) {
                Ok(n) => n,
                Err(error) => {
                    tracing::warn!(%error, "re-tag check failed");
                    1
                }
            };
            if done != Some(model.version) || stale > 0 {
                match self.retag_pass(&model).await {
                    Ok((confirmed, rewritten)) => {
                        if confirmed + rewritten > 0 {
                            tracing::info!(
                                confirmed,
                                rewritten,
                                version = model.version,
                                "items re-tagged"
                            );
                        }
                        done = Some(model.version);
                    }
                    Err(error) => tracing::warn!(%error, "re-tag pass failed; retrying"),
                }
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(RETAG_RECHECK) => {}
            }
        }
    }

    /// One walk over the stored units; stops early when the model changes.
    /// Items whose mentions come out the same are confirmed under the new
    /// version (32 bytes in the store, nothing re-indexed); the others are
    /// rewritten and re-indexed.
    /// Returns how many items it confirmed and how many it rewrote.
    async fn retag_pass(&self, model: &Arc<ThemeModel>) -> Result<(usize, usize)> {
        let mut after: Option<String> = None;
        let mut tagged = (0, 0);
        // One page's writes run while the next page is read and scored.
        let mut writing: Option<tokio::task::JoinHandle<Result<(usize, usize)>>> = None;
        let mut finish = |done: Result<Result<(usize, usize)>, tokio::task::JoinError>| {
            let (confirmed, rewritten) = done.map_err(|e| Error::Task(e.to_string()))??;
            crate::metrics::retag_items(confirmed, rewritten);
            tagged.0 += confirmed;
            tagged.1 += rewritten;
            Ok::<_, Error>(())
        };
        loop {
            if self.themes.current().version != model.version {
                break;
            }
            let store = self.store.clone();
            let page_model = model.clone();
            let cursor = after.clone();
            let (retag, last) = run_blocking(&RequestContext::internal(), move || {
                let page = store.units_after(cursor.as_deref(), RETAG_PAGE, page_model.version)?;
                Ok((retag_page(&page_model, &page.items), page.last))
            })
            .await?;
            if let Some(previous) = writing.take() {
                finish(previous.await)?;
            }
            let store = self.store.clone();
            writing = Some(tokio::spawn(async move {
                if retag.rewrites.is_empty() && retag.confirms.is_empty() {
                    return Ok((0, 0));
                }
                let (rewritten, confirmed) = store.retag(retag.rewrites, retag.confirms).await?;
                Ok((confirmed, rewritten))
            }));
            match last {
                Some(last) => after = Some(last),
                None => break,
            }
        }
        if let Some(previous) = writing.take() {
            finish(previous.await)?;
        }
        Ok(tagged)
    }

    /// Analysed items still tagged with an older taxonomy version (as the
    /// index sees them).
    pub fn retag_backlog(&self) -> Result<(u64, u64)> {
        // The committed version, as ListThemes says: the compiled model's is
        // 0 until its first compilation after a start or a tenant's opening
        // (Stats said version 0 and every item waiting then).
        let version = self.store.taxonomy_version()?.max(self.themes.version());
        Ok((version, self.index.count_retag_pending(version)?))
    }
}

/// What one page of the re-tag writes.
#[derive(Default)]
struct RetagPage {
    /// Items whose mentions changed: rewritten and re-indexed.
    rewrites: Vec<ThemeUpdate>,
    /// Items whose mentions stay: their tag takes the new version.
    confirms: Vec<ThemeConfirm>,
}

/// Scores the page's items (tagged with another version than the model's,
/// `Store::units_after`) on up to `RETAG_THREADS` threads (the page is split
/// in order, so the outcome does not depend on the thread count).
fn retag_page(model: &ThemeModel, stale: &[UnitsOfItem]) -> RetagPage {
    let assign = |entries: &[UnitsOfItem]| -> Vec<Option<Vec<ThemeMention>>> {
        // One decode buffer for the whole chunk.
        let mut decoded = DecodedUnits::default();
        entries
            .iter()
            .map(|entry| {
                if !decoded.decode(&entry.units, DIM) {
                    return None;
                }
                Some(model.assign(&decoded.refs(), entry.document.as_deref()))
            })
            .collect()
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, RETAG_THREADS);
    let themes: Vec<Option<Vec<ThemeMention>>> = if threads == 1 || stale.len() < 64 {
        assign(stale)
    } else {
        let chunk = stale.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let handles: Vec<_> = stale
                .chunks(chunk)
                .map(|part| scope.spawn(move || assign(part)))
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("a re-tag scoring thread panicked"))
                .collect()
        })
    };
    let mut page = RetagPage::default();
    for (entry, themes) in stale.iter().zip(themes) {
        let Some(themes) = themes else { continue };
        let digest = theme_terms_digest(&themes);
        if entry.digest == Some(digest) {
            page.confirms.push(ThemeConfirm {
                id: entry.id.clone(),
                version_seq: entry.seq,
                digest,
                taxonomy_version: model.version,
                themes,
            });
        } else {
            page.rewrites.push(ThemeUpdate {
                themes,
                id: entry.id.clone(),
                version_seq: entry.seq,
                taxonomy_version: model.version,
            });
        }
    }
    page
}

/// What `DiscoverThemes` found.
pub struct DiscoveryReport {
    pub candidates: Vec<CandidateReport>,
    pub sentences: u64,
    pub uncovered: u64,
    pub outliers: u64,
    pub taxonomy_version: u64,
}

pub struct CandidateReport {
    pub name: String,
    pub keyphrases: Vec<String>,
    pub size: u32,
    pub share: f32,
    pub sentiment: Sentiment,
    pub representatives: Vec<String>,
    pub item_ids: Vec<String>,
}

impl Engine {
    /// Clusters the analysed sentences of the slice that the current
    /// taxonomy does not cover. Coverage is computed with the current model
    /// from the stored units (not the stored tags), so a candidate promoted a
    /// moment ago is already covered.
    pub async fn discover_themes(
        &self,
        ctx: &RequestContext,
        query: SearchQuery,
        limit: usize,
        min_size: usize,
    ) -> Result<DiscoveryReport> {
        ctx.check_deadline()?;
        let limit = match limit {
            0 => 10,
            n if n > MAX_DISCOVERY_CANDIDATES => {
                return Err(Error::invalid(
                    "limit",
                    format!("must be at most {MAX_DISCOVERY_CANDIDATES}, got {n}"),
                ))
            }
            n => n,
        };
        let min_size = if min_size == 0 { 5 } else { min_size };
        if self.analysis.is_none() {
            return Err(NlpError::Disabled.into());
        }
        self.themes_ready(ctx).await?;
        let model = self.themes.current();
        let index = self.index.clone();
        let store = self.store.clone();
        let ctx = ctx.clone();
        let outer = ctx.clone();
        // A slot of the read pool, as a report takes: the pass reads up to
        // MAX_DISCOVERY_SENTENCES items with their units (found by review:
        // calls at once were bounded by nothing).
        let slot = self.reads.enter(&outer).await?;
        run_blocking(&outer, move || {
            let _slot = slot;
            // The newest matching items, up to one sentence each at least.
            let ids = index.matching_ids(&query, MAX_DISCOVERY_SENTENCES)?;
            ctx.check_deadline()?;
            let items = store.get_many(&ids)?;
            let stored_units = store.units(&ids)?;
            let Uncovered {
                texts,
                embeddings,
                sentiments,
                owners,
                total,
                ..
            } = uncovered_sentences(&model, &items, &stored_units);
            let total = total.min(MAX_DISCOVERY_SENTENCES as u64);
            ctx.check_deadline()?;
            let sentences: Vec<discover::Sentence<'_>> = texts
                .iter()
                .zip(&embeddings)
                .zip(sentiments.iter().zip(&owners))
                .map(
                    |((text, embedding), (sentiment, &item))| discover::Sentence {
                        text,
                        embedding,
                        sentiment: sentiment[2] - sentiment[0],
                        item,
                    },
                )
                .collect();
            let params = discover::Params {
                max_candidates: limit,
                min_size,
                ..Default::default()
            };
            let found = discover::discover(&sentences, &params);
            let uncovered = sentences.len() as u64;
            let candidates = found
                .candidates
                .into_iter()
                .map(|c| CandidateReport {
                    size: c.members.len() as u32,
                    share: if uncovered == 0 {
                        0.0
                    } else {
                        c.members.len() as f32 / uncovered as f32
                    },
                    sentiment: mean_sentiment(c.members.iter().map(|&i| sentiments[i])),
                    representatives: c
                        .representatives
                        .iter()
                        .map(|&i| texts[i].clone())
                        .collect(),
                    item_ids: c
                        .representatives
                        .iter()
                        .map(|&i| ids[owners[i] as usize].to_string())
                        .collect(),
                    name: c.name,
                    keyphrases: c.keyphrases,
                })
                .collect();
            Ok(DiscoveryReport {
                candidates,
                sentences: total,
                uncovered,
                outliers: found.outliers.len() as u64,
                taxonomy_version: model.version,
            })
        })
        .await
    }
}

/// The sentiment of the mean class probabilities.
fn mean_sentiment(probabilities: impl Iterator<Item = [f32; 3]>) -> Sentiment {
    let mut sum = [0f32; 3];
    let mut n = 0f32;
    for p in probabilities {
        sum.iter_mut().zip(p).for_each(|(s, x)| *s += x);
        n += 1.0;
    }
    if n > 0.0 {
        sum.iter_mut().for_each(|s| *s /= n);
    }
    Sentiment::from_probabilities(sum)
}
