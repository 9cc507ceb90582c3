//! multilingual-e5-small through ONNX Runtime (`ort`, load-dynamic with the
//! libonnxruntime from the pinned PyPI wheel) and its SentencePiece-unigram
//! tokenizer (`tokenizers`, from the `tokenizer.json` that models/prepare.py
//! generates). Texts longer than the 512-position window are split into
//! windows of 510 content tokens whose mean-pooled states are averaged by
//! token count, as the reference engine does: nothing is truncated.

use std::sync::Mutex;

use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::Tensor;

use super::{verify_file, ModelPaths, NlpError};

#[derive(serde::Deserialize, Clone, Debug)]
pub struct ModelInfo {
    pub max_positions: usize,
    pub hidden: usize,
    pub bos_id: i64,
    pub eos_id: i64,
    pub pad_id: i64,
    pub unk_id: u32,
    pub query_prefix: String,
    /// SentencePiece files (e5): a fused run of unknown characters becomes one
    /// `<unk>` per character, as in the reference engine. WordPiece: false.
    #[serde(default = "default_true")]
    pub expand_unknown_runs: bool,
    /// Where the model came from (the source file's sha256).
    #[serde(default)]
    pub source_sha256: String,
}

fn default_true() -> bool {
    true
}

pub struct Encoder {
    session: Mutex<Session>,
    tokenizer: tokenizers::Tokenizer,
    pub info: ModelInfo,
    _environment: ort::environment::Environment,
}

/// Windows run together in one inference call at most.
const WINDOWS_PER_RUN: usize = 32;
/// Padded tokens (rows x longest row) in one inference call at most. The
/// attention scores grow with rows x width^2, and ONNX Runtime's arena keeps
/// the largest allocation it made: 32 full windows in one call multiply it.
/// Short sentences still run 32 at a time; full windows run 4 at a time,
/// which also bounds how long a batch whose callers went away keeps the
/// inference thread (one call).
const TOKENS_PER_RUN: usize = 2_048;

/// Consecutive runs of `order` (sorted by length, ascending) that respect
/// both per-run limits.
fn runs(order: &[usize], len: impl Fn(usize) -> usize) -> Vec<&[usize]> {
    let mut runs = Vec::new();
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len()
            && end - start < WINDOWS_PER_RUN
            && (end - start + 1) * len(order[end]) <= TOKENS_PER_RUN
        {
            end += 1;
        }
        runs.push(&order[start..end]);
        start = end;
    }
    runs
}

fn load_error(what: &str) -> impl Fn(String) -> NlpError + '_ {
    move |reason| NlpError::Load {
        what: what.to_string(),
        reason,
    }
}

