//! The batch ingest job: structures + alignments → one dataset row per chain.

mod error;

pub use error::IngestError;
