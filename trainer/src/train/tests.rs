//! Tests of the training loop, checkpoints, resume and evaluation with a small
//! real model (a two-layer per-residue Cα regressor with explicit backward on
//! the CPU backend), on a dataset made by the ingest job from a synthetic corpus.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use scalefold_featurize::Sample;

use super::checkpoint::{
    CHECKPOINT_FORMAT, Checkpoint, CheckpointMeta, GROUPS, RunHistory, latest_checkpoint,
    list_checkpoints, save_checkpoint,
};
use super::config::TrainConfig;
use super::data::load_all;
use super::eval::{EVAL_FILE, EvalReport, evaluate_folder, lddt_ca};
use super::model::{Prediction, StepLosses, TrainModel};
use super::run::{Event, METRICS_FILE, RunOptions, StepRecord, train};
use crate::backend::cpu::CpuBackend;
use crate::backend::{Activation, Backend, TensorId};
use crate::error::Result;
use crate::layers::{Builder, Linear, ParamTable};
use crate::optim::{Optimizer, OptimizerConfig};

/// Predicts each residue's Cα (Å / 10, relative to the crop's Cα centroid) from
/// its `target_feat` through Linear → ReLU → Linear; loss: masked mean squared error.
struct CaRegressor {
    params: ParamTable,
    l1: Linear,
    l2: Linear,
    n: usize,
    x: TensorId,
    h: TensorId,
    y: TensorId,
    dy: TensorId,
    dh: TensorId,
    /// Calls of `train_step` so far, and the call whose loss is made NaN.
    calls: usize,
    nan_at_call: Option<usize>,
}

const FEAT: usize = 22;
const HIDDEN: usize = 16;

impl CaRegressor {
    fn new<B: Backend>(be: &mut B, n: usize) -> Self {
        let mut params = ParamTable::default();
        let mut b = Builder::new(be, &mut params);
        let l1 = Linear::new(&mut b, "l1", FEAT, HIDDEN, true, Activation::Relu);
        let l2 = Linear::new(&mut b, "l2", HIDDEN, 3, true, Activation::None);
        let x = b.act("x", n * FEAT);
        let h = b.act("h", n * HIDDEN);
        let y = b.act("y", n * 3);
        let dy = b.act("dy", n * 3);
        let dh = b.act("dh", n * HIDDEN);
        Self {
            params,
            l1,
            l2,
            n,
            x,
            h,
            y,
            dy,
            dh,
            calls: 0,
            nan_at_call: None,
        }
    }

    /// Targets (Å/10 around the centroid) and mask of the sample's Cα atoms.
    fn targets(&self, sample: &Sample) -> (Vec<[f32; 3]>, Vec<f32>) {
        let mask: Vec<f32> = (0..self.n)
            .map(|i| sample.seq_mask[i] * sample.all_atom_mask[i * 37 + 1])
            .collect();
        let ca = |i: usize| -> [f32; 3] {
            [0, 1, 2].map(|k| sample.all_atom_positions[(i * 37 + 1) * 3 + k])
        };
        let count = mask.iter().sum::<f32>().max(1.0);
        let mut centre = [0f32; 3];
        for i in 0..self.n {
            for k in 0..3 {
                centre[k] += mask[i] * ca(i)[k] / count;
            }
        }
        let t = (0..self.n)
            .map(|i| [0, 1, 2].map(|k| (ca(i)[k] - centre[k]) / 10.0))
            .collect();
        (t, mask)
    }

    fn forward<B: Backend>(
        &self,
        be: &mut B,
        sample: &Sample,
    ) -> Result<(Vec<f32>, f64, Vec<f32>)> {
        be.write(self.x, &sample.target_feat)?;
        self.l1.forward(be, self.n, self.x, self.h)?;
        self.l2.forward(be, self.n, self.h, self.y)?;
        let y = be.read(self.y)?;
        let (t, mask) = self.targets(sample);
        let count = mask.iter().sum::<f32>().max(1.0);
        let mut loss = 0f64;
        let mut dy = vec![0f32; self.n * 3];
        for i in 0..self.n {
            for k in 0..3 {
                let e = y[i * 3 + k] - t[i][k];
                loss += f64::from(mask[i] * e * e / count);
                dy[i * 3 + k] = 2.0 * mask[i] * e / count;
            }
        }
        Ok((y, loss, dy))
    }
}

