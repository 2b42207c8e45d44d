//! `scalefold bench parse FILES... [--json]`: single-thread mmCIF → chain records
//! throughput (MB/s of uncompressed text, files/s, chains/s), file reading included, as
//! `gemmi.read_structure` and Biopython's `MMCIFParser` are measured by
//! `ingest/bench/compare_parsers.py`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use scalefold_ingest::{MmcifOptions, read_mmcif};

/// Arguments of `scalefold bench parse`.
#[derive(Args, Debug)]
pub struct BenchParseArgs {
    /// mmCIF files (.cif or .cif.gz).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Repeat the whole file set until at least this many seconds have passed.
    #[arg(long, default_value_t = 2.0)]
    pub min_seconds: f64,
    /// Print one JSON line instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `scalefold bench parse`.
pub fn run(args: BenchParseArgs) -> anyhow::Result<()> {
    let options = MmcifOptions::default();
    // Uncompressed size of each file, and a warm-up pass (page cache, allocator).
    let mut bytes_per_pass = 0usize;
    for file in &args.files {
        let (_, bytes) = scalefold_ingest::input::read_file(file)?;
        bytes_per_pass += bytes.len();
        read_mmcif(file, &options)
            .with_context(|| format!("warm-up parse of {}", file.display()))?;
    }
    let min = Duration::from_secs_f64(args.min_seconds.max(0.0));
    let (mut passes, mut chains) = (0u64, 0u64);
    let start = Instant::now();
    loop {
        for file in &args.files {
            chains += read_mmcif(file, &options)?.chains.len() as u64;
        }
        passes += 1;
        if start.elapsed() >= min {
            break;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let files = passes * args.files.len() as u64;
    let mb = (passes as f64 * bytes_per_pass as f64) / 1e6;
    let result = serde_json::json!({
        "bench": "parse",
        "parser": "scalefold",
        "threads": 1,
        "files": args.files.len(),
        "passes": passes,
        "megabytes_per_pass": bytes_per_pass as f64 / 1e6,
        "seconds": seconds,
        "mb_per_s": mb / seconds,
        "files_per_s": files as f64 / seconds,
        "chains_per_s": chains as f64 / seconds,
    });
    if args.json {
        println!("{result}");
    } else {
        println!(
            "scalefold mmCIF → chains, 1 thread: {:.1} MB/s, {:.1} files/s, {:.1} chains/s ({} files × {} passes in {:.2} s)",
            mb / seconds,
            files as f64 / seconds,
            chains as f64 / seconds,
            args.files.len(),
            passes,
            seconds
        );
    }
    Ok(())
}
