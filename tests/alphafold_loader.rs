//! The AlphaFold wiring of the streaming loader (issue 6): a dataset made by the ingest
//! job streams through the loader, whose transform (the trainer's
//! `train::data::featurize_row`, the one `scalefold train` uses) decodes each row into
//! featurize's `ChainRecord` and runs `make_sample` with the tiny preset.
//!
//! Checked over one epoch with a ready-first window of W = 4: every sample has the
//! preset's fixed shapes; every dataset row (chain) is delivered exactly once; no batch
//! is overtaken by W or more later ones; and two runs with the same seed give
//! bit-identical samples at every plan position (a third with another seed does not).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::TryStreamExt;
use scalefold_featurize::transform::MSA_FEAT_CHANNELS;
use scalefold_featurize::{Sample, SampleConfig};
use scalefold_ingest::job::{IngestConfig, ingest};
use scalefold_ingest::schema::batch_to_rows;
use scalefold_ingest::synth::{SynthConfig, write_corpus};
use scalefold_loader::{
    DatasetSource, Loader, LoaderConfig, Plan, PlanConfig, RowGroupSource, RowRef, Sampling,
};
use scalefold_storage::Dataset;
use scalefold_trainer::train::data::featurize_row;

/// The loader's window W.
const WINDOW: usize = 4;

/// One epoch's deliveries: plan position → (global row, chain key, sample), plus the
/// delivered batch sequence numbers in delivery order.
struct Epoch {
    by_position: BTreeMap<u64, (u64, String, Sample)>,
    delivery_order: Vec<u64>,
}

/// Streams one epoch of `source` with plan seed `seed`, batches of one (the AlphaFold
/// case) and window [`WINDOW`].
fn run_epoch(source: &DatasetSource, seed: u64, config: &SampleConfig) -> Epoch {
    let rows: Vec<u64> = source.row_groups().iter().map(|g| g.rows).collect();
    let plan = Plan::new(
        PlanConfig {
            seed,
            rank: 0,
            world_size: 1,
            batch_size: 1,
            sampling: Sampling::Shuffle {
                block_row_groups: 2,
            },
        },
        &rows,
    )
    .expect("plan");
    let transform_config = config.clone();
    let loader_config = LoaderConfig {
        window: WINDOW,
        workers: 2,
        epochs: Some(1),
        ..LoaderConfig::default()
    };
    let mut loader = Loader::new(
        Arc::new(source.clone()),
        plan,
        move |row: RowRef<'_>, seed: u64| featurize_row(row, seed, &transform_config),
        loader_config,
    )
    .expect("loader starts");
    let mut by_position = BTreeMap::new();
    let mut delivery_order = Vec::new();
    while let Some(batch) = loader.next_batch().expect("next batch") {
        assert!(
            batch.faults.is_empty(),
            "transform faults: {:?}",
            batch.faults
        );
        assert_eq!(batch.epoch, 0);
        assert_eq!(batch.samples.len(), batch.entries.len());
        delivery_order.push(batch.seq);
        for (entry, delivered) in batch.entries.iter().zip(batch.samples) {
            let previous = by_position.insert(
                entry.position,
                (entry.row, delivered.chain, delivered.sample),
            );
            assert!(
                previous.is_none(),
                "position {} delivered twice",
                entry.position
            );
        }
    }
    assert_eq!(loader.delivery_log(), delivery_order.as_slice());
    Epoch {
        by_position,
        delivery_order,
    }
}

/// A sample's exact content as text: `{:?}` prints every `f32` in its shortest form
/// that reads back to the same bits (and `-0.0` apart from `0.0`), so equal texts mean
/// bit-identical samples as long as no NaN occurs (asserted).
fn exact_text(sample: &Sample) -> String {
    let text = format!("{sample:?}");
    assert!(!text.contains("NaN"), "a sample holds NaN");
    text
}

