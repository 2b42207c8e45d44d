//! Invariants of the seeded per-sample transform on synthetic records.

use proptest::prelude::*;
use scalefold_featurize::synthetic::synthetic_record;
use scalefold_featurize::transform::{MSA_FEAT_CHANNELS, Sample, SampleConfig, make_sample};

fn shapes(s: &Sample, c: &SampleConfig) -> Vec<(String, Vec<usize>)> {
    s.tensors(c)
        .into_iter()
        .map(|t| (t.name, t.shape))
        .collect()
}

fn check_invariants(s: &Sample, c: &SampleConfig, record_len: usize) {
    let n = c.crop_size;
    let len = s.seq_length as usize;
    assert_eq!(len, record_len.min(n));
    for t in s.tensors(c) {
        assert_eq!(t.len, t.shape.iter().product::<usize>(), "{}", t.name);
    }
    assert_eq!(s.recycles.len(), c.num_recycling_iterations);
    // Sequence masks and target_feat one-hots.
    for j in 0..n {
        let real = j < len;
        assert_eq!(s.seq_mask[j], f32::from(real));
        let onehot: f32 = s.target_feat[j * 22 + 1..(j + 1) * 22].iter().sum();
        assert_eq!(onehot, f32::from(real), "target_feat residue {j}");
        if !real {
            assert!(
                s.all_atom_mask[j * 37..(j + 1) * 37]
                    .iter()
                    .all(|&m| m == 0.0)
            );
            assert_eq!(s.pseudo_beta_mask[j], 0.0);
            assert!(
                s.rigidgroups_gt_exists[j * 8..(j + 1) * 8]
                    .iter()
                    .all(|&m| m == 0.0)
            );
        }
    }
    let m = c.num_msa_rows();
    for r in &s.recycles {
        let rows = r.msa_row_mask.iter().filter(|&&x| x == 1.0).count();
        assert!(rows >= 1);
        // Real rows come first; the query is row 0: its true residues are the crop's.
        assert!(r.msa_row_mask[..rows].iter().all(|&x| x == 1.0));
        assert_eq!(
            &r.true_msa[..len],
            &s.aatype[..len],
            "query first, columns aligned"
        );
        for i in 0..m {
            for j in 0..n {
                let real = i < rows && j < len;
                let mm = r.msa_mask[i * n + j];
                assert_eq!(mm, f32::from(real));
                let f = &r.msa_feat[(i * n + j) * MSA_FEAT_CHANNELS..][..MSA_FEAT_CHANNELS];
                let onehot: f32 = f[..23].iter().sum();
                assert_eq!(onehot, f32::from(real), "msa one-hot {i},{j}");
                let profile: f32 = f[25..48].iter().sum();
                if real {
                    assert!((profile - 1.0).abs() < 1e-4, "profile sums to 1: {profile}");
                    if r.bert_mask[i * n + j] == 0.0 {
                        assert_eq!(
                            f[r.true_msa[i * n + j] as usize],
                            1.0,
                            "unmasked keeps residue"
                        );
                    }
                } else {
                    assert!(f.iter().all(|&v| v == 0.0));
                    assert_eq!(r.bert_mask[i * n + j], 0.0);
                }
            }
        }
        let e = c.max_extra_msa;
        let extra_rows = r.extra_msa_row_mask.iter().filter(|&&x| x == 1.0).count();
        for i in 0..e {
            for j in 0..n {
                let real = i < extra_rows && j < len;
                assert_eq!(r.extra_msa_mask[i * n + j], f32::from(real));
                if !real {
                    assert_eq!(r.extra_msa[i * n + j], 0);
                    assert_eq!(r.extra_deletion_value[i * n + j], 0.0);
                }
            }
        }
    }
    let templates = s.template_mask.iter().filter(|&&x| x == 1.0).count();
    assert!(templates <= c.max_templates);
    for t in templates..c.max_templates {
        assert!(
            s.template_all_atom_mask[t * n * 37..(t + 1) * n * 37]
                .iter()
                .all(|&m| m == 0.0)
        );
    }
}

#[test]
fn tiny_preset_shapes_are_identical_across_inputs_and_invariants_hold() {
    let c = SampleConfig::tiny();
    let small = synthetic_record(9, 3, 0, 1);
    let large = synthetic_record(60, 200, 6, 2);
    let a = make_sample(&small, &c, 7).unwrap();
    let b = make_sample(&large, &c, 7).unwrap();
    assert_eq!(shapes(&a, &c), shapes(&b, &c));
    check_invariants(&a, &c, 9);
    check_invariants(&b, &c, 60);
}

