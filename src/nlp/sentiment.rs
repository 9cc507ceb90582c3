//! The sentiment head: softmax((coef . e + intercept) / T) over the
//! L2-normalised e5 embedding (with the `query: ` prefix); classes -1/0/+1.
//!
//! The server uses `models/heads/e5-small-verbatim.json`, compiled in: a
//! 3-class logistic head trained by `models/train_sentiment_head.py` on
//! pinned registry data (drug reviews and tweets with a neutral class); the
//! figures against sentimentai's head are in BENCHMARKS.md. sentimentai's
//! head (the pinned package) stays the reference that `models/verify.py`
//! checks the embeddings against.
//!
//! The same form also reads a theme in the unit that carries it (aspect
//! sentiment): `models/heads/e5-small-aspect.json`, over the features
//! [u, u * a] of the unit embedding u and the theme label's embedding a,
//! trained by `models/train_aspect_head.py`; used by `themes::ThemeModel`.

use std::path::Path;

use super::NlpError;
use crate::domain::{SentenceAnalysis, Sentiment, SentimentLabel};

pub struct SentimentHead {
    /// Rows in class order negative, neutral, positive.
    coef: [Vec<f32>; 3],
    intercept: [f32; 3],
    temperature: f32,
}

#[derive(serde::Deserialize)]
struct HeadFile {
    dim: usize,
    #[serde(rename = "T")]
    temperature: f32,
    coef: Vec<Vec<f32>>,
    intercept: Vec<f32>,
    classes: Vec<i32>,
}

/// The trained head the server uses (see the module doc).
pub const TRAINED_HEAD: &str = include_str!("../../models/heads/e5-small-verbatim.json");
/// Its name in `Analysis::model`.
pub const TRAINED_HEAD_NAME: &str = "verbatim head 1 (models/train_sentiment_head.py)";
/// The aspect-sentiment head: the same form over the features [u, u * a]
/// of a unit embedding u and a theme label embedding a (twice the encoder's
/// dimension), trained by `models/train_aspect_head.py`; the themes use it
/// for the sentiment of a theme in the unit that carries it.
pub const ASPECT_HEAD: &str = include_str!("../../models/heads/e5-small-aspect.json");

impl SentimentHead {
    pub fn load(path: &Path, dim: usize) -> Result<Self, NlpError> {
        let text = std::fs::read_to_string(path).map_err(|_| NlpError::ModelMissing {
            path: path.display().to_string(),
        })?;
        Self::parse(&text, &path.display().to_string(), dim)
    }

    /// The compiled-in trained head.
    pub fn trained(dim: usize) -> Result<Self, NlpError> {
        Self::parse(TRAINED_HEAD, "models/heads/e5-small-verbatim.json", dim)
    }

    /// The compiled-in aspect head for units of `dim` dimensions (its
    /// features have `2 * dim`).
    pub fn aspect(dim: usize) -> Result<Self, NlpError> {
        Self::parse(ASPECT_HEAD, "models/heads/e5-small-aspect.json", 2 * dim)
    }

    /// The number of features the head reads.
    pub fn dim(&self) -> usize {
        self.coef[0].len()
    }

    /// An aspect head (features [u, u * a]) with its label `a` folded in:
    /// a head over u alone whose weights are w_u + w_p * a, the same logits
    /// at a third of the cost. None unless the head reads `2 * a.len()`
    /// features.
    pub fn folded(&self, label: &[f32]) -> Option<SentimentHead> {
        let d = label.len();
        if self.dim() != 2 * d {
            return None;
        }
        let coef = self.coef.clone().map(|row| {
            let (unit, product) = row.split_at(d);
            unit.iter()
                .zip(product.iter().zip(label))
                .map(|(u, (p, a))| u + p * a)
                .collect()
        });
        Some(SentimentHead {
            coef,
            intercept: self.intercept,
            temperature: self.temperature,
        })
    }

