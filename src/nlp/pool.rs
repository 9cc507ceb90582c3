//! The analysis pool: one inference thread that batches texts across
//! concurrent requests (dynamic batching), fed by two lanes.
//!
//! - **Interactive** (`Analyze`, `similar_to_text`, `wait_for_analysis`):
//!   at most `max_requests` requests are in progress; one more is refused at
//!   once with `Overloaded` (RESOURCE_EXHAUSTED), whatever its size (the
//!   `wait_for_analysis` ingest turns it into an answer without analyses:
//!   its items are stored by then).
//! - **Background** (the enrichment of stored items): never refused; its
//!   jobs run when no interactive job is waiting, and in one inference pass
//!   of every `BACKGROUND_EVERY` while some are. A pass never mixes the
//!   lanes, so an interactive caller never waits for a background batch in
//!   its own pass.
//!
//! A request is never queued whole. Its texts are checked and split into
//! sentences a few at a time, and it keeps at most `JOBS_IN_FLIGHT` jobs of
//! at most `BATCH_TEXTS` texts queued, sending the next as one returns; each
//! text is assembled (head, language, keyphrases) as soon as its embeddings
//! are back, so a request holds the sentence embeddings of a few texts at a
//! time, never of all. Any request fits, however many sentences it has, and
//! the queue holds at most `JOBS_IN_FLIGHT` jobs per request. A request whose
//! caller went away sends nothing more, and its queued jobs are skipped.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};

use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use super::{
    assemble, split_clauses, split_sentences, Encoder, ModelPaths, NlpError, SentimentHead,
};
use crate::domain::{Analysis, NormalizedText, Rejection};

/// Texts the inference thread gathers from waiting jobs into one pass.
const BATCH_TEXTS: usize = 64;
/// Jobs one request keeps queued at most.
const JOBS_IN_FLIGHT: usize = 2;
/// Under sustained interactive load, one inference pass in this many serves
/// the background lane.
const BACKGROUND_EVERY: u32 = 4;
/// Texts checked and split into sentences per step of a request.
const PLAN_TEXTS: usize = 16;

/// Which lane a request's jobs go to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    Interactive,
    Background,
}

type Embeddings = Result<Vec<Vec<f32>>, NlpError>;

struct Job {
    texts: Vec<String>,
    reply: oneshot::Sender<Embeddings>,
}

#[derive(Default)]
struct LaneState {
    interactive: VecDeque<Job>,
    background: VecDeque<Job>,
    closed: bool,
    /// Interactive passes in a row (see `BACKGROUND_EVERY`).
    interactive_passes: u32,
}

#[derive(Default)]
struct Lanes {
    state: Mutex<LaneState>,
    ready: Condvar,
}

impl Lanes {
    fn push(&self, lane: Lane, job: Job) -> Result<(), NlpError> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.closed {
            return Err(NlpError::Closed);
        }
        match lane {
            Lane::Interactive => state.interactive.push_back(job),
            Lane::Background => state.background.push_back(job),
        }
        let depth = state.interactive.len() + state.background.len();
        crate::metrics::set_queue_depth(crate::metrics::pool::ANALYSIS, depth);
        self.ready.notify_one();
        Ok(())
    }

    /// Blocks for the next group: the waiting interactive jobs, else
    /// background ones, about `BATCH_TEXTS` texts either way (never mixed);
    /// jobs whose caller went away are dropped. None once closed and drained.
    fn next_group(&self) -> Option<Vec<Job>> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let mut group = Vec::new();
            let mut texts = 0;
            let LaneState {
                interactive,
                background,
                closed,
                interactive_passes,
            } = &mut *state;
            let interactive_before = interactive.len();
            // Interactive first, but every `BACKGROUND_EVERY`th pass goes to
            // waiting background work, so stored items keep being analysed
            // under sustained interactive load.
            let background_turn =
                *interactive_passes >= BACKGROUND_EVERY - 1 && !background.is_empty();
            let order = if background_turn {
                [&mut *background, &mut *interactive]
            } else {
                [&mut *interactive, &mut *background]
            };
            for queue in order {
                // A pass is never mixed: a background job holds up to
                // `BATCH_TEXTS` texts, and interactive callers in the same
                // pass would wait for them too.
                if !group.is_empty() {
                    break;
                }
                while texts < BATCH_TEXTS {
                    let Some(job) = queue.pop_front() else { break };
                    if job.reply.is_closed() {
                        continue;
                    }
                    texts += job.texts.len();
                    group.push(job);
                }
            }
            let depth = interactive.len() + background.len();
            crate::metrics::set_queue_depth(crate::metrics::pool::ANALYSIS, depth);
            if !group.is_empty() {
                if interactive.len() < interactive_before {
                    *interactive_passes += 1;
                } else {
                    *interactive_passes = 0;
                }
                return Some(group);
            }
            if *closed {
                return None;
            }
            state = self.ready.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn close(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
        self.ready.notify_all();
    }
}

