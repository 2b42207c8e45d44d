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
        let plan = common::shuffle_plan(cached.as_ref(), 5, 8, 2);
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

/// Writes `rows` rows with a `blob` column (row i: `len(i)` bytes of value `i`) in
/// sources of 16 rows, small row groups.
async fn write_blobs(url: &str, rows: usize) {
    use arrow::array::{BinaryArray, Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("blob", DataType::Binary, false),
    ]));
    let options = scalefold_storage::WriterOptions {
        row_group_bytes: 4 << 10,
        ..Default::default()
    };
    let mut writer = scalefold_storage::DatasetWriter::create(url, schema.clone(), options)
        .await
        .unwrap();
    for (s, start) in (0..rows).step_by(16).enumerate() {
        let ids: Vec<i64> = (start..rows.min(start + 16)).map(|i| i as i64).collect();
        let blobs: Vec<Vec<u8>> = ids.iter().map(|&i| blob(i)).collect();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(BinaryArray::from_iter_values(blobs)),
            ],
        )
        .unwrap();
        writer.write_source(&format!("s{s}"), &batch).await.unwrap();
    }
    writer.finish_and_commit().await.unwrap();
}

/// The blob of row `id`: short ones (inlined in a view) and long ones.
fn blob(id: i64) -> Vec<u8> {
    vec![id as u8; (id as usize * 53) % 900]
}

#[test]
fn binary_views_deliver_the_same_bytes_and_transforms_need_not_care() {
    use arrow::datatypes::DataType;
    use scalefold_loader::{BinaryLayout, RowRef, TransformError};
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("blobs").display().to_string();
    let rt = runtime();
    rt.block_on(write_blobs(&url, 300));
    let source = rt
        .block_on(DatasetSource::open(
            &url,
            Some(vec!["blob".into(), "id".into()]),
        ))
        .unwrap();
    assert_eq!(source.binary_layout(), BinaryLayout::Offsets, "the default");
    let views = source.clone().with_binary_layout(BinaryLayout::Views);
    assert_eq!(
        views.with_projection(None).unwrap().binary_layout(),
        BinaryLayout::Views,
        "a new projection keeps the layout"
    );
    assert_ne!(
        views.identity(),
        source.identity(),
        "disk caches keep the layouts apart"
    );
    // One transform for both layouts: it reads the bytes through `RowRef::bytes`.
    let transform = |row: RowRef<'_>, _seed: u64| -> Result<(i64, bool, bool), TransformError> {
        let id = common::read_id(row, 0)?;
        let is_view = row.column("blob")?.data_type() == &DataType::BinaryView;
        Ok((id, row.bytes("blob")? == blob(id).as_slice(), is_view))
    };
    // The disk cache stores and returns view batches as they are.
    let cached = CachedSource::open(views.clone(), dir.path().join("cache"), 64 << 20).unwrap();
    let direct = rt.block_on(views.fetch(1)).unwrap();
    for _ in 0..2 {
        assert_eq!(rt.block_on(cached.fetch(1)).unwrap(), direct);
    }
    assert!(cached.cached_bytes() > 0);
    for (source, expect_views) in [(source, false), (views, true)] {
        let plan = common::shuffle_plan(&source, 2, 4, 2);
        let config = LoaderConfig {
            workers: 2,
            ..LoaderConfig::default()
        };
        let loader = Loader::new(Arc::new(source), plan, transform, config).unwrap();
        let mut samples: Vec<(i64, bool, bool)> = loader.flat_map(|b| b.unwrap().samples).collect();
        samples.sort();
        let expected: Vec<(i64, bool, bool)> = (0..300).map(|i| (i, true, expect_views)).collect();
        assert_eq!(samples, expected);
    }
}

#[test]
fn row_accessors_name_the_column_that_is_missing_or_not_binary() {
    use scalefold_loader::RowRef;
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("numbers").display().to_string();
    let rt = runtime();
    rt.block_on(common::write_numbers(&url, 1, 10));
    let source = rt.block_on(DatasetSource::open(&url, None)).unwrap();
    let batch = rt.block_on(source.fetch(0)).unwrap();
    let row = RowRef {
        batch: &batch,
        index: 3,
        row: 3,
    };
    let missing = row.bytes("nope").unwrap_err().to_string();
    assert!(
        missing.contains("\"nope\"") && missing.contains("row 3"),
        "{missing}"
    );
    let wrong = row.bytes("value").unwrap_err().to_string();
    assert!(
        wrong.contains("\"value\"") && wrong.contains("Float32"),
        "{wrong}"
    );
}

#[test]
fn batches_straddling_row_groups_stream_within_a_tiny_budget() {
    // 85-row row groups and batches of 4: some batches need the end of one row group
    // (still held for earlier batches) and the start of the next. With a budget below
    // one row group such a batch once waited forever for bytes that only it could free.
    let groups = (0..6).map(|g| common::numbers(g * 85, 85, "k")).collect();
    let source = scalefold_loader::MemorySource::new("straddle", groups);
    let plan = common::shuffle_plan(&source, 11, 4, 1);
    let config = LoaderConfig {
        window: 4,
        workers: 2,
        prefetch_bytes: 1,
        stall_timeout: Some(std::time::Duration::from_secs(10)),
        ..LoaderConfig::default()
    };
    let loader = Loader::new(Arc::new(source), plan, common::read_id, config).unwrap();
    let mut ids: Vec<i64> = loader.flat_map(|b| b.unwrap().samples).collect();
    ids.sort();
    ids.dedup();
    // 510 rows make 127 batches of 4; the 2 rows left over are dropped.
    assert_eq!(ids.len(), 508, "every planned row once");
    assert!(ids.iter().all(|&id| (0..510).contains(&id)));
}
