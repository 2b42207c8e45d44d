//! The error type of this crate.

/// Everything that can go wrong when featurizing user data.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FeaturizeError {
    /// Two arrays that must have one entry per residue (or per row) differ in length.
    #[error("{record}: field `{field}` has {actual} entries, expected {expected}")]
    LengthMismatch {
        /// Which record or input (chain id, MSA index).
        record: String,
        /// Field name.
        field: &'static str,
        /// Expected length.
        expected: usize,
        /// Actual length.
        actual: usize,
    },
    /// A value is out of its allowed range (e.g. an MSA id above 21).
    #[error("{record}: field `{field}` has invalid value {value} at index {index}: {expected}")]
    InvalidValue {
        /// Which record or input.
        record: String,
        /// Field name.
        field: &'static str,
        /// Flat index of the bad value.
        index: usize,
        /// The value, printed.
        value: String,
        /// What was expected.
        expected: &'static str,
    },
    /// The MSA's first row is not the chain's sequence.
    #[error("{record}: MSA query row does not match the chain sequence at column {column}")]
    QueryMismatch {
        /// Which record.
        record: String,
        /// First differing column.
        column: usize,
    },
    /// A sample configuration that cannot produce samples.
    #[error("invalid sample config: {0}")]
    InvalidConfig(String),
}
