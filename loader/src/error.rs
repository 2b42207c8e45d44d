//! The loader's error type.

use std::time::Duration;

/// An error from fetching one row group of a source.
///
/// `object` names the object (file) the row group lives in, so an error that
/// survives all retries tells the user which object failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{object}: {message}")]
pub struct SourceError {
    /// The object (file, key) the failing read addressed.
    pub object: String,
    /// What went wrong.
    pub message: String,
    /// Whether trying again may help (network, throttling, server restart).
    pub retryable: bool,
}

impl SourceError {
    /// An error that a retry may fix (connection refused, timeout, 5xx).
    pub fn transient(object: impl Into<String>, message: impl ToString) -> Self {
        Self {
            object: object.into(),
            message: message.to_string(),
            retryable: true,
        }
    }

    /// An error that a retry cannot fix (missing object, corrupt file, bad schema).
    pub fn permanent(object: impl Into<String>, message: impl ToString) -> Self {
        Self {
            object: object.into(),
            message: message.to_string(),
            retryable: false,
        }
    }
}

/// Everything that can go wrong in the loader.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoaderError {
    /// A configuration value is out of range or inconsistent.
    #[error("invalid loader configuration: {0}")]
    Config(String),
    /// The plan cannot be built (no rows, bad weights, ...).
    #[error("invalid plan: {0}")]
    Plan(String),
    /// A saved state does not belong to this plan (different seed, ranks, data).
    #[error("resume state does not match this loader: {0}")]
    StateMismatch(String),
    /// A row group could not be read, after `attempts` tries.
    #[error("reading row group {row_group} failed after {attempts} attempt(s): {source}")]
    Fetch {
        /// Index of the row group in the source.
        row_group: usize,
        /// How many reads were tried.
        attempts: u32,
        /// The last error (it names the object).
        #[source]
        source: SourceError,
    },
    /// `next()` waited longer than the configured stall timeout.
    #[error("no batch became deliverable for {waited:?}; rows still running: {running:?}")]
    Stalled {
        /// How long `next()` waited.
        waited: Duration,
        /// Row ids whose transform was running at that moment.
        running: Vec<u64>,
    },
    /// The loader's background tasks stopped unexpectedly.
    #[error("loader background task stopped: {0}")]
    Shutdown(String),
    /// A transform asked a row for a column the batch lacks, of another type, or null.
    #[error("row {row}: column {column:?}: {reason}")]
    Column {
        /// Global id of the row.
        row: u64,
        /// The column asked for.
        column: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The local disk cache failed.
    #[error("disk cache {path}: {message}")]
    Cache {
        /// The file or folder involved.
        path: String,
        /// What went wrong.
        message: String,
    },
}
