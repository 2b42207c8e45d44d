//! The error type of the ingest job and of the synthetic-corpus writer.
//!
//! Per-input problems (a malformed file, a missing alignment) are not errors of the job:
//! they become lines of the [`super::IngestReport`]. [`IngestError`] is what stops the job
//! as a whole: bad arguments, an unreachable store, a failed dataset write.

use scalefold_storage::StorageError;

use crate::error::ParseError;

/// Why the ingest job (or `synth`) could not run to its end.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// An argument or setting is out of range or inconsistent.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A local file or folder could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The operating-system error.
        source: std::io::Error,
    },
    /// An input store could not be listed or read (not a per-input failure: the whole
    /// listing or store is unusable).
    #[error("{url}: cannot list or read the input store: {source}")]
    Store {
        /// The input URL or path.
        url: String,
        /// The object-store error.
        source: object_store::Error,
    },
    /// The dataset could not be opened, written or committed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A required input file (e.g. the cluster file) is malformed.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// A row could not be converted to or from the dataset schema.
    #[error("{chain}: {reason}")]
    Schema {
        /// The chain (or column) concerned.
        chain: String,
        /// What was wrong.
        reason: String,
    },
}
