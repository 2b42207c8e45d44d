//! The query73 merge reproduces the reference's MSA exactly, and hhr hits carry the
//! reference's summed probabilities.

mod common;

use scalefold_featurize::residue_constants::msa_id;
use scalefold_ingest::{merge_alignments, read_alignment, read_hhr};

/// The alphabet the golden's `msa` ids actually index: HHblits' alphabetical order (its
/// `alphabet` label names our order, but every row decodes to the input text only in
/// this one). We store ids in our order (`MSA_ALPHABET`), so golden ids are relabelled.
const HHBLITS_ORDER: &[u8; 22] = b"ACDEFGHIKLMNPQRSTVWYX-";

/// Index of the first differing row, for a short failure message.
fn first_difference<T: PartialEq>(a: &[T], b: &[T]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y)
}

#[test]
fn query73_merge_matches_reference() {
    let Some(dir) = common::testdata() else {
        return;
    };
    let golden = common::golden(&dir.join("golden/msa/query73.json"));
    let folder = dir.join("msa/query73");
    let order = [
        "uniref90_hits.sto",
        "bfd_uniclust_hits.a3m",
        "mgnify_hits.sto",
    ];
    let parsed: Vec<_> = order
        .iter()
        .map(|name| read_alignment(&folder.join(name)).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    let inputs: Vec<(&str, _)> = order.iter().copied().zip(parsed.iter()).collect();
    let msa = merge_alignments(&inputs).unwrap();
    assert_eq!(
        msa.msa.len(),
        golden["num_alignments"].as_u64().unwrap() as usize
    );
    assert_eq!(msa.msa.len(), 1136);
    let rows = |k: &str| -> Vec<Vec<u64>> {
        golden[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap())
                    .collect()
            })
            .collect()
    };
    let ours: Vec<Vec<u64>> = msa
        .msa
        .iter()
        .map(|r| r.iter().map(|&v| v as u64).collect())
        .collect();
    let golden_msa: Vec<Vec<u64>> = rows("msa")
        .iter()
        .map(|r| {
            r.iter()
                .map(|&i| msa_id(HHBLITS_ORDER[i as usize]).unwrap() as u64)
                .collect()
        })
        .collect();
    assert_eq!(ours.len(), golden_msa.len());
    assert_eq!(
        first_difference(&ours, &golden_msa),
        None,
        "first differing msa row"
    );
    let deletions: Vec<Vec<u64>> = msa
        .deletion_matrix
        .iter()
        .map(|r| r.iter().map(|&v| v as u64).collect())
        .collect();
    let golden_deletions = rows("deletion_matrix_int");
    assert_eq!(deletions.len(), golden_deletions.len());
    assert_eq!(
        first_difference(&deletions, &golden_deletions),
        None,
        "first differing deletion row"
    );
    let query = std::fs::read_to_string(folder.join("query.fasta")).unwrap();
    assert_eq!(
        parsed[0].row(0),
        query.lines().nth(1).unwrap().trim().as_bytes()
    );
    // a3m rows from UniProt carry species ids.
    assert!(msa.species_ids.iter().any(|s| !s.is_empty()));
}

#[test]
fn hhr_hits_match_reference_sum_probs() {
    let Some(dir) = common::testdata() else {
        return;
    };
    let golden = common::golden(&dir.join("golden/msa/query73.json"));
    let hits = read_hhr(&dir.join("msa/query73/pdb70_hits.hhr")).unwrap();
    assert_eq!(hits.len(), 10);
    assert_eq!(hits[0].index, 1);
    assert!(hits[0].name.starts_with("1HF9_B ATPASE INHIBITOR"));
    assert!((hits[0].probability - 0.0751).abs() < 1e-6);
    assert_eq!(hits[0].aligned_cols, 22);
    assert_eq!(hits[0].query, "AEHHHKAAEHHEQAAKHHHAAA");
    assert_eq!(hits[0].hit_sequence, "ISHHAKEIERLQKEIERHKQSI");
    assert_eq!(hits[0].indices_query, (6..28).collect::<Vec<i32>>());
    assert_eq!(hits[0].indices_hit, (9..31).collect::<Vec<i32>>());
    let names = golden["template_domain_names"].as_array().unwrap();
    let sums = golden["template_sum_probs"].as_array().unwrap();
    let mut checked = 0;
    for (name, sum) in names.iter().zip(sums) {
        let (name, sum) = (name.as_str().unwrap(), sum.as_f64().unwrap());
        if sum == 0.0 {
            continue; // the reference zeroes hits it realigned; nothing to compare
        }
        let hit = hits
            .iter()
            .find(|h| {
                h.name
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .eq_ignore_ascii_case(name)
            })
            .unwrap_or_else(|| panic!("no hit {name}"));
        assert!(
            (hit.sum_probs as f64 - sum).abs() < 1e-4,
            "{name}: {} vs {sum}",
            hit.sum_probs
        );
        checked += 1;
    }
    assert_eq!(checked, 6);
    for hit in &hits {
        assert_eq!(hit.query.len(), hit.hit_sequence.len());
        assert_eq!(hit.indices_query.len(), hit.query.len());
    }
}
