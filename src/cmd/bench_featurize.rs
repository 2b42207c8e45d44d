//! `scalefold bench featurize [--json]`: time of the AlphaFold sample transform per
//! sample on one core (crop, templates, and every recycling iteration's MSA clustering,
//! masking and features) at a preset, for synthetic chains with MSAs of several depths,
//! and the peak memory it needs.

use std::time::Instant;

use clap::Args;
use scalefold_featurize::synthetic::synthetic_record;
use scalefold_featurize::transform::{
    SampleConfig, assign_to_centres, assign_to_centres_reference, make_sample,
};

/// Arguments of `scalefold bench featurize`.
#[derive(Args, Debug)]
pub struct BenchFeaturizeArgs {
    /// MSA depths (rows) of the synthetic chains.
    #[arg(long, value_delimiter = ',', default_value = "500,5000,20000")]
    pub rows: Vec<usize>,
    /// Residues of the synthetic chains (cropped to the preset's crop size).
    #[arg(long, default_value_t = 384)]
    pub n_res: usize,
    /// Templates per synthetic chain.
    #[arg(long, default_value_t = 20)]
    pub templates: usize,
    /// Timed samples per MSA depth (after one warm-up sample).
    #[arg(long, default_value_t = 20)]
    pub samples: usize,
    /// Preset: initial, finetune or tiny.
    #[arg(long, default_value = "initial")]
    pub preset: String,
    /// Print one JSON line instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Reads a `Vm…:  N kB` line of /proc/self/status, in bytes (None off Linux).
fn proc_status_bytes(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Resets the process's peak-RSS mark (Linux: writing 5 to /proc/self/clear_refs).
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Runs the benchmark.
pub fn run(args: BenchFeaturizeArgs) -> anyhow::Result<()> {
    let config = match args.preset.as_str() {
        "initial" => SampleConfig::initial_training(),
        "finetune" => SampleConfig::fine_tuning(),
        "tiny" => SampleConfig::tiny(),
        other => anyhow::bail!("unknown preset {other:?}: expected initial, finetune or tiny"),
    };
    anyhow::ensure!(args.samples > 0, "--samples must be positive");
    let mut results = Vec::new();
    for &rows in &args.rows {
        let record = synthetic_record(args.n_res, rows.max(1), args.templates, rows as u64);
        let record_bytes = record.msa.len()
            + 2 * record.deletion_matrix.len()
            + 4 * record.all_atom_positions.len()
            + 4 * record.templates.all_atom_positions.len();
        let warm = make_sample(&record, &config, 0)?;
        let sample_bytes = warm.nbytes(&config);
        drop(warm);
        let rss_before = proc_status_bytes("VmRSS:");
        let reset = reset_peak_rss();
        let mut times_ms = Vec::with_capacity(args.samples);
        for seed in 1..=args.samples as u64 {
            let start = Instant::now();
            let sample = make_sample(&record, &config, seed)?;
            times_ms.push(start.elapsed().as_secs_f64() * 1e3);
            drop(std::hint::black_box(sample));
        }
        let peak = proc_status_bytes("VmHWM:");
        let peak_growth = match (reset, rss_before, peak) {
            (true, Some(before), Some(peak)) => Some(peak.saturating_sub(before)),
            _ => None,
        };
        let (assign_ms, assign_reference_ms) = time_assignment(&record, &config);
        let mut sorted = times_ms.clone();
        sorted.sort_by(f64::total_cmp);
        let pct = |p: f64| sorted[((sorted.len() - 1) as f64 * p).round() as usize];
        results.push(serde_json::json!({
            "msa_rows": rows,
            "n_res": args.n_res,
            "crop": config.crop_size,
            "recycles": config.num_recycling_iterations,
            "samples": args.samples,
            "mean_ms": times_ms.iter().sum::<f64>() / times_ms.len() as f64,
            "p50_ms": pct(0.5),
            "p95_ms": pct(0.95),
            "max_ms": pct(1.0),
            "sample_mib": sample_bytes as f64 / (1 << 20) as f64,
            "record_mib": record_bytes as f64 / (1 << 20) as f64,
            "peak_rss_growth_mib": peak_growth.map(|b| b as f64 / (1 << 20) as f64),
            "assign_ms": assign_ms,
            "assign_reference_ms": assign_reference_ms,
        }));
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({"bench": "featurize", "preset": args.preset, "threads": 1, "results": results})
        );
    } else {
        println!(
            "featurize, preset {} (one thread; peak = RSS high-water growth over the samples)",
            args.preset
        );
        println!(
            "{:>8} {:>9} {:>9} {:>9} {:>9} {:>11} {:>10} {:>10} {:>10}",
            "rows",
            "mean ms",
            "p50 ms",
            "p95 ms",
            "max ms",
            "sample MiB",
            "peak MiB",
            "assign ms",
            "ref ms"
        );
        for r in &results {
            println!(
                "{:>8} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>11.1} {:>10} {:>10.2} {:>10.2}",
                r["msa_rows"].as_u64().unwrap_or(0),
                r["mean_ms"].as_f64().unwrap_or(f64::NAN),
                r["p50_ms"].as_f64().unwrap_or(f64::NAN),
                r["p95_ms"].as_f64().unwrap_or(f64::NAN),
                r["max_ms"].as_f64().unwrap_or(f64::NAN),
                r["sample_mib"].as_f64().unwrap_or(f64::NAN),
                r["peak_rss_growth_mib"]
                    .as_f64()
                    .map_or("n/a".to_string(), |v| format!("{v:.1}")),
                r["assign_ms"].as_f64().unwrap_or(f64::NAN),
                r["assign_reference_ms"].as_f64().unwrap_or(f64::NAN),
            );
        }
    }
    Ok(())
}

/// Times one nearest-centre assignment (the transform's dominant step) of the record's
/// rows, cropped to the preset's width, with the fast kernel and with the scalar
/// reference, side by side; returns the best of 3 runs of each, in ms.
fn time_assignment(record: &scalefold_featurize::ChainRecord, config: &SampleConfig) -> (f64, f64) {
    let n = record.seq_length as usize;
    let width = config.crop_size.min(n);
    let rows = record.num_alignments as usize;
    let centres_n = config.num_msa_rows().min(rows);
    let cropped: Vec<u8> = (0..rows)
        .flat_map(|r| record.msa[r * n..r * n + width].iter().copied())
        .collect();
    let (centres, extras) = cropped.split_at(centres_n * width);
    let best = |f: &dyn Fn() -> Vec<u32>| {
        (0..3)
            .map(|_| {
                let start = Instant::now();
                std::hint::black_box(f());
                start.elapsed().as_secs_f64() * 1e3
            })
            .fold(f64::INFINITY, f64::min)
    };
    let fast = best(&|| assign_to_centres(centres, extras, width));
    let reference = best(&|| assign_to_centres_reference(centres, extras, width));
    (fast, reference)
}
