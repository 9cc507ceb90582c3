//! The item id of every document of a segment, in memory: read once from
//! the segment's document store (one pass over its blocks in order) and
//! kept with the segment's other columns (`collect::ColumnCache`), so a
//! page's ids are slices of one buffer instead of a document-store read
//! each (a block-cache lookup, a 4 KiB block copied on a miss, a skip-index
//! seek and a document decoded per hit: 10% of the server's CPU for a
//! single-term search at 1M items, BENCHMARKS.md "Ids in memory").
//!
//! Invariants: a segment never changes (deletes only add a bitset), so its
//! ids stay valid as long as it exists; `get(doc)` is the `id` stored with
//! document `doc`, deleted documents included (the store is read without
//! the alive bitset, so positions are document ids). Memory: the ids' bytes
//! plus 4 bytes per document (26 + 4 bytes per generated ULID id, ~30 MB
//! per million items).

use tantivy::schema::Value;
use tantivy::{DocId, SegmentReader, TantivyDocument};

use super::schema::field;

/// One segment's ids: `text[ends[doc - 1]..ends[doc]]` is document `doc`'s.
pub struct SegmentIds {
    text: String,
    ends: Vec<u32>,
}

impl SegmentIds {
    /// Reads every document's id from the segment's store. A segment whose
    /// ids would not fit 4 GiB (no segment tantivy writes from items of at
    /// most `MAX_ID_BYTES` before 33M documents) is refused with an error.
    pub fn read(segment: &SegmentReader) -> tantivy::Result<SegmentIds> {
        let id = segment.schema().get_field(field::ID)?;
        // One block is read at a time, in order: no cache needed.
        let store = segment.get_store_reader(1)?;
        let mut text = String::new();
        let mut ends = Vec::with_capacity(segment.max_doc() as usize);
        for doc in store.iter::<TantivyDocument>(None) {
            let doc = doc?;
            if let Some(value) = doc.get_first(id).and_then(|v| v.as_str()) {
                text.push_str(value);
            }
            let end = u32::try_from(text.len()).map_err(|_| {
                tantivy::TantivyError::InternalError(format!(
                    "segment {}: its ids exceed 4 GiB",
                    segment.segment_id().short_uuid_string()
                ))
            })?;
            ends.push(end);
        }
        if ends.len() != segment.max_doc() as usize {
            return Err(tantivy::TantivyError::InternalError(format!(
                "segment {}: {} documents in the store, max_doc {}",
                segment.segment_id().short_uuid_string(),
                ends.len(),
                segment.max_doc()
            )));
        }
        text.shrink_to_fit();
        Ok(SegmentIds { text, ends })
    }

    /// Document `doc`'s id ("" where it has none), `None` past the segment.
    pub fn get(&self, doc: DocId) -> Option<&str> {
        let doc = doc as usize;
        let end = *self.ends.get(doc)? as usize;
        let start = match doc {
            0 => 0,
            _ => self.ends[doc - 1] as usize,
        };
        // Each id was pushed whole, so its bounds are character boundaries.
        self.text.get(start..end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::schema::{self, build_schema};
    use std::sync::Arc;
    use tantivy::{Index, IndexWriter, Term};

    /// Ids read from memory equal the document store's, document by
    /// document, deleted documents included, across segments and a merge.
    #[test]
    fn ids_in_memory_equal_the_stored_ones() {
        let (schema, fields) = build_schema();
        let index = Index::create_in_ram(schema);
        schema::register_analyzers(index.tokenizers());
        let mut writer: IndexWriter<TantivyDocument> =
            index.writer_with_num_threads(1, 15_000_000).unwrap();
        for round in 0..3 {
            for i in 0..700 {
                let mut doc = TantivyDocument::default();
                // Ids of different lengths, one document without one.
                if !(round == 1 && i == 5) {
                    doc.add_text(
                        fields.id,
                        format!("r{round}-{}", "x".repeat(i % 40)) + &i.to_string(),
                    );
                }
                writer.add_document(doc).unwrap();
            }
            writer.commit().unwrap();
        }
        writer.delete_term(Term::from_field_text(fields.id, "r0-xxx3"));
        writer.commit().unwrap();
        let check = |index: &Index| {
            let searcher = index.reader().unwrap().searcher();
            for segment in searcher.segment_readers() {
                let ids = SegmentIds::read(segment).unwrap();
                let store = segment.get_store_reader(0).unwrap();
                for doc in 0..segment.max_doc() {
                    let stored: TantivyDocument = store.get(doc).unwrap();
                    let expected = stored
                        .get_first(fields.id)
                        .and_then(|v| v.as_str())
                        .unwrap_or("");
                    assert_eq!(ids.get(doc), Some(expected), "doc {doc}");
                }
                assert_eq!(ids.get(segment.max_doc()), None);
            }
            searcher.segment_readers().len()
        };
        assert_eq!(check(&index), 3);
        // Through the column cache: read on the first ask, kept after.
        let cache = crate::index::collect::ColumnCache::default();
        let searcher = index.reader().unwrap().searcher();
        cache.warm_ids(&searcher).unwrap();
        for segment in searcher.segment_readers() {
            let first = cache.ids(segment).unwrap();
            assert!(Arc::ptr_eq(&first, &cache.ids(segment).unwrap()));
            assert_eq!(first.get(0), SegmentIds::read(segment).unwrap().get(0));
        }
        let fresh = crate::index::collect::ColumnCache::default();
        let segment = &searcher.segment_readers()[1];
        assert_eq!(
            fresh.ids(segment).unwrap().get(7),
            SegmentIds::read(segment).unwrap().get(7)
        );
        let segments = index.searchable_segment_ids().unwrap();
        writer.merge(&segments).wait().unwrap();
        writer.wait_merging_threads().unwrap();
        assert_eq!(check(&index), 1);
    }
}
