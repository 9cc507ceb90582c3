//! Search-after cursors. Every hit has a total sort key (primary value, then
//! ingest order), so "continue after the last key seen" is stable while items
//! are added or removed. A cursor carries a fingerprint of the query, filter
//! and sort it belongs to and is refused with any other; a relevance cursor
//! also carries the BM25 statistics of its first page (`FrozenStats`), so
//! scores do not move between pages.

use std::hash::{Hash, Hasher};

use base64::Engine;
use tantivy::query::Bm25StatisticsProvider;

use super::IndexError;
use crate::domain::{SearchQuery, SortOrder};

/// Ordered descending: the collector keeps the largest keys first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SortKey {
    primary: i64,
    secondary: u64,
}

impl SortKey {
    /// Below every key a hit can have (tests check that no hit reaches it).
    #[cfg(test)]
    pub const EXHAUSTED: SortKey = SortKey {
        primary: i64::MIN,
        secondary: 0,
    };

    #[cfg(test)]
    pub fn new(
        sort: SortOrder,
        score: f32,
        created_at_micros: i64,
        seq: u64,
        sentiment: Option<f64>,
    ) -> Self {
        SortKey::from_primary(
            sort,
            SortKey::primary_of(sort, score, created_at_micros, sentiment),
            seq,
        )
    }

    /// The primary part of a key: the sort's value, before ties are broken
    /// by ingest order. Keys compare on it first, so a document whose
    /// primary part is below a full page's lowest key cannot enter the page.
    #[inline]
    pub fn primary_of(
        sort: SortOrder,
        score: f32,
        created_at_micros: i64,
        sentiment: Option<f64>,
    ) -> i64 {
        // Unanalysed items sort after every analysed one, above EXHAUSTED.
        let sentiment_key = |sign: f64| match sentiment {
            Some(s) => (sign * s.clamp(-1.0, 1.0) * 1e12) as i64,
            None => i64::MIN + 1,
        };
        match sort {
            SortOrder::MostNegative => sentiment_key(-1.0),
            SortOrder::MostPositive => sentiment_key(1.0),
            // BM25 scores are >= 0, and the bits of a non-negative f32 order
            // like the float itself.
            SortOrder::Relevance => i64::from(score.max(0.0).to_bits()),
            SortOrder::Newest => SortKey::date_primary(true, created_at_micros),
            SortOrder::Oldest => SortKey::date_primary(false, created_at_micros),
        }
    }

    /// A date sort's primary key (`primary_of` of `Newest` where `newest`,
    /// else of `Oldest`), for loops that asked which sort once.
    #[inline]
    pub fn date_primary(newest: bool, created_at_micros: i64) -> i64 {
        if newest {
            created_at_micros
        } else {
            -created_at_micros
        }
    }

    /// The lowest and highest primary keys (`date_primary`), both
    /// inclusive, of the dates in `[after, before)` (microseconds).
    #[inline]
    pub fn date_primary_bounds(newest: bool, after: i64, before: i64) -> (i64, i64) {
        let last = before.saturating_sub(1);
        if newest {
            (after, last)
        } else {
            (last.saturating_neg(), after.saturating_neg())
        }
    }

    /// The full key from its primary part and the item's ingest `seq`.
    /// Ties: the earlier ingest first, except for newest first.
    pub fn from_primary(sort: SortOrder, primary: i64, seq: u64) -> Self {
        let secondary = match sort {
            SortOrder::Newest => seq,
            SortOrder::Relevance
            | SortOrder::Oldest
            | SortOrder::MostNegative
            | SortOrder::MostPositive => u64::MAX - seq,
        };
        SortKey { primary, secondary }
    }

    pub fn primary(&self) -> i64 {
        self.primary
    }

    /// The relevance score to report for a hit.
    pub fn score(&self, sort: SortOrder) -> f32 {
        match sort {
            SortOrder::Relevance => f32::from_bits(self.primary as u32),
            SortOrder::Newest
            | SortOrder::Oldest
            | SortOrder::MostNegative
            | SortOrder::MostPositive => 0.0,
        }
    }
}

/// Where the next page starts, and, with relevance, the BM25 statistics the
/// first page was scored with: later pages score with the same ones, so a
/// document's score (and key) does not move while items arrive or leave,
/// and the pages stay exact.
pub struct Cursor {
    pub key: SortKey,
    pub stats: Vec<u64>,
}

/// At most this many statistics in a cursor. A term asks for 3 values, a
/// phrase for one per word and 2 more; `MAX_QUERY_BYTES` bounds the words
/// (one-letter words: 513) and `MAX_QUERY_CLAUSES` the phrases, so no
/// query within the limits asks for more than ~600 (unit test
/// `the_longest_queries_fit_a_cursor`; 256 refused a valid query of one
/// long phrase as a stale cursor on its first page).
pub const MAX_CURSOR_STATS: usize = 1024;

