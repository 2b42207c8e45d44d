//! `scalefold commit`: merge the parts of a dataset written by several workers.

use clap::Args;

/// Arguments of `scalefold commit`.
#[derive(Args)]
pub struct CommitArgs {
    /// Dataset URL or path.
    pub dataset: String,
}

/// Runs `scalefold commit`.
pub fn run(args: CommitArgs) -> anyhow::Result<()> {
    let summary = super::dataset::runtime()?.block_on(scalefold_storage::commit(&args.dataset))?;
    let m = &summary.manifest;
    println!(
        "committed {}: {} shards, {} rows, {:.1} MB",
        args.dataset,
        m.shards.len(),
        m.total_rows(),
        m.total_bytes() as f64 / 1e6
    );
    if !summary.removed_orphans.is_empty() {
        println!(
            "  removed {} unfinished shard(s) of interrupted runs",
            summary.removed_orphans.len()
        );
    }
    Ok(())
}
