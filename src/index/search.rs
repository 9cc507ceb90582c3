//! One page of a search: the user query AND the filters, a total sort key
//! per hit (search-after cursors), the total, facets and snippets.

use tantivy::collector::{Count, TopDocs};
use tantivy::schema::Value;
use tantivy::snippet::SnippetGenerator;
use tantivy::{DocAddress, Searcher, TantivyDocument};

use super::cursor::{self, Cursor, SortKey};
use super::schema::{field, Fields};
use super::{aggregations, query, IndexError, SearchIndex};
use crate::domain::{normalize_text, FacetCounts, FeedbackId, SearchQuery, Snippet, SortOrder};

/// Ids (with scores) of one page of hits, before the items are fetched.
pub struct IndexPage {
    pub hits: Vec<(FeedbackId, f32)>,
    pub total_hits: u64,
    pub next_cursor: Option<String>,
    pub facets: Vec<FacetCounts>,
    /// With themes in the query: analysed matches tagged with another
    /// taxonomy version (left out of the result).
    pub retag_pending: u64,
    snippets: Option<SnippetGenerator>,
}

impl IndexPage {
    /// A snippet around the query's terms, if any occur in the text: cut
    /// from the normalised text (`normalize_text` of the stored `text`), the
    /// one the index saw.
    pub fn snippet(&self, text: &str) -> Option<Snippet> {
        let generator = self.snippets.as_ref()?;
        let snippet = generator.snippet(&normalize_text(text));
        if snippet.highlighted().is_empty() {
            return None;
        }
        Some(Snippet {
            fragment: snippet.fragment().to_string(),
            highlights: snippet
                .highlighted()
                .iter()
                .map(|r| (r.start, r.end))
                .collect(),
            html: snippet.to_html(),
        })
    }
}

impl SearchIndex {
    /// Runs a search (blocking).
    pub fn search(&self, query: &SearchQuery) -> Result<IndexPage, IndexError> {
        let shared = &self.shared;
        let fields = &shared.fields;
        let fingerprint = cursor::fingerprint(query);
        let after = query
            .cursor
            .as_deref()
            .map(|c| Cursor::decode(c, fingerprint))
            .transpose()?;
        let facet_aggs = aggregations::facet_request(&query.facets)?;

        let user_query = query::parse_user_query(&shared.parser, &query.text)?;
        let snippets_wanted = !query.text.trim().is_empty();
        let searcher = shared.reader.searcher();
        let (full_query, retag_pending) = self.slice_query(&searcher, query)?;
        let sort = query.sort;
        let after_key = after.map(|c| c.key);
        let top = TopDocs::with_limit(query.limit + 1).tweak_score(
            move |segment: &tantivy::SegmentReader| {
                let seq = segment
                    .fast_fields()
                    .u64(field::SEQ)
                    .expect("seq is a fast field")
                    .first_or_default_col(0);
                let created = segment
                    .fast_fields()
                    .date(field::CREATED_AT)
                    .expect("created_at is a fast field")
                    .first_or_default_col(tantivy::DateTime::MIN);
                let sentiment = matches!(sort, SortOrder::MostNegative | SortOrder::MostPositive)
                    .then(|| segment.fast_fields().f64(field::SENTIMENT_SCORE).ok())
                    .flatten();
                move |doc: tantivy::DocId, score: tantivy::Score| {
                    let key = SortKey::new(
                        sort,
                        score,
                        created.get_val(doc).into_timestamp_micros(),
                        seq.get_val(doc),
                        sentiment.as_ref().and_then(|column| column.first(doc)),
                    );
                    match after_key {
                        Some(after) if key >= after => SortKey::EXHAUSTED,
                        _ => key,
                    }
                }
            },
        );
        let (mut top_docs, total_hits) = searcher.search(&full_query, &(top, Count))?;
        top_docs.retain(|(key, _)| *key != SortKey::EXHAUSTED);
        let has_more = top_docs.len() > query.limit;
        top_docs.truncate(query.limit);
        let next_cursor = match (has_more, top_docs.last()) {
            (true, Some((key, _))) => Some(Cursor { key: *key }.encode(fingerprint)),
            _ => None,
        };
        let hits = top_docs
            .iter()
            .map(|(key, address)| Ok((doc_id(&searcher, fields, *address)?, key.score(sort))))
            .collect::<Result<Vec<_>, IndexError>>()?;

        let facets = match facet_aggs {
            Some((names, aggs)) => {
                aggregations::collect_facets(&searcher, &full_query, names, aggs)?
            }
            None => Vec::new(),
        };
        let snippets = if snippets_wanted {
            let mut generator = SnippetGenerator::create(&searcher, &*user_query, fields.text)?;
            generator.set_max_num_chars(200);
            Some(generator)
        } else {
            None
        };
        Ok(IndexPage {
            hits,
            total_hits: total_hits as u64,
            next_cursor,
            facets,
            retag_pending,
            snippets,
        })
    }

