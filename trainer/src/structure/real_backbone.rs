//! Tests of the frame ops and backbone FAPE on a real structure: the backbone
//! atoms of PDB entry 4zey (chain A) from the test data's golden atom37
//! positions.

use super::fape::{FapeConfig, backbone_fape, backbone_fape_backward};
use super::fd::{check_gradient, random};
use super::rigid::{
    Rigid, Vec3, dot, rigid_from_three_points, rigid_from_three_points_backward, rigid_from_update,
};
use std::path::PathBuf;

/// The test-data folder from `SCALEFOLD_TESTDATA`; `None` (with a note) when
/// unset; panics with a clear message when set to a missing folder.
pub(crate) fn testdata() -> Option<PathBuf> {
    let Some(dir) = std::env::var_os("SCALEFOLD_TESTDATA") else {
        eprintln!(
            "note: SCALEFOLD_TESTDATA is unset; skipping a test that needs the real test data"
        );
        return None;
    };
    let dir = PathBuf::from(dir);
    assert!(
        dir.is_dir(),
        "SCALEFOLD_TESTDATA is set to {} but that folder does not exist",
        dir.display()
    );
    Some(dir)
}

/// (N, CA, C) of every residue of 4zey chain A whose three backbone atoms are
/// resolved (atom37 slots 0, 1, 2).
fn backbone_4zey(dir: &std::path::Path) -> Vec<[Vec3; 3]> {
    let path = dir.join("golden/mmcif/4zey.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let json: serde_json::Value = serde_json::from_str(&text).expect("golden json parses");
    let chain = &json["4zey"]["chains"]["A"];
    let positions = chain["all_atom_positions"]
        .as_array()
        .expect("all_atom_positions");
    let masks = chain["all_atom_mask"].as_array().expect("all_atom_mask");
    let number = |v: &serde_json::Value| v.as_f64().expect("a number");
    positions
        .iter()
        .zip(masks)
        .filter(|(_, m)| (0..3).all(|a| number(&m[a]) == 1.0))
        .map(|(p, _)| std::array::from_fn(|a| std::array::from_fn(|x| number(&p[a][x]))))
        .collect()
}

fn frames_of(backbone: &[[Vec3; 3]]) -> Vec<Rigid> {
    backbone
        .iter()
        .map(|[n, ca, c]| rigid_from_three_points(n, ca, c))
        .collect()
}

#[test]
fn real_backbone_frames_have_ideal_local_geometry() {
    let Some(dir) = testdata() else { return };
    let backbone = backbone_4zey(&dir);
    assert!(
        backbone.len() > 70,
        "4zey chain A has {} resolved residues",
        backbone.len()
    );
    // Exact up to the effect of NORM_EPSILON (1e-8 Å² under square roots of
    // about 2 Å²), hence tolerances of 1e-7.
    for (frame, [n, _, c]) in frames_of(&backbone).iter().zip(&backbone) {
        let r = &frame.rot;
        for i in 0..3 {
            for j in 0..3 {
                let rtr: f64 = (0..3).map(|k| r[k][i] * r[k][j]).sum();
                assert!((rtr - if i == j { 1.0 } else { 0.0 }).abs() < 1e-7);
            }
        }
        let det = dot(&r[0], &super::rigid::cross(&r[1], &r[2]));
        assert!((det - 1.0).abs() < 1e-7);
        // C on the +x axis, N in the xy-plane with y > 0, bond lengths and the
        // N–CA–C angle of a real backbone.
        let (local_n, local_c) = (frame.invert_apply(n), frame.invert_apply(c));
        assert!(
            local_c[1].abs() < 1e-7
                && local_c[2].abs() < 1e-7
                && (1.40..1.65).contains(&local_c[0]),
            "local C {local_c:?}"
        );
        assert!(
            local_n[2].abs() < 1e-7 && local_n[1] > 0.0,
            "local N {local_n:?}"
        );
        let n_len = dot(&local_n, &local_n).sqrt();
        assert!((1.35..1.60).contains(&n_len), "N–CA {n_len}");
        let angle = (local_n[0] / n_len).acos().to_degrees();
        assert!((100.0..122.0).contains(&angle), "N–CA–C {angle}");
    }
}

#[test]
fn real_backbone_fape_is_zero_up_to_a_global_transform_and_has_correct_gradients() {
    let Some(dir) = testdata() else { return };
    let backbone = backbone_4zey(&dir);
    let truth = frames_of(&backbone);
    let mask = vec![1.0; truth.len()];
    let cfg = FapeConfig::BACKBONE;
    let g = rigid_from_update(&[0.4, -1.1, 0.7, 12.0, -3.0, 5.0]);
    let moved: Vec<Rigid> = truth.iter().map(|f| g.compose(f)).collect();
    let n = truth.len() as f64;
    let floor =
        cfg.epsilon.sqrt() / cfg.length_scale * n * n / ((cfg.epsilon + n) * (cfg.epsilon + n));
    let same = backbone_fape(&moved, &truth, &mask, &cfg).unwrap();
    assert!((same - floor).abs() < 1e-9, "{same} vs {floor}");

    // A prediction with every backbone atom displaced by up to 0.8 Å: the
    // gradient with respect to the atom coordinates, through the frames
    // (Alg. 21) and backbone FAPE, matches finite differences.
    let len = 20;
    let truth = &truth[..len];
    let mask = &mask[..len];
    let noise = random(31, len * 9);
    let atoms: Vec<f64> = backbone[..len]
        .iter()
        .flatten()
        .flatten()
        .zip(&noise)
        .map(|(x, e)| x + 0.8 * e)
        .collect();
    let to_backbone = |p: &[f64]| -> Vec<[Vec3; 3]> {
        p.chunks(9)
            .map(|r| std::array::from_fn(|a| [r[3 * a], r[3 * a + 1], r[3 * a + 2]]))
            .collect()
    };
    let f = |p: &[f64]| backbone_fape(&frames_of(&to_backbone(p)), truth, mask, &cfg).unwrap();
    let noisy = to_backbone(&atoms);
    let pred = frames_of(&noisy);
    assert!(
        f(&atoms) > 0.02,
        "a displaced backbone has a clear FAPE: {}",
        f(&atoms)
    );
    let g_frames = backbone_fape_backward(&pred, truth, mask, &cfg, 1.0).unwrap();
    let analytic: Vec<f64> = noisy
        .iter()
        .zip(&g_frames)
        .flat_map(|([a, b, c], g)| rigid_from_three_points_backward(a, b, c, g))
        .flatten()
        .collect();
    check_gradient(&f, &atoms, &analytic);
}

/// `len` consecutive residues of a real chain (from the golden atom37 JSON of
/// `entry`), starting at residue `start`, as a one-chain record whose MSA is
/// the query and two point mutants. Every residue of the window must have its
/// backbone (N, CA, C) resolved.
pub(crate) fn real_window(
    dir: &std::path::Path,
    entry: &str,
    chain_id: &str,
    start: usize,
    len: usize,
) -> scalefold_featurize::ChainRecord {
    use scalefold_featurize::residue_constants::{msa_id, restype_index};
    use scalefold_featurize::{ChainRecord, TemplateFeatures};
    const MSA_ROWS: usize = 3;
    let path = dir.join(format!("golden/mmcif/{entry}.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let json: serde_json::Value = serde_json::from_str(&text).expect("golden json parses");
    let chain = &json[entry]["chains"][chain_id];
    let range = start..start + len;
    let sequence = &chain["sequence"].as_str().expect("sequence")[range.clone()];
    let positions: Vec<f32> = chain["all_atom_positions"].as_array().expect("positions")
        [range.clone()]
    .iter()
    .flat_map(|r| r.as_array().expect("atoms").iter())
    .flat_map(|a| a.as_array().expect("xyz").iter())
    .map(|v| v.as_f64().expect("number") as f32)
    .collect();
    let mask: Vec<u8> = chain["all_atom_mask"].as_array().expect("mask")[range]
        .iter()
        .flat_map(|r| r.as_array().expect("atoms").iter())
        .map(|v| v.as_f64().expect("number") as u8)
        .collect();
    assert!(
        mask.chunks(37).all(|r| r[..3] == [1, 1, 1]),
        "{entry}_{chain_id} residues {start}..{}: a backbone atom is unresolved",
        start + len
    );
    let query: Vec<u8> = sequence
        .bytes()
        .map(|c| msa_id(c).expect("a residue letter"))
        .collect();
    let mut msa = query.clone();
    for row in 1..MSA_ROWS {
        let mut r = query.clone();
        r[row * 3] = (r[row * 3] + 3) % 20;
        msa.extend(r);
    }
    ChainRecord {
        chain_id: format!("{entry}_{chain_id}"),
        sequence: sequence.into(),
        aatype: sequence.bytes().map(|c| restype_index(c) as i8).collect(),
        residue_index: (0..len as i32).collect(),
        seq_length: len as u32,
        between_segment_residues: vec![0; len],
        all_atom_positions: positions,
        all_atom_mask: mask,
        resolution: 2.0,
        release_date: None,
        structure_method: "x-ray diffraction".into(),
        is_distillation: false,
        msa,
        deletion_matrix: vec![0; MSA_ROWS * len],
        num_alignments: MSA_ROWS as u32,
        msa_species_ids: vec![String::new(); MSA_ROWS],
        templates: TemplateFeatures::default(),
    }
}
