//! The store's theme records: the taxonomy (themes by id, its version in
//! `meta`), each analysed item's units (int8 sentence and clause embeddings,
//! `themes::units`), and the embeddings of theme texts (examples, labels,
//! the calibration background) so a restart or an edit re-embeds only new
//! texts.

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::{Store, StoreError, META};
use crate::domain::{FeedbackId, StoredFeedback, Taxonomy, Theme};

/// Theme id -> JSON `Theme`.
pub(crate) const THEMES: TableDefinition<&str, &[u8]> = TableDefinition::new("themes");
/// Item id -> its units (`themes::units` layout).
pub(crate) const UNITS: TableDefinition<&str, &[u8]> = TableDefinition::new("units");
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

macro_rules! open_or_empty {
    ($txn:expr, $table:expr, $empty:expr) => {
        match $txn.open_table($table) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok($empty),
            Err(e) => return Err(e.into()),
        }
    };
}

impl Store {
    /// The taxonomy as last committed.
    pub fn taxonomy(&self) -> Result<Taxonomy, StoreError> {
        let txn = self.db.get()?.begin_read()?;
        let version = match txn.open_table(META) {
            Ok(meta) => meta.get(META_TAXONOMY_VERSION)?.map_or(0, |v| v.value()),
            Err(redb::TableError::TableDoesNotExist(_)) => 0,
            Err(e) => return Err(e.into()),
        };
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
                    source,
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

    /// The analysed items among the next `max` unit records after `after`
    /// (in id order), with their units, read in one snapshot, and the last
    /// id looked at (None: the end): the re-tag walks the store with it.
    pub fn units_after(&self, after: Option<&str>, max: usize) -> Result<UnitsPage, StoreError> {
        let txn = self.db.get()?.begin_read()?;
        let units = open_or_empty!(txn, UNITS, UnitsPage::default());
        let items = open_or_empty!(txn, super::ITEMS, UnitsPage::default());
        // Without a document embedding the model falls back to the units.
        let embeddings = match txn.open_table(super::EMBEDDINGS) {
            Ok(table) => Some(table),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(e.into()),
        };
        let range = match after {
            Some(after) => units
                .range::<&str>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))?,
            None => units.iter()?,
        };
        let mut page = UnitsPage::default();
        for entry in range.take(max) {
            let (id, bytes) = entry?;
            page.last = Some(id.value().to_string());
            if let Some(item) = items.get(id.value())? {
                let document = match &embeddings {
                    Some(table) => table.get(id.value())?.map(|bytes| bytes_f32(bytes.value())),
                    None => None,
                };
                page.items.push(UnitsOfItem {
                    item: super::decode(id.value(), item.value())?,
                    units: bytes.value().to_vec(),
                    document,
                });
            }
        }
        Ok(page)
    }
}

/// One item with its stored units and its document embedding.
#[derive(Debug)]
pub struct UnitsOfItem {
    pub item: StoredFeedback,
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