impl<B: Backend> TrainModel<B> for CaRegressor {
    fn param_table(&self) -> &ParamTable {
        &self.params
    }

    fn init_weights(&self, be: &mut B, seed: u64) -> Result<()> {
        self.params.init(be, seed, false)
    }

    fn train_step(
        &mut self,
        be: &mut B,
        sample: &Sample,
        _num_recycles: usize,
        _dropout_seed: u64,
    ) -> Result<StepLosses> {
        self.params.zero_grads(be)?;
        let (_, mut loss, mut dy) = self.forward(be, sample)?;
        if self.nan_at_call == Some(self.calls) {
            loss = f64::NAN;
            dy[0] = f32::NAN;
        }
        self.calls += 1;
        be.write(self.dy, &dy)?;
        self.l2
            .backward(be, self.n, self.h, self.y, self.dy, Some(self.dh), false)?;
        self.l1
            .backward(be, self.n, self.x, self.h, self.dh, None, false)?;
        Ok(StepLosses {
            total: loss,
            terms: BTreeMap::from([("mse".to_string(), loss)]),
        })
    }

    fn predict(&mut self, be: &mut B, sample: &Sample, _num_recycles: usize) -> Result<Prediction> {
        let (y, loss, _) = self.forward(be, sample)?;
        let atom14 = (0..self.n)
            .map(|i| {
                let mut r = [[0f32; 3]; 14];
                r[1] = [0, 1, 2].map(|k| y[i * 3 + k] * 10.0);
                r
            })
            .collect();
        Ok(Prediction {
            atom14,
            plddt: vec![50.0; self.n],
            losses: StepLosses {
                total: loss,
                terms: BTreeMap::new(),
            },
        })
    }
}

/// A dataset of 12 synthetic chains made by the ingest job, shared by the tests.
fn dataset() -> &'static str {
    static DATASET: OnceLock<(tempfile::TempDir, String)> = OnceLock::new();
    &DATASET
        .get_or_init(|| {
            use scalefold_ingest::job::{IngestConfig, ingest};
            use scalefold_ingest::synth::{SynthConfig, write_corpus};
            let dir = tempfile::tempdir().unwrap();
            let corpus = dir.path().join("corpus");
            let url = dir.path().join("ds").display().to_string();
            write_corpus(
                &corpus,
                &SynthConfig {
                    chains: 12,
                    seed: 3,
                    min_length: 12,
                    max_length: 30,
                    min_msa_depth: 4,
                    max_msa_depth: 20,
                    gzip_fraction: 0.0,
                },
            )
            .unwrap();
            let config = IngestConfig {
                structures: corpus.join("mmcif").display().to_string(),
                alignments: corpus.join("alignments").display().to_string(),
                out: url.clone(),
                clusters: Some(corpus.join("clusters.txt").display().to_string()),
                threads: 2,
                writers: 1,
                row_group_bytes: 1,
                ..IngestConfig::default()
            };
            let report = tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(ingest(&config, &|_| {}))
                .unwrap();
            assert_eq!(report.failed(), 0, "{}", report.summary());
            (dir, url)
        })
        .1
}

/// The tiny preset with strict loader order, 2 workers, `steps` steps,
/// checkpoints every 2 steps and a higher learning rate without warm-up.
fn tiny(steps: u64) -> TrainConfig {
    TrainConfig::load(
        "tiny",
        &[
            format!("run.steps={steps}"),
            "run.checkpoint_every=2".into(),
            "run.keep_checkpoints=0".into(),
            "data.window=1".into(),
            "data.workers=2".into(),
            "optimizer.lr=1e-2".into(),
            "optimizer.clip_norm=1.0".into(),
            "schedule.warmup_steps=2".into(),
        ],
    )
    .unwrap()
}

/// Trains a fresh regressor (or resumes) into `out`; returns the step records seen.
fn run_regressor(
    cfg: &TrainConfig,
    out: &Path,
    resume: bool,
    nan_at: Option<usize>,
) -> Vec<StepRecord> {
    run_model(cfg, out, resume, |be| {
        let mut model = CaRegressor::new(be, cfg.sample.crop_size);
        model.nan_at_call = nan_at;
        model
    })
}

