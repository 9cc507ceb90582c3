//! The store's file opened for reads where its file system refuses writes
//! (remounted read-only, or write permission taken away under the server).
//!
//! redb cannot open such a file read-only once a writer has failed on it:
//! every read-write open marks the file "recovery required" and only a clean
//! close clears the mark, and redb's read-only open refuses a marked file.
//! So the file is opened through `Overlay`: a backend that reads the file
//! through a read-only handle and keeps whatever redb writes while opening
//! (the repair of the marked file: its allocator state and header) in
//! memory. Once the open returns, the overlay is sealed: every later write
//! or resize fails as a read-only file system would (EROFS).
//!
//! Invariants:
//! - nothing reaches the file: the handle is opened read-only, so even a bug
//!   here cannot write to it;
//! - a database opened this way takes no write after its open (`sealed`),
//!   so no write through it can ever be acknowledged;
//! - reads see what redb wrote, then the file, then zeros (past the file's
//!   end, or past a shrink), as a file would.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use redb::BackendError;

/// Granularity of the in-memory copies of written bytes.
const PAGE: u64 = 4096;

/// A read-only file with an in-memory layer for the writes of redb's open.
pub(super) struct Overlay {
    file: File,
    /// The file's locks, by redb's protocol on a second handle of the same
    /// open file, always taken shared: while this database reads, a
    /// read-write open of the file (another process, an offline command)
    /// is refused as `DatabaseAlreadyOpen`, so nothing rewrites the pages
    /// it reads. Released by `close`.
    locks: redb::backends::FileBackend,
    /// The file's length when opened (it does not change: nothing writes it).
    file_len: u64,
    /// Shared with `open`, which reads the page count after redb took the
    /// backend.
    state: Arc<RwLock<State>>,
    sealed: Arc<AtomicBool>,
}

struct State {
    /// The logical length (what `len` answers).
    len: u64,
    /// File bytes at or past this offset read as zeros (a shrink cut them).
    zero_from: u64,
    /// Pages redb wrote, whole (`PAGE` bytes each).
    pages: HashMap<u64, Box<[u8]>>,
}

impl std::fmt::Debug for Overlay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Overlay")
            .field("file_len", &self.file_len)
            .field("sealed", &self.sealed.load(Ordering::Relaxed))
            .finish()
    }
}

/// A database opened through an `Overlay`, and the bytes redb wrote to
/// memory while opening it.
pub(super) struct Opened {
    pub db: redb::Database,
    pub memory_bytes: u64,
}

/// Opens the store file at `path` for reads only (see the module docs).
pub(super) fn open(path: &Path, cache_bytes: usize) -> Result<Opened, redb::DatabaseError> {
    let overlay = Overlay::new(File::open(path)?)?;
    let sealed = overlay.sealed.clone();
    let state = overlay.state.clone();
    let db = redb::Builder::new()
        .set_cache_size(cache_bytes)
        .create_with_backend(overlay)?;
    sealed.store(true, Ordering::Release);
    let memory_bytes = state.read().unwrap_or_else(|e| e.into_inner()).pages.len() as u64 * PAGE;
    Ok(Opened { db, memory_bytes })
}

