//! The trainer's error type: one enum for every failure a caller can see.

/// Everything that can go wrong in the trainer crate.
#[derive(Debug, thiserror::Error)]
pub enum TrainerError {
    /// A tensor was used with a shape or length that does not match its declaration.
    #[error("shape mismatch in {op}: {detail}")]
    Shape {
        /// The operation that found the mismatch.
        op: &'static str,
        /// What was expected and what was found.
        detail: String,
    },
    /// A tensor was used before `materialize` gave it storage.
    #[error("tensor {name} has no storage yet: call materialize() after declaring it")]
    NotMaterialized {
        /// The tensor's declared name.
        name: String,
    },
    /// A configuration value is out of range.
    #[error("invalid config field {field}: {detail}")]
    Config {
        /// The offending field.
        field: &'static str,
        /// Why it is invalid.
        detail: String,
    },
    /// An error reported by the CUDA driver, NVRTC, cuBLASLt or NCCL.
    #[error("CUDA error in {context}: {detail}")]
    Cuda {
        /// What the trainer was doing.
        context: String,
        /// The library's message.
        detail: String,
    },
    /// A kernel-cache or other filesystem error.
    #[error("io error on {path}: {source}")]
    Io {
        /// The file involved.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A collective operation failed or was called with inconsistent arguments.
    #[error("communicator error: {0}")]
    Comm(String),
    /// A training config (preset, file or `--set` override) is malformed.
    #[error("config {file}: {}{detail}", if key.is_empty() { String::new() } else { format!("key `{key}`: ") })]
    ConfigFile {
        /// The preset name or file path.
        file: String,
        /// The dotted key path (empty for the whole document).
        key: String,
        /// What was found and what was expected.
        detail: String,
    },
    /// A checkpoint could not be written, read or applied.
    #[error("checkpoint {path}: {detail}")]
    Checkpoint {
        /// The checkpoint folder or file.
        path: String,
        /// What went wrong.
        detail: String,
    },
    /// The training or validation data could not be opened or streamed.
    #[error("data: {0}")]
    Data(String),
}

/// Shorthand result type of this crate.
pub type Result<T> = std::result::Result<T, TrainerError>;

/// Returns a shape error unless `cond` holds.
pub(crate) fn ensure(cond: bool, op: &'static str, detail: impl FnOnce() -> String) -> Result<()> {
    if cond {
        Ok(())
    } else {
        Err(TrainerError::Shape {
            op,
            detail: detail(),
        })
    }
}
