//! The typed writes. Each is a struct holding its inputs, applied by the
//! writer thread inside its group's transaction, with its own result type
//! that the caller gets once the group is durable. Adding a write means one
//! struct implementing `WriteOperation` here and one method on `Store`.
//!
//! Every write that changes an item appends to the change log (`log_change`)
//! in the same transaction, so the index follows it.

use redb::ReadableTable;

use super::themes::{f32_bytes, ThemeTag, META_TAXONOMY_INSTALLED, META_TAXONOMY_VERSION};
use super::writer::{TxnContext, WriteOperation};
use super::{decode, encode, new_version, StoreError};
use crate::domain::{
    theme_terms_digest, Analysis, AnalysisState, Feedback, FeedbackId, Rejection, Theme,
    ThemeMention,
};

/// Insert or replace these (validated, id-unique) items.
pub(super) struct Upsert(pub(super) Vec<Feedback>);

/// What an upsert stored.
#[derive(Debug, PartialEq, Eq)]
pub struct Upserted {
    pub count: usize,
}

impl WriteOperation for Upsert {
    type Output = Upserted;

    fn weight(&self) -> usize {
        self.0.len()
    }

    fn apply(self, tx: &mut TxnContext<'_>) -> Result<Upserted, StoreError> {
        let count = self.0.len();
        for feedback in self.0 {
            let seq = tx.next_seq();
            let id = feedback.id.as_str().to_string();
            let customer = feedback.customer_id.clone();
            let bytes = encode(&new_version(feedback, seq))?;
            let previous = tx
                .items
                .insert(id.as_str(), bytes.as_slice())?
                .map(|old| decode(&id, old.value()))
                .transpose()?;
            if let Some(previous) = previous {
                // The replaced version will never be analysed: its queue
                // entry went on counting in `Stats.analysis_backlog`.
                tx.analysis_queue.remove(previous.seq)?;
                tx.embeddings.remove(id.as_str())?;
                tx.units.remove(id.as_str())?;
                tx.tags.remove(id.as_str())?;
                let old_customer = &previous.feedback.customer_id;
                if !old_customer.is_empty() && *old_customer != customer {
                    tx.customers.remove(old_customer.as_str(), id.as_str())?;
                }
            }
            if !customer.is_empty() {
                tx.customers.insert(customer.as_str(), id.as_str())?;
            }
            tx.changes.insert(seq, id.as_str())?;
            tx.analysis_queue.insert(seq, id.as_str())?;
        }
        Ok(Upserted { count })
    }
}

/// Delete these ids.
pub(super) struct Delete(pub(super) Vec<FeedbackId>);

/// What a delete removed, and the ids it did not find.
#[derive(Debug, PartialEq, Eq)]
pub struct Deleted {
    pub deleted: Vec<FeedbackId>,
    pub missing: Vec<FeedbackId>,
}

impl WriteOperation for Delete {
    type Output = Deleted;

    fn weight(&self) -> usize {
        self.0.len()
    }

    fn apply(self, tx: &mut TxnContext<'_>) -> Result<Deleted, StoreError> {
        let mut deleted = Vec::new();
        let mut missing = Vec::new();
        for id in self.0 {
            let previous = tx
                .items
                .remove(id.as_str())?
                .map(|old| decode(id.as_str(), old.value()))
                .transpose()?;
            match previous {
                Some(previous) => {
                    tx.analysis_queue.remove(previous.seq)?;
                    tx.embeddings.remove(id.as_str())?;
                    tx.units.remove(id.as_str())?;
                    tx.tags.remove(id.as_str())?;
                    let customer = &previous.feedback.customer_id;
                    if !customer.is_empty() {
                        tx.customers.remove(customer.as_str(), id.as_str())?;
                    }
                    tx.log_removal(id.as_str())?;
                    deleted.push(id);
                }
                None => missing.push(id),
            }
        }
        Ok(Deleted { deleted, missing })
    }
}

/// Delete every item of this customer id; the output is the erased ids.
pub(super) struct DeleteCustomer(pub(super) String);

impl WriteOperation for DeleteCustomer {
    type Output = Vec<FeedbackId>;

    fn weight(&self) -> usize {
        1
    }

