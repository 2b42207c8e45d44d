//! Loader: a generic streaming loader over datasets of the storage crate.
//!
//! Not built yet: seeded plans, async fetch, a transform pool and ready-first
//! delivery in a bounded window arrive with their own issue. It knows nothing of proteins.
