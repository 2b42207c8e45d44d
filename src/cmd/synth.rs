//! `scalefold synth`: write a synthetic corpus (mmCIF, a3m, Stockholm, hhr, clusters).

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use scalefold_ingest::synth::{SynthConfig, write_corpus};

/// Arguments of `scalefold synth`.
#[derive(Args)]
pub struct SynthArgs {
    /// Number of protein chains to generate.
    #[arg(long)]
    pub chains: usize,
    /// Output folder (created if needed).
    #[arg(long)]
    pub out: PathBuf,
    /// Seed: the same seed writes the same corpus.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Shortest chain.
    #[arg(long, default_value_t = 40)]
    pub min_length: usize,
    /// Longest chain.
    #[arg(long, default_value_t = 400)]
    pub max_length: usize,
    /// Fewest a3m rows per chain.
    #[arg(long, default_value_t = 10)]
    pub min_msa_depth: usize,
    /// Most a3m rows per chain (Stockholm files get up to a quarter of it).
    #[arg(long, default_value_t = 2000)]
    pub max_msa_depth: usize,
    /// Fraction of mmCIF files written gzip-compressed.
    #[arg(long, default_value_t = 0.2)]
    pub gzip_fraction: f64,
}

/// Runs `scalefold synth`.
pub fn run(args: SynthArgs) -> anyhow::Result<()> {
    let config = SynthConfig {
        chains: args.chains,
        seed: args.seed,
        min_length: args.min_length,
        max_length: args.max_length,
        min_msa_depth: args.min_msa_depth,
        max_msa_depth: args.max_msa_depth,
        gzip_fraction: args.gzip_fraction,
    };
    let started = Instant::now();
    let summary = write_corpus(&args.out, &config)?;
    println!(
        "wrote {} chains in {} entries ({} files, {:.1} MB) to {} in {:.1} s",
        summary.chains,
        summary.entries,
        summary.files,
        summary.bytes as f64 / 1e6,
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "  structures: {0}/mmcif  alignments: {0}/alignments  clusters: {0}/clusters.txt",
        args.out.display()
    );
    Ok(())
}
