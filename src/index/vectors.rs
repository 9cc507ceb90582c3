//! The approximate nearest-neighbour index over document embeddings
//! (usearch HNSW) that similarity search (`similar_to_*`) ranks with.
//!
//! - Keys are item version `seq`s (the index's `seq` field), so a filter's
//!   matches are a set of keys and a key maps back to its document.
//! - Vectors are held as int8 with one scale per vector (max |x| -> 127) and
//!   compared by cosine, which the per-vector scale does not change; the
//!   candidates are re-ranked by the exact f32 cosine of the stored
//!   embeddings (`rerank`), so the scores given out are exact.
//! - Derived data, in memory, kept in step by the indexer thread with every
//!   change it applies. Saved to `DATA_DIR/index/vectors/` after a build and
//!   at shutdown; at startup (a background thread; similarity falls back to
//!   the exact ranking of the newest matches until it is ready) the save is
//!   loaded and corrected against every stored item, or, when missing or
//!   damaged, the index is built from the store's embeddings.
//!
//! Invariants:
//! - At most one key per item id (`keys`): a new version's vector replaces
//!   the old one; a delete or an unanalysed new version removes it.
//! - The mutex on `keys` is held across the remove + add of one id, so two
//!   writers (the indexer and the startup replay) cannot leave two keys.
//! - usearch gives each concurrent operation a thread slot and fails one
//!   that finds none: `threads` must exceed the searches the read pool
//!   admits plus the writers (the indexer, the build's 2 threads, its replay).
//! - Removals wear the graph (usearch keeps the links to a removed node and
//!   reuses its slot): once they reach a quarter of the vectors held, a
//!   background thread copies the live vectors into a new graph, swaps it
//!   in under `applying`, and replays the ids changed meanwhile (recorded
//!   in `compacting`), as the startup replay does. Both graphs are in
//!   memory while it copies.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

use crate::domain::FeedbackId;
use crate::store::Store;

/// Graph degree (edges per node and layer; 2x on the base layer).
const CONNECTIVITY: usize = 16;
/// Beam width while inserting.
const EXPANSION_ADD: usize = 128;
/// Beam width of filtered graph searches (a filtered walk already visits
/// more nodes: at 3% of keys admitted, 64 gives recall@10 0.996).
pub const EXPANSION_SEARCH: usize = 64;
/// Beam width of unfiltered searches: at 1M vectors recall@10 is 0.92 at
/// 64, 0.98 at 128, 0.997 at 256 (BENCHMARKS.md).
pub const UNFILTERED_BEAM: usize = 256;
/// Candidates taken from the graph per result asked for, re-ranked exactly.
pub const RERANK_FACTOR: usize = 4;
/// Candidates taken from the graph at least.
pub const MIN_CANDIDATES: usize = 40;
/// With a filter matching at most this many keys, the candidates are ranked
/// by scanning those keys' vectors instead of walking the graph (a walk
/// that must skip most nodes loses recall and time).
pub const SCAN_MAX_KEYS: usize = 20_000;
/// Removals since the build before a worn graph is compacted, at least
/// (and a quarter of the vectors held).
pub const COMPACT_MIN_REMOVALS: usize = 256;
/// Threads a compaction copies on (in the background, beside serving).
const COMPACT_THREADS: usize = 1;

#[derive(Debug, thiserror::Error)]
#[error("vector index: {0}")]
pub struct VectorError(String);

impl From<cxx::Exception> for VectorError {
    fn from(e: cxx::Exception) -> Self {
        VectorError(e.what().to_string())
    }
}

/// Which keys a search may return.
pub enum KeyFilter<'a> {
    All,
    /// Keys whose bit is set (bit = key).
    Bits(&'a KeyBits),
}

/// A set of keys as a bitmap over `0..=max key`.
#[derive(Default)]
pub struct KeyBits {
    words: Vec<u64>,
    len: usize,
}

impl KeyBits {
    /// The keys in `0..n` for which `member` holds, allocated once.
    pub fn from_predicate(n: usize, mut member: impl FnMut(usize) -> bool) -> KeyBits {
        let mut words = vec![0u64; n.div_ceil(64)];
        let mut len = 0;
        for key in 0..n {
            if member(key) {
                words[key / 64] |= 1u64 << (key % 64);
                len += 1;
            }
        }
        KeyBits { words, len }
    }

    /// `keys` (each below `n`, none twice), allocated once.
    pub fn from_keys(n: usize, keys: impl IntoIterator<Item = u64>) -> KeyBits {
        let mut words = vec![0u64; n.div_ceil(64)];
        let mut len = 0;
        for key in keys {
            words[(key / 64) as usize] |= 1u64 << (key % 64);
            len += 1;
        }
        KeyBits { words, len }
    }

    pub fn insert(&mut self, key: u64) {
        let word = (key / 64) as usize;
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        let bit = 1u64 << (key % 64);
        if self.words[word] & bit == 0 {
            self.words[word] |= bit;
            self.len += 1;
        }
    }

    pub fn contains(&self, key: u64) -> bool {
        self.words
            .get((key / 64) as usize)
            .is_some_and(|w| w & (1u64 << (key % 64)) != 0)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The keys in both sets.
    pub fn and(&self, other: &KeyBits) -> KeyBits {
        let words: Vec<u64> = self
            .words
            .iter()
            .zip(&other.words)
            .map(|(a, b)| a & b)
            .collect();
        let len = words.iter().map(|w| w.count_ones() as usize).sum();
        KeyBits { words, len }
    }

    /// The words, bit `key % 64` of word `key / 64` for each key.
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// Bytes of the words.
    pub fn bytes(&self) -> usize {
        self.words.len() * 8
    }

    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.words.iter().enumerate().flat_map(|(i, &word)| {
            let mut word = word;
            std::iter::from_fn(move || {
                if word == 0 {
                    return None;
                }
                let bit = word.trailing_zeros() as u64;
                word &= word - 1;
                Some(i as u64 * 64 + bit)
            })
        })
    }
}

/// Files of a saved index.
const GRAPH_FILE: &str = "graph.usearch";
const KEYS_FILE: &str = "keys.bin";
/// The CRC-32 of `GRAPH_FILE` (4 bytes, little-endian): usearch loads a
/// graph whose middle is damaged without a word, and searches it.
const GRAPH_SUM_FILE: &str = "graph.crc32";
/// The id map's format: magic, dimensions (u64), count (u64), per id its
/// key (u64), length (u32) and bytes; then an FNV-1a 64 of all that.
const KEYS_MAGIC: &[u8; 8] = b"VBVKEYS1";
/// `VectorIndex::removed` (u64, little-endian).
const REMOVED_FILE: &str = "removed.u64";

fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.as_os_str().to_os_string();
    name.push(".");
    name.push(suffix);
    PathBuf::from(name)
}