impl Overlay {
    fn new(file: File) -> Result<Overlay, redb::DatabaseError> {
        let file_len = file.metadata()?.len();
        Ok(Overlay {
            locks: redb::backends::FileBackend::new(file.try_clone()?)?,
            file,
            file_len,
            state: Arc::new(RwLock::new(State {
                len: file_len,
                zero_from: file_len,
                pages: HashMap::new(),
            })),
            sealed: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Reads file bytes at `offset` into `out`: zeros at and past `limit`.
    fn read_file(&self, offset: u64, out: &mut [u8], zero_from: u64) -> io::Result<()> {
        let limit = self.file_len.min(zero_from);
        let from_file = limit.saturating_sub(offset).min(out.len() as u64) as usize;
        if from_file > 0 {
            read_exact_at(&self.file, &mut out[..from_file], offset)?;
        }
        out[from_file..].fill(0);
        Ok(())
    }

    fn refuse(&self) -> io::Result<()> {
        if self.sealed.load(Ordering::Acquire) {
            return Err(io::Error::new(
                io::ErrorKind::ReadOnlyFilesystem,
                "the store is open read-only (its file system refuses writes)",
            ));
        }
        Ok(())
    }
}

impl redb::StorageBackend for Overlay {
    fn len(&self) -> io::Result<u64> {
        Ok(self.state.read().unwrap_or_else(|e| e.into_inner()).len)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        let end = offset
            .checked_add(out.len() as u64)
            .filter(|end| *end <= state.len)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "read of {} bytes at {offset} past the end ({})",
                        out.len(),
                        state.len
                    ),
                )
            })?;
        // Runs of pages redb did not write are read from the file at once.
        let mut pos = offset;
        let mut run_start = offset;
        while pos < end {
            let page = pos / PAGE;
            let next = ((page + 1) * PAGE).min(end);
            if let Some(bytes) = state.pages.get(&page) {
                if run_start < pos {
                    let run = (run_start - offset) as usize..(pos - offset) as usize;
                    self.read_file(run_start, &mut out[run], state.zero_from)?;
                }
                let within = (pos % PAGE) as usize..(pos % PAGE) as usize + (next - pos) as usize;
                out[(pos - offset) as usize..(next - offset) as usize]
                    .copy_from_slice(&bytes[within]);
                run_start = next;
            }
            pos = next;
        }
        if run_start < end {
            let run = (run_start - offset) as usize..(end - offset) as usize;
            self.read_file(run_start, &mut out[run], state.zero_from)?;
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.refuse()?;
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        if len < state.len {
            state.zero_from = state.zero_from.min(len);
            state.pages.retain(|page, _| page * PAGE < len);
            if let Some(bytes) = state.pages.get_mut(&(len / PAGE)) {
                bytes[(len % PAGE) as usize..].fill(0);
            }
        }
        state.len = len;
        Ok(())
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.locks.try_lock_shared_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.locks.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.locks.lock_shared_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.locks.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.locks.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.locks.query_lock_range(start, end)
    }

    fn close(&self) -> io::Result<()> {
        self.locks.close()
    }

    fn sync_data(&self) -> io::Result<()> {
        // Nothing of this backend is ever durable; nothing needs to be.
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.refuse()?;
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        let end = offset + data.len() as u64;
        let mut pos = offset;
        while pos < end {
            let page = pos / PAGE;
            let next = ((page + 1) * PAGE).min(end);
            if !state.pages.contains_key(&page) {
                // The page as it reads now: the file below the logical
                // length, zeros past it.
                let mut bytes = vec![0u8; PAGE as usize].into_boxed_slice();
                let below = state.len.saturating_sub(page * PAGE).min(PAGE) as usize;
                self.read_file(page * PAGE, &mut bytes[..below], state.zero_from)?;
                state.pages.insert(page, bytes);
            }
            let bytes = state.pages.get_mut(&page).expect("inserted above");
            let within = (pos % PAGE) as usize..(pos % PAGE) as usize + (next - pos) as usize;
            bytes[within].copy_from_slice(&data[(pos - offset) as usize..(next - offset) as usize]);
            pos = next;
        }
        state.len = state.len.max(end);
        Ok(())
    }
}

#[cfg(unix)]
fn read_exact_at(file: &File, out: &mut [u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, out, offset)
}

