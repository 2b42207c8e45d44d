//! `scalefold eval`: lDDT-Cα of each checkpoint's weight average on a
//! validation dataset, written as `eval.json` beside the checkpoint; `--watch`
//! keeps evaluating new checkpoints until the training writes its `done` marker.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use scalefold_trainer::Backend;
use scalefold_trainer::backend::cpu::CpuBackend;
use scalefold_trainer::backend::cuda::CudaBackend;
use scalefold_trainer::train::alphafold::build_alphafold;
use scalefold_trainer::train::checkpoint::{Checkpoint, list_checkpoints};
use scalefold_trainer::train::config::TrainConfig;
use scalefold_trainer::train::data::load_all;
use scalefold_trainer::train::eval::{EvalReport, evaluate_folder};

use super::train::Device;

/// Arguments of `scalefold eval`.
#[derive(Args, Clone)]
pub struct EvalArgs {
    /// The validation dataset (a path or an object-store address).
    #[arg(long)]
    pub data: String,
    /// The training output folder holding `ckpt-*` checkpoints.
    #[arg(long)]
    pub checkpoints: PathBuf,
    /// Keep evaluating new checkpoints until the training's `done` marker appears.
    #[arg(long)]
    pub watch: bool,
    /// Where the model runs.
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: Device,
    /// Validation chains, at most (default: the config's eval.max_chains).
    #[arg(long)]
    pub max_chains: Option<usize>,
    /// With --watch: also stop once process PID (the training) has exited
    /// (checked through /proc; `scalefold train --eval-data` passes its own).
    #[arg(long, value_name = "PID")]
    pub stop_with_pid: Option<u32>,
}

/// Whether process `pid` still runs (Linux `/proc`; elsewhere assumed running).
fn process_alive(pid: u32) -> bool {
    let proc_root = std::path::Path::new("/proc");
    !proc_root.is_dir() || proc_root.join(pid.to_string()).exists()
}

/// Waits (in watch mode) for the first checkpoint, whose config builds the model.
fn first_checkpoint(args: &EvalArgs, poll: Duration) -> anyhow::Result<Option<Checkpoint>> {
    loop {
        if let Some((_, dir)) = list_checkpoints(&args.checkpoints)?.into_iter().next_back() {
            match Checkpoint::load(&dir) {
                Ok(c) => return Ok(Some(c)),
                // Removed by the trainer's retention between listing and reading.
                Err(_) if !dir.exists() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        let done = args
            .checkpoints
            .join(scalefold_trainer::train::run::DONE_FILE)
            .exists();
        if !args.watch || done {
            return Ok(None);
        }
        std::thread::sleep(poll);
    }
}

/// Evaluates on backend `be` and returns every report written.
fn eval_on<B: Backend>(
    mut be: B,
    cfg: &TrainConfig,
    args: &EvalArgs,
) -> anyhow::Result<Vec<EvalReport>> {
    let limit = args.max_chains.unwrap_or(cfg.eval.max_chains);
    let chains = load_all(&args.data, &cfg.sample, cfg.eval.seed, limit)?;
    let mut model = build_alphafold(&mut be, cfg)?;
    be.materialize()?;
    scalefold_trainer::train::model::TrainModel::init_weights(&model, &mut be, cfg.run.seed)?;
    let poll = Duration::from_secs_f64(cfg.eval.poll_seconds);
    let reports = evaluate_folder(
        &mut be,
        &mut model,
        &args.checkpoints,
        &chains,
        cfg.eval.recycles,
        args.watch,
        poll,
        &mut || args.stop_with_pid.is_none_or(process_alive),
        &mut |r| {
            println!(
                "step {:>8}: lDDT-Ca {:.4} over {} chains, loss {:.4} ({:.1} s) -> {}",
                r.step,
                r.mean_lddt_ca,
                r.chains.len(),
                r.mean_loss,
                r.seconds,
                r.checkpoint.join("eval.json").display()
            )
        },
    )?;
    Ok(reports)
}

/// Evaluates as `args` say; returns every report written.
pub fn eval_with(args: &EvalArgs) -> anyhow::Result<Vec<EvalReport>> {
    let poll = Duration::from_millis(500);
    let Some(first) = first_checkpoint(args, poll)? else {
        anyhow::bail!("no checkpoint in {}", args.checkpoints.display());
    };
    let cfg = TrainConfig::from_toml(
        &first.dir.display().to_string(),
        &first.meta.config_toml,
        &[],
    )
    .with_context(|| format!("the config stored in {}", first.dir.display()))?;
    match args.device {
        Device::Cpu => eval_on(CpuBackend::<f32>::new(), &cfg, args),
        Device::Cuda => {
            let be = CudaBackend::new(0).context(
                "--device cuda needs an NVIDIA GPU with its driver (none could be opened); use --device cpu",
            )?;
            eval_on(be, &cfg, args)
        }
    }
}

/// Runs `scalefold eval`.
pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let reports = eval_with(&args)?;
    if reports.is_empty() {
        println!(
            "every checkpoint in {} already has its eval.json",
            args.checkpoints.display()
        );
    }
    Ok(())
}
