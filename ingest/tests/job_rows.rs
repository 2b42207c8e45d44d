//! The ingest job end to end on a synthetic corpus: one row per chain holding exactly
//! the parsed structure, the merged alignments, templates and clusters; the worker split
//! plus commit gives the same dataset as one worker.

mod job_common;

use std::collections::HashMap;

use arrow::datatypes::DataType;
use job_common::{content, corpus_and_config, rows, run, small_corpus};
use scalefold_featurize::residue_constants::restype_index;
use scalefold_ingest::job::IngestConfig;
use scalefold_ingest::merge_alignments;
use scalefold_ingest::schema::{batch_to_rows, rows_to_batch};
use scalefold_ingest::synth::{CorpusPlan, generate_entry};
use scalefold_storage::{BinaryLayout, Dataset};

#[test]
fn every_chain_becomes_one_row_with_its_parsed_features() {
    let dir = tempfile::tempdir().unwrap();
    let synth = small_corpus(16, 5);
    let config = corpus_and_config(dir.path(), &synth);
    let report = run(&config);
    assert_eq!(report.failed(), 0, "{}", report.summary());
    assert!(report.committed);
    let rows = rows(&config.out);
    assert_eq!(rows.len(), 16);
    assert_eq!(report.chains_written, 16);
    let by_chain: HashMap<&str, _> = rows
        .iter()
        .map(|r| (r.record.chain_id.as_str(), r))
        .collect();

    let plan = CorpusPlan::new(&synth).unwrap();
    let clusters = plan.clusters();
    let mut with_templates = 0;
    for e in 0..plan.entry_count() {
        let entry = generate_entry(&plan, e);
        for chain in &entry.chains {
            let row = by_chain[chain.key.as_str()];
            let r = &row.record;
            assert_eq!(r.sequence, chain.sequence);
            let aatype: Vec<i8> = chain
                .sequence
                .bytes()
                .map(|c| restype_index(c) as i8)
                .collect();
            assert_eq!(r.aatype, aatype);
            assert_eq!(r.release_date.as_deref(), Some(entry.release_date.as_str()));
            assert_eq!(r.structure_method, entry.method.to_lowercase());
            for (i, residue) in chain.atom_positions.iter().enumerate() {
                for (a, atom) in residue.iter().enumerate() {
                    let mask = r.all_atom_mask[i * 37 + a];
                    assert_eq!(mask as f32, chain.atom_mask[i][a]);
                    for (k, want) in atom.iter().enumerate() {
                        let got = r.all_atom_positions[(i * 37 + a) * 3 + k];
                        assert!((got - want).abs() <= 1e-3 || mask == 0);
                    }
                }
            }
            // The MSA is the Stockholm (UniRef90) then a3m (BFD) merge with duplicates removed.
            let msa = merge_alignments(&[("sto", &chain.stockholm), ("a3m", &chain.a3m)]).unwrap();
            assert_eq!(r.num_alignments as usize, msa.msa.len(), "{}", chain.key);
            assert_eq!(r.msa, msa.msa.concat());
            let deletions: Vec<u16> = msa
                .deletion_matrix
                .concat()
                .iter()
                .map(|&d| d as u16)
                .collect();
            assert_eq!(r.deletion_matrix, deletions);
            assert!(r.templates.num_templates <= 4);
            with_templates += (r.templates.num_templates > 0) as usize;
            let cluster = clusters
                .iter()
                .position(|c| c.contains(&chain.key))
                .unwrap();
            assert_eq!(row.cluster_id, cluster as i64);
            assert_eq!(row.cluster_size as usize, clusters[cluster].len());
        }
    }
    assert!(with_templates > 0, "some chains found templates");
    // The schema round-trips.
    let batch = rows_to_batch(&rows).unwrap();
    assert_eq!(batch_to_rows(&batch).unwrap(), rows);
    // Read with binary columns as views (the loader's layout), the rows are the same.
    let (views, view_rows) = job_common::runtime().block_on(async {
        let dataset = Dataset::open(&config.out).await.unwrap();
        let (mut views, mut out) = (0, Vec::new());
        for (shard, info) in dataset.shards().iter().enumerate() {
            for group in 0..info.row_group_rows.len() {
                let batch = dataset
                    .read_row_group_with(shard, group, None, BinaryLayout::Views)
                    .await
                    .unwrap();
                views += batch
                    .columns()
                    .iter()
                    .filter(|c| *c.data_type() == DataType::BinaryView)
                    .count();
                out.extend(batch_to_rows(&batch).unwrap());
            }
        }
        (views, out)
    });
    assert!(views >= 6, "the binary columns were read as views");
    assert_eq!(view_rows, rows);
}

#[test]
fn workers_split_the_inputs_and_commit_merges_them() {
    let dir = tempfile::tempdir().unwrap();
    let config = corpus_and_config(dir.path(), &small_corpus(14, 9));
    run(&config);
    let single = content(&config.out);
    let split_out = dir.path().join("split").display().to_string();
    let mut assigned = 0;
    for worker in 0..3 {
        let report = run(&scalefold_ingest::job::IngestConfig {
            out: split_out.clone(),
            worker,
            workers: 3,
            ..config.clone()
        });
        assert!(!report.committed);
        assigned += report.assigned;
    }
    assert_eq!(assigned, single.len());
    job_common::runtime()
        .block_on(scalefold_storage::commit(&split_out))
        .unwrap();
    assert_eq!(content(&split_out), single);
}

