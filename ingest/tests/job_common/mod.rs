//! Helpers shared by the ingest job tests: small synthetic corpora and dataset contents.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

use futures::TryStreamExt;
use scalefold_ingest::job::{IngestConfig, IngestReport, ingest};
use scalefold_ingest::schema::{ChainRow, batch_to_rows};
use scalefold_ingest::synth::{SynthConfig, write_corpus};
use scalefold_storage::Dataset;

/// A small corpus config (fast in debug builds).
pub fn small_corpus(chains: usize, seed: u64) -> SynthConfig {
    SynthConfig {
        chains,
        seed,
        min_length: 20,
        max_length: 80,
        min_msa_depth: 4,
        max_msa_depth: 40,
        gzip_fraction: 0.3,
    }
}

/// Writes a corpus under `dir` and returns the ingest config reading it into `dir/ds`.
pub fn corpus_and_config(dir: &Path, synth: &SynthConfig) -> IngestConfig {
    write_corpus(&dir.join("corpus"), synth).unwrap();
    IngestConfig {
        structures: dir.join("corpus/mmcif").display().to_string(),
        alignments: dir.join("corpus/alignments").display().to_string(),
        out: dir.join("ds").display().to_string(),
        clusters: Some(dir.join("corpus/clusters.txt").display().to_string()),
        threads: 2,
        ..IngestConfig::default()
    }
}

/// Runs the job to its end.
pub fn run(config: &IngestConfig) -> IngestReport {
    runtime().block_on(ingest(config, &|_| {})).unwrap()
}

/// A tokio runtime for a test.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Every row of a committed dataset.
pub fn rows(url: &str) -> Vec<ChainRow> {
    runtime().block_on(async {
        let dataset = Dataset::open(url).await.unwrap();
        let batches: Vec<_> = dataset.stream(None).try_collect().await.unwrap();
        batches
            .iter()
            .flat_map(|b| batch_to_rows(b).unwrap())
            .collect()
    })
}

/// A dataset's content: per source key, its (chain id, features checksum) pairs, sorted.
pub fn content(url: &str) -> BTreeMap<String, Vec<(String, u64)>> {
    let mut out: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
    for row in rows(url) {
        out.entry(row.source_key.clone())
            .or_default()
            .push((row.record.chain_id.clone(), row.features_checksum()));
    }
    out.values_mut().for_each(|v| v.sort());
    out
}
