//! One module per subcommand of the `scalefold` binary.

pub mod bench_evoformer;
pub mod bench_featurize;
pub mod bench_ingest;
pub mod bench_loader;
pub mod bench_parse;
pub mod bench_storage;
pub mod commit;
pub mod dataset;
pub mod demo;
pub mod eval;
pub mod ingest;
pub mod parse;
pub mod synth;
pub mod train;
