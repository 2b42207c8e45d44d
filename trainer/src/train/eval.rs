//! Evaluation: lDDT-Cα of a checkpoint's weight average on a validation set,
//! written as `eval.json` beside the checkpoint; a watch mode evaluates each new
//! checkpoint of a training folder until the run's `done` marker appears.
//!
//! Runs in its own process (`scalefold eval`), so training never waits for it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use scalefold_featurize::Sample;
use serde::{Deserialize, Serialize};

use super::checkpoint::{Checkpoint, list_checkpoints, write_atomic};
use super::data::ChainSample;
use super::model::TrainModel;
use super::run::DONE_FILE;
use crate::backend::Backend;
use crate::error::{Result, TrainerError};
use crate::layers::ParamTable;
use crate::structure::heads::lddt;

/// The evaluation file written into each checkpoint folder.
pub const EVAL_FILE: &str = "eval.json";

/// One validation chain's scores.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChainScore {
    /// `source_key/chain_id`.
    pub chain: String,
    /// Mean per-residue lDDT-Cα over resolved residues, in [0, 1].
    pub lddt_ca: f64,
    /// Residues scored (real residues of the crop with a resolved Cα).
    pub residues: usize,
    /// Mean predicted lDDT over the real residues, 0..100.
    pub plddt: f64,
    /// The weighted total loss against the truth.
    pub loss: f64,
}

/// The evaluation of one checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// The checkpoint folder.
    pub checkpoint: PathBuf,
    /// Its training step.
    pub step: u64,
    /// Weights evaluated (`ema`: the weight average).
    pub weights: String,
    /// Extra recycling iterations used.
    pub recycles: usize,
    /// Mean of the chains' lDDT-Cα.
    pub mean_lddt_ca: f64,
    /// Mean of the chains' losses.
    pub mean_loss: f64,
    /// Every chain.
    pub chains: Vec<ChainScore>,
    /// Wall seconds of the evaluation.
    pub seconds: f64,
}

/// lDDT-Cα of `atom14` predictions against `sample`'s truth: the mean
/// per-residue lDDT over real residues with a resolved Cα, and their count
/// (`None` when no residue qualifies).
pub fn lddt_ca(sample: &Sample, atom14: &[[[f32; 3]; 14]]) -> Result<Option<(f64, usize)>> {
    let n = sample.seq_mask.len();
    if atom14.len() != n {
        return Err(TrainerError::Shape {
            op: "lddt_ca",
            detail: format!("{} predicted residues for a crop of {n}", atom14.len()),
        });
    }
    const CA37: usize = 1;
    const CA14: usize = 1;
    let predicted: Vec<[f64; 3]> = atom14.iter().map(|r| r[CA14].map(f64::from)).collect();
    let truth: Vec<[f64; 3]> = (0..n)
        .map(|i| {
            let at = (i * 37 + CA37) * 3;
            [0, 1, 2].map(|k| f64::from(sample.all_atom_positions[at + k]))
        })
        .collect();
    let mask: Vec<f64> = (0..n)
        .map(|i| f64::from(sample.seq_mask[i] * sample.all_atom_mask[i * 37 + CA37]))
        .collect();
    let per_residue = lddt(&predicted, &truth, &mask)?;
    let count = mask.iter().filter(|&&m| m > 0.0).count();
    if count == 0 {
        return Ok(None);
    }
    let sum: f64 = per_residue.iter().zip(&mask).map(|(l, m)| l * m).sum();
    Ok(Some((sum / mask.iter().sum::<f64>(), count)))
}

