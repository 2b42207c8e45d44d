//! Tests of the host objective on a real target: seven residues of PDB entry
//! 4zey chain A (with a tyrosine and two glutamates, whose side chains are
//! ambiguous or not) padded to eight, featurized by `scalefold-featurize`.

use super::*;
use crate::structure::fd::random;
use crate::structure::real_backbone::{real_window, testdata};
use scalefold_featurize::{ChainRecord, SampleConfig, make_sample};

/// First residue (0-based) of the window of 4zey chain A: "KYEEAIS".
const WINDOW_START: usize = 23;
const WINDOW_LEN: usize = 7;
const CROP: usize = 8;
const MSA_ROWS: usize = 3;

/// The window as a one-chain record with a three-row MSA (the query and two
/// point mutants), resolution 1.5 Å.
fn record_4zey(dir: &std::path::Path) -> ChainRecord {
    ChainRecord {
        resolution: 1.5,
        ..real_window(dir, "4zey", "A", WINDOW_START, WINDOW_LEN)
    }
}

fn sample_config() -> SampleConfig {
    SampleConfig {
        crop_size: CROP,
        max_msa_clusters: MSA_ROWS,
        reserve_msa_rows_for_templates: false,
        max_extra_msa: 2,
        max_templates: 0,
        max_template_candidates: 0,
        num_recycling_iterations: 1,
        block_deletion: None,
        ..SampleConfig::tiny()
    }
}

fn sample_4zey(dir: &std::path::Path) -> Sample {
    let s = make_sample(&record_4zey(dir), &sample_config(), 5).expect("sample builds");
    assert_eq!(s.seq_length as usize, WINDOW_LEN);
    assert_eq!(s.aatype.len(), CROP);
    s
}

fn atoms(x: &[f32]) -> Vec<Atom14> {
    atoms14(x)
}

/// Violation input over the true atoms of the sample.
fn exists_of(s: &Sample) -> Vec<[f64; 14]> {
    masks14(&s.atom14_gt_exists, &to_f64(&s.seq_mask))
}

#[test]
fn true_structure_has_no_violation_and_a_compressed_one_has() {
    let Some(dir) = testdata() else { return };
    let s = sample_4zey(&dir);
    let truth = atoms(&s.atom14_gt_positions);
    let exists = exists_of(&s);
    let input = |x: &[Atom14]| -> ViolationTerms {
        violation_loss(
            &ViolationInput {
                positions: x,
                exists: &exists,
                aatype: &s.aatype,
                residue_index: &s.residue_index,
            },
            &ViolationConfig::AF2,
        )
        .unwrap()
    };
    let t = input(&truth);
    assert_eq!(
        t.total, 0.0,
        "a 1.5 Å crystal structure violates nothing: {t:?}"
    );
    // Every coordinate shrunk by 30 %: bonds too short, atoms too close.
    let compressed: Vec<Atom14> = truth
        .iter()
        .map(|a| a.map(|p| p.map(|v| 0.7 * v)))
        .collect();
    let c = input(&compressed);
    assert!(c.bond_c_n > 0.0 && c.within > 0.0, "{c:?}");
    assert!(c.total > 0.1, "{c:?}");
}

use super::super::violation::ViolationTerms;

#[test]
fn violation_gradient_matches_finite_differences() {
    let Some(dir) = testdata() else { return };
    let s = sample_4zey(&dir);
    let exists = exists_of(&s);
    // The truth compressed by 25 % and shaken by up to 0.4 Å: every term active.
    let noise = random(3, CROP * 42);
    let x0: Vec<f64> = atoms(&s.atom14_gt_positions)
        .iter()
        .flatten()
        .flatten()
        .zip(&noise)
        .map(|(v, e)| 0.75 * v + 0.4 * e)
        .collect();
    let to_atoms = |x: &[f64]| -> Vec<Atom14> {
        x.chunks_exact(42)
            .map(|r| std::array::from_fn(|a| [r[3 * a], r[3 * a + 1], r[3 * a + 2]]))
            .collect()
    };
    let f = |x: &[f64]| {
        violation_loss(
            &ViolationInput {
                positions: &to_atoms(x),
                exists: &exists,
                aatype: &s.aatype,
                residue_index: &s.residue_index,
            },
            &ViolationConfig::AF2,
        )
        .unwrap()
    };
    let terms = f(&x0);
    assert!(
        terms.bond_c_n > 0.0 && terms.clash > 0.0 && terms.within > 0.0,
        "every part is active: {terms:?}"
    );
    let g: Vec<f64> = violation_loss_backward(
        &ViolationInput {
            positions: &to_atoms(&x0),
            exists: &exists,
            aatype: &s.aatype,
            residue_index: &s.residue_index,
        },
        &ViolationConfig::AF2,
        1.0,
    )
    .unwrap()
    .iter()
    .flatten()
    .flatten()
    .copied()
    .collect();
    crate::structure::fd::check_gradient(&|x| f(x).total, &x0, &g);
    // Padding and absent atoms get no gradient.
    for (i, a) in to_atoms(&g).iter().enumerate() {
        for (k, v) in a.iter().enumerate() {
            if exists[i][k] == 0.0 {
                assert_eq!(*v, [0.0; 3], "residue {i} slot {k}");
            }
        }
    }
}

