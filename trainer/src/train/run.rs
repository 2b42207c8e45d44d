//! The training loop: samples from the loader, the recycling draw, the model's
//! forward and backward, the non-finite check, the scheduled Adam step, per-step
//! metrics, checkpoints, resume and the loss plot.
//!
//! Resume exactness: everything random in a step is a function of (seed, step)
//! or of the loader's plan, the checkpoint restores the weights, both Adam
//! moments, the weight average, the optimizer's step count and the loader's
//! state, so on the CPU (deterministic kernels) with a strict loader window
//! (`data.window = 1`) a resumed run is bit-identical to an uninterrupted one.
//! With W > 1 the resumed loader delivers the same remaining samples, possibly
//! in another order.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::checkpoint::{
    CHECKPOINT_FORMAT, Checkpoint, CheckpointMeta, RunHistory, latest_checkpoint, list_checkpoints,
    save_checkpoint,
};
use super::config::TrainConfig;
use super::data::{alphafold_loader, open_source};
use super::model::{StepLosses, TrainModel};
use super::plot::write_loss_png;
use super::schedule::{dropout_seed, recycles_for_step};
use crate::backend::Backend;
use crate::error::{Result, TrainerError};
use crate::optim::Optimizer;

/// The per-step metrics file under the output folder.
pub const METRICS_FILE: &str = "metrics.jsonl";
/// The loss plot under the output folder.
pub const PLOT_FILE: &str = "loss.png";
/// The marker written when the run has finished all its steps.
pub const DONE_FILE: &str = "done";

/// Where and how to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Output folder: checkpoints, metrics, plot, `done`.
    pub out: PathBuf,
    /// The training dataset's address.
    pub data_url: String,
    /// Continue from the output folder's `latest` checkpoint.
    pub resume: bool,
}

/// One line of `metrics.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// 0-based step.
    pub step: u64,
    /// `source_key/chain_id` of the sample.
    pub chain: String,
    /// Weighted total loss.
    pub loss: f64,
    /// Every loss term.
    pub terms: std::collections::BTreeMap<String, f64>,
    /// Global gradient norm before clipping.
    pub grad_norm: f32,
    /// Learning rate of the step.
    pub lr: f32,
    /// Extra recycling iterations run.
    pub recycles: usize,
    /// The update was skipped (non-finite loss or gradient).
    pub skipped: bool,
    /// Seconds of the step (forward, backward, update), data wait excluded.
    pub step_seconds: f64,
    /// Seconds spent waiting for the sample.
    pub data_wait_seconds: f64,
    /// Seconds of the step in the model's host (CPU) part, inside `step_seconds`.
    #[serde(default)]
    pub host_seconds: f64,
    /// Samples per second over the whole step including the wait.
    pub samples_per_second: f64,
}

/// What the loop reports as it goes (for a live display).
#[derive(Debug)]
pub enum Event<'a> {
    /// The loop is about to run steps `first..last`.
    Started {
        /// First step to run.
        first: u64,
        /// One past the last step.
        last: u64,
        /// The checkpoint resumed from.
        resumed_from: Option<&'a Path>,
    },
    /// A step finished.
    Step(&'a StepRecord),
    /// A checkpoint was written.
    Checkpoint(&'a Path),
}

/// The outcome of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// Steps completed in total (including before a resume).
    pub steps: u64,
    /// Steps run by this call.
    pub steps_this_run: u64,
    /// Steps skipped over the whole run.
    pub skipped: Vec<u64>,
    /// Mean loss of the first steps (up to 10).
    pub first_loss: Option<f64>,
    /// Mean loss of the last steps (up to 10).
    pub last_loss: Option<f64>,
    /// The last checkpoint written.
    pub checkpoint: PathBuf,
    /// The loss plot.
    pub plot: PathBuf,
    /// The metrics file.
    pub metrics: PathBuf,
    /// Wall seconds of this call's steps.
    pub seconds: f64,
}

