//! `scalefold bench loader`: how much of a training step waits for data, strict
//! order (W = 1) against ready-first windows, with a heavy-tailed transform cost;
//! and streaming throughput from an S3 server against raw GETs of the same bytes,
//! with the decode cost of the same row groups measured apart (from memory).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use arrow::array::{BinaryArray, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use clap::Args;
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use scalefold_loader::{
    BinaryLayout, DatasetSource, Loader, LoaderConfig, MemorySource, Plan, PlanConfig,
    RowGroupSource, RowRef, Sampling, TransformError, rng,
};
use scalefold_storage::{Dataset, DatasetWriter, Location, WriterOptions};
use serde::Serialize;

use super::dataset::runtime;

/// Arguments of `scalefold bench loader`.
#[derive(Args)]
pub struct BenchLoaderArgs {
    /// Samples consumed per window setting.
    #[arg(long, default_value_t = 3000)]
    pub samples: u64,
    /// Transform threads.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Median simulated transform cost, in milliseconds.
    #[arg(long, default_value_t = 2.0)]
    pub median_ms: f64,
    /// Log-normal shape σ of the transform cost (p99/p50 = e^(2.326σ); 1.0 gives 10.2).
    #[arg(long, default_value_t = 1.0)]
    pub sigma: f64,
    /// Step time as a multiple of (measured mean cost / workers).
    #[arg(long, default_value_t = 1.1)]
    pub step_factor: f64,
    /// Windows W to compare (1 is strict order).
    #[arg(long, value_delimiter = ',', default_value = "1,4,8,16")]
    pub windows: Vec<usize>,
    /// Dataset URL for the S3 part (a fresh prefix is used inside and deleted after);
    /// default `s3://$SCALEFOLD_TEST_S3_BUCKET/bench-loader`; skipped if neither is set.
    #[arg(long)]
    pub s3_url: Option<String>,
    /// Size of the S3 dataset, in MiB.
    #[arg(long, default_value_t = 256)]
    pub s3_mib: u64,
    /// Concurrent row-group reads (loader) and GETs (raw).
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Measure the time to the first sample on this existing dataset (any URL the
    /// storage crate opens), with fresh loaders: open, plan, first batch.
    #[arg(long)]
    pub first_sample_url: Option<String>,
    /// With `--first-sample-url`: if no dataset opens there, first write one of this many MiB
    /// (64 KiB incompressible payloads, as the S3 part) and keep it.
    #[arg(long)]
    pub first_sample_mib: Option<u64>,
    /// With `--first-sample-url`: fresh loaders measured one after another.
    #[arg(long, default_value_t = 3)]
    pub first_sample_runs: usize,
    /// Skip the window comparison (e.g. to measure only the S3 or first-sample parts).
    #[arg(long)]
    pub skip_windows: bool,
    /// `LoaderConfig::in_flight_batches` of the S3 and first-sample loaders (0: the loader's default).
    #[arg(long, default_value_t = 0)]
    pub in_flight: usize,
    /// `LoaderConfig::io_threads` of the S3 and first-sample loaders (0: the loader's default).
    #[arg(long, default_value_t = 0)]
    pub io_threads: usize,
    /// Prefetch budget of the S3 and first-sample loaders, in MiB.
    #[arg(long, default_value_t = 512)]
    pub prefetch_mib: u64,
    /// How the S3 and first-sample loaders read the binary payload column: `views`
    /// (`BinaryView` into the decompressed pages) or `offsets` (values copied into a
    /// `Binary` array).
    #[arg(long, value_enum, default_value_t = LayoutArg::Views)]
    pub binary_layout: LayoutArg,
    /// Skip the decode-only figures of the S3 part (row groups read from an in-memory copy).
    #[arg(long)]
    pub skip_decode: bool,
    /// Print one JSON line.
    #[arg(long)]
    pub json: bool,
}

/// `--binary-layout` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LayoutArg {
    /// `BinaryLayout::Offsets`.
    Offsets,
    /// `BinaryLayout::Views`.
    Views,
}

impl LayoutArg {
    fn layout(self) -> BinaryLayout {
        match self {
            LayoutArg::Offsets => BinaryLayout::Offsets,
            LayoutArg::Views => BinaryLayout::Views,
        }
    }
}

