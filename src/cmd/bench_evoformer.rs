//! `scalefold bench evoformer`: ms per Evoformer and extra-MSA block forward +
//! backward on the GPU (eager and CUDA graph), memory, optional per-op profile.

use clap::Args;
use scalefold_trainer::bench::{BenchOptions, run as run_bench};

/// Arguments of `scalefold bench evoformer`.
#[derive(Args, Debug)]
pub struct BenchEvoformerArgs {
    /// Print one JSON line instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Timed iterations per measurement (the median is reported).
    #[arg(long, default_value_t = 20)]
    pub iters: usize,
    /// MSA rows of the Evoformer block.
    #[arg(long, default_value_t = 128)]
    pub n_seq: usize,
    /// Residues.
    #[arg(long, default_value_t = 256)]
    pub n_res: usize,
    /// Extra-MSA rows of the extra-MSA block.
    #[arg(long, default_value_t = 1024)]
    pub n_extra: usize,
    /// Also time every op separately (synchronized) and print FLOP/s and GB/s.
    #[arg(long)]
    pub profile: bool,
    /// GPU ordinal.
    #[arg(long, default_value_t = 0)]
    pub device: usize,
}

/// Runs the benchmark and prints a table or one JSON line.
pub fn run(args: BenchEvoformerArgs) -> anyhow::Result<()> {
    let opts = BenchOptions {
        iters: args.iters,
        n_seq: args.n_seq,
        n_res: args.n_res,
        n_extra: args.n_extra,
        profile: args.profile,
        device: args.device,
    };
    let report = run_bench(&opts)?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "bench": "evoformer", "report": report })
        );
    } else {
        print!("{}", report.table());
    }
    Ok(())
}
