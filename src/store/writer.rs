//! The single writer thread: drains the bounded queue, applies every waiting
//! request in one redb transaction, fsyncs once, then answers them all. The
//! queue carries type-erased `Operation`s; the typed writes themselves are in
//! `operations.rs`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use redb::{Database, MultimapTable, ReadableTable, Table};

use tokio::sync::{mpsc, oneshot};

use super::themes::{TAGS, TEXT_EMBEDDINGS, THEMES, UNITS};
use super::{
    CommitSignal, DbSlot, StoreError, ANALYSIS_QUEUE, CHANGES, CUSTOMER_ITEMS, EMBEDDINGS, ITEMS,
    META, META_LAST_REMOVAL, META_LAST_SEQ, META_REMOVALS_AS_OF, PROBE,
};

/// Items grouped into one transaction at most (more requests wait for the next).
const MAX_GROUP_ITEMS: usize = 20_000;

/// A typed write: its inputs, applied inside a group's transaction, and the
/// result its caller gets once the group is durable. Adding a write means one
/// struct implementing this (`operations.rs`) and one `Store` method.
pub(super) trait WriteOperation: Send + 'static {
    type Output: Send + 'static;
    /// How much it counts against `MAX_GROUP_ITEMS` (items it touches).
    fn weight(&self) -> usize;
    /// Applies the write; an error aborts the whole group's transaction.
    fn apply(self, tx: &mut TxnContext<'_>) -> Result<Self::Output, StoreError>;
}

/// The tables of one group's write transaction, and the seq counter every
/// write of the group draws from.
pub(super) struct TxnContext<'txn> {
    pub(super) items: Table<'txn, &'static str, &'static [u8]>,
    pub(super) customers: MultimapTable<'txn, &'static str, &'static str>,
    pub(super) changes: Table<'txn, u64, &'static str>,
    pub(super) analysis_queue: Table<'txn, u64, &'static str>,
    pub(super) embeddings: Table<'txn, &'static str, &'static [u8]>,
    pub(super) units: Table<'txn, &'static str, &'static [u8]>,
    pub(super) tags: Table<'txn, &'static str, &'static [u8]>,
    pub(super) themes: Table<'txn, &'static str, &'static [u8]>,
    pub(super) text_embeddings: Table<'txn, &'static str, &'static [u8]>,
    pub(super) meta: Table<'txn, &'static str, u64>,
    seq: u64,
    /// The change seq of the group's last item removal (0: none).
    last_removal: u64,
}

impl TxnContext<'_> {
    /// A new seq, greater than every seq committed before.
    pub(super) fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Appends `seq -> id` to the change log under a new seq; returns it.
    pub(super) fn log_change(&mut self, id: &str) -> Result<u64, StoreError> {
        let seq = self.next_seq();
        self.changes.insert(seq, id)?;
        Ok(seq)
    }

    /// `log_change` for an item the write removed from the store.
    pub(super) fn log_removal(&mut self, id: &str) -> Result<u64, StoreError> {
        let seq = self.log_change(id)?;
        self.last_removal = seq;
        Ok(seq)
    }
}

/// What the writer thread queues and groups: a write with its reply channel,
/// its result type erased.
trait Operation: Send {
    fn weight(&self) -> usize;
    fn apply(&mut self, tx: &mut TxnContext<'_>) -> Result<(), StoreError>;
    /// Answers the caller: `Ok` once the group committed durably.
    fn finish(self: Box<Self>, result: Result<(), StoreError>);
}

/// A typed write waiting in the queue; after `apply` it holds its output
/// until the commit decides whether the caller gets it.
struct Queued<W: WriteOperation> {
    weight: usize,
    op: Option<W>,
    output: Option<W::Output>,
    reply: oneshot::Sender<Result<W::Output, StoreError>>,
}

impl<W: WriteOperation> Operation for Queued<W> {
    fn weight(&self) -> usize {
        self.weight
    }

    fn apply(&mut self, tx: &mut TxnContext<'_>) -> Result<(), StoreError> {
        let op = self
            .op
            .take()
            .ok_or_else(|| StoreError::WriteFailed("a write was applied twice".into()))?;
        self.output = Some(op.apply(tx)?);
        Ok(())
    }