#[test]
fn renaming_picks_the_alternative_for_a_swapped_residue() {
    let Some(dir) = testdata() else { return };
    let s = sample_4zey(&dir);
    let seq = to_f64(&s.seq_mask);
    let (truth, alt) = (
        atoms(&s.atom14_gt_positions),
        atoms(&s.atom14_alt_gt_positions),
    );
    let exists = masks14(&s.atom14_gt_exists, &seq);
    let ambiguous = masks14(&s.atom14_atom_is_ambiguous, &seq);
    // The tyrosine (window residue 1) is ambiguous; the glutamates too
    // (OE1/OE2), the lysine is not.
    let is_ambiguous: Vec<bool> = ambiguous
        .iter()
        .map(|a| a.iter().any(|&v| v > 0.0))
        .collect();
    assert_eq!(
        is_ambiguous,
        [false, true, true, true, false, false, false, false]
    );
    let rename = |pred: &[Atom14]| {
        alt_naming_is_better(&RenamingInput {
            predicted: pred,
            truth: &truth,
            alt_truth: &alt,
            truth_exists: &exists,
            ambiguous: &ambiguous,
        })
        .unwrap()
    };
    assert!(
        rename(&truth).iter().all(|b| !b),
        "the truth keeps its names"
    );
    // The prediction names the tyrosine's ring atoms the other way round.
    let mut swapped = truth.clone();
    swapped[1] = alt[1];
    let picks = rename(&swapped);
    assert_eq!(
        picks,
        [false, true, false, false, false, false, false, false]
    );

    // Side-chain FAPE of that prediction: zero (the floor of ε) against the
    // renamed truth, clearly positive against the plain truth.
    let frames = groups(&s.rigidgroups_gt_frames);
    let alt_frames = groups(&s.rigidgroups_alt_gt_frames);
    let mut pred_frames = frames.clone();
    pred_frames[1] = alt_frames[1];
    let t = Truth::new(&s);
    let out = StructureOutput {
        frames: Vec::new(),
        angles_raw: Vec::new(),
        angles: Vec::new(),
        single: Vec::new(),
        group_frames: pred_frames.clone(),
        atom14: swapped.clone(),
    };
    let renamed = renamed_truth(&out, &t).unwrap();
    let flat_frames: Vec<Rigid> = pred_frames.iter().flatten().copied().collect();
    let flat_atoms: Vec<Vec3> = swapped.iter().flatten().copied().collect();
    let sidechain = |true_frames: &[Rigid], true_positions: &[Vec3], mask: &[f64]| {
        fape(
            &FapeInput {
                pred_frames: &flat_frames,
                true_frames,
                frame_mask: &t.group_mask,
                pred_positions: &flat_atoms,
                true_positions,
                position_mask: mask,
            },
            &FapeConfig::SIDECHAIN,
        )
        .unwrap()
    };
    let with_renaming = sidechain(&renamed.frames, &renamed.positions, &renamed.position_mask);
    let plain_frames: Vec<Rigid> = frames.iter().flatten().copied().collect();
    let plain_atoms: Vec<Vec3> = truth.iter().flatten().copied().collect();
    let plain_mask: Vec<f64> = exists.iter().flatten().copied().collect();
    let without = sidechain(&plain_frames, &plain_atoms, &plain_mask);
    let floor = FapeConfig::SIDECHAIN.epsilon.sqrt() / FapeConfig::SIDECHAIN.length_scale;
    assert!(
        with_renaming <= 1.01 * floor,
        "{with_renaming} vs floor {floor}"
    );
    assert!(without > 10.0 * floor, "{without}");
}