    fn apply(self, tx: &mut TxnContext<'_>) -> Result<Vec<FeedbackId>, StoreError> {
        let ids: Vec<String> = tx
            .customers
            .remove_all(self.0.as_str())?
            .map(|id| id.map(|id| id.value().to_string()))
            .collect::<Result<_, _>>()?;
        let mut deleted = Vec::with_capacity(ids.len());
        for id in ids {
            tx.embeddings.remove(id.as_str())?;
            tx.units.remove(id.as_str())?;
            tx.tags.remove(id.as_str())?;
            let removed = tx
                .items
                .remove(id.as_str())?
                .map(|old| decode(&id, old.value()))
                .transpose()?;
            if let Some(removed) = removed {
                tx.analysis_queue.remove(removed.seq)?;
                tx.log_removal(id.as_str())?;
                deleted.push(FeedbackId::parse(&id).map_err(|reason| {
                    StoreError::WriteFailed(format!("stored id {id:?} is invalid: {reason}"))
                })?);
            }
        }
        Ok(deleted)
    }
}

/// The analysis of one item version (`version_seq` is the `seq` the text was
/// read at: if the item changed since, the update is dropped as stale).
#[derive(Debug)]
pub struct AnalysisUpdate {
    pub id: FeedbackId,
    pub version_seq: u64,
    pub state: AnalysisState,
    /// The document embedding, stored in its own table (empty: none).
    pub embedding: Vec<f32>,
    /// The units themes are assigned to (`themes::units` layout), stored in
    /// their own table so a theme edit re-tags without the encoder (empty: none).
    pub units: Vec<u8>,
}

impl AnalysisUpdate {
    /// The update for one analysed version: a rejection becomes FAILED with
    /// its reason; the document embedding moves to its own table.
    pub fn from_result(
        id: FeedbackId,
        version_seq: u64,
        result: Result<Analysis, Rejection>,
    ) -> Self {
        let (state, embedding, units) = match result {
            Ok(mut analysis) => {
                let embedding = std::mem::take(&mut analysis.embedding);
                let units = crate::themes::units::encode(&std::mem::take(&mut analysis.units));
                (AnalysisState::Done(analysis), embedding, units)
            }
            Err(rejection) => (
                AnalysisState::Failed {
                    reason: rejection.to_string(),
                },
                Vec::new(),
                Vec::new(),
            ),
        };
        AnalysisUpdate {
            id,
            version_seq,
            state,
            embedding,
            units,
        }
    }
}

/// Attach analyses to the item versions they were computed for (and clear
/// their analysis-queue entries).
pub(super) struct SetAnalysis(pub(super) Vec<AnalysisUpdate>);

/// Versions updated (id, change-log seq), and updates dropped because the
/// item changed or went.
#[derive(Debug, PartialEq, Eq)]
pub struct AnalysisSaved {
    pub saved: Vec<(FeedbackId, u64)>,
    pub stale: usize,
}

impl WriteOperation for SetAnalysis {
    type Output = AnalysisSaved;

    fn weight(&self) -> usize {
        self.0.len()
    }

    fn apply(self, tx: &mut TxnContext<'_>) -> Result<AnalysisSaved, StoreError> {
        let mut saved = Vec::new();
        let mut stale = 0;
        for update in self.0 {
            // The queue entry is the version's one ticket to an analysis:
            // the background analysis and a `wait_for_analysis` ingest may
            // both analyse a version, and only the first to save it counts
            // (a second save would replace the analysis the first caller
            // was answered with, and log the change twice); except that an
            // analysis replaces a failure saved first.
            let ticket = tx.analysis_queue.remove(update.version_seq)?.is_some();
            let id = update.id.as_str().to_string();
            let current = tx
                .items
                .get(id.as_str())?
                .map(|bytes| decode(&id, bytes.value()))
                .transpose()?;
            let mends_a_failure = |item: &crate::domain::StoredFeedback| {
                matches!(item.analysis, AnalysisState::Failed { .. })
                    && matches!(update.state, AnalysisState::Done(_))
            };
            match current {
                Some(mut item)
                    if item.seq == update.version_seq && (ticket || mends_a_failure(&item)) =>
                {
                    // The item keeps its version seq (the index's stable
                    // tie-breaker); the change log gets a new one.
                    item.analysis = update.state;
                    match &item.analysis {
                        AnalysisState::Done(analysis) => put_tag(tx, &id, item.seq, analysis)?,
                        _ => {
                            tx.tags.remove(id.as_str())?;
                        }
                    }
                    tx.items.insert(id.as_str(), encode(&item)?.as_slice())?;
                    let seq = tx.log_change(id.as_str())?;
                    if !update.embedding.is_empty() {
                        let bytes: Vec<u8> = update
                            .embedding
                            .iter()
                            .flat_map(|v| v.to_le_bytes())
                            .collect();
                        tx.embeddings.insert(id.as_str(), bytes.as_slice())?;
                    }
                    if !update.units.is_empty() {
                        tx.units.insert(id.as_str(), update.units.as_slice())?;
                    }
                    saved.push((update.id, seq));
                }
                _ => stale += 1,
            }
        }
        Ok(AnalysisSaved { saved, stale })
    }
}