fn path_str(path: &Path) -> Result<&str, VectorError> {
    path.to_str()
        .ok_or_else(|| VectorError(format!("path {} is not UTF-8", path.display())))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The CRC-32 of a file's bytes, read a MiB at a time.
fn file_crc32(path: &Path) -> std::io::Result<u32> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            return Ok(hasher.finalize());
        }
        hasher.update(&buffer[..read]);
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Int8 with one scale per vector (max |x| -> 127); cosine ignores the scale.
pub fn quantize(vector: &[f32]) -> Vec<i8> {
    let max = vector.iter().fold(0f32, |m, x| m.max(x.abs()));
    let scale = if max > 0.0 { 127.0 / max } else { 1.0 };
    vector
        .iter()
        .map(|x| (x * scale).round().clamp(-127.0, 127.0) as i8)
        .collect()
}

/// The HNSW graph and the id -> key map.
pub struct VectorIndex {
    /// Write-locked only to grow the capacity (usearch's reserve must not
    /// run beside searches or inserts, which are safe among themselves).
    ann: std::sync::RwLock<Index>,
    dimensions: usize,
    keys: Mutex<HashMap<FeedbackId, u64>>,
    /// Concurrent operations the graph has thread slots for.
    threads: usize,
    /// `UNFILTERED_BEAM`, or the bench's choice.
    unfiltered_beam: std::sync::atomic::AtomicUsize,
    /// Vectors removed or replaced since this graph was built (saved with
    /// it). usearch's removal leaves the other nodes' links to the removed
    /// node and reuses its slot, so each removal wears the graph: after
    /// many rewrites some items are reached by no search (`worn`).
    removed: AtomicUsize,
}

impl VectorIndex {
    /// An empty index for vectors of `dimensions`, for up to `threads`
    /// concurrent operations.
    pub fn new(dimensions: usize, threads: usize) -> Result<Self, VectorError> {
        let ann = Index::new(&IndexOptions {
            dimensions,
            metric: MetricKind::Cos,
            quantization: ScalarKind::I8,
            connectivity: CONNECTIVITY,
            expansion_add: EXPANSION_ADD,
            expansion_search: EXPANSION_SEARCH,
            multi: false,
        })?;
        let threads = threads.max(1);
        ann.reserve_capacity_and_threads(1024, threads)?;
        Ok(VectorIndex {
            ann: std::sync::RwLock::new(ann),
            dimensions,
            keys: Mutex::new(HashMap::new()),
            threads,
            unfiltered_beam: std::sync::atomic::AtomicUsize::new(UNFILTERED_BEAM),
            removed: AtomicUsize::new(0),
        })
    }

    /// Vectors removed or replaced since the graph was built.
    pub fn removed(&self) -> usize {
        self.removed.load(Ordering::Relaxed)
    }

    /// A copy of the id map (id -> key), as a compaction takes it.
    pub fn id_map(&self) -> HashMap<FeedbackId, u64> {
        self.lock().clone()
    }

    /// Whether removals wore the graph enough to copy it anew: as many as
    /// a quarter of the vectors held, and `COMPACT_MIN_REMOVALS`.
    pub fn worn(&self) -> bool {
        let removed = self.removed();
        removed >= COMPACT_MIN_REMOVALS && removed >= self.len() / 4
    }

    /// A new graph of the vectors `keys` names (id -> key), read from this
    /// one (int8, as held: the copy ranks as this graph would, unworn),
    /// built on `threads` threads. Keys removed from this graph meanwhile
    /// are left out. Reads only: writers and searches go on.
    pub fn compacted(
        &self,
        keys: &HashMap<FeedbackId, u64>,
        threads: usize,
    ) -> Result<VectorIndex, VectorError> {
        let copy = VectorIndex::new(self.dimensions, self.threads)?;
        copy.set_unfiltered_beam(self.unfiltered_beam.load(Ordering::Relaxed));
        // Room for the changes after the swap, without growing the graph
        // (a write lock) at once.
        copy.reserve(keys.len() + keys.len() / 8 + 1024)?;
        let mut entries: Vec<(&FeedbackId, u64)> =
            keys.iter().map(|(id, key)| (id, *key)).collect();
        // In key order: older versions first, as they came.
        entries.sort_unstable_by_key(|&(_, key)| key);
        // Read a batch at a time and added as the startup build adds (the
        // int8 values as f32 quantize to themselves).
        let mut buffer = vec![0i8; self.dimensions];
        for part in entries.chunks(BUILD_BATCH) {
            let mut batch = Vec::with_capacity(part.len());
            for &(id, key) in part {
                if self.ann().get(key, &mut buffer)? > 0 {
                    batch.push((
                        id.clone(),
                        key,
                        buffer.iter().map(|&x| f32::from(x)).collect(),
                    ));
                }
            }
            copy.add_batch(&batch, threads)?;
        }
        Ok(copy)
    }

    pub fn dimensions(&self) -> usize {
        self.dimensions
    }

