//! The single writer thread: drains the bounded queue, applies every waiting
//! request in one redb transaction, fsyncs once, then answers them all.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redb::{Database, ReadableTable};

use tokio::sync::{mpsc, oneshot};

use super::{
    decode, encode, new_version, CommitSignal, DbSlot, StoreError, ANALYSIS_QUEUE, CHANGES,
    CUSTOMER_ITEMS, EMBEDDINGS, ITEMS, META, META_LAST_SEQ, PROBE,
};
use crate::domain::{Analysis, AnalysisState, Feedback, FeedbackId, Rejection};

/// Items grouped into one transaction at most (more requests wait for the next).
const MAX_GROUP_ITEMS: usize = 20_000;

/// A write request.
#[derive(Debug)]
pub enum WriteOp {
    /// Insert or replace these (validated, id-unique) items.
    Upsert(Vec<Feedback>),
    /// Delete these ids.
    Delete(Vec<FeedbackId>),
    /// Delete every item of this customer id.
    DeleteCustomer(String),
    /// Attach analyses to the item versions they were computed for.
    SetAnalysis(Vec<AnalysisUpdate>),
    /// Drop change-log entries through this seq (the index has them).
    TrimChanges(u64),
}

/// The analysis of one item version (`version_seq` is the `seq` the text was
/// read at: if the item changed since, the update is dropped as stale).
#[derive(Debug)]
pub struct AnalysisUpdate {
    pub id: FeedbackId,
    pub version_seq: u64,
    pub state: AnalysisState,
    /// The document embedding, stored in its own table (empty: none).
    pub embedding: Vec<f32>,
}

impl AnalysisUpdate {
    /// The update for one analysed version: a rejection becomes FAILED with
    /// its reason; the document embedding moves to its own table.
    pub fn from_result(
        id: FeedbackId,
        version_seq: u64,
        result: Result<Analysis, Rejection>,
    ) -> Self {
        let (state, embedding) = match result {
            Ok(mut analysis) => {
                let embedding = std::mem::take(&mut analysis.embedding);
                (AnalysisState::Done(analysis), embedding)
            }
            Err(rejection) => (
                AnalysisState::Failed {
                    reason: rejection.to_string(),
                },
                Vec::new(),
            ),
        };
        AnalysisUpdate {
            id,
            version_seq,
            state,
            embedding,
        }
    }
}

impl WriteOp {
    fn weight(&self) -> usize {
        match self {
            WriteOp::Upsert(items) => items.len(),
            WriteOp::Delete(ids) => ids.len(),
            WriteOp::DeleteCustomer(_) => 1,
            WriteOp::SetAnalysis(updates) => updates.len(),
            WriteOp::TrimChanges(_) => 1,
        }
    }
}

/// What a durable write did.
#[derive(Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    Upserted {
        count: usize,
    },
    Deleted {
        deleted: Vec<FeedbackId>,
        missing: Vec<FeedbackId>,
    },
    CustomerErased {
        deleted: Vec<FeedbackId>,
    },
    /// Versions updated (id, new seq), and updates dropped because the item
    /// changed or went.
    AnalysisSaved {
        saved: Vec<(FeedbackId, u64)>,
        stale: usize,
    },
    Trimmed,
}

struct Request {
    op: WriteOp,
    reply: oneshot::Sender<Result<WriteOutcome, StoreError>>,
}

#[derive(Clone)]
pub(super) struct WriterHandle {
    queue: mpsc::Sender<Request>,
    capacity: usize,
    slot: Arc<DbSlot>,
}

type Reply = oneshot::Receiver<Result<WriteOutcome, StoreError>>;

async fn await_reply(reply: Reply) -> Result<WriteOutcome, StoreError> {
    reply.await.map_err(|_| StoreError::Closed)?
}

impl WriterHandle {
    /// While the storage cannot take writes, a write is refused before it
    /// queues (the writer thread is busy re-opening with backoff).
    fn check_writable(&self) -> Result<(), StoreError> {
        match self.slot.unwritable_reason() {
            Some(reason) => Err(StoreError::Unavailable(reason)),
            None => Ok(()),
        }
    }