/// Drop change-log entries through this seq (the index has them).
pub(super) struct TrimChanges(pub(super) u64);

impl WriteOperation for TrimChanges {
    type Output = ();

    fn weight(&self) -> usize {
        1
    }

    fn apply(self, tx: &mut TxnContext<'_>) -> Result<(), StoreError> {
        tx.changes.retain_in(..=self.0, |_, _| false)?;
        Ok(())
    }
}

/// New themes of one analysed item version, from a re-tag.
#[derive(Debug)]
pub struct ThemeUpdate {
    pub id: FeedbackId,
    /// The `seq` of the version the units were read with (stale otherwise).
    pub version_seq: u64,
    pub themes: Vec<ThemeMention>,
    pub taxonomy_version: u64,
}

/// Replace the themes of analysed item versions (the re-tag after an edit).
pub(super) struct SetThemes(pub(super) Vec<ThemeUpdate>);

impl WriteOperation for SetThemes {
    /// Items re-tagged (the others changed or went meanwhile).
    type Output = usize;

    fn weight(&self) -> usize {
        self.0.len()
    }

    fn apply(self, tx: &mut TxnContext<'_>) -> Result<usize, StoreError> {
        let mut saved = 0;
        for update in self.0 {
            let id = update.id.as_str();
            let current = tx
                .items
                .get(id)?
                .map(|bytes| decode(id, bytes.value()))
                .transpose()?;
            let Some(mut item) = current.filter(|item| item.seq == update.version_seq) else {
                continue;
            };
            let AnalysisState::Done(analysis) = &mut item.analysis else {
                continue;
            };
            analysis.themes = update.themes;
            analysis.taxonomy_version = update.taxonomy_version;
            put_tag(tx, id, item.seq, analysis)?;
            tx.items.insert(id, encode(&item)?.as_slice())?;
            tx.log_change(id)?;
            saved += 1;
        }
        Ok(saved)
    }
}

/// The tag of an item version as written in its record.
fn put_tag(
    tx: &mut TxnContext<'_>,
    id: &str,
    seq: u64,
    analysis: &Analysis,
) -> Result<(), StoreError> {
    let tag = ThemeTag {
        seq,
        version: analysis.taxonomy_version,
        record_version: analysis.taxonomy_version,
        digest: theme_terms_digest(&analysis.themes),
    };
    tx.tags.insert(id, tag.to_bytes().as_slice())?;
    Ok(())
}

/// A re-tag found mentions with the same `theme_terms` under a newer
/// taxonomy version.
#[derive(Debug)]
pub struct ThemeConfirm {
    pub id: FeedbackId,
    /// The item version and the digest its units were read with: the
    /// confirmation is dropped if either changed since.
    pub version_seq: u64,
    pub digest: u64,
    pub taxonomy_version: u64,
    /// The new version's mentions (scores and spans may differ).
    pub themes: Vec<ThemeMention>,
}

/// Record that items keep their indexed themes under a newer taxonomy
/// version: the tag alone changes (the header and the new mentions); the
/// item record, the change log and the index do not (`Store::retag`
/// records the applied versions in `ConfirmedVersions`, which the index reads).
pub(super) struct ConfirmThemes(pub(super) Vec<ThemeConfirm>);

impl WriteOperation for ConfirmThemes {
    /// (item version seq, taxonomy version) of each confirmation applied.
    type Output = Vec<(u64, u64)>;

    fn weight(&self) -> usize {
        // A tag and a few mentions each, against a whole item record.
        self.0.len().div_ceil(4)
    }

