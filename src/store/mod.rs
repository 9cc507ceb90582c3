//! The durable system of record: every feedback item, keyed by id, in a redb
//! database (`DATA_DIR/store.redb`), plus a change log that the index follows.
//!
//! Invariants:
//! - A write is acknowledged only after its redb transaction committed with
//!   `Durability::Immediate` (fsync): `kill -9` after the ack loses nothing.
//! - All writes go through one writer thread that groups concurrent requests
//!   into one transaction (group commit); the queue in front of it is bounded.
//! - Every upsert and delete appends `seq -> id` to the change log in the same
//!   transaction. The index applies the log in order and records the last
//!   applied `seq` in its commit, so after a crash it replays what it missed.
//!   The index can always be rebuilt from `ITEMS` alone (`verbatim reindex`).

mod codec;
mod mentions;
mod operations;
mod overlay;
mod themes;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use redb::{
    Database, MultimapTableDefinition, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition,
};

use crate::domain::{AnalysisState, Feedback, FeedbackId, StoredFeedback, Theme};

pub use operations::{AnalysisSaved, AnalysisUpdate, Deleted, ThemeConfirm, ThemeUpdate, Upserted};
pub use themes::{ConfirmedSnapshot, ConfirmedVersions, ThemeTag, UnitsOfItem, UnitsPage};
pub use writer::PendingWrite;

/// How long a unary call's write waits for room in a full write queue.
pub const UNARY_QUEUE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// How a write waits for room in the bounded write queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueMode {
    /// Wait up to `UNARY_QUEUE_WAIT` for room, and at most half the time
    /// left before the caller's deadline (the other half is the write's),
    /// then fail with `QueueFull` (RESOURCE_EXHAUSTED): unary calls. The
    /// queue is first come, first served, so streams that keep it full do
    /// not starve them.
    Brief {
        deadline: Option<std::time::Instant>,
    },
    /// Wait for room (streams and background work: the wait is the backpressure).
    Wait,
}

impl QueueMode {
    /// `Brief` for a caller that stops waiting at `deadline`.
    pub fn brief(deadline: Option<std::time::Instant>) -> Self {
        QueueMode::Brief { deadline }
    }
}

/// How long a `Brief` write may wait for room now.
fn brief_wait(deadline: Option<std::time::Instant>) -> std::time::Duration {
    match deadline {
        Some(deadline) => {
            UNARY_QUEUE_WAIT.min(deadline.saturating_duration_since(std::time::Instant::now()) / 2)
        }
        None => UNARY_QUEUE_WAIT,
    }
}

pub(crate) const ITEMS: TableDefinition<&str, &[u8]> = TableDefinition::new("items");
pub(crate) const CUSTOMER_ITEMS: MultimapTableDefinition<&str, &str> =
    MultimapTableDefinition::new("customer_items");
pub(crate) const CHANGES: TableDefinition<u64, &str> = TableDefinition::new("changes");
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Document embeddings (little-endian f32) by id, kept beside the item so
/// item records stay small.
pub(crate) const EMBEDDINGS: TableDefinition<&str, &[u8]> = TableDefinition::new("embeddings");
/// Versions waiting for the background analysis: seq of the version -> id.
pub(crate) const ANALYSIS_QUEUE: TableDefinition<u64, &str> =
    TableDefinition::new("analysis_queue");
pub(crate) const META_LAST_SEQ: &str = "last_seq";
/// The change seq of the last item removal (absent: none yet).
pub(crate) const META_LAST_REMOVAL: &str = "last_removal_seq";
/// The last seq of the last group that kept `META_LAST_REMOVAL`: a store
/// last written by a build that did not keep it has a different `last_seq`,
/// and any change may have been a removal.
pub(crate) const META_REMOVALS_AS_OF: &str = "removals_as_of_seq";
/// Scratch space of the recovery probe after a storage error (empty otherwise).
pub(crate) const PROBE: TableDefinition<&str, &[u8]> = TableDefinition::new("probe");

/// Each message names its cause, and no variant also links the cause as
/// its `source()`: a chain printed whole (`{:#}`, as the CLI and the tenant
/// errors do) named each cause twice.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(redb::Error),
    #[error("the data dir {dir} is in use by another verbatim process (one server or offline command per data dir: stop it, or pick another --data-dir)")]
    InUse { dir: String },
    #[error("cannot open the store at {path}: {cause}")]
    Open {
        path: String,
        cause: redb::DatabaseError,
    },
    #[error("stored record {id} cannot be decoded: {cause}")]
    Decode {
        id: String,
        cause: serde_json::Error,
    },
    #[error("stored record {id} is malformed: {reason}")]
    Malformed { id: String, reason: String },
    #[error("record cannot be encoded: {0}")]
    Encode(serde_json::Error),
    #[error("the write queue is full ({capacity} requests waiting)")]
    QueueFull { capacity: usize },
    #[error("the store is shutting down")]
    Closed,
    #[error("write transaction failed: {0}")]
    WriteFailed(String),
    /// The storage cannot take writes (disk full, read-only, permission
    /// denied) or is being re-opened after such an error: retry later.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
}

impl From<redb::Error> for StoreError {
    fn from(error: redb::Error) -> Self {
        StoreError::Database(error)
    }
}

impl StoreError {
    /// An error of the storage itself (the disk or the file), as opposed to a
    /// bad record or a full queue: the database must be re-opened after it.
    pub fn is_storage_failure(&self) -> bool {
        matches!(
            self,
            StoreError::Database(
                redb::Error::Io(_) | redb::Error::PreviousIo | redb::Error::DatabaseClosed,
            ) | StoreError::Unavailable(_)
        )
    }

    /// An open refused because the file cannot be opened for writing (a
    /// read-only file system, permissions), while it may still be read.
    fn refused_write(&self) -> bool {
        let StoreError::Open {
            cause: redb::DatabaseError::Storage(redb::StorageError::Io(io)),
            ..
        } = self
        else {
            return false;
        };
        // EROFS; EACCES and EPERM.
        matches!(
            io.kind(),
            std::io::ErrorKind::ReadOnlyFilesystem | std::io::ErrorKind::PermissionDenied
        )
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { StoreError::Database(e.into()) }
        }
    )*};
}
from_redb!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

/// One entry of the change log: the item's current version, or `None` when
/// it has been deleted since.
#[derive(Debug)]
pub struct Change {
    pub seq: u64,
    pub id: FeedbackId,
    pub current: Option<StoredFeedback>,
}

/// Change-log entries read in one snapshot of the store.
#[derive(Debug)]
pub struct ChangeBatch {
    pub changes: Vec<Change>,
    /// Items stored in that snapshot.
    pub snapshot_items: u64,
    /// Every entry of the snapshot after `after_seq` is in `changes` (not cut
    /// at `max`): once they are applied, the index must hold exactly
    /// `snapshot_items` documents.
    pub complete: bool,
}

/// Wakes the index when the store committed something new.
#[derive(Default)]
pub struct CommitSignal {
    last_seq: Mutex<u64>,
    changed: Condvar,
    /// The change seq of the last item removal committed (a delete, a
    /// customer's erasure); at open, the last seq (any earlier change may
    /// have been one).
    last_removal: AtomicU64,
}

