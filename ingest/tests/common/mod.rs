//! Shared helpers of the integration tests: finding the test data.

#![allow(dead_code)]

use std::path::PathBuf;

/// The test-data folder from `SCALEFOLD_TESTDATA`; `None` (with a note) when the variable
/// is unset. Panics with a clear message when it is set but the folder is missing.
pub fn testdata() -> Option<PathBuf> {
    let Some(dir) = std::env::var_os("SCALEFOLD_TESTDATA") else {
        eprintln!(
            "note: SCALEFOLD_TESTDATA is unset; skipping a test that needs the real test data"
        );
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

/// Reads and parses a JSON golden file.
pub fn golden(path: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read golden {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad JSON in {}: {e}", path.display()))
}

/// Asserts atom37 positions and masks equal a golden's (`[n][37][3]` and `[n][37]` JSON
/// arrays): masks exactly, positions to 1e-3 (the goldens round to three decimals).
pub fn assert_atom37_matches(
    what: &str,
    positions: &[[[f32; 3]; 37]],
    mask: &[[f32; 37]],
    golden_positions: &serde_json::Value,
    golden_mask: &serde_json::Value,
) {
    let golden_positions = golden_positions.as_array().expect("positions array");
    let golden_mask = golden_mask.as_array().expect("mask array");
    assert_eq!(positions.len(), golden_positions.len(), "{what}: residues");
    assert_eq!(mask.len(), golden_mask.len(), "{what}: residues");
    let residues = positions
        .iter()
        .zip(mask)
        .zip(golden_positions.iter().zip(golden_mask));
    for (i, ((pos, m), (gp, gm))) in residues.enumerate() {
        for (a, (p, v)) in pos.iter().zip(m).enumerate() {
            let expected_mask = gm[a].as_f64().expect("mask value");
            assert_eq!(*v as f64, expected_mask, "{what} residue {i} atom {a} mask");
            for (k, c) in p.iter().enumerate() {
                let expected = gp[a][k].as_f64().expect("coordinate");
                assert!(
                    (*c as f64 - expected).abs() <= 1e-3 + 1e-9,
                    "{what} residue {i} atom {a}: {c} vs {expected}"
                );
            }
        }
    }
}