/// Tiny dims, initial parameters with every "final" map made non-zero, and
/// random representations for the 4zey sample.
struct Setup {
    dims: HostDims,
    sample: Sample,
    params: HostParams,
    single: Vec<f64>,
    pair: Vec<f64>,
    msa: Vec<f64>,
}

fn setup(dir: &std::path::Path) -> Setup {
    let dims = HostDims::tiny();
    let sample = sample_4zey(dir);
    let init = host_param_init(&dims, 7);
    let mut params = HostParams::load(&dims, &init).unwrap();
    // Zero-initialised maps would hide their gradients: perturb every tensor.
    for (k, (_, _, _, t)) in params.entries().into_iter().enumerate() {
        let noise = random(100 + k as u64, t.len());
        t.iter_mut().zip(noise).for_each(|(v, e)| *v += 0.3 * e);
    }
    let n = CROP;
    Setup {
        single: random(1, n * dims.c_s),
        pair: random(2, n * n * dims.c_z),
        msa: random(3, MSA_ROWS * n * dims.c_m),
        dims,
        sample,
        params,
    }
}

impl Setup {
    fn inputs<'a>(&'a self, single: &'a [f64], pair: &'a [f64], msa: &'a [f64]) -> Inputs64<'a> {
        Inputs64 {
            single,
            pair,
            msa,
            sample: &self.sample,
            recycle: &self.sample.recycles[0],
            clamp_backbone_fape: false,
            stop_rotation_gradient: false,
        }
    }

    fn loss(&self, p: &HostParams, single: &[f64], pair: &[f64], msa: &[f64]) -> f64 {
        evaluate_f64(
            &self.dims,
            &LossWeights::fine_tuning(),
            p,
            &self.inputs(single, pair, msa),
            false,
        )
        .unwrap()
        .0
        .losses
        .total
    }
}

/// Checks `g · v` against the central difference of `f` along `v`.
fn check_direction(f: &dyn Fn(f64) -> f64, analytic: f64, what: &str) {
    let h = 1e-5;
    let numeric = (f(h) - f(-h)) / (2.0 * h);
    let err = (analytic - numeric).abs() / (1e-6 + analytic.abs().max(numeric.abs()));
    // Rounding noise of a loss of order 10 at this step is about 1e-10.
    assert!(
        err < 1e-4 || (analytic - numeric).abs() < 1e-8,
        "{what}: analytic {analytic:.10e}, numeric {numeric:.10e}"
    );
}

