//! GPU test (`#[ignore]`: it needs an NVIDIA GPU): the model's training step
//! with the trunk's forward and backward as CUDA graphs
//! ([`scalefold_trainer::model::graph`]) against the eager step on the same
//! GPU, for several recycling counts (step variants), and eager vs graph
//! times of the trunk forward, trunk backward and whole step. Dropout is on
//! (the tiny model's rates): the step seed lives in device memory, so every
//! replay draws the masks the eager step with that seed draws.
//!
//! Run: `cargo test -p scalefold-trainer --release --test cuda_graph_step -- --ignored --nocapture`

use scalefold_featurize::make_sample;
use scalefold_featurize::synthetic::synthetic_record;
use scalefold_featurize::transform::{Sample, SampleConfig};
use scalefold_trainer::backend::Backend;
use scalefold_trainer::backend::cuda::CudaBackend;
use scalefold_trainer::model::graph::TrunkGraphs;
use scalefold_trainer::model::{AlphaFold, ModelConfig};
use std::time::Instant;

/// bf16 tolerance on gradients (relative L2 over the whole block).
const TOL: f64 = 3e-2;

mod support;
use support::rel_err;

fn grads(gpu: &mut CudaBackend, model: &AlphaFold) -> Vec<f32> {
    let mut all = Vec::new();
    for e in &model.params.entries {
        all.extend(gpu.read(e.param.g).unwrap());
    }
    all
}

fn median_ms(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2] * 1e3
}

/// Times `f` (synchronized) `iters` times; median ms.
fn time(gpu: &mut CudaBackend, iters: usize, mut f: impl FnMut(&mut CudaBackend)) -> f64 {
    let mut t = Vec::with_capacity(iters);
    for _ in 0..iters {
        gpu.sync().unwrap();
        let s = Instant::now();
        f(gpu);
        gpu.sync().unwrap();
        t.push(s.elapsed().as_secs_f64());
    }
    median_ms(t)
}

fn setup(crop: usize, n_res: usize) -> (CudaBackend, AlphaFold, Sample) {
    let cfg = ModelConfig {
        // The CUDA attention kernels take head widths 8, 16 or 32.
        msa_head_dim: 8,
        extra_msa_head_dim: 8,
        tri_head_dim: 8,
        template_tri_head_dim: 8,
        template_attn_head_dim: 8,
        ..ModelConfig::tiny()
    };
    let scfg = SampleConfig {
        crop_size: crop,
        max_msa_clusters: 5,
        max_extra_msa: 4,
        max_templates: 2,
        max_template_candidates: 4,
        subsample_templates: false,
        num_recycling_iterations: 4,
        ..SampleConfig::tiny()
    };
    let mut gpu = CudaBackend::new(0).expect("a CUDA GPU");
    let model = AlphaFold::new(&mut gpu, &cfg, &scfg).expect("the model plans");
    gpu.materialize().unwrap();
    model.init(&mut gpu, 7).unwrap();
    let sample = make_sample(&synthetic_record(n_res, 6, 2, 11), &scfg, 11).expect("sample");
    (gpu, model, sample)
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn graph_step_matches_eager_and_is_timed() {
    for (crop, n_res) in [(8, 7), (64, 60)] {
        let (mut gpu, mut model, sample) = setup(crop, n_res);
        let mut graphs = TrunkGraphs::default();
        // Step variants by recycling count; each graphed step is compared with
        // the eager step of the same variant and seed. The first graphed steps
        // warm up, then capture; the later ones replay.
        for (k, recycles) in [2usize, 0, 1, 2, 3, 1].into_iter().enumerate() {
            let seed = 100 + k as u64;
            let eager = model.train_step(&mut gpu, &sample, recycles, seed).unwrap();
            let want = grads(&mut gpu, &model);
            let got = model
                .train_step_graphed(&mut gpu, &mut graphs, &sample, recycles, seed)
                .unwrap();
            let g = grads(&mut gpu, &model);
            let err = rel_err(&g, &want);
            let dl = (got.total - eager.total).abs() / eager.total.abs().max(1e-12);
            println!(
                "crop {crop} recycles {recycles}: loss eager {:.6} graph {:.6} (rel {dl:.2e}), grad rel err {err:.2e}, captured {:?}",
                eager.total,
                got.total,
                graphs.captured()
            );
            assert!(dl < TOL, "loss differs: {} vs {}", got.total, eager.total);
            assert!(err < TOL, "gradients differ: rel err {err}");
        }
        assert_eq!(graphs.captured(), (true, true));
        // Replays draw fresh masks per seed, and the same masks for the same
        // seed. At AlphaFold's initialisation every residual branch ends in a
        // zero projection, so dropout leaves the loss unchanged: the gradients
        // of those projections show the masks.
        let mut replay = |seed| {
            model
                .train_step_graphed(&mut gpu, &mut graphs, &sample, 1, seed)
                .unwrap();
            grads(&mut gpu, &model)
        };
        let (a, b, a2) = (replay(200), replay(201), replay(200));
        let (other, same) = (rel_err(&b, &a), rel_err(&a2, &a));
        println!(
            "crop {crop}: replayed gradients, seed 201 vs 200 rel {other:.2e}, seed 200 twice rel {same:.2e}"
        );
        // Dropout acts on the trunk only, so another seed moves the whole
        // gradient block by little (1.1e-4 at crop 8), but by far more than the
        // float-atomic order moves two replays with one seed (1.2e-12).
        assert!(
            same < 1e-7,
            "replays with one seed must agree up to atomic summation order ({same:.2e})"
        );
        assert!(
            other > 100.0 * same.max(1e-9),
            "a replay with another seed must draw other dropout masks ({other:.2e} vs {same:.2e})"
        );

        let iters = 20;
        let fwd_eager = time(&mut gpu, iters, |g| model.trunk.forward(g, true).unwrap());
        let fwd_graph = time(&mut gpu, iters, |g| {
            graphs.forward(&mut model.trunk, g, true).unwrap()
        });
        let bwd_eager = time(&mut gpu, iters, |g| model.trunk.backward(g).unwrap());
        let bwd_graph = time(&mut gpu, iters, |g| {
            graphs.backward(&model.trunk, g).unwrap()
        });
        let step_eager = time(&mut gpu, iters, |g| {
            model.train_step(g, &sample, 3, 9).unwrap();
        });
        let step_graph = time(&mut gpu, iters, |g| {
            model
                .train_step_graphed(g, &mut graphs, &sample, 3, 9)
                .unwrap();
        });
        println!(
            "crop {crop} ({}): trunk fwd eager {fwd_eager:.3} ms graph {fwd_graph:.3} ms; \
             trunk bwd eager {bwd_eager:.3} ms graph {bwd_graph:.3} ms; \
             step (3 recycles) eager {step_eager:.3} ms graph {step_graph:.3} ms",
            gpu.name()
        );
    }
}
