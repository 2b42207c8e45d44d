//! `scalefold train`: trains AlphaFold2 on a dataset from any object store,
//! with checkpoints, resume, per-step metrics, a live display, the loss plot,
//! and optionally a separate `scalefold eval --watch` process.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::{Child, Command};

use anyhow::Context;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use scalefold_trainer::Backend;
use scalefold_trainer::backend::cpu::CpuBackend;
use scalefold_trainer::backend::cuda::CudaBackend;
use scalefold_trainer::model::AlphaFold;
use scalefold_trainer::train::alphafold::{GraphedAlphaFold, build_alphafold};
use scalefold_trainer::train::config::TrainConfig;
use scalefold_trainer::train::model::TrainModel;
use scalefold_trainer::train::run::{Event, RunOptions, RunSummary, train};

/// Where the model runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Device {
    /// The CPU reference backend (f32).
    Cpu,
    /// The CUDA backend (bf16 compute, f32 master weights) on GPU 0.
    Cuda,
}

/// Arguments of `scalefold train`.
#[derive(Args, Clone)]
pub struct TrainArgs {
    /// The training dataset (a path or an object-store address).
    #[arg(long)]
    pub data: String,
    /// A preset (tiny, initial_training, fine_tuning) or a TOML file.
    #[arg(long, default_value = "tiny")]
    pub config: String,
    /// Output folder: checkpoints, metrics.jsonl, loss.png.
    #[arg(long)]
    pub out: PathBuf,
    /// Where the model runs.
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: Device,
    /// Total steps (overrides run.steps).
    #[arg(long)]
    pub steps: Option<u64>,
    /// Continue from the output folder's latest checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Config overrides, `key.path=value` (repeatable), e.g. `--set optimizer.lr=5e-4`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// A validation dataset: a separate `scalefold eval --watch` process evaluates
    /// each checkpoint on it while training goes on.
    #[arg(long)]
    pub eval_data: Option<String>,
    /// Where the evaluation process runs.
    #[arg(long, value_enum, default_value = "cpu")]
    pub eval_device: Device,
    /// No progress display (metrics still go to metrics.jsonl).
    #[arg(long)]
    pub quiet: bool,
}

/// Reads the config with the command line's overrides (`--steps` last).
pub fn resolve_config(args: &TrainArgs) -> anyhow::Result<TrainConfig> {
    let mut overrides = args.overrides.clone();
    if let Some(steps) = args.steps {
        overrides.push(format!("run.steps={steps}"));
    }
    Ok(TrainConfig::load(&args.config, &overrides)?)
}

/// Starts `scalefold eval --watch` on the output folder as a child process.
fn spawn_eval(args: &TrainArgs, data: &str) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("cannot locate the scalefold executable")?;
    let device = match args.eval_device {
        Device::Cpu => "cpu",
        Device::Cuda => "cuda",
    };
    let log = args.out.join("eval.log");
    let log_file =
        std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    Command::new(exe)
        .args(["eval", "--data", data, "--checkpoints"])
        .arg(&args.out)
        .args(["--watch", "--device", device])
        .args(["--stop-with-pid", &std::process::id().to_string()])
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .spawn()
        .context("cannot start the evaluation process")
}

/// The live display: one updating bar on a terminal, plain lines otherwise.
struct Display {
    bar: Option<ProgressBar>,
    plain_every: u64,
    quiet: bool,
    recent: Vec<f64>,
}

impl Display {
    fn new(quiet: bool, log_every: u64) -> Self {
        Self {
            bar: None,
            plain_every: log_every.max(1),
            quiet,
            recent: Vec::new(),
        }
    }