    fn finish(self: Box<Self>, result: Result<(), StoreError>) {
        let Queued { output, reply, .. } = *self;
        let result = result.and_then(|()| {
            output.ok_or_else(|| StoreError::WriteFailed("a write committed unapplied".into()))
        });
        let _ = reply.send(result);
    }
}

fn queued<W: WriteOperation>(op: W) -> (Box<dyn Operation>, PendingWrite<W::Output>) {
    let (reply, rx) = oneshot::channel();
    let queued = Queued {
        weight: op.weight(),
        op: Some(op),
        output: None,
        reply,
    };
    (Box::new(queued), PendingWrite(rx))
}

/// The result of a queued write: resolves once its group is durable (or
/// failed). Holding it does not hold the queue slot.
pub struct PendingWrite<T>(oneshot::Receiver<Result<T, StoreError>>);

impl<T> Future for PendingWrite<T> {
    type Output = Result<T, StoreError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|reply| reply.unwrap_or(Err(StoreError::Closed)))
    }
}

#[derive(Clone)]
pub(super) struct WriterHandle {
    queue: mpsc::Sender<Box<dyn Operation>>,
    capacity: usize,
    slot: Arc<DbSlot>,
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

    /// Writes waiting in the queue now.
    pub(super) fn queued(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }

    /// Queues a write, waiting up to `wait` for room (in turn with the
    /// writes already waiting), then failing with `QueueFull`.
    pub(super) async fn submit_within<W: WriteOperation>(
        &self,
        op: W,
        wait: Duration,
    ) -> Result<PendingWrite<W::Output>, StoreError> {
        self.check_writable()?;
        let permit = match tokio::time::timeout(wait, self.queue.reserve()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(StoreError::Closed),
            Err(_) => {
                return Err(StoreError::QueueFull {
                    capacity: self.capacity,
                })
            }
        };
        let (op, pending) = queued(op);
        permit.send(op);
        Ok(pending)
    }

    /// Queues a write, waiting for room in the queue (backpressure).
    pub(super) async fn submit<W: WriteOperation>(
        &self,
        op: W,
    ) -> Result<PendingWrite<W::Output>, StoreError> {
        self.check_writable()?;
        let (op, pending) = queued(op);
        self.queue.send(op).await.map_err(|_| StoreError::Closed)?;
        Ok(pending)
    }

    /// Writes from a plain (non-async) thread, waiting for the outcome.
    pub(super) fn blocking_write<W: WriteOperation>(&self, op: W) -> Result<W::Output, StoreError> {
        self.check_writable()?;
        let (op, pending) = queued(op);
        self.queue
            .blocking_send(op)
            .map_err(|_| StoreError::Closed)?;
        pending.0.blocking_recv().map_err(|_| StoreError::Closed)?
    }
}