fn io_err(path: &Path, source: std::io::Error) -> TrainerError {
    TrainerError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Mean of the finite values among the first (or last) `n` losses.
fn mean_of(losses: impl Iterator<Item = Option<f64>>, n: usize) -> Option<f64> {
    let values: Vec<f64> = losses.flatten().filter(|v| v.is_finite()).take(n).collect();
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// Keeps the lines of `metrics.jsonl` of steps before `step` (a resumed run
/// rewrites what followed its checkpoint).
fn truncate_metrics(path: &Path, step: u64) -> Result<()> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(path, e)),
    };
    let mut kept = String::new();
    for line in std::io::BufReader::new(file).lines() {
        let line = line.map_err(|e| io_err(path, e))?;
        let record: StepRecord =
            serde_json::from_str(&line).map_err(|e| TrainerError::Checkpoint {
                path: path.display().to_string(),
                detail: format!("unreadable metrics line: {e}"),
            })?;
        if record.step < step {
            kept.push_str(&line);
            kept.push('\n');
        }
    }
    super::checkpoint::write_atomic(path, kept.as_bytes())
}

/// Checks that a checkpoint's config can be continued with `cfg`: everything but
/// the step count and the logging/checkpoint cadence must be equal.
fn check_resumable(ckpt: &Checkpoint, cfg: &TrainConfig) -> Result<()> {
    let saved =
        TrainConfig::from_toml(&ckpt.dir.display().to_string(), &ckpt.meta.config_toml, &[])?;
    let mismatch = |section: &str| TrainerError::Checkpoint {
        path: ckpt.dir.display().to_string(),
        detail: format!("was written with another `{section}` config; resume needs the same one"),
    };
    if saved.model != cfg.model {
        return Err(mismatch("model"));
    }
    if saved.sample != cfg.sample {
        return Err(mismatch("sample"));
    }
    if saved.optimizer != cfg.optimizer || saved.schedule != cfg.schedule {
        return Err(mismatch("optimizer/schedule"));
    }
    if saved.data != cfg.data {
        return Err(mismatch("data"));
    }
    if saved.run.seed != cfg.run.seed || saved.run.max_extra_recycles != cfg.run.max_extra_recycles
    {
        return Err(mismatch("run.seed/run.max_extra_recycles"));
    }
    Ok(())
}

