//! Search-after cursors. Every hit has a total sort key (primary value, then
//! ingest order), so "continue after the last key seen" is stable while items
//! are added or removed. A cursor carries a fingerprint of the query, filter
//! and sort it belongs to and is refused with any other.

use std::hash::{Hash, Hasher};

use base64::Engine;

use super::IndexError;
use crate::domain::{SearchQuery, SortOrder};

/// Ordered descending: the collector keeps the largest keys first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SortKey {
    primary: i64,
    secondary: u64,
}

impl SortKey {
    /// Marks a document at or before the cursor: sorts last and is dropped.
    pub const EXHAUSTED: SortKey = SortKey {
        primary: i64::MIN,
        secondary: 0,
    };

    pub fn new(
        sort: SortOrder,
        score: f32,
        created_at_micros: i64,
        seq: u64,
        sentiment: Option<f64>,
    ) -> Self {
        // Unanalysed items sort after every analysed one, above EXHAUSTED.
        let sentiment_key = |sign: f64| match sentiment {
            Some(s) => (sign * s.clamp(-1.0, 1.0) * 1e12) as i64,
            None => i64::MIN + 1,
        };
        match sort {
            SortOrder::MostNegative => SortKey {
                primary: sentiment_key(-1.0),
                secondary: u64::MAX - seq,
            },
            SortOrder::MostPositive => SortKey {
                primary: sentiment_key(1.0),
                secondary: u64::MAX - seq,
            },
            // BM25 scores are >= 0, and the bits of a non-negative f32 order
            // like the float itself. Ties: earlier ingest first.
            SortOrder::Relevance => SortKey {
                primary: i64::from(score.max(0.0).to_bits()),
                secondary: u64::MAX - seq,
            },
            SortOrder::Newest => SortKey {
                primary: created_at_micros,
                secondary: seq,
            },
            SortOrder::Oldest => SortKey {
                primary: -created_at_micros,
                secondary: u64::MAX - seq,
            },
        }
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

pub struct Cursor {
    pub key: SortKey,
}

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
        let mut bytes = Vec::with_capacity(24);
        bytes.extend_from_slice(&self.key.primary.to_be_bytes());
        bytes.extend_from_slice(&self.key.secondary.to_be_bytes());
        bytes.extend_from_slice(&fingerprint.to_be_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    pub fn decode(text: &str, fingerprint: u64) -> Result<Cursor, IndexError> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| IndexError::InvalidCursor("not a cursor returned by Search".into()))?;
        if bytes.len() != 24 {
            return Err(IndexError::InvalidCursor(
                "not a cursor returned by Search".into(),
            ));
        }
        let word = |i: usize| <[u8; 8]>::try_from(&bytes[i * 8..i * 8 + 8]).expect("8 bytes");
        if u64::from_be_bytes(word(2)) != fingerprint {
            return Err(IndexError::InvalidCursor(
                "the cursor belongs to another query, filter or sort".into(),
            ));
        }
        Ok(Cursor {
            key: SortKey {
                primary: i64::from_be_bytes(word(0)),
                secondary: u64::from_be_bytes(word(1)),
            },
        })
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
        let text = Cursor { key }.encode(7);
        assert_eq!(Cursor::decode(&text, 7).unwrap().key, key);
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
        prop::sample::select(vec![
            SortOrder::Relevance,
            SortOrder::Newest,
            SortOrder::Oldest,
            SortOrder::MostNegative,
            SortOrder::MostPositive,
        ])
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
            ],
            fingerprint in any::<u64>(),
            matching in any::<bool>(),
            alphabet in 0usize..4,
        ) {
            if matching && bytes.len() == 24 {
                bytes[16..].copy_from_slice(&fingerprint.to_be_bytes());
            }
            let engine = [&URL_SAFE_NO_PAD, &URL_SAFE, &STANDARD, &STANDARD_NO_PAD][alphabet];
            let text = engine.encode(&bytes);
            check_decoded(&text, fingerprint)?;
            let canonical = text == URL_SAFE_NO_PAD.encode(&bytes);
            let expected = canonical
                && bytes.len() == 24
                && bytes[16..] == fingerprint.to_be_bytes();
            match Cursor::decode(&text, fingerprint) {
                Ok(cursor) => {
                    prop_assert!(expected, "{text:?} decoded");
                    let word = |i: usize| <[u8; 8]>::try_from(&bytes[i * 8..i * 8 + 8]).unwrap();
                    prop_assert_eq!(cursor.key.primary, i64::from_be_bytes(word(0)));
                    prop_assert_eq!(cursor.key.secondary, u64::from_be_bytes(word(1)));
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
        ) {
            let key = SortKey { primary, secondary };
            let text = Cursor { key }.encode(fingerprint);
            prop_assert_eq!(text.len(), 32);
            prop_assert!(text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            prop_assert_eq!(Cursor::decode(&text, fingerprint).unwrap().key, key);
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
            let text = Cursor { key }.encode(fingerprint);
            prop_assert_eq!(Cursor::decode(&text, fingerprint).unwrap().key, key);
        }
    }
}