pub(super) fn spawn(
    slot: Arc<DbSlot>,
    commits: Arc<CommitSignal>,
    capacity: usize,
) -> WriterHandle {
    let (queue, requests) = mpsc::channel::<Box<dyn Operation>>(capacity.max(1));
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

fn run_writer(
    slot: &DbSlot,
    commits: &CommitSignal,
    mut requests: mpsc::Receiver<Box<dyn Operation>>,
) {
    let mut backoff = RECOVERY_MIN;
    loop {
        // Degraded: the last write hit a storage error. Requests are refused
        // at once (UNAVAILABLE) while the writer re-opens the database and
        // probes with a small write, with backoff; reads go on meanwhile.
        let first = if let Some(reason) = slot.unwritable_reason() {
            match recover(slot, commits) {
                Ok(()) => {
                    tracing::warn!(was = %reason, "storage writable again; writes resume");
                    slot.set_unwritable(None);
                    backoff = RECOVERY_MIN;
                    continue;
                }
                Err(error) => {
                    let reason = storage_reason(&error);
                    tracing::debug!(%reason, "storage still not writable");
                    slot.set_unwritable(Some(reason.clone()));
                    match requests.try_recv() {
                        Ok(op) => {
                            op.finish(Err(StoreError::Unavailable(reason)));
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
                Some(op) => op,
                None => break,
            }
        };
        let mut group_items = first.weight();
        let mut group = vec![first];
        while group_items < MAX_GROUP_ITEMS {
            match requests.try_recv() {
                Ok(next) => {
                    group_items += next.weight();
                    group.push(next);
                }
                Err(_) => break,
            }
        }
        crate::metrics::observe_batch_size(crate::metrics::pool::WRITE, group_items);
        let started = std::time::Instant::now();
        let result = slot
            .check_file()
            .and_then(|()| slot.get_writable())
            .and_then(|db| apply_group(&db, &mut group));
        match result {
            Ok((last_seq, last_removal)) => {
                // Published before any caller hears of the commit.
                commits.publish_removal(last_removal);
                tracing::debug!(
                    requests = group.len(),
                    items = group_items,
                    elapsed_us = started.elapsed().as_micros() as u64,
                    "store group committed"
                );
                commits.publish(last_seq);
                for op in group {
                    op.finish(Ok(()));
                }
            }
            Err(error) if error.is_storage_failure() => {
                let reason = storage_reason(&error);
                tracing::error!(
                    %error,
                    requests = group.len(),
                    "storage write failed: refusing writes until the storage recovers"
                );
                slot.set_unwritable(Some(reason.clone()));
                backoff = RECOVERY_MIN;
                // redb refuses reads of pages it has not cached after a
                // failed write, until the database is opened again: before
                // the callers hear of the failure, so that a read they make
                // next finds it open (a read in between failed with
                // `PreviousIo`; the unit test below hit it under load).
                if let Err(error) = reopen(slot, commits) {
                    tracing::warn!(%error, "cannot re-open the store for reads");
                }
                for op in group {
                    op.finish(Err(StoreError::Unavailable(reason.clone())));
                }
                std::thread::sleep(backoff);
            }
            Err(error) => {
                tracing::error!(%error, requests = group.len(), "store write failed");
                for op in group {
                    op.finish(Err(StoreError::WriteFailed(error.to_string())));
                }
            }
        }
    }
    tracing::debug!("store writer stopped");
}

/// A short, actionable description of a storage error for clients.
fn storage_reason(error: &StoreError) -> String {
    match error {
        StoreError::Database(redb::Error::Io(io)) => io_reason(io),
        StoreError::Unavailable(reason) => reason.clone(),
        other => other.to_string(),
    }
}

fn io_reason(io: &std::io::Error) -> String {
    match io.raw_os_error() {
        Some(28) => format!("the disk is full ({io})"),
        Some(30) => format!("the file system is read-only ({io})"),
        Some(13) | Some(1) => format!("permission denied on the data dir ({io})"),
        _ => format!("I/O error ({io})"),
    }
}

/// Room a recovery probe must find before writes resume: it writes a blob of
/// this size durably, then removes it. A probe of a few bytes would fit in
/// the file's free pages on a disk that is still full, and health would flap.
const PROBE_BYTES: usize = 1024 * 1024;

/// Opens the database again after a storage error (redb refuses every
/// transaction of a database that failed a write, and reads of pages it has
/// not cached).
fn reopen(slot: &DbSlot, commits: &CommitSignal) -> Result<(), StoreError> {
    slot.reopen()
        .map_err(|e| StoreError::Unavailable(storage_reason(&e)))?;
    // Reads see the reopened database from now on, and the failed group may
    // have reached its disk all the same, its removals with it: the seq of
    // the last removal is read back (unreadable: any change from here on may
    // be one).
    let db = slot.get();
    let removal = db
        .as_ref()
        .ok()
        .and_then(|db| super::last_removal_seq(db).ok());
    commits.publish_removal(removal.unwrap_or(u64::MAX));
    let seq = db.and_then(|db| super::last_seq(&db));
    // The failed group may be on disk all the same: wake the indexer for it,
    // or its items would wait for the next write to become searchable.
    if let Ok(seq) = seq {
        commits.publish(seq);
    }
    Ok(())
}

/// Proves, after a storage error, that writes can succeed again: first
/// that a durable write of `PROBE_BYTES` to a plain file beside the
/// database goes through (no database write fails while the disk is still
/// full, so reads keep their handle), then the same inside the database.
/// A database probe that fails leaves the database opened again for reads.
fn recover(slot: &DbSlot, commits: &CommitSignal) -> Result<(), StoreError> {
    slot.check_file()?;
    probe_room(&slot.dir).map_err(|e| StoreError::Unavailable(io_reason(&e)))?;
    if slot.is_read_only() {
        // Still refused: keep the read-only open (a re-open repairs the
        // whole file in memory) and the reads it serves.
        slot.file_opens_for_writing()
            .map_err(|e| StoreError::Unavailable(io_reason(&e)))?;
        if !slot.read_only_retry_due() {
            return Err(StoreError::Unavailable(super::READ_ONLY_REASON.into()));
        }
    }
    if slot.get().is_err() || slot.is_read_only() {
        // The re-open after the failure did not succeed, or opened the file
        // read-only: open it for writing now.
        reopen(slot, commits)?;
    }
    let probe = || -> Result<(), StoreError> {
        let db = slot.get_writable()?;
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
    probe().map_err(|e| {
        // A read-only open took no write: nothing to re-open for.
        if slot.is_read_only() {
            return StoreError::Unavailable(storage_reason(&e));
        }
        if let Err(error) = reopen(slot, commits) {
            tracing::debug!(%error, "cannot re-open the store for reads");
        }
        StoreError::Unavailable(storage_reason(&e))
    })
}

/// Whether a store opened in `dir` is on a full disk (`write_probe`, no
/// sync: the recovery loop's `probe_room` decides when writes resume).
/// Only a full disk is reported: other errors show at the first write, as
/// they would have before.
pub(super) fn room_at_open(dir: &std::path::Path) -> Result<(), String> {
    match super::write_probe(dir) {
        Err(error) if error.raw_os_error() == Some(28) => Err(io_reason(&error)),
        _ => Ok(()),
    }
}

/// Writes `PROBE_BYTES` durably to a scratch file in `dir`, then removes it.
fn probe_room(dir: &std::path::Path) -> std::io::Result<()> {
    use std::io::Write;
    let path = dir.join(".write-probe");
    let written = (|| {
        let mut file = std::fs::File::create(&path)?;
        file.write_all(&vec![0u8; PROBE_BYTES])?;
        file.sync_all()
    })();
    let removed = std::fs::remove_file(&path);
    written?;
    match removed {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Applies a group of writes in one transaction and commits it durably;
/// returns the last seq and the seq of the last item removal (0: none). Any
/// error aborts the whole group.
fn apply_group(db: &Database, group: &mut [Box<dyn Operation>]) -> Result<(u64, u64), StoreError> {
    let txn = db.begin_write()?;
    let last_seq;
    let last_removal;
    {
        let meta = txn.open_table(META)?;
        let seq = meta.get(META_LAST_SEQ)?.map(|v| v.value()).unwrap_or(0);
        // Whether `META_LAST_REMOVAL` covers every change so far: not on a
        // store an older build wrote last (any change may have been a
        // removal), whose record this group starts at its last seq.
        let removals_known =
            seq == 0 || meta.get(META_REMOVALS_AS_OF)?.map(|v| v.value()) == Some(seq);
        let before = seq;
        let mut tx = TxnContext {
            items: txn.open_table(ITEMS)?,
            customers: txn.open_multimap_table(CUSTOMER_ITEMS)?,
            changes: txn.open_table(CHANGES)?,
            analysis_queue: txn.open_table(ANALYSIS_QUEUE)?,
            embeddings: txn.open_table(EMBEDDINGS)?,
            units: txn.open_table(UNITS)?,
            tags: txn.open_table(TAGS)?,
            themes: txn.open_table(THEMES)?,
            text_embeddings: txn.open_table(TEXT_EMBEDDINGS)?,
            meta,
            seq,
            last_removal: 0,
        };
        for op in group.iter_mut() {
            op.apply(&mut tx)?;
        }
        let seq = tx.seq;
        tx.meta.insert(META_LAST_SEQ, seq)?;
        if tx.last_removal > 0 {
            tx.meta.insert(META_LAST_REMOVAL, tx.last_removal)?;
        } else if !removals_known {
            tx.meta.insert(META_LAST_REMOVAL, before)?;
        }
        tx.meta.insert(META_REMOVALS_AS_OF, seq)?;
        last_seq = seq;
        last_removal = tx.last_removal;
    }
    txn.commit()?;
    Ok((last_seq, last_removal))
}