    /// The user query AND the filters (blocking). Theme filters and facets
    /// count only items tagged with the current taxonomy version; with
    /// themes in the query the second value counts the matches tagged with
    /// another version (left out), else it is 0.
    pub(super) fn slice_query(
        &self,
        searcher: &Searcher,
        query: &SearchQuery,
    ) -> Result<(Box<dyn tantivy::query::Query>, u64), IndexError> {
        let shared = &self.shared;
        let fields = &shared.fields;
        let user_query = query::parse_user_query(&shared.parser, &query.text)?;
        let mut filters = query::filter_clauses(fields, &query.filter);
        let mut retag_pending = 0;
        if query.uses_themes() {
            filters.push(query::taxonomy_version(fields, query.taxonomy_version));
            let mut others = query::filter_clauses(fields, &query.filter.without_themes());
            others.push(query::analysed(fields));
            let base = query::combine(user_query.box_clone(), others);
            let tagged = query::combine(
                base.box_clone(),
                vec![query::taxonomy_version(fields, query.taxonomy_version)],
            );
            retag_pending = (searcher.search(&*base, &Count)? as u64)
                .saturating_sub(searcher.search(&*tagged, &Count)? as u64);
        }
        Ok((query::combine(user_query, filters), retag_pending))
    }

    /// Ids of the newest items matching the query and filter, at most `max`
    /// (blocking).
    pub fn matching_ids(
        &self,
        query: &SearchQuery,
        max: usize,
    ) -> Result<Vec<FeedbackId>, IndexError> {
        let all = SearchQuery {
            sort: SortOrder::Newest,
            limit: max,
            cursor: None,
            facets: Vec::new(),
            similar_to: None,
            ..query.clone()
        };
        Ok(self
            .search(&all)?
            .hits
            .into_iter()
            .map(|(id, _)| id)
            .collect())
    }

    /// Analysed items whose themes come from another taxonomy version than
    /// `version` (blocking): the re-tag's backlog as the index sees it.
    pub fn count_retag_pending(&self, version: u64) -> Result<u64, IndexError> {
        let fields = &self.shared.fields;
        let searcher = self.shared.reader.searcher();
        let analysed = query::analysed(fields);
        let current = query::combine(
            query::analysed(fields),
            vec![query::taxonomy_version(fields, version)],
        );
        Ok((searcher.search(&*analysed, &Count)? as u64)
            .saturating_sub(searcher.search(&*current, &Count)? as u64))
    }
}

fn doc_id(
    searcher: &Searcher,
    fields: &Fields,
    address: DocAddress,
) -> Result<FeedbackId, IndexError> {
    let doc: TantivyDocument = searcher.doc(address)?;
    let raw = doc
        .get_first(fields.id)
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    FeedbackId::parse(&raw).map_err(|reason| {
        IndexError::Tantivy(tantivy::TantivyError::InternalError(format!(
            "indexed document has an invalid id {raw:?}: {reason}"
        )))
    })
}