#[test]
fn ingested_dataset_streams_through_featurize_in_fixed_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus");
    let dataset_url = dir.path().join("ds").display().to_string();
    // Lengths 12..40 around the tiny crop of 16: some samples are cropped, some padded.
    let synth = SynthConfig {
        chains: 12,
        seed: 11,
        min_length: 12,
        max_length: 40,
        min_msa_depth: 4,
        max_msa_depth: 30,
        gzip_fraction: 0.3,
    };
    write_corpus(&corpus, &synth).expect("synthetic corpus");
    let ingest_config = IngestConfig {
        structures: corpus.join("mmcif").display().to_string(),
        alignments: corpus.join("alignments").display().to_string(),
        out: dataset_url.clone(),
        clusters: Some(corpus.join("clusters.txt").display().to_string()),
        threads: 2,
        writers: 2,
        // Tiny row groups, so the plan shuffles across several of them.
        row_group_bytes: 1,
        ..IngestConfig::default()
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let report = runtime
        .block_on(ingest(&ingest_config, &|_| {}))
        .expect("ingest job");
    assert_eq!(report.failed(), 0, "ingest failures:\n{}", report.summary());

    // Every chain of the dataset, read directly, by global row order.
    let expected_chains: BTreeSet<String> = runtime.block_on(async {
        let dataset = Dataset::open(&dataset_url).await.expect("dataset opens");
        let batches: Vec<_> = dataset
            .stream(None)
            .try_collect()
            .await
            .expect("dataset reads");
        batches
            .iter()
            .flat_map(|b| batch_to_rows(b).expect("rows decode"))
            .map(|r| format!("{}/{}", r.source_key, r.record.chain_id))
            .collect()
    });
    let source = runtime
        .block_on(DatasetSource::open(&dataset_url, None))
        .expect("loader source opens");
    let total_rows: u64 = source.row_groups().iter().map(|g| g.rows).sum();
    assert!(
        total_rows >= 8,
        "the corpus should give at least 8 chains, got {total_rows}"
    );
    assert_eq!(
        expected_chains.len() as u64,
        total_rows,
        "chain keys are unique"
    );
    assert!(
        source.row_groups().len() > 1,
        "the dataset should span several row groups"
    );

    let config = SampleConfig::tiny();
    let first = run_epoch(&source, 5, &config);

    // Every row exactly once: positions 0..rows, each global row once, each chain once.
    assert_eq!(
        first.by_position.keys().copied().collect::<Vec<_>>(),
        (0..total_rows).collect::<Vec<_>>()
    );
    let rows_seen: BTreeSet<u64> = first.by_position.values().map(|v| v.0).collect();
    assert_eq!(rows_seen, (0..total_rows).collect());
    let chains_seen: BTreeSet<String> = first.by_position.values().map(|v| v.1.clone()).collect();
    assert_eq!(chains_seen, expected_chains);

    // Ready-first within the window: a batch is overtaken by at most W - 1 later ones.
    for (k, &seq) in first.delivery_order.iter().enumerate() {
        let overtaken_by = first.delivery_order[..k]
            .iter()
            .filter(|&&s| s > seq)
            .count();
        assert!(
            overtaken_by < WINDOW,
            "batch {seq} overtaken by {overtaken_by}"
        );
    }

    // Fixed shapes: the preset's, identical for every sample.
    let reference_shapes: Vec<(String, Vec<usize>)> = first.by_position[&0]
        .2
        .tensors(&config)
        .into_iter()
        .map(|t| (t.name, t.shape))
        .collect();
    let shape_of = |name: &str| -> &[usize] {
        &reference_shapes
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no tensor {name}"))
            .1
    };
    let (n, t, m, e) = (
        config.crop_size,
        config.max_templates,
        config.num_msa_rows(),
        config.max_extra_msa,
    );
    assert_eq!(shape_of("aatype"), [n]);
    assert_eq!(shape_of("template_aatype"), [t, n]);
    assert_eq!(shape_of("template_all_atom_positions"), [t, n, 37, 3]);
    assert_eq!(shape_of("recycle0.msa_feat"), [m, n, MSA_FEAT_CHANNELS]);
    assert_eq!(shape_of("recycle0.extra_msa"), [e, n]);
    let last_recycle = format!("recycle{}.msa_mask", config.num_recycling_iterations - 1);
    assert_eq!(shape_of(&last_recycle), [m, n]);
    for (position, (_, chain, sample)) in &first.by_position {
        assert_eq!(
            sample.recycles.len(),
            config.num_recycling_iterations,
            "{chain}"
        );
        let tensors = sample.tensors(&config);
        let shapes: Vec<(String, Vec<usize>)> = tensors
            .iter()
            .map(|t| (t.name.clone(), t.shape.clone()))
            .collect();
        assert_eq!(
            shapes, reference_shapes,
            "position {position} ({chain}): shapes"
        );
        for tensor in &tensors {
            assert_eq!(
                tensor.len,
                tensor.shape.iter().product::<usize>(),
                "position {position} ({chain}): {} holds {} values for shape {:?}",
                tensor.name,
                tensor.len,
                tensor.shape
            );
        }
    }

    // Both a padded (short) and a cropped (long) chain went through the same shapes.
    let lengths: BTreeSet<u32> = first.by_position.values().map(|v| v.2.seq_length).collect();
    assert!(
        lengths.first().is_some_and(|&l| (l as usize) < n) && lengths.contains(&(n as u32)),
        "the corpus should give both padded and cropped samples: lengths {lengths:?}"
    );

    // The same seed reproduces every position bit for bit.
    let second = run_epoch(&source, 5, &config);
    assert_eq!(second.by_position.len(), first.by_position.len());
    for (position, (row, chain, sample)) in &first.by_position {
        let (row2, chain2, sample2) = &second.by_position[position];
        assert_eq!(
            (row, chain),
            (row2, chain2),
            "position {position}: same row"
        );
        assert!(
            exact_text(sample) == exact_text(sample2),
            "position {position} ({chain}): samples differ between two runs with the same seed"
        );
    }

    // Another seed gives other samples for the same rows (the check above can fail).
    let other = run_epoch(&source, 6, &config);
    let by_row = |epoch: &Epoch| -> BTreeMap<u64, String> {
        epoch
            .by_position
            .values()
            .map(|(row, _, sample)| (*row, exact_text(sample)))
            .collect()
    };
    let (first_by_row, other_by_row) = (by_row(&first), by_row(&other));
    assert_eq!(
        first_by_row.keys().collect::<Vec<_>>(),
        other_by_row.keys().collect::<Vec<_>>()
    );
    let differing = first_by_row
        .iter()
        .filter(|(row, text)| other_by_row[row] != **text)
        .count();
    println!(
        "{total_rows} chains in {} row groups; delivery order {:?}; {differing} rows differ under another seed",
        source.row_groups().len(),
        first.delivery_order
    );
    assert!(
        differing * 2 > first_by_row.len(),
        "only {differing} of {} rows changed with another seed",
        first_by_row.len()
    );
}
