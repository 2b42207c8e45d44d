//! `scalefold demo`: the whole system on an embedded default, on a fresh machine:
//! a synthetic corpus into a local folder, ingested into a local dataset, the
//! `inspect` summary, a small validation set made the same way, then the tiny
//! AlphaFold2 trained on the dataset through the streaming loader (CPU, or CUDA
//! with `--device cuda`), its checkpoints evaluated (lDDT-Cα of the weight
//! average on the validation set) and a summary. Re-running it reuses the corpora
//! and datasets (the ingest resumes) and trains afresh.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;

use clap::Args;
use scalefold_ingest::job::IngestConfig;
use scalefold_ingest::synth::{CorpusSummary, SynthConfig, write_corpus};

use super::dataset::InspectArgs;
use super::eval::{EvalArgs, eval_with};
use super::ingest::LogFormat;
use super::train::{Device, TrainArgs, print_summary, train_with};

/// Arguments of `scalefold demo`.
#[derive(Args)]
pub struct DemoArgs {
    /// Working folder: the corpus goes to DIR/corpus, the dataset to DIR/dataset.
    #[arg(long, default_value = "data/demo")]
    pub dir: PathBuf,
    /// Chains in the synthetic corpus.
    #[arg(long, default_value_t = 64)]
    pub chains: usize,
    /// Seed of the corpus.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Training steps of the tiny model.
    #[arg(long, default_value_t = 300)]
    pub steps: u64,
    /// Where the model trains and is evaluated.
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: Device,
    /// Training config: a preset or a TOML file.
    #[arg(long, default_value = "tiny")]
    pub config: String,
    /// Validation chains (a separate synthetic corpus).
    #[arg(long, default_value_t = 16)]
    pub val_chains: usize,
}

/// Writes (or reuses) the synthetic corpus `synth` in `corpus` and ingests it into
/// `dataset`; `label` prefixes the progress lines.
fn corpus_and_dataset(
    label: &str,
    corpus: &Path,
    dataset: &Path,
    synth: &SynthConfig,
    quiet: bool,
) -> anyhow::Result<()> {
    let existing: Option<CorpusSummary> = std::fs::read(corpus.join("synth.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    if existing.is_some_and(|s| s.config == *synth) {
        println!("{label} corpus: reusing {}", corpus.display());
    } else {
        let s = write_corpus(corpus, synth)?;
        println!(
            "{label} corpus: wrote {} chains in {} mmCIF entries with their alignments ({:.1} MB) to {}",
            s.chains,
            s.entries,
            s.bytes as f64 / 1e6,
            corpus.display()
        );
    }
    let config = IngestConfig {
        structures: corpus.join("mmcif").display().to_string(),
        alignments: corpus.join("alignments").display().to_string(),
        out: dataset.display().to_string(),
        clusters: Some(corpus.join("clusters.txt").display().to_string()),
        ..IngestConfig::default()
    };
    let report = super::ingest::run_job(&config, quiet, LogFormat::Text)?;
    println!("{label} ingest into {}:", dataset.display());
    print!("{}", report.summary());
    anyhow::ensure!(report.failed() == 0, "the demo corpus failed to ingest");
    Ok(())
}

/// Runs `scalefold demo`.
pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let dataset = args.dir.join("dataset");
    let synth = SynthConfig {
        chains: args.chains,
        seed: args.seed,
        ..SynthConfig::default()
    };
    corpus_and_dataset("1/5", &args.dir.join("corpus"), &dataset, &synth, false)?;
    println!("2/5 inspect:");
    super::dataset::inspect(InspectArgs {
        dataset: dataset.display().to_string(),
        json: false,
        shards: false,
    })?;
    let val = args.dir.join("validation");
    let val_synth = SynthConfig {
        chains: args.val_chains,
        seed: args.seed.wrapping_add(1_000_003),
        ..SynthConfig::default()
    };
    corpus_and_dataset(
        "3/5 validation",
        &args.dir.join("validation-corpus"),
        &val,
        &val_synth,
        true,
    )?;

    let run = args.dir.join("run");
    if run.exists() {
        std::fs::remove_dir_all(&run)
            .with_context(|| format!("removing the previous demo run {}", run.display()))?;
    }
    println!(
        "4/5 train: config {}, {} steps on the {:?} -> {}",
        args.config,
        args.steps,
        args.device,
        run.display()
    );
    // The CUDA attention kernels take head widths of 8, 16 or 32; the tiny preset's
    // heads are narrower (quicker on the CPU), so on the GPU they are widened to 8.
    let overrides: Vec<String> = match args.device {
        Device::Cpu => Vec::new(),
        Device::Cuda => [
            "msa_head_dim",
            "extra_msa_head_dim",
            "tri_head_dim",
            "template_tri_head_dim",
            "template_attn_head_dim",
        ]
        .iter()
        .map(|k| format!("model.{k}=8"))
        .collect(),
    };
    let summary = train_with(&TrainArgs {
        data: dataset.display().to_string(),
        config: args.config.clone(),
        out: run.clone(),
        device: args.device,
        steps: Some(args.steps),
        resume: false,
        overrides,
        eval_data: None,
        eval_device: args.device,
        quiet: false,
    })?;
    println!("5/5 evaluate every checkpoint on the validation set:");
    let reports = eval_with(&EvalArgs {
        data: val.display().to_string(),
        checkpoints: run.clone(),
        watch: false,
        device: args.device,
        max_chains: None,
        stop_with_pid: None,
    })?;
    println!();
    println!("summary ({:.0} s in all)", started.elapsed().as_secs_f64());
    print_summary(&summary);
    if let (Some(first), Some(last)) = (reports.first(), reports.last()) {
        let trend = if reports.len() > 1 {
            format!("{:.4} at step {} -> ", first.mean_lddt_ca, first.step)
        } else {
            String::new()
        };
        println!(
            "lDDT-Ca of the weight average on {} validation chains: {trend}{:.4} at step {} ({})",
            last.chains.len(),
            last.mean_lddt_ca,
            last.step,
            last.checkpoint.join("eval.json").display()
        );
    }
    Ok(())
}