impl CommitSignal {
    fn publish_removal(&self, seq: u64) {
        self.last_removal.fetch_max(seq, Ordering::AcqRel);
    }

    fn publish(&self, seq: u64) {
        let mut last = self.last_seq.lock().unwrap_or_else(|e| e.into_inner());
        if seq > *last {
            *last = seq;
        }
        self.changed.notify_all();
    }

    /// Blocks until a commit newer than `seen` or the timeout; returns the
    /// last committed seq.
    pub fn wait_newer_than(&self, seen: u64, timeout: Duration) -> u64 {
        let last = self.last_seq.lock().unwrap_or_else(|e| e.into_inner());
        let (last, _) = self
            .changed
            .wait_timeout_while(last, timeout, |last| *last <= seen)
            .unwrap_or_else(|e| e.into_inner());
        *last
    }
}

/// The open database, replaced as a whole when a storage error forces a
/// re-open (redb refuses every transaction after an I/O error until then).
pub(crate) struct DbSlot {
    dir: PathBuf,
    /// redb's page cache limit, in bytes (kept for re-opens).
    cache_bytes: usize,
    /// Opens the file (kept for re-opens).
    open_file: OpenFile,
    current: RwLock<Option<Arc<Database>>>,
    /// Whether `current` was opened read-only (`overlay`: its file system
    /// refused a read-write open); it takes no write. Set before the
    /// database is published; only the writer thread re-opens.
    read_only: AtomicBool,
    /// When the writer last tried to re-open the read-only database for
    /// writing (`read_only_retry_due`).
    read_only_tried: Mutex<Option<Instant>>,
    /// Set while a re-open has taken the database out of `current`: reads
    /// wait for it (`REOPEN_WAIT`) instead of failing.
    reopening: (Mutex<bool>, std::sync::Condvar),
    /// The database file opened (device, inode), to tell when it is
    /// deleted or replaced under the server.
    file: Option<(u64, u64)>,
    /// Why writes cannot succeed now; `None` while they can.
    unwritable: Mutex<Option<String>>,
    writable_tx: tokio::sync::watch::Sender<bool>,
}

/// Why a store opened read-only refuses writes.
pub(crate) const READ_ONLY_REASON: &str =
    "the file system is read-only (the store is open for reads until it takes writes again)";

/// How often the writer tries to re-open a read-only store for writing
/// while its file already opens for writing (`DbSlot::read_only_retry_due`).
const READ_ONLY_RETRY: Duration = Duration::from_secs(5);

/// How long a read waits for a re-open in progress before it is refused.
const REOPEN_WAIT: Duration = Duration::from_secs(10);

/// The store's file in its folder.
pub const STORE_FILE: &str = "store.redb";

/// Writes a few bytes to a scratch file in `dir` and removes it (either
/// way: a failed write may leave the file created): whether the folder
/// takes writes at all.
pub fn write_probe(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(".write-probe");
    let written = std::fs::write(&probe, b"ok");
    let _ = std::fs::remove_file(&probe);
    written
}

#[cfg(unix)]
fn file_identity(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)?;
    Ok((meta.dev(), meta.ino()))
}

/// Elsewhere only a deleted file is told (no inode to compare).
#[cfg(not(unix))]
fn file_identity(path: &Path) -> std::io::Result<(u64, u64)> {
    std::fs::metadata(path).map(|_| (0, 0))
}

impl DbSlot {
    fn new(dir: &Path, db: Database, cache_bytes: usize, open_file: OpenFile) -> DbSlot {
        DbSlot {
            dir: dir.to_path_buf(),
            cache_bytes,
            open_file,
            current: RwLock::new(Some(Arc::new(db))),
            read_only: AtomicBool::new(false),
            read_only_tried: Mutex::new(None),
            reopening: (Mutex::new(false), std::sync::Condvar::new()),
            file: file_identity(&dir.join(STORE_FILE)).ok(),
            unwritable: Mutex::new(None),
            writable_tx: tokio::sync::watch::channel(true).0,
        }
    }

    /// Fails once the store's file is no longer the one opened: deleted
    /// (with the data dir, say) or replaced under the running server.
    /// Writes into an unlinked file would be acknowledged and then vanish
    /// at the next start; a re-open would start an empty store.
    pub(crate) fn check_file(&self) -> Result<(), StoreError> {
        let Some(opened) = self.file else {
            return Ok(());
        };
        let path = self.dir.join(STORE_FILE);
        match file_identity(&path) {
            Ok(now) if now == opened => Ok(()),
            Ok(_) => Err(StoreError::Unavailable(format!(
                "{} was replaced under the running server; nothing more is written to it \
                 (restart the server to use the new file)",
                path.display()
            ))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(StoreError::Unavailable(format!(
                    "{} was deleted under the running server; nothing more is written \
                     (restore it, or restart the server to start an empty store)",
                    path.display()
                )))
            }
            // Cannot tell (permissions, I/O): the write itself will say.
            Err(_) => Ok(()),
        }
    }

    /// The database for one transaction (do not keep it: a re-open waits for it).
    pub(crate) fn get(&self) -> Result<Arc<Database>, StoreError> {
        let current = || {
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
        };
        if let Some(db) = current() {
            return Ok(db);
        }
        // A re-open takes milliseconds: wait for it rather than fail a read.
        let (flag, done) = &self.reopening;
        let reopening = flag.lock().unwrap_or_else(|e| e.into_inner());
        drop(
            done.wait_timeout_while(reopening, REOPEN_WAIT, |reopening| *reopening)
                .unwrap_or_else(|e| e.into_inner()),
        );
        current().ok_or_else(|| {
            StoreError::Unavailable("the store is re-opening after a storage error".into())
        })
    }

    /// The database for one write transaction: refused while it is open
    /// read-only (the file system refuses writes).
    pub(crate) fn get_writable(&self) -> Result<Arc<Database>, StoreError> {
        let db = self.get()?;
        if self.is_read_only() {
            return Err(StoreError::Unavailable(READ_ONLY_REASON.into()));
        }
        Ok(db)
    }

    /// Whether the writer may try to re-open the read-only database for
    /// writing now: at most once per `READ_ONLY_RETRY`, however many
    /// requests arrive (a try that falls back repairs the file in memory
    /// again, and reads wait for each re-open).
    pub(crate) fn read_only_retry_due(&self) -> bool {
        let mut tried = self
            .read_only_tried
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if tried.is_some_and(|at| now.duration_since(at) < READ_ONLY_RETRY) {
            return false;
        }
        *tried = Some(now);
        true
    }

