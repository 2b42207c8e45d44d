//! Training and validation data: a dataset written by `scalefold ingest`
//! streamed through the generic loader with the AlphaFold transform (row →
//! `ChainRecord` → `featurize::make_sample`).
//!
//! Each sample's randomness (crop, templates, MSA sampling, masking) comes from
//! the seed the loader's plan gives its position, so the same run seed gives the
//! same samples in the same plan positions on any machine, and a resumed loader
//! continues the plan where the checkpoint left it.

use std::sync::Arc;

use arrow::array::AsArray;
use arrow::datatypes::UInt32Type;

use scalefold_featurize::{Sample, SampleConfig, make_sample};
use scalefold_ingest::schema::batch_to_rows;
use scalefold_loader::{
    DatasetSource, Delivery, Loader, LoaderConfig, LoaderState, Plan, PlanConfig, RowGroupSource,
    RowRef, Sampling, TransformError, compute_weights,
};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainerError};

/// How the training plan draws chains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SamplingMode {
    /// Every chain once per epoch, block-shuffled.
    Shuffle,
    /// With replacement, chain `i` with probability ∝ `chain_weight(L_i, cluster_size_i)`
    /// (the AlphaFold2 recipe, supplement 1.2.5); an epoch is as many draws as chains.
    ClusterWeighted,
}

/// The AlphaFold2 sampling weight of a chain of `length` residues in a cluster of
/// `cluster_size` chains: `max(min(L, 512), 256) / 512 / cluster_size`.
pub fn chain_weight(length: usize, cluster_size: u32) -> f64 {
    length.clamp(256, 512) as f64 / 512.0 / f64::from(cluster_size.max(1))
}

/// Loader settings of a training run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Ready-first window W: a sample may be overtaken by at most W − 1 later
    /// ones (1: strict plan order, needed for bit-identical resumes).
    pub window: usize,
    /// Transform threads (0: one per core).
    pub workers: usize,
    /// Row groups per shuffle block of the plan (0: one uniform permutation).
    pub shuffle_block_row_groups: usize,
    /// Bytes of row groups fetched ahead, in MiB.
    pub prefetch_mib: u64,
    /// Shuffle, or AlphaFold's length- and cluster-weighted draws.
    pub sampling: SamplingMode,
}

impl DataConfig {
    /// Ready-first with W = 8 on every core.
    pub fn standard() -> Self {
        Self {
            window: 8,
            workers: 0,
            shuffle_block_row_groups: 4,
            prefetch_mib: 256,
            sampling: SamplingMode::Shuffle,
        }
    }

    /// Checks every field's range.
    pub fn validate(&self) -> Result<()> {
        if self.window == 0 {
            return Err(TrainerError::Config {
                field: "data.window",
                detail: "0; expected at least 1".into(),
            });
        }
        Ok(())
    }
}

/// One featurized chain as the loader delivers it.
#[derive(Debug, Clone)]
pub struct ChainSample {
    /// `source_key/chain_id` of the dataset row.
    pub chain: String,
    /// The fixed-shape sample.
    pub sample: Sample,
}

/// The AlphaFold transform: decodes row `row.index` of its row group into a
/// `ChainRecord` and featurizes it with `config` and the plan's `seed`.
pub fn featurize_row(
    row: RowRef<'_>,
    seed: u64,
    config: &SampleConfig,
) -> std::result::Result<ChainSample, TransformError> {
    let mut rows = batch_to_rows(&row.batch.slice(row.index, 1))?;
    let chain_row = rows
        .pop()
        .ok_or_else(|| format!("row {} decoded to nothing", row.row))?;
    let sample = make_sample(&chain_row.record, config, seed)?;
    Ok(ChainSample {
        chain: format!("{}/{}", chain_row.source_key, chain_row.record.chain_id),
        sample,
    })
}

fn io_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| TrainerError::Data(format!("cannot start an IO runtime: {e}")))
}