fn dot_slices(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn along(x: &[f64], v: &[f64], t: f64) -> Vec<f64> {
    x.iter().zip(v).map(|(a, b)| a + t * b).collect()
}

#[test]
fn host_gradient_matches_finite_differences() {
    let Some(dir) = testdata() else { return };
    let st = setup(&dir);
    let w = LossWeights::fine_tuning();
    let (out, grads) = evaluate_f64(
        &st.dims,
        &w,
        &st.params,
        &st.inputs(&st.single, &st.pair, &st.msa),
        true,
    )
    .unwrap();
    let mut g = grads.unwrap();
    let l = &out.losses;
    for (name, v) in [
        ("fape", l.fape),
        ("sidechain_fape", l.sidechain_fape),
        ("torsion", l.torsion),
        ("angle_norm", l.angle_norm),
        ("distogram", l.distogram),
        ("masked_msa", l.masked_msa),
        ("plddt", l.plddt),
        ("experimentally_resolved", l.experimentally_resolved),
        ("violation", l.violation),
    ] {
        assert!(v.is_finite() && v > 0.0, "{name} = {v}");
    }
    // Inputs: three random directions each.
    for k in 0..3 {
        let v = random(40 + k, st.single.len());
        check_direction(
            &|t| st.loss(&st.params, &along(&st.single, &v, t), &st.pair, &st.msa),
            dot_slices(&g.single, &v),
            "single",
        );
        let v = random(50 + k, st.pair.len());
        check_direction(
            &|t| st.loss(&st.params, &st.single, &along(&st.pair, &v, t), &st.msa),
            dot_slices(&g.pair, &v),
            "pair",
        );
        let v = random(60 + k, st.msa.len());
        check_direction(
            &|t| st.loss(&st.params, &st.single, &st.pair, &along(&st.msa, &v, t)),
            dot_slices(&g.msa, &v),
            "msa",
        );
    }
    // Parameters: one random direction per tensor.
    let grads_flat: Vec<Vec<f64>> = g
        .params
        .entries()
        .into_iter()
        .map(|(_, _, _, t)| t.clone())
        .collect();
    let base = st.params.clone();
    let names: Vec<String> = host_param_layout(&st.dims)
        .into_iter()
        .map(|e| e.0)
        .collect();
    for (k, name) in names.iter().enumerate() {
        let v = random(1000 + k as u64, grads_flat[k].len());
        let f = |t: f64| {
            let mut p = base.clone();
            let mut e = p.entries();
            let tensor = &mut e[k].3;
            tensor.iter_mut().zip(&v).for_each(|(a, b)| *a += t * b);
            drop(e);
            st.loss(&p, &st.single, &st.pair, &st.msa)
        };
        check_direction(&f, dot_slices(&grads_flat[k], &v), name);
    }
}

#[test]
fn padding_residues_get_no_gradient_and_outputs_have_the_sample_shape() {
    let Some(dir) = testdata() else { return };
    let st = setup(&dir);
    let (c_s, c_z, c_m) = (st.dims.c_s, st.dims.c_z, st.dims.c_m);
    let params = st.params.clone().flatten_f32();
    let (single, pair, msa) = (to_f32(&st.single), to_f32(&st.pair), to_f32(&st.msa));
    let x = HostInputs {
        single: &single,
        pair: &pair,
        msa: &msa,
        sample: &st.sample,
        recycle: &st.sample.recycles[0],
        clamp_backbone_fape: true,
    };
    let (out, g) =
        host_forward_backward(&st.dims, &LossWeights::fine_tuning(), &params, &x).unwrap();
    let fwd = host_forward(&st.dims, &LossWeights::fine_tuning(), &params, &x).unwrap();
    assert_eq!(fwd, out, "forward alone gives the same outputs");
    let atoms = host_atom14(&st.dims, &params, &x).unwrap();
    assert_eq!(
        atoms, out.atom14,
        "the structure module alone gives the same atoms"
    );
    let mut short = x;
    short.pair = &pair[1..];
    let err = host_atom14(&st.dims, &params, &short)
        .unwrap_err()
        .to_string();
    assert!(err.contains("pair") && err.contains("N × N × c_z"), "{err}");
    assert_eq!(out.atom14.len(), CROP);
    assert_eq!(out.plddt.len(), CROP);
    assert!(out.plddt.iter().all(|p| (0.0..=100.0).contains(p)));
    let pad = CROP - 1;
    assert!(g.single[pad * c_s..].iter().all(|&v| v == 0.0));
    for i in 0..CROP {
        for j in 0..CROP {
            let z = &g.pair[(i * CROP + j) * c_z..][..c_z];
            if i == pad || j == pad {
                assert!(z.iter().all(|&v| v == 0.0), "pair ({i}, {j})");
            }
        }
    }
    for r in 0..MSA_ROWS {
        assert!(
            g.msa[(r * CROP + pad) * c_m..][..c_m]
                .iter()
                .all(|&v| v == 0.0)
        );
    }
    // Gradients have the layout's shapes.
    let layout = host_param_layout(&st.dims);
    assert_eq!(g.params.len(), layout.len());
    for ((name, shape), t) in layout.iter().zip(&g.params) {
        assert_eq!(t.len(), shape.iter().product::<usize>(), "{name}");
    }
}

#[test]
fn confidence_losses_need_a_resolution_between_0_1_and_3_angstrom() {
    let Some(dir) = testdata() else { return };
    let st = setup(&dir);
    let mut sample = st.sample.clone();
    let eval = |s: &Sample| {
        let x = Inputs64 {
            sample: s,
            ..st.inputs(&st.single, &st.pair, &st.msa)
        };
        evaluate_f64(&st.dims, &LossWeights::fine_tuning(), &st.params, &x, false)
            .unwrap()
            .0
            .losses
    };
    let good = eval(&sample);
    assert!(good.plddt > 0.0 && good.experimentally_resolved > 0.0);
    for resolution in [0.0, 3.5] {
        sample.resolution = resolution;
        let l = eval(&sample);
        assert_eq!((l.plddt, l.experimentally_resolved), (0.0, 0.0));
        assert_eq!(l.fape, good.fape);
    }
}

#[test]
fn bad_inputs_are_typed_errors() {
    let Some(dir) = testdata() else { return };
    let st = setup(&dir);
    let w = LossWeights::initial_training();
    let params = st.params.clone().flatten_f32();
    let (single, pair, msa) = (to_f32(&st.single), to_f32(&st.pair), to_f32(&st.msa));
    let x = HostInputs {
        single: &single[1..],
        pair: &pair,
        msa: &msa,
        sample: &st.sample,
        recycle: &st.sample.recycles[0],
        clamp_backbone_fape: true,
    };
    let err = host_forward(&st.dims, &w, &params, &x)
        .unwrap_err()
        .to_string();
    assert!(err.contains("single has 79 values, expected 80"), "{err}");
    let mut short = params.clone();
    short[4].pop();
    let x = HostInputs {
        single: &single,
        ..x
    };
    let err = host_forward(&st.dims, &w, &short, &x)
        .unwrap_err()
        .to_string();
    assert!(err.contains("structure.input.w has"), "{err}");
    let mut sample = st.sample.clone();
    sample.rigidgroups_gt_frames.truncate(10);
    let err = host_forward(
        &st.dims,
        &w,
        &params,
        &HostInputs {
            sample: &sample,
            ..x
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("sample.rigidgroups_gt_frames has 10 values"),
        "{err}"
    );
    let mut dims = st.dims.clone();
    dims.distogram_bins = 2;
    let err = host_forward(&dims, &w, &params, &x)
        .unwrap_err()
        .to_string();
    assert!(err.contains("host.distogram_bins"), "{err}");
}

#[test]
fn layout_and_initialisation_follow_af2() {
    let d = HostDims::af2();
    let layout = host_param_layout(&d);
    let mut names: Vec<&str> = layout.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), layout.len(), "names are unique");
    let d = HostDims::tiny();
    let layout = host_param_layout(&d);
    let init = host_param_init(&d, 3);
    assert_eq!(init, host_param_init(&d, 3), "deterministic in the seed");
    assert_ne!(init, host_param_init(&d, 4));
    let get = |name: &str| {
        let k = layout.iter().position(|(n, _)| n == name).unwrap();
        (&layout[k].1, &init[k])
    };
    let (shape, w) = get("structure.ipa.query.w");
    assert_eq!(shape, &vec![d.c_s, d.ipa_heads * d.ipa_head_dim]);
    let std = (w.iter().map(|v| v * v).sum::<f32>() / w.len() as f32).sqrt();
    assert!(
        (0.15..0.5).contains(&std),
        "LeCun std 1/sqrt(10) ≈ 0.32: {std}"
    );
    assert!(
        w.iter()
            .all(|v| v.abs() <= 2.0 / 0.8796 / (d.c_s as f32).sqrt() + 1e-6)
    );
    for zero in [
        "structure.backbone_update.w",
        "structure.ipa.output.w",
        "structure.transition.2.w",
        "heads.distogram.w",
        "heads.masked_msa.w",
        "heads.plddt.2.w",
    ] {
        assert!(get(zero).1.iter().all(|&v| v == 0.0), "{zero}");
    }
    assert!(
        get("structure.single_norm.scale")
            .1
            .iter()
            .all(|&v| v == 1.0)
    );
    assert!(
        get("structure.ipa.head_weights")
            .1
            .iter()
            .all(|&v| (v - 0.541_324_9).abs() < 1e-6)
    );
    // Fine-tuning adds the experimentally-resolved and violation terms only.
    let (a, b) = (LossWeights::initial_training(), LossWeights::fine_tuning());
    assert_eq!((a.experimentally_resolved, a.violation), (0.0, 0.0));
    assert_eq!((b.experimentally_resolved, b.violation), (0.01, 1.0));
    assert_eq!(
        LossWeights {
            experimentally_resolved: 0.0,
            violation: 0.0,
            ..b
        },
        a
    );
    let clamped = (0..1000).filter(|&s| a.clamp_backbone_fape(s)).count();
    assert!((850..950).contains(&clamped), "{clamped} of 1000 clamped");
}