    /// Whether the store's file opens for writing now (what redb's
    /// read-write open does first), without touching the open database.
    pub(crate) fn file_opens_for_writing(&self) -> std::io::Result<()> {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.dir.join(STORE_FILE))
            .map(drop)
    }

    /// Whether the open database is the read-only one (`overlay`).
    pub(crate) fn is_read_only(&self) -> bool {
        self.read_only.load(Ordering::Acquire)
    }

    /// Marks a re-open as started or ended (waking the reads that wait).
    fn set_reopening(&self, now: bool) {
        let (flag, done) = &self.reopening;
        *flag.lock().unwrap_or_else(|e| e.into_inner()) = now;
        if !now {
            done.notify_all();
        }
    }

    /// Closes the database and opens it again (redb repairs it if needed);
    /// refused, keeping the open one, when its file is gone or replaced.
    pub(crate) fn reopen(&self) -> Result<(), StoreError> {
        self.check_file()?;
        self.set_reopening(true);
        let reopened = self.reopen_now();
        self.set_reopening(false);
        reopened
    }

    fn reopen_now(&self) -> Result<(), StoreError> {
        let old = self
            .current
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(mut old) = old {
            // Readers hold the database for one transaction at most: wait for
            // them, so that the file lock is released before the re-open.
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match Arc::try_unwrap(old) {
                    Ok(db) => {
                        if let Err(error) = db.close() {
                            tracing::debug!(%error, "closing the failed database");
                        }
                        break;
                    }
                    Err(shared) if Instant::now() < deadline => {
                        old = shared;
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(shared) => {
                        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(shared);
                        return Err(StoreError::Unavailable(
                            "the store is busy with long reads; cannot re-open it yet".into(),
                        ));
                    }
                }
            }
        }
        let (db, read_only) = match open_database(&self.dir, self.cache_bytes, &self.open_file) {
            Ok(db) => (db, false),
            // A file system that went read-only (or permissions taken away):
            // the file is still readable, so reads go on from a read-only
            // open; the writer's recovery re-opens it for writing once the
            // file system takes writes again.
            Err(error) if error.refused_write() => {
                let path = self.dir.join(STORE_FILE);
                let opened =
                    overlay::open(&path, self.cache_bytes).map_err(|source| StoreError::Open {
                        path: path.display().to_string(),
                        cause: source,
                    })?;
                if !tables_complete(&opened.db)? {
                    return Err(error);
                }
                tracing::warn!(
                    %error,
                    repaired_in_memory_bytes = opened.memory_bytes,
                    "the store's file system refuses writes: the store is open read-only, \
                     serving reads, until it takes writes again"
                );
                (opened.db, true)
            }
            Err(error) => return Err(error),
        };
        self.read_only.store(read_only, Ordering::Release);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(db));
        Ok(())
    }

    pub(crate) fn set_unwritable(&self, reason: Option<String>) {
        let writable = reason.is_none();
        *self.unwritable.lock().unwrap_or_else(|e| e.into_inner()) = reason;
        self.writable_tx.send_if_modified(|current| {
            let changed = *current != writable;
            *current = writable;
            changed
        });
    }

    pub(crate) fn unwritable_reason(&self) -> Option<String> {
        self.unwritable
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Arc<DbSlot>,
    writer: writer::WriterHandle,
    commits: Arc<CommitSignal>,
    confirmed: Arc<ConfirmedVersions>,
}

impl Store {
    /// Opens (or creates) the store in `dir` and starts its writer thread with
    /// a queue of `queue_capacity` write requests.
    pub fn open(dir: &Path, queue_capacity: usize) -> Result<Store, StoreError> {
        Store::open_with_cache(dir, queue_capacity, DEFAULT_CACHE_BYTES)
    }

    /// As `open`, with redb's page cache limited to `cache_bytes` (it fills
    /// as the store is read, up to this limit, and stays).
    pub fn open_with_cache(
        dir: &Path,
        queue_capacity: usize,
        cache_bytes: usize,
    ) -> Result<Store, StoreError> {
        Store::open_through(dir, queue_capacity, cache_bytes, Arc::new(create_file))
    }

    fn open_through(
        dir: &Path,
        queue_capacity: usize,
        cache_bytes: usize,
        open_file: OpenFile,
    ) -> Result<Store, StoreError> {
        let db = open_database(dir, cache_bytes, &open_file)?;
        let commits = Arc::new(CommitSignal::default());
        let last = last_seq(&db)?;
        commits.publish(last);
        commits.publish_removal(last_removal_seq(&db)?);
        let confirmed = Arc::new(ConfirmedVersions::loaded(&themes::confirmed_tags(&db)?));
        let db = Arc::new(DbSlot::new(dir, db, cache_bytes, open_file));
        // Opened on a full disk (the server starts there, serving reads):
        // the writer starts in its recovery loop, refusing writes until its
        // probe finds room. Set before the writer starts, which reads it
        // before waiting for requests.
        if let Err(reason) = writer::room_at_open(dir) {
            tracing::warn!(%reason, dir = %dir.display(), "store opened with writes refused");
            db.set_unwritable(Some(reason));
        }
        let writer = writer::spawn(db.clone(), commits.clone(), queue_capacity);
        Ok(Store {
            db,
            writer,
            commits,
            confirmed,
        })
    }

    /// Whether `dir` holds a store (its file exists).
    pub fn exists_in(dir: &Path) -> bool {
        dir.join(STORE_FILE).is_file()
    }

    /// Opens the store for an offline command (no writer thread).
    pub fn open_offline(dir: &Path) -> Result<OfflineStore, StoreError> {
        Ok(OfflineStore {
            db: Arc::new(open_database(
                dir,
                DEFAULT_CACHE_BYTES,
                &(Arc::new(create_file) as OpenFile),
            )?),
        })
    }

    /// A read-only view for bulk scans (index rebuild) of an open store.
    pub fn offline_view(&self) -> Result<OfflineStore, StoreError> {
        Ok(OfflineStore { db: self.db.get()? })
    }

    /// Whether writes can succeed now: false from a storage error (disk full,
    /// read-only, permission denied) until a re-open and a probe write succeed.
    pub fn writable(&self) -> tokio::sync::watch::Receiver<bool> {
        self.db.writable_tx.subscribe()
    }

    pub fn commit_signal(&self) -> Arc<CommitSignal> {
        self.commits.clone()
    }

    /// Queues a typed write in the given mode; the queue slot is taken
    /// before this returns.
    async fn submit<W: writer::WriteOperation>(
        &self,
        op: W,
        mode: QueueMode,
    ) -> Result<PendingWrite<W::Output>, StoreError> {
        match mode {
            QueueMode::Brief { deadline } => {
                self.writer.submit_within(op, brief_wait(deadline)).await
            }
            QueueMode::Wait => self.writer.submit(op).await,
        }
    }

    /// Queues the insertion or replacement of validated, id-unique items and
    /// returns the pending result: the slot is reserved before this returns,
    /// so streams keep several batches in flight, in order.
    pub async fn submit_upsert(
        &self,
        items: Vec<Feedback>,
        mode: QueueMode,
    ) -> Result<PendingWrite<Upserted>, StoreError> {
        self.submit(operations::Upsert(items), mode).await
    }

    /// Inserts or replaces validated, id-unique items; returns once durable.
    pub async fn upsert(
        &self,
        items: Vec<Feedback>,
        mode: QueueMode,
    ) -> Result<Upserted, StoreError> {
        self.submit_upsert(items, mode).await?.await
    }

    /// Deletes items by id.
    pub async fn delete(
        &self,
        ids: Vec<FeedbackId>,
        mode: QueueMode,
    ) -> Result<Deleted, StoreError> {
        self.submit(operations::Delete(ids), mode).await?.await
    }

    /// Deletes every item of a customer in one transaction; returns the
    /// erased ids.
    pub async fn delete_customer(
        &self,
        customer_id: String,
        mode: QueueMode,
    ) -> Result<Vec<FeedbackId>, StoreError> {
        self.submit(operations::DeleteCustomer(customer_id), mode)
            .await?
            .await
    }

