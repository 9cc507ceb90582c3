//! The store's theme records: the taxonomy (themes by id, its version in
//! `meta`), each analysed item's units (int8 sentence and clause embeddings,
//! `themes::units`), and the embeddings of theme texts (examples, labels,
//! the calibration background) so a restart or an edit re-embeds only new
//! texts.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::{mentions, Store, StoreError, META};
use crate::domain::{AnalysisState, FeedbackId, StoredFeedback, Taxonomy, Theme, ThemeMention};

/// Theme id -> JSON `Theme`.
pub(crate) const THEMES: TableDefinition<&str, &[u8]> = TableDefinition::new("themes");
/// Item id -> its units (`themes::units` layout).
pub(crate) const UNITS: TableDefinition<&str, &[u8]> = TableDefinition::new("units");
/// Item id -> its `ThemeTag` (32 bytes), then, for a confirmed tag, the
/// mentions of the confirming version (`store::mentions`): which version's
/// themes the item carries, kept beside the item so a re-tag reads neither
/// the item nor its JSON, and can record "same indexed themes under the new
/// version" without rewriting or re-indexing the item.
pub(crate) const TAGS: TableDefinition<&str, &[u8]> = TableDefinition::new("theme_tags");
/// Theme text -> embedding (little-endian f32) under the model in
/// `META_EMBEDDING_MODEL`.
pub(crate) const TEXT_EMBEDDINGS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("text_embeddings");
/// The taxonomy version: bumped by every theme change.
pub(crate) const META_TAXONOMY_VERSION: &str = "taxonomy_version";
/// Set once the built-in taxonomy was installed (a user who deletes every
/// theme does not get it back on restart).
pub(crate) const META_TAXONOMY_INSTALLED: &str = "taxonomy_installed";

pub(crate) fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub(crate) fn bytes_f32(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// The theme tagging of one analysed item version.
///
/// Invariants: written with the item's analysis (`SetAnalysis`) and by a
/// re-tag rewrite (`SetThemes`), both with `version == record_version` and
/// nothing after the 32 bytes; raised by `ConfirmThemes` alone, which
/// appends the new version's mentions (`version > record_version`: the
/// stored item, and so the index built from it, still says
/// `record_version` with the same `theme_terms`; readers take the mentions
/// and the version from the tag, `Store::get_many`); removed whenever the
/// item gets a new version, fails analysis or goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThemeTag {
    /// The item version (`StoredFeedback::seq`) tagged.
    pub seq: u64,
    /// The taxonomy version the item's mentions are current for.
    pub version: u64,
    /// The taxonomy version written in the item record (and its index doc).
    pub record_version: u64,
    /// `domain::mentions_digest` of the item's mentions.
    pub digest: u64,
}

