//! The chain schema round-trips every valid record (property test), and its checksum
//! sees every feature.

use proptest::prelude::*;
use scalefold_featurize::ChainRecord;
use scalefold_featurize::templates::TemplateFeatures;
use scalefold_ingest::schema::{
    ChainRow, batch_to_rows, chain_schema, features_checksum, rows_to_batch,
};

/// A valid record; with `ingest_like`, as ingest builds them (positions 0.0 where the
/// mask is 0, mostly zero deletions: the schema's compact forms), else arbitrary values
/// (the schema's dense fallback for positions).
fn record() -> impl Strategy<Value = ChainRecord> {
    (
        1usize..12,
        1usize..5,
        0usize..3,
        any::<u64>(),
        any::<bool>(),
    )
        .prop_map(|(n, m, t, seed, ingest_like)| {
            // A small deterministic generator keeps the strategy simple and shrinkable by size.
            let mut state = seed | 1;
            let mut next = move |k: u64| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state % k
            };
            let aatype: Vec<i8> = (0..n).map(|_| next(21) as i8).collect();
            let all_atom_mask: Vec<u8> = (0..n * 37).map(|_| next(2) as u8).collect();
            let template_mask: Vec<u8> = (0..t * n * 37).map(|_| next(2) as u8).collect();
            let positions = |mask: &[u8], next: &mut dyn FnMut(u64) -> u64| -> Vec<f32> {
                mask.iter()
                    .flat_map(|&m| {
                        [(); 3]
                            .map(|_| next(20_000) as f32 / 7.0 - 1000.0)
                            .map(|v| if ingest_like && m == 0 { 0.0 } else { v })
                    })
                    .collect()
            };
            let all_atom_positions = positions(&all_atom_mask, &mut next);
            let template_positions = positions(&template_mask, &mut next);
            let deletion_matrix = (0..m * n)
                .map(|_| {
                    if ingest_like && next(10) < 8 {
                        0
                    } else {
                        next(70_000) as u16
                    }
                })
                .collect();
            ChainRecord {
                chain_id: format!("{}_A", next(10_000)),
                sequence: aatype
                    .iter()
                    .map(|&a| *b"ARNDCQEGHILKMFPSTWYVX".get(a as usize).unwrap() as char)
                    .collect(),
                residue_index: (0..n as i32).map(|i| i - next(3) as i32).collect(),
                seq_length: n as u32,
                between_segment_residues: vec![0; n],
                all_atom_positions,
                all_atom_mask,
                resolution: next(40) as f32 / 10.0,
                release_date: (next(2) == 0).then(|| "2001-02-03".to_string()),
                structure_method: "x-ray diffraction".to_string(),
                is_distillation: next(2) == 0,
                msa: (0..m * n).map(|_| next(22) as u8).collect(),
                deletion_matrix,
                num_alignments: m as u32,
                msa_species_ids: (0..m)
                    .map(|i| {
                        if i % 2 == 0 {
                            String::new()
                        } else {
                            "HUMAN".into()
                        }
                    })
                    .collect(),
                aatype,
                templates: TemplateFeatures {
                    num_templates: t as u32,
                    aatype: (0..t * n).map(|_| next(22) as i8).collect(),
                    all_atom_positions: template_positions,
                    all_atom_mask: template_mask,
                    sum_probs: (0..t).map(|_| next(100) as f32).collect(),
                    domain_names: (0..t).map(|i| format!("1ab{i}_B")).collect(),
                },
            }
        })
}

proptest! {
    #[test]
    fn rows_round_trip_through_record_batches(records in proptest::collection::vec(record(), 1..4)) {
        let rows: Vec<ChainRow> = records
            .into_iter()
            .enumerate()
            .map(|(i, record)| ChainRow {
                source_key: format!("{i}.cif"),
                record,
                cluster_id: i as i64 - 1,
                cluster_size: i as u32 + 1,
                source_checksum: i as u64 * 31,
            })
            .collect();
        let batch = rows_to_batch(&rows).unwrap();
        prop_assert_eq!(batch.schema(), chain_schema());
        prop_assert_eq!(batch_to_rows(&batch).unwrap(), rows);
    }

    #[test]
    fn the_features_checksum_sees_every_array(record in record(), which in 0usize..6) {
        let mut changed = record.clone();
        match which {
            0 => changed.all_atom_positions[0] += 0.5,
            1 => changed.msa[0] = (changed.msa[0] + 1) % 22,
            2 => changed.deletion_matrix[0] = changed.deletion_matrix[0].wrapping_add(1),
            3 => changed.residue_index[0] += 1,
            4 => changed.all_atom_mask[0] ^= 1,
            _ => changed.msa_species_ids[0].push('X'),
        }
        prop_assert_ne!(features_checksum(&record), features_checksum(&changed));
    }
}