/// Trains the model `build` declares (or resumes) into `out`; returns the step records seen.
fn run_model<M: TrainModel<CpuBackend<f32>>>(
    cfg: &TrainConfig,
    out: &Path,
    resume: bool,
    build: impl FnOnce(&mut CpuBackend<f32>) -> M,
) -> Vec<StepRecord> {
    let mut be = CpuBackend::<f32>::new();
    let mut model = build(&mut be);
    let opts = RunOptions {
        out: out.to_path_buf(),
        data_url: dataset().to_string(),
        resume,
    };
    let mut records = Vec::new();
    train(&mut be, &mut model, cfg, &opts, &mut |e| {
        if let Event::Step(r) = e {
            records.push(r.clone());
        }
    })
    .unwrap();
    records
}

/// The metrics lines without their timing fields (which differ run to run).
fn metrics_without_timing(out: &Path) -> Vec<StepRecord> {
    std::fs::read_to_string(out.join(METRICS_FILE))
        .unwrap()
        .lines()
        .map(|l| {
            let mut r: StepRecord = serde_json::from_str(l).unwrap();
            r.step_seconds = 0.0;
            r.data_wait_seconds = 0.0;
            r.host_seconds = 0.0;
            r.samples_per_second = 0.0;
            r
        })
        .collect()
}

/// Every tensor of a checkpoint, as bits.
fn checkpoint_bits(dir: &Path, names: &[String]) -> BTreeMap<String, Vec<u32>> {
    let ckpt = Checkpoint::load(dir).unwrap();
    let mut out = BTreeMap::new();
    for g in GROUPS {
        for n in names {
            let key = format!("{g}/{n}");
            let values = ckpt.tensor(&key).unwrap_or_else(|| panic!("{key}"));
            out.insert(key, values.iter().map(|v| v.to_bits()).collect());
        }
    }
    out
}

#[test]
fn resumed_run_is_bit_identical_to_an_uninterrupted_one() {
    let root = tempfile::tempdir().unwrap();
    let straight = root.path().join("straight");
    let split = root.path().join("split");
    let full = run_regressor(&tiny(8), &straight, false, None);
    assert_eq!(full.len(), 8);
    let first_half = run_regressor(&tiny(4), &split, false, None);
    assert_eq!(first_half.len(), 4);
    let second_half = run_regressor(&tiny(8), &split, true, None);
    assert_eq!(
        second_half.iter().map(|r| r.step).collect::<Vec<_>>(),
        [4, 5, 6, 7]
    );

    let names: Vec<String> = ["l1.w", "l1.b", "l2.w", "l2.b"].map(String::from).to_vec();
    let a = checkpoint_bits(&straight.join("ckpt-00000008"), &names);
    let b = checkpoint_bits(&split.join("ckpt-00000008"), &names);
    assert_eq!(
        a, b,
        "final weights, moments and averages differ bit for bit"
    );
    let (ma, mb) = (
        metrics_without_timing(&straight),
        metrics_without_timing(&split),
    );
    assert_eq!(ma.len(), 8);
    assert_eq!(ma, mb, "per-step metrics differ");
    // The run learns: the loss moves and every update changed the weights.
    let first = Checkpoint::load(&straight.join("ckpt-00000002")).unwrap();
    assert_ne!(
        first.tensor("params/l1.w"),
        Checkpoint::load(&straight.join("ckpt-00000008"))
            .unwrap()
            .tensor("params/l1.w")
    );
    let meta = Checkpoint::load(&split.join("ckpt-00000008")).unwrap().meta;
    assert_eq!(meta.optimizer_steps, 8);
    assert_eq!(meta.history.losses.len(), 8);
}

