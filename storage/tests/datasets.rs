//! The storage suite, run against local disk, the in-process memory store and (when
//! `SCALEFOLD_TEST_S3_BUCKET` and the `AWS_*` variables point at a server) real S3.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryArray, Float32Builder, Int32Array, ListBuilder, RecordBatch, StringArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use futures::TryStreamExt;
use object_store::{ObjectStoreExt, PutPayload};
use scalefold_storage::{Dataset, DatasetWriter, StorageError, WriterOptions, commit};

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("length", DataType::Int32, false),
        Field::new(
            "values",
            DataType::List(Arc::new(Field::new("item", DataType::Float32, true))),
            false,
        ),
        Field::new("payload", DataType::Binary, false),
    ]))
}

/// A deterministic pseudo-random generator (splitmix64), so data is not trivially compressible.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The rows of source `source`: 1 to 3 rows with varying lengths and payloads.
fn source_batch(source: usize) -> RecordBatch {
    let n_rows = 1 + (mix(source as u64) % 3) as usize;
    let mut ids = Vec::new();
    let mut lengths = Vec::new();
    let mut payloads = Vec::new();
    let mut values = ListBuilder::new(Float32Builder::new());
    for r in 0..n_rows {
        let seed = mix((source * 7 + r) as u64);
        let length = 20 + (seed % 400) as i32;
        ids.push(format!("src{source:04}_{r}"));
        lengths.push(length);
        for i in 0..length {
            values
                .values()
                .append_value((mix(seed + i as u64) % 1000) as f32 / 10.0);
        }
        values.append(true);
        payloads.push(
            (0..length as u64 * 8)
                .map(|i| mix(seed ^ i) as u8)
                .collect::<Vec<u8>>(),
        );
    }
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(StringArray::from(ids)) as ArrayRef,
            Arc::new(Int32Array::from(lengths)),
            Arc::new(values.finish()),
            Arc::new(BinaryArray::from_iter_values(payloads)),
        ],
    )
    .unwrap()
}

fn small_options() -> WriterOptions {
    WriterOptions {
        row_group_bytes: 16 << 10,
        shard_bytes: 48 << 10,
        schema_version: 7,
        metadata: BTreeMap::from([("residue_constants_version".to_string(), "1".to_string())]),
        source_key_column: Some("id".into()),
        length_column: Some("length".into()),
        ..WriterOptions::default()
    }
}