/// Identifies the query, filter and sort a cursor belongs to.
pub fn fingerprint(query: &SearchQuery) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    query.text.hash(&mut hasher);
    query.filter.hash(&mut hasher);
    query.sort.hash(&mut hasher);
    hasher.finish()
}

impl Cursor {
    pub fn encode(&self, fingerprint: u64) -> String {
        let mut bytes = Vec::with_capacity(24 + 8 * self.stats.len());
        bytes.extend_from_slice(&self.key.primary.to_be_bytes());
        bytes.extend_from_slice(&self.key.secondary.to_be_bytes());
        bytes.extend_from_slice(&fingerprint.to_be_bytes());
        for value in &self.stats {
            bytes.extend_from_slice(&value.to_be_bytes());
        }
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    pub fn decode(text: &str, fingerprint: u64) -> Result<Cursor, IndexError> {
        let refused = || IndexError::InvalidCursor("not a cursor returned by Search".into());
        if text.len() > 4 * (24 + 8 * MAX_CURSOR_STATS) / 3 + 4 {
            return Err(refused());
        }
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| refused())?;
        if bytes.len() < 24 || bytes.len() % 8 != 0 {
            return Err(refused());
        }
        let word = |i: usize| {
            u64::from_be_bytes(<[u8; 8]>::try_from(&bytes[i * 8..i * 8 + 8]).expect("8 bytes"))
        };
        if word(2) != fingerprint {
            return Err(IndexError::InvalidCursor(
                "the cursor belongs to another query, filter or sort".into(),
            ));
        }
        let stats: Vec<u64> = (3..bytes.len() / 8).map(word).collect();
        if stats.len() > MAX_CURSOR_STATS {
            return Err(refused());
        }
        Ok(Cursor {
            key: SortKey {
                primary: word(0) as i64,
                secondary: word(1),
            },
            stats,
        })
    }
}

/// BM25 statistics as the first page of a relevance search asked for them,
/// in the order asked: recorded from the searcher on the first page,
/// replayed from the cursor on the next ones. The same query asks for the
/// same statistics in the same order, so a replay that runs out or has
/// values left over means the cursor does not fit the query.
pub struct FrozenStats<'a> {
    searcher: &'a tantivy::Searcher,
    replay: Option<Vec<u64>>,
    asked: std::sync::Mutex<Asked>,
    averages: Option<std::sync::Arc<ScoringAverages>>,
}

/// The statistics answered so far, the last document total among them, and
/// the field whose token total was asked last (BM25 asks a field's tokens,
/// then the documents).
#[derive(Default)]
struct Asked {
    values: Vec<u64>,
    docs: Option<u64>,
    tokens: Option<(tantivy::schema::Field, u64)>,
    /// The document frequencies answered, by term.
    doc_freqs: Vec<(tantivy::Term, u64)>,
}

/// The average field length (tokens per document) BM25 scores each field
/// with, as the query's weights asked for it: block-WAND's block maxima
/// were chosen with each segment's own average, and are exact only for it
/// (`index::collect`).
#[derive(Default)]
pub struct ScoringAverages(std::sync::Mutex<Vec<(tantivy::schema::Field, f32)>>);

impl ScoringAverages {
    pub fn get(&self) -> Vec<(tantivy::schema::Field, f32)> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn record(&self, field: tantivy::schema::Field, average: f32) {
        let mut averages = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if !averages.iter().any(|(f, _)| *f == field) {
            averages.push((field, average));
        }
    }
}

/// Which statistic BM25 asks for.
#[derive(Clone, Copy, PartialEq)]
enum Stat {
    Tokens(tantivy::schema::Field),
    Docs,
    DocFreq,
}

impl<'a> FrozenStats<'a> {
    /// Records from `searcher` (`replay` None) or replays `replay`.
    pub fn new(searcher: &'a tantivy::Searcher, replay: Option<Vec<u64>>) -> Self {
        FrozenStats {
            searcher,
            replay,
            asked: std::sync::Mutex::new(Asked::default()),
            averages: None,
        }
    }

    /// Records the average field lengths the weights ask for into `averages`.
    pub fn with_averages(mut self, averages: std::sync::Arc<ScoringAverages>) -> Self {
        self.averages = Some(averages);
        self
    }

