//! Helpers shared by the dataset tests: a table of numbers written with the storage crate.

use std::sync::Arc;

use arrow::array::{AsArray, Float32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use scalefold_loader::{Plan, PlanConfig, RowGroupSource, RowRef, Sampling, TransformError};
use scalefold_storage::{DatasetWriter, WriterOptions};

/// Schema: `id` (the row number), `key` (the source key), `value` (a float).
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("key", DataType::Utf8, false),
        Field::new("value", DataType::Float32, false),
    ]))
}

/// Writes `sources` sources of `rows_per_source` rows each to `url` and commits,
/// with small row groups so the loader has many to fetch.
pub async fn write_numbers(url: &str, sources: usize, rows_per_source: usize) {
    let options = WriterOptions {
        row_group_bytes: 2 << 10,
        ..WriterOptions::default()
    };
    let mut writer = DatasetWriter::create(url, schema(), options).await.unwrap();
    for s in 0..sources {
        let key = format!("source-{s}");
        let batch = numbers(s * rows_per_source, rows_per_source, &key);
        writer.write_source(&key, &batch).await.unwrap();
    }
    writer.finish_and_commit().await.unwrap();
}

/// Rows `first..first + rows` of the table: ids counting up, `key` in every row, value id / 2.
pub fn numbers(first: usize, rows: usize, key: &str) -> RecordBatch {
    let ids: Vec<i64> = (first..first + rows).map(|i| i as i64).collect();
    let values: Vec<f32> = ids.iter().map(|&i| i as f32 * 0.5).collect();
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(StringArray::from(vec![key; rows])),
            Arc::new(Float32Array::from(values)),
        ],
    )
    .unwrap()
}

/// A one-rank shuffled plan over `source`'s row groups.
pub fn shuffle_plan(
    source: &dyn RowGroupSource,
    seed: u64,
    batch_size: usize,
    block_row_groups: usize,
) -> Plan {
    let rows: Vec<u64> = source.row_groups().iter().map(|g| g.rows).collect();
    Plan::new(
        PlanConfig {
            seed,
            rank: 0,
            world_size: 1,
            batch_size,
            sampling: Sampling::Shuffle { block_row_groups },
        },
        &rows,
    )
    .unwrap()
}

/// Transform: the row's `id`, read from a batch projected to `["id"]`.
pub fn read_id(row: RowRef<'_>, _seed: u64) -> Result<i64, TransformError> {
    let column = row.batch.column_by_name("id").ok_or("no id column")?;
    Ok(column.as_primitive::<Int64Type>().value(row.index))
}