#[test]
fn initial_training_preset_has_alphafold_shapes() {
    let c = SampleConfig::initial_training();
    let rec = synthetic_record(300, 40, 5, 3);
    let s = make_sample(&rec, &c, 11).unwrap();
    let shape = |name: &str| {
        s.tensors(&c)
            .into_iter()
            .find(|t| t.name == name)
            .unwrap()
            .shape
    };
    assert_eq!(shape("recycle0.msa_feat"), [124, 256, 49]);
    assert_eq!(shape("recycle3.extra_msa"), [1024, 256]);
    assert_eq!(shape("target_feat"), [256, 22]);
    assert_eq!(shape("template_all_atom_positions"), [4, 256, 37, 3]);
    check_invariants(&s, &c, 300);
}

#[test]
fn same_seed_is_bit_identical_and_different_seeds_differ() {
    let c = SampleConfig::tiny();
    let rec = synthetic_record(50, 100, 5, 4);
    let a = make_sample(&rec, &c, 42).unwrap();
    let b = make_sample(&rec, &c, 42).unwrap();
    assert_eq!(a, b);
    let d = make_sample(&rec, &c, 43).unwrap();
    assert_ne!(a, d);
    // Recycling iterations draw independently.
    assert_ne!(a.recycles[0].msa_feat, a.recycles[1].msa_feat);
}

#[test]
fn contiguous_crop_keeps_atoms_and_msa_columns_with_their_residues() {
    let c = SampleConfig::tiny();
    let rec = synthetic_record(80, 30, 2, 5);
    for seed in 0..5 {
        let s = make_sample(&rec, &c, seed).unwrap();
        let start = (s.residue_index[0] - 1) as usize;
        for j in 0..c.crop_size {
            let i = start + j;
            assert_eq!(s.residue_index[j], i as i32 + 1, "contiguous");
            assert_eq!(s.aatype[j] as i8, rec.aatype[i]);
            assert_eq!(
                &s.all_atom_positions[j * 111..(j + 1) * 111],
                &rec.all_atom_positions[i * 111..(i + 1) * 111]
            );
        }
        // The extra MSA rows are record rows cropped to the same columns.
        let r = &s.recycles[0];
        for e in 0..c.max_extra_msa {
            if r.extra_msa_row_mask[e] == 0.0 {
                continue;
            }
            let row = &r.extra_msa[e * c.crop_size..(e + 1) * c.crop_size];
            let found = (0..rec.num_alignments as usize)
                .any(|k| &rec.msa[k * 80 + start..k * 80 + start + c.crop_size] == row);
            assert!(found, "extra row {e} is a cropped record row");
        }
    }
}

#[test]
fn spatial_crop_takes_a_sorted_neighbourhood() {
    let c = SampleConfig {
        spatial_crop_probability: 1.0,
        ..SampleConfig::tiny()
    };
    let rec = synthetic_record(80, 10, 0, 6);
    let s = make_sample(&rec, &c, 3).unwrap();
    assert!(s.residue_index.windows(2).all(|w| w[0] < w[1]));
    check_invariants(&s, &c, 80);
}

#[test]
fn empty_chain_gives_an_all_padding_sample_and_dtypes_are_compact() {
    let c = SampleConfig::tiny();
    let s = make_sample(&synthetic_record(0, 1, 0, 8), &c, 1).unwrap();
    check_invariants(&s, &c, 0);
    let bytes = |name: &str| {
        s.tensors(&c)
            .into_iter()
            .find(|t| t.name == name)
            .unwrap()
            .elem_bytes
    };
    assert_eq!(bytes("aatype"), 1);
    assert_eq!(bytes("template_aatype"), 1);
    assert_eq!(bytes("residue_index"), 4);
    assert_eq!(bytes("all_atom_positions"), 4);
    let rec = s
        .tensors(&c)
        .into_iter()
        .find(|t| t.name == "recycle0.true_msa")
        .unwrap();
    assert_eq!(rec.elem_bytes, 1);
}

#[test]
fn bad_config_and_bad_record_are_errors() {
    let mut c = SampleConfig::tiny();
    c.max_msa_clusters = c.max_templates;
    let rec = synthetic_record(10, 3, 0, 7);
    assert!(make_sample(&rec, &c, 0).is_err());
    let mut broken = rec.clone();
    broken.msa.pop();
    assert!(make_sample(&broken, &SampleConfig::tiny(), 0).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]
    #[test]
    fn invariants_hold_for_any_size_and_seed(
        n_res in 1usize..40, rows in 1usize..60, templates in 0usize..5, seed in any::<u64>()
    ) {
        let c = SampleConfig::tiny();
        let rec = synthetic_record(n_res, rows, templates, seed);
        let s = make_sample(&rec, &c, seed).unwrap();
        check_invariants(&s, &c, n_res);
    }
}