    /// Attaches analyses to the versions they were computed for, waiting for
    /// room in the queue; updates for replaced or deleted versions are
    /// dropped as stale.
    pub async fn set_analysis(
        &self,
        updates: Vec<AnalysisUpdate>,
    ) -> Result<AnalysisSaved, StoreError> {
        self.submit(operations::SetAnalysis(updates), QueueMode::Wait)
            .await?
            .await
    }

    /// Writes one page of a re-tag in one transaction (one commit): the
    /// items whose mentions changed are rewritten (and so re-indexed), the
    /// others confirmed under the newer taxonomy version (their tag alone
    /// changes). Waits for room in the queue; returns how many items were
    /// rewritten and how many confirmed (the rest changed or went meanwhile).
    pub async fn retag(
        &self,
        rewrites: Vec<ThemeUpdate>,
        confirms: Vec<ThemeConfirm>,
    ) -> Result<(usize, usize), StoreError> {
        let op = operations::Retag {
            rewrites: operations::SetThemes(rewrites),
            confirms: operations::ConfirmThemes(confirms),
        };
        let (rewritten, applied) = self.submit(op, QueueMode::Wait).await?.await?;
        // Durable now: readers and the index may see the new versions.
        self.confirmed.confirm(&applied);
        Ok((rewritten, applied.len()))
    }

    /// The taxonomy versions re-tags confirmed (shared with the index).
    pub fn confirmed_versions(&self) -> Arc<ConfirmedVersions> {
        self.confirmed.clone()
    }

    /// Creates or replaces a theme checked against the committed taxonomy
    /// (the caller serialises edits); the stored theme carries the new
    /// taxonomy version.
    pub async fn put_theme(&self, theme: Theme, mode: QueueMode) -> Result<Theme, StoreError> {
        self.submit(operations::PutTheme(theme), mode).await?.await
    }

    /// Deletes themes; returns the new taxonomy version.
    pub async fn delete_themes(
        &self,
        ids: Vec<String>,
        mode: QueueMode,
    ) -> Result<u64, StoreError> {
        self.submit(operations::DeleteThemes(ids), mode)
            .await?
            .await
    }

    /// Installs the built-in taxonomy unless this store ever had it; returns
    /// the taxonomy version.
    pub async fn install_taxonomy(&self, themes: Vec<Theme>) -> Result<u64, StoreError> {
        self.submit(operations::InstallTaxonomy(themes), QueueMode::Wait)
            .await?
            .await
    }

    /// Caches embeddings of theme texts.
    pub async fn cache_text_embeddings(
        &self,
        pairs: Vec<(String, Vec<f32>)>,
    ) -> Result<(), StoreError> {
        self.submit(operations::CacheTextEmbeddings(pairs), QueueMode::Wait)
            .await?
            .await
    }

    /// Reads items by id (blocking; call from a blocking context).
    /// An item a re-tag confirmed under a newer taxonomy version comes with
    /// that version and its mentions (`themes::with_confirmed_tag`; the tag
    /// is read only for those, `ConfirmedVersions`).
    pub fn get_many(&self, ids: &[FeedbackId]) -> Result<Vec<Option<StoredFeedback>>, StoreError> {
        if ids.is_empty() {
            // No read transaction for nothing (a search with no hits).
            return Ok(Vec::new());
        }
        let txn = self.db.get()?.begin_read()?;
        let Some(items) = open_optional(&txn, ITEMS)? else {
            return Ok(vec![None; ids.len()]);
        };
        let tags = open_optional(&txn, themes::TAGS)?;
        ids.iter()
            .map(|id| {
                let Some(bytes) = items.get(id.as_str())? else {
                    return Ok(None);
                };
                let mut item = decode(id.as_str(), bytes.value())?;
                if let (Some(tags), AnalysisState::Done(analysis)) = (&tags, &item.analysis) {
                    // The tag is read only for an item confirmed since its record.
                    let version = analysis.taxonomy_version;
                    if self
                        .confirmed
                        .version_of(item.seq)
                        .is_some_and(|v| v > version)
                    {
                        let tag = tags.get(id.as_str())?;
                        themes::with_confirmed_tag(&mut item, tag.as_ref().map(|t| t.value()))?;
                    }
                }
                Ok(Some(item))
            })
            .collect()
    }

    /// The change seq of the last item removal the store committed (at
    /// most the last seq when it opened). A searcher that has applied
    /// every change through it lists no removed item.
    pub fn last_removal_seq(&self) -> u64 {
        self.commits.last_removal.load(Ordering::Acquire)
    }

    /// Whether each item exists (no decoding), in one read transaction.
    pub fn contains_many(&self, ids: &[FeedbackId]) -> Result<Vec<bool>, StoreError> {
        self.read_items(ids, |_, bytes| Ok(bytes.is_some()))
    }

    /// `read` of each id's stored bytes (None: no such item), in one read
    /// transaction.
    fn read_items<T>(
        &self,
        ids: &[FeedbackId],
        read: impl Fn(&FeedbackId, Option<&[u8]>) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let txn = self.db.get()?.begin_read()?;
        let items = open_optional(&txn, ITEMS)?;
        ids.iter()
            .map(|id| match &items {
                Some(items) => {
                    let bytes = items.get(id.as_str())?;
                    read(id, bytes.as_ref().map(|b| b.value()))
                }
                None => read(id, None),
            })
            .collect()
    }

    /// Up to `max` change-log entries after `after_seq`, with the items'
    /// current versions, read in one snapshot together with that snapshot's
    /// item count and last seq (blocking). The read also stops once the
    /// items read hold `max_bytes` of stored bytes (at least one entry is
    /// read), so large items do not fill memory `max` at a time.
    pub fn changes_after(
        &self,
        after_seq: u64,
        max: usize,
        max_bytes: usize,
    ) -> Result<ChangeBatch, StoreError> {
        let txn = self.db.get()?.begin_read()?;
        let changes = txn.open_table(CHANGES)?;
        let items = txn.open_table(ITEMS)?;
        let mut out = Vec::new();
        let mut bytes_read = 0usize;
        let mut cut = false;
        for entry in changes.range(after_seq.saturating_add(1)..)? {
            if out.len() >= max || bytes_read >= max_bytes {
                cut = true;
                break;
            }
            let (seq, id) = entry?;
            let id = FeedbackId::parse(id.value()).map_err(|reason| StoreError::Decode {
                id: id.value().to_string(),
                cause: serde::de::Error::custom(reason),
            })?;
            let current = match items.get(id.as_str())? {
                Some(bytes) => {
                    bytes_read += bytes.value().len();
                    Some(decode(id.as_str(), bytes.value())?)
                }
                None => None,
            };
            out.push(Change {
                seq: seq.value(),
                id,
                current,
            });
        }
        let complete = !cut;
        Ok(ChangeBatch {
            changes: out,
            snapshot_items: items.len()?,
            complete,
        })
    }

    /// Drops change-log entries up to `seq` once the index has committed
    /// them, through the writer thread (blocking: call it from a plain
    /// thread). Losing a trim only means replaying entries the index already
    /// has, which is idempotent.
    pub fn trim_changes_through(&self, seq: u64) -> Result<(), StoreError> {
        self.writer.blocking_write(operations::TrimChanges(seq))
    }

