//! The compact binary form of stored items (`ITEMS` values) and the
//! primitives it shares with the theme mentions of confirmed tags
//! (`store::mentions`). A search hit decodes its item from here, so the
//! form is read field by field with no parsing of text: strings are a
//! length and UTF-8 bytes, numbers little-endian.
//!
//! Item layout: `ITEM_FORMAT`, `seq` (u64), `ingested_at` (i64), then the
//! feedback: id, text, channel, journey stage (their API names), product,
//! customer id (strings), `created_at` (i64), language (string), the four
//! scores (u8 each, `NO_SCORE` when absent), tags (u32 count, strings),
//! attributes (u32 count, key and value strings, in key order), the original
//! text (u8 0/1, then a string); then the analysis state: u8 0 pending, 2
//! failed with its reason (string), 1 done: language (string), its
//! confidence (f32), the document sentiment, the sentences (u32 count; u32
//! start, u32 end and a sentiment each), the keyphrases (u32 count; string
//! and f32 score each), the embedding (u32 count, f32 each), the model name
//! (string), the theme mentions (`mentions::encode`) and the taxonomy
//! version (u64). A sentiment is its label (u8) and score, negative,
//! neutral and positive (f32 each).
//!
//! Invariants: `decode_item(encode_item(x)) == x` for every item the
//! service stores (`encode_item` refuses what the layout cannot hold); the
//! decoder reads every byte and nothing more, and fails (never panics, never
//! allocates beyond what the bytes could hold) on damaged values; records
//! written as JSON before this form start with `{` (never `ITEM_FORMAT`) and
//! still decode (`store::decode`). A new field means a new format byte.

use std::collections::BTreeMap;

use crate::domain::{
    Analysis, AnalysisState, Channel, Feedback, FeedbackId, JourneyStage, Keyphrase, Scores,
    SentenceAnalysis, Sentiment, SentimentLabel, StoredFeedback, UnixMicros,
};

/// The first byte of an item's binary form (JSON records start with `{`).
pub(crate) const ITEM_FORMAT: u8 = 1;
/// A score that is absent (every score is at most 10).
const NO_SCORE: u8 = u8::MAX;

/// Why a value could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("{0} does not fit the compact layout")]
    TooLarge(&'static str),
    #[error("truncated at byte {0}")]
    Truncated(usize),
    #[error("unknown format byte {0}")]
    Format(u8),
    #[error("unknown sentiment label {0}")]
    Label(u8),
    #[error("a string that is not UTF-8")]
    Utf8,
    #[error("{0}")]
    Invalid(String),
    #[error("{0} bytes after the end of the value")]
    Trailing(usize),
    /// The message names the cause; it is not linked as `source()` too.
    #[error("JSON: {0}")]
    Json(serde_json::Error),
}

impl From<serde_json::Error> for CodecError {
    fn from(error: serde_json::Error) -> Self {
        CodecError::Json(error)
    }
}

/// Appends little-endian values to a buffer.
pub(crate) struct Writer<'a> {
    pub(crate) out: &'a mut Vec<u8>,
}

impl Writer<'_> {
    pub(crate) fn u8(&mut self, v: u8) {
        self.out.push(v);
    }

    pub(crate) fn u32(&mut self, n: usize, what: &'static str) -> Result<(), CodecError> {
        let n = u32::try_from(n).map_err(|_| CodecError::TooLarge(what))?;
        self.out.extend_from_slice(&n.to_le_bytes());
        Ok(())
    }

    pub(crate) fn u64(&mut self, v: u64) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn i64(&mut self, v: i64) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn f32(&mut self, v: f32) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn str(&mut self, s: &str, what: &'static str) -> Result<(), CodecError> {
        self.u32(s.len(), what)?;
        self.out.extend_from_slice(s.as_bytes());
        Ok(())
    }

    pub(crate) fn sentiment(&mut self, s: &Sentiment) {
        self.u8(match s.label {
            SentimentLabel::Negative => 0,
            SentimentLabel::Neutral => 1,
            SentimentLabel::Positive => 2,
            SentimentLabel::Mixed => 3,
        });
        for v in [s.score, s.negative, s.neutral, s.positive] {
            self.f32(v);
        }
    }
}

/// Reads little-endian values; every read checks the bounds.
pub(crate) struct Reader<'a> {
    pub(crate) b: &'a [u8],
    pub(crate) at: usize,
}

