//! Every `golden/mmcif/*.json` (the AlphaFold reference's output) is reproduced exactly:
//! sequences, header, masks and counts; positions to 1e-3.

mod common;

use scalefold_featurize::inputs::Structure;
use scalefold_ingest::{Heterogeneity, MmcifOptions, read_mmcif};
use serde_json::Value;

fn input_for(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let plain = dir.join("mmcif").join(format!("{name}.cif"));
    if plain.exists() {
        plain
    } else {
        dir.join("mmcif").join(format!("{name}.cif.gz"))
    }
}

fn compare(name: &str, parsed: &Structure, golden: &Value) {
    let header = &golden["header"];
    assert_eq!(
        parsed.header.structure_method,
        header["structure_method"].as_str().unwrap(),
        "{name}"
    );
    assert_eq!(
        parsed.header.release_date.as_deref(),
        header["release_date"].as_str(),
        "{name}"
    );
    assert!(
        (parsed.header.resolution as f64 - header["resolution"].as_f64().unwrap()).abs() < 1e-6,
        "{name}: resolution {}",
        parsed.header.resolution
    );
    let chains = golden["chains"].as_object().unwrap();
    let mut ids: Vec<&str> = parsed.chains.iter().map(|c| c.chain_id.as_str()).collect();
    ids.sort_unstable();
    let golden_ids: Vec<&str> = chains.keys().map(String::as_str).collect();
    assert_eq!(ids, golden_ids, "{name}: chain ids");
    for chain in &parsed.chains {
        let g = &chains[&chain.chain_id];
        let what = format!("{name} chain {}", chain.chain_id);
        assert_eq!(chain.sequence, g["sequence"].as_str().unwrap(), "{what}");
        let n_res = g["n_res"].as_u64().unwrap() as usize;
        assert_eq!(chain.atom_mask.len(), n_res, "{what}");
        let resolved = chain
            .atom_mask
            .iter()
            .filter(|m| m.iter().any(|&v| v > 0.0))
            .count();
        assert_eq!(
            resolved as u64,
            g["resolved_residues"].as_u64().unwrap(),
            "{what}"
        );
        let atoms: f32 = chain.atom_mask.iter().flatten().sum();
        assert_eq!(atoms as u64, g["atoms"].as_u64().unwrap(), "{what}");
        common::assert_atom37_matches(
            &what,
            &chain.atom_positions,
            &chain.atom_mask,
            &g["all_atom_positions"],
            &g["all_atom_mask"],
        );
    }
}

#[test]
fn every_mmcif_golden_matches() {
    let Some(dir) = common::testdata() else {
        return;
    };
    let mut seen = 0;
    let mut entries: Vec<_> = std::fs::read_dir(dir.join("golden/mmcif"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for golden_path in entries {
        let name = golden_path
            .file_stem()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let golden = common::golden(&golden_path);
        // The reference keeps every heterogeneous residue; compare in its mode.
        let options = MmcifOptions {
            heterogeneity: Heterogeneity::EveryEntry,
        };
        let parsed =
            read_mmcif(&input_for(&dir, &name), &options).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed.id, name);
        compare(&name, &parsed, &golden[&name]);
        if name == "5kc1" {
            // The reference's order: entity order, then `_struct_asym` order.
            let order: String = parsed.chains.iter().map(|c| c.chain_id.as_str()).collect();
            assert_eq!(order, "CDABGHKLEFIJ");
        }
        seen += 1;
    }
    assert!(seen >= 7, "expected the 7 mmCIF goldens, found {seen}");
}

#[test]
fn first_choice_heterogeneity_keeps_sequence_and_coordinates_aligned() {
    let Some(dir) = common::testdata() else {
        return;
    };
    let parsed = read_mmcif(&dir.join("mmcif/1pfe.cif.gz"), &MmcifOptions::default()).unwrap();
    let chain = &parsed.chains[0];
    // DSN ALA N2C|NCY MVA DSN ALA NCY|N2C MVA: one residue per position, all resolved.
    assert_eq!(chain.sequence, "XAXVXAXV");
    assert_eq!(chain.residue_index, vec![1, 2, 3, 4, 5, 6, 7, 8]);
    assert!(chain.atom_mask.iter().all(|m| m.iter().any(|&v| v > 0.0)));
}

#[test]
fn other_structures_parse_with_first_model_only() {
    let Some(dir) = common::testdata() else {
        return;
    };
    for name in ["1psm", "2crb", "3u8v", "4i6p"] {
        let parsed = read_mmcif(&input_for(&dir, name), &MmcifOptions::default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!parsed.chains.is_empty(), "{name}");
        for chain in &parsed.chains {
            assert_eq!(chain.sequence.len(), chain.atom_mask.len());
            assert!(
                chain.atom_mask.iter().flatten().any(|&m| m > 0.0),
                "{name} {}",
                chain.chain_id
            );
        }
    }
    let nmr = read_mmcif(&dir.join("mmcif/2crb.cif"), &MmcifOptions::default()).unwrap();
    assert_eq!(nmr.header.resolution, 0.0);
    assert!(
        nmr.header.structure_method.contains("nmr"),
        "{}",
        nmr.header.structure_method
    );
}