    /// Up to `max` versions waiting for analysis, oldest first: (version seq, item).
    /// Entries whose item is gone or newer are returned with `None`, so the
    /// caller can clear them.
    pub fn analysis_backlog(
        &self,
        max: usize,
    ) -> Result<Vec<(u64, FeedbackId, Option<StoredFeedback>)>, StoreError> {
        let txn = self.db.get()?.begin_read()?;
        let queue = txn.open_table(ANALYSIS_QUEUE)?;
        let items = txn.open_table(ITEMS)?;
        let mut out = Vec::new();
        for entry in queue.iter()?.take(max) {
            let (seq, id) = entry?;
            let (seq, raw_id) = (seq.value(), id.value().to_string());
            let current = items
                .get(raw_id.as_str())?
                .map(|bytes| decode(&raw_id, bytes.value()))
                .transpose()?
                .filter(|item| item.seq == seq);
            let id = FeedbackId::parse(&raw_id).map_err(|reason| {
                StoreError::WriteFailed(format!("queued id {raw_id:?}: {reason}"))
            })?;
            out.push((seq, id, current));
        }
        Ok(out)
    }

    /// The stored document embedding of an item, if it has been analysed.
    pub fn embedding(&self, id: &FeedbackId) -> Result<Option<Vec<f32>>, StoreError> {
        Ok(self.embeddings(std::slice::from_ref(id))?.pop().flatten())
    }

    /// Stored document embeddings of many items, in order, in one read transaction.
    pub fn embeddings(&self, ids: &[FeedbackId]) -> Result<Vec<Option<Vec<f32>>>, StoreError> {
        let txn = self.db.get()?.begin_read()?;
        let table = txn.open_table(EMBEDDINGS)?;
        ids.iter()
            .map(|id| {
                Ok(table
                    .get(id.as_str())?
                    .map(|bytes| themes::bytes_f32(bytes.value())))
            })
            .collect()
    }

    /// Number of stored items and of change-log entries not yet trimmed.
    pub fn stats(&self) -> Result<StoreStats, StoreError> {
        stats(&*self.db.get()?)
    }