/// Trains `model` on backend `be` as `cfg` says. `model` must be declared but
/// not materialized: the loop declares the optimizer state, materializes,
/// initializes (or restores from the latest checkpoint with `opts.resume`),
/// then runs the remaining steps up to `cfg.run.steps`.
pub fn train<B: Backend, M: TrainModel<B>>(
    be: &mut B,
    model: &mut M,
    cfg: &TrainConfig,
    opts: &RunOptions,
    observe: &mut dyn FnMut(Event<'_>),
) -> Result<RunSummary> {
    cfg.validate()?;
    let out = &opts.out;
    std::fs::create_dir_all(out).map_err(|e| io_err(out, e))?;
    // The data first: a wrong address fails before any model memory is planned.
    let source = open_source(&opts.data_url)?;
    let mut optimizer = Optimizer::new(be, model.param_table(), cfg.optimizer)?;
    be.materialize()?;
    model.init_weights(be, cfg.run.seed)?;
    optimizer.init(be, model.param_table())?;

    let metrics_path = out.join(METRICS_FILE);
    let (start, mut history, loader_state, resumed_from) = if opts.resume {
        let dir = latest_checkpoint(out)?.ok_or_else(|| TrainerError::Checkpoint {
            path: out.display().to_string(),
            detail: "--resume was given but the folder holds no checkpoint".into(),
        })?;
        let ckpt = Checkpoint::load(&dir)?;
        check_resumable(&ckpt, cfg)?;
        ckpt.restore_training(be, model.param_table(), &mut optimizer)?;
        truncate_metrics(&metrics_path, ckpt.meta.step)?;
        let meta = ckpt.meta;
        (meta.step, meta.history, meta.loader_state, Some(dir))
    } else {
        if !list_checkpoints(out)?.is_empty() {
            return Err(TrainerError::Checkpoint {
                path: out.display().to_string(),
                detail: "the folder already holds checkpoints: pass --resume to continue, or \
                         choose another output folder"
                    .into(),
            });
        }
        if metrics_path.exists() {
            std::fs::remove_file(&metrics_path).map_err(|e| io_err(&metrics_path, e))?;
        }
        (0, RunHistory::default(), None, None)
    };
    let done = out.join(DONE_FILE);
    if done.exists() {
        std::fs::remove_file(&done).map_err(|e| io_err(&done, e))?;
    }
    let config_toml = cfg.to_toml()?;
    let mut metrics = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&metrics_path)
        .map_err(|e| io_err(&metrics_path, e))?;

    let mut loader = alphafold_loader(
        &source,
        &cfg.sample,
        &cfg.data,
        cfg.run.seed,
        None,
        loader_state,
    )?;
    let last = cfg.run.steps;
    observe(Event::Started {
        first: start,
        last,
        resumed_from: resumed_from.as_deref(),
    });
    let started = Instant::now();
    let mut checkpoint = resumed_from.clone().unwrap_or_default();
    let seed = cfg.run.seed;
    for step in start..last {
        let batch = loader
            .next_batch()
            .map_err(|e| TrainerError::Data(format!("dataset {}: {e}", opts.data_url)))?
            .ok_or_else(|| TrainerError::Data("the loader ended".into()))?;
        let waited = batch.waited.as_secs_f64();
        let Some(chain) = batch.samples.into_iter().next() else {
            return Err(TrainerError::Data(format!(
                "step {step}: every row of the batch failed to featurize: {:?}",
                batch.faults
            )));
        };
        let step_start = Instant::now();
        let recycles = recycles_for_step(seed, step, cfg.run.max_extra_recycles);
        let losses: StepLosses =
            model.train_step(be, &chain.sample, recycles, dropout_seed(seed, step))?;
        // The global norm before the update, to skip a non-finite step.
        be.grad_norm_sq(optimizer.state.norm_sq)?;
        let grad_norm = optimizer.last_grad_norm(be)?;
        let lr = cfg.schedule.lr(step, cfg.optimizer.lr);
        let skipped = !(losses.total.is_finite() && grad_norm.is_finite());
        if skipped {
            tracing::warn!(
                step,
                loss = losses.total,
                grad_norm,
                "non-finite step skipped"
            );
            history.skipped.push(step);
            history.losses.push(None);
        } else {
            // What `Optimizer::step_with_lr` does, minus the norm pass done above.
            optimizer.steps += 1;
            be.adam_ema_step(&optimizer.cfg.step(optimizer.steps, lr), &optimizer.state)?;
            history.losses.push(Some(losses.total));
        }
        be.sync()?;
        let step_seconds = step_start.elapsed().as_secs_f64();
        let record = StepRecord {
            step,
            chain: chain.chain,
            loss: losses.total,
            terms: losses.terms,
            grad_norm,
            lr,
            recycles,
            skipped,
            step_seconds,
            data_wait_seconds: waited,
            host_seconds: model.host_seconds(),
            samples_per_second: 1.0 / (step_seconds + waited).max(1e-9),
        };
        let mut line =
            serde_json::to_string(&record).map_err(|e| TrainerError::Data(e.to_string()))?;
        line.push('\n');
        metrics
            .write_all(line.as_bytes())
            .map_err(|e| io_err(&metrics_path, e))?;
        observe(Event::Step(&record));

        let completed = step + 1;
        let every = cfg.run.checkpoint_every;
        if completed == last || (every > 0 && completed % every == 0) {
            let meta = CheckpointMeta {
                format: CHECKPOINT_FORMAT,
                step: completed,
                seed,
                optimizer_steps: optimizer.steps,
                config_toml: config_toml.clone(),
                loader_state: Some(loader.state()),
                params: model
                    .param_table()
                    .entries
                    .iter()
                    .map(|e| (e.name.clone(), e.shape.clone()))
                    .collect(),
                history: history.clone(),
            };
            metrics.flush().map_err(|e| io_err(&metrics_path, e))?;
            checkpoint = save_checkpoint(
                out,
                be,
                model.param_table(),
                &optimizer,
                &meta,
                cfg.run.keep_checkpoints,
            )?;
            observe(Event::Checkpoint(&checkpoint));
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let plot = out.join(PLOT_FILE);
    write_loss_png(&plot, &history.losses, "TRAINING LOSS (WEIGHTED TOTAL)")?;
    super::checkpoint::write_atomic(&done, format!("{last}\n").as_bytes())?;
    let n = history.losses.len();
    Ok(RunSummary {
        steps: n as u64,
        steps_this_run: last.saturating_sub(start),
        skipped: history.skipped.clone(),
        first_loss: mean_of(history.losses.iter().copied(), 10),
        last_loss: mean_of(history.losses.iter().rev().copied(), 10),
        checkpoint,
        plot,
        metrics: metrics_path,
        seconds,
    })
}