#[test]
fn alphafold_resumed_run_is_bit_identical_to_an_uninterrupted_one() {
    // The whole tiny AlphaFold (trunk on the CPU backend, host structure module,
    // recycling, dropout): 4 steps straight against 2 + resume + 2.
    let cfg = |steps: u64| {
        let mut c = tiny(steps);
        // A pair width of 5 and template width of 5 (smaller and quicker than the preset).
        c.model.c_z = 5;
        c.model.host.c_z = 5;
        c.model.c_t = 5;
        c
    };
    let build = |c: &TrainConfig| {
        let c = c.clone();
        move |be: &mut CpuBackend<f32>| super::alphafold::build_alphafold(be, &c).unwrap()
    };
    let root = tempfile::tempdir().unwrap();
    let (straight, split) = (root.path().join("straight"), root.path().join("split"));
    let full = run_model(&cfg(4), &straight, false, build(&cfg(4)));
    assert!(
        full.iter().all(|r| r.loss.is_finite() && !r.skipped),
        "{full:?}"
    );
    assert!(full.iter().any(|r| r.recycles > 0), "some step recycles");
    run_model(&cfg(2), &split, false, build(&cfg(2)));
    let resumed = run_model(&cfg(4), &split, true, build(&cfg(4)));
    assert_eq!(resumed.iter().map(|r| r.step).collect::<Vec<_>>(), [2, 3]);
    let names: Vec<String> = Checkpoint::load(&straight.join("ckpt-00000004"))
        .unwrap()
        .meta
        .params
        .iter()
        .map(|p| p.0.clone())
        .collect();
    assert!(names.len() > 50 && names.iter().any(|n| n.starts_with("host.")));
    let a = checkpoint_bits(&straight.join("ckpt-00000004"), &names);
    let b = checkpoint_bits(&split.join("ckpt-00000004"), &names);
    let differing: Vec<&String> = a.keys().filter(|k| a[*k] != b[*k]).collect();
    assert!(
        differing.is_empty(),
        "tensors differ after resume: {differing:?}"
    );
    assert_eq!(
        metrics_without_timing(&straight),
        metrics_without_timing(&split)
    );
}

#[test]
fn resume_continues_after_a_crash_past_the_checkpoint() {
    // Metrics lines written after the last checkpoint are dropped and rewritten.
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("run");
    run_regressor(&tiny(5), &out, false, None);
    // Steps 0..5 ran; checkpoints at 2, 4 and 5. Forget the last one: the run "crashed" after step 4.
    std::fs::remove_dir_all(out.join("ckpt-00000005")).unwrap();
    std::fs::write(out.join("latest"), "ckpt-00000004").unwrap();
    let resumed = run_regressor(&tiny(6), &out, true, None);
    assert_eq!(resumed.iter().map(|r| r.step).collect::<Vec<_>>(), [4, 5]);
    let steps: Vec<u64> = metrics_without_timing(&out)
        .iter()
        .map(|r| r.step)
        .collect();
    assert_eq!(steps, [0, 1, 2, 3, 4, 5]);
    // Without --resume an existing run is not overwritten.
    let mut be = CpuBackend::<f32>::new();
    let mut model = CaRegressor::new(&mut be, 16);
    let opts = RunOptions {
        out: out.clone(),
        data_url: dataset().to_string(),
        resume: false,
    };
    let err = train(&mut be, &mut model, &tiny(6), &opts, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("--resume"), "{err}");
    // A resume with another model seed-independent section is refused.
    let mut other = tiny(6);
    other.sample.crop_size = 20;
    let mut be = CpuBackend::<f32>::new();
    let mut model = CaRegressor::new(&mut be, 20);
    let opts = RunOptions {
        resume: true,
        ..opts
    };
    let err = train(&mut be, &mut model, &other, &opts, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("`sample`"), "{err}");
}

#[test]
fn non_finite_step_is_skipped_and_logged() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("run");
    let records = run_regressor(&tiny(4), &out, false, Some(1));
    assert_eq!(
        records.iter().map(|r| r.skipped).collect::<Vec<_>>(),
        [false, true, false, false]
    );
    assert!(!records[1].grad_norm.is_finite());
    let meta = Checkpoint::load(&out.join("ckpt-00000004")).unwrap().meta;
    assert_eq!(meta.optimizer_steps, 3);
    assert_eq!(meta.history.skipped, [1]);
    assert!(meta.history.losses[1].is_none());
    // Skipping left the weights finite and unchanged by that step.
    let w = Checkpoint::load(&out.join("ckpt-00000002")).unwrap();
    assert!(
        w.tensor("params/l1.w")
            .unwrap()
            .iter()
            .all(|v| v.is_finite())
    );
    assert!(out.join("loss.png").is_file());
    assert!(out.join("done").is_file());
}

