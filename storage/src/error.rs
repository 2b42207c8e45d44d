//! The storage crate's error type: every variant names the object it concerns.

/// Errors of the storage crate. Each names the dataset URL or object path involved.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The dataset URL could not be understood.
    #[error("invalid dataset URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The object store for a URL could not be configured (credentials, region, ...).
    #[error("cannot configure object store for {url:?}: {source}")]
    StoreConfig {
        /// The URL as given.
        url: String,
        /// The object store's own error.
        #[source]
        source: object_store::Error,
    },
    /// The dataset has no `manifest.json`: it does not exist or was never committed.
    #[error("no dataset at {url}: {path} not found (was the dataset committed?)")]
    ManifestNotFound {
        /// Dataset URL.
        url: String,
        /// Path of the missing manifest.
        path: String,
    },
    /// A manifest (or partial manifest) is not valid JSON of the expected shape.
    #[error("invalid manifest {path}: {reason}")]
    InvalidManifest {
        /// Path of the manifest object.
        path: String,
        /// What was wrong.
        reason: String,
    },
    /// The manifest was written by a newer (or unknown) layout version of this crate.
    #[error("manifest {path} has layout version {found}; this build reads version {supported}")]
    UnknownFormatVersion {
        /// Path of the manifest object.
        path: String,
        /// Version found.
        found: u32,
        /// Version this build supports.
        supported: u32,
    },
    /// The dataset's schema version is not the one the caller expects.
    #[error("dataset {url} has schema version {found}, expected {expected}")]
    UnknownSchemaVersion {
        /// Dataset URL.
        url: String,
        /// Version found in the manifest.
        found: u32,
        /// Version the caller expects.
        expected: u32,
    },
    /// A shard's bytes do not match the manifest's checksum.
    #[error("checksum mismatch in {path}: manifest says {expected}, object has {actual}")]
    ChecksumMismatch {
        /// Shard path.
        path: String,
        /// Checksum in the manifest.
        expected: String,
        /// Checksum computed from the object.
        actual: String,
    },
    /// A shard's size or row count differs from the manifest.
    #[error("{path}: manifest says {what} = {expected}, object has {actual}")]
    ShardMismatch {
        /// Shard path.
        path: String,
        /// Which quantity differs ("bytes", "rows").
        what: &'static str,
        /// Value in the manifest.
        expected: u64,
        /// Value found.
        actual: u64,
    },
    /// A shard is truncated or not a Parquet file.
    #[error("corrupt shard {path}: {reason}")]
    CorruptShard {
        /// Shard path.
        path: String,
        /// Parquet's description of the problem.
        reason: String,
    },
    /// An object is missing.
    #[error("object not found: {path}")]
    NotFound {
        /// Object path.
        path: String,
    },
    /// Access to an object was refused (credentials or permissions).
    #[error("permission denied for {path}: {source}")]
    PermissionDenied {
        /// Object path.
        path: String,
        /// The object store's error.
        #[source]
        source: object_store::Error,
    },
    /// Any other object store failure (network, server), after retries.
    #[error("object store error on {path}: {source}")]
    ObjectStore {
        /// Object path.
        path: String,
        /// The object store's error.
        #[source]
        source: object_store::Error,
    },
    /// Encoding or decoding Parquet failed.
    #[error("parquet error on {path}: {source}")]
    Parquet {
        /// Object path.
        path: String,
        /// Parquet's error.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// A batch or request does not fit the dataset's schema.
    #[error("schema mismatch for {url}: {reason}")]
    SchemaMismatch {
        /// Dataset URL.
        url: String,
        /// What does not match.
        reason: String,
    },
    /// A column named in a projection or option does not exist.
    #[error("dataset {url} has no column {column:?}")]
    UnknownColumn {
        /// Dataset URL.
        url: String,
        /// The unknown column.
        column: String,
    },
    /// A shard or row-group index is out of range.
    #[error("dataset {url}: {what} index {index} out of range (have {len})")]
    OutOfRange {
        /// Dataset URL.
        url: String,
        /// "shard" or "row group".
        what: &'static str,
        /// Index asked for.
        index: usize,
        /// Number available.
        len: usize,
    },
    /// `commit` found workers that have not finished.
    #[error("cannot commit {url}: workers {missing:?} of {workers} have not finished")]
    IncompleteWorkers {
        /// Dataset URL.
        url: String,
        /// Workers whose part is missing or unfinished.
        missing: Vec<u32>,
        /// Number of workers expected.
        workers: u32,
    },
    /// Invalid writer options or arguments.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl StorageError {
    /// Classifies an object store error on `path` into the matching variant.
    pub fn from_store(path: impl Into<String>, source: object_store::Error) -> Self {
        let path = path.into();
        match source {
            object_store::Error::NotFound { .. } => StorageError::NotFound { path },
            e @ (object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. }) => {
                StorageError::PermissionDenied { path, source: e }
            }
            e => StorageError::ObjectStore { path, source: e },
        }
    }

    /// Wraps a Parquet error on `path`, recognising truncated or non-Parquet files.
    pub fn from_parquet(path: impl Into<String>, source: parquet::errors::ParquetError) -> Self {
        let path = path.into();
        match source {
            parquet::errors::ParquetError::External(inner) => {
                match inner.downcast::<object_store::Error>() {
                    Ok(store_err) => StorageError::from_store(path, *store_err),
                    Err(other) => StorageError::Parquet {
                        path,
                        source: parquet::errors::ParquetError::External(other),
                    },
                }
            }
            e @ (parquet::errors::ParquetError::EOF(_)
            | parquet::errors::ParquetError::NeedMoreData(_)
            | parquet::errors::ParquetError::NeedMoreDataRange(_)) => StorageError::CorruptShard {
                path,
                reason: e.to_string(),
            },
            parquet::errors::ParquetError::General(msg) if is_footer_problem(&msg) => {
                StorageError::CorruptShard { path, reason: msg }
            }
            e => StorageError::Parquet { path, source: e },
        }
    }
}

/// Whether a general Parquet error message describes a broken file rather than a bad request.
fn is_footer_problem(msg: &str) -> bool {
    let m = msg.to_ascii_lowercase();
    [
        "magic", "footer", "corrupt", "invalid", "eof", "metadata", "size",
    ]
    .iter()
    .any(|w| m.contains(w))
}

/// Result type of the storage crate.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;
