//! `scalefold bench storage`: Parquet dataset write and read throughput against raw
//! object-store PUT and GET of the same bytes, in the same run.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use arrow::array::{ArrayRef, BinaryArray, Float32Builder, Int32Array, ListBuilder, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use clap::Args;
use futures::{StreamExt, TryStreamExt};
use object_store::buffered::BufWriter;
use object_store::{ObjectStore, ObjectStoreExt};
use scalefold_storage::writer::WriteTimings;
use scalefold_storage::{Dataset, DatasetWriter, Location, WriterOptions};
use tokio::io::AsyncWriteExt;

use super::dataset::{human_bytes, runtime};

/// Arguments of `scalefold bench storage`.
#[derive(Args)]
pub struct BenchStorageArgs {
    /// Where to write: a local folder or an object-store URL (a fresh prefix is used inside).
    #[arg(long, default_value = "target/bench-storage")]
    pub url: String,
    /// Logical (uncompressed) data to write, in MiB.
    #[arg(long, default_value_t = 1536)]
    pub size_mib: u64,
    /// Concurrent writers (workers).
    #[arg(long, default_value_t = 2)]
    pub concurrency: usize,
    /// Requests in flight when reading: row groups for Parquet, whole objects for raw GET.
    #[arg(long, default_value_t = 8)]
    pub read_concurrency: usize,
    /// Target shard size in MiB.
    #[arg(long, default_value_t = 256)]
    pub shard_mib: u64,
    /// zstd level of the shards.
    #[arg(long, default_value_t = WriterOptions::default().zstd_level)]
    pub zstd_level: i32,
    /// Row groups each writer encodes at once (default: the cores available, at most 8).
    #[arg(long, default_value_t = WriterOptions::default().encode_parallelism)]
    pub encode_parallelism: usize,
    /// Columns written without Parquet statistics (comma-separated: positions, msa).
    #[arg(long, value_delimiter = ',')]
    pub columns_without_statistics: Vec<String>,
    /// Write the rows of this existing dataset (each row one source) instead of synthetic
    /// data, e.g. an ingest output; `--size-mib` is then ignored.
    #[arg(long)]
    pub input_dataset: Option<String>,
    /// Keep the written objects instead of deleting them at the end.
    #[arg(long)]
    pub keep: bool,
    /// Print one JSON line.
    #[arg(long)]
    pub json: bool,
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("length", DataType::Int32, false),
        Field::new(
            "positions",
            DataType::List(Arc::new(Field::new("item", DataType::Float32, true))),
            false,
        ),
        Field::new("msa", DataType::Binary, false),
    ]))
}

fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// One synthetic source of protein-like shape: a chain's coordinates (smooth f32 walk) and an
/// MSA-like byte matrix over a 22-letter alphabet (compresses like real MSAs, about 2-4x).
fn source_batch(source: u64) -> RecordBatch {
    let seed = mix(source);
    let length = 100 + (seed % 400) as usize;
    let depth = 64 + (mix(seed) % 512) as usize;
    let mut positions = ListBuilder::new(Float32Builder::with_capacity(length * 37 * 3));
    let mut walk = 0.0f32;
    for i in 0..length * 37 * 3 {
        walk += ((mix(seed ^ i as u64) % 2000) as f32 - 1000.0) / 500.0;
        positions.values().append_value(walk);
    }
    positions.append(true);
    let query: Vec<u8> = (0..length)
        .map(|i| (mix(seed + i as u64) % 20) as u8)
        .collect();
    let mut msa = Vec::with_capacity(length * depth);
    for row in 0..depth as u64 {
        for (col, &q) in query.iter().enumerate() {
            let r = mix(seed ^ (row << 20) ^ col as u64);
            msa.push(if r % 100 < 60 { q } else { (r % 22) as u8 });
        }
    }
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(StringArray::from(vec![format!("src{source:07}")])) as ArrayRef,
            Arc::new(Int32Array::from(vec![length as i32])),
            Arc::new(positions.finish()),
            Arc::new(BinaryArray::from_iter_values([msa.as_slice()])),
        ],
    )
    .expect("the synthetic batch matches its schema")
}

/// Seconds and bytes of one measured phase.
struct Phase {
    seconds: f64,
    bytes: u64,
}

impl Phase {
    fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.seconds
    }
}

/// Runs `scalefold bench storage`.
pub fn run(args: BenchStorageArgs) -> anyhow::Result<()> {
    let rt = runtime()?;
    rt.block_on(bench(args))
}