/// The figures of one window setting.
#[derive(Serialize)]
struct WindowResult {
    window: usize,
    /// Fraction of the training loop's time spent in `next()` (after the first batch).
    wait_fraction: f64,
    wait_seconds: f64,
    step_seconds: f64,
    /// Mean measured step (above the nominal one when the machine preempts the consumer).
    mean_step_ms: f64,
    samples_per_second: f64,
    max_wait_ms: f64,
    reorder_histogram: Vec<u64>,
}

/// The S3 figures.
#[derive(Serialize)]
struct S3Result {
    url: String,
    bytes: u64,
    row_groups: usize,
    raw_get_gb_per_s: f64,
    /// Row groups read and decoded by the storage crate alone, same concurrency, no
    /// loader, binary values copied into `Binary` arrays (`BinaryLayout::Offsets`).
    storage_read_gb_per_s: f64,
    /// The same with `BinaryLayout::Views` (no value copy).
    storage_read_views_gb_per_s: f64,
    /// The loader's `--binary-layout`.
    binary_layout: String,
    loader_gb_per_s: f64,
    loader_samples_per_s: f64,
    loader_vs_raw: f64,
    /// `DatasetSource::open` (manifest read), not part of the throughput figures.
    open_s: f64,
    /// From before `DatasetSource::open` to the first sample.
    time_to_first_sample_s: f64,
    /// Decode alone: the same row groups read from an in-memory copy of the dataset.
    decode: Option<DecodeResult>,
}

/// Decompress + decode of the S3 part's row groups without the network: the dataset's
/// objects copied into an in-process store, whose range reads are slices (no copy).
#[derive(Serialize)]
struct DecodeResult {
    /// Milliseconds per row group, one read at a time: values copied (`Offsets`).
    offsets_ms_per_row_group: f64,
    /// The same, views into the pages (`Views`): decompression without the value copy.
    views_ms_per_row_group: f64,
    /// GB/s with `--concurrency` reads at once (decoding on the blocking pool), `Offsets`.
    offsets_gb_per_s: f64,
    /// The same, `Views`.
    views_gb_per_s: f64,
    /// The S3 part's loader (same settings, `--binary-layout`) over the in-memory copy:
    /// the loader's own ceiling with decode but without the network.
    loader_gb_per_s: f64,
    /// The same, in samples per second.
    loader_samples_per_s: f64,
}

/// One fresh loader's start on a large dataset, in seconds since the start.
#[derive(Serialize)]
struct FirstSampleRun {
    /// `DatasetSource::open`: the manifest (and the schema).
    open_s: f64,
    /// `Plan::new` and `Loader::new` (runtime and threads started, reads begun).
    start_s: f64,
    /// The first batch delivered (`Loader::new` + `next_batch`): the epoch's order,
    /// one footer, one row group, one transform.
    first_sample_s: f64,
}

/// Time to the first sample on an existing dataset.
#[derive(Serialize)]
struct FirstSampleResult {
    url: String,
    bytes: u64,
    rows: u64,
    row_groups: usize,
    /// Seconds spent writing the dataset first (0 when it already existed).
    write_s: f64,
    runs: Vec<FirstSampleRun>,
}

#[derive(Serialize)]
struct Report {
    bench: &'static str,
    workers: usize,
    median_cost_ms: f64,
    p99_over_p50: f64,
    capacity_samples_per_s: f64,
    step_ms: f64,
    windows: Vec<WindowResult>,
    s3: Option<S3Result>,
    first_sample: Option<FirstSampleResult>,
}

/// A standard normal draw from the seed (Box-Muller).
fn normal(seed: u64) -> f64 {
    let mut draws = rng::rng_from(&[seed, 0x4E4F_524D]);
    let (u1, u2) = (1.0 - rng::unit(&mut draws), rng::unit(&mut draws));
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// The simulated cost of the sample with this seed.
fn cost(seed: u64, median_ms: f64, sigma: f64) -> Duration {
    Duration::from_secs_f64(median_ms / 1000.0 * (sigma * normal(seed)).exp())
}

fn numbers(rows: u64) -> MemorySource {
    let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
    let batches = (0..rows)
        .step_by(100)
        .map(|start| {
            let values: Vec<i64> = (start..(start + 100).min(rows)).map(|v| v as i64).collect();
            RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(values))])
                .expect("one Int64 column")
        })
        .collect();
    MemorySource::new("bench", batches)
}

