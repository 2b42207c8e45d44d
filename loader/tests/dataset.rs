//! The loader over a storage-crate dataset on local disk, with projection and the disk cache.

mod common;

use std::sync::Arc;

use scalefold_loader::{
    CachedSource, DatasetSource, Loader, LoaderConfig, Plan, PlanConfig, RowGroupSource, Sampling,
    compute_weights, source::row_group_rows,
};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn streams_every_row_of_a_dataset_once_through_the_disk_cache() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("numbers").display().to_string();
    let rt = runtime();
    rt.block_on(common::write_numbers(&url, 12, 200));
    let source = rt
        .block_on(DatasetSource::open(&url, Some(vec!["id".into()])))
        .unwrap();
    assert!(
        source.row_groups().len() > 4,
        "small row groups: {}",
        source.row_groups().len()
    );
    let cache_dir = dir.path().join("cache");
    for pass in 0..2 {
        let cached = Arc::new(CachedSource::open(source.clone(), &cache_dir, 64 << 20).unwrap());
        let plan = Plan::new(
            PlanConfig {
                seed: 5,
                rank: 0,
                world_size: 1,
                batch_size: 8,
                sampling: Sampling::Shuffle {
                    block_row_groups: 2,
                },
            },
            &row_group_rows(cached.as_ref()),
        )
        .unwrap();
        let config = LoaderConfig {
            workers: 2,
            window: 4,
            ..LoaderConfig::default()
        };
        let loader = Loader::new(cached.clone(), plan, common::read_id, config).unwrap();
        let mut ids: Vec<i64> = loader.flat_map(|b| b.unwrap().samples).collect();
        ids.sort();
        assert_eq!(ids, (0..2400).collect::<Vec<_>>(), "pass {pass}");
        assert!(cached.cached_bytes() > 0);
    }
}

#[test]
fn weights_come_from_columns_and_unknown_columns_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("numbers").display().to_string();
    let rt = runtime();
    rt.block_on(common::write_numbers(&url, 3, 50));
    let source = rt.block_on(DatasetSource::open(&url, None)).unwrap();
    let err = source
        .with_projection(Some(vec!["nope".into()]))
        .err()
        .unwrap();
    assert!(err.to_string().contains("nope"), "{err}");
    let weights_source = source.with_projection(Some(vec!["id".into()])).unwrap();
    // Only even ids are drawn.
    let weights = rt
        .block_on(compute_weights(&weights_source, 4, |batch, i| {
            let id = common::read_id(
                scalefold_loader::RowRef {
                    batch,
                    index: i,
                    row: 0,
                },
                0,
            )
            .unwrap();
            if id % 2 == 0 { 1.0 } else { 0.0 }
        }))
        .unwrap();
    assert_eq!(weights.len(), 150);
    let sampling = Sampling::Weighted {
        weights: weights.into(),
        samples_per_epoch: 60,
    };
    let plan = Plan::new(
        PlanConfig {
            seed: 1,
            rank: 0,
            world_size: 1,
            batch_size: 1,
            sampling,
        },
        &row_group_rows(&weights_source),
    )
    .unwrap();
    let loader = Loader::new(
        Arc::new(weights_source),
        plan,
        common::read_id,
        LoaderConfig::default(),
    )
    .unwrap();
    let ids: Vec<i64> = loader.flat_map(|b| b.unwrap().samples).collect();
    assert_eq!(ids.len(), 60);
    assert!(ids.iter().all(|id| id % 2 == 0), "{ids:?}");
}