    pub(crate) fn parse(text: &str, what: &str, dim: usize) -> Result<Self, NlpError> {
        let file: HeadFile = serde_json::from_str(text).map_err(|e| NlpError::Load {
            what: what.to_string(),
            reason: e.to_string(),
        })?;
        let bad = |reason: String| NlpError::Load {
            what: what.to_string(),
            reason,
        };
        if file.dim != dim
            || file.coef.len() != 3
            || file.coef.iter().any(|row| row.len() != dim)
            || file.intercept.len() != 3
        {
            return Err(bad(format!(
                "expected a 3 x {dim} head, found {} x {}",
                file.coef.len(),
                file.dim
            )));
        }
        let mut coef: [Vec<f32>; 3] = Default::default();
        let mut intercept = [0.0; 3];
        for (row, class) in file.classes.iter().enumerate() {
            let slot = match class {
                -1 => 0,
                0 => 1,
                1 => 2,
                other => return Err(bad(format!("unknown class {other}"))),
            };
            coef[slot] = file.coef[row].clone();
            intercept[slot] = file.intercept[row];
        }
        Ok(SentimentHead {
            coef,
            intercept,
            temperature: if file.temperature > 0.0 {
                file.temperature
            } else {
                1.0
            },
        })
    }

    pub fn probabilities(&self, embedding: &[f32]) -> [f32; 3] {
        let mut logits = [0f32; 3];
        for (c, logit) in logits.iter_mut().enumerate() {
            let dot = super::dot::dot(&self.coef[c], embedding);
            *logit = (dot + self.intercept[c]) / self.temperature;
        }
        let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let exp: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
        let sum: f32 = exp.iter().sum();
        [exp[0] / sum, exp[1] / sum, exp[2] / sum]
    }

    pub fn classify(&self, embedding: &[f32]) -> Sentiment {
        from_probabilities(self.probabilities(embedding))
    }
}

pub fn from_probabilities(p: [f32; 3]) -> Sentiment {
    Sentiment::from_probabilities(p)
}

/// Probability above which a sentence counts as confidently positive or negative.
const MIXED_CONFIDENCE: f32 = 0.6;

/// The document's sentiment: its own classification, relabelled `Mixed` when
/// one sentence is confidently positive and another confidently negative.
pub fn document_label(document: Sentiment, sentences: &[SentenceAnalysis]) -> Sentiment {
    let confident_positive = sentences
        .iter()
        .any(|s| s.sentiment.positive >= MIXED_CONFIDENCE);
    let confident_negative = sentences
        .iter()
        .any(|s| s.sentiment.negative >= MIXED_CONFIDENCE);
    if confident_positive && confident_negative {
        Sentiment {
            label: SentimentLabel::Mixed,
            ..document
        }
    } else {
        document
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sentence(p: [f32; 3]) -> SentenceAnalysis {
        SentenceAnalysis {
            start: 0,
            end: 1,
            sentiment: from_probabilities(p),
        }
    }

    #[test]
    fn the_compiled_in_heads_load() {
        assert_eq!(SentimentHead::trained(384).unwrap().dim(), 384);
        assert_eq!(SentimentHead::aspect(384).unwrap().dim(), 768);
    }

    #[test]
    fn a_folded_aspect_head_reads_what_the_full_one_reads() {
        let head = SentimentHead::aspect(384).unwrap();
        let unit: Vec<f32> = (0..384)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 40.0)
            .collect();
        let label: Vec<f32> = (0..384)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) / 35.0)
            .collect();
        let mut features = unit.clone();
        features.extend(unit.iter().zip(&label).map(|(u, a)| u * a));
        let full = head.probabilities(&features);
        let folded = head.folded(&label).unwrap().probabilities(&unit);
        for (a, b) in full.iter().zip(folded) {
            assert!((a - b).abs() < 1e-5, "{full:?} vs {folded:?}");
        }
        assert!(head.folded(&label[..100]).is_none());
    }

    #[test]
    fn labels_and_scores() {
        let s = from_probabilities([0.7, 0.2, 0.1]);
        assert_eq!(s.label, SentimentLabel::Negative);
        assert!((s.score + 0.6).abs() < 1e-6);
        assert_eq!(
            from_probabilities([0.1, 0.3, 0.6]).label,
            SentimentLabel::Positive
        );
        assert_eq!(
            from_probabilities([0.2, 0.5, 0.3]).label,
            SentimentLabel::Neutral
        );
    }

    #[test]
    fn strong_disagreement_is_mixed() {
        let doc = from_probabilities([0.4, 0.2, 0.4]);
        let mixed = document_label(doc, &[sentence([0.8, 0.1, 0.1]), sentence([0.1, 0.1, 0.8])]);
        assert_eq!(mixed.label, SentimentLabel::Mixed);
        assert_eq!(mixed.score, doc.score);
        let calm = document_label(doc, &[sentence([0.5, 0.1, 0.4]), sentence([0.1, 0.1, 0.8])]);
        assert_ne!(calm.label, SentimentLabel::Mixed);
    }
}
