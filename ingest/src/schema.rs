//! The Arrow schema of one chain row.
