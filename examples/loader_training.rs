//! A small, protein-free training loop fed by the streaming loader.
//!
//! It writes a Parquet dataset of numbers (four features and a target that is a
//! noisy linear function of them), then fits a linear model with SGD, reading the
//! data through `scalefold-loader`: a seeded shuffled plan, a per-sample random
//! transform (feature noise drawn from the sample's seed), ready-first delivery
//! in a window of 4, and a mid-run checkpoint of the loader state that a second
//! loader resumes from.
//!
//! Run: `cargo run --release --example loader_training [DATASET_URL]`
//! (default: a fresh folder under the system temp dir; any `s3://bucket/prefix`
//! works the same with the `AWS_*` variables set).

use std::sync::Arc;

use anyhow::Context;
use arrow::array::{Array, AsArray, Float32Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Float32Type, Schema, SchemaRef};
use scalefold_loader::{
    DatasetSource, Loader, LoaderConfig, LoaderState, Plan, PlanConfig, RowGroupSource, RowRef,
    Sampling, TransformError, rng,
};
use scalefold_storage::{DatasetWriter, WriterOptions};

const FEATURES: usize = 4;
const TRUE_WEIGHTS: [f32; FEATURES] = [0.5, -1.25, 2.0, 0.75];
const TRUE_BIAS: f32 = 0.3;

fn schema() -> SchemaRef {
    let mut fields: Vec<Field> = (0..FEATURES)
        .map(|i| Field::new(format!("x{i}"), DataType::Float32, false))
        .collect();
    fields.push(Field::new("y", DataType::Float32, false));
    fields.push(Field::new("source", DataType::Utf8, false));
    Arc::new(Schema::new(fields))
}

/// Writes `sources × rows` rows; x is uniform in [-1, 1), y = w·x + b + small noise.
async fn write_dataset(url: &str, sources: usize, rows: usize) -> anyhow::Result<()> {
    let options = WriterOptions {
        row_group_bytes: 64 << 10,
        ..WriterOptions::default()
    };
    let mut writer = DatasetWriter::create(url, schema(), options).await?;
    for s in 0..sources {
        let mut draws = rng::rng_from(&[s as u64]);
        let mut columns: Vec<Vec<f32>> = (0..=FEATURES).map(|_| Vec::with_capacity(rows)).collect();
        for _ in 0..rows {
            let mut y = TRUE_BIAS + 0.01 * (rng::unit(&mut draws) as f32 - 0.5);
            for (i, column) in columns.iter_mut().take(FEATURES).enumerate() {
                let x = 2.0 * rng::unit(&mut draws) as f32 - 1.0;
                y += TRUE_WEIGHTS[i] * x;
                column.push(x);
            }
            columns[FEATURES].push(y);
        }
        let key = format!("part-{s}");
        let mut arrays: Vec<Arc<dyn Array>> = columns
            .into_iter()
            .map(|c| Arc::new(Float32Array::from(c)) as Arc<dyn Array>)
            .collect();
        arrays.push(Arc::new(StringArray::from(vec![key.as_str(); rows])));
        writer
            .write_source(&key, &RecordBatch::try_new(schema(), arrays)?)
            .await?;
    }
    writer.finish_and_commit().await?;
    Ok(())
}

/// One training sample.
struct Sample {
    x: [f32; FEATURES],
    y: f32,
}

/// The per-sample transform: reads the row and adds seeded input noise (a data
/// augmentation); the same (row, seed) always gives the same sample.
fn to_sample(row: RowRef<'_>, seed: u64) -> Result<Sample, TransformError> {
    let value = |name: &str| -> Result<f32, TransformError> {
        let column = row
            .batch
            .column_by_name(name)
            .ok_or_else(|| format!("no column {name}"))?;
        Ok(column.as_primitive::<Float32Type>().value(row.index))
    };
    let mut noise = rng::rng_from(&[seed]);
    let mut x = [0.0; FEATURES];
    for (i, xi) in x.iter_mut().enumerate() {
        *xi = value(&format!("x{i}"))? + 0.002 * (rng::unit(&mut noise) as f32 - 0.5);
    }
    Ok(Sample { x, y: value("y")? })
}

/// A linear model trained with plain SGD on the mean squared error.
struct Linear {
    w: [f32; FEATURES],
    b: f32,
}

