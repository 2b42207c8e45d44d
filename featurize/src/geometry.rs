//! Ground-truth geometry for the losses: the atom14 representation (with the renamed
//! alternative for symmetric side chains), the eight rigid-group frames per residue,
//! torsion angles with their pi-shifted alternatives, pseudo-beta positions, and the
//! inverse direction (frames and atoms from torsion angles and ideal geometry).
//!
//! Every function takes per-residue slices of the same length `n`: `aatype` (0..=20),
//! atom37 positions and atom37 masks (1.0 resolved, 0.0 not). Residue types outside
//! 0..=20 are treated as unknown.

use crate::residue_constants::{self as rc, NUM_RIGID_GROUPS, NUM_TORSIONS, tables};
use crate::rigid::{Rigid, Vec3, dihedral_sin_cos};

fn restype(aatype: u8) -> usize {
    (aatype as usize).min(20)
}

/// The atom14 view of a chain and its ground truth.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Atom14Features {
    /// atom37 index of each atom14 slot `[n][14]` (0 for empty slots).
    pub residx_atom14_to_atom37: Vec<[u8; 14]>,
    /// atom14 slot of each atom37 atom `[n][37]` (0 where the type has no such atom).
    pub residx_atom37_to_atom14: Vec<[u8; 37]>,
    /// 1.0 where the residue type has an atom in the atom14 slot.
    pub atom14_atom_exists: Vec<[f32; 14]>,
    /// 1.0 where the residue type has the atom37 atom.
    pub atom37_atom_exists: Vec<[f32; 37]>,
    /// 1.0 where the atom exists and is resolved.
    pub atom14_gt_exists: Vec<[f32; 14]>,
    /// Ground-truth positions in the atom14 layout.
    pub atom14_gt_positions: Vec<[[f32; 3]; 14]>,
    /// Positions with the symmetric atoms renamed (OD1↔OD2 etc.).
    pub atom14_alt_gt_positions: Vec<[[f32; 3]; 14]>,
    /// `atom14_gt_exists` under the same renaming.
    pub atom14_alt_gt_exists: Vec<[f32; 14]>,
    /// 1.0 for atoms that take part in a renaming.
    pub atom14_atom_is_ambiguous: Vec<[f32; 14]>,
}

/// Builds [`Atom14Features`] from atom37 positions and masks.
pub fn atom14_features(
    aatype: &[u8],
    positions: &[[Vec3; 37]],
    mask: &[[f32; 37]],
) -> Atom14Features {
    let t = tables();
    let n = aatype.len();
    let mut out = Atom14Features {
        residx_atom14_to_atom37: Vec::with_capacity(n),
        residx_atom37_to_atom14: Vec::with_capacity(n),
        atom14_atom_exists: Vec::with_capacity(n),
        atom37_atom_exists: Vec::with_capacity(n),
        atom14_gt_exists: Vec::with_capacity(n),
        atom14_gt_positions: Vec::with_capacity(n),
        atom14_alt_gt_positions: Vec::with_capacity(n),
        atom14_alt_gt_exists: Vec::with_capacity(n),
        atom14_atom_is_ambiguous: Vec::with_capacity(n),
    };
    for i in 0..n {
        let r = restype(aatype[i]);
        let to37 = t.atom14_to_atom37[r];
        let exists: [f32; 14] = std::array::from_fn(|s| f32::from(t.atom14_mask[r][s]));
        let gt_exists: [f32; 14] = std::array::from_fn(|s| exists[s] * mask[i][to37[s] as usize]);
        let gt_pos: [Vec3; 14] = std::array::from_fn(|s| {
            if exists[s] > 0.0 {
                positions[i][to37[s] as usize]
            } else {
                [0.0; 3]
            }
        });
        let swap = t.atom14_ambiguous_swap[r];
        out.residx_atom14_to_atom37.push(to37);
        out.residx_atom37_to_atom14.push(t.atom37_to_atom14[r]);
        out.atom14_atom_exists.push(exists);
        out.atom37_atom_exists
            .push(std::array::from_fn(|a| f32::from(t.atom37_mask[r][a])));
        out.atom14_gt_exists.push(gt_exists);
        out.atom14_gt_positions.push(gt_pos);
        out.atom14_alt_gt_positions
            .push(std::array::from_fn(|s| gt_pos[swap[s] as usize]));
        out.atom14_alt_gt_exists
            .push(std::array::from_fn(|s| gt_exists[swap[s] as usize]));
        out.atom14_atom_is_ambiguous.push(std::array::from_fn(|s| {
            f32::from(t.atom14_is_ambiguous[r][s])
        }));
    }
    out
}