async fn bench(args: BenchStorageArgs) -> anyhow::Result<()> {
    let nonce = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis()
    );
    let base = args.url.trim_end_matches('/');
    let ds_url = format!("{base}/dataset-{nonce}");
    let raw_url = format!("{base}/raw-{nonce}");
    let workers = args.concurrency.max(1) as u32;

    // Data is made (or read) before timing; each worker gets every workers-th source.
    let mut batches: Vec<Vec<(String, RecordBatch)>> = vec![Vec::new(); workers as usize];
    let (mut logical, mut source) = (0u64, 0u64);
    let (schema, length_column, source_key_column) = match &args.input_dataset {
        None => {
            let target = args.size_mib << 20;
            while logical < target {
                let batch = source_batch(source);
                logical += batch.get_array_memory_size() as u64;
                batches[(source % workers as u64) as usize].push((format!("src{source}"), batch));
                source += 1;
            }
            (schema(), Some("length".to_string()), Some("id".to_string()))
        }
        Some(input) => {
            let dataset = Dataset::open(input).await?;
            let read: Vec<RecordBatch> = dataset.stream(None).try_collect().await?;
            for batch in read {
                logical += batch.get_array_memory_size() as u64;
                for row in 0..batch.num_rows() {
                    batches[(source % workers as u64) as usize]
                        .push((format!("row{source}"), batch.slice(row, 1)));
                    source += 1;
                }
            }
            let manifest = dataset.manifest();
            (dataset.schema(), manifest.length_column.clone(), None)
        }
    };
    eprintln!(
        "bench storage: {} sources, {} logical, {workers} writers, to {base}",
        source,
        human_bytes(logical)
    );

    // 1. Parquet dataset write (encode + zstd + multipart upload), workers in parallel.
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (worker, sources) in batches.into_iter().enumerate() {
        let url = ds_url.clone();
        let schema = schema.clone();
        let options = WriterOptions {
            worker: worker as u32,
            workers,
            shard_bytes: args.shard_mib << 20,
            zstd_level: args.zstd_level,
            length_column: length_column.clone(),
            source_key_column: source_key_column.clone(),
            encode_parallelism: args.encode_parallelism,
            columns_without_statistics: args.columns_without_statistics.clone(),
            ..WriterOptions::default()
        };
        tasks.push(tokio::spawn(async move {
            let mut writer = DatasetWriter::create(&url, schema, options).await?;
            for (key, batch) in &sources {
                writer.write_source(key, batch).await?;
            }
            writer.finish_timed().await
        }));
    }
    // Summed over the writers: where their time went (see `WriteTimings`).
    let mut timings = WriteTimings::default();
    for task in tasks {
        timings += task.await.context("writer task")??.1;
    }
    let commit_start = Instant::now();
    let manifest = scalefold_storage::commit(&ds_url).await?.manifest;
    let commit_s = commit_start.elapsed().as_secs_f64();
    let parquet_write = Phase {
        seconds: start.elapsed().as_secs_f64(),
        bytes: manifest.total_bytes(),
    };

    // 2. Parquet read: every row group fetched by byte ranges and decoded, as a loader
    //    reads, `read_concurrency` row groups in flight.
    let dataset = Dataset::open(&ds_url).await?;
    let groups: Vec<(usize, usize)> = dataset
        .shards()
        .iter()
        .enumerate()
        .flat_map(|(s, shard)| (0..shard.row_group_rows.len()).map(move |g| (s, g)))
        .collect();
    let start = Instant::now();
    let rows: usize = futures::stream::iter(groups)
        .map(|(shard, group)| {
            let dataset = dataset.clone();
            async move { anyhow::Ok(dataset.read_row_group(shard, group, None).await?.num_rows()) }
        })
        .buffer_unordered(args.read_concurrency.max(1))
        .try_fold(0, |a, b| async move { Ok(a + b) })
        .await?;
    anyhow::ensure!(rows as u64 == manifest.total_rows(), "read {rows} rows");
    let parquet_read = Phase {
        seconds: start.elapsed().as_secs_f64(),
        bytes: manifest.total_bytes(),
    };

    // The very same shard bytes, for the raw baseline (fetched untimed).
    let store = dataset.store();
    let mut shard_bytes: Vec<Bytes> = Vec::new();
    for shard in 0..dataset.shards().len() {
        let path = dataset.shard_path(shard)?;
        shard_bytes.push(store.get(&path).await?.bytes().await?);
    }

    // 3. Raw PUT of the same bytes: same multipart part size and concurrency as the writer.
    let raw = Location::parse(&raw_url)?;
    let options = WriterOptions::default();
    let start = Instant::now();
    futures::stream::iter(shard_bytes.iter().enumerate())
        .map(|(i, bytes)| {
            let path = raw.child(&format!("object-{i:05}"));
            let store = raw.store.clone();
            let options = options.clone();
            async move {
                let mut upload = BufWriter::with_capacity(store, path, options.upload_part_bytes)
                    .with_max_concurrency(options.upload_concurrency);
                for piece in bytes.chunks(1 << 20) {
                    upload.put(bytes.slice_ref(piece)).await?;
                }
                upload.shutdown().await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(args.concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    let raw_put = Phase {
        seconds: start.elapsed().as_secs_f64(),
        bytes: manifest.total_bytes(),
    };

    // 4. Raw GET of the same objects.
    let start = Instant::now();
    let got: u64 = futures::stream::iter(0..shard_bytes.len())
        .map(|i| {
            let path = raw.child(&format!("object-{i:05}"));
            let store = raw.store.clone();
            async move { anyhow::Ok(store.get(&path).await?.bytes().await?.len() as u64) }
        })
        .buffer_unordered(args.read_concurrency.max(1))
        .try_fold(0, |a, b| async move { Ok(a + b) })
        .await?;
    anyhow::ensure!(
        got == manifest.total_bytes(),
        "raw GET returned {got} bytes"
    );
    let raw_get = Phase {
        seconds: start.elapsed().as_secs_f64(),
        bytes: got,
    };

    if !args.keep {
        for location in [Location::parse(&ds_url)?, raw] {
            delete_prefix(&location).await?;
        }
    }

    let write_ratio = parquet_write.mb_per_s() / raw_put.mb_per_s();
    let read_ratio = parquet_read.mb_per_s() / raw_get.mb_per_s();
    let line = serde_json::json!({
        "bench": "storage",
        "url": base,
        "sources": source,
        "logical_bytes": logical,
        "stored_bytes": manifest.total_bytes(),
        "shards": manifest.shards.len(),
        "row_groups": manifest.shards.iter().map(|s| s.row_group_rows.len()).sum::<usize>(),
        "zstd_level": args.zstd_level,
        "concurrency": args.concurrency,
        "read_concurrency": args.read_concurrency,
        "parquet_write_mb_s": parquet_write.mb_per_s(),
        "raw_put_mb_s": raw_put.mb_per_s(),
        "write_ratio": write_ratio,
        "parquet_read_mb_s": parquet_read.mb_per_s(),
        "raw_get_mb_s": raw_get.mb_per_s(),
        "read_ratio": read_ratio,
        "logical_write_mb_s": logical as f64 / 1e6 / parquet_write.seconds,
        "encode_parallelism": args.encode_parallelism,
        "columns_without_statistics": args.columns_without_statistics,
        "write_s": parquet_write.seconds,
        "raw_put_s": raw_put.seconds,
        "writer_timings": timings,
        "commit_s": commit_s,
    });
    if args.json {
        println!("{line}");
    } else {
        println!(
            "stored {} in {} shards ({} logical)",
            human_bytes(manifest.total_bytes()),
            manifest.shards.len(),
            human_bytes(logical)
        );
        println!(
            "write: parquet {:8.1} MB/s   raw PUT {:8.1} MB/s   ratio {:.2}",
            parquet_write.mb_per_s(),
            raw_put.mb_per_s(),
            write_ratio
        );
        println!(
            "read:  parquet {:8.1} MB/s   raw GET {:8.1} MB/s   ratio {:.2}",
            parquet_read.mb_per_s(),
            raw_get.mb_per_s(),
            read_ratio
        );
        println!(
            "writers (summed over {workers}): encoding {:.2} s ({:.2} CPU s) on the blocking pool, shard closes {:.2} s; waited {:.2} s for encoding, {:.2} s for uploads, {:.2} s for shard closes, {:.2} s for manifests; commit {:.2} s",
            timings.encoding_s,
            timings.encoding_cpu_s,
            timings.shard_close_s,
            timings.encode_wait_s,
            timings.upload_wait_s,
            timings.close_wait_s,
            timings.manifest_s,
            commit_s
        );
    }
    Ok(())
}

/// Deletes every object under a location's prefix.
pub(crate) async fn delete_prefix(location: &Location) -> anyhow::Result<()> {
    let objects: Vec<_> = location
        .store
        .list(Some(&location.prefix))
        .try_collect()
        .await?;
    for meta in objects {
        location.store.delete(&meta.location).await?;
    }
    Ok(())
}
