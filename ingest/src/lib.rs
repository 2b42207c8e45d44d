//! Ingest: turns structure files (mmCIF, PDB) and alignments (a3m, Stockholm, hhr)
//! into per-chain records and writes them as a sharded dataset.
//!
//! Not built yet: the parsers and the batch job arrive with their own issues.