/// A run stopped part-way (as a killed one would be: open shards lost) and run again
/// gives the dataset of an uninterrupted run, and its report still lists the failures
/// of sources finished before the stop.
#[test]
fn a_partial_run_resumes_to_the_same_dataset_and_report() {
    let dir = tempfile::tempdir().unwrap();
    let synth = small_corpus(24, 17);
    let config = corpus_and_config(dir.path(), &synth);
    let plan = CorpusPlan::new(&synth).unwrap();
    let multi = (0..plan.entry_count())
        .map(|e| generate_entry(&plan, e))
        .find(|e| e.chains.len() > 1)
        .expect("an entry with several chains");
    let missing = &multi.chains[1].key;
    std::fs::remove_dir_all(dir.path().join("corpus/alignments").join(missing)).unwrap();

    let reference = run(&config);
    let expected = content(&config.out);
    let out = dir.path().join("resumed").display().to_string();
    let partial = scalefold_ingest::job::IngestConfig {
        out: out.clone(),
        shard_bytes: 1,
        writers: 1,
        limit: Some(plan.entry_count() / 2),
        ..config.clone()
    };
    let first = run(&partial);
    assert!(!first.committed);
    let resumed = run(&scalefold_ingest::job::IngestConfig {
        limit: None,
        ..partial
    });
    assert!(resumed.committed);
    assert!(
        resumed.already_done > 0,
        "the second run skipped finished sources"
    );
    assert_eq!(content(&out), expected);
    assert_eq!(resumed.lines, reference.lines);
    assert!(resumed.lines.iter().any(|l| &l.input == missing));
}

/// The alignment-database form (a few concatenated files plus a JSON index of byte
/// ranges) gives the same rows as the per-chain folders it was built from.
#[test]
fn an_alignment_database_gives_the_rows_of_the_folders() {
    let dir = tempfile::tempdir().unwrap();
    let config = corpus_and_config(dir.path(), &small_corpus(12, 23));
    run(&config);
    let expected = content(&config.out);

    // Concatenate every chain folder's files into two database files, with an index.
    let db_dir = dir.path().join("db");
    std::fs::create_dir_all(&db_dir).unwrap();
    let mut dbs = [Vec::new(), Vec::new()];
    let mut index = serde_json::Map::new();
    let mut chains: Vec<_> = std::fs::read_dir(dir.path().join("corpus/alignments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    chains.sort();
    for (i, chain) in chains.iter().enumerate() {
        let db = &mut dbs[i % 2];
        let mut files = Vec::new();
        for relative in [
            "a3m/bfd_uniclust_hits.a3m",
            "uniref90_hits.sto",
            "hhr/pdb70_hits.hhr",
        ] {
            let bytes = std::fs::read(chain.join(relative)).unwrap();
            let name = relative.rsplit('/').next().unwrap();
            files.push(serde_json::json!([name, db.len(), bytes.len()]));
            db.extend_from_slice(&bytes);
        }
        let key = chain.file_name().unwrap().to_string_lossy().to_string();
        index.insert(
            key,
            serde_json::json!({"db": format!("alignment_db_{}.db", i % 2), "files": files}),
        );
    }
    for (i, db) in dbs.iter().enumerate() {
        std::fs::write(db_dir.join(format!("alignment_db_{i}.db")), db).unwrap();
    }
    let index_path = dir.path().join("alignment_db.index");
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();

    let out = dir.path().join("from-db").display().to_string();
    let report = run(&scalefold_ingest::job::IngestConfig {
        alignments: db_dir.display().to_string(),
        alignment_index: Some(index_path.display().to_string()),
        out: out.clone(),
        ..config
    });
    assert_eq!(report.failed(), 0, "{}", report.summary());
    assert_eq!(content(&out), expected);
}

#[test]
fn the_structure_cache_parses_each_file_once_and_changes_no_row() {
    let dir = tempfile::tempdir().unwrap();
    let synth = small_corpus(24, 11);
    // One CPU thread: with several, two threads may both parse a file the cache does not
    // hold yet (harmless, but it would make the count below vary).
    let cached = IngestConfig {
        threads: 1,
        ..corpus_and_config(dir.path(), &synth)
    };
    let entries = CorpusPlan::new(&synth).unwrap().entry_count();
    let report = run(&cached);
    assert_eq!(report.failed(), 0, "{}", report.summary());
    // Every file is parsed once, whether first needed for its own rows or as a template.
    assert_eq!(report.structures_parsed, entries);
    assert!(
        report.structures_from_cache > 0,
        "templates came from the cache"
    );

    let uncached = IngestConfig {
        out: dir.path().join("ds-uncached").display().to_string(),
        template_cache_mib: 0,
        ..cached.clone()
    };
    let report = run(&uncached);
    assert_eq!(report.structures_from_cache, 0);
    assert!(
        report.structures_parsed > entries,
        "without the cache templates are parsed again: {} parses of {entries} files",
        report.structures_parsed
    );
    assert_eq!(content(&cached.out), content(&uncached.out));
}