    /// The statistic `stat`, live or replayed. A replayed document
    /// frequency above the replayed document total is refused: the cursor
    /// was altered (tantivy's BM25 asserts the order and would panic).
    fn answer(
        &self,
        stat: Stat,
        live: impl FnOnce() -> tantivy::Result<u64>,
    ) -> tantivy::Result<u64> {
        let mut asked = self.asked.lock().unwrap_or_else(|e| e.into_inner());
        let stale = |asked: &mut Asked| {
            // Marks the fault for `finish`.
            asked.values.push(u64::MAX);
            Err(tantivy::TantivyError::InvalidArgument(
                STALE_CURSOR.to_string(),
            ))
        };
        let value = match &self.replay {
            Some(values) => match values.get(asked.values.len()) {
                Some(&value) => {
                    if stat == Stat::DocFreq && asked.docs.is_none_or(|docs| value > docs) {
                        return stale(&mut asked);
                    }
                    value
                }
                None => return stale(&mut asked),
            },
            None => live()?,
        };
        if let Stat::Tokens(field) = stat {
            asked.tokens = Some((field, value));
        }
        if stat == Stat::Docs {
            asked.docs = Some(value);
            if let (Some((field, tokens)), Some(averages)) = (asked.tokens, &self.averages) {
                if value > 0 {
                    averages.record(field, tokens as f32 / value as f32);
                }
            }
        }
        asked.values.push(value);
        Ok(value)
    }

    /// The document frequencies answered so far (live or replayed), by
    /// term: snippets weigh the query's terms with them instead of asking
    /// every segment's term dictionary again.
    pub fn doc_freqs(&self) -> Vec<(tantivy::Term, u64)> {
        let asked = self.asked.lock().unwrap_or_else(|e| e.into_inner());
        asked.doc_freqs.clone()
    }

    /// The statistics to carry in the next cursor; an error if a replay
    /// did not use exactly the values it had.
    pub fn finish(self) -> Result<Vec<u64>, IndexError> {
        let asked = self
            .asked
            .into_inner()
            .unwrap_or_else(|e| e.into_inner())
            .values;
        if asked.len() > MAX_CURSOR_STATS
            || self.replay.as_ref().is_some_and(|r| r.len() != asked.len())
            || (self.replay.is_some() && asked.contains(&u64::MAX))
        {
            return Err(IndexError::InvalidCursor(STALE_CURSOR.into()));
        }
        Ok(asked)
    }
}

pub const STALE_CURSOR: &str =
    "the cursor does not fit this query (it may come from another server version); start from the first page";

impl Bm25StatisticsProvider for FrozenStats<'_> {
    fn total_num_tokens(&self, field: tantivy::schema::Field) -> tantivy::Result<u64> {
        self.answer(Stat::Tokens(field), || {
            self.searcher.total_num_tokens(field)
        })
    }

    fn total_num_docs(&self) -> tantivy::Result<u64> {
        self.answer(Stat::Docs, || self.searcher.total_num_docs())
    }

    fn doc_freq(&self, term: &tantivy::Term) -> tantivy::Result<u64> {
        let value = self.answer(Stat::DocFreq, || self.searcher.doc_freq(term))?;
        let mut asked = self.asked.lock().unwrap_or_else(|e| e.into_inner());
        asked.doc_freqs.push((term.clone(), value));
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_order_as_the_sort_promises() {
        let newer = SortKey::new(SortOrder::Newest, 0.0, 200, 1, None);
        let older = SortKey::new(SortOrder::Newest, 0.0, 100, 2, None);
        assert!(newer > older);
        let older_first = SortKey::new(SortOrder::Oldest, 0.0, 100, 2, None);
        assert!(older_first > SortKey::new(SortOrder::Oldest, 0.0, 200, 1, None));
        let better = SortKey::new(SortOrder::Relevance, 2.5, 0, 9, None);
        assert!(better > SortKey::new(SortOrder::Relevance, 1.5, 0, 1, None));
        // Ties on score: the earlier ingest comes first.
        assert!(
            SortKey::new(SortOrder::Relevance, 1.0, 0, 1, None)
                > SortKey::new(SortOrder::Relevance, 1.0, 0, 2, None)
        );
        assert!(
            SortKey::EXHAUSTED
                < SortKey::new(
                    SortOrder::Oldest,
                    0.0,
                    7_258_118_400_000_000,
                    u64::MAX,
                    None
                )
        );
        assert_eq!(better.score(SortOrder::Relevance), 2.5);
    }

    #[test]
    fn cursors_round_trip_and_are_bound_to_their_query() {
        let key = SortKey::new(SortOrder::Newest, 0.0, 123, 45, None);
        let text = Cursor {
            key,
            stats: vec![3, 4],
        }
        .encode(7);
        let decoded = Cursor::decode(&text, 7).unwrap();
        assert_eq!((decoded.key, decoded.stats), (key, vec![3, 4]));
        assert!(Cursor::decode(&text, 8).is_err());
        assert!(Cursor::decode("garbage!", 7).is_err());
    }
}

/// Fuzz targets of cursors (`cargo test --lib fuzz`): a cursor is client
/// input; decoding anything answers a cursor or `InvalidCursor`, and every
/// cursor the server hands out decodes to its key.
#[cfg(test)]
mod fuzz {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    use proptest::prelude::*;

