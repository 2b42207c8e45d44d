//! Storage: datasets of sharded Parquet with a manifest, on any object store.
