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
        aatype.extend(chain.sequence.bytes().map(|c| restype_index(c) as u64));
        residue_index.extend(chain.residue_index.iter().map(|&n| n as i64));
        chain_index.extend(std::iter::repeat_n(ci, chain.sequence.len()));
        positions.extend_from_slice(&chain.atom_positions);
        mask.extend_from_slice(&chain.atom_mask);
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
    common::assert_atom37_matches(
        "rnase_frag",
        &positions,
        &mask,
        &g["atom_positions"],
        &g["atom_mask"],
    );
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