/// Closes the lanes when the last pool handle goes.
struct Closer(Arc<Lanes>);

impl Drop for Closer {
    fn drop(&mut self) {
        self.0.close();
    }
}

#[derive(Clone)]
pub struct AnalysisPool {
    lanes: Arc<Lanes>,
    _closer: Arc<Closer>,
    slots: Arc<Semaphore>,
    max_requests: usize,
    head: Arc<SentimentHead>,
    model: Arc<str>,
    /// Where embeddings of the server's own fixed texts (the built-in
    /// taxonomy, the calibration background) are kept across data
    /// directories: beside the pinned model files, named after the encoder.
    shared_cache: Arc<std::path::PathBuf>,
}

impl AnalysisPool {
    /// Loads and checks every model file, runs one self-check inference and
    /// starts the inference thread. `max_requests` interactive requests may
    /// be in progress at once.
    pub fn start(
        paths: &ModelPaths,
        intra_threads: usize,
        max_requests: usize,
    ) -> Result<AnalysisPool, NlpError> {
        let encoder = Encoder::load(paths, intra_threads)?;
        if encoder.info.source_sha256 != super::E5_SOURCE_SHA256 {
            return Err(NlpError::Load {
                what: paths.encoder.display().to_string(),
                reason: "the sentiment head is trained on multilingual-e5-small embeddings; this encoder was converted from another model (use it through the library for embeddings only)".into(),
            });
        }
        let head = Arc::new(SentimentHead::trained(encoder.info.hidden)?);
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
        let lanes = Arc::new(Lanes::default());
        let thread_lanes = lanes.clone();
        // The encoder folder (`e5-small-int8`): the metrics' model label.
        let model_label = paths
            .encoder
            .file_name()
            .map_or_else(|| "encoder".into(), |n| n.to_string_lossy().into_owned());
        std::thread::Builder::new()
            .name("inference".into())
            .spawn(move || run_inference(&encoder, &thread_lanes, &model_label))
            .map_err(|e| NlpError::Load {
                what: "the inference thread".into(),
                reason: e.to_string(),
            })?;
        tracing::info!(
            model = %super::model_name(paths),
            intra_threads,
            max_requests,
            "analysis models loaded and self-checked"
        );
        Ok(AnalysisPool {
            model: super::model_name(paths).into(),
            shared_cache: Arc::new(paths.dir.join("text-embeddings").join(format!(
                "{}-{}.bin",
                paths
                    .encoder
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                &super::E5_SOURCE_SHA256[..16]
            ))),
            _closer: Arc::new(Closer(lanes.clone())),
            lanes,
            slots: Arc::new(Semaphore::new(max_requests.max(1))),
            max_requests: max_requests.max(1),
            head,
        })
    }

    /// The file that keeps embeddings of the server's fixed texts across
    /// data directories (see `nlp::text_cache`).
    pub fn shared_cache_path(&self) -> &std::path::Path {
        &self.shared_cache
    }

