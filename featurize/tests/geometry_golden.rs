//! Ground-truth geometry on real chains of the golden test data.

#![allow(clippy::needless_range_loop)]

mod common;

use scalefold_featurize::geometry::{
    atom14_features, atom14_from_frames, frames_from_torsions, rigid_group_features, torsion_angles,
};
use scalefold_featurize::residue_constants::{restype_index, tables};
use scalefold_featurize::rigid::{Rigid, distance};

// 1pfe is left out: its peptide chain is made of D- and modified amino acids, which the
// L-amino-acid ideal geometry does not describe.
const CHAINS: [&str; 4] = ["4zey", "2q2k", "5i55", "5kc1"];

fn orthonormal(f: &Rigid) -> bool {
    let r = f.rot;
    (0..3).all(|i| {
        (0..3).all(|j| {
            let d: f32 = (0..3).map(|k| r[k][i] * r[k][j]).sum();
            (d - if i == j { 1.0 } else { 0.0 }).abs() < 1e-4
        })
    }) && (f.determinant() - 1.0).abs() < 1e-4
}

#[test]
fn frames_torsions_and_rebuild_on_real_chains() {
    let Some(dir) = common::testdata() else {
        return;
    };
    let t = tables();
    let mut residues_checked = 0usize;
    for name in CHAINS {
        for (chain, seq, pos, mask) in common::golden_chains(&dir, name) {
            let aatype: Vec<u8> = seq.bytes().map(restype_index).collect();
            assert_eq!(aatype.len(), pos.len(), "{chain}");
            let groups = rigid_group_features(&aatype, &pos, &mask);
            let tors = torsion_angles(&aatype, &pos, &mask);
            let a14 = atom14_features(&aatype, &pos, &mask);
            for (i, frames) in groups.gt_frames.iter().enumerate() {
                for g in 0..8 {
                    if groups.gt_exists[i][g] > 0.0 {
                        assert!(orthonormal(&frames[g]), "{chain} residue {i} group {g}");
                        assert!(orthonormal(&groups.alt_gt_frames[i][g]));
                    }
                }
            }
            // Rebuild from the true backbone frame and true torsions with ideal geometry.
            let backbone: Vec<Rigid> = groups.gt_frames.iter().map(|f| f[0]).collect();
            let rebuilt = atom14_from_frames(
                &aatype,
                &frames_from_torsions(&aatype, &backbone, &tors.sin_cos),
            );
            let (mut bb_sq, mut bb_n, mut sc_sq, mut sc_n) = (0.0f64, 0usize, 0.0f64, 0usize);
            let (mut rigid_sq, mut rigid_n) = (0.0f64, 0usize);
            for i in 0..aatype.len() {
                let r = aatype[i] as usize;
                if groups.gt_exists[i][0] == 0.0 || r == 20 {
                    continue;
                }
                residues_checked += 1;
                for s in 0..14 {
                    if a14.atom14_gt_exists[i][s] == 0.0 {
                        continue;
                    }
                    let group = t.atom14_rigid_group[r][s] as usize;
                    // An atom is rebuilt only when its group's torsion was measured (and, for
                    // chi k > 1, every chi before it).
                    let measured = match group {
                        0 => true,
                        3 => tors.mask[i][2] > 0.0,
                        g => (4..=g).all(|h| tors.mask[i][h - 1] > 0.0),
                    };
                    if !measured {
                        continue;
                    }
                    let d = distance(rebuilt[i][s], a14.atom14_gt_positions[i][s]) as f64;
                    if groups.gt_exists[i][group] > 0.0 {
                        let own = groups.gt_frames[i][group].apply(t.atom14_ideal_positions[r][s]);
                        let e = distance(own, a14.atom14_gt_positions[i][s]) as f64;
                        rigid_sq += e * e;
                        rigid_n += 1;
                    }
                    if s < 4 {
                        bb_sq += d * d;
                        bb_n += 1;
                    } else {
                        sc_sq += d * d;
                        sc_n += 1;
                    }
                }
            }
            let rigid = (rigid_sq / rigid_n.max(1) as f64).sqrt();
            eprintln!(
                "{chain}: atoms in their own group's true frame: RMSD {rigid:.3} Å over {rigid_n}"
            );
            assert!(rigid < 0.1, "{chain}: rigid-group RMSD {rigid}");
            let bb = (bb_sq / bb_n.max(1) as f64).sqrt();
            let sc = (sc_sq / sc_n.max(1) as f64).sqrt();
            eprintln!(
                "{chain}: backbone RMSD {bb:.3} Å over {bb_n} atoms, side chain {sc:.3} Å over {sc_n}"
            );
            assert!(bb < 0.1, "{chain}: backbone RMSD {bb}");
            // Side-chain atoms rebuilt through the chi cascade carry the real structure's
            // deviations from ideal bond angles at every joint, so they drift further.
            assert!(sc < 0.4, "{chain}: cascaded side-chain RMSD {sc}");
            // Alternative chis of symmetric residues differ by pi.
            for i in 0..aatype.len() {
                for k in 3..7 {
                    let [s, c] = tors.sin_cos[i][k];
                    let [sa, ca] = tors.alt_sin_cos[i][k];
                    if t.chi_pi_periodic[aatype[i].min(20) as usize][k - 3] {
                        let diff =
                            (sa.atan2(ca) - s.atan2(c)).rem_euclid(2.0 * std::f32::consts::PI);
                        assert!((diff - std::f32::consts::PI).abs() < 1e-4);
                    } else {
                        assert_eq!([s, c], [sa, ca]);
                    }
                }
            }
        }
    }
    assert!(
        residues_checked > 200,
        "checked {residues_checked} residues"
    );
}