#[test]
fn checkpoints_round_trip_every_tensor_and_keep_the_newest() {
    let root = tempfile::tempdir().unwrap();
    let mut be = CpuBackend::<f32>::new();
    let model = CaRegressor::new(&mut be, 4);
    let cfg = OptimizerConfig::af2();
    let mut opt = Optimizer::new(&mut be, &model.params, cfg).unwrap();
    be.materialize().unwrap();
    model.params.init(&mut be, 9, true).unwrap();
    opt.init(&mut be, &model.params).unwrap();
    for step in 0..3 {
        model
            .params
            .fill_grads(&mut be, 0.1 * (step + 1) as f32)
            .unwrap();
        opt.step(&mut be).unwrap();
    }
    let names: Vec<(String, Vec<usize>)> = model
        .params
        .entries
        .iter()
        .map(|e| (e.name.clone(), e.shape.clone()))
        .collect();
    let meta = |step| CheckpointMeta {
        format: CHECKPOINT_FORMAT,
        step,
        seed: 5,
        optimizer_steps: opt.steps,
        config_toml: "x = 1".into(),
        loader_state: None,
        params: names.clone(),
        history: RunHistory {
            losses: vec![Some(1.0), None],
            skipped: vec![1],
        },
    };
    for step in [10, 20, 30] {
        save_checkpoint(root.path(), &mut be, &model.params, &opt, &meta(step), 2).unwrap();
    }
    let kept: Vec<u64> = list_checkpoints(root.path())
        .unwrap()
        .iter()
        .map(|c| c.0)
        .collect();
    assert_eq!(kept, [20, 30]);
    let latest = latest_checkpoint(root.path()).unwrap().unwrap();
    assert!(latest.ends_with("ckpt-00000030"));
    let ckpt = Checkpoint::load(&latest).unwrap();
    assert_eq!(ckpt.meta, meta(30));

    // Into a fresh backend: every block equal bit for bit.
    let mut be2 = CpuBackend::<f32>::new();
    let model2 = CaRegressor::new(&mut be2, 4);
    let mut opt2 = Optimizer::new(&mut be2, &model2.params, cfg).unwrap();
    be2.materialize().unwrap();
    ckpt.restore_training(&mut be2, &model2.params, &mut opt2)
        .unwrap();
    assert_eq!(opt2.steps, 3);
    let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
    for (a, b) in [
        (opt.state.master, opt2.state.master),
        (opt.state.m, opt2.state.m),
        (opt.state.v, opt2.state.v),
        (opt.state.ema, opt2.state.ema),
    ] {
        assert_eq!(bits(be.read(a).unwrap()), bits(be2.read(b).unwrap()));
    }
    for (e, e2) in model.params.entries.iter().zip(&model2.params.entries) {
        assert_eq!(
            bits(be.read(e.param.w).unwrap()),
            bits(be2.read(e2.param.w).unwrap())
        );
    }
    // The EMA differs from the weights after 3 steps, and loading it writes it.
    ckpt.load_ema_weights(&mut be2, &model2.params).unwrap();
    let w_ema = be2.read(model2.params.entries[0].param.w).unwrap();
    assert_eq!(
        w_ema.as_slice(),
        ckpt.tensor(&format!("ema/{}", names[0].0)).unwrap()
    );
    assert_ne!(
        w_ema.as_slice(),
        ckpt.tensor(&format!("params/{}", names[0].0)).unwrap()
    );

    // A model with another shape is refused, naming the tensor.
    let mut be3 = CpuBackend::<f32>::new();
    let model3 = CaRegressor::new(&mut be3, 4);
    let mut table = model3.params.clone();
    table.entries[1].shape = vec![HIDDEN + 1];
    let err = ckpt
        .load_ema_weights(&mut be3, &table)
        .unwrap_err()
        .to_string();
    assert!(err.contains("ema/l1.b") && err.contains("shape"), "{err}");
}