impl ThemeTag {
    pub(crate) fn to_bytes(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, v) in [self.seq, self.version, self.record_version, self.digest]
            .into_iter()
            .enumerate()
        {
            out[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// The header of a stored tag value.
    pub(crate) fn from_bytes(id: &str, b: &[u8]) -> Result<ThemeTag, StoreError> {
        if b.len() < 32 {
            return Err(StoreError::Malformed {
                id: id.to_string(),
                reason: format!("a theme tag of {} bytes, under 32", b.len()),
            });
        }
        let at = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        Ok(ThemeTag {
            seq: at(0),
            version: at(1),
            record_version: at(2),
            digest: at(3),
        })
    }

    /// A confirmed tag's value: the header, then the confirming version's
    /// mentions in their compact binary form (`store::mentions`).
    pub(crate) fn confirmed_bytes(
        self,
        id: &str,
        mentions: &[ThemeMention],
    ) -> Result<Vec<u8>, StoreError> {
        let mut out = Vec::with_capacity(32 + 96 * mentions.len());
        out.extend_from_slice(&self.to_bytes());
        mentions::encode(mentions, &mut out).map_err(|e| StoreError::Malformed {
            id: id.to_string(),
            reason: format!("theme mentions: {e}"),
        })?;
        Ok(out)
    }

    /// The mentions a confirmed tag's value carries (None: not confirmed).
    pub(crate) fn mentions(id: &str, b: &[u8]) -> Result<Option<Vec<ThemeMention>>, StoreError> {
        if b.len() <= 32 {
            return Ok(None);
        }
        mentions::decode(&b[32..])
            .map(Some)
            .map_err(|e| StoreError::Malformed {
                id: id.to_string(),
                reason: format!("theme tag mentions: {e}"),
            })
    }
}

/// The item as its readers see it: with the mentions and the taxonomy
/// version of a tag confirmed since its record was written.
pub(crate) fn with_confirmed_tag(
    item: &mut StoredFeedback,
    tag: Option<&[u8]>,
) -> Result<(), StoreError> {
    let (Some(bytes), AnalysisState::Done(analysis)) = (tag, &mut item.analysis) else {
        return Ok(());
    };
    let id = item.feedback.id.as_str();
    let header = ThemeTag::from_bytes(id, bytes)?;
    if header.seq != item.seq || header.version <= analysis.taxonomy_version {
        return Ok(());
    }
    if let Some(mentions) = ThemeTag::mentions(id, bytes)? {
        analysis.themes = mentions;
        analysis.taxonomy_version = header.version;
    }
    Ok(())
}

macro_rules! open_or_empty {
    ($txn:expr, $table:expr, $empty:expr) => {
        match super::open_optional(&$txn, $table)? {
            Some(table) => table,
            None => return Ok($empty),
        }
    };
}

/// The taxonomy version `txn` sees (0: none yet).
fn version_in(txn: &redb::ReadTransaction) -> Result<u64, StoreError> {
    match txn.open_table(META) {
        Ok(meta) => Ok(meta.get(META_TAXONOMY_VERSION)?.map_or(0, |v| v.value())),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
        Err(e) => Err(e.into()),
    }
}

impl Store {
    /// The version of the taxonomy as last committed (no theme decoded).
    pub fn taxonomy_version(&self) -> Result<u64, StoreError> {
        version_in(&self.db.get()?.begin_read()?)
    }

    /// The taxonomy as last committed.
    pub fn taxonomy(&self) -> Result<Taxonomy, StoreError> {
        let txn = self.db.get()?.begin_read()?;
        let version = version_in(&txn)?;
        let mut taxonomy = Taxonomy {
            version,
            ..Default::default()
        };
        let themes = open_or_empty!(txn, THEMES, taxonomy);
        for entry in themes.iter()? {
            let (id, bytes) = entry?;
            let theme: Theme =
                serde_json::from_slice(bytes.value()).map_err(|source| StoreError::Decode {
                    id: format!("theme {}", id.value()),
                    cause: source,
                })?;
            taxonomy.themes.insert(theme.id.clone(), theme);
        }
        Ok(taxonomy)
    }

    /// Whether the built-in taxonomy was ever installed in this store.
    pub fn taxonomy_installed(&self) -> Result<bool, StoreError> {
        let txn = self.db.get()?.begin_read()?;
        let meta = open_or_empty!(txn, META, false);
        Ok(meta.get(META_TAXONOMY_INSTALLED)?.is_some())
    }

    /// Cached embeddings of theme texts, in order (None: not cached).
    pub fn text_embeddings(&self, texts: &[String]) -> Result<Vec<Option<Vec<f32>>>, StoreError> {
        let txn = self.db.get()?.begin_read()?;
        let table = open_or_empty!(txn, TEXT_EMBEDDINGS, vec![None; texts.len()]);
        texts
            .iter()
            .map(|t| Ok(table.get(t.as_str())?.map(|b| bytes_f32(b.value()))))
            .collect()
    }

    /// The stored units of items, in order (None: never analysed).
    pub fn units(&self, ids: &[FeedbackId]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let txn = self.db.get()?.begin_read()?;
        let table = open_or_empty!(txn, UNITS, vec![None; ids.len()]);
        ids.iter()
            .map(|id| Ok(table.get(id.as_str())?.map(|b| b.value().to_vec())))
            .collect()
    }

    /// The analysed items tagged with another taxonomy version than
    /// `version` among the next `max` unit records after `after` (in id
    /// order), with their units and their tags, read in one snapshot, and
    /// the last id looked at (None: the end): the re-tag walks the store
    /// with it. An item with a tag is not read at all; one without (analysed
    /// before tags existed) is decoded for its version. Items already at
    /// `version` are skipped before their units and embedding are read.
    pub fn units_after(
        &self,
        after: Option<&str>,
        max: usize,
        version: u64,
    ) -> Result<UnitsPage, StoreError> {
        let txn = self.db.get()?.begin_read()?;
        let units = open_or_empty!(txn, UNITS, UnitsPage::default());
        let items = open_or_empty!(txn, super::ITEMS, UnitsPage::default());
        let tags = super::open_optional(&txn, TAGS)?;
        // Without a document embedding the model falls back to the units.
        let embeddings = super::open_optional(&txn, super::EMBEDDINGS)?;
        let bounds = || match after {
            Some(after) => (std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded),
            None => (std::ops::Bound::Unbounded, std::ops::Bound::Unbounded),
        };
        let range = units.range::<&str>(bounds())?;
        // Tags are keyed like units: walked beside them, not looked up.
        let mut tag_range = match &tags {
            Some(table) => Some(table.range::<&str>(bounds())?),
            None => None,
        };
        let next_tag = |range: &mut Option<redb::Range<'_, &str, &[u8]>>| {
            let Some(entry) = range.as_mut().and_then(Iterator::next) else {
                return Ok::<_, StoreError>(None);
            };
            let (key, value) = entry?;
            let key = key.value().to_string();
            let tag = ThemeTag::from_bytes(&key, value.value())?;
            Ok(Some((key, tag)))
        };
        let mut tag_ahead = next_tag(&mut tag_range)?;
        let mut page = UnitsPage::default();
        // The last id read, in one buffer (no allocation per item).
        let mut last: Option<String> = None;
        for entry in range.take(max) {
            let (id, bytes) = entry?;
            let id = id.value();
            let buffer = last.get_or_insert_with(String::new);
            buffer.clear();
            buffer.push_str(id);
            while tag_ahead.as_ref().is_some_and(|(key, _)| key.as_str() < id) {
                tag_ahead = next_tag(&mut tag_range)?;
            }
            let mut tag = None;
            if tag_ahead.as_ref().is_some_and(|(key, _)| key == id) {
                tag = tag_ahead.take().map(|(_, tag)| tag);
                tag_ahead = next_tag(&mut tag_range)?;
            }
            let (seq, taxonomy_version, digest) = match tag {
                Some(tag) => (tag.seq, tag.version, Some(tag.digest)),
                None => {
                    let Some(item) = items.get(id)? else {
                        continue;
                    };
                    let item = super::decode(id, item.value())?;
                    let AnalysisState::Done(analysis) = &item.analysis else {
                        continue;
                    };
                    (item.seq, analysis.taxonomy_version, None)
                }
            };
            if taxonomy_version == version {
                continue;
            }
            let document = match &embeddings {
                Some(table) => table.get(id)?.map(|bytes| bytes_f32(bytes.value())),
                None => None,
            };
            page.items.push(UnitsOfItem {
                id: FeedbackId::parse(id).map_err(|reason| StoreError::Malformed {
                    id: id.to_string(),
                    reason: reason.to_string(),
                })?,
                seq,
                digest,
                units: bytes.value().to_vec(),
                document,
            });
        }
        page.last = last;
        Ok(page)
    }
}

/// (item version seq, taxonomy version) of every item whose mentions a
/// re-tag confirmed under a newer version than its record says.
pub(super) fn confirmed_tags(db: &redb::Database) -> Result<Vec<(u64, u64)>, StoreError> {
    let txn = db.begin_read()?;
    let tags = open_or_empty!(txn, TAGS, Vec::new());
    let mut out = Vec::new();
    for entry in tags.iter()? {
        let (id, bytes) = entry?;
        let tag = ThemeTag::from_bytes(id.value(), bytes.value())?;
        if tag.version > tag.record_version {
            out.push((tag.seq, tag.version));
        }
    }
    Ok(out)
}

/// The taxonomy versions re-tags confirmed, by item version seq, in memory:
/// loaded from the tags when the store opens, raised by each
/// `Store::retag` once durable. Readers ask it before reading a
/// tag (`Store::get_many`); the index reads it for its documents' versions
/// (`index::tags`), catching up with the `log` of recent confirmations
/// instead of re-reading the whole map after each batch.
///
/// Invariants: versions only rise (a lower one never replaces a higher);
/// `generation` counts the pairs ever confirmed since the open and changes
/// only under the write lock, with the map and the log; the log holds the
/// last pairs, `log[i]` being pair number `log_start + i`, and never holds
/// more than the map (past that, replaying costs more than re-reading the
/// map); a seq whose item changed since keeps a stale entry that no live
/// item has (gone at the next open).
#[derive(Default)]
pub struct ConfirmedVersions {
    inner: RwLock<Confirmed>,
    generation: AtomicU64,
}

#[derive(Default)]
struct Confirmed {
    by_seq: HashMap<u64, u64>,
    log: VecDeque<(u64, u64)>,
    log_start: u64,
}

/// The confirmed versions as one reader sees them, under the read lock.
pub struct ConfirmedSnapshot<'a> {
    inner: &'a Confirmed,
    generation: u64,
}

