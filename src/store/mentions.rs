//! The compact binary form of theme mentions a confirmed tag carries
//! (`themes::ThemeTag::confirmed_bytes`): a re-tag writes one per confirmed
//! item, so it is several times smaller and faster than their JSON (~90
//! bytes for a typical mention instead of ~280), and a search hit on a
//! confirmed item decodes it.
//!
//! Layout (little-endian): `FORMAT`, a mention count (u32), then per
//! mention the theme id, name and parent id (each a u32 length and UTF-8
//! bytes), the score (f32), the sentence indexes (u32 count, u32 each), the
//! spans (u32 count, u32 start and end each), the sentiment label (u8) and
//! its score, negative, neutral and positive (f32 each). Every count and
//! index fits: texts, themes and names are far below 2^32.
//!
//! Invariants: `decode(encode(m)) == m` for every mention list this
//! service produces (`encode` refuses what the layout cannot hold); tags
//! written before this format carry JSON, which starts with `[`, never
//! `FORMAT`, and still decode.

use crate::domain::{Sentiment, SentimentLabel, Span, ThemeMention};

/// The first byte of the binary form.
const FORMAT: u8 = 1;

/// Why mentions could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum MentionsError {
    #[error("{0} does not fit the compact mention layout")]
    TooLarge(&'static str),
    #[error("truncated at byte {0}")]
    Truncated(usize),
    #[error("unknown format byte {0}")]
    Format(u8),
    #[error("unknown sentiment label {0}")]
    Label(u8),
    #[error("a string that is not UTF-8")]
    Utf8,
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Appends the binary form of `mentions` to `out`.
pub(crate) fn encode(mentions: &[ThemeMention], out: &mut Vec<u8>) -> Result<(), MentionsError> {
    out.push(FORMAT);
    put_u32(out, mentions.len(), "mention count")?;
    for m in mentions {
        for s in [&m.theme_id, &m.theme_name, &m.parent_id] {
            put_u32(out, s.len(), "theme string")?;
            out.extend_from_slice(s.as_bytes());
        }
        out.extend_from_slice(&m.score.to_le_bytes());
        put_u32(out, m.sentences.len(), "sentence count")?;
        for &s in &m.sentences {
            put_u32(out, s, "sentence index")?;
        }
        put_u32(out, m.spans.len(), "span count")?;
        for span in &m.spans {
            put_u32(out, span.start, "span start")?;
            put_u32(out, span.end, "span end")?;
        }
        out.push(match m.sentiment.label {
            SentimentLabel::Negative => 0,
            SentimentLabel::Neutral => 1,
            SentimentLabel::Positive => 2,
            SentimentLabel::Mixed => 3,
        });
        let s = &m.sentiment;
        for v in [s.score, s.negative, s.neutral, s.positive] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    Ok(())
}

/// Mentions from their binary form, or from the JSON of older tags.
pub(crate) fn decode(b: &[u8]) -> Result<Vec<ThemeMention>, MentionsError> {
    match b.first() {
        Some(&FORMAT) => {}
        Some(b'[') => return Ok(serde_json::from_slice(b)?),
        Some(&other) => return Err(MentionsError::Format(other)),
        None => return Err(MentionsError::Truncated(0)),
    }
    let mut r = Reader { b, at: 1 };
    let count = r.u32()?;
    // Capacity bounded by what the bytes could hold, not by the count.
    let mut mentions = Vec::with_capacity((count as usize).min(b.len() / 40));
    for _ in 0..count {
        let theme_id = r.string()?;
        let theme_name = r.string()?;
        let parent_id = r.string()?;
        let score = r.f32()?;
        let sentences = (0..r.u32()?)
            .map(|_| r.u32().map(|v| v as usize))
            .collect::<Result<_, _>>()?;
        let spans = (0..r.u32()?)
            .map(|_| {
                Ok(Span {
                    start: r.u32()? as usize,
                    end: r.u32()? as usize,
                })
            })
            .collect::<Result<_, MentionsError>>()?;
        let label = match r.u8()? {
            0 => SentimentLabel::Negative,
            1 => SentimentLabel::Neutral,
            2 => SentimentLabel::Positive,
            3 => SentimentLabel::Mixed,
            other => return Err(MentionsError::Label(other)),
        };
        let sentiment = Sentiment {
            label,
            score: r.f32()?,
            negative: r.f32()?,
            neutral: r.f32()?,
            positive: r.f32()?,
        };
        mentions.push(ThemeMention {
            theme_id,
            theme_name,
            parent_id,
            score,
            sentences,
            spans,
            sentiment,
        });
    }
    Ok(mentions)
}

fn put_u32(out: &mut Vec<u8>, n: usize, what: &'static str) -> Result<(), MentionsError> {
    let n = u32::try_from(n).map_err(|_| MentionsError::TooLarge(what))?;
    out.extend_from_slice(&n.to_le_bytes());
    Ok(())
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], MentionsError> {
        let bytes = self
            .b
            .get(self.at..self.at + N)
            .ok_or(MentionsError::Truncated(self.at))?;
        self.at += N;
        Ok(bytes.try_into().expect("N bytes"))
    }

    fn u8(&mut self) -> Result<u8, MentionsError> {
        Ok(self.take::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, MentionsError> {
        Ok(u32::from_le_bytes(self.take()?))
    }

    fn f32(&mut self) -> Result<f32, MentionsError> {
        Ok(f32::from_le_bytes(self.take()?))
    }

    fn string(&mut self) -> Result<String, MentionsError> {
        let n = self.u32()? as usize;
        let bytes = self
            .b
            .get(self.at..self.at.saturating_add(n))
            .ok_or(MentionsError::Truncated(self.at))?;
        self.at += n;
        String::from_utf8(bytes.to_vec()).map_err(|_| MentionsError::Utf8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mention(id: &str, parent: &str, label: SentimentLabel) -> ThemeMention {
        ThemeMention {
            theme_id: id.into(),
            theme_name: format!("Name of {id} — é"),
            parent_id: parent.into(),
            score: 0.734_567,
            sentences: vec![0, 3],
            spans: vec![Span { start: 0, end: 57 }, Span { start: 80, end: 95 }],
            sentiment: Sentiment {
                label,
                score: -0.8,
                negative: 0.85,
                neutral: 0.1,
                positive: 0.05,
            },
        }
    }

    #[test]
    fn mentions_round_trip_smaller_than_their_json_and_old_json_still_reads() {
        let mentions = vec![
            mention("delivery_delay", "delivery", SentimentLabel::Negative),
            mention("price", "", SentimentLabel::Mixed),
        ];
        let mut bytes = Vec::new();
        encode(&mentions, &mut bytes).unwrap();
        assert_eq!(decode(&bytes).unwrap(), mentions);
        let json = serde_json::to_vec(&mentions).unwrap();
        assert!(
            bytes.len() * 2 < json.len(),
            "{} vs {}",
            bytes.len(),
            json.len()
        );
        assert_eq!(decode(&json).unwrap(), mentions);
        let mut empty = Vec::new();
        encode(&[], &mut empty).unwrap();
        assert_eq!(decode(&empty).unwrap(), Vec::new());
        // More mentions than a byte could count (the taxonomy holds 500 themes).
        let many: Vec<ThemeMention> = (0..300)
            .map(|i| mention(&i.to_string(), "", SentimentLabel::Positive))
            .collect();
        let mut bytes = Vec::new();
        encode(&many, &mut bytes).unwrap();
        assert_eq!(decode(&bytes).unwrap(), many);
    }

    #[test]
    fn a_damaged_value_is_an_error_not_a_panic() {
        let mut bytes = Vec::new();
        encode(&[mention("a", "", SentimentLabel::Neutral)], &mut bytes).unwrap();
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert!(matches!(decode(&[7]), Err(MentionsError::Format(7))));
        let label_at = bytes.len() - 17;
        bytes[label_at] = 9;
        assert!(matches!(decode(&bytes), Err(MentionsError::Label(9))));
        // A count the bytes cannot hold fails without allocating for it.
        let mut huge = vec![FORMAT];
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode(&huge), Err(MentionsError::Truncated(5))));
    }
}