/// Backends under test: each yields a fresh, empty dataset URL.
fn backends(test: &str) -> Vec<(String, Option<tempfile::TempDir>)> {
    let unique = format!(
        "{test}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let dir = tempfile::tempdir().unwrap();
    let mut out = vec![
        (dir.path().join("ds").display().to_string(), Some(dir)),
        (format!("memory://suite/{unique}"), None),
    ];
    match std::env::var("SCALEFOLD_TEST_S3_BUCKET") {
        Ok(bucket) => out.push((format!("s3://{bucket}/{unique}"), None)),
        Err(_) if std::env::var("CI").is_ok() => {
            panic!(
                "CI is set but SCALEFOLD_TEST_S3_BUCKET is not: .ci/run must start the S3 server"
            )
        }
        Err(_) => eprintln!("note: SCALEFOLD_TEST_S3_BUCKET unset, skipping the S3 backend"),
    }
    out
}

async fn write_sources(
    url: &str,
    sources: impl IntoIterator<Item = usize>,
    options: WriterOptions,
) -> DatasetWriter {
    let mut writer = DatasetWriter::create(url, schema(), options).await.unwrap();
    for s in sources {
        let key = format!("source-{s}");
        if !writer.is_finished(&key) {
            writer.write_source(&key, &source_batch(s)).await.unwrap();
        }
    }
    writer
}

async fn all_rows(dataset: &Dataset) -> RecordBatch {
    let batches: Vec<RecordBatch> = dataset.stream(None).try_collect().await.unwrap();
    arrow::compute::concat_batches(&dataset.schema(), &batches).unwrap()
}

fn ids(batch: &RecordBatch) -> Vec<String> {
    let col = batch.column_by_name("id").unwrap();
    let col = col.as_any().downcast_ref::<StringArray>().unwrap();
    col.iter().map(|s| s.unwrap().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_shard_write_reads_back_equal() {
    for (url, _dir) in backends("roundtrip") {
        let writer = write_sources(&url, 0..60, small_options()).await;
        let manifest = writer.finish_and_commit().await.unwrap();
        assert!(manifest.shards.len() >= 3, "{url}: expected several shards");
        assert!(
            manifest.shards.iter().any(|s| s.row_group_rows.len() >= 2),
            "{url}: expected shards with several row groups"
        );
        for shard in &manifest.shards {
            // Row groups are bounded by bytes: each is at most the bound plus one source's rows.
            for &bytes in &shard.row_group_bytes {
                assert!(bytes <= 32 << 10, "{url}: row group of {bytes} bytes");
            }
        }
        let expected: Vec<RecordBatch> = (0..60).map(source_batch).collect();
        let expected = arrow::compute::concat_batches(&schema(), &expected).unwrap();

        let dataset = Dataset::open(&url).await.unwrap();
        assert_eq!(dataset.manifest().schema_version, 7);
        assert_eq!(dataset.num_rows(), expected.num_rows() as u64);
        let stats = dataset.manifest().length_stats().unwrap();
        assert_eq!(stats.count, expected.num_rows() as u64);
        assert_eq!(
            all_rows(&dataset).await,
            expected,
            "{url}: streamed rows differ"
        );

        // Row groups one by one, in manifest order, give the same rows again.
        let mut pieces = Vec::new();
        for (s, shard) in dataset.shards().iter().enumerate() {
            for (g, &rows) in shard.row_group_rows.iter().enumerate() {
                let batch = dataset.read_row_group(s, g, None).await.unwrap();
                assert_eq!(batch.num_rows() as u64, rows);
                pieces.push(batch);
            }
        }
        assert_eq!(
            arrow::compute::concat_batches(&schema(), &pieces).unwrap(),
            expected
        );

        // Projection returns only the asked columns.
        let projected = dataset
            .read_row_group(0, 0, Some(&["length".to_string(), "id".to_string()]))
            .await
            .unwrap();
        assert_eq!(projected.num_columns(), 2);
        assert_eq!(projected.schema().field(0).name(), "length");
        assert_eq!(
            projected.column(1),
            &dataset
                .read_row_group(0, 0, None)
                .await
                .unwrap()
                .column(0)
                .clone()
        );
        assert!(matches!(
            dataset
                .read_row_group(0, 0, Some(&["nope".to_string()]))
                .await,
            Err(StorageError::UnknownColumn { .. })
        ));
        assert!(matches!(
            dataset.read_row_group(0, 999, None).await,
            Err(StorageError::OutOfRange { .. })
        ));
        assert!(dataset.verify().await.is_ok());
    }
}

/// Shards bigger than one upload part go up as multipart uploads and read back intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_shards_use_multipart_uploads() {
    for (url, _dir) in backends("multipart") {
        let options = WriterOptions {
            row_group_bytes: 1 << 20,
            upload_part_bytes: scalefold_storage::writer::MIN_UPLOAD_PART_BYTES,
            ..small_options()
        };
        let mut writer = DatasetWriter::create(&url, schema(), options)
            .await
            .unwrap();
        let big: Vec<u8> = (0..12u64 << 20).map(|i| mix(i) as u8).collect();
        let batch = RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(StringArray::from(vec!["big"])) as ArrayRef,
                Arc::new(Int32Array::from(vec![1])),
                Arc::new({
                    let mut b = ListBuilder::new(Float32Builder::new());
                    b.values().append_value(1.0);
                    b.append(true);
                    b.finish()
                }),
                Arc::new(BinaryArray::from_iter_values([big.as_slice()])),
            ],
        )
        .unwrap();
        writer.write_source("big", &batch).await.unwrap();
        let manifest = writer.finish_and_commit().await.unwrap();
        assert!(manifest.shards[0].bytes > 10 << 20, "{url}");
        let dataset = Dataset::open(&url).await.unwrap();
        assert!(dataset.verify().await.is_ok());
        assert_eq!(all_rows(&dataset).await, batch, "{url}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_writer_is_invisible_and_resumes_without_duplicates() {
    for (url, _dir) in backends("resume") {
        let writer = write_sources(&url, 0..40, small_options()).await;
        drop(writer); // killed: the open shard is never completed, nothing is committed
        assert!(matches!(
            Dataset::open(&url).await,
            Err(StorageError::ManifestNotFound { .. })
        ));

        let writer = DatasetWriter::create(&url, schema(), small_options())
            .await
            .unwrap();
        let already = (0..40)
            .filter(|s| writer.is_finished(&format!("source-{s}")))
            .count();
        assert!(already > 0 && already < 40, "{url}: {already} finished");
        drop(writer);
        let writer = write_sources(&url, 0..50, small_options()).await;
        writer.finish_and_commit().await.unwrap();

        let dataset = Dataset::open(&url).await.unwrap();
        let mut got = ids(&all_rows(&dataset).await);
        let mut want: Vec<String> = (0..50).flat_map(|s| ids(&source_batch(s))).collect();
        got.sort();
        want.sort();
        assert_eq!(got, want, "{url}: rows lost or duplicated");
        assert!(dataset.verify().await.is_ok());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_commit_into_one_dataset() {
    for (url, _dir) in backends("concurrent") {
        let options = |worker| WriterOptions {
            worker,
            workers: 2,
            ..small_options()
        };
        let (a, b) = tokio::join!(
            write_sources(&url, (0..30).filter(|s| s % 2 == 0), options(0)),
            write_sources(&url, (0..30).filter(|s| s % 2 == 1), options(1)),
        );
        a.finish().await.unwrap();
        match commit(&url).await {
            Err(StorageError::IncompleteWorkers { missing, .. }) => assert_eq!(missing, vec![1]),
            other => panic!("{url}: commit with a worker unfinished gave {other:?}"),
        }
        b.finish().await.unwrap();
        let summary = commit(&url).await.unwrap();
        assert!(
            summary
                .manifest
                .shards
                .iter()
                .any(|s| s.name.contains("w00000"))
        );
        assert!(
            summary
                .manifest
                .shards
                .iter()
                .any(|s| s.name.contains("w00001"))
        );

        let dataset = Dataset::open(&url).await.unwrap();
        let mut got = ids(&all_rows(&dataset).await);
        let mut want: Vec<String> = (0..30).flat_map(|s| ids(&source_batch(s))).collect();
        got.sort();
        want.sort();
        assert_eq!(got, want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_catches_corrupted_and_truncated_shards() {
    for (url, _dir) in backends("corrupt") {
        write_sources(&url, 0..30, small_options())
            .await
            .finish_and_commit()
            .await
            .unwrap();
        let dataset = Dataset::open(&url).await.unwrap();
        let store = dataset.store();

        let flipped = dataset.shard_path(0).unwrap();
        let mut bytes = store
            .get(&flipped)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x55;
        store.put(&flipped, PutPayload::from(bytes)).await.unwrap();

        let truncated = dataset.shard_path(1).unwrap();
        let bytes = store.get(&truncated).await.unwrap().bytes().await.unwrap();
        store
            .put(
                &truncated,
                PutPayload::from(bytes.slice(..bytes.len() - 100)),
            )
            .await
            .unwrap();

        // A manifest that disagrees with a sound shard's row count is caught too.
        let mut manifest = dataset.manifest().clone();
        manifest.shards[2].rows += 1;
        let location = scalefold_storage::Location::parse(&url).unwrap();
        store
            .put(
                &location.child("manifest.json"),
                PutPayload::from(manifest.to_json()),
            )
            .await
            .unwrap();

        let report = Dataset::open(&url).await.unwrap().verify().await;
        let bad = report.bad_shards();
        assert_eq!(bad.len(), 3, "{url}: {report:?}");
        assert!(
            bad[2].error.as_ref().unwrap().contains("rows"),
            "{url}: {report:?}"
        );
        assert!(bad[0].error.as_ref().unwrap().contains("checksum mismatch"));
        assert!(bad[1].error.as_ref().unwrap().contains("bytes"));
        assert!(bad[0].error.as_ref().unwrap().contains(&bad[0].name));
    }
}

#[tokio::test]
async fn opening_bad_datasets_names_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("none").display().to_string();
    let err = Dataset::open(&url).await.err().unwrap();
    assert!(matches!(err, StorageError::ManifestNotFound { .. }));
    assert!(err.to_string().contains("manifest.json"));

    std::fs::create_dir_all(dir.path().join("bad")).unwrap();
    std::fs::write(
        dir.path().join("bad/manifest.json"),
        b"{\"format_version\": 1}",
    )
    .unwrap();
    let url = dir.path().join("bad").display().to_string();
    let err = Dataset::open(&url).await.err().unwrap();
    assert!(matches!(err, StorageError::InvalidManifest { .. }), "{err}");

    let url = dir.path().join("ok").display().to_string();
    write_sources(&url, 0..2, small_options())
        .await
        .finish_and_commit()
        .await
        .unwrap();
    let err = Dataset::open_with(
        &url,
        scalefold_storage::OpenOptions {
            expected_schema_version: Some(8),
        },
    )
    .await
    .err()
    .unwrap();
    assert!(matches!(
        err,
        StorageError::UnknownSchemaVersion {
            found: 7,
            expected: 8,
            ..
        }
    ));
}

#[tokio::test]
async fn writer_rejects_wrong_batches_and_duplicate_sources() {
    let url = "memory://suite/rejects";
    let mut writer = DatasetWriter::create(url, schema(), small_options())
        .await
        .unwrap();
    writer.write_source("a", &source_batch(1)).await.unwrap();
    assert!(matches!(
        writer.write_source("a", &source_batch(2)).await,
        Err(StorageError::InvalidArgument(_))
    ));
    let other =
        RecordBatch::try_from_iter([("x", Arc::new(Int32Array::from(vec![1])) as ArrayRef)])
            .unwrap();
    assert!(matches!(
        writer.write_source("b", &other).await,
        Err(StorageError::SchemaMismatch { .. })
    ));
}

/// pyarrow (what Python users read the data with) opens a shard and sees our schema and rows.
#[tokio::test]
async fn pyarrow_reads_a_shard() {
    let have_pyarrow = std::process::Command::new("python3")
        .args(["-c", "import pyarrow"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !have_pyarrow {
        assert!(
            std::env::var("CI").is_err(),
            "CI is set but pyarrow is missing: .ci/run must pip-install it"
        );
        eprintln!("note: pyarrow not installed, skipping");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("py").display().to_string();
    let manifest = write_sources(&url, 0..10, small_options())
        .await
        .finish_and_commit()
        .await
        .unwrap();
    let shard = dir.path().join("py").join(&manifest.shards[0].name);
    let script = "import sys, pyarrow.parquet as pq\n\
                  t = pq.read_table(sys.argv[1])\n\
                  md = pq.read_metadata(sys.argv[1]).metadata\n\
                  print(t.num_rows, ','.join(t.schema.names), md[b'scalefold.schema_version'].decode())";
    let out = std::process::Command::new("python3")
        .args(["-c", script, shard.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        line.trim(),
        format!("{} id,length,values,payload 7", manifest.shards[0].rows)
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 12, ..Default::default() })]

    /// Whatever the shard and row-group bounds, every row written is read back once, in order.
    #[test]
    fn any_layout_reads_back_what_was_written(
        sources in 1usize..25,
        row_group_kib in 1usize..64,
        shard_kib in 1u64..256,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let url = format!("memory://prop/{sources}-{row_group_kib}-{shard_kib}-{}", std::process::id());
        let options = WriterOptions {
            row_group_bytes: row_group_kib << 10,
            shard_bytes: shard_kib << 10,
            ..small_options()
        };
        let (got, manifest) = rt.block_on(async {
            let manifest = write_sources(&url, 0..sources, options).await.finish_and_commit().await.unwrap();
            let dataset = Dataset::open(&url).await.unwrap();
            (all_rows(&dataset).await, manifest)
        });
        let expected: Vec<RecordBatch> = (0..sources).map(source_batch).collect();
        proptest::prop_assert_eq!(got, arrow::compute::concat_batches(&schema(), &expected).unwrap());
        let keys: usize = manifest.shards.iter().map(|s| s.source_keys.len()).sum();
        proptest::prop_assert_eq!(keys, sources);
    }
}