    /// A slot for one interactive request, or `Overloaded` at once.
    fn admit(&self) -> Result<OwnedSemaphorePermit, NlpError> {
        self.slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| NlpError::Overloaded {
                capacity: self.max_requests,
            })
    }

    /// Embeddings of `texts` (interactive lane).
    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, NlpError> {
        let _slot = self.admit()?;
        self.embed_in(Lane::Interactive, texts).await
    }

    /// Embeddings of `texts` on the background lane (never refused).
    pub async fn embed_background(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, NlpError> {
        self.embed_in(Lane::Background, texts).await
    }

    async fn embed_in(&self, lane: Lane, texts: Vec<String>) -> Result<Vec<Vec<f32>>, NlpError> {
        let mut embeddings = Vec::with_capacity(texts.len());
        let mut flight = InFlight::new(self.lanes.clone(), lane);
        let mut pending: VecDeque<String> = texts.into();
        loop {
            while flight.has_room() && !pending.is_empty() {
                let take = pending.len().min(BATCH_TEXTS);
                flight.send(pending.drain(..take).collect())?;
            }
            match flight.next().await? {
                Some(batch) => embeddings.extend(batch),
                None => return Ok(embeddings),
            }
        }
    }

    /// Analyses each text of an interactive request (refused with
    /// `Overloaded` when `max_requests` are in progress); a text that cannot
    /// be analysed gets a rejection.
    pub async fn analyze(
        &self,
        texts: Vec<String>,
        include_embeddings: bool,
    ) -> Result<Vec<Result<Analysis, Rejection>>, NlpError> {
        let _slot = self.admit()?;
        self.analyze_in(Lane::Interactive, texts, include_embeddings)
            .await
    }

    /// Analyses texts on the background lane: never refused, runs when no
    /// interactive work waits.
    pub async fn analyze_background(
        &self,
        texts: Vec<String>,
        include_embeddings: bool,
    ) -> Result<Vec<Result<Analysis, Rejection>>, NlpError> {
        self.analyze_in(Lane::Background, texts, include_embeddings)
            .await
    }

    async fn analyze_in(
        &self,
        lane: Lane,
        texts: Vec<String>,
        include_embeddings: bool,
    ) -> Result<Vec<Result<Analysis, Rejection>>, NlpError> {
        let count = texts.len();
        let mut results: Vec<Option<Result<Analysis, Rejection>>> = vec![None; count];
        let mut unplanned: VecDeque<(usize, String)> = texts.into_iter().enumerate().collect();
        // Texts being embedded, in order, and the pieces not yet sent.
        let mut open: VecDeque<Plan> = VecDeque::new();
        let mut unsent: VecDeque<String> = VecDeque::new();
        let mut flight = InFlight::new(self.lanes.clone(), lane);
        loop {
            // Keep the lane fed: plan more texts when fewer than one batch of
            // pieces is ready, send while the request has room.
            while flight.has_room() {
                if unsent.len() < BATCH_TEXTS && !unplanned.is_empty() {
                    let take = unplanned.len().min(PLAN_TEXTS);
                    let batch: Vec<(usize, String)> = unplanned.drain(..take).collect();
                    for plan in plan_texts(batch).await? {
                        match plan {
                            Err((index, rejection)) => results[index] = Some(Err(rejection)),
                            Ok((plan, pieces)) => {
                                unsent.extend(pieces);
                                open.push_back(plan);
                            }
                        }
                    }
                    continue;
                }
                if unsent.is_empty() {
                    break;
                }
                let take = unsent.len().min(BATCH_TEXTS);
                flight.send(unsent.drain(..take).collect())?;
            }
            let Some(embeddings) = flight.next().await? else {
                if unplanned.is_empty() {
                    break;
                }
                continue;
            };
            let mut done = Vec::new();
            let mut embeddings = embeddings.into_iter();
            while let Some(plan) = open.front_mut() {
                let wanted = plan.pieces - plan.embeddings.len();
                plan.embeddings.extend(embeddings.by_ref().take(wanted));
                if plan.embeddings.len() < plan.pieces {
                    break;
                }
                done.push(open.pop_front().expect("front exists"));
            }
            if !done.is_empty() {
                let head = self.head.clone();
                let model = self.model.clone();
                let assembled = tokio::task::spawn_blocking(move || {
                    done.into_iter()
                        .map(|plan| (plan.index, plan.assemble(&head, include_embeddings, &model)))
                        .collect::<Vec<_>>()
                })
                .await
                .map_err(|e| NlpError::Inference(e.to_string()))?;
                for (index, analysis) in assembled {
                    results[index] = Some(Ok(analysis));
                }
            }
        }
        debug_assert!(open.is_empty() && unsent.is_empty());
        Ok(results
            .into_iter()
            .map(|r| r.expect("every text analysed or rejected"))
            .collect())
    }
}