impl Linear {
    /// One SGD step on a batch; returns the batch's mean squared error.
    fn step(&mut self, batch: &[Sample], lr: f32) -> f32 {
        let (mut gw, mut gb, mut loss) = ([0.0f32; FEATURES], 0.0f32, 0.0f32);
        for s in batch {
            let err = self.w.iter().zip(&s.x).map(|(w, x)| w * x).sum::<f32>() + self.b - s.y;
            loss += err * err;
            for (g, x) in gw.iter_mut().zip(&s.x) {
                *g += 2.0 * err * x;
            }
            gb += 2.0 * err;
        }
        let n = batch.len().max(1) as f32;
        for (w, g) in self.w.iter_mut().zip(gw) {
            *w -= lr * g / n;
        }
        self.b -= lr * gb / n;
        loss / n
    }
}

fn start_loader(
    source: &DatasetSource,
    resume: Option<LoaderState>,
) -> anyhow::Result<Loader<Sample>> {
    let rows: Vec<u64> = source.row_groups().iter().map(|g| g.rows).collect();
    let plan = Plan::new(
        PlanConfig {
            seed: 2024,
            rank: 0,
            world_size: 1,
            batch_size: 32,
            sampling: Sampling::Shuffle {
                block_row_groups: 4,
            },
        },
        &rows,
    )?;
    let config = LoaderConfig {
        window: 4,
        epochs: Some(3),
        resume,
        ..LoaderConfig::default()
    };
    Ok(Loader::new(
        Arc::new(source.clone()),
        plan,
        to_sample,
        config,
    )?)
}

fn main() -> anyhow::Result<()> {
    let temp = tempfile::tempdir()?;
    let url = match std::env::args().nth(1) {
        Some(url) => url,
        None => temp.path().join("numbers").display().to_string(),
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime
        .block_on(write_dataset(&url, 8, 2000))
        .context("writing the dataset")?;
    let features: Vec<String> = (0..FEATURES)
        .map(|i| format!("x{i}"))
        .chain(["y".to_string()])
        .collect();
    let source = runtime.block_on(DatasetSource::open(&url, Some(features)))?;
    println!("dataset {url}: {} row groups", source.row_groups().len());

    let mut model = Linear {
        w: [0.0; FEATURES],
        b: 0.0,
    };
    let mut loader = start_loader(&source, None)?;
    let mut checkpoint = None;
    let mut epoch_loss = (0u64, 0.0f32, 0usize);
    let report = |epoch: u64, loss: f32, steps: usize| {
        println!("epoch {epoch}: mean batch MSE {:.6}", loss / steps as f32)
    };
    while let Some(batch) = loader.next_batch()? {
        if batch.epoch != epoch_loss.0 {
            report(epoch_loss.0, epoch_loss.1, epoch_loss.2);
            epoch_loss = (batch.epoch, 0.0, 0);
        }
        epoch_loss.1 += model.step(&batch.samples, 0.1);
        epoch_loss.2 += 1;
        // Halfway through epoch 1, save the loader state (with the model, in a real
        // trainer) and continue from it with a fresh loader, as after a restart.
        if checkpoint.is_none()
            && batch.epoch == 1
            && batch.index == loader.plan().batches_per_epoch() / 2
        {
            let state = serde_json::to_string(&loader.state())?;
            println!("checkpoint: {state}");
            drop(loader);
            loader = start_loader(&source, Some(serde_json::from_str(&state)?))?;
            checkpoint = Some(state);
        }
    }
    report(epoch_loss.0, epoch_loss.1, epoch_loss.2);
    let metrics = loader.metrics();
    println!(
        "learned w = {:?}, b = {:.3} (true {:?}, {TRUE_BIAS}); loader after resume: {} samples/s, waited {:.3} s in total, reorder histogram {:?}",
        model.w,
        model.b,
        TRUE_WEIGHTS,
        metrics.samples_per_second as u64,
        metrics.wait_seconds_total,
        metrics.reorder_histogram
    );
    let error = model
        .w
        .iter()
        .zip(TRUE_WEIGHTS)
        .map(|(a, b)| (a - b).abs())
        .fold((model.b - TRUE_BIAS).abs(), f32::max);
    anyhow::ensure!(
        error < 0.05,
        "the model did not converge (max parameter error {error})"
    );
    Ok(())
}
