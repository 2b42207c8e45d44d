//! Bad input gives a typed error naming the file and line and what was expected; random
//! mutations of the real files never make a parser panic.

mod common;

use proptest::prelude::*;
use scalefold_ingest::{
    MmcifOptions, ParseError, parse_a3m, parse_hhr, parse_mmcif, parse_pdb, parse_stockholm,
};

fn read(path: &std::path::Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Byte offset of the middle of the line holding the first occurrence of `needle`.
fn middle_of_line(bytes: &[u8], needle: &str) -> usize {
    let text = std::str::from_utf8(bytes).unwrap();
    let at = text.find(needle).unwrap();
    let end = text[at..].find('\n').map_or(text.len(), |n| at + n);
    (at + end) / 2
}

fn assert_names_file_and_line(err: &ParseError, file: &str) {
    assert_eq!(err.file(), file, "{err}");
    assert!(err.line().is_some_and(|l| l > 0), "no line in {err}");
    assert!(err.to_string().contains(file), "{err}");
    assert!(err.to_string().contains("expected"), "{err}");
}

/// A parser reduced to success or its error.
type Parser = fn(&str, &[u8]) -> Result<(), ParseError>;

fn mmcif(file: &str, bytes: &[u8]) -> Result<(), ParseError> {
    parse_mmcif(file, bytes, &MmcifOptions::default()).map(|_| ())
}

#[test]
fn truncated_mmcif_is_a_syntax_error_at_the_open_loop() {
    let Some(dir) = common::testdata() else {
        return;
    };
    let bytes = read(&dir.join("mmcif/4zey.cif"));
    let cut = middle_of_line(&bytes, "ATOM   100 ");
    let err = mmcif("4zey.cif", &bytes[..cut]).unwrap_err();
    assert_names_file_and_line(&err, "4zey.cif");
    assert!(err.to_string().contains("_atom_site"), "{err}");
}

#[test]
fn missing_value_in_loop_is_reported() {
    let Some(dir) = common::testdata() else {
        return;
    };
    let text = String::from_utf8(read(&dir.join("mmcif/3dg1_final.cif"))).unwrap();
    // Drop one value from the first _chem_comp row.
    let broken = text.replacen("ASN 'L-peptide linking'", "'L-peptide linking'", 1);
    assert_ne!(broken, text);
    let err = mmcif("3dg1_final.cif", broken.as_bytes()).unwrap_err();
    assert_names_file_and_line(&err, "3dg1_final.cif");
    assert!(err.to_string().contains("multiple of"), "{err}");
}

#[test]
fn missing_categories_are_named() {
    let Some(dir) = common::testdata() else {
        return;
    };
    let text = String::from_utf8(read(&dir.join("mmcif/3dg1_final.cif"))).unwrap();
    for category in [
        "_atom_site",
        "_entity_poly_seq",
        "_chem_comp",
        "_struct_asym",
    ] {
        let renamed = text.replace(&format!("{category}."), "_renamed_away.");
        let err = mmcif("3dg1_final.cif", renamed.as_bytes()).unwrap_err();
        assert_names_file_and_line(&err, "3dg1_final.cif");
        assert!(
            err.to_string().contains(&format!("category {category}")),
            "{err}"
        );
    }
}

#[test]
fn non_utf8_bytes_name_their_line() {
    let Some(dir) = common::testdata() else {
        return;
    };
    let cases: [(&str, &str, Parser); 4] = [
        ("mmcif/3dg1_final.cif", "_cell", mmcif),
        ("pdb/rnase_frag.pdb", "CRYST1", |f, b| {
            parse_pdb(f, b).map(|_| ())
        }),
        ("msa/2q2k_A/bfd_uniclust_hits.a3m", ">", |f, b| {
            parse_a3m(f, b).map(|_| ())
        }),
        ("msa/2q2k_A/mgnify_hits.sto", "#=GS", |f, b| {
            parse_stockholm(f, b).map(|_| ())
        }),
    ];
    for (path, marker, parse) in cases {
        let mut bytes = read(&dir.join(path));
        let at = std::str::from_utf8(&bytes).unwrap().find(marker).unwrap();
        let line = 1 + bytes[..at].iter().filter(|&&b| b == b'\n').count();
        bytes.insert(at, 0xff);
        let err = parse(path, &bytes).unwrap_err();
        assert!(matches!(err, ParseError::NotUtf8 { .. }), "{err}");
        assert_eq!(err.line(), Some(line), "{err}");
        assert!(err.to_string().contains("expected UTF-8"), "{err}");
    }
}

#[test]
fn binary_garbage_is_rejected_by_every_parser() {
    let garbage: Vec<u8> = (0u32..4096)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    assert!(mmcif("g.cif", &garbage).is_err());
    assert!(parse_pdb("g.pdb", &garbage).is_err());
    assert!(parse_a3m("g.a3m", &garbage).is_err());
    assert!(parse_stockholm("g.sto", &garbage).is_err());
    assert!(parse_hhr("g.hhr", &garbage).is_err());
}

#[test]
fn ragged_stockholm_row_names_its_line() {
    let Some(dir) = common::testdata() else {
        return;
    };
    let text = String::from_utf8(read(&dir.join("msa/query73/mgnify_hits.sto"))).unwrap();
    let row = text.lines().position(|l| l.starts_with("MGYP")).unwrap();
    let broken: Vec<String> = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i == row {
                l[..l.len() - 3].to_string()
            } else {
                l.to_string()
            }
        })
        .collect();
    let err = parse_stockholm("mgnify_hits.sto", broken.join("\n").as_bytes()).unwrap_err();
    assert_names_file_and_line(&err, "mgnify_hits.sto");
    assert!(err.to_string().contains("ragged"), "{err}");
}

