//! Tests of the whole structure module under its losses on a real target:
//! the first residues of PDB entry 4zey chain A (true backbone frames and
//! torsions from featurize's ground-truth geometry). Backbone FAPE averaged
//! over the layers plus the torsion loss (with the angle-norm penalty)
//! averaged over the layers is differentiated through all eight layers and
//! checked against finite differences, then minimised with Adam: the module
//! must fit the target from fixed random single and pair inputs.

use super::fape::{FapeConfig, backbone_fape, backbone_fape_backward};
use super::fd::{check_gradient_with_step, random};
use super::ipa::IpaDims;
use super::module::{
    StructureDims, StructureInput, StructureModule, StructureOutput, StructureOutputGrad,
    StructureParams,
};
use super::nn::tests::randomize;
use super::nn::{flatten_params, load_params};
use super::rigid::Rigid;
use super::torsion::{TorsionConfig, TorsionInput, torsion_loss, torsion_loss_backward};

/// The target: residue types, true backbone frames, true and alternative
/// torsions and their mask, of the first `len` residues of 4zey chain A.
struct Target {
    aatype: Vec<u8>,
    frames: Vec<Rigid>,
    torsions: Vec<[f64; 2]>,
    alt_torsions: Vec<[f64; 2]>,
    torsion_mask: Vec<f64>,
}

