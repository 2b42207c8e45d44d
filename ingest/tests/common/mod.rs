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