fn cost_loader(args: &BenchLoaderArgs, window: usize, rows: u64) -> anyhow::Result<Loader<()>> {
    let source = numbers(rows);
    let group_rows: Vec<u64> = source.row_groups().iter().map(|g| g.rows).collect();
    let plan = Plan::new(
        PlanConfig {
            seed: 1,
            rank: 0,
            world_size: 1,
            batch_size: 1,
            sampling: Sampling::Shuffle {
                block_row_groups: 0,
            },
        },
        &group_rows,
    )?;
    let (median, sigma) = (args.median_ms, args.sigma);
    // Sleeping simulates CPU work on `workers` cores even on a smaller machine.
    let transform = move |_row: RowRef<'_>, seed: u64| -> Result<(), TransformError> {
        std::thread::sleep(cost(seed, median, sigma));
        Ok(())
    };
    let config = LoaderConfig {
        window,
        workers: args.workers,
        epochs: None,
        ..LoaderConfig::default()
    };
    Ok(Loader::new(Arc::new(source), plan, transform, config)?)
}

/// Samples per second the pool sustains when the consumer never waits.
fn capacity(args: &BenchLoaderArgs) -> anyhow::Result<f64> {
    let mut loader = cost_loader(args, 64, args.samples)?;
    loader.next_batch()?.context("no batch")?;
    let start = Instant::now();
    let n = (args.samples / 2).max(200);
    for _ in 0..n {
        loader.next_batch()?.context("loader ended early")?;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

fn spin(duration: Duration) {
    let start = Instant::now();
    while start.elapsed() < duration {
        std::hint::spin_loop();
    }
}

fn window_run(
    args: &BenchLoaderArgs,
    window: usize,
    step: Duration,
) -> anyhow::Result<WindowResult> {
    let mut loader = cost_loader(args, window, args.samples)?;
    loader.next_batch()?.context("no batch")?;
    let (mut waited, mut stepped, mut max_wait) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let start = Instant::now();
    for _ in 1..args.samples {
        let batch = loader.next_batch()?.context("loader ended early")?;
        waited += batch.waited;
        max_wait = max_wait.max(batch.waited);
        let t = Instant::now();
        spin(step);
        stepped += t.elapsed();
    }
    let total = start.elapsed().as_secs_f64();
    Ok(WindowResult {
        window,
        wait_fraction: waited.as_secs_f64() / (waited + stepped).as_secs_f64(),
        wait_seconds: waited.as_secs_f64(),
        step_seconds: stepped.as_secs_f64(),
        mean_step_ms: stepped.as_secs_f64() * 1000.0 / (args.samples - 1) as f64,
        samples_per_second: (args.samples - 1) as f64 / total,
        max_wait_ms: max_wait.as_secs_f64() * 1000.0,
        reorder_histogram: loader.metrics().reorder_histogram,
    })
}

fn payload_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("payload", DataType::Binary, false),
    ]))
}

/// Writes `mib` MiB of incompressible 64 KiB payloads, 64 rows per source.
async fn write_payloads(url: &str, mib: u64) -> anyhow::Result<()> {
    let mut writer = DatasetWriter::create(url, payload_schema(), WriterOptions::default()).await?;
    let rows = mib * 16;
    for source in 0..rows.div_ceil(64) {
        let n = 64.min(rows - source * 64) as usize;
        let key = format!("s{source}");
        let payloads: Vec<Vec<u8>> = (0..n)
            .map(|i| {
                let mut state = rng::mix(&[source, i as u64]);
                (0..8192)
                    .flat_map(|_| {
                        state = rng::splitmix64(state);
                        state.to_le_bytes()
                    })
                    .collect()
            })
            .collect();
        let batch = RecordBatch::try_new(
            payload_schema(),
            vec![
                Arc::new(arrow::array::StringArray::from(vec![key.as_str(); n])),
                Arc::new(BinaryArray::from_iter_values(payloads.iter())),
            ],
        )?;
        writer.write_source(&key, &batch).await?;
    }
    writer.finish_and_commit().await?;
    Ok(())
}

