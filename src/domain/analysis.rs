use serde::{Deserialize, Serialize};

use super::theme::ThemeMention;

/// Overall polarity of a text or sentence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SentimentLabel {
    Negative,
    Neutral,
    Positive,
    /// Sentences disagree strongly (a confidently positive and a confidently
    /// negative sentence in one text). Documents only.
    Mixed,
}

impl SentimentLabel {
    pub fn as_str(self) -> &'static str {
        match self {
            SentimentLabel::Negative => "negative",
            SentimentLabel::Neutral => "neutral",
            SentimentLabel::Positive => "positive",
            SentimentLabel::Mixed => "mixed",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sentiment {
    pub label: SentimentLabel,
    /// P(positive) - P(negative), in [-1, 1].
    pub score: f32,
    /// Class probabilities, summing to 1.
    pub negative: f32,
    pub neutral: f32,
    pub positive: f32,
}

impl Sentiment {
    /// From class probabilities `[negative, neutral, positive]`: the most
    /// probable class (ties toward negative, then positive).
    pub fn from_probabilities(p: [f32; 3]) -> Sentiment {
        let label = if p[0] >= p[1] && p[0] >= p[2] {
            SentimentLabel::Negative
        } else if p[2] >= p[1] {
            SentimentLabel::Positive
        } else {
            SentimentLabel::Neutral
        };
        Sentiment {
            label,
            score: p[2] - p[0],
            negative: p[0],
            neutral: p[1],
            positive: p[2],
        }
    }

    pub fn probabilities(&self) -> [f32; 3] {
        [self.negative, self.neutral, self.positive]
    }
}

/// One sentence: its span in the text, in Unicode code points
/// (`start` inclusive, `end` exclusive), and its sentiment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SentenceAnalysis {
    pub start: usize,
    pub end: usize,
    pub sentiment: Sentiment,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Keyphrase {
    pub text: String,
    /// Relative weight in (0, 1]; the best phrase has 1.
    pub score: f32,
}

/// What the NLP engine found in one text.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    /// ISO 639-1 code where one exists (else ISO 639-3), "und" when unsure.
    pub language: String,
    pub language_confidence: f32,
    pub sentiment: Sentiment,
    pub sentences: Vec<SentenceAnalysis>,
    pub keyphrases: Vec<Keyphrase>,
    /// L2-normalised document embedding (384 floats); empty when not requested.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub embedding: Vec<f32>,
    pub model: String,
    /// Themes found, best score first (empty: none reached the threshold).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub themes: Vec<ThemeMention>,
    /// The taxonomy version `themes` were assigned with (0: never tagged).
    #[serde(default)]
    pub taxonomy_version: u64,
    /// The units themes are assigned to (each sentence, or its clauses when
    /// it joins several topics) with their embeddings: moved to the store's
    /// unit table on save so a theme edit re-tags without the encoder; never
    /// part of the stored item or the wire.
    #[serde(skip)]
    pub units: Vec<TextUnit>,
}

/// A sentence or a clause of one, with its sentiment and embedding.
#[derive(Clone, Debug, PartialEq)]
pub struct TextUnit {
    /// Index into `Analysis::sentences`.
    pub sentence: usize,
    /// Code-point span in the text.
    pub start: usize,
    pub end: usize,
    pub sentiment: Sentiment,
    /// L2-normalised embedding (384 floats).
    pub embedding: Vec<f32>,
}
