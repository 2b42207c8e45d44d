//! `scalefold bench loader`: how much of a training step waits for data, strict
//! order (W = 1) against ready-first windows, with a heavy-tailed transform cost;
//! and streaming throughput from an S3 server against raw GETs of the same bytes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use arrow::array::{AsArray, BinaryArray, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use clap::Args;
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use scalefold_loader::{
    DatasetSource, Loader, LoaderConfig, MemorySource, Plan, PlanConfig, RowGroupSource, RowRef,
    Sampling, TransformError, rng,
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
    /// Print one JSON line.
    #[arg(long)]
    pub json: bool,
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
    /// Row groups read and decoded by the storage crate alone, same concurrency, no loader.
    storage_read_gb_per_s: f64,
    loader_gb_per_s: f64,
    loader_samples_per_s: f64,
    loader_vs_raw: f64,
    time_to_first_sample_s: f64,
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

/// Every row group read and decoded through `Dataset::read_row_group`; returns bytes per second.
async fn storage_reads(dataset: &Dataset, concurrency: usize) -> anyhow::Result<f64> {
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
                    .read_row_group(shard, group, Some(projection))
                    .await
                    .map(|b| b.num_rows())
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(bytes as f64 / begin.elapsed().as_secs_f64())
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
        storage_reads(&dataset, args.concurrency).await
    })?;
    let start = Instant::now();
    let source = rt.block_on(DatasetSource::open(url, Some(vec!["payload".into()])))?;
    let group_rows: Vec<u64> = source.row_groups().iter().map(|g| g.rows).collect();
    let row_groups = group_rows.len();
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
    let transform = |row: RowRef<'_>, _seed: u64| -> Result<usize, TransformError> {
        let payload = row.batch.column(0).as_binary::<i32>();
        Ok(payload.value(row.index).len())
    };
    let config = LoaderConfig {
        window: 8,
        fetch_concurrency: args.concurrency,
        prefetch_bytes: 512 << 20,
        ..LoaderConfig::default()
    };
    let mut loader = Loader::new(Arc::new(source), plan, transform, config)?;
    let mut samples = loader.next_batch()?.context("empty dataset")?.samples.len() as u64;
    let first = start.elapsed().as_secs_f64();
    while let Some(batch) = loader.next_batch()? {
        samples += batch.samples.len() as u64;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let metrics = loader.metrics();
    drop(loader);
    let (_, raw_after) = rt.block_on(async {
        let dataset = Dataset::open(url).await?;
        raw_gets(&dataset, args.concurrency).await
    })?;
    let raw = (raw_before + raw_after) / 2.0;
    let loader_rate = metrics.bytes_fetched as f64 / elapsed;
    rt.block_on(async {
        let location = Location::parse(url)?;
        let objects: Vec<_> = location
            .store
            .list(Some(&location.prefix))
            .try_collect()
            .await?;
        for object in objects {
            location.store.delete(&object.location).await?;
        }
        anyhow::Ok(())
    })?;
    Ok(S3Result {
        url: url.to_string(),
        bytes: raw_bytes,
        row_groups,
        raw_get_gb_per_s: raw / 1e9,
        storage_read_gb_per_s: storage_rate / 1e9,
        loader_gb_per_s: loader_rate / 1e9,
        loader_samples_per_s: samples as f64 / elapsed,
        loader_vs_raw: loader_rate / raw,
        time_to_first_sample_s: first,
    })
}

/// Runs `scalefold bench loader`.
pub fn run(args: BenchLoaderArgs) -> anyhow::Result<()> {
    let capacity = capacity(&args)?;
    let step = Duration::from_secs_f64(args.step_factor / capacity);
    let windows = args
        .windows
        .iter()
        .map(|&w| window_run(&args, w, step))
        .collect::<anyhow::Result<Vec<_>>>()?;
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
    let report = Report {
        bench: "loader",
        workers: args.workers,
        median_cost_ms: args.median_ms,
        p99_over_p50,
        capacity_samples_per_s: capacity,
        step_ms: step.as_secs_f64() * 1000.0,
        windows,
        s3,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    println!(
        "transform cost: log-normal, median {} ms, p99/p50 {:.1}; {} workers sustain {:.0} samples/s; step {:.3} ms",
        report.median_cost_ms,
        report.p99_over_p50,
        report.workers,
        report.capacity_samples_per_s,
        report.step_ms
    );
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
            "S3 {} ({} MB, {} row groups): loader {:.3} GB/s ({:.0} samples/s), raw GET {:.3} GB/s, storage read+decode {:.3} GB/s, loader/raw {:.2}; first sample after {:.3} s",
            s3.url,
            s3.bytes / 1_000_000,
            s3.row_groups,
            s3.loader_gb_per_s,
            s3.loader_samples_per_s,
            s3.raw_get_gb_per_s,
            s3.storage_read_gb_per_s,
            s3.loader_vs_raw,
            s3.time_to_first_sample_s
        );
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