#[test]
fn lddt_ca_is_one_for_the_truth_and_falls_with_noise() {
    let chains = load_all(dataset(), &scalefold_featurize::SampleConfig::tiny(), 1, 2).unwrap();
    let sample = &chains[0].sample;
    let n = sample.seq_mask.len();
    let truth: Vec<[[f32; 3]; 14]> = (0..n)
        .map(|i| {
            let mut r = [[0f32; 3]; 14];
            r[1] = [0, 1, 2].map(|k| sample.all_atom_positions[(i * 37 + 1) * 3 + k]);
            r
        })
        .collect();
    let (score, residues) = lddt_ca(sample, &truth).unwrap().unwrap();
    assert_eq!(score, 1.0);
    assert!(residues > 0 && residues <= n);
    // Rigid motion keeps lDDT; stretching lowers it.
    let moved: Vec<_> = truth
        .iter()
        .map(|r| {
            let mut r = *r;
            r[1][0] += 7.0;
            r
        })
        .collect();
    assert_eq!(lddt_ca(sample, &moved).unwrap().unwrap().0, 1.0);
    let stretched: Vec<_> = truth
        .iter()
        .map(|r| {
            let mut r = *r;
            r[1] = r[1].map(|v| v * 1.5);
            r
        })
        .collect();
    let s = lddt_ca(sample, &stretched).unwrap().unwrap().0;
    assert!(s < 0.7, "{s}");
    assert!(lddt_ca(sample, &truth[..n - 1]).is_err());
}

#[test]
fn eval_scores_every_checkpoint_once_and_stops_at_done() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("run");
    let cfg = tiny(4);
    run_regressor(&cfg, &out, false, None);
    let chains = load_all(dataset(), &cfg.sample, 7, 4).unwrap();
    assert_eq!(chains.len(), 4);
    let mut be = CpuBackend::<f32>::new();
    let mut model = CaRegressor::new(&mut be, cfg.sample.crop_size);
    be.materialize().unwrap();
    let mut seen: Vec<u64> = Vec::new();
    let reports: Vec<EvalReport> = evaluate_folder(
        &mut be,
        &mut model,
        &out,
        &chains,
        0,
        true,
        Duration::from_millis(10),
        &mut || true,
        &mut |r| seen.push(r.step),
    )
    .unwrap();
    assert_eq!(seen, [2, 4]);
    for r in &reports {
        assert_eq!(r.chains.len(), 4);
        assert!((0.0..=1.0).contains(&r.mean_lddt_ca));
        let written: EvalReport =
            serde_json::from_slice(&std::fs::read(r.checkpoint.join(EVAL_FILE)).unwrap()).unwrap();
        assert_eq!(
            (written.step, written.chains.len()),
            (r.step, r.chains.len())
        );
        assert!((written.mean_lddt_ca - r.mean_lddt_ca).abs() < 1e-12);
    }
    // Nothing left: a second pass evaluates nothing.
    let again = evaluate_folder(
        &mut be,
        &mut model,
        &out,
        &chains,
        0,
        false,
        Duration::ZERO,
        &mut || true,
        &mut |_| {},
    )
    .unwrap();
    assert!(again.is_empty());
}

#[test]
fn watcher_stops_when_told_without_a_done_marker() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("run");
    let cfg = tiny(2);
    run_regressor(&cfg, &out, false, None);
    std::fs::remove_file(out.join(super::run::DONE_FILE)).unwrap();
    let chains = load_all(dataset(), &cfg.sample, 7, 1).unwrap();
    let mut be = CpuBackend::<f32>::new();
    let mut model = CaRegressor::new(&mut be, cfg.sample.crop_size);
    be.materialize().unwrap();
    let mut looks = 0;
    let reports = evaluate_folder(
        &mut be,
        &mut model,
        &out,
        &chains,
        0,
        true,
        Duration::from_millis(1),
        &mut || {
            looks += 1;
            looks < 3
        },
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(
        reports.len(),
        1,
        "the one checkpoint is scored before stopping"
    );
    assert_eq!(looks, 3);
}

#[test]
fn cluster_weighted_sampling_follows_the_af2_weights() {
    use super::data::{SamplingMode, alphafold_loader, chain_weight, chain_weights, open_source};
    assert_eq!(chain_weight(100, 1), 0.5);
    assert_eq!(chain_weight(400, 2), 400.0 / 512.0 / 2.0);
    assert_eq!(chain_weight(900, 4), 0.25);
    let source = open_source(dataset()).unwrap();
    let weights = chain_weights(&source).unwrap();
    let rows: u64 = scalefold_loader::RowGroupSource::row_groups(&source)
        .iter()
        .map(|g| g.rows)
        .sum();
    assert_eq!(weights.len() as u64, rows);
    // Chains of 12-30 residues: 0.5 / cluster size, so every weight is 0.5 / k.
    for w in &weights {
        let k = 0.5 / w;
        assert!((k - k.round()).abs() < 1e-9 && k >= 1.0, "{w}");
    }
    let mut cfg = tiny(1);
    cfg.data.sampling = SamplingMode::ClusterWeighted;
    let loader = alphafold_loader(&source, &cfg.sample, &cfg.data, 3, Some(1), None).unwrap();
    let delivered: usize = loader.map(|b| b.unwrap().samples.len()).sum();
    assert_eq!(
        delivered as u64, rows,
        "one epoch is as many draws as chains"
    );
}