fn target_4zey(dir: &std::path::Path, len: usize) -> Target {
    use scalefold_featurize::geometry as fg;
    use scalefold_featurize::residue_constants::restype_index;
    let path = dir.join("golden/mmcif/4zey.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let json: serde_json::Value = serde_json::from_str(&text).expect("golden json parses");
    let chain = &json["4zey"]["chains"]["A"];
    let aatype: Vec<u8> = chain["sequence"]
        .as_str()
        .expect("sequence")
        .bytes()
        .map(restype_index)
        .collect();
    let pos: Vec<[[f32; 3]; 37]> =
        serde_json::from_value::<Vec<Vec<[f32; 3]>>>(chain["all_atom_positions"].clone())
            .expect("positions")
            .into_iter()
            .map(|p| p.try_into().expect("37 atoms"))
            .collect();
    let mask: Vec<[f32; 37]> =
        serde_json::from_value::<Vec<Vec<f32>>>(chain["all_atom_mask"].clone())
            .expect("mask")
            .into_iter()
            .map(|m| m.try_into().expect("37 masks"))
            .collect();
    // The first `len` residues with a resolved backbone frame, in order.
    let groups = fg::rigid_group_features(&aatype, &pos, &mask);
    let tors = fg::torsion_angles(&aatype, &pos, &mask);
    let keep: Vec<usize> = (0..aatype.len())
        .filter(|&i| groups.gt_exists[i][0] > 0.0)
        .take(len)
        .collect();
    assert_eq!(keep.len(), len, "4zey chain A has {len} resolved residues");
    let pair = |p: [f32; 2]| p.map(f64::from);
    Target {
        aatype: keep.iter().map(|&i| aatype[i]).collect(),
        frames: keep
            .iter()
            .map(|&i| {
                let f = &groups.gt_frames[i][0];
                Rigid {
                    rot: f.rot.map(|r| r.map(f64::from)),
                    trans: f.trans.map(f64::from),
                }
            })
            .collect(),
        torsions: keep
            .iter()
            .flat_map(|&i| tors.sin_cos[i].map(pair))
            .collect(),
        alt_torsions: keep
            .iter()
            .flat_map(|&i| tors.alt_sin_cos[i].map(pair))
            .collect(),
        torsion_mask: keep
            .iter()
            .flat_map(|&i| tors.mask[i].map(f64::from))
            .collect(),
    }
}

fn pairs(flat: &[f64]) -> Vec<[f64; 2]> {
    flat.chunks_exact(2).map(|c| [c[0], c[1]]).collect()
}

/// The loss and its gradient with respect to the module's outputs: the
/// layer means of backbone FAPE and of the torsion loss.
fn loss_and_grad(
    out: &StructureOutput,
    t: &Target,
    fape_cfg: &FapeConfig,
) -> (f64, StructureOutputGrad) {
    let layers = out.frames.len() as f64;
    let mask = vec![1.0; t.frames.len()];
    let tcfg = TorsionConfig::AF2;
    let mut grad = StructureOutputGrad::zeros_like(out);
    let mut value = 0.0;
    for l in 0..out.frames.len() {
        value += backbone_fape(&out.frames[l], &t.frames, &mask, fape_cfg).unwrap() / layers;
        grad.frames[l] =
            backbone_fape_backward(&out.frames[l], &t.frames, &mask, fape_cfg, 1.0 / layers)
                .unwrap();
        let pred = pairs(&out.angles_raw[l]);
        let input = TorsionInput {
            pred: &pred,
            truth: &t.torsions,
            alt_truth: &t.alt_torsions,
            mask: &t.torsion_mask,
        };
        value += torsion_loss(&input, &tcfg).unwrap().total / layers;
        grad.angles_raw[l] = torsion_loss_backward(&input, &tcfg, 1.0 / layers)
            .unwrap()
            .concat();
    }
    (value, grad)
}

/// Adam steps of the fitting test.
const STEPS: i32 = 300;

fn tiny_module() -> StructureModule {
    let dims = StructureDims {
        ipa: IpaDims {
            c_s: 16,
            c_z: 3,
            heads: 2,
            head_dim: 3,
            query_points: 2,
            value_points: 2,
        },
        resnet_hidden: 8,
        resnet_blocks: 2,
        layers: 8,
        position_scale: 10.0,
        stop_rotation_gradient: true,
    };
    // Random maps, but started as AF2 starts: identity layer norms and a
    // zero backbone update (every layer keeps the identity frames at first).
    let mut params = StructureParams::zeros(&dims);
    randomize(&mut params, 21, 0.3);
    for norm in [
        &mut params.single_norm,
        &mut params.pair_norm,
        &mut params.ipa_norm,
        &mut params.transition.norm,
    ] {
        norm.scale.iter_mut().for_each(|x| *x = 1.0);
        norm.offset.iter_mut().for_each(|x| *x = 0.0);
    }
    params
        .backbone_update
        .weight
        .iter_mut()
        .for_each(|x| *x = 0.0);
    params
        .backbone_update
        .bias
        .iter_mut()
        .for_each(|x| *x = 0.0);
    StructureModule { dims, params }
}

#[test]
fn structure_module_fits_real_backbone_and_torsions() {
    let Some(dir) = super::real_backbone::testdata() else {
        return;
    };
    let n = 8;
    let target = target_4zey(&dir, n);
    let mut m = tiny_module();
    let (c_s, c_z) = (m.dims.ipa.c_s, m.dims.ipa.c_z);
    let single = random(22, n * c_s);
    let pair = random(23, n * n * c_z);
    let residue_mask = vec![1.0; n];
    let input = StructureInput {
        single: &single,
        pair: &pair,
        aatype: &target.aatype,
        mask: &residue_mask,
    };
    // Gradient check of the whole loss (unclamped FAPE, so that no distance
    // sits on the clamp) with respect to every parameter. Rotations are a
    // stopped gradient, which finite differences of the plain forward do not
    // see: the check runs with the stop off.
    let unclamped = FapeConfig {
        clamp_distance: None,
        ..FapeConfig::BACKBONE
    };
    let mut full = m.clone();
    full.dims.stop_rotation_gradient = false;
    let (out, cache) = full.forward(&input).unwrap();
    let (_, g_out) = loss_and_grad(&out, &target, &unclamped);
    let mut g = full.backward(&input, &cache, &g_out).unwrap();
    let theta = flatten_params(&mut full.params);
    let f = |p: &[f64]| {
        let mut m2 = full.clone();
        load_params(&mut m2.params, p).unwrap();
        loss_and_grad(&m2.forward(&input).unwrap().0, &target, &unclamped).0
    };
    // A step of 1e-5: at 1e-4 some hidden unit's ReLU input crosses zero.
    check_gradient_with_step(&f, &theta, &flatten_params(&mut g.params), 1e-5);

    // Adam on the AF2 loss (clamped FAPE, stopped rotations).
    let cfg = FapeConfig::BACKBONE;
    let fape_last = |m: &StructureModule| {
        let out = m.forward(&input).unwrap().0;
        backbone_fape(
            out.frames.last().unwrap(),
            &target.frames,
            &residue_mask,
            &cfg,
        )
        .unwrap()
    };
    let start = fape_last(&m);
    let mut theta = flatten_params(&mut m.params);
    let (mut first, mut second) = (vec![0.0; theta.len()], vec![0.0; theta.len()]);
    let (lr, b1, b2) = (0.01, 0.9, 0.999);
    for step in 1..=STEPS {
        let (out, cache) = m.forward(&input).unwrap();
        let (_, g_out) = loss_and_grad(&out, &target, &cfg);
        let mut g = m.backward(&input, &cache, &g_out).unwrap();
        let grad = flatten_params(&mut g.params);
        for k in 0..theta.len() {
            first[k] = b1 * first[k] + (1.0 - b1) * grad[k];
            second[k] = b2 * second[k] + (1.0 - b2) * grad[k] * grad[k];
            let m_hat = first[k] / (1.0 - b1.powi(step));
            let v_hat = second[k] / (1.0 - b2.powi(step));
            theta[k] -= lr * m_hat / (v_hat.sqrt() + 1e-8);
        }
        load_params(&mut m.params, &theta).unwrap();
    }
    let end = fape_last(&m);
    eprintln!(
        "4zey first {n} residues: last-layer backbone FAPE {start:.4} → {end:.4} after {STEPS} Adam steps"
    );
    assert!(end < 0.5 * start, "FAPE fell from {start} to {end} only");
}