/// Evaluates the weight average of `ckpt` on `chains` (the model's weights are
/// overwritten).
pub fn evaluate<B: Backend, M: TrainModel<B>>(
    be: &mut B,
    model: &mut M,
    ckpt: &Checkpoint,
    chains: &[ChainSample],
    recycles: usize,
) -> Result<EvalReport> {
    let started = Instant::now();
    let table: ParamTable = model.param_table().clone();
    ckpt.load_ema_weights(be, &table)?;
    let mut scores = Vec::with_capacity(chains.len());
    for chain in chains {
        let prediction = model.predict(be, &chain.sample, recycles)?;
        let Some((lddt_ca, residues)) = lddt_ca(&chain.sample, &prediction.atom14)? else {
            continue;
        };
        let real = chain
            .sample
            .seq_mask
            .iter()
            .filter(|&&m| m > 0.0)
            .count()
            .max(1);
        let plddt = prediction
            .plddt
            .iter()
            .zip(&chain.sample.seq_mask)
            .map(|(p, m)| f64::from(p * m))
            .sum::<f64>()
            / real as f64;
        scores.push(ChainScore {
            chain: chain.chain.clone(),
            lddt_ca,
            residues,
            plddt,
            loss: prediction.losses.total,
        });
    }
    let mean = |f: fn(&ChainScore) -> f64| {
        if scores.is_empty() {
            f64::NAN
        } else {
            scores.iter().map(f).sum::<f64>() / scores.len() as f64
        }
    };
    Ok(EvalReport {
        checkpoint: ckpt.dir.clone(),
        step: ckpt.meta.step,
        weights: "ema".into(),
        recycles,
        mean_lddt_ca: mean(|s| s.lddt_ca),
        mean_loss: mean(|s| s.loss),
        chains: scores,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Writes `report` as `eval.json` into its checkpoint folder (atomically).
pub fn write_report(report: &EvalReport) -> Result<PathBuf> {
    let path = report.checkpoint.join(EVAL_FILE);
    let json = serde_json::to_vec_pretty(report).map_err(|e| TrainerError::Checkpoint {
        path: path.display().to_string(),
        detail: e.to_string(),
    })?;
    write_atomic(&path, &json)?;
    Ok(path)
}

/// Checkpoints of `root` without an `eval.json`, oldest first.
pub fn pending_checkpoints(root: &Path) -> Result<Vec<PathBuf>> {
    Ok(list_checkpoints(root)?
        .into_iter()
        .map(|(_, dir)| dir)
        .filter(|dir| !dir.join(EVAL_FILE).exists())
        .collect())
}

/// Evaluates every checkpoint of `root` that has no `eval.json` yet; with
/// `watch`, keeps looking every `poll` until the training's `done` marker is
/// there and nothing is left, or until `keep_watching` says no (e.g. the
/// training process is gone without finishing). A checkpoint deleted while it
/// is read (the trainer keeps only the newest few) is passed over. `report` is
/// called with each result after it is written.
pub fn evaluate_folder<B: Backend, M: TrainModel<B>>(
    be: &mut B,
    model: &mut M,
    root: &Path,
    chains: &[ChainSample],
    recycles: usize,
    watch: bool,
    poll: Duration,
    keep_watching: &mut dyn FnMut() -> bool,
    report: &mut dyn FnMut(&EvalReport),
) -> Result<Vec<EvalReport>> {
    let mut done_reports = Vec::new();
    let mut last_pass = false;
    loop {
        // Read `done` first: checkpoints listed after it are all there will be.
        let finished = root.join(DONE_FILE).exists();
        let pending = pending_checkpoints(root)?;
        for dir in &pending {
            let ckpt = match Checkpoint::load(dir) {
                Ok(c) => c,
                Err(_) if !dir.exists() => continue,
                Err(e) => return Err(e),
            };
            let result = evaluate(be, model, &ckpt, chains, recycles)?;
            if !dir.exists() {
                continue;
            }
            write_report(&result)?;
            report(&result);
            done_reports.push(result);
        }
        if !watch || last_pass || (finished && pending.is_empty()) {
            return Ok(done_reports);
        }
        if pending.is_empty() {
            if keep_watching() {
                std::thread::sleep(poll);
            } else {
                // One more look: a checkpoint may have landed since the listing.
                last_pass = true;
            }
        }
    }
}
