//! An optional local disk cache of row groups with a size limit: the least
//! recently used row groups are deleted first. Wrap any source in
//! [`CachedSource`]; reads that hit the cache never touch the store.
//!
//! Row groups are stored as Arrow IPC files named by a hash of (source identity,
//! object, row-group index). Files are written to a temporary name and renamed,
//! so a crash never leaves a half-written entry under a real name. A cache folder
//! must not be shared by two processes at once.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use arrow::array::RecordBatch;
use arrow::ipc::reader::FileReader;
use arrow::ipc::writer::FileWriter;
use futures::future::BoxFuture;

use crate::error::{LoaderError, SourceError};
use crate::rng;
use crate::source::{RowGroupInfo, RowGroupSource};

/// Least-recently-used bookkeeping of the cache folder.
#[derive(Default)]
struct Index {
    /// file name → (bytes, last use)
    files: HashMap<String, (u64, u64)>,
    /// last use → file name
    by_use: BTreeMap<u64, String>,
    total: u64,
    clock: u64,
}

impl Index {
    fn touch(&mut self, name: &str) -> bool {
        self.clock += 1;
        let clock = self.clock;
        match self.files.get_mut(name) {
            Some((_, used)) => {
                self.by_use.remove(used);
                *used = clock;
                self.by_use.insert(clock, name.to_string());
                true
            }
            None => false,
        }
    }

    fn insert(&mut self, name: String, bytes: u64) {
        self.remove(&name);
        self.clock += 1;
        self.files.insert(name.clone(), (bytes, self.clock));
        self.by_use.insert(self.clock, name);
        self.total += bytes;
    }

    fn remove(&mut self, name: &str) -> bool {
        match self.files.remove(name) {
            Some((bytes, used)) => {
                self.by_use.remove(&used);
                self.total -= bytes;
                true
            }
            None => false,
        }
    }

    /// Names to delete so that the total fits `limit`, oldest use first.
    fn evict_to(&mut self, limit: u64) -> Vec<String> {
        let mut evicted = Vec::new();
        while self.total > limit {
            let Some((_, name)) = self.by_use.pop_first() else {
                break;
            };
            if let Some((bytes, _)) = self.files.remove(&name) {
                self.total -= bytes;
            }
            evicted.push(name);
        }
        evicted
    }
}

/// A source wrapper that keeps fetched row groups in a local folder, at most
/// `limit_bytes` of files.
pub struct CachedSource<S> {
    inner: S,
    dir: PathBuf,
    limit_bytes: u64,
    identity_hash: u64,
    index: Arc<Mutex<Index>>,
}

fn hash_str(text: &str) -> u64 {
    let words: Vec<u64> = text
        .as_bytes()
        .chunks(8)
        .map(|c| c.iter().fold(0u64, |acc, &b| (acc << 8) | b as u64))
        .chain([text.len() as u64])
        .collect();
    rng::mix(&words)
}

fn cache_error(path: &Path, error: impl ToString) -> LoaderError {
    LoaderError::Cache {
        path: path.display().to_string(),
        message: error.to_string(),
    }
}

impl<S: RowGroupSource> CachedSource<S> {
    /// Opens (creating if needed) the cache folder `dir`, adopting the entries
    /// already there (oldest modification first out) and trimming them to `limit_bytes`.
    pub fn open(inner: S, dir: impl Into<PathBuf>, limit_bytes: u64) -> Result<Self, LoaderError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| cache_error(&dir, e))?;
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| cache_error(&dir, e))? {
            let entry = entry.map_err(|e| cache_error(&dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let meta = entry
                .metadata()
                .map_err(|e| cache_error(&entry.path(), e))?;
            if name.ends_with(".tmp") {
                // A write interrupted by a crash.
                let _ = std::fs::remove_file(entry.path());
            } else if name.ends_with(".arrow") && meta.is_file() {
                let modified = meta.modified().ok();
                found.push((modified, name, meta.len()));
            }
        }
        found.sort();
        let mut index = Index::default();
        for (_, name, bytes) in found {
            index.insert(name, bytes);
        }
        for name in index.evict_to(limit_bytes) {
            let _ = std::fs::remove_file(dir.join(name));
        }
        let identity_hash = hash_str(&inner.identity());
        Ok(Self {
            inner,
            dir,
            limit_bytes,
            identity_hash,
            index: Arc::new(Mutex::new(index)),
        })
    }

    /// Bytes of files in the cache now.
    pub fn cached_bytes(&self) -> u64 {
        self.lock().total
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        // No user code runs under this lock; a poisoned lock is still consistent.
        self.index
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn file_name(&self, index: usize) -> String {
        let object = &self.inner.row_groups()[index].object;
        format!(
            "{:016x}.arrow",
            rng::mix(&[self.identity_hash, hash_str(object), index as u64])
        )
    }
}

fn read_ipc(path: &Path) -> Result<RecordBatch, String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let reader = FileReader::try_new(file, None).map_err(|e| e.to_string())?;
    let schema = reader.schema();
    let batches: Vec<RecordBatch> = reader
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    arrow::compute::concat_batches(&schema, &batches).map_err(|e| e.to_string())
}