/// One text on its way: its sentences, the clauses of the sentences that
/// join several, and the embeddings back so far (the document's first, then
/// one per sentence of a text of several that does not split, then one per
/// clause). A split sentence of a text of several sentences is not embedded
/// on its own: its embedding is the length-weighted mean of its clauses'
/// (the encoder reads its words once, not twice). A text of one sentence is
/// embedded whole (that is the document) and its clauses besides.
/// Everything is read from the normalised text; spans are in its code points
/// until `assemble` maps them back to the original's.
struct Plan {
    index: usize,
    text: NormalizedText<'static>,
    sentences: Vec<(usize, usize)>,
    /// Per sentence: whether its embedding comes from its clauses.
    derived: Vec<bool>,
    /// (sentence index, span) of every clause of a sentence that splits.
    clauses: Vec<(usize, (usize, usize))>,
    pieces: usize,
    embeddings: Vec<Vec<f32>>,
}

impl Plan {
    fn assemble(self, head: &SentimentHead, include_embeddings: bool, model: &str) -> Analysis {
        let mut embeddings = self.embeddings.into_iter();
        let document = embeddings.next().expect("one embedding per document");
        let mut sentence_embeddings: Vec<Vec<f32>> = if self.sentences.len() > 1 {
            self.derived
                .iter()
                .map(|&derived| {
                    if derived {
                        Vec::new() // from its clauses, below
                    } else {
                        embeddings.next().expect("one embedding per whole sentence")
                    }
                })
                .collect()
        } else {
            vec![document.clone(); self.sentences.len()]
        };
        let clauses: Vec<(usize, (usize, usize), Vec<f32>)> = self
            .clauses
            .into_iter()
            .zip(embeddings)
            .map(|((sentence, span), embedding)| (sentence, span, embedding))
            .collect();
        for (i, embedding) in sentence_embeddings.iter_mut().enumerate() {
            if self.derived[i] {
                *embedding = clause_mean(i, &clauses, document.len());
            }
        }
        let mut analysis = assemble(
            self.text.as_str(),
            &self.sentences,
            document,
            sentence_embeddings,
            clauses,
            head,
            include_embeddings,
            model,
        );
        // Spans refer to the text the client sent, not to its normalised form.
        let text = &self.text;
        for sentence in &mut analysis.sentences {
            (sentence.start, sentence.end) = (
                text.to_original(sentence.start),
                text.to_original(sentence.end),
            );
        }
        for unit in &mut analysis.units {
            (unit.start, unit.end) = (text.to_original(unit.start), text.to_original(unit.end));
        }
        analysis
    }
}

type Planned = Result<(Plan, Vec<String>), (usize, Rejection)>;

/// Checks, normalises (`normalize_text`) and splits texts on the blocking
/// pool: a plan and the pieces to embed (the document, then each sentence
/// when there are several, then the clauses of sentences that join several).
async fn plan_texts(texts: Vec<(usize, String)>) -> Result<Vec<Planned>, NlpError> {
    tokio::task::spawn_blocking(move || {
        texts
            .into_iter()
            .map(|(index, text)| plan_one(index, &text))
            .collect()
    })
    .await
    .map_err(|e| NlpError::Inference(e.to_string()))
}