#[cfg(windows)]
fn read_exact_at(file: &File, mut out: &mut [u8], mut offset: u64) -> io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !out.is_empty() {
        match file.seek_read(out, offset)? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => {
                out = &mut out[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{ReadableDatabase, ReadableTableMetadata, TableDefinition};

    const TABLE: TableDefinition<u64, &[u8]> = TableDefinition::new("t");

    fn value(i: u64) -> Vec<u8> {
        // Values of many sizes, some spanning several pages.
        vec![(i % 251) as u8; (i as usize * 37) % 9_000 + 1]
    }

    /// A copy of a database file taken while a writer had it open: marked
    /// "recovery required", as a file is after a failed write.
    fn marked_copy(dir: &Path) -> std::path::PathBuf {
        let live = dir.join("live.redb");
        let db = redb::Database::create(&live).unwrap();
        for round in 0..4u64 {
            let txn = db.begin_write().unwrap();
            {
                let mut table = txn.open_table(TABLE).unwrap();
                for i in round * 500..(round + 1) * 500 {
                    table.insert(i, value(i).as_slice()).unwrap();
                }
                // Frees pages, so the allocator state has something to say.
                for i in (0..round * 500).step_by(7) {
                    table.remove(i).unwrap();
                }
            }
            txn.commit().unwrap();
        }
        let copy = dir.join("copy.redb");
        std::fs::copy(&live, &copy).unwrap();
        drop(db);
        copy
    }

    #[test]
    fn a_marked_file_is_read_whole_and_never_written() {
        let dir = tempfile::tempdir().unwrap();
        let copy = marked_copy(dir.path());
        // Why the overlay exists: redb's read-only open refuses such a file.
        assert!(redb::Builder::new().open_read_only(&copy).is_err());
        let before = std::fs::read(&copy).unwrap();

        let opened = open(&copy, 1 << 20).unwrap();
        assert!(opened.memory_bytes > 0, "the repair wrote to memory");
        // Nothing else opens the file for writing meanwhile.
        assert!(matches!(
            redb::Database::create(&copy),
            Err(redb::DatabaseError::DatabaseAlreadyOpen)
        ));
        {
            let txn = opened.db.begin_read().unwrap();
            let table = txn.open_table(TABLE).unwrap();
            let expected: Vec<u64> = (0..2_000).filter(|i| !(i < &1_500 && i % 7 == 0)).collect();
            assert_eq!(table.len().unwrap(), expected.len() as u64);
            for i in expected {
                assert_eq!(table.get(i).unwrap().unwrap().value(), value(i).as_slice());
            }
        }
        // No write is taken after the open.
        let refused = (|| -> Result<(), redb::Error> {
            let txn = opened.db.begin_write()?;
            txn.open_table(TABLE)?.insert(9_999, [1u8].as_slice())?;
            txn.commit()?;
            Ok(())
        })();
        assert!(
            refused.is_err(),
            "a write through the read-only open failed"
        );
        drop(opened);
        assert!(
            std::fs::read(&copy).unwrap() == before,
            "the file is unchanged"
        );
        // The file still opens for writing, and redb repairs it itself.
        let db = redb::Database::create(&copy).unwrap();
        let txn = db.begin_read().unwrap();
        assert!(txn.open_table(TABLE).unwrap().get(1_999).unwrap().is_some());
    }

    #[test]
    fn reads_see_writes_then_the_file_then_zeros() {
        use redb::StorageBackend;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file: Vec<u8> = (0..3 * PAGE + 100).map(|i| (i % 200) as u8 + 1).collect();
        std::fs::write(&path, &file).unwrap();
        let overlay = Overlay::new(File::open(&path).unwrap()).unwrap();
        let mut model = file.clone();
        let check = |overlay: &Overlay, model: &[u8]| {
            assert_eq!(overlay.len().unwrap(), model.len() as u64);
            for (offset, len) in [
                (0, model.len()),
                (PAGE - 3, 10),
                (2 * PAGE + 7, 200),
                (0, 1),
            ] {
                if offset as usize > model.len() {
                    continue;
                }
                let len = len.min(model.len() - offset as usize);
                let mut out = vec![0xEEu8; len];
                overlay.read(offset, &mut out).unwrap();
                assert_eq!(
                    out,
                    &model[offset as usize..offset as usize + len],
                    "at {offset}+{len}"
                );
            }
        };
        overlay.write(PAGE - 2, &[9, 9, 9, 9]).unwrap();
        model[PAGE as usize - 2..PAGE as usize + 2].fill(9);
        check(&overlay, &model);
        // A shrink cuts the file's bytes; growing back reads zeros there.
        overlay.set_len(PAGE + 10).unwrap();
        model.truncate(PAGE as usize + 10);
        check(&overlay, &model);
        overlay.set_len(3 * PAGE).unwrap();
        model.resize(3 * PAGE as usize, 0);
        check(&overlay, &model);
        overlay.write(2 * PAGE + 50, &[7; 300]).unwrap();
        model[2 * PAGE as usize + 50..2 * PAGE as usize + 350].fill(7);
        check(&overlay, &model);
        // A write past the end grows it.
        overlay.write(4 * PAGE, &[5; 10]).unwrap();
        model.resize(4 * PAGE as usize, 0);
        model.extend([5; 10]);
        check(&overlay, &model);
        let mut past = [0u8; 2];
        assert!(overlay.read(4 * PAGE + 9, &mut past).is_err());
        overlay.sealed.store(true, Ordering::Release);
        assert!(overlay.write(0, &[1]).is_err());
        assert!(overlay.set_len(1).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), file, "the file is unchanged");
    }
}
