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

use super::codec::{CodecError, Reader, Writer};
use crate::domain::{Span, ThemeMention};

/// The first byte of the binary form.
const FORMAT: u8 = 1;

/// Appends the binary form of `mentions` to `out`.
pub(crate) fn encode(mentions: &[ThemeMention], out: &mut Vec<u8>) -> Result<(), CodecError> {
    let mut w = Writer { out };
    w.u8(FORMAT);
    w.u32(mentions.len(), "mention count")?;
    for m in mentions {
        for s in [&m.theme_id, &m.theme_name, &m.parent_id] {
            w.str(s, "theme string")?;
        }
        w.f32(m.score);
        w.u32(m.sentences.len(), "sentence count")?;
        for &s in &m.sentences {
            w.u32(s, "sentence index")?;
        }
        w.u32(m.spans.len(), "span count")?;
        for span in &m.spans {
            w.u32(span.start, "span start")?;
            w.u32(span.end, "span end")?;
        }
        w.sentiment(&m.sentiment);
    }
    Ok(())
}

/// Mentions from their binary form, or from the JSON of older tags.
pub(crate) fn decode(b: &[u8]) -> Result<Vec<ThemeMention>, CodecError> {
    if b.first() == Some(&b'[') {
        return Ok(serde_json::from_slice(b)?);
    }
    let mut r = Reader { b, at: 0 };
    let mentions = read(&mut r)?;
    r.finish()?;
    Ok(mentions)
}

/// Mentions in their binary form at the reader's position (an item's
/// analysis embeds them, `store::codec`).
pub(crate) fn read(r: &mut Reader<'_>) -> Result<Vec<ThemeMention>, CodecError> {
    match r.u8()? {
        FORMAT => {}
        other => return Err(CodecError::Format(other)),
    }
    // Capacity bounded by what the bytes could hold, not by the count.
    let count = r.count(41)?;
    let mut mentions = Vec::with_capacity(count);
    for _ in 0..count {
        let theme_id = r.string()?;
        let theme_name = r.string()?;
        let parent_id = r.string()?;
        let score = r.f32()?;
        let sentences = (0..r.count(4)?)
            .map(|_| r.u32().map(|v| v as usize))
            .collect::<Result<_, _>>()?;
        let spans = (0..r.count(8)?)
            .map(|_| {
                Ok(Span {
                    start: r.u32()? as usize,
                    end: r.u32()? as usize,
                })
            })
            .collect::<Result<_, CodecError>>()?;
        let sentiment = r.sentiment()?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Sentiment, SentimentLabel};

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
        assert!(matches!(decode(&[7]), Err(CodecError::Format(7))));
        let label_at = bytes.len() - 17;
        bytes[label_at] = 9;
        assert!(matches!(decode(&bytes), Err(CodecError::Label(9))));
        // A count the bytes cannot hold fails without allocating for it.
        let mut huge = vec![FORMAT];
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode(&huge), Err(CodecError::Truncated(5))));
        let mut longer = Vec::new();
        encode(&[mention("a", "", SentimentLabel::Neutral)], &mut longer).unwrap();
        longer.push(0);
        assert!(matches!(decode(&longer), Err(CodecError::Trailing(1))));
    }
}