/// Raw GETs of every row group's byte range; returns bytes per second.
async fn raw_gets(dataset: &Dataset, concurrency: usize) -> anyhow::Result<(u64, f64)> {
    let mut ranges = Vec::new();
    for shard in 0..dataset.shards().len() {
        let meta = dataset.shard_metadata(shard).await?;
        let path = dataset.shard_path(shard)?;
        for group in meta.metadata().row_groups() {
            let (start, end) = group.columns().iter().fold((u64::MAX, 0), |(s, e), c| {
                let (offset, len) = c.byte_range();
                (s.min(offset), e.max(offset + len))
            });
            ranges.push((path.clone(), start..end));
        }
    }
    let store = dataset.store();
    let begin = Instant::now();
    let bytes: Vec<usize> = futures::stream::iter(ranges)
        .map(|(path, range)| {
            let store = store.clone();
            async move { store.get_range(&path, range).await.map(|b| b.len()) }
        })
        .buffer_unordered(concurrency)
        .try_collect()
        .await?;
    let total: u64 = bytes.iter().map(|&b| b as u64).sum();
    Ok((total, total as f64 / begin.elapsed().as_secs_f64()))
}

/// Every row group read and decoded through `Dataset::read_row_group_with`, binary
/// values in `layout`; returns bytes per second.
async fn storage_reads(
    dataset: &Dataset,
    concurrency: usize,
    layout: BinaryLayout,
) -> anyhow::Result<f64> {
    let mut groups = Vec::new();
    let mut bytes = 0;
    for (shard, info) in dataset.shards().iter().enumerate() {
        bytes += info.row_group_bytes.iter().sum::<u64>();
        groups.extend((0..info.row_group_rows.len()).map(|g| (shard, g)));
    }
    let projection = vec!["payload".to_string()];
    let begin = Instant::now();
    futures::stream::iter(groups)
        .map(|(shard, group)| {
            let projection = &projection;
            async move {
                dataset
                    .read_row_group_with(shard, group, Some(projection), layout)
                    .await
                    .map(|b| b.num_rows())
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(bytes as f64 / begin.elapsed().as_secs_f64())
}

/// The loader both the S3 and the first-sample parts measure: a block shuffle of
/// 4 row groups, W = 8, a transform that reads the payload's length.
fn payload_loader(source: DatasetSource, args: &BenchLoaderArgs) -> anyhow::Result<Loader<usize>> {
    let group_rows: Vec<u64> = source.row_groups().iter().map(|g| g.rows).collect();
    let plan = Plan::new(
        PlanConfig {
            seed: 3,
            rank: 0,
            world_size: 1,
            batch_size: 1,
            sampling: Sampling::Shuffle {
                block_row_groups: 4,
            },
        },
        &group_rows,
    )?;
    // Either layout: `RowRef::bytes` borrows the value from the fetched row group.
    let transform = |row: RowRef<'_>, _seed: u64| -> Result<usize, TransformError> {
        Ok(row.bytes("payload")?.len())
    };
    let source = source.with_binary_layout(args.binary_layout.layout());
    let config = LoaderConfig {
        window: 8,
        fetch_concurrency: args.concurrency,
        in_flight_batches: args.in_flight,
        prefetch_bytes: args.prefetch_mib << 20,
        ..LoaderConfig::default()
    };
    let config = LoaderConfig {
        io_threads: if args.io_threads == 0 {
            config.io_threads
        } else {
            args.io_threads
        },
        ..config
    };
    Ok(Loader::new(Arc::new(source), plan, transform, config)?)
}

/// Opens (writing it first if asked and absent) the dataset at `url` and times
/// fresh loaders up to their first sample.
fn first_sample_run(args: &BenchLoaderArgs, url: &str) -> anyhow::Result<FirstSampleResult> {
    let rt = runtime()?;
    let mut write_s = 0.0;
    if let (Err(open_error), Some(mib)) = (rt.block_on(Dataset::open(url)), args.first_sample_mib) {
        eprintln!("no dataset at {url} ({open_error}); writing {mib} MiB there");
        let start = Instant::now();
        rt.block_on(write_payloads(url, mib))
            .with_context(|| format!("writing the first-sample dataset at {url}"))?;
        write_s = start.elapsed().as_secs_f64();
    }
    let mut runs = Vec::new();
    let mut shape = (0, 0, 0);
    for _ in 0..args.first_sample_runs.max(1) {
        let start = Instant::now();
        let source = rt
            .block_on(DatasetSource::open(url, Some(vec!["payload".into()])))
            .with_context(|| format!("opening {url}"))?;
        let open_s = start.elapsed().as_secs_f64();
        let shards = source.dataset().shards();
        shape = (
            shards.iter().map(|s| s.bytes).sum(),
            shards.iter().map(|s| s.rows).sum(),
            source.row_groups().len(),
        );
        let mut loader = payload_loader(source, args)?;
        let start_s = start.elapsed().as_secs_f64() - open_s;
        loader.next_batch()?.context("empty dataset")?;
        runs.push(FirstSampleRun {
            open_s,
            start_s,
            first_sample_s: start.elapsed().as_secs_f64(),
        });
    }
    Ok(FirstSampleResult {
        url: url.to_string(),
        bytes: shape.0,
        rows: shape.1,
        row_groups: shape.2,
        write_s,
        runs,
    })
}

/// One pass of the payload loader over the dataset at `url`.
struct Streamed {
    /// `DatasetSource::open`, seconds.
    open_s: f64,
    /// From before the open to the first sample, seconds.
    first_sample_s: f64,
    /// From `Loader::new` to the last sample, seconds.
    elapsed_s: f64,
    samples: u64,
    /// On-store bytes of the row groups read.
    bytes: u64,
    row_groups: usize,
}

/// Streams every row of the dataset at `url` once through [`payload_loader`].
fn stream_all(
    rt: &tokio::runtime::Runtime,
    url: &str,
    args: &BenchLoaderArgs,
) -> anyhow::Result<Streamed> {
    let start = Instant::now();
    let source = rt.block_on(DatasetSource::open(url, Some(vec!["payload".into()])))?;
    let open_s = start.elapsed().as_secs_f64();
    let row_groups = source.row_groups().len();
    // Timed like the raw and storage figures: from the first read, the dataset opened.
    let streaming = Instant::now();
    let mut loader = payload_loader(source, args)?;
    let mut samples = loader.next_batch()?.context("empty dataset")?.samples.len() as u64;
    let first_sample_s = start.elapsed().as_secs_f64();
    while let Some(batch) = loader.next_batch()? {
        samples += batch.samples.len() as u64;
    }
    let elapsed_s = streaming.elapsed().as_secs_f64();
    let bytes = loader.metrics().bytes_fetched;
    Ok(Streamed {
        open_s,
        first_sample_s,
        elapsed_s,
        samples,
        bytes,
        row_groups,
    })
}

/// Deletes every object under the dataset prefix `url`.
async fn delete_all(url: &str) -> anyhow::Result<()> {
    super::bench_storage::delete_prefix(&Location::parse(url)?).await
}

fn s3_run(args: &BenchLoaderArgs, url: &str) -> anyhow::Result<S3Result> {
    let rt = runtime()?;
    rt.block_on(write_payloads(url, args.s3_mib))
        .context("writing the benchmark dataset")?;
    let (raw_bytes, raw_before) = rt.block_on(async {
        let dataset = Dataset::open(url).await?;
        raw_gets(&dataset, args.concurrency).await
    })?;
    let storage_rate = rt.block_on(async {
        let dataset = Dataset::open(url).await?;
        storage_reads(&dataset, args.concurrency, BinaryLayout::Offsets).await
    })?;
    let storage_views_rate = rt.block_on(async {
        let dataset = Dataset::open(url).await?;
        storage_reads(&dataset, args.concurrency, BinaryLayout::Views).await
    })?;
    let streamed = stream_all(&rt, url, args)?;
    let (_, raw_after) = rt.block_on(async {
        let dataset = Dataset::open(url).await?;
        raw_gets(&dataset, args.concurrency).await
    })?;
    let raw = (raw_before + raw_after) / 2.0;
    let loader_rate = streamed.bytes as f64 / streamed.elapsed_s;
    let decode = if args.skip_decode {
        None
    } else {
        let copy = format!("memory://bench-decode-{}/ds", std::process::id());
        rt.block_on(copy_dataset(url, &copy))?;
        let mut decode = rt.block_on(decode_only(&copy, args.concurrency))?;
        let from_memory = stream_all(&rt, &copy, args)?;
        decode.loader_gb_per_s = from_memory.bytes as f64 / from_memory.elapsed_s / 1e9;
        decode.loader_samples_per_s = from_memory.samples as f64 / from_memory.elapsed_s;
        rt.block_on(delete_all(&copy))?;
        Some(decode)
    };
    rt.block_on(delete_all(url))?;
    Ok(S3Result {
        url: url.to_string(),
        bytes: raw_bytes,
        row_groups: streamed.row_groups,
        raw_get_gb_per_s: raw / 1e9,
        storage_read_gb_per_s: storage_rate / 1e9,
        storage_read_views_gb_per_s: storage_views_rate / 1e9,
        binary_layout: format!("{:?}", args.binary_layout.layout()),
        loader_gb_per_s: loader_rate / 1e9,
        loader_samples_per_s: streamed.samples as f64 / streamed.elapsed_s,
        loader_vs_raw: loader_rate / raw,
        open_s: streamed.open_s,
        time_to_first_sample_s: streamed.first_sample_s,
        decode,
    })
}

/// Copies every object of the dataset at `from` to the dataset URL `to`.
async fn copy_dataset(from: &str, to: &str) -> anyhow::Result<()> {
    let from = Location::parse(from)?;
    let to = Location::parse(to)?;
    let objects: Vec<_> = from.store.list(Some(&from.prefix)).try_collect().await?;
    for object in &objects {
        let bytes = from.store.get(&object.location).await?.bytes().await?;
        let relative: Vec<String> = object
            .location
            .prefix_match(&from.prefix)
            .context("listed object outside the prefix")?
            .map(|part| part.as_ref().to_string())
            .collect();
        to.store
            .put(&to.child(&relative.join("/")), bytes.into())
            .await?;
    }
    Ok(())
}

/// Reads every row group of the (in-memory) dataset at `url` in both layouts: one at
/// a time (milliseconds per row group) and with `concurrency` reads at once (GB/s).
async fn decode_only(url: &str, concurrency: usize) -> anyhow::Result<DecodeResult> {
    let dataset = Dataset::open(url).await?;
    let per_group = |rate: f64| -> f64 {
        let groups: Vec<u64> = dataset
            .shards()
            .iter()
            .flat_map(|s| s.row_group_bytes.iter().copied())
            .collect();
        groups.iter().sum::<u64>() as f64 / rate / groups.len().max(1) as f64 * 1000.0
    };
    // Alternate the layouts so neither gets the warmer allocator; keep each one's best.
    let (mut offsets_one, mut views_one) = (0f64, 0f64);
    for _ in 0..2 {
        offsets_one = offsets_one.max(storage_reads(&dataset, 1, BinaryLayout::Offsets).await?);
        views_one = views_one.max(storage_reads(&dataset, 1, BinaryLayout::Views).await?);
    }
    let offsets_many = storage_reads(&dataset, concurrency, BinaryLayout::Offsets).await?;
    let views_many = storage_reads(&dataset, concurrency, BinaryLayout::Views).await?;
    Ok(DecodeResult {
        offsets_ms_per_row_group: per_group(offsets_one),
        views_ms_per_row_group: per_group(views_one),
        offsets_gb_per_s: offsets_many / 1e9,
        views_gb_per_s: views_many / 1e9,
        loader_gb_per_s: 0.0,
        loader_samples_per_s: 0.0,
    })
}

/// Runs `scalefold bench loader`.
pub fn run(args: BenchLoaderArgs) -> anyhow::Result<()> {
    let (capacity, step, windows) = if args.skip_windows {
        (0.0, Duration::ZERO, Vec::new())
    } else {
        let capacity = capacity(&args)?;
        let step = Duration::from_secs_f64(args.step_factor / capacity);
        let windows = args
            .windows
            .iter()
            .map(|&w| window_run(&args, w, step))
            .collect::<anyhow::Result<Vec<_>>>()?;
        (capacity, step, windows)
    };
    let mut costs: Vec<Duration> = (0..20_000u64)
        .map(|s| cost(rng::splitmix64(s), args.median_ms, args.sigma))
        .collect();
    costs.sort();
    let p99_over_p50 =
        costs[costs.len() * 99 / 100].as_secs_f64() / costs[costs.len() / 2].as_secs_f64();
    let url = args.s3_url.clone().or_else(|| {
        std::env::var("SCALEFOLD_TEST_S3_BUCKET")
            .ok()
            .map(|b| format!("s3://{b}/bench-loader-{}", std::process::id()))
    });
    let s3 = match &url {
        Some(url) => Some(s3_run(&args, url)?),
        None => {
            eprintln!("note: no --s3-url and SCALEFOLD_TEST_S3_BUCKET unset: skipping the S3 part");
            None
        }
    };
    let first_sample = match &args.first_sample_url {
        Some(url) => Some(first_sample_run(&args, url)?),
        None => None,
    };
    let report = Report {
        bench: "loader",
        workers: args.workers,
        median_cost_ms: args.median_ms,
        p99_over_p50,
        capacity_samples_per_s: capacity,
        step_ms: step.as_secs_f64() * 1000.0,
        windows,
        s3,
        first_sample,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    if !report.windows.is_empty() {
        println!(
            "transform cost: log-normal, median {} ms, p99/p50 {:.1}; {} workers sustain {:.0} samples/s; step {:.3} ms",
            report.median_cost_ms,
            report.p99_over_p50,
            report.workers,
            report.capacity_samples_per_s,
            report.step_ms
        );
    }
    for w in &report.windows {
        println!(
            "W = {:2}: waiting {:6.2} % of step time, {:7.0} samples/s, longest wait {:6.2} ms, mean step {:.3} ms",
            w.window,
            100.0 * w.wait_fraction,
            w.samples_per_second,
            w.max_wait_ms,
            w.mean_step_ms
        );
    }
    if let Some(s3) = &report.s3 {
        println!(
            "S3 {} ({} MB, {} row groups): loader ({}) {:.3} GB/s ({:.0} samples/s), raw GET {:.3} GB/s, storage read+decode {:.3} GB/s (views {:.3}), loader/raw {:.2}; open {:.3} s, first sample after {:.3} s",
            s3.url,
            s3.bytes / 1_000_000,
            s3.row_groups,
            s3.binary_layout,
            s3.loader_gb_per_s,
            s3.loader_samples_per_s,
            s3.raw_get_gb_per_s,
            s3.storage_read_gb_per_s,
            s3.storage_read_views_gb_per_s,
            s3.loader_vs_raw,
            s3.open_s,
            s3.time_to_first_sample_s
        );
        if let Some(d) = &s3.decode {
            println!(
                "decode only (in-memory copy): {:.2} ms per row group copying values, {:.2} ms as views; {} at once: {:.2} GB/s copying, {:.2} GB/s as views; loader from the copy {:.2} GB/s ({:.0} samples/s)",
                d.offsets_ms_per_row_group,
                d.views_ms_per_row_group,
                args.concurrency,
                d.offsets_gb_per_s,
                d.views_gb_per_s,
                d.loader_gb_per_s,
                d.loader_samples_per_s
            );
        }
    }
    if let Some(first) = &report.first_sample {
        println!(
            "first sample on {} ({} MB, {} rows, {} row groups{}):",
            first.url,
            first.bytes / 1_000_000,
            first.rows,
            first.row_groups,
            if first.write_s > 0.0 {
                format!("; written in {:.1} s", first.write_s)
            } else {
                String::new()
            }
        );
        for run in &first.runs {
            println!(
                "  open {:.3} s, plan + start {:.3} s, first sample after {:.3} s",
                run.open_s, run.start_s, run.first_sample_s
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_is_heavy_tailed_with_the_requested_median() {
        let mut costs: Vec<f64> = (0..20_000u64)
            .map(|s| cost(rng::splitmix64(s), 2.0, 1.0).as_secs_f64())
            .collect();
        costs.sort_by(f64::total_cmp);
        let p50 = costs[10_000];
        let p99 = costs[19_800];
        assert!((p50 - 0.002).abs() < 0.0002, "{p50}");
        assert!(p99 / p50 > 9.0, "{}", p99 / p50);
    }
}
