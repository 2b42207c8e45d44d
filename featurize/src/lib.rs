//! Featurize: AlphaFold2 residue constants, static per-chain features, ground-truth
//! geometry and the seeded per-sample transforms. Pure computation: this crate does no IO.

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
pub use features::{ChainRecord, merge_msas};
pub use templates::{TemplateFeatures, TemplateSearchConfig, template_features};
pub use transform::{Sample, SampleConfig, make_sample};