    pub(super) fn try_submit(
        &self,
        op: WriteOp,
    ) -> Result<impl Future<Output = Result<WriteOutcome, StoreError>>, StoreError> {
        self.check_writable()?;
        let (reply, rx) = oneshot::channel();
        self.queue
            .try_send(Request { op, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => StoreError::QueueFull {
                    capacity: self.capacity,
                },
                mpsc::error::TrySendError::Closed(_) => StoreError::Closed,
            })?;
        Ok(await_reply(rx))
    }

    /// Writes from a plain (non-async) thread, waiting for the outcome.
    pub(super) fn blocking_write(&self, op: WriteOp) -> Result<WriteOutcome, StoreError> {
        self.check_writable()?;
        let (reply, rx) = oneshot::channel();
        self.queue
            .blocking_send(Request { op, reply })
            .map_err(|_| StoreError::Closed)?;
        rx.blocking_recv().map_err(|_| StoreError::Closed)?
    }

    pub(super) async fn submit(
        &self,
        op: WriteOp,
    ) -> Result<impl Future<Output = Result<WriteOutcome, StoreError>>, StoreError> {
        self.check_writable()?;
        let (reply, rx) = oneshot::channel();
        self.queue
            .send(Request { op, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        Ok(await_reply(rx))
    }
}

pub(super) fn spawn(
    slot: Arc<DbSlot>,
    commits: Arc<CommitSignal>,
    capacity: usize,
) -> WriterHandle {
    let (queue, requests) = mpsc::channel::<Request>(capacity.max(1));
    std::thread::Builder::new()
        .name("store-writer".into())
        .spawn({
            let slot = slot.clone();
            move || run_writer(&slot, &commits, requests)
        })
        .expect("spawn store writer thread");
    WriterHandle {
        queue,
        capacity,
        slot,
    }
}

/// Backoff between recovery attempts while the storage cannot take writes.
const RECOVERY_MIN: Duration = Duration::from_millis(500);
const RECOVERY_MAX: Duration = Duration::from_secs(5);

fn run_writer(slot: &DbSlot, commits: &CommitSignal, mut requests: mpsc::Receiver<Request>) {
    let mut backoff = RECOVERY_MIN;
    loop {
        // Degraded: the last write hit a storage error. Requests are refused
        // at once (UNAVAILABLE) while the writer re-opens the database and
        // probes with a small write, with backoff; reads go on meanwhile.
        let first = if let Some(reason) = slot.unwritable_reason() {
            match recover(slot) {
                Ok(()) => {
                    tracing::warn!(was = %reason, "storage writable again; writes resume");
                    slot.set_unwritable(None);
                    backoff = RECOVERY_MIN;
                    continue;
                }
                Err(error) => {
                    let reason = error.to_string();
                    tracing::debug!(%reason, "storage still not writable");
                    slot.set_unwritable(Some(reason.clone()));
                    match requests.try_recv() {
                        Ok(request) => {
                            let _ = request.reply.send(Err(StoreError::Unavailable(reason)));
                            continue;
                        }
                        Err(mpsc::error::TryRecvError::Empty) => {
                            std::thread::sleep(backoff);
                            backoff = (backoff * 2).min(RECOVERY_MAX);
                            continue;
                        }
                        Err(mpsc::error::TryRecvError::Disconnected) => break,
                    }
                }
            }
        } else {
            match requests.blocking_recv() {
                Some(request) => request,
                None => break,
            }
        };
        let mut group_items = first.op.weight();
        let mut group = vec![first];
        while group_items < MAX_GROUP_ITEMS {
            match requests.try_recv() {
                Ok(next) => {
                    group_items += next.op.weight();
                    group.push(next);
                }
                Err(_) => break,
            }
        }
        let (ops, replies): (Vec<WriteOp>, Vec<_>) =
            group.into_iter().map(|r| (r.op, r.reply)).unzip();
        let started = std::time::Instant::now();
        let result = slot.get().and_then(|db| apply_group(&db, ops));
        match result {
            Ok((outcomes, last_seq)) => {
                tracing::debug!(
                    requests = replies.len(),
                    items = group_items,
                    elapsed_us = started.elapsed().as_micros() as u64,
                    "store group committed"
                );
                commits.publish(last_seq);
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(error) if error.is_storage_failure() => {
                let reason = storage_reason(&error);
                tracing::error!(
                    %error,
                    requests = replies.len(),
                    "storage write failed: refusing writes until the storage recovers"
                );
                slot.set_unwritable(Some(reason.clone()));
                backoff = RECOVERY_MIN;
                for reply in replies {
                    let _ = reply.send(Err(StoreError::Unavailable(reason.clone())));
                }
                std::thread::sleep(backoff);
            }
            Err(error) => {
                tracing::error!(%error, requests = replies.len(), "store write failed");
                for reply in replies {
                    let _ = reply.send(Err(StoreError::WriteFailed(error.to_string())));
                }
            }
        }
    }
    tracing::debug!("store writer stopped");
}

/// A short, actionable description of a storage error for clients.
fn storage_reason(error: &StoreError) -> String {
    match error {
        StoreError::Database(redb::Error::Io(io)) => match io.raw_os_error() {
            Some(28) => format!("the disk is full ({io})"),
            Some(30) => format!("the file system is read-only ({io})"),
            Some(13) | Some(1) => format!("permission denied on the data dir ({io})"),
            _ => format!("I/O error ({io})"),
        },
        StoreError::Unavailable(reason) => reason.clone(),
        other => other.to_string(),
    }
}

/// Room a recovery probe must find before writes resume: it writes a blob of
/// this size durably, then removes it. A probe of a few bytes would fit in
/// the file's free pages on a disk that is still full, and health would flap.
const PROBE_BYTES: usize = 1024 * 1024;

/// Re-opens the database after a storage error and proves that a durable
/// write of `PROBE_BYTES` goes through.
fn recover(slot: &DbSlot) -> Result<(), StoreError> {
    slot.reopen()
        .map_err(|e| StoreError::Unavailable(storage_reason(&e)))?;
    let probe = || -> Result<(), StoreError> {
        let db = slot.get()?;
        let txn = db.begin_write()?;
        {
            let mut scratch = txn.open_table(PROBE)?;
            scratch.insert("probe", vec![0u8; PROBE_BYTES].as_slice())?;
        }
        txn.commit()?;
        let mut txn = db.begin_write()?;
        txn.set_durability(redb::Durability::None)?;
        {
            let mut scratch = txn.open_table(PROBE)?;
            scratch.remove("probe")?;
        }
        txn.commit()?;
        Ok(())
    };
    probe().map_err(|e| StoreError::Unavailable(storage_reason(&e)))
}

fn apply_group(db: &Database, ops: Vec<WriteOp>) -> Result<(Vec<WriteOutcome>, u64), StoreError> {
    let txn = db.begin_write()?;
    let mut outcomes = Vec::with_capacity(ops.len());
    let last_seq;
    {
        let mut items = txn.open_table(ITEMS)?;
        let mut customers = txn.open_multimap_table(CUSTOMER_ITEMS)?;
        let mut changes = txn.open_table(CHANGES)?;
        let mut meta = txn.open_table(META)?;
        let mut analysis_queue = txn.open_table(ANALYSIS_QUEUE)?;
        let mut embeddings = txn.open_table(EMBEDDINGS)?;
        let mut seq = meta.get(META_LAST_SEQ)?.map(|v| v.value()).unwrap_or(0);
        for op in ops {
            let outcome = match op {
                WriteOp::Upsert(list) => {
                    let count = list.len();
                    for feedback in list {
                        seq += 1;
                        let id = feedback.id.as_str().to_string();
                        let customer = feedback.customer_id.clone();
                        let bytes = encode(&new_version(feedback, seq))?;
                        let previous = items
                            .insert(id.as_str(), bytes.as_slice())?
                            .map(|old| decode(&id, old.value()))
                            .transpose()?;
                        if let Some(previous) = previous {
                            embeddings.remove(id.as_str())?;
                            let old_customer = &previous.feedback.customer_id;
                            if !old_customer.is_empty() && *old_customer != customer {
                                customers.remove(old_customer.as_str(), id.as_str())?;
                            }
                        }
                        if !customer.is_empty() {
                            customers.insert(customer.as_str(), id.as_str())?;
                        }
                        changes.insert(seq, id.as_str())?;
                        analysis_queue.insert(seq, id.as_str())?;
                    }
                    WriteOutcome::Upserted { count }
                }
                WriteOp::Delete(ids) => {
                    let mut deleted = Vec::new();
                    let mut missing = Vec::new();
                    for id in ids {
                        let previous = items
                            .remove(id.as_str())?
                            .map(|old| decode(id.as_str(), old.value()))
                            .transpose()?;
                        match previous {
                            Some(previous) => {
                                embeddings.remove(id.as_str())?;
                                let customer = &previous.feedback.customer_id;
                                if !customer.is_empty() {
                                    customers.remove(customer.as_str(), id.as_str())?;
                                }
                                seq += 1;
                                changes.insert(seq, id.as_str())?;
                                deleted.push(id);
                            }
                            None => missing.push(id),
                        }
                    }
                    WriteOutcome::Deleted { deleted, missing }
                }
                WriteOp::DeleteCustomer(customer) => {
                    let ids: Vec<String> = customers
                        .remove_all(customer.as_str())?
                        .map(|id| id.map(|id| id.value().to_string()))
                        .collect::<Result<_, _>>()?;
                    let mut deleted = Vec::with_capacity(ids.len());
                    for id in ids {
                        embeddings.remove(id.as_str())?;
                        if items.remove(id.as_str())?.is_some() {
                            seq += 1;
                            changes.insert(seq, id.as_str())?;
                            deleted.push(FeedbackId::parse(&id).map_err(|reason| {
                                StoreError::WriteFailed(format!(
                                    "stored id {id:?} is invalid: {reason}"
                                ))
                            })?);
                        }
                    }
                    WriteOutcome::CustomerErased { deleted }
                }
                WriteOp::SetAnalysis(updates) => {
                    let mut saved = Vec::new();
                    let mut stale = 0;
                    for update in updates {
                        analysis_queue.remove(update.version_seq)?;
                        let id = update.id.as_str().to_string();
                        let current = items
                            .get(id.as_str())?
                            .map(|bytes| decode(&id, bytes.value()))
                            .transpose()?;
                        match current {
                            Some(mut item) if item.seq == update.version_seq => {
                                // The item keeps its version seq (the index's
                                // stable tie-breaker); the change log gets a new one.
                                seq += 1;
                                item.analysis = update.state;
                                items.insert(id.as_str(), encode(&item)?.as_slice())?;
                                changes.insert(seq, id.as_str())?;
                                if !update.embedding.is_empty() {
                                    let bytes: Vec<u8> = update
                                        .embedding
                                        .iter()
                                        .flat_map(|v| v.to_le_bytes())
                                        .collect();
                                    embeddings.insert(id.as_str(), bytes.as_slice())?;
                                }
                                saved.push((update.id, seq));
                            }
                            _ => stale += 1,
                        }
                    }
                    WriteOutcome::AnalysisSaved { saved, stale }
                }
                WriteOp::TrimChanges(through) => {
                    changes.retain_in(..=through, |_, _| false)?;
                    WriteOutcome::Trimmed
                }
            };
            outcomes.push(outcome);
        }
        meta.insert(META_LAST_SEQ, seq)?;
        last_seq = seq;
    }
    txn.commit()?;
    Ok((outcomes, last_seq))
}
