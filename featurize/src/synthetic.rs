//! Synthetic chain records for benchmarks and tests: realistic sizes and value
//! distributions (MSA rows mutated from the query with gaps and deletions, a helical
//! backbone, templates copied from the chain with noise), generated from a seed.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::features::ChainRecord;
use crate::residue_constants::{ATOM_TYPE_NUM, RESTYPES, tables};
use crate::templates::TemplateFeatures;

/// A record of `n_res` residues with an `msa_rows`-row MSA and `num_templates` templates.
pub fn synthetic_record(
    n_res: usize,
    msa_rows: usize,
    num_templates: usize,
    seed: u64,
) -> ChainRecord {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let t = tables();
    let aatype: Vec<i8> = (0..n_res).map(|_| rng.random_range(0..20i8)).collect();
    let sequence: String = aatype
        .iter()
        .map(|&a| RESTYPES[a as usize] as char)
        .collect();
    // Alpha-helix-like CA trace (1.5 Å rise, 100° per residue, radius 2.3 Å); other atoms
    // of each residue scattered around its CA within 2.5 Å.
    let mut positions = vec![0.0f32; n_res * ATOM_TYPE_NUM * 3];
    let mut mask = vec![0u8; n_res * ATOM_TYPE_NUM];
    for i in 0..n_res {
        let angle = i as f32 * 100f32.to_radians();
        let ca = [2.3 * angle.cos(), 2.3 * angle.sin(), 1.5 * i as f32];
        for a in 0..ATOM_TYPE_NUM {
            if !t.atom37_mask[aatype[i] as usize][a] {
                continue;
            }
            mask[i * ATOM_TYPE_NUM + a] = 1;
            for k in 0..3 {
                let jitter = if a == 1 {
                    0.0
                } else {
                    rng.random_range(-1.4f32..1.4)
                };
                positions[(i * ATOM_TYPE_NUM + a) * 3 + k] = ca[k] + jitter;
            }
        }
    }
    let mut msa = Vec::with_capacity(msa_rows * n_res);
    let mut deletions = Vec::with_capacity(msa_rows * n_res);
    msa.extend(aatype.iter().map(|&a| a as u8));
    deletions.resize(n_res, 0u16);
    for _ in 1..msa_rows {
        let identity: f32 = rng.random_range(0.2..0.9);
        for &a in &aatype {
            let u: f32 = rng.random();
            msa.push(if u < identity {
                a as u8
            } else if u < identity + 0.1 {
                21
            } else {
                rng.random_range(0..21u8)
            });
            deletions.push(if rng.random::<f32>() < 0.05 {
                rng.random_range(1..40)
            } else {
                0
            });
        }
    }
    let mut templates = TemplateFeatures {
        num_templates: num_templates as u32,
        ..Default::default()
    };
    for k in 0..num_templates {
        templates.aatype.extend(
            aatype
                .iter()
                .map(|&a| if rng.random::<f32>() < 0.1 { 21 } else { a }),
        );
        templates
            .all_atom_positions
            .extend(positions.iter().map(|p| p + rng.random_range(-0.5f32..0.5)));
        templates.all_atom_mask.extend_from_slice(&mask);
        templates.sum_probs.push(100.0 - k as f32);
        templates.domain_names.push(format!("t{k:03}_A"));
    }
    // Template residues that are gaps carry no atoms.
    for (r, &a) in templates.aatype.iter().enumerate() {
        if a == 21 {
            templates.all_atom_mask[r * ATOM_TYPE_NUM..(r + 1) * ATOM_TYPE_NUM].fill(0);
        }
    }
    ChainRecord {
        chain_id: format!("synthetic{seed}_A"),
        sequence,
        residue_index: (1..=n_res as i32).collect(),
        seq_length: n_res as u32,
        between_segment_residues: vec![0; n_res],
        all_atom_positions: positions,
        all_atom_mask: mask,
        resolution: 2.0,
        release_date: Some("2020-01-01".into()),
        structure_method: "synthetic".into(),
        is_distillation: false,
        msa,
        deletion_matrix: deletions,
        num_alignments: msa_rows as u32,
        msa_species_ids: vec![String::new(); msa_rows],
        aatype,
        templates,
    }
}