impl Encoder {
    /// Checks the pinned hashes, loads the runtime, the model and the tokenizer.
    pub fn load(paths: &ModelPaths, intra_threads: usize) -> Result<Encoder, NlpError> {
        for file in [
            paths.onnxruntime(),
            paths.encoder_model(),
            paths.tokenizer(),
        ] {
            verify_file(paths, &file)?;
        }
        let info_path = paths.encoder_info();
        let info: ModelInfo =
            serde_json::from_str(&std::fs::read_to_string(&info_path).map_err(|_| {
                NlpError::ModelMissing {
                    path: info_path.display().to_string(),
                }
            })?)
            .map_err(|e| load_error("model_info.json")(e.to_string()))?;
        let environment = ort::init_from(paths.onnxruntime())
            .map_err(|e| load_error("libonnxruntime")(e.to_string()))?
            .build()
            .map_err(|e| load_error("the ONNX Runtime environment")(e.to_string()))?;
        let session = Session::builder(&environment)
            .and_then(|b| {
                b.with_optimization_level(GraphOptimizationLevel::Level3)
                    .map_err(Into::into)
            })
            .and_then(|b| {
                b.with_intra_threads(intra_threads.max(1))
                    .map_err(Into::into)
            })
            .and_then(|b| b.with_inter_threads(1).map_err(Into::into))
            // Idle intra-op threads must not spin: the gRPC server, the
            // indexer and often the client share these cores.
            .and_then(|b| b.with_intra_op_spinning(false).map_err(Into::into))
            .and_then(|mut b| b.commit_from_file(paths.encoder_model()))
            .map_err(|e| load_error("the encoder model")(e.to_string()))?;
        let mut tokenizer = tokenizers::Tokenizer::from_file(paths.tokenizer())
            .map_err(|e| load_error("the tokenizer")(e.to_string()))?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| load_error("the tokenizer")(e.to_string()))?;
        Ok(Encoder {
            session: Mutex::new(session),
            tokenizer,
            info,
            _environment: environment,
        })
    }

    /// Content token ids of `prefix + text` (no `<s>`/`</s>`), exactly as the
    /// reference engine produces them: a run of unknown characters, which the
    /// tokenizers crate fuses into one `<unk>`, becomes one `<unk>` per character.
    pub fn content_ids(&self, text: &str) -> Result<Vec<i64>, NlpError> {
        let input = format!("{}{}", self.info.query_prefix, text);
        let encoding = self
            .tokenizer
            .encode(input, true)
            .map_err(|e| NlpError::Inference(format!("tokenizer: {e}")))?;
        let mut ids = Vec::with_capacity(encoding.len());
        for (&id, token) in encoding.get_ids().iter().zip(encoding.get_tokens()) {
            if id == self.info.unk_id && self.info.expand_unknown_runs {
                ids.extend(std::iter::repeat_n(
                    i64::from(id),
                    token.chars().count().max(1),
                ));
            } else {
                ids.push(i64::from(id));
            }
        }
        // The template adds <s> ... </s>; keep the content only.
        if ids.first() == Some(&self.info.bos_id) {
            ids.remove(0);
        }
        if ids.last() == Some(&self.info.eos_id) {
            ids.pop();
        }
        Ok(ids)
    }

    /// L2-normalised embeddings (with the `query: ` prefix), one per text.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, NlpError> {
        Ok(self
            .embed_unless(texts, || false)?
            .expect("never abandoned"))
    }

    /// Like `embed`, but checks `abandoned` before each inference call and
    /// stops (None) once it says so: the callers of a batch went away.
    pub fn embed_unless(
        &self,
        texts: &[&str],
        abandoned: impl Fn() -> bool,
    ) -> Result<Option<Vec<Vec<f32>>>, NlpError> {
        let window = self.info.max_positions - 2;
        // (text index, window ids with <s> </s>, content length)
        let mut windows: Vec<(usize, Vec<i64>, usize)> = Vec::new();
        for (t, text) in texts.iter().enumerate() {
            let content = self.content_ids(text)?;
            let chunks: Vec<&[i64]> = if content.is_empty() {
                vec![&[][..]]
            } else {
                content.chunks(window).collect()
            };
            for chunk in chunks {
                let mut ids = Vec::with_capacity(chunk.len() + 2);
                ids.push(self.info.bos_id);
                ids.extend_from_slice(chunk);
                ids.push(self.info.eos_id);
                windows.push((t, ids, chunk.len().max(1)));
            }
        }
        // Similar lengths together: less padding.
        let mut order: Vec<usize> = (0..windows.len()).collect();
        order.sort_by_key(|&w| windows[w].1.len());
        let hidden = self.info.hidden;
        let mut sums = vec![vec![0f64; hidden]; texts.len()];
        let mut weights = vec![0f64; texts.len()];
        for run in runs(&order, |w| windows[w].1.len()) {
            if abandoned() {
                return Ok(None);
            }
            let pooled = self.run(run.iter().map(|&w| windows[w].1.as_slice()).collect())?;
            for (row, &w) in run.iter().enumerate() {
                let (t, _, len) = &windows[w];
                let weight = *len as f64;
                for (sum, v) in sums[*t]
                    .iter_mut()
                    .zip(&pooled[row * hidden..(row + 1) * hidden])
                {
                    *sum += f64::from(*v) * weight;
                }
                weights[*t] += weight;
            }
        }
        Ok(Some(
            sums.into_iter()
                .zip(weights)
                .map(|(sum, weight)| {
                    let mean: Vec<f64> = sum.iter().map(|v| v / weight.max(1.0)).collect();
                    let norm = mean.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-6);
                    mean.iter().map(|v| (v / norm) as f32).collect()
                })
                .collect(),
        ))
    }

    /// One padded batch through the graph; returns the `pooled` output rows.
    fn run(&self, batch: Vec<&[i64]>) -> Result<Vec<f32>, NlpError> {
        let rows = batch.len();
        let width = batch.iter().map(|ids| ids.len()).max().unwrap_or(2);
        let mut input_ids = vec![self.info.pad_id; rows * width];
        let mut mask = vec![0i64; rows * width];
        for (r, ids) in batch.iter().enumerate() {
            input_ids[r * width..r * width + ids.len()].copy_from_slice(ids);
            mask[r * width..r * width + ids.len()].fill(1);
        }
        let failed = |e: ort::Error| NlpError::Inference(e.to_string());
        let ids_tensor = Tensor::from_array(([rows, width], input_ids)).map_err(failed)?;
        let mask_tensor = Tensor::from_array(([rows, width], mask)).map_err(failed)?;
        let mut session = self.session.lock().unwrap_or_else(|e| e.into_inner());
        let outputs = session
            .run(ort::inputs!["input_ids" => ids_tensor, "attention_mask" => mask_tensor])
            .map_err(failed)?;
        let (shape, values) = outputs["pooled"]
            .try_extract_tensor::<f32>()
            .map_err(failed)?;
        if shape.len() != 2 || shape[0] as usize != rows || shape[1] as usize != self.info.hidden {
            return Err(NlpError::Inference(format!(
                "unexpected output shape {shape:?}"
            )));
        }
        Ok(values.to_vec())
    }
}