/// The eight rigid-group frames per residue from real atoms.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RigidGroupFeatures {
    /// Frames of groups backbone, pre-omega, phi, psi, chi1..4; group 0 is the backbone
    /// frame (origin CA, x towards C, N in the xy plane with positive y).
    pub gt_frames: Vec<[Rigid; 8]>,
    /// Frames with the pi-periodic chi group rotated by pi about x.
    pub alt_gt_frames: Vec<[Rigid; 8]>,
    /// 1.0 where the group exists and its three base atoms are resolved.
    pub gt_exists: Vec<[f32; 8]>,
    /// 1.0 where the residue type has the group.
    pub group_exists: Vec<[f32; 8]>,
    /// 1.0 where the group's frame is ambiguous by a rotation of pi.
    pub group_is_ambiguous: Vec<[f32; 8]>,
}

/// Builds the rigid-group frames from atom37 positions. Groups 1 and 2 (pre-omega and
/// phi) move only hydrogens, which the layout omits: they never exist (identity frames).
pub fn rigid_group_features(
    aatype: &[u8],
    positions: &[[Vec3; 37]],
    mask: &[[f32; 37]],
) -> RigidGroupFeatures {
    let t = tables();
    let n = aatype.len();
    let mut out = RigidGroupFeatures {
        gt_frames: Vec::with_capacity(n),
        alt_gt_frames: Vec::with_capacity(n),
        gt_exists: Vec::with_capacity(n),
        group_exists: Vec::with_capacity(n),
        group_is_ambiguous: Vec::with_capacity(n),
    };
    for i in 0..n {
        let r = restype(aatype[i]);
        let mut frames = [Rigid::IDENTITY; 8];
        let mut alt = [Rigid::IDENTITY; 8];
        let mut exists = [0.0f32; 8];
        for g in 0..NUM_RIGID_GROUPS {
            let base = t.rigid_group_base_atoms[r][g];
            let group_mask = t.rigid_group_mask[r][g];
            let [a, b, c] = base.map(|x| positions[i][x as usize]);
            let resolved = base.iter().all(|&x| mask[i][x as usize] > 0.0);
            exists[g] = f32::from(group_mask && resolved);
            if exists[g] == 0.0 {
                continue;
            }
            frames[g] = if g == 0 {
                // Origin CA (b), x from CA towards C (a), N (c) in the xy plane.
                Rigid::from_axes(crate::rigid::sub(a, b), crate::rigid::sub(c, b), b)
            } else {
                Rigid::from_3_points(a, b, c)
            };
            alt[g] = if t.rigid_group_is_ambiguous[r][g] {
                frames[g].compose(&Rigid::rot_x(0.0, -1.0))
            } else {
                frames[g]
            };
        }
        out.gt_frames.push(frames);
        out.alt_gt_frames.push(alt);
        out.gt_exists.push(exists);
        out.group_exists
            .push(std::array::from_fn(|g| f32::from(t.rigid_group_mask[r][g])));
        out.group_is_ambiguous.push(std::array::from_fn(|g| {
            f32::from(t.rigid_group_is_ambiguous[r][g])
        }));
    }
    out
}

/// Torsion angles per residue, order omega (pre-omega), phi, psi, chi1..chi4, each as
/// (sin, cos).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TorsionFeatures {
    /// (sin, cos) per torsion; (0, 1) where masked.
    pub sin_cos: Vec<[[f32; 2]; 7]>,
    /// Same with the pi-periodic chis shifted by pi.
    pub alt_sin_cos: Vec<[[f32; 2]; 7]>,
    /// 1.0 where the torsion exists and all four atoms are resolved.
    pub mask: Vec<[f32; 7]>,
}

