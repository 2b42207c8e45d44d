//! Pseudo-random record batches for the crate's unit tests (the writer's and the
//! encoder's): a length column, a nullable list of floats and a binary payload, sized by a
//! seed so every test draws the same data.

use std::sync::Arc;

use arrow::array::{ArrayRef, BinaryArray, Float32Builder, Int32Array, ListBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;

/// `length: Int32`, `values: List<Float32>` (nullable), `payload: Binary`.
pub(crate) fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("length", DataType::Int32, false),
        Field::new(
            "values",
            DataType::List(Arc::new(Field::new("item", DataType::Float32, true))),
            true,
        ),
        Field::new("payload", DataType::Binary, false),
    ]))
}

/// A batch of `rows` rows whose sizes and contents follow `seed`: lists of 0-299 values
/// (about one in seven null), payloads of 4 bytes per value.
pub(crate) fn batch(seed: u64, rows: usize) -> RecordBatch {
    let mut state = seed;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        state >> 33
    };
    let mut lengths = Vec::new();
    let mut values = ListBuilder::new(Float32Builder::new());
    let mut payloads = Vec::new();
    for _ in 0..rows {
        let length = (next() % 300) as usize;
        lengths.push(length as i32);
        if next() % 7 == 0 {
            values.append(false);
        } else {
            for _ in 0..length {
                values.values().append_value((next() % 1000) as f32 / 8.0);
            }
            values.append(true);
        }
        payloads.push(
            (0..length * 4)
                .map(|_| next() as u8 % 22)
                .collect::<Vec<u8>>(),
        );
    }
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int32Array::from(lengths)) as ArrayRef,
            Arc::new(values.finish()),
            Arc::new(BinaryArray::from_iter_values(payloads)),
        ],
    )
    .expect("the columns match the schema")
}
