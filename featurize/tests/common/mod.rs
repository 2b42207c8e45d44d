//! Shared helpers of the integration tests: locating and reading the golden test data.

use std::path::PathBuf;

/// The test-data folder from `SCALEFOLD_TESTDATA`; `None` (with a note) when the variable
/// is unset; panics with a clear message when it is set but the folder is missing.
pub fn testdata() -> Option<PathBuf> {
    let Some(dir) = std::env::var_os("SCALEFOLD_TESTDATA") else {
        eprintln!("SCALEFOLD_TESTDATA is unset: skipping a test that needs the real test data");
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

/// One chain of a golden mmCIF json: (name, sequence, atom37 positions, atom37 masks).
pub type GoldenChain = (String, String, Vec<[[f32; 3]; 37]>, Vec<[f32; 37]>);

/// Reads every chain of `golden/mmcif/NAME.json`.
pub fn golden_chains(dir: &std::path::Path, name: &str) -> Vec<GoldenChain> {
    let path = dir.join("golden/mmcif").join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let json: serde_json::Value = serde_json::from_str(&text).expect("golden json parses");
    let chains = json[name]["chains"].as_object().expect("golden has chains");
    chains
        .iter()
        .map(|(id, c)| {
            let seq = c["sequence"].as_str().expect("sequence").to_string();
            let pos: Vec<Vec<[f32; 3]>> =
                serde_json::from_value(c["all_atom_positions"].clone()).expect("positions");
            let mask: Vec<Vec<f32>> =
                serde_json::from_value(c["all_atom_mask"].clone()).expect("mask");
            let pos = pos
                .into_iter()
                .map(|r| r.try_into().expect("37 atoms per residue"))
                .collect();
            let mask = mask
                .into_iter()
                .map(|r| r.try_into().expect("37 atoms per residue"))
                .collect();
            (format!("{name}_{id}"), seq, pos, mask)
        })
        .collect()
}