impl<'a> Reader<'a> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let bytes = self
            .b
            .get(self.at..self.at + N)
            .ok_or(CodecError::Truncated(self.at))?;
        self.at += N;
        Ok(bytes.try_into().expect("N bytes"))
    }

    pub(crate) fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take::<1>()?[0])
    }

    pub(crate) fn u32(&mut self) -> Result<u32, CodecError> {
        Ok(u32::from_le_bytes(self.take()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, CodecError> {
        Ok(u64::from_le_bytes(self.take()?))
    }

    pub(crate) fn i64(&mut self) -> Result<i64, CodecError> {
        Ok(i64::from_le_bytes(self.take()?))
    }

    pub(crate) fn f32(&mut self) -> Result<f32, CodecError> {
        Ok(f32::from_le_bytes(self.take()?))
    }

    fn bytes(&mut self) -> Result<&'a [u8], CodecError> {
        let n = self.u32()? as usize;
        let bytes = self
            .b
            .get(self.at..self.at.saturating_add(n))
            .ok_or(CodecError::Truncated(self.at))?;
        self.at += n;
        Ok(bytes)
    }

    pub(crate) fn str(&mut self) -> Result<&'a str, CodecError> {
        std::str::from_utf8(self.bytes()?).map_err(|_| CodecError::Utf8)
    }

    pub(crate) fn string(&mut self) -> Result<String, CodecError> {
        self.str().map(str::to_string)
    }

    /// A count of items of at least `min_bytes` each, checked against the
    /// bytes left (so a damaged count cannot make a reader pre-allocate).
    pub(crate) fn count(&mut self, min_bytes: usize) -> Result<usize, CodecError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_bytes) > self.b.len() - self.at {
            return Err(CodecError::Truncated(self.b.len()));
        }
        Ok(n)
    }

    pub(crate) fn sentiment(&mut self) -> Result<Sentiment, CodecError> {
        let label = match self.u8()? {
            0 => SentimentLabel::Negative,
            1 => SentimentLabel::Neutral,
            2 => SentimentLabel::Positive,
            3 => SentimentLabel::Mixed,
            other => return Err(CodecError::Label(other)),
        };
        Ok(Sentiment {
            label,
            score: self.f32()?,
            negative: self.f32()?,
            neutral: self.f32()?,
            positive: self.f32()?,
        })
    }

    /// Ok when every byte was read.
    pub(crate) fn finish(self) -> Result<(), CodecError> {
        match self.b.len() - self.at {
            0 => Ok(()),
            n => Err(CodecError::Trailing(n)),
        }
    }
}

/// The binary form of a stored item.
pub(crate) fn encode_item(item: &StoredFeedback) -> Result<Vec<u8>, CodecError> {
    let f = &item.feedback;
    let mut out = Vec::with_capacity(96 + f.text.len());
    let mut w = Writer { out: &mut out };
    w.u8(ITEM_FORMAT);
    w.u64(item.seq);
    w.i64(item.ingested_at.0);
    w.str(f.id.as_str(), "id")?;
    w.str(&f.text, "text")?;
    w.str(f.channel.as_str(), "channel")?;
    w.str(f.journey_stage.as_str(), "journey stage")?;
    w.str(&f.product, "product")?;
    w.str(&f.customer_id, "customer id")?;
    w.i64(f.created_at.0);
    w.str(&f.language, "language")?;
    for score in [f.scores.nps, f.scores.csat, f.scores.ces, f.scores.rating] {
        match score {
            Some(NO_SCORE) => return Err(CodecError::TooLarge("score")),
            Some(v) => w.u8(v),
            None => w.u8(NO_SCORE),
        }
    }
    w.u32(f.tags.len(), "tag count")?;
    for tag in &f.tags {
        w.str(tag, "tag")?;
    }
    w.u32(f.attributes.len(), "attribute count")?;
    for (key, value) in &f.attributes {
        w.str(key, "attribute key")?;
        w.str(value, "attribute value")?;
    }
    match &f.original_text {
        None => w.u8(0),
        Some(text) => {
            w.u8(1);
            w.str(text, "original text")?;
        }
    }
    match &item.analysis {
        AnalysisState::Pending => w.u8(0),
        AnalysisState::Failed { reason } => {
            w.u8(2);
            w.str(reason, "failure reason")?;
        }
        AnalysisState::Done(a) => {
            w.u8(1);
            w.str(&a.language, "analysis language")?;
            w.f32(a.language_confidence);
            w.sentiment(&a.sentiment);
            w.u32(a.sentences.len(), "sentence count")?;
            for s in &a.sentences {
                w.u32(s.start, "sentence start")?;
                w.u32(s.end, "sentence end")?;
                w.sentiment(&s.sentiment);
            }
            w.u32(a.keyphrases.len(), "keyphrase count")?;
            for k in &a.keyphrases {
                w.str(&k.text, "keyphrase")?;
                w.f32(k.score);
            }
            w.u32(a.embedding.len(), "embedding length")?;
            for &x in &a.embedding {
                w.f32(x);
            }
            w.str(&a.model, "model")?;
            super::mentions::encode(&a.themes, w.out)?;
            w.u64(a.taxonomy_version);
        }
    }
    Ok(out)
}