/// Computes torsion angles from atom37 positions. omega and phi use the previous
/// residue in the array (none for the first residue); psi is measured through the
/// carbonyl O and shifted by pi so that it matches the psi group frame.
pub fn torsion_angles(
    aatype: &[u8],
    positions: &[[Vec3; 37]],
    mask: &[[f32; 37]],
) -> TorsionFeatures {
    let t = tables();
    let n = aatype.len();
    let (a_n, a_ca, a_c, a_o) = (0usize, 1usize, 2usize, 4usize);
    let mut out = TorsionFeatures {
        sin_cos: Vec::with_capacity(n),
        alt_sin_cos: Vec::with_capacity(n),
        mask: Vec::with_capacity(n),
    };
    for i in 0..n {
        let r = restype(aatype[i]);
        let p = &positions[i];
        let m = &mask[i];
        // Four (residue offset, atom37) pairs per torsion; offset -1 = previous residue.
        let mut defs: [Option<[(usize, usize); 4]>; 7] = [None; 7];
        if i > 0 {
            defs[0] = Some([(i - 1, a_ca), (i - 1, a_c), (i, a_n), (i, a_ca)]);
            defs[1] = Some([(i - 1, a_c), (i, a_n), (i, a_ca), (i, a_c)]);
        }
        defs[2] = Some([(i, a_n), (i, a_ca), (i, a_c), (i, a_o)]);
        for k in 0..4 {
            if t.chi_mask[r][k] {
                defs[3 + k] = Some(t.chi_atom37[r][k].map(|a| (i, a as usize)));
            }
        }
        let mut sin_cos = [[0.0f32, 1.0]; 7];
        let mut tmask = [0.0f32; 7];
        for (k, def) in defs.iter().enumerate() {
            let Some(atoms) = def else { continue };
            let resolved = atoms.iter().all(|&(res, a)| {
                if res == i {
                    m[a] > 0.0
                } else {
                    mask[res][a] > 0.0
                }
            });
            if !resolved {
                continue;
            }
            let pt = |(res, a): (usize, usize)| if res == i { p[a] } else { positions[res][a] };
            if let Some((s, c)) =
                dihedral_sin_cos(pt(atoms[0]), pt(atoms[1]), pt(atoms[2]), pt(atoms[3]))
            {
                sin_cos[k] = if k == 2 { [-s, -c] } else { [s, c] };
                tmask[k] = 1.0;
            }
        }
        let alt: [[f32; 2]; 7] = std::array::from_fn(|k| {
            if k >= 3 && t.chi_pi_periodic[r][k - 3] {
                [-sin_cos[k][0], -sin_cos[k][1]]
            } else {
                sin_cos[k]
            }
        });
        out.sin_cos.push(sin_cos);
        out.alt_sin_cos.push(alt);
        out.mask.push(tmask);
    }
    out
}

/// Pseudo-beta positions (CB, or CA for glycine) and their masks.
pub fn pseudo_beta(
    aatype: &[u8],
    positions: &[[Vec3; 37]],
    mask: &[[f32; 37]],
) -> (Vec<Vec3>, Vec<f32>) {
    let glycine = rc::restype_index(b'G');
    let (a_ca, a_cb) = (1usize, 3usize);
    aatype
        .iter()
        .enumerate()
        .map(|(i, &a)| {
            let atom = if a == glycine { a_ca } else { a_cb };
            (positions[i][atom], mask[i][atom])
        })
        .unzip()
}

/// The eight global frames per residue from the backbone frame and torsion angles
/// (AlphaFold supplement Algorithm 24): each group is its default frame rotated about x
/// by its torsion; chi2..4 hang off the previous chi, all others off the backbone.
pub fn frames_from_torsions(
    aatype: &[u8],
    backbone: &[Rigid],
    sin_cos: &[[[f32; 2]; NUM_TORSIONS]],
) -> Vec<[Rigid; 8]> {
    let t = tables();
    aatype
        .iter()
        .enumerate()
        .map(|(i, &a)| {
            let r = restype(a);
            let mut local = [Rigid::IDENTITY; 8];
            for g in 1..NUM_RIGID_GROUPS {
                let [s, c] = sin_cos[i][g - 1];
                local[g] = t.default_frames[r][g].compose(&Rigid::rot_x(s, c));
            }
            let mut global = [backbone[i]; 8];
            for g in 1..NUM_RIGID_GROUPS {
                let parent = if g >= 5 { global[g - 1] } else { backbone[i] };
                global[g] = parent.compose(&local[g]);
            }
            global
        })
        .collect()
}

