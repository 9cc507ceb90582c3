//! One page of a search: the user query AND the filters, a total sort key
//! per hit (search-after cursors), the total, facets and snippets.

use std::sync::Arc;

use tantivy::collector::{Collector, Count};
use tantivy::query::EnableScoring;
use tantivy::{DocAddress, Executor, Searcher};

use super::collect::{self, ColumnCache, PageCollector};
use super::cursor::{self, Cursor, FrozenStats, SortKey};
use super::ids::SegmentIds;
use super::schema::{self, Fields};
use super::snippet::SnippetCutter;
use super::words;
use super::{facets, query, IndexError, SearchIndex};
use crate::domain::{normalize_text, FacetCounts, FeedbackId, SearchQuery, Snippet, SortOrder};

/// Ids (with scores) of one page of hits, before the items are fetched.
pub struct IndexPage {
    pub hits: Vec<(FeedbackId, f32)>,
    pub total_hits: u64,
    /// `total_hits` stopped at the query's `total_hits_up_to`.
    pub total_is_lower_bound: bool,
    pub next_cursor: Option<String>,
    pub facets: Vec<FacetCounts>,
    /// With themes in the query: analysed matches tagged with another
    /// taxonomy version (left out of the result).
    pub retag_pending: u64,
    snippets: Option<SnippetCutter>,
}

impl IndexPage {
    /// A snippet around the query's terms, if any occur in the text: cut
    /// from the normalised text (`normalize_text` of the stored `text`), the
    /// one the index saw. Bounded work per hit: the text is read in windows
    /// of `SNIPPET_WINDOW_BYTES` (`windows`), first to last, and the
    /// first window holding a match gives the snippet; a match past
    /// `SNIPPET_WINDOWS` windows gives none.
    pub fn snippet(&self, text: &str) -> Option<Snippet> {
        let cutter = self.snippets.as_ref()?;
        let text = normalize_text(text);
        let cut = windows(&text)
            .take(SNIPPET_WINDOWS)
            .find_map(|window| cutter.cut(window))?;
        Some(Snippet {
            html: cut.html(),
            highlights: cut.highlighted.iter().map(|r| (r.start, r.end)).collect(),
            fragment: cut.fragment,
        })
    }
}

/// Bytes of text a snippet reads at a time, and how many such windows.
pub const SNIPPET_WINDOW_BYTES: usize = 2_048;
pub const SNIPPET_WINDOWS: usize = 8;

/// Consecutive windows of at most `SNIPPET_WINDOW_BYTES` covering `text`,
/// each ending on a character boundary: at a whitespace where there is one
/// in its second half (so words are not cut), else at another character
/// that is no part of a word (CJK text has no spaces: `。`, `、`). A window
/// cut inside a CJK run (none of those in its second half) and the next
/// share the run's character at the cut, so a pair of characters across
/// the cut is whole in the next window (found by probing: `配送` across
/// the first cut got no snippet).
fn windows(text: &str) -> impl Iterator<Item = &str> {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= text.len() {
            return None;
        }
        let mut end = (start + SNIPPET_WINDOW_BYTES).min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let mut next = end;
        if end < text.len() {
            let half = start + SNIPPET_WINDOW_BYTES / 2;
            let window = &text[start..end];
            let cut = window
                .rfind(char::is_whitespace)
                .filter(|&at| start + at > half)
                .or_else(|| {
                    window
                        .rfind(|c: char| !c.is_alphanumeric())
                        .filter(|&at| start + at > half)
                });
            match cut {
                Some(at) => {
                    end = start + at;
                    next = end;
                }
                None => {
                    // A half-width kana and the sound mark that voices it are
                    // one character (`words::joined`): not cut between them.
                    let last = window.chars().next_back();
                    let following = text[end..].chars().next();
                    if let (Some(last), Some(following)) = (last, following) {
                        if words::joined(last, following) {
                            end -= last.len_utf8();
                            next = end;
                        }
                    }
                    let mut back = text[start..end].chars().rev();
                    let last = back.next().filter(|&c| words::is_cjk(c));
                    let following = text[end..].chars().next().filter(|&c| words::is_cjk(c));
                    if let (Some(last), Some(_)) = (last, following) {
                        // The character at the cut, in both windows (with its
                        // kana where it is a sound mark that joins it).
                        let mut unit = last.len_utf8();
                        if back
                            .next()
                            .is_some_and(|before| words::joined(before, last))
                        {
                            unit += text[..end - unit]
                                .chars()
                                .next_back()
                                .map_or(0, char::len_utf8);
                        }
                        next = end - unit;
                    }
                }
            }
        }
        let window = &text[start..end];
        start = next;
        Some(window)
    })
}

