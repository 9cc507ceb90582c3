use serde::{Deserialize, Serialize};

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
}