fn write_ipc(path: &Path, batch: &RecordBatch) -> Result<u64, String> {
    let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
    let result = (|| {
        let file = File::create(&tmp).map_err(|e| e.to_string())?;
        let mut writer = FileWriter::try_new(file, &batch.schema()).map_err(|e| e.to_string())?;
        writer.write(batch).map_err(|e| e.to_string())?;
        writer.finish().map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, path).map_err(|e| e.to_string())?;
        std::fs::metadata(path)
            .map(|m| m.len())
            .map_err(|e| e.to_string())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

impl<S: RowGroupSource> RowGroupSource for CachedSource<S> {
    fn row_groups(&self) -> &[RowGroupInfo] {
        self.inner.row_groups()
    }

    fn identity(&self) -> String {
        self.inner.identity()
    }

    fn fetch(&self, index: usize) -> BoxFuture<'_, Result<RecordBatch, SourceError>> {
        Box::pin(async move {
            let name = self.file_name(index);
            let path = self.dir.join(&name);
            if self.lock().touch(&name) {
                let read_path = path.clone();
                match tokio::task::spawn_blocking(move || read_ipc(&read_path)).await {
                    Ok(Ok(batch))
                        if batch.num_rows() as u64 == self.inner.row_groups()[index].rows =>
                    {
                        return Ok(batch);
                    }
                    outcome => {
                        tracing::warn!(path = %path.display(), ?outcome, "unreadable cache entry; refetching");
                        self.lock().remove(&name);
                        let _ = std::fs::remove_file(&path);
                    }
                }
            }
            let batch = self.inner.fetch(index).await?;
            let (write_path, to_write) = (path.clone(), batch.clone());
            match tokio::task::spawn_blocking(move || write_ipc(&write_path, &to_write)).await {
                Ok(Ok(bytes)) if bytes <= self.limit_bytes => {
                    let evicted = {
                        let mut index = self.lock();
                        index.insert(name, bytes);
                        index.evict_to(self.limit_bytes)
                    };
                    for old in evicted {
                        let _ = std::fs::remove_file(self.dir.join(old));
                    }
                }
                Ok(Ok(_)) => {
                    // Larger than the whole cache: not kept.
                    let _ = std::fs::remove_file(&path);
                }
                outcome => {
                    tracing::warn!(path = %path.display(), ?outcome, "cannot write cache entry")
                }
            }
            Ok(batch)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::MemorySource;
    use arrow::array::{Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counting {
        inner: MemorySource,
        fetches: AtomicUsize,
    }
    impl RowGroupSource for Counting {
        fn row_groups(&self) -> &[RowGroupInfo] {
            self.inner.row_groups()
        }
        fn fetch(&self, index: usize) -> BoxFuture<'_, Result<RecordBatch, SourceError>> {
            self.fetches.fetch_add(1, Ordering::SeqCst);
            self.inner.fetch(index)
        }
        fn identity(&self) -> String {
            self.inner.identity()
        }
    }

    fn source(groups: usize) -> Counting {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        let batches = (0..groups)
            .map(|g| {
                let values: Vec<i64> = (0..100).map(|i| (g * 100 + i) as i64).collect();
                RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(values))])
                    .unwrap()
            })
            .collect();
        Counting {
            inner: MemorySource::new("t", batches),
            fetches: AtomicUsize::new(0),
        }
    }

    #[tokio::test]
    async fn hits_skip_the_store_and_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let cached = CachedSource::open(source(3), dir.path(), 1 << 20).unwrap();
        let first = cached.fetch(1).await.unwrap();
        let second = cached.fetch(1).await.unwrap();
        assert_eq!(first, second);
        assert_eq!(cached.inner.fetches.load(Ordering::SeqCst), 1);
        // A new cache over the same folder adopts the entry.
        let reopened = CachedSource::open(source(3), dir.path(), 1 << 20).unwrap();
        assert_eq!(reopened.fetch(1).await.unwrap(), first);
        assert_eq!(reopened.inner.fetches.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn evicts_least_recently_used_within_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let probe_dir = tempfile::tempdir().unwrap();
        let probe = CachedSource::open(source(1), probe_dir.path(), 1 << 20).unwrap();
        probe.fetch(0).await.unwrap();
        let one = probe.cached_bytes();
        let cached = CachedSource::open(source(4), dir.path(), one * 2 + one / 2).unwrap();
        for g in [0, 1, 0, 2] {
            cached.fetch(g).await.unwrap();
        }
        // 1 was least recently used when 2 arrived.
        assert!(cached.cached_bytes() <= one * 2 + one / 2);
        let files = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(files, 2);
        let before = cached.inner.fetches.load(Ordering::SeqCst);
        cached.fetch(0).await.unwrap();
        cached.fetch(2).await.unwrap();
        assert_eq!(
            cached.inner.fetches.load(Ordering::SeqCst),
            before,
            "0 and 2 are cached"
        );
        cached.fetch(1).await.unwrap();
        assert_eq!(
            cached.inner.fetches.load(Ordering::SeqCst),
            before + 1,
            "1 was evicted"
        );
    }

    #[tokio::test]
    async fn a_corrupt_entry_is_refetched() {
        let dir = tempfile::tempdir().unwrap();
        let cached = CachedSource::open(source(2), dir.path(), 1 << 20).unwrap();
        let good = cached.fetch(0).await.unwrap();
        let path = dir.path().join(cached.file_name(0));
        std::fs::write(&path, b"garbage").unwrap();
        assert_eq!(cached.fetch(0).await.unwrap(), good);
        assert_eq!(cached.inner.fetches.load(Ordering::SeqCst), 2);
    }
}
