//! The compact, stored form of an item's text units (sentences or clauses):
//! span, sentiment and an int8 embedding with one f32 scale per unit, so a
//! theme edit re-tags stored feedback without running the encoder.
//!
//! Layout (little-endian): `u32` unit count, then per unit `u32 sentence`,
//! `u32 start`, `u32 end`, `3 x f32` sentiment probabilities, `f32 scale`,
//! then `DIM` `i8` values (value = i8 * scale). 412 bytes per unit for
//! e5-small (DIM = 384): the disk cost is about 412 MB per million units.

use super::UnitRef;
use crate::domain::{Sentiment, TextUnit};

const HEADER: usize = 4 * 3 + 4 * 3 + 4;

/// One stored unit, its embedding still quantised.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredUnit {
    pub sentence: usize,
    pub start: usize,
    pub end: usize,
    pub sentiment: Sentiment,
    pub scale: f32,
    pub values: Vec<i8>,
}

impl StoredUnit {
    /// The embedding back as floats (within one quantisation step).
    pub fn embedding(&self) -> Vec<f32> {
        self.values.iter().map(|&v| v as f32 * self.scale).collect()
    }
}

/// An item's stored units decoded, with their embeddings as floats in one
/// flat buffer. `decode` reuses the buffers, so a re-tag decodes a page of
/// items with no allocation per unit.
#[derive(Default)]
pub struct DecodedUnits {
    heads: Vec<UnitHead>,
    vectors: Vec<f32>,
    dim: usize,
}

/// A unit's place and sentiment.
#[derive(Clone, Copy)]
struct UnitHead {
    sentence: usize,
    start: usize,
    end: usize,
    sentiment: Sentiment,
}

impl DecodedUnits {
    pub fn new(bytes: &[u8], dim: usize) -> Option<DecodedUnits> {
        let mut decoded = DecodedUnits::default();
        decoded.decode(bytes, dim).then_some(decoded)
    }

    /// Replaces the contents with `bytes` decoded; false (and empty) when
    /// they are not a whole record of `dim`.
    pub fn decode(&mut self, bytes: &[u8], dim: usize) -> bool {
        self.heads.clear();
        self.vectors.clear();
        self.dim = dim;
        let Some(units) = decode_with(bytes, dim, |head, scale, values| {
            self.heads.push(head);
            self.vectors
                .extend(values.iter().map(|&v| v as i8 as f32 * scale));
        }) else {
            self.heads.clear();
            self.vectors.clear();
            return false;
        };
        debug_assert_eq!(units, self.heads.len());
        true
    }

    /// The units as the model takes them.
    pub fn refs(&self) -> Vec<UnitRef<'_>> {
        self.heads
            .iter()
            .enumerate()
            .map(|(i, u)| UnitRef {
                sentence: u.sentence,
                start: u.start,
                end: u.end,
                sentiment: u.sentiment,
                embedding: &self.vectors[i * self.dim..(i + 1) * self.dim],
            })
            .collect()
    }
}

/// Quantises units: per unit, scale = max |x| / 127.
pub fn encode(units: &[TextUnit]) -> Vec<u8> {
    let dim = units.first().map_or(0, |u| u.embedding.len());
    let mut out = Vec::with_capacity(4 + units.len() * (HEADER + dim));
    out.extend_from_slice(&(units.len() as u32).to_le_bytes());
    for unit in units {
        for v in [unit.sentence, unit.start, unit.end] {
            out.extend_from_slice(&(v as u32).to_le_bytes());
        }
        for p in unit.sentiment.probabilities() {
            out.extend_from_slice(&p.to_le_bytes());
        }
        let max = unit.embedding.iter().fold(0f32, |m, x| m.max(x.abs()));
        let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
        out.extend_from_slice(&scale.to_le_bytes());
        out.extend(
            unit.embedding
                .iter()
                .map(|x| (x / scale).round().clamp(-127.0, 127.0) as i8 as u8),
        );
    }
    out
}