/// A stored item from its binary form (the first byte is `ITEM_FORMAT`).
pub(crate) fn decode_item(b: &[u8]) -> Result<StoredFeedback, CodecError> {
    let mut r = Reader { b, at: 0 };
    match r.u8()? {
        ITEM_FORMAT => {}
        other => return Err(CodecError::Format(other)),
    }
    let seq = r.u64()?;
    let ingested_at = UnixMicros(r.i64()?);
    let id = FeedbackId::parse(r.str()?).map_err(|e| CodecError::Invalid(format!("id {e}")))?;
    let text = r.string()?;
    let channel = r.str()?;
    let channel = Channel::parse(channel)
        .ok_or_else(|| CodecError::Invalid(format!("unknown channel {channel:?}")))?;
    let stage = r.str()?;
    let journey_stage = JourneyStage::parse(stage)
        .ok_or_else(|| CodecError::Invalid(format!("unknown journey stage {stage:?}")))?;
    let product = r.string()?;
    let customer_id = r.string()?;
    let created_at = UnixMicros(r.i64()?);
    let language = r.string()?;
    let mut score = || -> Result<Option<u8>, CodecError> {
        Ok(match r.u8()? {
            NO_SCORE => None,
            v => Some(v),
        })
    };
    let scores = Scores {
        nps: score()?,
        csat: score()?,
        ces: score()?,
        rating: score()?,
    };
    let tags = (0..r.count(4)?)
        .map(|_| r.string())
        .collect::<Result<_, _>>()?;
    let mut attributes = BTreeMap::new();
    for _ in 0..r.count(8)? {
        let key = r.string()?;
        attributes.insert(key, r.string()?);
    }
    let original_text = match r.u8()? {
        0 => None,
        1 => Some(r.string()?),
        other => return Err(CodecError::Invalid(format!("original text flag {other}"))),
    };
    let analysis = match r.u8()? {
        0 => AnalysisState::Pending,
        2 => AnalysisState::Failed {
            reason: r.string()?,
        },
        1 => AnalysisState::Done(decode_analysis(&mut r)?),
        other => return Err(CodecError::Invalid(format!("analysis state {other}"))),
    };
    r.finish()?;
    Ok(StoredFeedback {
        feedback: Feedback {
            id,
            text,
            channel,
            journey_stage,
            product,
            customer_id,
            created_at,
            language,
            scores,
            tags,
            attributes,
            original_text,
        },
        ingested_at,
        seq,
        analysis,
    })
}

