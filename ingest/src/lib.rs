//! Ingest: turns structure files (mmCIF, PDB) and alignments (a3m, Stockholm, hhr)
//! into the input types of `scalefold_featurize::inputs`.
//!
//! Every parser works on an in-memory buffer, returns a typed [`ParseError`] naming the
//! file and line on bad input, and never panics on user data.

mod atom37;
pub mod cif;
pub mod error;
pub mod hhr;
pub mod input;
pub mod job;
pub mod mmcif;
pub mod msa;
mod number;
pub mod pdb;
pub mod residue_names;
mod residues;
pub mod schema;
pub mod synth;

pub use error::{ParseError, Result};
pub use hhr::{parse_hhr, read_hhr};
pub use mmcif::{Heterogeneity, MmcifOptions, parse_mmcif, read_mmcif};
pub use msa::{
    Alignment, merge_alignments, merge_alignments_flat, parse_a3m, parse_stockholm, read_alignment,
};
pub use pdb::{PdbEntry, parse_pdb, read_pdb};
