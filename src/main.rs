//! The `scalefold` command line: parses arguments and calls the crates.
//!
//! Each subcommand lives in its own module under `src/cmd/`; this file only wires them.

use clap::{Parser, Subcommand};

mod cmd;

/// scalefold: AlphaFold2 data preparation, streaming and training.
#[derive(Parser)]
#[command(name = "scalefold", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Summarize a dataset: shards, rows, bytes, schema, length statistics.
    Inspect(cmd::dataset::InspectArgs),
    /// Read every shard of a dataset and check its checksum and row count.
    Verify(cmd::dataset::VerifyArgs),
    /// Show what the parsers read from an mmCIF, PDB, a3m, Stockholm or hhr file.
    Parse(cmd::parse::ParseArgs),
    /// The whole data path on a default: synthetic corpus → ingest → inspect (in data/demo).
    Demo(cmd::demo::DemoArgs),
    /// Write a synthetic corpus (mmCIF, a3m, Stockholm, hhr, clusters) in the real formats.
    Synth(cmd::synth::SynthArgs),
    /// Build a dataset from structures and alignments (parallel, resumable, with a report).
    Ingest(Box<cmd::ingest::IngestArgs>),
    /// Merge the parts written by several ingest workers into the dataset's manifest.
    Commit(cmd::commit::CommitArgs),
    /// Train AlphaFold2 on a dataset: checkpoints, resume, metrics, loss plot.
    Train(Box<cmd::train::TrainArgs>),
    /// lDDT-Cα of checkpoints on a validation dataset (--watch: each new one).
    Eval(cmd::eval::EvalArgs),
    /// Benchmarks; each prints its figures (one JSON line with --json).
    #[command(subcommand)]
    Bench(Bench),
}

/// The benchmarks, one per part of the system.
#[derive(Subcommand)]
enum Bench {
    /// Single-thread mmCIF → chain records throughput (MB/s, files/s).
    Parse(cmd::bench_parse::BenchParseArgs),
    /// Dataset write/read throughput against raw object-store PUT/GET of the same bytes.
    Storage(cmd::bench_storage::BenchStorageArgs),
    /// End-to-end ingest (chains/s, MB/s) on a synthetic corpus vs single-thread parse × threads.
    Ingest(cmd::bench_ingest::BenchIngestArgs),
    /// Evoformer and extra-MSA block forward + backward on the GPU (eager and CUDA graph).
    Evoformer(cmd::bench_evoformer::BenchEvoformerArgs),
    /// Per-sample AlphaFold transform time on one core and peak memory, by MSA depth.
    Featurize(cmd::bench_featurize::BenchFeaturizeArgs),
    /// Data wait per step, strict order against ready-first windows; S3 streaming against raw GETs.
    Loader(cmd::bench_loader::BenchLoaderArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Inspect(args) => cmd::dataset::inspect(args),
        Command::Verify(args) => cmd::dataset::verify(args),
        Command::Parse(args) => cmd::parse::run(args),
        Command::Demo(args) => cmd::demo::run(args),
        Command::Synth(args) => cmd::synth::run(args),
        Command::Ingest(args) => cmd::ingest::run(*args),
        Command::Commit(args) => cmd::commit::run(args),
        Command::Train(args) => cmd::train::run(*args),
        Command::Eval(args) => cmd::eval::run(args),
        Command::Bench(bench) => match bench {
            Bench::Parse(args) => cmd::bench_parse::run(args),
            Bench::Storage(args) => cmd::bench_storage::run(args),
            Bench::Ingest(args) => cmd::bench_ingest::run(args),
            Bench::Evoformer(args) => cmd::bench_evoformer::run(args),
            Bench::Featurize(args) => cmd::bench_featurize::run(args),
            Bench::Loader(args) => cmd::bench_loader::run(args),
        },
    }
}