/// One random edit of a byte buffer.
#[derive(Debug, Clone)]
enum Mutation {
    Truncate(usize),
    Delete(usize, usize),
    Insert(usize, Vec<u8>),
    Flip(usize, u8),
    Duplicate(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), 1usize..200).prop_map(|(a, n)| Mutation::Delete(a, n)),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..16)
        )
            .prop_map(|(a, b)| Mutation::Insert(a, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Mutation::Flip(a, b)),
        (any::<usize>(), 1usize..400).prop_map(|(a, n)| Mutation::Duplicate(a, n)),
        (
            any::<usize>(),
            prop::sample::select(vec![b'\'', b'"', b';', b'\n', b' ', b'_', b'#'])
        )
            .prop_map(|(a, b)| Mutation::Insert(a, vec![b])),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let len = bytes.len().max(1);
    match m {
        Mutation::Truncate(at) => bytes.truncate(at % len),
        Mutation::Delete(at, n) => {
            let start = at % len;
            let end = (start + n).min(bytes.len());
            bytes.drain(start.min(end)..end);
        }
        Mutation::Insert(at, b) => {
            let at = at % (bytes.len() + 1);
            bytes.splice(at..at, b.iter().copied());
        }
        Mutation::Flip(at, b) => {
            if !bytes.is_empty() {
                bytes[at % len] ^= b | 1;
            }
        }
        Mutation::Duplicate(at, n) => {
            let start = at % len;
            let end = (start + n).min(bytes.len());
            let chunk = bytes[start.min(end)..end].to_vec();
            bytes.splice(end..end, chunk);
        }
    }
}

/// Parses with every parser; any error must name the file.
fn parse_all(bytes: &[u8]) {
    let checks: [(&str, Result<(), ParseError>); 5] = [
        ("m.cif", mmcif("m.cif", bytes)),
        ("m.pdb", parse_pdb("m.pdb", bytes).map(|_| ())),
        ("m.a3m", parse_a3m("m.a3m", bytes).map(|_| ())),
        ("m.sto", parse_stockholm("m.sto", bytes).map(|_| ())),
        ("m.hhr", parse_hhr("m.hhr", bytes).map(|_| ())),
    ];
    for (file, result) in checks {
        if let Err(e) = result {
            assert_eq!(e.file(), file);
        }
    }
}

/// Mutated inputs per run: the parsers take well under a millisecond each, so this stays
/// a fraction of a second.
const MUTATION_CASES: u32 = 512;

#[test]
fn random_mutations_of_real_files_never_panic() {
    let Some(dir) = common::testdata() else {
        return;
    };
    let inputs: Vec<Vec<u8>> = [
        "mmcif/3dg1_final.cif",
        "mmcif/5i55.cif",
        "pdb/rnase_frag.pdb",
        "msa/2q2k_A/bfd_uniclust_hits.a3m",
        "msa/2q2k_A/uniref90_hits.sto",
        "msa/query73/pdb70_hits.hhr",
    ]
    .iter()
    .map(|p| read(&dir.join(p)))
    .collect();
    let config = ProptestConfig {
        cases: MUTATION_CASES,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let cases = std::sync::atomic::AtomicUsize::new(0);
    proptest!(config, |(which in 0..inputs.len(), edits in proptest::collection::vec(mutation(), 1..6))| {
        cases.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut bytes = inputs[which].clone();
        for m in &edits {
            apply(&mut bytes, m);
        }
        parse_all(&bytes);
    });
    assert_eq!(
        cases.into_inner(),
        MUTATION_CASES as usize,
        "every generated case ran"
    );
}

#[test]
fn truncated_gzip_names_the_file() {
    let Some(dir) = common::testdata() else {
        return;
    };
    let bytes = read(&dir.join("mmcif/1pfe.cif.gz"));
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("1pfe.cif.gz");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = scalefold_ingest::read_mmcif(&path, &MmcifOptions::default()).unwrap_err();
    assert!(matches!(err, ParseError::Gzip { .. }), "{err}");
    assert!(err.to_string().contains("1pfe.cif.gz"), "{err}");
}