/// The plan of one text and the pieces to embed, in the order `Plan` reads
/// their embeddings back.
fn plan_one(index: usize, text: &str) -> Planned {
    check_text(text).map_err(|rejection| (index, rejection))?;
    let text = NormalizedText::new(text).into_owned();
    let sentences = split_sentences(text.as_str());
    let chars: Vec<char> = text.as_str().chars().collect();
    let piece = |(s, e): (usize, usize)| chars[s..e].iter().collect::<String>();
    let mut pieces = vec![text.as_str().to_string()];
    let mut clauses = Vec::new();
    let mut derived = vec![false; sentences.len()];
    for (i, &span) in sentences.iter().enumerate() {
        let parts = split_clauses(&chars, span);
        if parts.len() > 1 {
            clauses.extend(parts.into_iter().map(|part| (i, part)));
            derived[i] = sentences.len() > 1;
        }
    }
    if sentences.len() > 1 {
        pieces.extend(
            sentences
                .iter()
                .zip(&derived)
                .filter(|(_, &derived)| !derived)
                .map(|(&span, _)| piece(span)),
        );
    }
    pieces.extend(clauses.iter().map(|&(_, span)| piece(span)));
    let plan = Plan {
        index,
        text,
        pieces: pieces.len(),
        sentences,
        derived,
        clauses,
        embeddings: Vec::new(),
    };
    Ok((plan, pieces))
}

/// The embedding of sentence `sentence` from its clauses: their mean
/// weighted by length (code points, a stand-in for the tokens the encoder
/// mean-pools), normalised.
fn clause_mean(
    sentence: usize,
    clauses: &[(usize, (usize, usize), Vec<f32>)],
    dim: usize,
) -> Vec<f32> {
    let mut sum = vec![0f32; dim];
    for (_, (start, end), embedding) in clauses.iter().filter(|c| c.0 == sentence) {
        let weight = (end - start) as f32;
        sum.iter_mut()
            .zip(embedding)
            .for_each(|(s, x)| *s += weight * x);
    }
    let norm = sum.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 1e-12 {
        sum.iter_mut().for_each(|x| *x /= norm);
    }
    sum
}

/// The jobs one request has queued, answered in order. Dropping it (the
/// caller went away) closes their replies, so the inference thread skips them.
struct InFlight {
    lanes: Arc<Lanes>,
    lane: Lane,
    answers: VecDeque<oneshot::Receiver<Embeddings>>,
}

impl InFlight {
    fn new(lanes: Arc<Lanes>, lane: Lane) -> Self {
        InFlight {
            lanes,
            lane,
            answers: VecDeque::new(),
        }
    }

    fn has_room(&self) -> bool {
        self.answers.len() < JOBS_IN_FLIGHT
    }

    fn send(&mut self, texts: Vec<String>) -> Result<(), NlpError> {
        let (reply, answer) = oneshot::channel();
        self.lanes.push(self.lane, Job { texts, reply })?;
        self.answers.push_back(answer);
        Ok(())
    }

    /// The oldest job's embeddings; None when nothing is in flight.
    async fn next(&mut self) -> Result<Option<Vec<Vec<f32>>>, NlpError> {
        match self.answers.pop_front() {
            None => Ok(None),
            Some(answer) => Ok(Some(answer.await.map_err(|_| NlpError::Closed)??)),
        }
    }
}