impl ConfirmedSnapshot<'_> {
    /// The version confirmed for an item version, if any.
    pub fn get(&self, seq: u64) -> Option<u64> {
        self.inner.by_seq.get(&seq).copied()
    }

    /// Pairs confirmed so far (the snapshot's generation).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The (seq, version) pairs confirmed after the first `at`, in order;
    /// None when the log no longer reaches back that far (read the map).
    pub fn since(&self, at: u64) -> Option<impl Iterator<Item = (u64, u64)> + '_> {
        let skip = at.checked_sub(self.inner.log_start)?;
        let skip = usize::try_from(skip)
            .ok()
            .filter(|&s| s <= self.inner.log.len())?;
        Some(self.inner.log.iter().skip(skip).copied())
    }
}

impl ConfirmedVersions {
    /// The versions of the tags read when the store opens (no log: every
    /// reader starts from the map).
    pub(crate) fn loaded(pairs: &[(u64, u64)]) -> Self {
        let mut by_seq = HashMap::with_capacity(pairs.len());
        for &(seq, version) in pairs {
            let slot = by_seq.entry(seq).or_insert(0);
            *slot = version.max(*slot);
        }
        ConfirmedVersions {
            inner: RwLock::new(Confirmed {
                by_seq,
                ..Default::default()
            }),
            generation: AtomicU64::new(0),
        }
    }