#[test]
fn lddt_of_the_truth_against_itself_is_one() {
    let Some(dir) = testdata() else { return };
    let s = sample_4zey(&dir);
    let t = Truth::new(&s);
    let scores = super::super::heads::lddt(&t.ca, &t.ca, &t.ca_mask).unwrap();
    assert!(scores.iter().all(|&v| (v - 1.0).abs() < 1e-9), "{scores:?}");
}

/// Random trunk outputs (single, pair, MSA) of `n` residues and `rows` MSA
/// rows, as f32, from seeds `seed`, `seed + 1`, `seed + 2`.
struct RandomTrunk {
    single: Vec<f32>,
    pair: Vec<f32>,
    msa: Vec<f32>,
}

impl RandomTrunk {
    fn new(dims: &HostDims, n: usize, rows: usize, seed: u64) -> Self {
        let f32s =
            |seed, len| -> Vec<f32> { random(seed, len).iter().map(|&v| v as f32).collect() };
        Self {
            single: f32s(seed, n * dims.c_s),
            pair: f32s(seed + 1, n * n * dims.c_z),
            msa: f32s(seed + 2, rows * n * dims.c_m),
        }
    }

    /// The host inputs of the first recycling iteration of `sample`, backbone FAPE clamped.
    fn inputs<'a>(&'a self, sample: &'a Sample) -> HostInputs<'a> {
        HostInputs {
            single: &self.single,
            pair: &self.pair,
            msa: &self.msa,
            sample,
            recycle: &sample.recycles[0],
            clamp_backbone_fape: true,
        }
    }
}