    fn ann(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.ann.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Vectors held.
    pub fn len(&self) -> usize {
        self.ann().size()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of the graph and vectors (usearch's count; the id map adds
    /// about 60 bytes per item).
    pub fn memory_bytes(&self) -> usize {
        self.ann().memory_usage()
    }

    /// Grows the capacity ahead of `additional` inserts (doubling).
    pub fn reserve(&self, additional: usize) -> Result<(), VectorError> {
        let ann = self.ann.write().unwrap_or_else(|e| e.into_inner());
        let needed = ann.size() + additional;
        if needed > ann.capacity() {
            let capacity = needed.max(ann.capacity() * 2);
            ann.reserve_capacity_and_threads(capacity, self.threads)?;
        }
        Ok(())
    }

    /// Writes the graph and the id map into `dir`, replacing it as a whole
    /// (written beside it as `.new`, then renamed). Writers wait meanwhile,
    /// so both files describe the same state; searches go on.
    pub fn save(&self, dir: &Path) -> Result<(), VectorError> {
        let io = |what: &str, e: std::io::Error| VectorError(format!("{what}: {e}"));
        let new = sibling(dir, "new");
        let old = sibling(dir, "old");
        match std::fs::remove_dir_all(&new) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io("clearing", e)),
            _ => {}
        }
        std::fs::create_dir_all(&new).map_err(|e| io("creating the folder", e))?;
        let result = (|| {
            let keys = self.lock();
            let ann = self.ann();
            let graph = new.join(GRAPH_FILE);
            ann.save(path_str(&graph)?)?;
            let mut bytes = Vec::with_capacity(32 + keys.len() * 40);
            bytes.extend_from_slice(KEYS_MAGIC);
            bytes.extend_from_slice(&(self.dimensions as u64).to_le_bytes());
            bytes.extend_from_slice(&(keys.len() as u64).to_le_bytes());
            for (id, key) in keys.iter() {
                bytes.extend_from_slice(&key.to_le_bytes());
                bytes.extend_from_slice(&(id.as_str().len() as u32).to_le_bytes());
                bytes.extend_from_slice(id.as_str().as_bytes());
            }
            drop((keys, ann));
            let checksum = fnv1a(&bytes);
            bytes.extend_from_slice(&checksum.to_le_bytes());
            write_synced(&new.join(KEYS_FILE), &bytes).map_err(|e| io("writing the id map", e))?;
            write_synced(
                &new.join(REMOVED_FILE),
                &(self.removed() as u64).to_le_bytes(),
            )
            .map_err(|e| io("writing the removal count", e))?;
            std::fs::File::open(&graph)
                .and_then(|f| f.sync_all())
                .map_err(|e| io("syncing the graph", e))?;
            let sum = file_crc32(&graph).map_err(|e| io("reading the graph", e))?;
            write_synced(&new.join(GRAPH_SUM_FILE), &sum.to_le_bytes())
                .map_err(|e| io("writing the graph's checksum", e))?;
            if dir.exists() {
                let _ = std::fs::remove_dir_all(&old);
                std::fs::rename(dir, &old).map_err(|e| io("moving the previous save", e))?;
            }
            std::fs::rename(&new, dir).map_err(|e| io("renaming the save", e))?;
            let _ = std::fs::remove_dir_all(&old);
            if let Some(parent) = dir.parent() {
                std::fs::File::open(parent)
                    .and_then(|f| f.sync_all())
                    .map_err(|e| io("syncing the folder", e))?;
            }
            Ok(())
        })();
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&new);
        }
        result
    }

    /// Loads what `save` wrote into `dir` (or, after a crash between its
    /// renames, into `dir.old`).
    pub fn load(dir: &Path, threads: usize) -> Result<Self, VectorError> {
        let old = sibling(dir, "old");
        let dir = if dir.exists() { dir } else { old.as_path() };
        let bytes = std::fs::read(dir.join(KEYS_FILE))
            .map_err(|e| VectorError(format!("reading the id map: {e}")))?;
        let corrupt = |what: &str| VectorError(format!("the id map is damaged ({what})"));
        if bytes.len() < 32 || &bytes[..8] != KEYS_MAGIC {
            return Err(corrupt("header"));
        }
        let (body, tail) = bytes.split_at(bytes.len() - 8);
        if fnv1a(body).to_le_bytes() != tail {
            return Err(corrupt("checksum"));
        }
        let u64_at = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().expect("8 bytes"));
        let dimensions = u64_at(8) as usize;
        let count = u64_at(16) as usize;
        let mut keys = HashMap::with_capacity(count.min(body.len() / 12));
        let mut at = 24;
        for _ in 0..count {
            if at + 12 > body.len() {
                return Err(corrupt("length"));
            }
            let key = u64_at(at);
            let len =
                u32::from_le_bytes(body[at + 8..at + 12].try_into().expect("4 bytes")) as usize;
            let raw = body
                .get(at + 12..at + 12 + len)
                .and_then(|b| std::str::from_utf8(b).ok())
                .ok_or_else(|| corrupt("id"))?;
            keys.insert(FeedbackId::parse(raw).map_err(|_| corrupt("id"))?, key);
            at += 12 + len;
        }
        // A save from before the checksum has none: loaded unchecked.
        match std::fs::read(dir.join(GRAPH_SUM_FILE)) {
            Ok(sum) => {
                let found = file_crc32(&dir.join(GRAPH_FILE))
                    .map_err(|e| VectorError(format!("reading the graph: {e}")))?;
                if sum != found.to_le_bytes() {
                    return Err(VectorError("the graph is damaged (checksum)".into()));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(VectorError(format!("reading the graph's checksum: {e}"))),
        }
        let index = VectorIndex::new(dimensions, threads)?;
        {
            let ann = index.ann.write().unwrap_or_else(|e| e.into_inner());
            ann.load(path_str(&dir.join(GRAPH_FILE))?)?;
            if ann.size() != keys.len() || ann.dimensions() != dimensions {
                return Err(VectorError(format!(
                    "the graph holds {} vectors of {} dimensions, the id map {} of {dimensions}",
                    ann.size(),
                    ann.dimensions(),
                    keys.len()
                )));
            }
            ann.reserve_capacity_and_threads(ann.size() + 1024, index.threads)?;
        }
        *index.lock() = keys;
        // Missing (a save from an older build) or unreadable: none counted.
        if let Some(removed) = std::fs::read(dir.join(REMOVED_FILE))
            .ok()
            .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
        {
            index
                .removed
                .store(u64::from_le_bytes(removed) as usize, Ordering::Relaxed);
        }
        Ok(index)
    }

    /// The beam width of unfiltered searches (default `UNFILTERED_BEAM`).
    pub fn set_unfiltered_beam(&self, width: usize) {
        self.unfiltered_beam.store(width, Ordering::Relaxed);
    }

    /// The key an id's vector is held under, if any.
    pub fn key_of(&self, id: &FeedbackId) -> Option<u64> {
        self.lock().get(id).copied()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<FeedbackId, u64>> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Holds `vector` for `id` under `key`, replacing its previous one.
    /// Vectors of another dimension are refused.
    pub fn upsert(&self, id: &FeedbackId, key: u64, vector: &[f32]) -> Result<(), VectorError> {
        if vector.len() != self.dimensions {
            return Err(VectorError(format!(
                "embedding of {id} has {} dimensions, the index {}",
                vector.len(),
                self.dimensions
            )));
        }
        let quantized = quantize(vector);
        let mut keys = self.lock();
        if let Some(old) = keys.remove(id) {
            self.ann().remove(old)?;
            self.removed.fetch_add(1, Ordering::Relaxed);
        }
        let full = {
            let ann = self.ann();
            ann.size() + 1 > ann.capacity()
        };
        if full {
            self.reserve(1)?;
        }
        self.ann().add(key, &quantized)?;
        keys.insert(id.clone(), key);
        Ok(())
    }

    /// Adds many vectors of ids not held yet, on `threads` threads (the
    /// startup build).
    pub fn add_batch(
        &self,
        batch: &[(FeedbackId, u64, Vec<f32>)],
        threads: usize,
    ) -> Result<(), VectorError> {
        self.reserve(batch.len())?;
        let chunk = batch.len().div_ceil(threads.clamp(1, self.threads)).max(1);
        std::thread::scope(|scope| {
            let workers: Vec<_> = batch
                .chunks(chunk)
                .map(|part| scope.spawn(move || -> Result<(), VectorError> {
                    for (id, key, vector) in part {
                        if vector.len() != self.dimensions {
                            tracing::warn!(%id, dims = vector.len(), "embedding of another dimension left out of the vector index");
                            continue;
                        }
                        self.ann().add(*key, &quantize(vector))?;
                    }
                    Ok(())
                }))
                .collect();
            workers.into_iter().try_for_each(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(VectorError("insert thread panicked".into())))
            })
        })?;
        let mut keys = self.lock();
        for (id, key, vector) in batch {
            if vector.len() == self.dimensions {
                keys.insert(id.clone(), *key);
            }
        }
        Ok(())
    }

    /// Removes the vector of `id`, if held.
    pub fn remove(&self, id: &FeedbackId) -> Result<(), VectorError> {
        let mut keys = self.lock();
        if let Some(old) = keys.remove(id) {
            self.ann().remove(old)?;
            self.removed.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// The `count` keys nearest to `target` by (int8) cosine among those
    /// `filter` admits, nearest first, with their approximate cosine.
    pub fn search(
        &self,
        target: &[f32],
        count: usize,
        filter: KeyFilter<'_>,
    ) -> Result<Vec<(u64, f32)>, VectorError> {
        if target.len() != self.dimensions || count == 0 {
            return Ok(Vec::new());
        }
        let query = quantize(target);
        let matches = match filter {
            KeyFilter::All => {
                // usearch's beam is max(expansion_search, count): asking
                // for more and keeping the nearest `count` widens it for
                // this search alone.
                let beam = self.unfiltered_beam.load(Ordering::Relaxed);
                let mut matches = self.ann().search(&query, count.max(beam))?;
                matches.keys.truncate(count);
                matches.distances.truncate(count);
                matches
            }
            KeyFilter::Bits(bits) if bits.len() <= SCAN_MAX_KEYS => {
                return self.scan(&query, count, bits)
            }
            KeyFilter::Bits(bits) => self
                .ann()
                .filtered_search(&query, count, |key| bits.contains(key))?,
        };
        Ok(matches
            .keys
            .into_iter()
            .zip(matches.distances)
            .map(|(key, distance)| (key, 1.0 - distance))
            .collect())
    }

    /// Exact int8 cosine over the given keys' vectors.
    fn scan(
        &self,
        query: &[i8],
        count: usize,
        bits: &KeyBits,
    ) -> Result<Vec<(u64, f32)>, VectorError> {
        let query_norm = (query
            .iter()
            .map(|&x| i32::from(x) * i32::from(x))
            .sum::<i32>() as f32)
            .sqrt();
        let mut buffer = vec![0i8; self.dimensions];
        let mut scored = Vec::with_capacity(bits.len());
        let ann = self.ann();
        for key in bits.iter() {
            if ann.get(key, &mut buffer)? == 0 {
                continue;
            }
            // One pass: dot product and the vector's own norm.
            let (dot, norm) =
                buffer
                    .iter()
                    .zip(query)
                    .fold((0i32, 0i32), |(dot, norm), (&a, &b)| {
                        let a = i32::from(a);
                        (dot + a * i32::from(b), norm + a * a)
                    });
            let denominator = (norm as f32).sqrt() * query_norm;
            let cosine = if denominator > 0.0 {
                dot as f32 / denominator
            } else {
                0.0
            };
            scored.push((key, cosine));
        }
        let keep = count.min(scored.len());
        if keep < scored.len() {
            scored.select_nth_unstable_by(keep, |a, b| b.1.total_cmp(&a.1));
            scored.truncate(keep);
        }
        scored.sort_by(|a, b| b.1.total_cmp(&a.1));
        Ok(scored)
    }
}

/// The similarity index's state, shared by the indexer (which keeps it in
/// step), the startup thread and searches.
pub struct Vectors {
    state: std::sync::RwLock<State>,
    threads: usize,
    /// Where the index is saved (after the startup build, and at shutdown
    /// when it changed); `None`: never saved.
    dir: Option<PathBuf>,
    /// Changed since it was last saved or loaded.
    dirty: AtomicBool,
    /// One save at a time (the startup thread's and the shutdown's).
    saving: Mutex<()>,
    /// One apply at a time, the startup replay's store reads included: the
    /// replay runs beside the indexer, and a decision it took on an item's
    /// older version must not land after the indexer's newer one (the
    /// indexer sees every later change again; the replay runs once).
    applying: Mutex<()>,
    /// `Some` while a compaction copies the graph: the ids changed since
    /// it took the graph's id map, replayed into the copy (a set: at most
    /// one entry per item, however often it changes meanwhile).
    compacting: Mutex<Option<HashSet<FeedbackId>>>,
    /// No compaction starts before this: the previous one's end plus its
    /// duration, so that changes as fast as a copy cannot keep a core
    /// copying and two graphs in memory all the time.
    next_compaction: Mutex<Option<std::time::Instant>>,
}

enum State {
    /// `--similarity-index off`.
    Off,
    /// The startup load or build runs; ids the indexer changed meanwhile,
    /// replayed when it is done.
    Building(Vec<FeedbackId>),
    /// Ready; `None` until the first embedding gives the dimensions.
    Ready(Option<Arc<VectorIndex>>),
}

/// One change the indexer applied: the item's current version, if any.
pub struct Current {
    pub id: FeedbackId,
    /// (version seq, analysed) of the current version; `None`: deleted.
    pub version: Option<(u64, bool)>,
}

/// Brings `index` in step with the items' current versions; returns how
/// many vectors were added, replaced or removed.
fn update(index: &VectorIndex, store: &Store, changes: Vec<Current>) -> Result<usize, VectorError> {
    let mut changed = 0;
    let mut wanted = Vec::new();
    for change in changes {
        match change.version {
            // Re-tags and other changes that keep the version keep the vector.
            Some((seq, true)) if index.key_of(&change.id) == Some(seq) => {}
            Some((seq, true)) => wanted.push((change.id, seq)),
            _ => {
                if index.key_of(&change.id).is_some() {
                    index.remove(&change.id)?;
                    changed += 1;
                }
            }
        }
    }
    for part in wanted.chunks(1024) {
        let ids: Vec<FeedbackId> = part.iter().map(|(id, _)| id.clone()).collect();
        let embeddings = store
            .embeddings(&ids)
            .map_err(|e| VectorError(format!("reading embeddings: {e}")))?;
        for ((id, seq), embedding) in part.iter().zip(embeddings) {
            match embedding {
                Some(vector) => index.upsert(id, *seq, &vector)?,
                None => index.remove(id)?,
            }
            changed += 1;
        }
    }
    Ok(changed)
}

impl Vectors {
    pub fn new(enabled: bool, threads: usize, dir: Option<PathBuf>) -> Self {
        Vectors {
            state: std::sync::RwLock::new(if enabled {
                State::Building(Vec::new())
            } else {
                State::Off
            }),
            threads: threads.max(1),
            dir,
            dirty: AtomicBool::new(false),
            saving: Mutex::new(()),
            applying: Mutex::new(()),
            compacting: Mutex::new(None),
            next_compaction: Mutex::new(None),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the startup load or build is still running.
    pub fn building(&self) -> bool {
        matches!(*self.read(), State::Building(_))
    }

    /// After a failed start: searches fall back to the exact ranking.
    pub fn disable(&self) {
        *self.write() = State::Off;
    }

    /// Whether searches may use the index (built, or built empty).
    pub fn is_ready(&self) -> bool {
        matches!(*self.read(), State::Ready(_))
    }

    /// The index, once built and holding vectors.
    pub fn index(&self) -> Option<Arc<VectorIndex>> {
        match &*self.read() {
            State::Ready(index) => index.clone(),
            _ => None,
        }
    }

    /// Applies the indexer's changes (or records them during the start);
    /// starts a compaction when they wore the graph.
    pub fn apply(
        self: &Arc<Self>,
        store: &Store,
        changes: Vec<Current>,
    ) -> Result<(), VectorError> {
        let _one = self.applying.lock().unwrap_or_else(|e| e.into_inner());
        self.apply_one(store, changes)?;
        self.compact_if_worn(store);
        Ok(())
    }

    fn compacting(&self) -> std::sync::MutexGuard<'_, Option<HashSet<FeedbackId>>> {
        self.compacting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a compaction is copying the graph.
    pub fn is_compacting(&self) -> bool {
        self.compacting().is_some()
    }

    /// With `applying` held: when removals wore the graph (and no
    /// compaction runs), takes its id map and copies it on a thread of its
    /// own; searches and updates use the worn graph until the copy is
    /// swapped in.
    fn compact_if_worn(self: &Arc<Self>, store: &Store) {
        let Some(worn) = self.index().filter(|index| index.worn()) else {
            return;
        };
        let next = *self
            .next_compaction
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if next.is_some_and(|next| std::time::Instant::now() < next) {
            return;
        }
        let keys = {
            let mut compacting = self.compacting();
            if compacting.is_some() {
                return;
            }
            *compacting = Some(HashSet::new());
            worn.id_map()
        };
        let (vectors, store) = (self.clone(), store.clone());
        let give_up = {
            let (vectors, worn) = (self.clone(), worn.clone());
            move |error: VectorError| {
                // Tried again after as many removals again.
                worn.removed.store(0, Ordering::Relaxed);
                *vectors.compacting() = None;
                tracing::warn!(%error, "cannot compact the similarity index; it goes on worn");
            }
        };
        let spawned = std::thread::Builder::new()
            .name("similarity-compact".into())
            .spawn({
                let give_up = give_up.clone();
                move || {
                    if let Err(error) = vectors.compact(&worn, keys, &store) {
                        give_up(error);
                    }
                }
            });
        if let Err(error) = spawned {
            give_up(VectorError(format!("starting its thread: {error}")));
        }
    }

    /// Copies `worn` (holding `keys` when the compaction began), swaps the
    /// copy in, and replays into it what changed meanwhile.
    fn compact(
        &self,
        worn: &Arc<VectorIndex>,
        keys: HashMap<FeedbackId, u64>,
        store: &Store,
    ) -> Result<(), VectorError> {
        let started = std::time::Instant::now();
        let removed = worn.removed();
        let copy = Arc::new(worn.compacted(&keys, COMPACT_THREADS)?);
        drop(keys);
        let touched = {
            let _one = self.applying.lock().unwrap_or_else(|e| e.into_inner());
            let touched = self.compacting().take().unwrap_or_default();
            let mut state = self.write();
            match &mut *state {
                State::Ready(Some(index)) if Arc::ptr_eq(index, worn) => *index = copy.clone(),
                // Disabled meanwhile.
                _ => return Ok(()),
            }
            self.dirty.store(true, Ordering::Release);
            touched
        };
        let replayed = touched.len();
        if let Err(error) = self.replay(store, touched.into_iter().collect()) {
            tracing::error!(%error, "cannot replay the changes made while the similarity index was compacted; it misses them until the next restart");
        }
        tracing::info!(
            vectors = copy.len(),
            removed,
            replayed,
            elapsed_ms = started.elapsed().as_millis() as u64,
            memory_mb_before = worn.memory_bytes() >> 20,
            memory_mb = copy.memory_bytes() >> 20,
            "similarity index compacted"
        );
        *self
            .next_compaction
            .lock()
            .unwrap_or_else(|e| e.into_inner()) =
            Some(std::time::Instant::now() + started.elapsed());
        Ok(())
    }

    /// `apply`, with `applying` held.
    fn apply_one(&self, store: &Store, changes: Vec<Current>) -> Result<(), VectorError> {
        let index = {
            let mut state = self.write();
            match &mut *state {
                State::Off => return Ok(()),
                State::Building(touched) => {
                    touched.extend(changes.into_iter().map(|c| c.id));
                    return Ok(());
                }
                State::Ready(Some(index)) => {
                    if let Some(touched) = self.compacting().as_mut() {
                        touched.extend(changes.iter().map(|c| c.id.clone()));
                    }
                    index.clone()
                }
                State::Ready(slot @ None) => {
                    // The first embedding gives the dimensions (read a
                    // few at a time: a backlog's round holds up to
                    // 100,000 changes).
                    let analysed = changes
                        .iter()
                        .filter(|c| matches!(c.version, Some((_, true))))
                        .map(|c| c.id.clone())
                        .collect::<Vec<_>>();
                    let mut dimensions = None;
                    for part in analysed.chunks(64) {
                        dimensions = store
                            .embeddings(part)
                            .map_err(|e| VectorError(format!("reading embeddings: {e}")))?
                            .into_iter()
                            .flatten()
                            .map(|v| v.len())
                            .next();
                        if dimensions.is_some() {
                            break;
                        }
                    }
                    let Some(dimensions) = dimensions else {
                        return Ok(());
                    };
                    slot.insert(Arc::new(VectorIndex::new(dimensions, self.threads)?))
                        .clone()
                }
            }
        };
        if update(&index, store, changes)? > 0 {
            self.dirty.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// The startup work, on its own thread: loads the saved index and
    /// brings it in step with the store, or builds it from the store's
    /// embeddings; then replays what the indexer changed meanwhile, and
    /// saves a built index.
    pub fn start(&self, store: &Store) -> Result<(), VectorError> {
        let started = std::time::Instant::now();
        let loaded = self.dir.as_deref().and_then(|dir| {
            match VectorIndex::load(dir, self.threads) {
                Ok(index) => Some(index),
                Err(error) => {
                    if dir.exists() {
                        tracing::warn!(%error, "the saved similarity index cannot be used: rebuilding it from the store");
                    }
                    None
                }
            }
        });
        let (index, how, corrected) = match loaded {
            Some(index) => {
                let corrected = self.reconcile(&index, store)?;
                (Some(index), "loaded", corrected)
            }
            None => (self.build(store)?, "built", 0),
        };
        let vectors = index.as_ref().map_or(0, VectorIndex::len);
        let touched = {
            let mut state = self.write();
            let touched = match &mut *state {
                State::Building(touched) => std::mem::take(touched),
                _ => Vec::new(),
            };
            *state = State::Ready(index.map(Arc::new));
            touched
        };
        let replayed = touched.len();
        self.replay(store, touched)?;
        tracing::info!(
            how,
            vectors,
            corrected,
            replayed,
            elapsed_ms = started.elapsed().as_millis() as u64,
            memory_mb = self.index().map_or(0, |i| i.memory_bytes() >> 20),
            "similarity index ready"
        );
        if how == "built" || corrected > 0 {
            self.dirty.store(true, Ordering::Release);
            self.save();
        }
        Ok(())
    }

    /// Applies the current versions of these ids.
    fn replay(&self, store: &Store, mut ids: Vec<FeedbackId>) -> Result<(), VectorError> {
        ids.sort();
        ids.dedup();
        for ids in ids.chunks(1024) {
            // Read under the lock: no apply of the indexer can come between
            // this read and its apply.
            let _one = self.applying.lock().unwrap_or_else(|e| e.into_inner());
            let items = store
                .get_many(ids)
                .map_err(|e| VectorError(format!("reading items: {e}")))?;
            let changes = ids
                .iter()
                .zip(items)
                .map(|(id, item)| Current {
                    id: id.clone(),
                    version: item.map(|item| {
                        (
                            item.seq,
                            matches!(item.analysis, crate::domain::AnalysisState::Done(_)),
                        )
                    }),
                })
                .collect();
            self.apply_one(store, changes)?;
        }
        Ok(())
    }

    /// Brings a loaded index in step with every stored item (it may have
    /// been saved long before a crash); returns the corrections.
    fn reconcile(&self, index: &VectorIndex, store: &Store) -> Result<usize, VectorError> {
        let view = store
            .offline_view()
            .map_err(|e| VectorError(format!("opening the store: {e}")))?;
        let mut unseen: std::collections::HashSet<FeedbackId> =
            index.lock().keys().cloned().collect();
        let mut changes = Vec::new();
        view.for_each_item(|item| {
            let id = item.feedback.id;
            unseen.remove(&id);
            let analysed = matches!(item.analysis, crate::domain::AnalysisState::Done(_));
            if (analysed && index.key_of(&id) != Some(item.seq))
                || (!analysed && index.key_of(&id).is_some())
            {
                changes.push(Current {
                    id,
                    version: Some((item.seq, analysed)),
                });
            }
            Ok(())
        })
        .map_err(|e| VectorError(format!("reading items: {e}")))?;
        drop(view);
        changes.extend(unseen.into_iter().map(|id| Current { id, version: None }));
        update(index, store, changes)
    }

    /// Builds an index from the store's embeddings (`None`: there are none).
    fn build(&self, store: &Store) -> Result<Option<VectorIndex>, VectorError> {
        let view = store
            .offline_view()
            .map_err(|e| VectorError(format!("opening the store: {e}")))?;
        let mut index: Option<VectorIndex> = None;
        let mut batch = Vec::with_capacity(BUILD_BATCH);
        let flush = |batch: &mut Vec<(FeedbackId, u64, Vec<f32>)>,
                     index: &mut Option<VectorIndex>|
         -> Result<(), VectorError> {
            if let Some(first) = batch.first() {
                if index.is_none() {
                    *index = Some(VectorIndex::new(first.2.len(), self.threads)?);
                }
                let index = index.as_ref().expect("just set");
                index.add_batch(batch, 2)?;
                batch.clear();
            }
            Ok(())
        };
        let mut failed = None;
        view.for_each_embedding(|id, seq, vector| {
            batch.push((id, seq, vector));
            if batch.len() == BUILD_BATCH {
                if let Err(error) = flush(&mut batch, &mut index) {
                    failed = Some(error);
                    return Err(crate::store::StoreError::Closed);
                }
            }
            Ok(())
        })
        .map_err(|e| {
            failed
                .take()
                .unwrap_or_else(|| VectorError(format!("reading embeddings: {e}")))
        })?;
        flush(&mut batch, &mut index)?;
        Ok(index)
    }

    /// Saves the index if it changed since it was loaded or saved (at
    /// shutdown, and after the startup build). A failure is logged: the
    /// next start rebuilds what it cannot load.
    pub fn save(&self) {
        let (Some(dir), Some(index)) = (self.dir.as_deref(), self.index()) else {
            return;
        };
        let _saving = self.saving.lock().unwrap_or_else(|e| e.into_inner());
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return;
        }
        let started = std::time::Instant::now();
        match index.save(dir) {
            Ok(()) => tracing::info!(
                vectors = index.len(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                dir = %dir.display(),
                "similarity index saved"
            ),
            Err(error) => {
                self.dirty.store(true, Ordering::Release);
                tracing::warn!(%error, "cannot save the similarity index; the next start corrects the previous save, or rebuilds it")
            }
        }
    }
}

/// Vectors inserted per parallel batch by the startup build.
const BUILD_BATCH: usize = 4096;

/// Candidates to take from the graph for `limit` results.
pub fn candidates_for(limit: usize) -> usize {
    (limit * RERANK_FACTOR).max(MIN_CANDIDATES)
}

/// Exact cosine of each candidate's f32 embedding (`None`: gone), best
/// first, ties by key; at most `limit`.
pub fn rerank<T>(
    target: &[f32],
    candidates: Vec<(T, Option<Vec<f32>>)>,
    limit: usize,
) -> Vec<(T, f32)> {
    let mut scored: Vec<(T, f32)> = candidates
        .into_iter()
        .filter_map(|(item, embedding)| {
            let embedding = embedding?;
            Some((item, embedding.iter().zip(target).map(|(a, b)| a * b).sum()))
        })
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1));
    scored.truncate(limit);
    scored
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vectors(n: usize, dims: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut rng = crate::index::xorshift(seed | 1);
        let mut next = move || (rng() >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
        let centres: Vec<Vec<f32>> = (0..20)
            .map(|_| (0..dims).map(|_| next()).collect())
            .collect();
        (0..n)
            .map(|i| {
                let mut v: Vec<f32> = centres[i % 20].iter().map(|c| c + 0.4 * next()).collect();
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.iter_mut().for_each(|x| *x /= norm);
                v
            })
            .collect()
    }

    fn id(i: usize) -> FeedbackId {
        FeedbackId::parse(&format!("item-{i}")).unwrap()
    }

    fn exact(
        data: &[Vec<f32>],
        target: &[f32],
        keep: impl Fn(usize) -> bool,
        k: usize,
    ) -> Vec<u64> {
        let candidates = (0..data.len())
            .filter(|&i| keep(i))
            .map(|i| (i as u64, Some(data[i].clone())))
            .collect();
        rerank(target, candidates, k)
            .into_iter()
            .map(|(key, _)| key)
            .collect()
    }

    fn reranked(
        index: &VectorIndex,
        data: &[Vec<f32>],
        target: &[f32],
        filter: KeyFilter<'_>,
        k: usize,
    ) -> Vec<u64> {
        let candidates = index
            .search(target, candidates_for(k), filter)
            .unwrap()
            .into_iter()
            .map(|(key, _)| (key, Some(data[key as usize].clone())))
            .collect();
        rerank(target, candidates, k)
            .into_iter()
            .map(|(key, _)| key)
            .collect()
    }

    #[test]
    fn finds_the_exact_neighbours_with_and_without_filters() {
        let data = vectors(3000, 32, 7);
        let index = VectorIndex::new(32, 2).unwrap();
        let batch: Vec<_> = data
            .iter()
            .enumerate()
            .map(|(i, v)| (id(i), i as u64, v.clone()))
            .collect();
        index.add_batch(&batch, 2).unwrap();
        assert_eq!(index.len(), 3000);
        let mut every_third = KeyBits::default();
        (0..3000u64)
            .filter(|k| k % 3 == 0)
            .for_each(|k| every_third.insert(k));
        assert_eq!(every_third.len(), 1000);
        let (mut found, mut found_filtered, mut total) = (0, 0, 0);
        for q in (0..3000).step_by(97) {
            let truth = exact(&data, &data[q], |_| true, 10);
            let got = reranked(&index, &data, &data[q], KeyFilter::All, 10);
            found += got.iter().filter(|k| truth.contains(k)).count();
            let truth = exact(&data, &data[q], |i| i % 3 == 0, 10);
            let got = reranked(&index, &data, &data[q], KeyFilter::Bits(&every_third), 10);
            assert!(got.iter().all(|k| k % 3 == 0), "the filter is obeyed");
            found_filtered += got.iter().filter(|k| truth.contains(k)).count();
            total += 10;
        }
        let recall = found as f64 / total as f64;
        let recall_filtered = found_filtered as f64 / total as f64;
        assert!(recall >= 0.95, "recall@10 {recall}");
        // Under SCAN_MAX_KEYS: a scan of int8 vectors, re-ranked exactly.
        assert!(
            recall_filtered >= 0.99,
            "filtered recall@10 {recall_filtered}"
        );
    }

    #[test]
    fn an_id_has_one_vector_and_removal_takes_it_out() {
        let data = vectors(200, 16, 3);
        let index = VectorIndex::new(16, 2).unwrap();
        for (i, v) in data.iter().enumerate() {
            index.upsert(&id(i), i as u64, v).unwrap();
        }
        // A new version of item 0 with item 199's vector, under a new key.
        index.upsert(&id(0), 1000, &data[199]).unwrap();
        assert_eq!(index.len(), 200);
        assert_eq!(index.key_of(&id(0)), Some(1000));
        let nearest = index.search(&data[0], 200, KeyFilter::All).unwrap();
        assert!(
            nearest.iter().all(|(key, _)| *key != 0),
            "the old version's key is gone"
        );
        let top: Vec<u64> = index
            .search(&data[199], 2, KeyFilter::All)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert!(top.contains(&1000) && top.contains(&199), "{top:?}");
        index.remove(&id(199)).unwrap();
        index.remove(&id(199)).unwrap();
        assert_eq!(index.len(), 199);
        assert_eq!(index.key_of(&id(199)), None);
        assert!(
            index.upsert(&id(5), 5, &[0.5; 3]).is_err(),
            "wrong dimensions are refused"
        );
        assert_eq!(
            index.search(&[0.5; 3], 5, KeyFilter::All).unwrap(),
            Vec::new()
        );
    }

    #[test]
    fn a_saved_index_loads_as_it_was_and_damage_is_refused() {
        let data = vectors(500, 16, 11);
        let index = VectorIndex::new(16, 2).unwrap();
        for (i, v) in data.iter().enumerate() {
            index.upsert(&id(i), i as u64 + 10, v).unwrap();
        }
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("vectors");
        index.save(&path).unwrap();
        index.remove(&id(3)).unwrap();
        index.save(&path).unwrap();
        let loaded = VectorIndex::load(&path, 2).unwrap();
        assert_eq!((loaded.len(), loaded.dimensions()), (499, 16));
        assert_eq!(loaded.key_of(&id(7)), Some(17));
        assert_eq!(loaded.key_of(&id(3)), None);
        assert_eq!(
            loaded.search(&data[42], 5, KeyFilter::All).unwrap(),
            index.search(&data[42], 5, KeyFilter::All).unwrap()
        );
        // It takes updates after loading.
        loaded.upsert(&id(3), 5000, &data[3]).unwrap();
        assert_eq!(
            loaded.search(&data[3], 1, KeyFilter::All).unwrap()[0].0,
            5000
        );
        // A crash between the renames leaves only `vectors.old`.
        std::fs::rename(&path, sibling(&path, "old")).unwrap();
        assert_eq!(VectorIndex::load(&path, 2).unwrap().len(), 499);
        std::fs::rename(sibling(&path, "old"), &path).unwrap();
        // A byte changed in the middle of the graph (usearch loads it
        // without a word) is found by its checksum; a save without the
        // checksum (older builds) loads.
        let graph = path.join(GRAPH_FILE);
        let intact = std::fs::read(&graph).unwrap();
        let mut damaged = intact.clone();
        let middle = damaged.len() / 2;
        damaged[middle] ^= 0xFF;
        std::fs::write(&graph, &damaged).unwrap();
        let error = VectorIndex::load(&path, 2)
            .err()
            .expect("a damaged graph is refused");
        assert!(error.to_string().contains("graph"), "{error}");
        std::fs::write(&graph, &intact).unwrap();
        std::fs::remove_file(path.join(GRAPH_SUM_FILE)).unwrap();
        assert_eq!(VectorIndex::load(&path, 2).unwrap().len(), 499);
        let keys = path.join(KEYS_FILE);
        let mut bytes = std::fs::read(&keys).unwrap();
        bytes[40] ^= 1;
        std::fs::write(&keys, &bytes).unwrap();
        let error = VectorIndex::load(&path, 2)
            .err()
            .expect("damage is refused");
        assert!(error.to_string().contains("checksum"), "{error}");
        bytes.truncate(20);
        std::fs::write(&keys, &bytes).unwrap();
        assert!(VectorIndex::load(&path, 2).is_err());
        std::fs::remove_file(&keys).unwrap();
        assert!(VectorIndex::load(&path, 2).is_err());
    }

    /// Keys whose own vector does not bring them back among the 10
    /// nearest (an unworn graph of this size finds every one).
    fn unreachable(index: &VectorIndex, held: &HashMap<u64, Vec<f32>>) -> usize {
        held.iter()
            .filter(|(key, vector)| {
                !index
                    .search(vector, 10, KeyFilter::All)
                    .unwrap()
                    .iter()
                    .any(|(found, _)| found == *key)
            })
            .count()
    }

    /// Found by probing: 600 items rewritten 200 at a time left items that
    /// no similarity search found (5 after 8 rounds). Here 2,000 vectors
    /// rewritten 500 at a time: the worn graph misses some of its own
    /// vectors; a compacted copy holds the same keys and finds every one.
    #[test]
    fn removals_wear_the_graph_and_a_compacted_copy_finds_every_vector() {
        let (n, dims, per) = (2000, 64, 500);
        let index = VectorIndex::new(dims, 2).unwrap();
        let mut held: HashMap<u64, Vec<f32>> = HashMap::new();
        for (i, v) in vectors(n, dims, 5).into_iter().enumerate() {
            index.upsert(&id(i), i as u64, &v).unwrap();
            held.insert(i as u64, v);
        }
        assert_eq!((index.removed(), index.worn()), (0, false));
        let mut key = n as u64;
        let mut worn_at = None;
        for round in 0..5u64 {
            let fresh = vectors(per, dims, 100 + round);
            for (j, v) in fresh.into_iter().enumerate() {
                let item = (j * 7 + round as usize * 13) % n;
                let old = index.key_of(&id(item)).unwrap();
                held.remove(&old);
                index.upsert(&id(item), key, &v).unwrap();
                held.insert(key, v);
                key += 1;
                if worn_at.is_none() && index.worn() {
                    worn_at = Some(index.removed());
                }
            }
        }
        assert_eq!(index.len(), n);
        assert_eq!(index.removed(), 5 * per);
        // A quarter of the vectors held, at least COMPACT_MIN_REMOVALS.
        assert_eq!(worn_at, Some(n / 4));
        // Here 32 misses, but how many depends on the CPU's distance kernels.
        let worn_misses = unreachable(&index, &held);
        let keys = index.id_map();
        // A key removed while the copy runs is left out.
        let gone = index.key_of(&id(7)).unwrap();
        index.remove(&id(7)).unwrap();
        held.remove(&gone);
        let copy = index.compacted(&keys, 1).unwrap();
        assert_eq!((copy.len(), copy.removed(), copy.worn()), (n - 1, 0, false));
        assert_eq!(copy.key_of(&id(7)), None);
        for (item, key) in &keys {
            if *item != id(7) {
                assert_eq!(copy.key_of(item), Some(*key));
            }
        }
        assert_eq!(
            unreachable(&copy, &held),
            0,
            "the worn graph missed {worn_misses}"
        );
        // The removal count is saved with the graph.
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("vectors");
        index.save(&path).unwrap();
        let loaded = VectorIndex::load(&path, 2).unwrap();
        assert_eq!(loaded.removed(), 5 * per + 1);
        assert!(loaded.worn());
    }

    /// A worn graph is copied on a thread of its own and swapped in; ids
    /// changed while it copies are replayed from the store.
    #[test]
    fn a_worn_graph_is_compacted_in_the_background() {
        let data = tempfile::tempdir().unwrap();
        let store = Store::open(data.path(), 4).unwrap();
        let worn = || {
            let index = Arc::new(VectorIndex::new(16, 2).unwrap());
            for (i, v) in vectors(400, 16, 9).into_iter().enumerate() {
                index.upsert(&id(i), i as u64, &v).unwrap();
            }
            for i in 0..COMPACT_MIN_REMOVALS {
                let v = index_vector(&index, i as u64);
                index.upsert(&id(i), 1000 + i as u64, &v).unwrap();
            }
            assert!(index.worn());
            index
        };
        let vectors = Arc::new(Vectors::new(true, 2, None));
        let index = worn();
        *vectors.write() = State::Ready(Some(index.clone()));
        // Any apply looks at the wear.
        vectors.apply(&store, Vec::new()).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let copy = loop {
            let current = vectors.index().unwrap();
            if !Arc::ptr_eq(&current, &index) && !vectors.is_compacting() {
                break current;
            }
            assert!(std::time::Instant::now() < deadline, "no compaction");
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        assert_eq!((copy.len(), copy.removed()), (400, 0));
        assert_eq!(copy.key_of(&id(0)), Some(1000));
        assert!(vectors.dirty.load(Ordering::Acquire));
        // Changes after the swap go to the copy.
        let deleted = |i| Current {
            id: id(i),
            version: None,
        };
        vectors.apply(&store, vec![deleted(398)]).unwrap();
        assert_eq!(copy.key_of(&id(398)), None);
        assert_eq!(index.key_of(&id(398)), Some(398), "the worn graph is left");
        // Item 399 was deleted while a copy ran (the store holds no such
        // item): the replay takes it out of the copy.
        let index = worn();
        *vectors.write() = State::Ready(Some(index.clone()));
        let keys = index.id_map();
        *vectors.compacting() = Some(HashSet::from([id(399)]));
        vectors.compact(&index, keys, &store).unwrap();
        let copy = vectors.index().unwrap();
        assert!(!Arc::ptr_eq(&copy, &index) && !vectors.is_compacting());
        assert_eq!((copy.len(), copy.key_of(&id(399))), (399, None));
    }

    fn index_vector(index: &VectorIndex, key: u64) -> Vec<f32> {
        let mut buffer = vec![0i8; index.dimensions()];
        assert_eq!(index.ann().get(key, &mut buffer).unwrap(), 1);
        buffer.into_iter().map(f32::from).collect()
    }

    #[test]
    fn key_bits_round_trip() {
        let mut bits = KeyBits::default();
        for key in [0, 63, 64, 1000, 5, 1000] {
            bits.insert(key);
        }
        assert_eq!(bits.len(), 5);
        assert_eq!(bits.iter().collect::<Vec<_>>(), vec![0, 5, 63, 64, 1000]);
        assert!(bits.contains(64) && !bits.contains(65) && !bits.contains(1_000_000));
        let keys = [0u64, 5, 63, 64, 1000];
        let built = KeyBits::from_predicate(1001, |k| keys.contains(&(k as u64)));
        assert_eq!(built.len(), 5);
        assert_eq!(built.iter().collect::<Vec<_>>(), keys);
        assert!(KeyBits::from_predicate(0, |_| true).is_empty());
    }
}
