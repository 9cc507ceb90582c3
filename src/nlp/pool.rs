//! The analysis pool: a bounded queue in front of one inference thread that
//! batches texts across concurrent requests (dynamic batching). ONNX Runtime
//! parallelises each batch over `intra_threads` cores.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::{assemble, split_sentences, Encoder, ModelPaths, NlpError, SentimentHead};
use crate::domain::{Analysis, Rejection};

/// Texts the inference thread gathers from waiting requests into one pass.
const BATCH_TEXTS: usize = 64;

struct Job {
    texts: Vec<String>,
    reply: oneshot::Sender<Result<Vec<Vec<f32>>, NlpError>>,
}

#[derive(Clone)]
pub struct AnalysisPool {
    queue: mpsc::Sender<Job>,
    capacity: usize,
    head: Arc<SentimentHead>,
    model: Arc<str>,
}

impl AnalysisPool {
    /// Loads and checks every model file, runs one self-check inference and
    /// starts the inference thread.
    pub fn start(
        paths: &ModelPaths,
        intra_threads: usize,
        queue_capacity: usize,
    ) -> Result<AnalysisPool, NlpError> {
        let encoder = Encoder::load(paths, intra_threads)?;
        if encoder.info.source_sha256 != super::E5_SOURCE_SHA256 {
            return Err(NlpError::Load {
                what: paths.encoder.display().to_string(),
                reason: "the sentiment head is trained on multilingual-e5-small embeddings; this encoder was converted from another model (use it through the library for embeddings only)".into(),
            });
        }
        super::verify_file(paths, &paths.sentiment_head())?;
        let head = Arc::new(SentimentHead::load(
            &paths.sentiment_head(),
            encoder.info.hidden,
        )?);
        // Self-check: a clearly negative and a clearly positive sentence.
        let check = encoder.embed(&[
            "The product broke after one day and support ignored me.",
            "Absolutely love it, works perfectly!",
        ])?;
        let negative = head.classify(&check[0]);
        let positive = head.classify(&check[1]);
        if !(negative.score < 0.0 && positive.score > 0.0) {
            return Err(NlpError::Load {
                what: "the model set".into(),
                reason: format!(
                    "self-check failed: scores {} and {} (expected negative, positive)",
                    negative.score, positive.score
                ),
            });
        }
        let (queue, mut jobs) = mpsc::channel::<Job>(queue_capacity.max(1));
        std::thread::Builder::new()
            .name("inference".into())
            .spawn(move || {
                while let Some(first) = jobs.blocking_recv() {
                    let mut group = vec![first];
                    let mut texts = group[0].texts.len();
                    while texts < BATCH_TEXTS {
                        match jobs.try_recv() {
                            Ok(job) => {
                                texts += job.texts.len();
                                group.push(job);
                            }
                            Err(_) => break,
                        }
                    }
                    // Requests whose caller went away are not computed.
                    group.retain(|job| !job.reply.is_closed());
                    if group.is_empty() {
                        continue;
                    }
                    let all: Vec<&str> = group
                        .iter()
                        .flat_map(|job| job.texts.iter().map(String::as_str))
                        .collect();
                    match encoder.embed(&all) {
                        Ok(mut embeddings) => {
                            for job in group.into_iter().rev() {
                                let mine = embeddings.split_off(embeddings.len() - job.texts.len());
                                let _ = job.reply.send(Ok(mine));
                            }
                        }
                        Err(error) => {
                            tracing::error!(%error, "inference failed");
                            for job in group {
                                let _ = job.reply.send(Err(NlpError::Inference(error.to_string())));
                            }
                        }
                    }
                }
            })
            .map_err(|e| NlpError::Load {
                what: "the inference thread".into(),
                reason: e.to_string(),
            })?;
        tracing::info!(
            model = %super::model_name(paths),
            intra_threads,
            "analysis models loaded and self-checked"
        );
        Ok(AnalysisPool {
            model: super::model_name(paths).into(),
            queue,
            capacity: queue_capacity,
            head,
        })
    }

    /// Embeddings of `texts` (fails fast with Overloaded when the queue is full).
    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, NlpError> {
        // Large requests go in as several jobs of at most BATCH_TEXTS texts,
        // so other requests interleave with them on the inference thread. If
        // one cannot be queued, the receivers already queued are dropped and
        // the inference thread skips those jobs.
        let mut answers = Vec::new();
        for chunk in texts.chunks(BATCH_TEXTS) {
            let (reply, answer) = oneshot::channel();
            self.queue
                .try_send(Job {
                    texts: chunk.to_vec(),
                    reply,
                })
                .map_err(|e| match e {
                    mpsc::error::TrySendError::Full(_) => NlpError::Overloaded {
                        capacity: self.capacity,
                    },
                    mpsc::error::TrySendError::Closed(_) => NlpError::Closed,
                })?;
            answers.push(answer);
        }
        let mut embeddings = Vec::with_capacity(texts.len());
        for answer in answers {
            embeddings.extend(answer.await.map_err(|_| NlpError::Closed)??);
        }
        Ok(embeddings)
    }

    /// Analyses each text; a text that cannot be analysed gets a rejection.
    /// Text checks, sentence splitting and the assembly (head, language,
    /// keyphrases) run on the blocking pool, inference on the inference thread.
    pub async fn analyze(
        &self,
        texts: &[String],
        include_embeddings: bool,
    ) -> Result<Vec<Result<Analysis, Rejection>>, NlpError> {
        let owned = texts.to_vec();
        let (owned, plans, to_embed) = tokio::task::spawn_blocking(move || {
            let mut plans: Vec<Result<Vec<(usize, usize)>, Rejection>> =
                Vec::with_capacity(owned.len());
            let mut to_embed: Vec<String> = Vec::new();
            for text in &owned {
                match check_text(text) {
                    Err(rejection) => plans.push(Err(rejection)),
                    Ok(()) => {
                        let sentences = split_sentences(text);
                        to_embed.push(text.clone());
                        if sentences.len() > 1 {
                            let chars: Vec<char> = text.chars().collect();
                            to_embed.extend(
                                sentences
                                    .iter()
                                    .map(|&(s, e)| chars[s..e].iter().collect::<String>()),
                            );
                        }
                        plans.push(Ok(sentences));
                    }
                }
            }
            (owned, plans, to_embed)
        })
        .await
        .map_err(|e| NlpError::Inference(e.to_string()))?;
        let embeddings = if to_embed.is_empty() {
            Vec::new()
        } else {
            self.embed(to_embed).await?
        };
        let head = self.head.clone();
        let model = self.model.clone();
        tokio::task::spawn_blocking(move || {
            let mut embeddings = embeddings.into_iter();
            owned
                .iter()
                .zip(plans)
                .map(|(text, plan)| {
                    let sentences = plan?;
                    let document = embeddings.next().expect("one embedding per document");
                    let sentence_embeddings: Vec<Vec<f32>> = if sentences.len() > 1 {
                        embeddings.by_ref().take(sentences.len()).collect()
                    } else {
                        vec![document.clone(); sentences.len()]
                    };
                    Ok(assemble(
                        text,
                        &sentences,
                        document,
                        &sentence_embeddings,
                        &head,
                        include_embeddings,
                        &model,
                    ))
                })
                .collect()
        })
        .await
        .map_err(|e| NlpError::Inference(e.to_string()))
    }
}

/// The documented rules for an analysable text: the same as for stored feedback.
pub use crate::domain::validate_text as check_text;
