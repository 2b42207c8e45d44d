//! `synth`: every synthetic file parses with our parsers into exactly what synth meant
//! to write, the geometry is ideal, and a seed fixes the corpus.

use scalefold_featurize::geometry::torsion_angles;
use scalefold_featurize::residue_constants::restype_index;
use scalefold_featurize::rigid::distance;
use scalefold_ingest::synth::{CorpusPlan, SynthConfig, generate_entry, write_corpus};
use scalefold_ingest::{MmcifOptions, read_alignment, read_hhr, read_mmcif};

fn small_config(seed: u64) -> SynthConfig {
    SynthConfig {
        chains: 14,
        seed,
        min_length: 20,
        max_length: 90,
        min_msa_depth: 5,
        max_msa_depth: 60,
        gzip_fraction: 0.3,
    }
}

#[test]
fn every_synthetic_file_parses_to_what_synth_meant() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(7);
    let summary = write_corpus(dir.path(), &config).unwrap();
    assert_eq!(summary.chains, 14);
    let plan = CorpusPlan::new(&config).unwrap();
    assert_eq!(plan.entry_count(), summary.entries);
    let mut gz = 0;
    let mut hits_seen = 0;
    for e in 0..plan.entry_count() {
        let entry = generate_entry(&plan, e);
        let cif = dir.path().join(&entry.files[0].path);
        gz += cif.to_string_lossy().ends_with(".gz") as usize;
        let parsed = read_mmcif(&cif, &MmcifOptions::default())
            .unwrap_or_else(|err| panic!("{}: {err}", cif.display()));
        assert_eq!(parsed.id, entry.id);
        assert_eq!(parsed.header.structure_method, entry.method.to_lowercase());
        assert_eq!(
            parsed.header.release_date.as_deref(),
            Some(entry.release_date.as_str())
        );
        assert!((parsed.header.resolution - entry.resolution).abs() < 1e-4);
        assert_eq!(parsed.chains.len(), entry.chains.len(), "{}", entry.id);
        for (got, want) in parsed.chains.iter().zip(&entry.chains) {
            assert_eq!(got.chain_id, want.chain_id);
            assert_eq!(got.sequence, want.sequence, "{}", want.key);
            let n = want.sequence.len();
            assert_eq!(got.residue_index, (1..=n as i32).collect::<Vec<_>>());
            assert_eq!(got.atom_mask, want.atom_mask, "{}: mask", want.key);
            for i in 0..n {
                for a in 0..37 {
                    if want.atom_mask[i][a] > 0.0 {
                        for k in 0..3 {
                            let d =
                                (got.atom_positions[i][a][k] - want.atom_positions[i][a][k]).abs();
                            assert!(d <= 1e-3, "{} residue {i} atom {a}: off by {d}", want.key);
                        }
                    }
                }
            }
            let chain_dir = dir.path().join("alignments").join(&want.key);
            let a3m = read_alignment(&chain_dir.join("a3m/bfd_uniclust_hits.a3m")).unwrap();
            assert_eq!(a3m, want.a3m, "{}: a3m", want.key);
            let sto = read_alignment(&chain_dir.join("uniref90_hits.sto")).unwrap();
            assert_eq!(sto, want.stockholm, "{}: stockholm", want.key);
            let hits = read_hhr(&chain_dir.join("hhr/pdb70_hits.hhr")).unwrap();
            assert_eq!(hits.len(), want.hits.len());
            for (h, w) in hits.iter().zip(&want.hits) {
                assert_eq!(h.name, w.name);
                assert_eq!(h.query, w.query);
                assert_eq!(h.hit_sequence, w.hit_sequence);
                assert_eq!(h.indices_query, w.indices_query);
                assert_eq!(h.indices_hit, w.indices_hit);
                assert_eq!(h.aligned_cols, w.aligned_cols);
                assert!((h.sum_probs - w.sum_probs).abs() < 1e-3);
                assert!((h.probability - w.probability).abs() < 1e-4);
            }
            hits_seen += hits.len();
        }
    }
    assert!(gz > 0, "some files are gzip-compressed");
    assert!(hits_seen > 0, "some chains have template hits");
    let clusters = std::fs::read_to_string(dir.path().join("clusters.txt")).unwrap();
    let members: usize = clusters.lines().map(|l| l.split_whitespace().count()).sum();
    assert_eq!(members, 14);
}

#[test]
fn synthetic_backbones_have_ideal_geometry_and_the_drawn_torsions() {
    let plan = CorpusPlan::new(&small_config(3)).unwrap();
    let mut checked = 0;
    for e in 0..plan.entry_count() {
        for chain in generate_entry(&plan, e).chains {
            let aatype: Vec<u8> = chain.sequence.bytes().map(restype_index).collect();
            let m = &chain.atom_mask;
            let p = &chain.atom_positions;
            for i in 1..aatype.len() {
                if m[i - 1][2] > 0.0 && m[i][0] > 0.0 && m[i][1] > 0.0 {
                    let peptide = distance(p[i - 1][2], p[i][0]);
                    assert!((peptide - 1.329).abs() < 1e-2, "C-N {peptide}");
                    let ca_ca = distance(p[i - 1][1], p[i][1]);
                    assert!((ca_ca - 3.80).abs() < 0.05, "CA-CA {ca_ca}");
                    checked += 1;
                }
            }
            // omega of resolved consecutive residues is trans.
            let tors = torsion_angles(&aatype, p, m);
            for i in 0..aatype.len() {
                if tors.mask[i][0] > 0.0 {
                    let [s, c] = tors.sin_cos[i][0];
                    assert!(c < -0.99 && s.abs() < 0.1, "omega ({s}, {c})");
                }
            }
        }
    }
    assert!(checked > 100);
}

#[test]
fn a_seed_fixes_the_corpus() {
    let a = CorpusPlan::new(&small_config(11)).unwrap();
    let b = CorpusPlan::new(&small_config(11)).unwrap();
    let c = CorpusPlan::new(&small_config(12)).unwrap();
    let bytes = |plan: &CorpusPlan| -> Vec<Vec<u8>> {
        (0..plan.entry_count())
            .flat_map(|e| generate_entry(plan, e).files.into_iter().map(|f| f.bytes))
            .collect()
    };
    assert_eq!(bytes(&a), bytes(&b));
    assert_ne!(bytes(&a), bytes(&c));
}