/// Opens the dataset at `url` (any address the storage crate reads).
pub fn open_source(url: &str) -> Result<DatasetSource> {
    io_runtime()?
        .block_on(DatasetSource::open(url, None))
        .map_err(|e| TrainerError::Data(format!("dataset {url}: {e}")))
}

/// [`chain_weight`] of every row of `source`, in global row order (reads only the
/// `sequence` and `cluster_size` columns).
pub fn chain_weights(source: &DatasetSource) -> Result<Vec<f64>> {
    let url = source.dataset().url().to_string();
    let projected = source
        .with_projection(Some(vec!["sequence".into(), "cluster_size".into()]))
        .map_err(|e| TrainerError::Data(format!("dataset {url}: {e}")))?;
    io_runtime()?
        .block_on(compute_weights(&projected, 8, |batch, i| {
            let length = batch
                .column_by_name("sequence")
                .and_then(|c| c.as_string_opt::<i32>())
                .map_or(0, |c| c.value(i).len());
            let cluster = batch
                .column_by_name("cluster_size")
                .and_then(|c| c.as_primitive_opt::<UInt32Type>())
                .map_or(1, |c| c.value(i));
            chain_weight(length, cluster)
        }))
        .map_err(|e| TrainerError::Data(format!("dataset {url}: sampling weights: {e}")))
}

/// A loader over `source` with the AlphaFold transform, for rank 0 of 1.
///
/// `epochs: None` streams forever (training); `resume` continues from a saved state.
pub fn alphafold_loader(
    source: &DatasetSource,
    sample: &SampleConfig,
    data: &DataConfig,
    seed: u64,
    epochs: Option<u64>,
    resume: Option<LoaderState>,
) -> Result<Loader<ChainSample>> {
    let rows: Vec<u64> = source.row_groups().iter().map(|g| g.rows).collect();
    let sampling = match data.sampling {
        SamplingMode::Shuffle => Sampling::Shuffle {
            block_row_groups: data.shuffle_block_row_groups,
        },
        SamplingMode::ClusterWeighted => Sampling::Weighted {
            weights: chain_weights(source)?.into(),
            samples_per_epoch: rows.iter().sum(),
        },
    };
    let plan = Plan::new(
        PlanConfig {
            seed,
            rank: 0,
            world_size: 1,
            batch_size: 1,
            sampling,
        },
        &rows,
    )
    .map_err(|e| TrainerError::Data(format!("plan over {}: {e}", source.dataset().url())))?;
    let transform_config = sample.clone();
    let config = LoaderConfig {
        window: data.window,
        workers: data.workers,
        prefetch_bytes: data.prefetch_mib << 20,
        epochs,
        delivery: Delivery::ReadyFirst,
        resume,
        ..LoaderConfig::default()
    };
    Loader::new(
        Arc::new(source.clone()),
        plan,
        move |row: RowRef<'_>, seed: u64| featurize_row(row, seed, &transform_config),
        config,
    )
    .map_err(|e| TrainerError::Data(format!("loader over {}: {e}", source.dataset().url())))
}

/// Every chain of the dataset at `url` once, featurized with a fixed seed in
/// plan order (the validation set), at most `limit` chains (0: all).
pub fn load_all(
    url: &str,
    sample: &SampleConfig,
    seed: u64,
    limit: usize,
) -> Result<Vec<ChainSample>> {
    let source = open_source(url)?;
    let strict = DataConfig {
        window: 1,
        ..DataConfig::standard()
    };
    let loader = alphafold_loader(&source, sample, &strict, seed, Some(1), None)?;
    let mut chains = Vec::new();
    for batch in loader {
        let batch = batch.map_err(|e| TrainerError::Data(format!("dataset {url}: {e}")))?;
        for fault in &batch.faults {
            tracing::warn!(row = fault.row, kind = ?fault.kind, "validation row skipped");
        }
        chains.extend(batch.samples);
        if limit > 0 && chains.len() >= limit {
            chains.truncate(limit);
            break;
        }
    }
    if chains.is_empty() {
        return Err(TrainerError::Data(format!(
            "dataset {url} gave no usable chain"
        )));
    }
    Ok(chains)
}