/// Reads units back; None when the bytes are not a whole record of `dim`.
pub fn decode(bytes: &[u8], dim: usize) -> Option<Vec<StoredUnit>> {
    let mut units = Vec::new();
    decode_with(bytes, dim, |head, scale, values| {
        units.push(StoredUnit {
            sentence: head.sentence,
            start: head.start,
            end: head.end,
            sentiment: head.sentiment,
            scale,
            values: values.iter().map(|&v| v as i8).collect(),
        })
    })?;
    Some(units)
}

/// Calls `unit` with each unit's head, scale and quantised values; the
/// unit count, or None (before any call) when the bytes are not a whole
/// record of `dim`.
fn decode_with(
    bytes: &[u8],
    dim: usize,
    mut unit: impl FnMut(UnitHead, f32, &[u8]),
) -> Option<usize> {
    let count = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let unit_len = HEADER + dim;
    if bytes.len() != 4 + count * unit_len {
        return None;
    }
    let word = |b: &[u8], i: usize| -> [u8; 4] { b[i * 4..i * 4 + 4].try_into().expect("4 bytes") };
    for b in bytes[4..].chunks_exact(unit_len) {
        let u = |i| u32::from_le_bytes(word(b, i)) as usize;
        let f = |i| f32::from_le_bytes(word(b, i));
        let head = UnitHead {
            sentence: u(0),
            start: u(1),
            end: u(2),
            sentiment: Sentiment::from_probabilities([f(3), f(4), f(5)]),
        };
        unit(head, f(6), &b[HEADER..]);
    }
    Some(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_within_one_step() {
        let embedding: Vec<f32> = (0..384).map(|i| ((i as f32) * 0.37).sin() / 14.0).collect();
        let unit = TextUnit {
            sentence: 2,
            start: 10,
            end: 42,
            sentiment: Sentiment::from_probabilities([0.1, 0.2, 0.7]),
            embedding: embedding.clone(),
        };
        let bytes = encode(&[unit.clone(), unit]);
        assert_eq!(bytes.len(), 4 + 2 * (HEADER + 384));
        let back = decode(&bytes, 384).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!((back[0].sentence, back[0].start, back[0].end), (2, 10, 42));
        assert!((back[0].sentiment.positive - 0.7).abs() < 1e-6);
        let step = back[0].scale;
        for (a, b) in back[0].embedding().iter().zip(&embedding) {
            assert!((a - b).abs() <= step / 2.0 + 1e-6);
        }
        assert!(decode(&bytes[..bytes.len() - 1], 384).is_none());
        assert!(decode(&bytes, 383).is_none());
        assert_eq!(decode(&encode(&[]), 384).unwrap(), vec![]);
    }

    #[test]
    fn a_reused_decoder_equals_fresh_decodes() {
        let unit = |sentence: usize, seed: f32| TextUnit {
            sentence,
            start: sentence * 10,
            end: sentence * 10 + 7,
            sentiment: Sentiment::from_probabilities([0.6, 0.3, 0.1]),
            embedding: (0..384).map(|i| ((i as f32) * seed).cos() / 20.0).collect(),
        };
        let three = encode(&[unit(0, 0.1), unit(1, 0.2), unit(1, 0.3)]);
        let one = encode(&[unit(4, 0.7)]);
        let mut decoder = DecodedUnits::default();
        for bytes in [&three, &one, &three] {
            assert!(decoder.decode(bytes, 384));
            let fresh = decode(bytes, 384).unwrap();
            let refs = decoder.refs();
            assert_eq!(refs.len(), fresh.len());
            for (r, f) in refs.iter().zip(&fresh) {
                assert_eq!((r.sentence, r.start, r.end), (f.sentence, f.start, f.end));
                assert_eq!(r.sentiment, f.sentiment);
                assert_eq!(r.embedding, f.embedding().as_slice());
            }
        }
        assert!(!decoder.decode(&three[..three.len() - 1], 384));
        assert!(decoder.refs().is_empty());
    }
}