    fn apply(self, tx: &mut TxnContext<'_>) -> Result<Vec<(u64, u64)>, StoreError> {
        let mut applied = Vec::with_capacity(self.0.len());
        for confirm in self.0 {
            let id = confirm.id.as_str();
            // One walk down the tree to read and replace the tag.
            let Some(mut slot) = tx.tags.get_mut(id)? else {
                continue;
            };
            let mut tag = ThemeTag::from_bytes(id, slot.value())?;
            if tag.seq != confirm.version_seq
                || tag.digest != confirm.digest
                || tag.version >= confirm.taxonomy_version
            {
                continue;
            }
            tag.version = confirm.taxonomy_version;
            slot.insert(tag.confirmed_bytes(id, &confirm.themes)?.as_slice())?;
            applied.push((tag.seq, tag.version));
        }
        Ok(applied)
    }
}

/// One page of a re-tag: the rewrites, then the confirmations (disjoint
/// items), in one transaction.
pub(super) struct Retag {
    pub(super) rewrites: SetThemes,
    pub(super) confirms: ConfirmThemes,
}

impl WriteOperation for Retag {
    /// Items rewritten; (item version seq, taxonomy version) of each
    /// confirmation applied.
    type Output = (usize, Vec<(u64, u64)>);

    fn weight(&self) -> usize {
        self.rewrites.weight() + self.confirms.weight()
    }

    fn apply(self, tx: &mut TxnContext<'_>) -> Result<Self::Output, StoreError> {
        let rewritten = self.rewrites.apply(tx)?;
        let applied = self.confirms.apply(tx)?;
        Ok((rewritten, applied))
    }
}

/// Bumps the taxonomy version; returns the new one.
fn bump_taxonomy(tx: &mut TxnContext<'_>) -> Result<u64, StoreError> {
    let version = tx.meta.get(META_TAXONOMY_VERSION)?.map_or(0, |v| v.value()) + 1;
    tx.meta.insert(META_TAXONOMY_VERSION, version)?;
    Ok(version)
}

fn put_theme(tx: &mut TxnContext<'_>, theme: &Theme) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(theme).map_err(StoreError::Encode)?;
    tx.themes.insert(theme.id.as_str(), bytes.as_slice())?;
    Ok(())
}

/// Create or replace one theme (already checked against the taxonomy).
pub(super) struct PutTheme(pub(super) Theme);

impl WriteOperation for PutTheme {
    /// The theme as stored, with the new taxonomy version.
    type Output = Theme;

    fn weight(&self) -> usize {
        1
    }

    fn apply(mut self, tx: &mut TxnContext<'_>) -> Result<Theme, StoreError> {
        self.0.version = bump_taxonomy(tx)?;
        put_theme(tx, &self.0)?;
        Ok(self.0)
    }
}

/// Delete themes by id; the output is the new taxonomy version.
pub(super) struct DeleteThemes(pub(super) Vec<String>);

impl WriteOperation for DeleteThemes {
    type Output = u64;

    fn weight(&self) -> usize {
        self.0.len()
    }

    fn apply(self, tx: &mut TxnContext<'_>) -> Result<u64, StoreError> {
        for id in &self.0 {
            tx.themes.remove(id.as_str())?;
        }
        bump_taxonomy(tx)
    }
}

/// Install the built-in taxonomy once per store; the output is the taxonomy
/// version (unchanged when it was installed before).
pub(super) struct InstallTaxonomy(pub(super) Vec<Theme>);

impl WriteOperation for InstallTaxonomy {
    type Output = u64;

    fn weight(&self) -> usize {
        self.0.len()
    }

    fn apply(self, tx: &mut TxnContext<'_>) -> Result<u64, StoreError> {
        if tx.meta.get(META_TAXONOMY_INSTALLED)?.is_some() {
            return Ok(tx.meta.get(META_TAXONOMY_VERSION)?.map_or(0, |v| v.value()));
        }
        let version = bump_taxonomy(tx)?;
        for mut theme in self.0 {
            theme.version = version;
            put_theme(tx, &theme)?;
        }
        tx.meta.insert(META_TAXONOMY_INSTALLED, 1)?;
        Ok(version)
    }
}

/// Cache embeddings of theme texts (examples, labels, the background).
pub(super) struct CacheTextEmbeddings(pub(super) Vec<(String, Vec<f32>)>);

impl WriteOperation for CacheTextEmbeddings {
    type Output = ();

    fn weight(&self) -> usize {
        self.0.len()
    }

    fn apply(self, tx: &mut TxnContext<'_>) -> Result<(), StoreError> {
        for (text, embedding) in self.0 {
            tx.text_embeddings
                .insert(text.as_str(), f32_bytes(&embedding).as_slice())?;
        }
        Ok(())
    }
}