/// The host part gives the same bits on one thread and on four: every
/// parallel loop sums in a fixed order. Sizes large enough for the blocked
/// paths (pair maps of 4096 rows, several FAPE, clash, norm and loss
/// blocks, per-head row blocks).
#[test]
fn results_do_not_depend_on_the_thread_count() {
    use scalefold_featurize::synthetic::synthetic_record;
    let n = 64;
    let dims = HostDims {
        c_s: 24,
        c_z: 16,
        c_m: 8,
        ipa_heads: 3,
        ipa_head_dim: 4,
        ipa_query_points: 2,
        ipa_value_points: 3,
        resnet_hidden: 8,
        resnet_blocks: 2,
        layers: 2,
        distogram_bins: 64,
        plddt_bins: 12,
        plddt_hidden: 8,
        msa_classes: 23,
    };
    let config = SampleConfig {
        crop_size: n,
        max_msa_clusters: 4,
        reserve_msa_rows_for_templates: false,
        num_recycling_iterations: 1,
        ..SampleConfig::tiny()
    };
    let sample = make_sample(&synthetic_record(n, 9, 0, 1), &config, 3).unwrap();
    let rows = config.num_msa_rows();
    let params = host_param_init(&dims, 2);
    let trunk = RandomTrunk::new(&dims, n, rows, 4);
    let x = trunk.inputs(&sample);
    let w = LossWeights::fine_tuning();
    let on = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| host_forward_backward(&dims, &w, &params, &x).unwrap())
    };
    let ((out1, g1), (out4, g4)) = (on(1), on(4));
    assert!(out1.losses.total.is_finite() && out1.losses.violation >= 0.0);
    assert_eq!(out1, out4);
    assert_eq!(g1, g4);
}

/// Wall time of the host part at the AF2 sizes on a synthetic sample
/// (`SCALEFOLD_HOST_BENCH_N` residues, default 64; 124 MSA rows):
/// `cargo test --release -p scalefold-trainer --lib host_timing -- --ignored --nocapture`.
#[test]
#[ignore = "a benchmark: run it with --release --ignored"]
fn host_timing_at_af2_sizes() {
    use scalefold_featurize::synthetic::synthetic_record;
    let n: usize = std::env::var("SCALEFOLD_HOST_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let dims = HostDims::af2();
    let config = SampleConfig {
        crop_size: n,
        num_recycling_iterations: 1,
        ..SampleConfig::initial_training()
    };
    let sample = make_sample(&synthetic_record(n, 200, 0, 1), &config, 1).unwrap();
    let rows = config.num_msa_rows();
    let params = host_param_init(&dims, 1);
    let trunk = RandomTrunk::new(&dims, n, rows, 1);
    let x = trunk.inputs(&sample);
    let w = LossWeights::fine_tuning();
    let t = std::time::Instant::now();
    let out = host_forward(&dims, &w, &params, &x).unwrap();
    let forward = t.elapsed().as_secs_f64();
    let t = std::time::Instant::now();
    let (_, g) = host_forward_backward(&dims, &w, &params, &x).unwrap();
    let both = t.elapsed().as_secs_f64();
    assert!(out.losses.total.is_finite() && g.pair.iter().all(|v| v.is_finite()));
    eprintln!(
        "host part, AF2 sizes, N = {n}, {rows} MSA rows, {} threads: forward {forward:.3} s, forward + backward {both:.3} s",
        rayon::current_num_threads()
    );
}