    use super::*;
    use crate::domain::limits::{MAX_CREATED_AT_MICROS, MIN_CREATED_AT_MICROS};
    use crate::fuzz::{edgy_f32, edgy_f64, nasty_string};

    fn sort_order() -> impl Strategy<Value = SortOrder> {
        prop::sample::select(SortOrder::ALL.to_vec())
    }

    /// A decoded cursor is the one text that encodes it (no second spelling).
    fn check_decoded(text: &str, fingerprint: u64) -> Result<(), TestCaseError> {
        match Cursor::decode(text, fingerprint) {
            Ok(cursor) => prop_assert_eq!(cursor.encode(fingerprint), text),
            Err(IndexError::InvalidCursor(reason)) => prop_assert!(!reason.is_empty()),
            Err(other) => prop_assert!(false, "{text:?}: {other}"),
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn fuzz_any_text_decodes_or_is_refused(
            text in prop_oneof![
                nasty_string(48),
                "[A-Za-z0-9_=+/-]{0,48}",
                "[A-Za-z0-9_-]{32}",
                "[A-Za-z0-9_-]{30,34}[=]{0,2}",
            ],
            fingerprint in any::<u64>(),
        ) {
            check_decoded(&text, fingerprint)?;
        }

        #[test]
        fn fuzz_any_bytes_decode_only_as_the_cursor_they_spell(
            mut bytes in prop_oneof![
                prop::collection::vec(any::<u8>(), 0..48),
                prop::collection::vec(any::<u8>(), 24),
                (0usize..4).prop_flat_map(|n| prop::collection::vec(any::<u8>(), 24 + 8 * n)),
            ],
            fingerprint in any::<u64>(),
            matching in any::<bool>(),
            alphabet in 0usize..4,
        ) {
            if matching && bytes.len() >= 24 {
                bytes[16..24].copy_from_slice(&fingerprint.to_be_bytes());
            }
            let engine = [&URL_SAFE_NO_PAD, &URL_SAFE, &STANDARD, &STANDARD_NO_PAD][alphabet];
            let text = engine.encode(&bytes);
            check_decoded(&text, fingerprint)?;
            let canonical = text == URL_SAFE_NO_PAD.encode(&bytes);
            let expected = canonical
                && bytes.len() >= 24
                && bytes.len() % 8 == 0
                && bytes[16..24] == fingerprint.to_be_bytes();
            match Cursor::decode(&text, fingerprint) {
                Ok(cursor) => {
                    prop_assert!(expected, "{text:?} decoded");
                    let word = |i: usize| <[u8; 8]>::try_from(&bytes[i * 8..i * 8 + 8]).unwrap();
                    prop_assert_eq!(cursor.key.primary, i64::from_be_bytes(word(0)));
                    prop_assert_eq!(cursor.key.secondary, u64::from_be_bytes(word(1)));
                    prop_assert_eq!(cursor.stats.len(), bytes.len() / 8 - 3);
                }
                Err(_) => prop_assert!(!expected, "{text:?} refused"),
            }
        }

        #[test]
        fn fuzz_cursors_round_trip_and_stay_bound_to_their_query(
            primary in any::<i64>(),
            secondary in any::<u64>(),
            fingerprint in any::<u64>(),
            other in any::<u64>(),
            stats in prop::collection::vec(any::<u64>(), 0..=MAX_CURSOR_STATS),
        ) {
            let key = SortKey { primary, secondary };
            let text = Cursor { key, stats: stats.clone() }.encode(fingerprint);
            prop_assert!(text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            let decoded = Cursor::decode(&text, fingerprint).unwrap();
            prop_assert_eq!(decoded.key, key);
            prop_assert_eq!(decoded.stats, stats);
            if other != fingerprint {
                prop_assert!(Cursor::decode(&text, other).is_err());
            }
        }

        /// Every hit's key, whatever its score, time and sentiment, is above
        /// `EXHAUSTED` (else the hit would be dropped) and survives a cursor.
        #[test]
        fn fuzz_hit_keys_are_valid_cursors(
            sort in sort_order(),
            score in edgy_f32(),
            created in MIN_CREATED_AT_MICROS..MAX_CREATED_AT_MICROS,
            seq in any::<u64>(),
            sentiment in prop::option::of(edgy_f64()),
            fingerprint in any::<u64>(),
        ) {
            let key = SortKey::new(sort, score, created, seq, sentiment);
            prop_assert!(key > SortKey::EXHAUSTED, "{key:?}");
            let shown = key.score(sort);
            prop_assert!(shown.is_finite() || score.is_infinite(), "{shown}");
            let text = Cursor { key, stats: Vec::new() }.encode(fingerprint);
            prop_assert_eq!(Cursor::decode(&text, fingerprint).unwrap().key, key);
        }
    }
}