/// Threads a search may spread its segments over (`SearchIndex::search_with`):
/// the calling thread collects one share of the segments while the pool's
/// threads collect the others (`collect::collect_spread`), so a page over
/// several large segments finishes sooner on otherwise idle cores. Meant
/// for when the read pool has idle slots: on busy cores spreading adds no
/// throughput, only hand-offs.
pub struct Spread {
    pool: rayon::ThreadPool,
    min_postings: u64,
}

impl Spread {
    /// `threads` threads in all, the caller's included; `None` for fewer
    /// than 2 (nothing to spread).
    pub fn new(threads: usize) -> Result<Option<Spread>, IndexError> {
        if threads < 2 {
            return Ok(None);
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads - 1)
            .thread_name(|n| format!("search-spread-{n}"))
            .build()
            .map_err(|e| internal(format!("cannot start the search spread threads: {e}")))?;
        Ok(Some(Spread {
            pool,
            min_postings: SPREAD_MIN_POSTINGS,
        }))
    }

    /// Threads in all: the pool's and the caller's.
    fn threads(&self) -> usize {
        self.pool.current_num_threads() + 1
    }

    /// Spreads searches of any size (tests of small indexes).
    #[cfg(test)]
    pub(crate) fn with_min_postings(mut self, min_postings: u64) -> Spread {
        self.min_postings = min_postings;
        self
    }

    /// Whether `page` over `query` is worth spreading over `searcher`'s
    /// segments: several segments, and the query's terms hold at least
    /// `min_postings` postings, except a single term ranked by relevance
    /// without facets (block-WAND reads few of its blocks and its total is
    /// its document frequency: little work to share).
    fn pays(
        &self,
        searcher: &Searcher,
        query: &dyn tantivy::query::Query,
        page: &PageCollector,
    ) -> bool {
        if searcher.segment_readers().len() < 2 {
            return false;
        }
        if page.prune && page.facets.is_none() && scoring_terms(query) <= 1 {
            return false;
        }
        postings(query, searcher) >= self.min_postings
    }
}

/// A search whose terms hold fewer postings than this (over all segments;
/// a query without terms counts the documents) runs on one thread even with
/// `Spread`: handing a share to another thread and waiting for it costs
/// more than such a search saves (BENCHMARKS.md, "Searches spread over idle
/// cores").
pub const SPREAD_MIN_POSTINGS: u64 = 50_000;

/// The postings of `query`'s terms in `searcher` (deleted documents
/// included): a cheap estimate of a search's work. A query without terms
/// (all documents, a range) counts the searcher's documents.
fn postings(query: &dyn tantivy::query::Query, searcher: &Searcher) -> u64 {
    let mut named = false;
    let mut total = 0u64;
    query.query_terms(&mut |term, _| {
        named = true;
        total = total.saturating_add(searcher.doc_freq(term).unwrap_or(0));
    });
    if named {
        total
    } else {
        searcher.num_docs()
    }
}

impl SearchIndex {
    /// Runs a search (blocking) on the calling thread.
    pub fn search(&self, query: &SearchQuery) -> Result<IndexPage, IndexError> {
        self.search_with(query, None)
    }

