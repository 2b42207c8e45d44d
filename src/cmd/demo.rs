//! `scalefold demo`: the whole data path on an embedded default, on a fresh machine:
//! a synthetic corpus into a local folder, ingested into a local dataset, then the
//! `inspect` summary. Re-running it reuses what is there (the ingest resumes).

use std::path::PathBuf;

use clap::Args;
use scalefold_ingest::job::IngestConfig;
use scalefold_ingest::synth::{CorpusSummary, SynthConfig, write_corpus};

use super::dataset::InspectArgs;
use super::ingest::LogFormat;

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
}

/// Runs `scalefold demo`.
pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let corpus = args.dir.join("corpus");
    let dataset = args.dir.join("dataset");
    let synth = SynthConfig {
        chains: args.chains,
        seed: args.seed,
        ..SynthConfig::default()
    };
    let existing: Option<CorpusSummary> = std::fs::read(corpus.join("synth.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    if existing.is_some_and(|s| s.config == synth) {
        println!("1/3 corpus: reusing {}", corpus.display());
    } else {
        let s = write_corpus(&corpus, &synth)?;
        println!(
            "1/3 corpus: wrote {} chains in {} mmCIF entries with their alignments ({:.1} MB) to {}",
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
    let report = super::ingest::run_job(&config, false, LogFormat::Text)?;
    println!("2/3 ingest:");
    print!("{}", report.summary());
    anyhow::ensure!(report.failed() == 0, "the demo corpus failed to ingest");
    println!("3/3 inspect:");
    super::dataset::inspect(InspectArgs {
        dataset: dataset.display().to_string(),
        json: false,
        shards: false,
    })
}