fn decode_analysis(r: &mut Reader<'_>) -> Result<Analysis, CodecError> {
    let language = r.string()?;
    let language_confidence = r.f32()?;
    let sentiment = r.sentiment()?;
    let sentences = (0..r.count(25)?)
        .map(|_| {
            Ok(SentenceAnalysis {
                start: r.u32()? as usize,
                end: r.u32()? as usize,
                sentiment: r.sentiment()?,
            })
        })
        .collect::<Result<_, CodecError>>()?;
    let keyphrases = (0..r.count(8)?)
        .map(|_| {
            Ok(Keyphrase {
                text: r.string()?,
                score: r.f32()?,
            })
        })
        .collect::<Result<_, CodecError>>()?;
    let embedding = (0..r.count(4)?)
        .map(|_| r.f32())
        .collect::<Result<_, _>>()?;
    let model = r.string()?;
    let themes = super::mentions::read(r)?;
    let taxonomy_version = r.u64()?;
    Ok(Analysis {
        language,
        language_confidence,
        sentiment,
        sentences,
        keyphrases,
        embedding,
        model,
        themes,
        taxonomy_version,
        units: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Span, ThemeMention};

    fn sentiment(label: SentimentLabel) -> Sentiment {
        Sentiment {
            label,
            score: -0.25,
            negative: 0.5,
            neutral: 0.25,
            positive: 0.25,
        }
    }

    fn item(analysis: AnalysisState) -> StoredFeedback {
        StoredFeedback {
            feedback: Feedback {
                id: FeedbackId::parse("order-42/x").unwrap(),
                text: "Délivery was late — \"again\".\nThe app crashed 😡".into(),
                channel: Channel::SupportTicket,
                journey_stage: JourneyStage::Renewal,
                product: "app".into(),
                customer_id: "c-7".into(),
                created_at: UnixMicros(-1_234_567),
                language: "en".into(),
                scores: Scores {
                    nps: Some(0),
                    csat: None,
                    ces: Some(7),
                    rating: Some(5),
                },
                tags: vec!["vip".into(), String::new()],
                attributes: [
                    ("plan".to_string(), "pro".to_string()),
                    ("ä".into(), "".into()),
                ]
                .into_iter()
                .collect(),
                original_text: Some("my card 4111 1111 1111 1111".into()),
            },
            ingested_at: UnixMicros(1_700_000_000_000_000),
            seq: u64::MAX - 3,
            analysis,
        }
    }

    fn done() -> AnalysisState {
        AnalysisState::Done(Analysis {
            language: "en".into(),
            language_confidence: 0.93,
            sentiment: sentiment(SentimentLabel::Mixed),
            sentences: vec![
                SentenceAnalysis {
                    start: 0,
                    end: 29,
                    sentiment: sentiment(SentimentLabel::Negative),
                },
                SentenceAnalysis {
                    start: 30,
                    end: 46,
                    sentiment: sentiment(SentimentLabel::Neutral),
                },
            ],
            keyphrases: vec![Keyphrase {
                text: "app crashed".into(),
                score: 1.0,
            }],
            embedding: vec![0.5, -0.25, f32::MIN_POSITIVE],
            model: "multilingual-e5-small-int8".into(),
            themes: vec![ThemeMention {
                theme_id: "reliability".into(),
                theme_name: "Reliability and bugs".into(),
                parent_id: String::new(),
                score: 0.81,
                sentences: vec![1],
                spans: vec![Span { start: 30, end: 46 }],
                sentiment: sentiment(SentimentLabel::Negative),
            }],
            taxonomy_version: 12,
            units: Vec::new(),
        })
    }

    fn every_state() -> Vec<StoredFeedback> {
        let mut plain = item(AnalysisState::Pending);
        plain.feedback.scores = Scores::default();
        plain.feedback.tags.clear();
        plain.feedback.attributes.clear();
        plain.feedback.original_text = None;
        vec![
            plain,
            item(AnalysisState::Pending),
            item(AnalysisState::Failed {
                reason: "text too long".into(),
            }),
            item(done()),
        ]
    }

    #[test]
    fn items_round_trip_in_every_state_smaller_than_their_json() {
        for original in every_state() {
            let bytes = encode_item(&original).unwrap();
            assert_eq!(bytes[0], ITEM_FORMAT);
            assert_eq!(decode_item(&bytes).unwrap(), original);
            let json = serde_json::to_vec(&original).unwrap();
            assert!(
                bytes.len() < json.len(),
                "{} vs {}",
                bytes.len(),
                json.len()
            );
        }
    }

    #[test]
    fn a_damaged_item_is_an_error_not_a_panic() {
        let bytes = encode_item(&item(done())).unwrap();
        for cut in 0..bytes.len() {
            assert!(decode_item(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(decode_item(&longer), Err(CodecError::Trailing(1))));
        assert!(matches!(decode_item(b"{}"), Err(CodecError::Format(b'{'))));
        // Every single-byte change decodes to something or fails cleanly.
        for at in 0..bytes.len() {
            let mut changed = bytes.clone();
            changed[at] ^= 0xA5;
            let _ = decode_item(&changed);
        }
        // A count the bytes cannot hold fails before allocating for it.
        let plain = encode_item(&every_state()[0]).unwrap();
        let tags_at = plain.len() - 10;
        let mut huge = plain.clone();
        huge[tags_at..tags_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode_item(&huge), Err(CodecError::Truncated(_))));
    }

    #[test]
    fn an_unknown_channel_or_state_is_named() {
        let mut bytes = encode_item(&every_state()[0]).unwrap();
        let state_at = bytes.len() - 1;
        bytes[state_at] = 9;
        let error = decode_item(&bytes).unwrap_err().to_string();
        assert!(error.contains("analysis state 9"), "{error}");
    }

    #[test]
    fn a_store_reads_json_records_beside_binary_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::super::Store::open(dir.path(), 4).unwrap();
        let mut old = item(done());
        old.feedback.id = FeedbackId::parse("written-as-json").unwrap();
        let new = item(AnalysisState::Pending);
        {
            let db = store.db.get().unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut items = txn.open_table(super::super::ITEMS).unwrap();
                let json = serde_json::to_vec(&old).unwrap();
                items
                    .insert(old.feedback.id.as_str(), json.as_slice())
                    .unwrap();
                let bytes = super::super::encode(&new).unwrap();
                assert_eq!(bytes[0], ITEM_FORMAT);
                items
                    .insert(new.feedback.id.as_str(), bytes.as_slice())
                    .unwrap();
            }
            txn.commit().unwrap();
        }
        let ids = [old.feedback.id.clone(), new.feedback.id.clone()];
        let got = store.get_many(&ids).unwrap();
        assert_eq!(got, vec![Some(old), Some(new)]);
        let error = super::super::decode("x", &[ITEM_FORMAT, 1, 2]).unwrap_err();
        assert!(
            error.to_string().contains("stored record x is malformed"),
            "{error}"
        );
    }
}