/// Atom positions in the atom14 layout from global group frames and ideal geometry
/// (zeros in empty slots).
pub fn atom14_from_frames(aatype: &[u8], frames: &[[Rigid; 8]]) -> Vec<[Vec3; 14]> {
    let t = tables();
    aatype
        .iter()
        .enumerate()
        .map(|(i, &a)| {
            let r = restype(a);
            std::array::from_fn(|s| {
                if t.atom14_mask[r][s] {
                    frames[i][t.atom14_rigid_group[r][s] as usize]
                        .apply(t.atom14_ideal_positions[r][s])
                } else {
                    [0.0; 3]
                }
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::residue_constants::{ATOM14_NAMES, residue_bonds};
    use crate::rigid::distance;

    /// Ideal geometry rebuilt at arbitrary torsions reproduces the literature bond
    /// lengths (every bond of every residue type).
    #[test]
    fn ideal_geometry_reproduces_literature_bond_lengths() {
        let torsions = [
            [0.0, 1.0],
            [0.3, 0.95],
            [0.5, -0.866],
            [0.8, 0.6],
            [-0.6, 0.8],
            [1.0, 0.0],
            [0.0, -1.0],
        ];
        for r in 0..20u8 {
            let frames = frames_from_torsions(&[r], &[Rigid::IDENTITY], &[torsions]);
            let atoms = atom14_from_frames(&[r], &frames);
            let slot = |name: &str| ATOM14_NAMES[r as usize].iter().position(|n| *n == name);
            for b in residue_bonds(r as usize) {
                // The proline ring closes only at ring-compatible chis; arbitrary chis open it.
                if (b.atom1, b.atom2) == ("CD", "N") {
                    continue;
                }
                let (i, j) = (slot(b.atom1).unwrap(), slot(b.atom2).unwrap());
                let d = distance(atoms[0][i], atoms[0][j]);
                assert!(
                    (d - b.length).abs() < 0.06,
                    "{} {}-{}: ideal {d} vs literature {}",
                    rc::RESTYPE_NAMES[r as usize],
                    b.atom1,
                    b.atom2,
                    b.length
                );
            }
        }
    }

    #[test]
    fn torsions_of_rebuilt_ideal_residue_round_trip() {
        // Build an ideal LYS at known chis, read its torsions back.
        let lys = rc::restype_index(b'K');
        let chis = [0.4f32, -1.2, 2.9, -0.3];
        let mut tors = [[0.0f32, 1.0]; 7];
        for (k, c) in chis.iter().enumerate() {
            tors[3 + k] = [c.sin(), c.cos()];
        }
        let frames = frames_from_torsions(&[lys], &[Rigid::IDENTITY], &[tors]);
        let a14 = atom14_from_frames(&[lys], &frames);
        let t = tables();
        let mut pos37 = [[0.0f32; 3]; 37];
        let mut mask37 = [0.0f32; 37];
        for s in 0..14 {
            if t.atom14_mask[lys as usize][s] {
                pos37[t.atom14_to_atom37[lys as usize][s] as usize] = a14[0][s];
                mask37[t.atom14_to_atom37[lys as usize][s] as usize] = 1.0;
            }
        }
        let back = torsion_angles(&[lys], &[pos37], &[mask37]);
        for (k, c) in chis.iter().enumerate() {
            let [s, co] = back.sin_cos[0][3 + k];
            assert!(
                (s.atan2(co) - c).abs() < 1e-3,
                "chi{} {} vs {c}",
                k + 1,
                s.atan2(co)
            );
            assert_eq!(back.mask[0][3 + k], 1.0);
        }
        assert_eq!(back.mask[0][0], 0.0, "no omega for the first residue");
    }
}