    /// Runs a search (blocking); with `spread`, a search over several
    /// segments whose terms hold at least `SPREAD_MIN_POSTINGS` postings has
    /// its segments searched on `spread`'s threads (the page is the same either way:
    /// segments are collected apart and merged by their total keys).
    pub fn search_with(
        &self,
        query: &SearchQuery,
        spread: Option<&Spread>,
    ) -> Result<IndexPage, IndexError> {
        let shared = &self.shared;
        let fields = &shared.fields;
        let fingerprint = cursor::fingerprint(query);
        let after = query
            .cursor
            .as_deref()
            .map(|c| Cursor::decode(c, fingerprint))
            .transpose()?;
        let facets = facets::facet_collector(
            &query.facets,
            &shared.columns,
            Some((shared.tags.clone(), query.taxonomy_version)),
        )?;

        let user_query =
            query::parse_user_query(&shared.parser, &query.text, shared.fields.phrase_pairs)?;
        let snippets_wanted =
            !query.text.trim().is_empty() && query.view != crate::domain::HitView::Ids;
        let searcher = shared.reader.searcher();
        let (full_query, retag_pending) =
            self.slice_parsed_query(&searcher, query, user_query.box_clone())?;
        let (after_key, replay) = match after {
            Some(Cursor { key, stats }) => (Some(key), Some(stats)),
            None => (None, None),
        };
        // Relevance pages score with the first page's BM25 statistics (kept
        // in the cursor), so keys do not move while items arrive.
        let floor = collect::PageFloor::default();
        let stats = FrozenStats::new(&searcher, replay).with_averages(floor.averages());
        let page = PageCollector {
            sort: query.sort,
            k: query.limit + 1,
            after: after_key,
            count_limit: query.total_hits_up_to,
            // With facets the count visits every match whatever the limit.
            prune: collect::prunes_exactly(&*user_query, searcher.schema())
                && collect::pruning_pays(
                    &*full_query,
                    query.total_hits_up_to.filter(|_| facets.is_none()),
                ),
            columns: shared.columns.clone(),
            // Counted with the total: in its pass over every match.
            facets,
            floor,
            created_range: query.filter.created_range(),
        };
        let scoring = if page.requires_scoring() {
            EnableScoring::enabled_from_statistics_provider(&stats, &searcher)
        } else {
            EnableScoring::disabled_from_searcher(&searcher)
        };
        let searched = match spread {
            Some(spread) if spread.pays(&searcher, &*user_query, &page) => collect::collect_spread(
                &spread.pool,
                spread.threads(),
                &searcher,
                &*full_query,
                &page,
                scoring,
            ),
            _ => searcher.search_with_executor(
                &*full_query,
                &page,
                &Executor::single_thread(),
                scoring,
            ),
        };
        // A later page's statistics are the first page's (replayed): its
        // snippets weigh terms by the index as it is now, as tantivy would.
        let doc_freqs = if query.cursor.is_none() {
            stats.doc_freqs()
        } else {
            Vec::new()
        };
        // A replay that ran out of values fails the search: the cursor is
        // the cause.
        let stats = match query.sort {
            SortOrder::Relevance => stats.finish()?,
            _ => Vec::new(),
        };
        let fruit = searched?;
        let mut top_docs = fruit.top;
        let has_more = top_docs.len() > query.limit;
        top_docs.truncate(query.limit);
        let next_cursor = match (has_more, top_docs.last()) {
            (true, Some((key, _))) => Some(Cursor { key: *key, stats }.encode(fingerprint)),
            _ => None,
        };
        let hits = hit_ids(&searcher, &shared.columns, &top_docs)?
            .into_iter()
            .zip(&top_docs)
            .map(|(id, (key, _))| (id, key.score(query.sort)))
            .collect();
        let snippets = if snippets_wanted && !top_docs.is_empty() {
            Some(snippet_generator(
                &searcher,
                &*user_query,
                fields,
                &doc_freqs,
            )?)
        } else {
            None
        };
        Ok(IndexPage {
            hits,
            total_hits: fruit.count,
            total_is_lower_bound: fruit.count_truncated,
            next_cursor,
            facets: fruit.facets,
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
        let user_query = query::parse_user_query(
            &self.shared.parser,
            &query.text,
            self.shared.fields.phrase_pairs,
        )?;
        self.slice_parsed_query(searcher, query, user_query)
    }

    /// As `slice_query`, with the user query already parsed from `query.text`.
    fn slice_parsed_query(
        &self,
        searcher: &Searcher,
        query: &SearchQuery,
        user_query: Box<dyn tantivy::query::Query>,
    ) -> Result<(Box<dyn tantivy::query::Query>, u64), IndexError> {
        let fields = &self.shared.fields;
        let cache = &self.shared.filters;
        let tags = &self.shared.tags;
        // Segments merged away leave the caches (a date range reads the
        // columns' date blocks too).
        cache.retain_live(searcher);
        tags.retain_live(searcher);
        self.shared.columns.retain_live(searcher);
        let mut filters = query::filter_clauses(fields, &self.shared.columns, &query.filter);
        let mut retag_pending = 0;
        let by_themes = query::filters_by_themes(query);
        if by_themes || query.theme_facets() {
            if by_themes {
                filters.push(query::taxonomy_version_clause(
                    fields,
                    tags,
                    query.taxonomy_version,
                ));
            }
            let mut others =
                query::filter_clauses(fields, &self.shared.columns, &query.filter.without_themes());
            others.push(query::analysed_clause(fields));
            let base = query::combine(user_query.box_clone(), query::filter_queries(others, cache));
            let tagged = query::combine(
                base.box_clone(),
                query::filter_queries(
                    vec![query::taxonomy_version_clause(
                        fields,
                        tags,
                        query.taxonomy_version,
                    )],
                    cache,
                ),
            );
            retag_pending = (searcher.search(&*base, &Count)? as u64)
                .saturating_sub(searcher.search(&*tagged, &Count)? as u64);
        }
        Ok((
            query::combine(user_query, query::filter_queries(filters, cache)),
            retag_pending,
        ))
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
        // A taxonomy version is indexed only with a finished analysis, so
        // the documents at `version` are among the analysed ones; the
        // version's count comes from each segment's confirmed view where it
        // has one (`TaggedVersionWeight::count`).
        let analysed = searcher.search(&*query::analysed(fields), &Count)? as u64;
        let current = query::taxonomy_version(fields, &self.shared.tags, version);
        Ok(analysed.saturating_sub(searcher.search(&*current, &Count)? as u64))
    }
}

/// As `SnippetGenerator::create` (terms of `text` that occur, a two-word
/// phrase's words included, weighted by
/// rarity), with `schema::snippet_analyzer`, which stems only candidates,
/// cut by `SnippetCutter` (tantivy's algorithm, less work per token). A
/// term's document frequency comes from `known` (what BM25 asked, the
/// first page's on later pages) where it is there, else from the searcher.
fn snippet_generator(
    searcher: &Searcher,
    query: &dyn tantivy::query::Query,
    fields: &Fields,
    known: &[(tantivy::Term, u64)],
) -> Result<SnippetCutter, IndexError> {
    let mut terms = std::collections::BTreeSet::new();
    query.query_terms(&mut |term, _| {
        if term.field() == fields.text {
            terms.insert(term.clone());
        } else if term.field() == fields.text_pairs {
            // A two-word phrase (`query::pair_phrases`): its words.
            let value = term.value();
            for word in value
                .as_str()
                .unwrap_or_default()
                .split(schema::PAIR_SEPARATOR)
            {
                terms.insert(tantivy::Term::from_field_text(fields.text, word));
            }
        }
    });
    let mut weighted = std::collections::BTreeMap::new();
    for term in terms {
        let Some(text) = term.value().as_str().map(str::to_string) else {
            continue;
        };
        let doc_freq = match known.iter().find(|(known, _)| *known == term) {
            Some((_, doc_freq)) => *doc_freq,
            None => searcher.doc_freq(&term)?,
        };
        if doc_freq > 0 {
            weighted.insert(text, 1.0 / (1.0 + doc_freq as f32));
        }
    }
    let texts: Vec<String> = weighted.keys().cloned().collect();
    Ok(SnippetCutter::new(
        weighted,
        schema::snippet_analyzer(&texts),
        SNIPPET_CHARS,
    ))
}

/// Bytes in a snippet's fragment (tantivy's `max_num_chars`, which it
/// compares with byte offsets).
const SNIPPET_CHARS: usize = 200;

/// Terms of the query that score (a phrase counts each of its words).
fn scoring_terms(query: &dyn tantivy::query::Query) -> usize {
    let mut n = 0;
    query.query_terms(&mut |_, _| n += 1);
    n
}

/// The ids of hits, from each segment's ids in memory (`ids::SegmentIds`,
/// read once from the document store). Measured against an `id` fast
/// field (tantivy's string columns look a value up by decoding a
/// dictionary block, zstd-compressed past 2 KB) and against a document
/// store read per hit: both cost more (BENCHMARKS.md, "Search under load",
/// "Ids in memory").
fn hit_ids(
    searcher: &Searcher,
    columns: &ColumnCache,
    top: &[(SortKey, DocAddress)],
) -> Result<Vec<FeedbackId>, IndexError> {
    // Each segment's ids looked up once per page.
    let mut segments: Vec<Option<Arc<SegmentIds>>> = vec![None; searcher.segment_readers().len()];
    top.iter()
        .map(|(_, address)| {
            let ids = match &segments[address.segment_ord as usize] {
                Some(ids) => ids.clone(),
                None => {
                    let ids = columns.ids(searcher.segment_reader(address.segment_ord))?;
                    segments[address.segment_ord as usize] = Some(ids.clone());
                    ids
                }
            };
            id_of(&ids, address.doc_id)
        })
        .collect()
}

/// The item id of an indexed document.
pub(super) fn doc_id(
    searcher: &Searcher,
    columns: &ColumnCache,
    address: DocAddress,
) -> Result<FeedbackId, IndexError> {
    let ids = columns.ids(searcher.segment_reader(address.segment_ord))?;
    id_of(&ids, address.doc_id)
}

fn id_of(ids: &SegmentIds, doc: tantivy::DocId) -> Result<FeedbackId, IndexError> {
    let raw = ids.get(doc).unwrap_or_default();
    FeedbackId::parse(raw).map_err(|reason| {
        internal(format!(
            "indexed document has an invalid id {raw:?}: {reason}"
        ))
    })
}

fn internal(message: String) -> IndexError {
    IndexError::Tantivy(tantivy::TantivyError::InternalError(message))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A theme facet counts the themes of the matches tagged with the
    /// query's taxonomy version, and leaves the hits alone (it restricted
    /// them to those matches: with analysis off a theme facet answered no
    /// hits at all). A theme field in the text restricts the hits; the word
    /// in a phrase ("theme: x") does not.
    #[test]
    fn theme_facets_count_without_restricting_the_hits() {
        use crate::domain::{HitView, SearchFilter};
        let index = crate::index::fuzz_fixture();
        let search = |text: &str, facets: &[&str], version: u64| {
            index
                .search(&SearchQuery {
                    text: text.into(),
                    filter: SearchFilter::default(),
                    sort: SortOrder::Newest,
                    limit: 100,
                    cursor: None,
                    facets: facets.iter().map(|f| f.to_string()).collect(),
                    similar_to: None,
                    taxonomy_version: version,
                    total_hits_up_to: None,
                    view: HitView::Ids,
                })
                .unwrap()
        };
        let values = |page: &IndexPage, field: &str| -> Vec<(String, u64)> {
            let facet = page.facets.iter().find(|f| f.field == field).unwrap();
            let mut counts = facet.counts.clone();
            counts.sort();
            counts
        };
        let all = search("", &[], 2);
        assert!(all.total_hits >= 5, "{}", all.total_hits);
        for version in [1, 2] {
            let faceted = search("", &["channel", "theme"], version);
            assert_eq!(faceted.hits, all.hits, "version {version}");
            assert_eq!(faceted.total_hits, all.total_hits);
            let channels: u64 = values(&faceted, "channel").iter().map(|(_, n)| n).sum();
            assert_eq!(channels, all.total_hits, "every hit's channel is counted");
            // The same themes a search restricted to the version counts.
            let tagged = search("theme:*", &["theme"], version);
            assert!(tagged.total_hits < all.total_hits);
            assert_eq!(values(&faceted, "theme"), values(&tagged, "theme"));
            // Analysed items of the other version wait for their re-tag.
            assert!(faceted.retag_pending > 0, "version {version}");
        }
        assert_eq!(
            values(&search("", &["theme"], 2), "theme"),
            [("app".to_string(), 1)]
        );
        assert!(values(&search("", &["theme"], 1), "theme").contains(&("refund".to_string(), 1)));
        // A theme field restricts the hits to the version; a phrase with
        // the word does not.
        assert_eq!(search("theme:refund", &[], 1).total_hits, 1);
        assert_eq!(search("theme:refund", &[], 2).total_hits, 0);
        let refund = search("refund", &[], 2).total_hits;
        assert!(refund > 0);
        assert_eq!(
            search("refund OR \"theme: refund\"", &[], 2).total_hits,
            refund
        );
        assert!(!query::filters_by_themes(&SearchQuery {
            text: "\"dark theme: blue\" theme_sentiment".into(),
            ..search_query_template()
        }));
        for named in [
            "theme:app",
            "x OR theme_sentiment:app.positive",
            "(theme:*)",
            "theme:[a TO b]",
        ] {
            assert!(
                query::filters_by_themes(&SearchQuery {
                    text: named.into(),
                    ..search_query_template()
                }),
                "{named}"
            );
        }
    }

    /// A plain query: no text, no filter, the newest ten, ids only.
    pub(crate) fn search_query_template() -> SearchQuery {
        SearchQuery {
            text: String::new(),
            filter: crate::domain::SearchFilter::default(),
            sort: SortOrder::Newest,
            limit: 10,
            cursor: None,
            facets: Vec::new(),
            similar_to: None,
            taxonomy_version: 1,
            total_hits_up_to: None,
            view: crate::domain::HitView::Ids,
        }
    }

    /// A search spread over threads gives the pages, cursors, totals and
    /// facets a search on one thread gives: every sort, a cursor chain to
    /// the end, with and without facets and a count limit, over segments
    /// with tied dates and sentiment scores.
    #[test]
    fn spread_pages_equal_one_threads() {
        use crate::domain::{FeedbackDraft, HitView, SearchFilter, StoredFeedback, UnixMicros};
        let words = ["alpha", "beta", "gamma", "delta", "omega"];
        let items: Vec<StoredFeedback> = (0..1_200u64)
            .map(|seq| {
                let mut rng = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 7;
                let mut text = Vec::new();
                for _ in 0..(2 + rng % 6) {
                    rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    text.push(words[(rng >> 33) as usize % words.len()]);
                }
                let score = ((seq % 7) as f32 - 3.0) / 3.0;
                StoredFeedback {
                    feedback: FeedbackDraft {
                        id: format!("i-{seq}"),
                        text: text.join(" "),
                        product: format!("p{}", rng % 5),
                        created_at: Some(UnixMicros(
                            1_700_000_000_000_000 + ((seq * 7_919) % 97) as i64,
                        )),
                        ..Default::default()
                    }
                    .validate(UnixMicros(0))
                    .expect("a valid item"),
                    ingested_at: UnixMicros(0),
                    seq,
                    analysis: crate::index::test_analysis(score),
                }
            })
            .collect();
        let index = SearchIndex::in_memory_segments(&items, 250);
        assert_eq!(index.shared.reader.searcher().segment_readers().len(), 5);
        let spread = Spread::new(3)
            .unwrap()
            .expect("3 threads")
            .with_min_postings(0);
        let mut pages = 0;
        for text in [
            "alpha",
            "alpha beta",
            "alpha OR omega",
            "\"alpha beta\"",
            "",
        ] {
            for sort in SortOrder::ALL {
                for (facets, total_hits_up_to) in [
                    (Vec::new(), None),
                    (vec!["product".to_string()], None),
                    (Vec::new(), Some(100)),
                ] {
                    let mut query = SearchQuery {
                        text: text.into(),
                        filter: SearchFilter::default(),
                        sort,
                        limit: 37,
                        cursor: None,
                        facets,
                        similar_to: None,
                        taxonomy_version: 1,
                        total_hits_up_to,
                        view: HitView::Ids,
                    };
                    loop {
                        let one = index.search(&query).unwrap();
                        let spread = index.search_with(&query, Some(&spread)).unwrap();
                        let context = format!("{text:?} {sort:?} page {pages}");
                        assert_eq!(spread.hits, one.hits, "{context}");
                        assert_eq!(spread.total_hits, one.total_hits, "{context}");
                        assert_eq!(
                            spread.total_is_lower_bound, one.total_is_lower_bound,
                            "{context}"
                        );
                        assert_eq!(spread.facets, one.facets, "{context}");
                        assert_eq!(spread.next_cursor, one.next_cursor, "{context}");
                        assert!(!one.hits.is_empty(), "{context}");
                        pages += 1;
                        match one.next_cursor {
                            Some(cursor) => query.cursor = Some(cursor),
                            None => break,
                        }
                    }
                }
            }
        }
        assert!(pages > 300, "{pages} pages");
    }

    #[test]
    fn windows_cover_the_text_without_cutting_words_or_characters() {
        let text = "caf\u{e9} word ".repeat(1_000);
        let parts: Vec<&str> = windows(&text).collect();
        assert_eq!(parts.concat(), text);
        assert!(parts.len() > 1);
        for part in &parts {
            assert!(part.len() <= SNIPPET_WINDOW_BYTES);
            assert!(part.starts_with("caf") || part.starts_with(' '), "{part:?}");
        }
        assert_eq!(windows("").count(), 0);
        let unbroken = "\u{e9}".repeat(3_000);
        assert_eq!(windows(&unbroken).collect::<Vec<_>>().concat(), unbroken);
        // CJK text: cut at punctuation in the second half, else inside the
        // run with the character at the cut in both windows, so the pair
        // across the cut is whole in the second.
        let sentences = "配送が遅いので二度と注文しません。".repeat(100);
        let parts: Vec<&str> = windows(&sentences).collect();
        assert_eq!(parts.concat(), sentences);
        assert!(parts[..parts.len() - 1]
            .iter()
            .all(|p| p.ends_with("ません")));
        let run = format!("{}配送{}", "あ".repeat(681), "い".repeat(700));
        let parts: Vec<&str> = windows(&run).collect();
        assert!(parts[0].ends_with("あ配") && parts[1].starts_with("配送"));
        // Every cut is inside the run: each later window repeats one
        // character (3 bytes).
        let joined: String = parts
            .iter()
            .enumerate()
            .map(|(i, p)| if i == 0 { *p } else { &p[3..] })
            .collect();
        assert_eq!(joined, run);
        // Half-width kana: a kana and the sound mark that voices it are one
        // character, never cut apart, and in both windows where the cut
        // falls after them (found by review): the windows hold every pair
        // of the text, and no other.
        let pairs = |text: &str| -> std::collections::BTreeSet<String> {
            let mut tokenizer = super::words::WordTokenizer::new(super::words::Cjk::Query);
            let mut stream = tantivy::tokenizer::Tokenizer::token_stream(&mut tokenizer, text);
            let mut out = std::collections::BTreeSet::new();
            while tantivy::tokenizer::TokenStream::advance(&mut stream) {
                out.insert(tantivy::tokenizer::TokenStream::token(&stream).text.clone());
            }
            out
        };
        for head in ["ｱ".repeat(681) + "ｶﾞ", "ｱ".repeat(680) + "ｶﾞ"] {
            let run = format!("{head}{}", "ｲ".repeat(700));
            let parts: Vec<&str> = windows(&run).collect();
            assert!(parts.len() > 1);
            assert!(
                parts.iter().all(|p| !p.starts_with('\u{FF9E}')),
                "{parts:?}"
            );
            let found: std::collections::BTreeSet<String> =
                parts.iter().flat_map(|p| pairs(p)).collect();
            assert_eq!(found, pairs(&run), "{} bytes before the ｲ", head.len());
        }
    }

    #[test]
    fn snippets_come_from_the_window_with_the_match_and_stop_after_the_last_window() {
        let index = crate::index::fuzz_fixture();
        let query = SearchQuery {
            text: "refund".into(),
            filter: crate::domain::SearchFilter::default(),
            sort: SortOrder::Relevance,
            limit: 1,
            cursor: None,
            facets: Vec::new(),
            similar_to: None,
            taxonomy_version: 1,
            total_hits_up_to: None,
            view: crate::domain::HitView::Full,
        };
        let page = index.search(&query).unwrap();
        let filler = "nothing to see here ".repeat(SNIPPET_WINDOW_BYTES / 20 * 3);
        let late = format!("{filler}the refund came late");
        let snippet = page.snippet(&late).expect("a match in the fourth window");
        assert!(snippet.html.contains("<b>refund</b>"), "{}", snippet.html);
        let too_late = format!(
            "{}the refund came late",
            "nothing to see here ".repeat(SNIPPET_WINDOW_BYTES / 20 * (SNIPPET_WINDOWS + 1))
        );
        assert!(page.snippet(&too_late).is_none());
    }

    /// The candidates-only analyzer with `SnippetCutter` gives exactly
    /// tantivy's snippets (fragment, highlights, HTML) with the full
    /// analyzer, including words whose stem changes letters (happy ->
    /// happi, dying -> die, skies -> sky), folded accents, upper case,
    /// HTML's special characters, texts of several fragments and ties
    /// between fragments.
    #[test]
    fn snippets_with_candidate_stemming_equal_tantivys() {
        let field = crate::index::schema::build_schema().1.text;
        let long_tie = format!(
            "late delivery {} late delivery again {}",
            "filler words here ".repeat(15),
            "more filler ".repeat(20)
        );
        let long_best = format!(
            "one refund {} refund refund & <late> \"refund\" 'again' {}",
            "x ".repeat(120),
            "refund ".repeat(3)
        );
        let long_words = format!(
            "refund {} late {} refund {}refund {} late",
            "r".repeat(64),
            "d".repeat(63),
            "e".repeat(70),
            "\u{e9}".repeat(32)
        );
        let texts = [
            "Happy customers were happily dying to get the delivery; deliveries late again",
            "The driver was gentle, generously refunding; refunds refunded \u{e9}t\u{e9} caf\u{e9}",
            "Nothing to see here at all",
            "Skies, skiing, dying lying tying idly gently ugly early only singly news innings",
            "Dying LYING Tying aing Aing eing a A refunding R\u{e9}funds DElivery dElIvErIes",
            // Small capitals fold to ASCII upper case (U+1D05 -> D, U+028F -> Y).
            "\u{1d05}elivery \u{28f}es \u{28f}ay \u{1d05}ying \u{1d00}gain",
            "REFUND \u{c9}T\u{c9} Caf\u{c9} <b>Late</b> & \"delivery\" isn't 'happy'",
            "\u{3a3}\u{39f}\u{3a6}\u{399}\u{391} \u{3c3}\u{3bf}\u{3c6}\u{3b9}\u{3b1} late",
            &long_tie,
            &long_best,
            "",
            // Words the analyzer drops as too long (64 bytes and more), one
            // just under the limit, combining marks (not alphanumeric: they
            // split words), digits, other scripts and symbols.
            &long_words,
            &format!("late delivery {}", "r".repeat(64)),
            &format!("late delivery {}", "d".repeat(63)),
            "cafe\u{301} refu\u{301}nd r\u{e9}fund refund2 2refund \u{4e2d}\u{6587}refund \u{1f600}late\u{1f600} _late_ l\u{e4}te",
            // CJK runs: characters and pairs overlap.
            "配送が遅い。iPhone配送は最悪、配送 late 配",
            "太贵了 贵 贵贵贵 배송이 늦어요 배송",
        ];
        let mut highlighted = 0;
        for words in [
            "happy",
            "dying",
            "refund delivery",
            "late again",
            "caf\u{e9} \u{e9}t\u{e9}",
            "sky die lie gentle ugly early",
            "innings news generous",
            "\u{3c3}\u{3bf}\u{3c6}\u{3b9}\u{3b1}",
            "a tie",
            "aing refunds",
            "yes yay delivery",
            "配送",
            "配 贵",
            "配送が遅い",
            "배송",
        ] {
            // The query's terms as a query analyses them.
            let mut analyzer = schema::query_analyzer();
            let mut stream = analyzer.token_stream(words);
            let mut terms = std::collections::BTreeMap::new();
            let mut weight = 1.0;
            while let Some(token) = stream.next() {
                terms.insert(token.text.clone(), weight);
                weight += 0.5;
            }
            let texts_of: Vec<String> = terms.keys().cloned().collect();
            let reference = tantivy::snippet::SnippetGenerator::new(
                terms.clone(),
                schema::text_analyzer(),
                field,
                SNIPPET_CHARS,
            );
            let ours =
                SnippetCutter::new(terms, schema::snippet_analyzer(&texts_of), SNIPPET_CHARS);
            for text in texts {
                let (a, b) = (reference.snippet(text), ours.cut(text));
                match b {
                    None => assert!(a.highlighted().is_empty(), "{words} / {text}"),
                    Some(b) => {
                        // tantivy keeps touching ranges apart; ours joins
                        // them (CJK characters side by side).
                        let mut touching =
                            tantivy::snippet::collapse_overlapped_ranges(a.highlighted());
                        touching.dedup_by(|next, last| {
                            let joined = next.start <= last.end;
                            if joined {
                                last.end = last.end.max(next.end);
                            }
                            joined
                        });
                        assert_eq!(touching, b.highlighted, "{words} / {text}");
                        assert_eq!(a.fragment(), b.fragment, "{words} / {text}");
                        assert_eq!(
                            a.to_html().replace("</b><b>", ""),
                            b.html(),
                            "{words} / {text}"
                        );
                        highlighted += b.highlighted.len();
                    }
                }
            }
        }
        assert!(highlighted > 30, "{highlighted}");
    }

    /// What `snippet::Pairs` relies on: the index's stem of a word of two
    /// or more characters whose second is not `y` starts with the word's
    /// first two characters (lower case), unless the stem is one character
    /// long. Every word of 2-4 letters, the words of the sample feedback,
    /// and random words of 5-14 letters and digits.
    #[test]
    fn stems_keep_their_words_first_two_characters() {
        let mut analyzer = schema::text_analyzer();
        let mut checked = 0;
        let mut check = |word: &str| {
            let mut stream = analyzer.token_stream(word);
            let Some(token) = stream.next() else {
                return;
            };
            let (stem, lower) = (token.text.clone(), word.to_ascii_lowercase());
            if lower.len() < 2 || stem.len() < 2 || lower.as_bytes()[1] == b'y' {
                return;
            }
            assert_eq!(
                &stem.as_bytes()[..2],
                &lower.as_bytes()[..2],
                "{word} -> {stem}"
            );
            checked += 1;
        };
        let letters: Vec<char> = ('a'..='z').collect();
        for len in 2..=4u32 {
            for n in 0..26usize.pow(len) {
                let word: String = (0..len).map(|i| letters[n / 26usize.pow(i) % 26]).collect();
                check(&word);
            }
        }
        let sample = include_str!("../../tests/data/sample-feedback.jsonl");
        for word in sample.split(|c: char| !c.is_ascii_alphanumeric()) {
            check(word);
        }
        let mut next = crate::index::xorshift(0x9e37_79b9_7f4a_7c15);
        // Vowels and common suffix letters weigh more, so suffix rules fire.
        let alphabet = b"aaeeiioouuyysssdddeeggnnllttbbzzcfhkmprvwx0123456789";
        for _ in 0..300_000 {
            let len = 5 + (next() % 10) as usize;
            let mut word: String = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize] as char)
                .collect();
            if next().is_multiple_of(3) {
                let suffixes = ["ing", "ed", "ies", "ly", "ingly", "edly", "ational", "s"];
                word.push_str(suffixes[(next() % suffixes.len() as u64) as usize]);
            }
            check(&word);
        }
        assert!(checked > 700_000, "{checked}");
    }
}