    /// Write requests waiting in the writer's queue now.
    pub fn write_queue_depth(&self) -> usize {
        self.writer.queued()
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct StoreStats {
    pub items: u64,
    pub pending_changes: u64,
    pub last_seq: u64,
    /// The oldest change-log entry not trimmed (None: every change is
    /// trimmed). Every write logs its changes under consecutive seqs and a
    /// group that fails logs none, so the log holds every seq from here to
    /// `last_seq`: an index committed before `first_change_seq - 1` cannot
    /// catch up from it.
    pub first_change_seq: Option<u64>,
    /// Item versions waiting for the background analysis.
    pub analysis_backlog: u64,
}

/// The store opened by an offline command such as `verbatim reindex`.
pub struct OfflineStore {
    db: Arc<Database>,
}

impl OfflineStore {
    /// Calls `visit` with every stored item, in id order, and returns the last
    /// seq at the time of the scan.
    pub fn for_each_item(
        &self,
        mut visit: impl FnMut(StoredFeedback) -> Result<(), StoreError>,
    ) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        let last = read_last_seq(&txn)?;
        let items = match txn.open_table(ITEMS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(last),
            Err(e) => return Err(e.into()),
        };
        for entry in items.iter()? {
            let (id, bytes) = entry?;
            visit(decode(id.value(), bytes.value())?)?;
        }
        Ok(last)
    }

    /// Visits every stored document embedding with its item's id and
    /// version seq, in one snapshot.
    pub fn for_each_embedding(
        &self,
        mut visit: impl FnMut(FeedbackId, u64, Vec<f32>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_read()?;
        let (items, embeddings) = match (txn.open_table(ITEMS), txn.open_table(EMBEDDINGS)) {
            (Ok(items), Ok(embeddings)) => (items, embeddings),
            (Err(redb::TableError::TableDoesNotExist(_)), _)
            | (_, Err(redb::TableError::TableDoesNotExist(_))) => return Ok(()),
            (Err(e), _) | (_, Err(e)) => return Err(e.into()),
        };
        for entry in embeddings.iter()? {
            let (id, bytes) = entry?;
            let Some(item) = items.get(id.value())? else {
                continue;
            };
            let item = decode(id.value(), item.value())?;
            visit(item.feedback.id, item.seq, themes::bytes_f32(bytes.value()))?;
        }
        Ok(())
    }

    pub fn stats(&self) -> Result<StoreStats, StoreError> {
        stats(&self.db)
    }
}

/// The store's page cache limit by default (per tenant): 128 MiB, not
/// redb's own 1 GiB. redb also moves every page a commit writes into this
/// cache, so after a bulk load it holds the load's pages up to the limit:
/// at 1M items and 1 GiB the loaded server kept ~750 MiB more resident
/// than restarted, and spent 1.1-1.4x the CPU per search that reads items
/// (lookups in a cache of the load's pages); reads of a warm working set
/// and ingest cost the same with 64-128 MiB (BENCHMARKS.md, 26th session).
pub const DEFAULT_CACHE_BYTES: usize = 128 * 1024 * 1024;

/// Creates or opens a database file with a page cache limit. A seam: unit
/// tests open the file through a backend that fails on cue.
type OpenFile = Arc<dyn Fn(&Path, usize) -> Result<Database, redb::DatabaseError> + Send + Sync>;

fn create_file(path: &Path, cache_bytes: usize) -> Result<Database, redb::DatabaseError> {
    redb::Builder::new()
        .set_cache_size(cache_bytes)
        .create(path)
}

fn open_database(
    dir: &Path,
    cache_bytes: usize,
    open_file: &OpenFile,
) -> Result<Database, StoreError> {
    let path = dir.join(STORE_FILE);
    let db = open_file(&path, cache_bytes).map_err(|source| match source {
        redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse {
            dir: dir.display().to_string(),
        },
        source => StoreError::Open {
            path: path.display().to_string(),
            cause: source,
        },
    })?;
    // Create the tables up front so readers never see them missing. An
    // existing store is not written to here: a re-open on a full disk must
    // still serve reads.
    if !tables_complete(&db)? {
        let txn = db.begin_write()?;
        {
            txn.open_table(ITEMS)?;
            txn.open_multimap_table(CUSTOMER_ITEMS)?;
            txn.open_table(CHANGES)?;
            txn.open_table(META)?;
            txn.open_table(ANALYSIS_QUEUE)?;
            txn.open_table(EMBEDDINGS)?;
            txn.open_table(themes::UNITS)?;
            txn.open_table(themes::THEMES)?;
            txn.open_table(themes::TEXT_EMBEDDINGS)?;
        }
        txn.commit()?;
    }
    Ok(db)
}

/// Whether every table of the store exists (read only).
fn tables_complete(db: &Database) -> Result<bool, StoreError> {
    let txn = db.begin_read()?;
    Ok(txn.open_table(ITEMS).is_ok()
        && txn.open_multimap_table(CUSTOMER_ITEMS).is_ok()
        && txn.open_table(CHANGES).is_ok()
        && txn.open_table(META).is_ok()
        && txn.open_table(ANALYSIS_QUEUE).is_ok()
        && txn.open_table(EMBEDDINGS).is_ok()
        && txn.open_table(themes::UNITS).is_ok()
        && txn.open_table(themes::THEMES).is_ok()
        && txn.open_table(themes::TEXT_EMBEDDINGS).is_ok())
}

fn read_last_seq(txn: &redb::ReadTransaction) -> Result<u64, StoreError> {
    match txn.open_table(META) {
        Ok(meta) => Ok(meta.get(META_LAST_SEQ)?.map(|v| v.value()).unwrap_or(0)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
        Err(e) => Err(e.into()),
    }
}

/// The change seq of the last item removal the database committed, as far
/// as it is known: a store whose last write did not keep it (a new store
/// written by an older build) answers its last seq, as any change may have
/// been a removal.
pub(crate) fn last_removal_seq(db: &Database) -> Result<u64, StoreError> {
    let txn = db.begin_read()?;
    let last = read_last_seq(&txn)?;
    let meta = match txn.open_table(META) {
        Ok(meta) => meta,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    let as_of = meta.get(META_REMOVALS_AS_OF)?.map(|v| v.value());
    let removal = meta.get(META_LAST_REMOVAL)?.map(|v| v.value());
    Ok(match as_of {
        Some(as_of) if as_of == last => removal.unwrap_or(0),
        None if last == 0 => 0,
        _ => last,
    })
}

fn last_seq(db: &Database) -> Result<u64, StoreError> {
    read_last_seq(&db.begin_read()?)
}

fn stats(db: &Database) -> Result<StoreStats, StoreError> {
    let txn = db.begin_read()?;
    let changes = txn.open_table(CHANGES)?;
    let first_change_seq = changes.first()?.map(|(seq, _)| seq.value());
    Ok(StoreStats {
        items: txn.open_table(ITEMS)?.len()?,
        pending_changes: changes.len()?,
        first_change_seq,
        last_seq: read_last_seq(&txn)?,
        analysis_backlog: txn.open_table(ANALYSIS_QUEUE)?.len()?,
    })
}

/// An item's stored form: the compact binary layout of `store::codec`.
pub(crate) fn encode(item: &StoredFeedback) -> Result<Vec<u8>, StoreError> {
    codec::encode_item(item).map_err(|e| StoreError::Malformed {
        id: item.feedback.id.to_string(),
        reason: format!("cannot encode: {e}"),
    })
}

/// An item from its stored form: binary, or JSON (records written before
/// the binary layout start with `{`).
pub(crate) fn decode(id: &str, bytes: &[u8]) -> Result<StoredFeedback, StoreError> {
    if bytes.first() == Some(&b'{') {
        return serde_json::from_slice(bytes).map_err(|source| StoreError::Decode {
            id: id.to_string(),
            cause: source,
        });
    }
    codec::decode_item(bytes).map_err(|e| StoreError::Malformed {
        id: id.to_string(),
        reason: e.to_string(),
    })
}

/// Helper for writers: the item to store for a validated feedback.
pub(crate) fn new_version(feedback: Feedback, seq: u64) -> StoredFeedback {
    StoredFeedback {
        feedback,
        ingested_at: crate::domain::UnixMicros::now(),
        seq,
        analysis: crate::domain::AnalysisState::Pending,
    }
}

/// A table of a read transaction; None while it was never created (a store
/// that has not had that kind of write yet).
pub(crate) fn open_optional<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &redb::ReadTransaction,
    table: TableDefinition<'_, K, V>,
) -> Result<Option<redb::ReadOnlyTable<K, V>>, StoreError> {
    match txn.open_table(table) {
        Ok(table) => Ok(Some(table)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{FeedbackDraft, UnixMicros};

    fn feedback(id: &str, customer: &str) -> Feedback {
        FeedbackDraft {
            id: id.into(),
            text: format!("text of {id}"),
            customer_id: customer.into(),
            ..Default::default()
        }
        .validate(UnixMicros(0))
        .unwrap()
    }

    /// Found by a read-through: the CLI and the tenant errors print a chain
    /// whole (`{:#}`), and a damaged store's cause came twice ("cannot open
    /// the store at ...: X: X").
    #[test]
    fn a_printed_chain_names_the_cause_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STORE_FILE), vec![0xA5u8; 8192]).unwrap();
        let error = Store::open(dir.path(), 4).err().expect("a damaged store");
        let StoreError::Open { cause, .. } = &error else {
            panic!("{error:?}");
        };
        let cause = cause.to_string();
        let printed = format!("{:#}", anyhow::Error::new(error));
        assert_eq!(printed.matches(&cause).count(), 1, "{printed}");
        let decode = decode("x", b"{").expect_err("truncated JSON");
        let printed = format!("{:#}", anyhow::Error::new(decode));
        assert_eq!(printed.matches("EOF").count(), 1, "{printed}");
    }

    /// Searches of ids alone skip the store while the index has applied the
    /// last removal: it must rise with every delete and erasure, and only
    /// with them.
    #[tokio::test]
    async fn the_last_removal_seq_follows_deletes_and_erasures_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 4).unwrap();
        assert_eq!(store.last_removal_seq(), 0);
        let items = vec![feedback("a", "c1"), feedback("b", "c1"), feedback("c", "")];
        store.upsert(items, QueueMode::Wait).await.unwrap();
        store
            .upsert(vec![feedback("a", "c1")], QueueMode::Wait)
            .await
            .unwrap();
        assert_eq!(store.last_removal_seq(), 0, "writes remove nothing");
        // Found by probing: replaced and removed versions stayed in the
        // analysis backlog (with --analysis off, for good).
        let backlog = |store: &Store| store.stats().unwrap().analysis_backlog;
        assert_eq!(backlog(&store), 3, "a replaced version waits no more");

        let id = |s: &str| FeedbackId::parse(s).unwrap();
        store.delete(vec![id("c")], QueueMode::Wait).await.unwrap();
        let after_delete = store.stats().unwrap().last_seq;
        assert_eq!(store.last_removal_seq(), after_delete);
        store
            .delete(vec![id("missing")], QueueMode::Wait)
            .await
            .unwrap();
        assert_eq!(store.last_removal_seq(), after_delete, "nothing removed");
        assert_eq!(backlog(&store), 2);

        let erased = store
            .delete_customer("c1".into(), QueueMode::Wait)
            .await
            .unwrap();
        assert_eq!(erased.len(), 2);
        let after_erasure = store.stats().unwrap().last_seq;
        assert!(after_erasure > after_delete);
        assert_eq!(store.last_removal_seq(), after_erasure);
        assert_eq!(backlog(&store), 0);

        store
            .upsert(vec![feedback("d", "")], QueueMode::Wait)
            .await
            .unwrap();
        assert_eq!(backlog(&store), 1);
        assert_eq!(store.last_removal_seq(), after_erasure);

        // Reopened, the store knows its last removal (not any later write).
        drop(store);
        // The writer thread lets the database go once it sees the queue
        // closed.
        let mut tries = 0;
        let store = loop {
            match Store::open(dir.path(), 4) {
                Err(StoreError::InUse { .. }) if tries < 100 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                other => break other.unwrap(),
            }
        };
        assert_eq!(store.last_removal_seq(), after_erasure);
        store
            .upsert(vec![feedback("e", "")], QueueMode::Wait)
            .await
            .unwrap();
        let last = store.stats().unwrap().last_seq;
        drop(store);

        // The database itself, once the dropped store's writer let it go.
        let raw = || loop {
            match redb::Database::open(dir.path().join(STORE_FILE)) {
                Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                other => break other.unwrap(),
            }
        };
        // A store last written by a build that kept no removal seq: any
        // change may have been one.
        let db = raw();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .remove(META_REMOVALS_AS_OF)
            .unwrap();
        txn.commit().unwrap();
        drop(db);
        let store = Store::open(dir.path(), 4).unwrap();
        assert_eq!(store.last_removal_seq(), last);
        // The first write of this build that removes nothing keeps that: it
        // records the last seq before it as the last removal.
        store
            .upsert(vec![feedback("f", "")], QueueMode::Wait)
            .await
            .unwrap();
        let last_after = store.stats().unwrap().last_seq;
        drop(store);
        let store = loop {
            match Store::open(dir.path(), 4) {
                Err(StoreError::InUse { .. }) => std::thread::sleep(Duration::from_millis(50)),
                other => break other.unwrap(),
            }
        };
        assert_eq!(store.last_removal_seq(), last);
        assert!(last_after > last);
        let last = last_after;
        drop(store);

        // Kept by this build, then written by an older one (its last seq
        // moved past the record): again any change may have been one.
        let db = raw();
        let txn = db.begin_write().unwrap();
        {
            let mut meta = txn.open_table(META).unwrap();
            meta.insert(META_REMOVALS_AS_OF, last).unwrap();
            meta.insert(META_LAST_REMOVAL, after_erasure).unwrap();
            meta.insert(META_LAST_SEQ, last + 5).unwrap();
        }
        txn.commit().unwrap();
        drop(db);
        let store = Store::open(dir.path(), 4).unwrap();
        assert_eq!(store.last_removal_seq(), last + 5);
    }

