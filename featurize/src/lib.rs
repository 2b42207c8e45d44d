//! Featurize: AlphaFold2 residue constants, static per-chain features, ground-truth
//! geometry and the seeded per-sample transforms. Pure computation: this crate does no IO.
//!
//! - [`residue_constants`]: versioned tables (atom37/atom14 layouts, rigid groups and
//!   ideal coordinates, chis, ambiguous atoms, van der Waals radii, bond lengths/angles).
//! - [`rigid`]: 3-D vectors and rigid transforms.
//! - [`geometry`]: atom14 ground truth, rigid-group frames, torsions, pseudo-beta, and
//!   atoms rebuilt from torsions.
//! - [`features`] and [`templates`]: the static [`ChainRecord`] written once at ingest
//!   (one Parquet row), the MSA merge and template selection.
//! - [`transform`]: [`make_sample`], the seeded per-sample transform the loader runs.
//! - [`synthetic`]: generated records for benchmarks and tests.

// Residue tables are parallel fixed-size arrays indexed together by slot/atom/group;
// index loops say that more plainly than zipped iterators.
#![allow(clippy::needless_range_loop)]

pub mod error;
pub mod features;
pub mod geometry;
pub mod inputs;
pub mod residue_constants;
pub mod rigid;
pub mod synthetic;
pub mod templates;
pub mod transform;

pub use error::FeaturizeError;
pub use features::{ChainRecord, FlatMsa, merge_msas};
pub use templates::{TemplateFeatures, TemplateSearchConfig, template_features};
pub use transform::{Sample, SampleConfig, make_sample};