fn run_inference(encoder: &Encoder, lanes: &Lanes, model: &str) {
    while let Some(group) = lanes.next_group() {
        let all: Vec<&str> = group
            .iter()
            .flat_map(|job| job.texts.iter().map(String::as_str))
            .collect();
        // Checked between inference calls: a group whose callers all went
        // away is dropped mid-way.
        let abandoned = || group.iter().all(|job| job.reply.is_closed());
        crate::metrics::observe_batch_size(crate::metrics::pool::ANALYSIS, all.len());
        let started = std::time::Instant::now();
        match encoder.embed_unless(&all, abandoned) {
            Ok(None) => tracing::debug!("batch dropped: its callers went away"),
            Ok(Some(mut embeddings)) => {
                crate::metrics::observe_inference(model, started.elapsed());
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
    tracing::debug!("inference thread stopped");
}

/// The documented rules for an analysable text: the same as for stored feedback.
pub use crate::domain::validate_text as check_text;

#[cfg(test)]
mod tests {
    use super::*;

    fn job(tag: &str) -> (Job, oneshot::Receiver<Embeddings>) {
        let (reply, answer) = oneshot::channel();
        (
            Job {
                texts: vec![tag.to_string()],
                reply,
            },
            answer,
        )
    }

    fn tags(group: &[Job]) -> Vec<&str> {
        group.iter().map(|j| j.texts[0].as_str()).collect()
    }

    #[test]
    fn split_sentences_of_longer_texts_come_from_their_clauses() {
        let dim = 384;
        let basis = |i: usize| {
            let mut v = vec![0f32; dim];
            v[i] = 1.0;
            v
        };
        let head = SentimentHead::trained(dim).unwrap();
        let text = "The room was clean and quiet. The food was great but the waiter ignored us.";
        let (mut plan, pieces) = plan_one(0, text).unwrap();
        // The document, the first sentence, the second's two clauses: the
        // second sentence is not read a second time.
        assert_eq!(
            pieces,
            [
                text,
                "The room was clean and quiet.",
                "The food was great",
                "but the waiter ignored us."
            ]
        );
        plan.embeddings = (0..pieces.len()).map(basis).collect();
        let analysis = plan.assemble(&head, true, "test");
        assert_eq!(analysis.sentences.len(), 2);
        let whole = |sentence: usize| {
            analysis
                .units
                .iter()
                .filter(|u| u.sentence == sentence)
                .max_by_key(|u| u.end - u.start)
                .unwrap()
        };
        assert_eq!(whole(0).embedding, basis(1));
        // Length-weighted mean of the clauses (18 and 26 code points), unit length.
        let second = &whole(1).embedding;
        let norm = (18f32 * 18.0 + 26.0 * 26.0).sqrt();
        assert!((second[2] - 18.0 / norm).abs() < 1e-6, "{:?}", &second[..4]);
        assert!((second[3] - 26.0 / norm).abs() < 1e-6);
        assert_eq!(second[0] + second[1], 0.0);
        assert_eq!(analysis.units.len(), 4);
        assert_eq!(analysis.embedding, basis(0));

        // A text of one sentence: the document is the sentence, its clauses
        // come besides.
        let text = "The food was great but the waiter ignored us.";
        let (mut plan, pieces) = plan_one(0, text).unwrap();
        assert_eq!(
            pieces,
            [text, "The food was great", "but the waiter ignored us."]
        );
        plan.embeddings = (0..pieces.len()).map(basis).collect();
        let analysis = plan.assemble(&head, true, "test");
        let sentence = analysis
            .units
            .iter()
            .find(|u| u.end - u.start == text.chars().count())
            .unwrap();
        assert_eq!(sentence.embedding, basis(0));
    }

    #[test]
    fn lanes_never_mix_and_background_gets_every_fourth_pass() {
        let lanes = Lanes::default();
        let mut answers = Vec::new();
        for i in 0..2 {
            let (j, a) = job(&format!("b{i}"));
            lanes.push(Lane::Background, j).unwrap();
            answers.push(a);
        }
        let mut passes = Vec::new();
        for round in 0..4 {
            let (j, a) = job(&format!("i{round}"));
            lanes.push(Lane::Interactive, j).unwrap();
            answers.push(a);
            passes.push(tags(&lanes.next_group().unwrap()).join(","));
        }
        // Three interactive passes, then the background lane's turn (never
        // mixed with interactive work), then interactive again.
        assert_eq!(passes, ["i0", "i1", "i2", "b0,b1"]);
        assert_eq!(tags(&lanes.next_group().unwrap()), ["i3"]);
        // Jobs whose caller went away are skipped.
        let (j, a) = job("gone");
        lanes.push(Lane::Interactive, j).unwrap();
        drop(a);
        let (j, a) = job("b2");
        lanes.push(Lane::Background, j).unwrap();
        answers.push(a);
        assert_eq!(tags(&lanes.next_group().unwrap()), ["b2"]);
        lanes.close();
        assert!(lanes.next_group().is_none());
    }
}