    /// A version's analysis is saved once: the background analysis and a
    /// `wait_for_analysis` ingest can both analyse it, and the second save
    /// must neither replace the first (whose caller was answered with it)
    /// nor log the item's change again; except that an analysis mends a
    /// failure saved first.
    #[tokio::test]
    async fn a_versions_analysis_is_saved_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 4).unwrap();
        store
            .upsert(vec![feedback("a", "")], QueueMode::Wait)
            .await
            .unwrap();
        let id = FeedbackId::parse("a").unwrap();
        let version = store.get_many(std::slice::from_ref(&id)).unwrap()[0]
            .as_ref()
            .unwrap()
            .seq;
        let failed = |reason: &str| AnalysisUpdate {
            id: id.clone(),
            version_seq: version,
            state: AnalysisState::Failed {
                reason: reason.into(),
            },
            embedding: Vec::new(),
            units: Vec::new(),
        };
        let first = store.set_analysis(vec![failed("first")]).await.unwrap();
        assert_eq!((first.saved.len(), first.stale), (1, 0));
        let logged = store.stats().unwrap().last_seq;
        let second = store.set_analysis(vec![failed("second")]).await.unwrap();
        assert_eq!((second.saved.len(), second.stale), (0, 1));
        let stored = store
            .get_many(std::slice::from_ref(&id))
            .unwrap()
            .remove(0)
            .unwrap();
        assert_eq!(
            stored.analysis,
            AnalysisState::Failed {
                reason: "first".into()
            }
        );
        assert_eq!(store.stats().unwrap().last_seq, logged, "no second change");
        assert!(store.analysis_backlog(10).unwrap().is_empty());
        // An analysis saved after a failure mends it; nothing replaces it.
        let done = |score: f32| AnalysisUpdate {
            state: crate::index::test_analysis(score),
            ..failed("")
        };
        let mended = store.set_analysis(vec![done(0.5)]).await.unwrap();
        assert_eq!((mended.saved.len(), mended.stale), (1, 0));
        let again = store
            .set_analysis(vec![done(-0.5), failed("late")])
            .await
            .unwrap();
        assert_eq!((again.saved.len(), again.stale), (0, 2));
        let stored = store.get_many(&[id]).unwrap().remove(0).unwrap();
        assert_eq!(stored.analysis, crate::index::test_analysis(0.5));
    }

    /// A read of the change log stops at its byte budget as at its count,
    /// says it was cut, and the next read goes on where it stopped; a read
    /// that reaches the end says it is complete, also with exactly `max`.
    #[tokio::test]
    async fn change_reads_stop_at_their_byte_budget() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 4).unwrap();
        let long = |id: &str| {
            FeedbackDraft {
                id: id.into(),
                text: format!("{id} {}", "x".repeat(20_000)),
                ..Default::default()
            }
            .validate(UnixMicros(0))
            .unwrap()
        };
        let items: Vec<_> = (0..10).map(|i| long(&format!("item-{i}"))).collect();
        store.upsert(items, QueueMode::Wait).await.unwrap();

        // 50,000 bytes: the third item's 20,000+ bytes pass the budget.
        let first = store.changes_after(0, 100, 50_000).unwrap();
        assert_eq!(first.changes.len(), 3);
        assert!(!first.complete, "cut by bytes");
        assert_eq!(first.snapshot_items, 10);
        // Less than one item: still one entry a read.
        let one = store.changes_after(0, 100, 1).unwrap();
        assert_eq!(one.changes.len(), 1);
        assert!(!one.complete);
        // Read on from the last entry until the end.
        let mut from = first.changes.last().unwrap().seq;
        let mut seen = 3;
        loop {
            let batch = store.changes_after(from, 100, 50_000).unwrap();
            seen += batch.changes.len();
            from = batch.changes.last().map_or(from, |c| c.seq);
            if batch.complete {
                break;
            }
            assert_eq!(batch.changes.len(), 3);
        }
        assert_eq!(seen, 10);
        // By count alone: cut at 4, complete at exactly 10.
        let counted = store.changes_after(0, 4, usize::MAX).unwrap();
        assert_eq!((counted.changes.len(), counted.complete), (4, false));
        let all = store.changes_after(0, 10, usize::MAX).unwrap();
        assert_eq!((all.changes.len(), all.complete), (10, true));
    }

    /// A file whose next durable sync fails on cue, after the commit's
    /// pages and header were written: the commit the caller hears failed
    /// is on the disk. And a file system that turns read-only on cue:
    /// every write, resize and sync fails with EROFS.
    #[derive(Debug)]
    struct FailsOnCue {
        file: redb::backends::FileBackend,
        fail_next_sync: Arc<AtomicBool>,
        read_only: Arc<AtomicBool>,
    }

    fn erofs() -> std::io::Error {
        std::io::Error::from_raw_os_error(30)
    }

    impl FailsOnCue {
        fn refuse(&self) -> std::io::Result<()> {
            if self.read_only.load(Ordering::Acquire) {
                return Err(erofs());
            }
            Ok(())
        }
    }

    /// Opens store files through `FailsOnCue`; a read-write open is refused
    /// (EROFS) while `read_only` is set, as on a read-only file system.
    fn open_on_cue(fail_next_sync: Arc<AtomicBool>, read_only: Arc<AtomicBool>) -> OpenFile {
        Arc::new(move |path: &Path, cache_bytes: usize| {
            if read_only.load(Ordering::Acquire) {
                return Err(erofs().into());
            }
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)?;
            redb::Builder::new()
                .set_cache_size(cache_bytes)
                .create_with_backend(FailsOnCue {
                    file: redb::backends::FileBackend::new(file)?,
                    fail_next_sync: fail_next_sync.clone(),
                    read_only: read_only.clone(),
                })
        })
    }

    impl redb::StorageBackend for FailsOnCue {
        fn len(&self) -> std::io::Result<u64> {
            self.file.len()
        }
        fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
            self.file.read(offset, out)
        }
        fn set_len(&self, len: u64) -> std::io::Result<()> {
            self.refuse()?;
            self.file.set_len(len)
        }
        fn sync_data(&self) -> std::io::Result<()> {
            self.refuse()?;
            self.file.sync_data()?;
            if self.fail_next_sync.swap(false, Ordering::AcqRel) {
                return Err(std::io::Error::other("injected: sync failed"));
            }
            Ok(())
        }
        fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
            self.refuse()?;
            self.file.write(offset, data)
        }
        fn close(&self) -> std::io::Result<()> {
            self.file.close()
        }
        fn try_lock_range(
            &self,
            start: std::ops::Bound<u64>,
            end: std::ops::Bound<u64>,
        ) -> Result<bool, redb::BackendError> {
            self.file.try_lock_range(start, end)
        }
        fn try_lock_shared_range(
            &self,
            start: std::ops::Bound<u64>,
            end: std::ops::Bound<u64>,
        ) -> Result<bool, redb::BackendError> {
            self.file.try_lock_shared_range(start, end)
        }
        fn lock_range(
            &self,
            start: std::ops::Bound<u64>,
            end: std::ops::Bound<u64>,
        ) -> Result<(), redb::BackendError> {
            self.file.lock_range(start, end)
        }
        fn lock_shared_range(
            &self,
            start: std::ops::Bound<u64>,
            end: std::ops::Bound<u64>,
        ) -> Result<(), redb::BackendError> {
            self.file.lock_shared_range(start, end)
        }
        fn unlock_range(
            &self,
            start: std::ops::Bound<u64>,
            end: std::ops::Bound<u64>,
        ) -> Result<(), redb::BackendError> {
            self.file.unlock_range(start, end)
        }
        fn query_lock_range(
            &self,
            start: std::ops::Bound<u64>,
            end: std::ops::Bound<u64>,
        ) -> Result<bool, redb::BackendError> {
            self.file.query_lock_range(start, end)
        }
    }

    /// A delete whose commit fails after it reached the disk: the caller
    /// hears UNAVAILABLE, yet once the writer has re-opened the database
    /// the item is gone from it. Searches of ids alone must then not trust
    /// an index that never saw that removal: the store's last removal seq
    /// covers every change the re-opened database holds, and the indexer is
    /// woken for it.
    #[tokio::test]
    async fn a_removal_that_reached_the_disk_before_its_commit_failed_is_published() {
        let dir = tempfile::tempdir().unwrap();
        let fail_next_sync = Arc::new(AtomicBool::new(false));
        let open_file = open_on_cue(fail_next_sync.clone(), Arc::default());
        let store = Store::open_through(dir.path(), 4, DEFAULT_CACHE_BYTES, open_file).unwrap();
        let items = vec![feedback("a", ""), feedback("b", "")];
        store.upsert(items, QueueMode::Wait).await.unwrap();
        assert_eq!(store.last_removal_seq(), 0);

        let mut writable = store.writable();
        fail_next_sync.store(true, Ordering::Release);
        let id = FeedbackId::parse("a").unwrap();
        let failed = store.delete(vec![id.clone()], QueueMode::Wait).await;
        assert!(
            matches!(failed, Err(StoreError::Unavailable(_))),
            "{failed:?}"
        );
        tokio::time::timeout(Duration::from_secs(20), writable.wait_for(|w| *w))
            .await
            .expect("writable again within 20 s")
            .unwrap();

        assert!(
            store.get_many(&[id]).unwrap()[0].is_none(),
            "the failed delete reached the disk (the case under test)"
        );
        let last = store.stats().unwrap().last_seq;
        assert!(
            store.last_removal_seq() >= last,
            "last removal seq {} < the re-opened store's last seq {last}",
            store.last_removal_seq()
        );
        // The indexer is woken for the change too: it would otherwise wait
        // for the next write to index it.
        let published = store.commit_signal().wait_newer_than(0, Duration::ZERO);
        assert_eq!(
            published, last,
            "the re-opened store's last seq is published"
        );
    }

    /// The file system turns read-only under the running store (as ext4
    /// does on errors): the failed write is refused as UNAVAILABLE, and
    /// the re-open that redb needs after it cannot open the file for
    /// writing. Before the read-only open, every read then failed until
    /// the file system took writes again.
    #[tokio::test]
    async fn a_file_system_turned_read_only_keeps_reads_and_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let read_only = Arc::new(AtomicBool::new(false));
        let open_file = open_on_cue(Arc::default(), read_only.clone());
        // A small page cache: reads after the re-open come from the file.
        let store = Store::open_through(dir.path(), 4, 64 * 1024, open_file).unwrap();
        let ids: Vec<FeedbackId> = (0..300)
            .map(|i| FeedbackId::parse(&format!("i-{i}")).unwrap())
            .collect();
        for chunk in ids.chunks(100) {
            let items = chunk.iter().map(|id| feedback(id.as_str(), "c")).collect();
            store.upsert(items, QueueMode::Wait).await.unwrap();
        }
        let before = store.stats().unwrap();

        let mut writable = store.writable();
        read_only.store(true, Ordering::Release);
        let refused = store
            .upsert(vec![feedback("x", "c")], QueueMode::Wait)
            .await;
        let Err(StoreError::Unavailable(reason)) = refused else {
            panic!("{refused:?}");
        };
        assert!(reason.contains("read-only"), "{reason}");
        assert!(!*writable.borrow_and_update());
        // Reads go on, from the file itself, through the writer's
        // recovery attempts.
        for _ in 0..3 {
            let got = store.get_many(&ids).unwrap();
            assert!(got.iter().all(Option::is_some), "every stored item reads");
            assert_eq!(store.stats().unwrap().items, before.items);
            let again = store
                .upsert(vec![feedback("y", "c")], QueueMode::Wait)
                .await;
            assert!(
                matches!(again, Err(StoreError::Unavailable(_))),
                "{again:?}"
            );
            tokio::time::sleep(Duration::from_millis(600)).await;
        }

        read_only.store(false, Ordering::Release);
        tokio::time::timeout(Duration::from_secs(20), writable.wait_for(|w| *w))
            .await
            .expect("writable again within 20 s")
            .unwrap();
        store
            .upsert(vec![feedback("z", "c")], QueueMode::Wait)
            .await
            .unwrap();
        let after = store.stats().unwrap();
        assert_eq!(after.items, before.items + 1);
        let z = FeedbackId::parse("z").unwrap();
        assert!(store.get_many(&[z]).unwrap()[0].is_some());
        let x = FeedbackId::parse("x").unwrap();
        assert!(
            store.get_many(&[x]).unwrap()[0].is_none(),
            "the refused write is not stored"
        );
    }
}
