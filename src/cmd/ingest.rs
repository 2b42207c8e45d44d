//! `scalefold ingest`: structures + alignments → a sharded dataset, with a failure report.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};
use scalefold_ingest::job::{Filters, IngestConfig, IngestReport, Progress, ingest};

/// Log output of `scalefold ingest`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// A progress bar and a human summary.
    Text,
    /// One JSON object per event on stderr (no progress bar).
    Json,
}

/// Arguments of `scalefold ingest`.
#[derive(Args)]
pub struct IngestArgs {
    /// Folder or URL of the structure files (.cif, .cif.gz, .pdb, .ent).
    #[arg(long)]
    pub structures: String,
    /// Folder or URL with one `<id>_<chain>/` alignment folder per chain (OpenProteinSet layout).
    #[arg(long)]
    pub alignments: String,
    /// The dataset to write (folder or URL).
    #[arg(long)]
    pub out: String,
    /// Cluster file: one cluster per line, chain ids separated by spaces.
    #[arg(long)]
    pub clusters: Option<String>,
    /// Duplicate-chain file (one group of identical chains per line): a chain without its
    /// own alignment folder uses its group's.
    #[arg(long)]
    pub duplicate_chains: Option<String>,
    /// Alignment index (the alignment-database form): JSON mapping each chain to
    /// {"db": file, "files": [[name, start, length], ...]}; --alignments then holds the
    /// database files.
    #[arg(long)]
    pub alignment_index: Option<String>,
    /// This worker's index (inputs are split deterministically over workers).
    #[arg(long, default_value_t = 0)]
    pub worker: u32,
    /// Number of workers; with more than one, run `scalefold commit` after all finished.
    #[arg(long, default_value_t = 1)]
    pub workers: u32,
    /// Dataset writers per worker (Parquet encoding runs on this many threads); keep it
    /// the same on every run and every worker of one dataset.
    #[arg(long, default_value_t = 4)]
    pub writers: u32,
    /// Drop entries with a resolution above this many Å (entries without one pass).
    #[arg(long)]
    pub max_resolution: Option<f32>,
    /// Drop entries released before this date (YYYY-MM-DD).
    #[arg(long)]
    pub min_date: Option<String>,
    /// Drop entries released after this date (YYYY-MM-DD).
    #[arg(long)]
    pub max_date: Option<String>,
    /// Drop chains shorter than this.
    #[arg(long)]
    pub min_length: Option<usize>,
    /// Drop chains in which one residue type exceeds this fraction.
    #[arg(long)]
    pub max_single_residue_fraction: Option<f32>,
    /// Drop chains with more than this fraction of unknown residues.
    #[arg(long)]
    pub max_unknown_fraction: Option<f32>,
    /// Most templates per chain.
    #[arg(long, default_value_t = 4)]
    pub max_templates: usize,
    /// MiB of parsed structure files kept in memory, compact, for their use as templates
    /// and as sources (about 110 bytes per residue; 0 disables the cache).
    #[arg(long, default_value_t = scalefold_ingest::job::DEFAULT_TEMPLATE_CACHE_MIB)]
    pub template_cache_mib: usize,
    /// CPU threads for parse + featurize (0: all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Object-store requests in flight.
    #[arg(long, default_value_t = 32)]
    pub io_concurrency: usize,
    /// Close shards at about this many bytes.
    #[arg(long, default_value_t = 256 << 20)]
    pub shard_bytes: u64,
    /// Close row groups at about this many bytes.
    #[arg(long, default_value_t = 4 << 20)]
    pub row_group_bytes: usize,
    /// zstd level of the shards (default: the storage crate's).
    #[arg(long, default_value_t = scalefold_storage::WriterOptions::default().zstd_level)]
    pub zstd_level: i32,
    /// Also write the JSON report to this local file (it is always saved in the dataset
    /// under `_reports/`).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// No progress bar, no summary (the exit status still tells failures).
    #[arg(long)]
    pub quiet: bool,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl IngestArgs {
    /// The job configuration these arguments describe.
    pub fn config(&self) -> IngestConfig {
        IngestConfig {
            structures: self.structures.clone(),
            alignments: self.alignments.clone(),
            out: self.out.clone(),
            clusters: self.clusters.clone(),
            duplicate_chains: self.duplicate_chains.clone(),
            alignment_index: self.alignment_index.clone(),
            worker: self.worker,
            workers: self.workers,
            writers: self.writers,
            filters: Filters {
                max_resolution: self.max_resolution,
                min_date: self.min_date.clone(),
                max_date: self.max_date.clone(),
                min_length: self.min_length,
                max_single_residue_fraction: self.max_single_residue_fraction,
                max_unknown_fraction: self.max_unknown_fraction,
            },
            max_templates: self.max_templates,
            template_cache_mib: self.template_cache_mib,
            threads: self.threads,
            io_concurrency: self.io_concurrency,
            shard_bytes: self.shard_bytes,
            row_group_bytes: self.row_group_bytes,
            zstd_level: self.zstd_level,
            ..IngestConfig::default()
        }
    }
}

/// Runs the job with the chosen progress display; returns the report.
pub fn run_job(
    config: &IngestConfig,
    quiet: bool,
    log_format: LogFormat,
) -> anyhow::Result<IngestReport> {
    if log_format == LogFormat::Json {
        let _ = tracing_subscriber::fmt()
            .json()
            .with_writer(std::io::stderr)
            .with_max_level(tracing::Level::INFO)
            .try_init();
    }
    let bar = if quiet || log_format == LogFormat::Json {
        indicatif::ProgressBar::hidden()
    } else {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} files  {per_sec}  ETA {eta}  {msg}",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        bar
    };
    let started = std::time::Instant::now();
    let on_progress = |p: &Progress| {
        bar.set_length(p.total as u64);
        bar.set_position(p.done as u64);
        let seconds = started.elapsed().as_secs_f64().max(1e-9);
        bar.set_message(format!(
            "{} chains ({:.0}/s, {:.1} MB/s)  {} failed  {} filtered",
            p.chains_written,
            p.chains_written as f64 / seconds,
            p.bytes_read as f64 / 1e6 / seconds,
            p.failed,
            p.filtered
        ));
    };
    let report = super::dataset::runtime()?.block_on(ingest(config, &on_progress))?;
    bar.finish_and_clear();
    Ok(report)
}

/// Runs `scalefold ingest`.
pub fn run(args: IngestArgs) -> anyhow::Result<()> {
    let report = run_job(&args.config(), args.quiet, args.log_format)?;
    if let Some(path) = &args.report {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("cannot write the report to {}", path.display()))?;
    }
    if args.log_format == LogFormat::Json {
        eprintln!("{}", serde_json::to_string(&report)?);
    } else if !args.quiet {
        print!("{}", report.summary());
        if args.workers > 1 {
            println!(
                "  worker {} done; once every worker is done: scalefold commit {}",
                args.worker, args.out
            );
        }
    }
    let failed = report.failed();
    if failed > 0 {
        anyhow::bail!(
            "{failed} input(s) failed; the report is in {}/_reports/ (the job wrote everything else)",
            args.out.trim_end_matches('/')
        );
    }
    Ok(())
}
