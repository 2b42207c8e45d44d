//! Template features of query73 against the reference pipeline's golden (issue 4).
//!
//! The hits of `msa/query73/pdb70_hits.hhr` are read with ingest's hhr reader, the
//! template structures of `mmcif/` with its mmCIF reader, and featurize's
//! `template_features` selects and maps them. The selected templates' names, sum_probs
//! and aligned sequences (template residue per query position, `-` where unaligned)
//! must equal `golden/msa/query73.json`, except for 1hf9, whose structure is absent from
//! the test data: its hit must be skipped as "structure missing".

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use scalefold_featurize::inputs::Structure;
use scalefold_featurize::residue_constants::MSA_ALPHABET;
use scalefold_featurize::templates::{SkipReason, TemplateSearchConfig, template_features};
use scalefold_ingest::{MmcifOptions, read_hhr, read_mmcif};

/// The PDB id whose structure the test data leaves out on purpose.
const ABSENT_PDB_ID: &str = "1hf9";

/// The test-data folder from `SCALEFOLD_TESTDATA`; `None` (with a note) when unset.
/// Panics with a clear message when it is set but the folder is missing.
fn testdata() -> Option<PathBuf> {
    let Some(dir) = std::env::var_os("SCALEFOLD_TESTDATA") else {
        eprintln!("note: SCALEFOLD_TESTDATA is unset; skipping the query73 template golden test");
        return None;
    };
    let dir = PathBuf::from(dir);
    assert!(
        dir.join("README.md").is_file(),
        "SCALEFOLD_TESTDATA is set to {} but that folder does not hold the test data",
        dir.display()
    );
    Some(dir)
}

/// Every structure of the mmCIF folder (`.cif` and `.cif.gz`), keyed by its entry id.
fn read_structures(dir: &Path) -> HashMap<String, Structure> {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    let mut structures = HashMap::new();
    for entry in entries {
        let path = entry.expect("directory entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !(name.ends_with(".cif") || name.ends_with(".cif.gz")) {
            continue;
        }
        let structure = read_mmcif(&path, &MmcifOptions::default())
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        structures.insert(structure.id.clone(), structure);
    }
    structures
}

/// A JSON array of strings from the golden.
fn golden_strings(golden: &serde_json::Value, key: &str) -> Vec<String> {
    golden[key]
        .as_array()
        .unwrap_or_else(|| panic!("golden key {key} is not an array"))
        .iter()
        .map(|v| v.as_str().expect("string").to_string())
        .collect()
}

#[test]
fn query73_templates_match_the_golden() {
    let Some(data) = testdata() else { return };
    let golden_path = data.join("golden/msa/query73.json");
    let golden: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&golden_path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", golden_path.display())),
    )
    .unwrap_or_else(|e| panic!("bad JSON in {}: {e}", golden_path.display()));

    let query = golden["sequence"].as_str().expect("golden sequence");
    let hits = read_hhr(&data.join("msa/query73/pdb70_hits.hhr")).expect("hhr parses");
    let structures = read_structures(&data.join("mmcif"));
    assert!(
        !structures.contains_key(ABSENT_PDB_ID),
        "the test data now holds {ABSENT_PDB_ID}; this test expects it absent"
    );

    let result = template_features(
        query,
        &hits,
        |id, _chain| structures.get(id),
        &TemplateSearchConfig::default(),
    );
    let features = &result.features;
    features
        .validate("query73", query.len())
        .expect("template features have consistent shapes");

    // The golden's templates, less the one whose structure is absent, in the same order.
    let golden_names = golden_strings(&golden, "template_domain_names");
    let golden_sequences = golden_strings(&golden, "template_sequence");
    let golden_sum_probs: Vec<f64> = golden["template_sum_probs"]
        .as_array()
        .expect("golden template_sum_probs")
        .iter()
        .map(|v| v.as_f64().expect("number"))
        .collect();
    assert_eq!(golden_names.len(), golden_sequences.len());
    assert_eq!(golden_names.len(), golden_sum_probs.len());
    let expected: Vec<usize> = (0..golden_names.len())
        .filter(|&i| !golden_names[i].starts_with(&format!("{ABSENT_PDB_ID}_")))
        .collect();
    assert_eq!(
        expected.len() + 1,
        golden_names.len(),
        "the golden selects {ABSENT_PDB_ID} exactly once"
    );

    let expected_names: Vec<&str> = expected.iter().map(|&i| golden_names[i].as_str()).collect();
    assert_eq!(features.domain_names, expected_names, "selected templates");
    assert_eq!(features.num_templates as usize, expected.len());

    for (t, &g) in expected.iter().enumerate() {
        let name = &golden_names[g];
        // Both sides hold the hhr's one-decimal value; the golden stored it as f32.
        assert!(
            (features.sum_probs[t] as f64 - golden_sum_probs[g]).abs() < 1e-6,
            "{name}: sum_probs {} vs golden {}",
            features.sum_probs[t],
            golden_sum_probs[g]
        );
        let n = query.len();
        let aligned: String = features.aatype[t * n..(t + 1) * n]
            .iter()
            .map(|&a| MSA_ALPHABET[a as usize] as char)
            .collect();
        assert_eq!(
            aligned, golden_sequences[g],
            "{name}: aligned template sequence"
        );
    }

    // 1hf9's hit is reported as skipped because its structure is missing.
    let absent: Vec<_> = result
        .skipped
        .iter()
        .filter(|s| {
            s.name
                .to_ascii_lowercase()
                .starts_with(&format!("{ABSENT_PDB_ID}_"))
        })
        .collect();
    assert_eq!(
        absent.len(),
        1,
        "one skipped hit for {ABSENT_PDB_ID}: {:?}",
        result.skipped
    );
    assert_eq!(absent[0].reason, SkipReason::StructureMissing);
    // No selected template was skipped as well: every hit is either used or reported once.
    assert_eq!(
        result.skipped.len() + features.num_templates as usize,
        hits.len(),
        "each hit is used or skipped exactly once: {:?}",
        result.skipped
    );
}