    fn event(&mut self, event: Event<'_>) {
        if self.quiet {
            return;
        }
        match event {
            Event::Started {
                first,
                last,
                resumed_from,
            } => {
                if let Some(dir) = resumed_from {
                    eprintln!("resuming from {} at step {first}", dir.display());
                }
                if std::io::stderr().is_terminal() {
                    let bar = ProgressBar::new(last);
                    bar.set_position(first);
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{bar:30} {pos}/{len} {msg} [{elapsed_precise} < {eta_precise}]",
                        )
                        .expect("valid template"),
                    );
                    self.bar = Some(bar);
                }
            }
            Event::Step(r) => {
                if !r.skipped {
                    self.recent.push(r.loss);
                    if self.recent.len() > 20 {
                        self.recent.remove(0);
                    }
                }
                let mean = self.recent.iter().sum::<f64>() / self.recent.len().max(1) as f64;
                let fape = r.terms.get("fape").copied().unwrap_or(f64::NAN);
                let line = format!(
                    "loss {:.3} (mean20 {mean:.3}) fape {fape:.3} |g| {:.3} lr {:.2e} rec {} {:.2}s/step wait {:.0}ms{}",
                    r.loss,
                    r.grad_norm,
                    r.lr,
                    r.recycles,
                    r.step_seconds,
                    r.data_wait_seconds * 1e3,
                    if r.skipped { " SKIPPED" } else { "" }
                );
                match &self.bar {
                    Some(bar) => {
                        bar.set_position(r.step + 1);
                        bar.set_message(line);
                    }
                    None => {
                        if (r.step + 1) % self.plain_every == 0 || r.skipped {
                            eprintln!("step {:>6} {line}", r.step + 1);
                        }
                    }
                }
            }
            Event::Checkpoint(dir) => {
                let text = format!("checkpoint {}", dir.display());
                match &self.bar {
                    Some(bar) => bar.println(text),
                    None => eprintln!("{text}"),
                }
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}

/// Runs the loop on backend `be` with the model `wrap` makes of the declared AlphaFold.
fn train_on<B: Backend, M: TrainModel<B>>(
    mut be: B,
    cfg: &TrainConfig,
    args: &TrainArgs,
    wrap: impl FnOnce(AlphaFold) -> M,
) -> anyhow::Result<RunSummary> {
    let mut model = wrap(build_alphafold(&mut be, cfg)?);
    let opts = RunOptions {
        out: args.out.clone(),
        data_url: args.data.clone(),
        resume: args.resume,
    };
    let mut display = Display::new(args.quiet, cfg.run.log_every);
    let summary = train(&mut be, &mut model, cfg, &opts, &mut |e| display.event(e));
    display.finish();
    Ok(summary?)
}

/// Trains as `args` say and returns the run's summary (the demo prints it).
pub fn train_with(args: &TrainArgs) -> anyhow::Result<RunSummary> {
    let cfg = resolve_config(args)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let mut eval_child = match &args.eval_data {
        Some(data) => Some(spawn_eval(args, data)?),
        None => None,
    };
    let result = match args.device {
        Device::Cpu if cfg.run.cuda_graphs => Err(anyhow::anyhow!(
            "run.cuda_graphs = true needs --device cuda (CUDA graphs replay GPU work)"
        )),
        Device::Cpu => train_on(CpuBackend::<f32>::new(), &cfg, args, |m| m),
        Device::Cuda => {
            let be = CudaBackend::new(0).context(
                "--device cuda needs an NVIDIA GPU with its driver (none could be opened); use --device cpu",
            )?;
            if cfg.run.cuda_graphs {
                train_on(be, &cfg, args, GraphedAlphaFold::new)
            } else {
                train_on(be, &cfg, args, |m| m)
            }
        }
    };
    if let Some(child) = eval_child.as_mut() {
        if result.is_err() {
            // Without a `done` marker the watcher would wait forever.
            let _ = child.kill();
        }
        eprintln!(
            "evaluation continues in process {} (log: {})",
            child.id(),
            args.out.join("eval.log").display()
        );
    }
    result
}

/// Runs `scalefold train`.
pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let summary = train_with(&args)?;
    print_summary(&summary);
    Ok(())
}

/// Prints a run's summary.
pub fn print_summary(s: &RunSummary) {
    let loss = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.4}"));
    println!(
        "trained {} steps ({} in this run, {:.1} s, {} skipped): loss {} (first 10) -> {} (last 10)",
        s.steps,
        s.steps_this_run,
        s.seconds,
        s.skipped.len(),
        loss(s.first_loss),
        loss(s.last_loss)
    );
    println!("checkpoint: {}", s.checkpoint.display());
    println!("metrics:    {}", s.metrics.display());
    println!("loss plot:  {}", s.plot.display());
}
