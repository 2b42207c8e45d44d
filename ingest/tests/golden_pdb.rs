//! The PDB-format parser reproduces the reference's `rnase_frag` output and reads the
//! files the reference rejects (insertion codes) or crashes on (blank chain id).

mod common;

use scalefold_featurize::residue_constants::restype_index;
use scalefold_ingest::read_pdb;

/// The reference's chain alphabet: chain_index is a position in it.
const PDB_CHAIN_IDS: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

#[test]
fn rnase_fragment_matches_reference() {
    let Some(dir) = common::testdata() else {
        return;
    };
    let golden = common::golden(&dir.join("golden/pdb_rnase_frag.json"));
    let g = &golden["rnase_frag"];
    let entry = read_pdb(&dir.join("pdb/rnase_frag.pdb")).unwrap();
    let (mut aatype, mut residue_index, mut chain_index, mut positions, mut mask) =
        (vec![], vec![], vec![], vec![], vec![]);
    for chain in &entry.structure.chains {
        let ci = PDB_CHAIN_IDS.find(chain.chain_id.as_str()).unwrap() as u64;
        for i in 0..chain.sequence.len() {
            aatype.push(restype_index(chain.sequence.as_bytes()[i]) as u64);
            residue_index.push(chain.residue_index[i] as i64);
            chain_index.push(ci);
            positions.push(chain.atom_positions[i]);
            mask.push(chain.atom_mask[i]);
        }
    }
    let ints = |k: &str| -> Vec<i64> {
        g[k].as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect()
    };
    assert_eq!(
        aatype.iter().map(|&v| v as i64).collect::<Vec<_>>(),
        ints("aatype")
    );
    assert_eq!(residue_index, ints("residue_index"));
    assert_eq!(
        chain_index.iter().map(|&v| v as i64).collect::<Vec<_>>(),
        ints("chain_index")
    );
    let g_pos = g["atom_positions"].as_array().unwrap();
    let g_mask = g["atom_mask"].as_array().unwrap();
    for i in 0..aatype.len() {
        for a in 0..37 {
            assert_eq!(
                mask[i][a] as f64,
                g_mask[i][a].as_f64().unwrap(),
                "residue {i} atom {a}"
            );
            for k in 0..3 {
                let expected = g_pos[i][a][k].as_f64().unwrap();
                assert!(
                    (positions[i][a][k] as f64 - expected).abs() <= 1e-3,
                    "residue {i} atom {a}"
                );
            }
        }
    }
}

#[test]
fn insertion_codes_and_blank_chain_ids_parse() {
    let Some(dir) = common::testdata() else {
        return;
    };
    let orc = read_pdb(&dir.join("pdb/1orc.pdb")).unwrap();
    let a = &orc.structure.chains[0];
    // 56 and 56A are two residues.
    let at_56 = a.residue_index.iter().filter(|&&n| n == 56).count();
    assert!(at_56 >= 2, "residues numbered 56: {at_56}");
    assert!(!orc.seqres.is_empty());
    assert_eq!(orc.structure.header.structure_method, "x-ray diffraction");

    let gdr = read_pdb(&dir.join("pdb/pdb1gdr.ent")).unwrap();
    let blank = gdr
        .structure
        .chains
        .iter()
        .find(|c| c.chain_id.is_empty())
        .expect("blank chain");
    assert!(blank.sequence.starts_with("MRL"), "{}", blank.sequence);
    // A CA-only model: one atom per residue.
    assert!(blank.atom_mask.iter().all(|m| m.iter().sum::<f32>() == 1.0));
    assert_eq!(gdr.structure.id, "pdb1gdr");
}