#[test]
fn presets_load_and_match_the_code_presets() {
    let tiny = TrainConfig::load("tiny", &[]).unwrap();
    assert_eq!(tiny.model, crate::model::ModelConfig::tiny());
    assert_eq!(tiny.sample, scalefold_featurize::SampleConfig::tiny());
    let initial = TrainConfig::load("initial_training", &[]).unwrap();
    assert_eq!(initial.model, crate::model::ModelConfig::initial_training());
    assert_eq!(
        initial.sample,
        scalefold_featurize::SampleConfig::initial_training()
    );
    assert_eq!(initial.optimizer, OptimizerConfig::af2());
    assert_eq!(initial.schedule, super::schedule::LrSchedule::af2());
    assert_eq!(initial.run.max_extra_recycles, 3);
    let fine = TrainConfig::load("fine_tuning", &[]).unwrap();
    assert_eq!(fine.model, crate::model::ModelConfig::fine_tuning());
    assert_eq!(
        fine.sample,
        scalefold_featurize::SampleConfig::fine_tuning()
    );
    // Every preset writes back to TOML that reads to the same config.
    for c in [tiny, initial, fine] {
        let text = c.to_toml().unwrap();
        assert_eq!(TrainConfig::from_toml("round trip", &text, &[]).unwrap(), c);
    }
}

#[test]
fn overrides_and_base_files_apply_and_bad_keys_are_named() {
    let c = TrainConfig::load(
        "tiny",
        &[
            "optimizer.lr=5e-4".into(),
            "model.host.layers=2".into(),
            "run.steps = 7".into(),
        ],
    )
    .unwrap();
    assert_eq!(c.optimizer.lr, 5e-4);
    assert_eq!(c.model.host.layers, 2);
    assert_eq!(c.run.steps, 7);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mine.toml");
    std::fs::write(
        &file,
        "base = \"tiny\"\n[run]\nsteps = 11\n[data]\nwindow = 2\n",
    )
    .unwrap();
    let path = file.display().to_string();
    let c = TrainConfig::load(&path, &[]).unwrap();
    assert_eq!(
        (c.run.steps, c.data.window, c.sample.crop_size),
        (11, 2, 16)
    );

    let err = |spec: &str, overrides: &[&str]| {
        let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        TrainConfig::load(spec, &o).unwrap_err().to_string()
    };
    let e = err("tiny", &["model.c_zz=3"]);
    assert!(
        e.contains("preset tiny") && e.contains("`model.c_zz`") && e.contains("unknown"),
        "{e}"
    );
    let e = err("tiny", &["sample.masked_msa.bogus=1"]);
    assert!(e.contains("`sample.masked_msa.bogus`"), "{e}");
    let e = err("tiny", &["model.c_m=wide"]);
    assert!(e.contains("`model.c_m`") && e.contains("expected"), "{e}");
    let e = err("tiny", &["run.max_extra_recycles=2"]);
    assert!(
        e.contains("`run.max_extra_recycles`") && e.contains("at most"),
        "{e}"
    );
    let e = err("tiny", &["run.steps"]);
    assert!(e.contains("key.path=value"), "{e}");
    let e = err("tiny", &["run.steps.x=1"]);
    assert!(
        e.contains("`run.steps`") && e.contains("not a table"),
        "{e}"
    );
    std::fs::write(&file, "[run]\nsteps = \n").unwrap();
    let e = err(&path, &[]);
    assert!(e.contains(&path) && e.contains("line 2"), "{e}");
    let e = err("no_such_preset_or_file", &[]);
    assert!(e.contains("tiny, initial_training, fine_tuning"), "{e}");
    std::fs::write(&file, "base = \"huge\"\n").unwrap();
    let e = err(&path, &[]);
    assert!(e.contains("`base`") && e.contains("huge"), "{e}");
}