    pub(crate) fn confirm(&self, pairs: &[(u64, u64)]) {
        if pairs.is_empty() {
            return;
        }
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        for &(seq, version) in pairs {
            let slot = inner.by_seq.entry(seq).or_insert(0);
            *slot = (*slot).max(version);
        }
        inner.log.extend(pairs.iter().copied());
        let keep = inner.by_seq.len();
        if inner.log.len() > keep {
            let drop = inner.log.len() - keep;
            inner.log.drain(..drop);
            inner.log_start += drop as u64;
        }
        // Under the lock: a reader sees the new entries with the new generation.
        self.generation
            .fetch_add(pairs.len() as u64, Ordering::AcqRel);
    }

    /// The version confirmed for an item version, if any.
    pub fn version_of(&self, seq: u64) -> Option<u64> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner.by_seq.get(&seq).copied()
    }

    /// Changes with every confirmation.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// `read` over a snapshot, under the read lock (None without reading
    /// while nothing is confirmed).
    pub fn read<T>(&self, read: impl FnOnce(&ConfirmedSnapshot<'_>) -> T) -> Option<T> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        if inner.by_seq.is_empty() {
            return None;
        }
        Some(read(&ConfirmedSnapshot {
            inner: &inner,
            generation: self.generation(),
        }))
    }
}

/// One analysed item version with its stored units and its document
/// embedding.
#[derive(Debug)]
pub struct UnitsOfItem {
    pub id: FeedbackId,
    /// The item version (`StoredFeedback::seq`).
    pub seq: u64,
    /// Its tag's mention digest; None for an item analysed before tags
    /// existed (a re-tag rewrites it, which writes the tag).
    pub digest: Option<u64>,
    /// The encoded units (`themes::units` layout).
    pub units: Vec<u8>,
    pub document: Option<Vec<f32>>,
}

#[derive(Debug, Default)]
pub struct UnitsPage {
    pub items: Vec<UnitsOfItem>,
    /// The last unit record read; None when there were none left.
    pub last: Option<String>,
}
