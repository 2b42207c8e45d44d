//! Parquet encoding of one shard with its column chunks encoded in parallel.
//!
//! [`ShardEncoder`] produces the same bytes as parquet's `ArrowWriter` with the same
//! properties (same row-group boundaries, same pages), but encodes and compresses the
//! columns of each batch on tokio's blocking pool, several columns at once, instead of
//! one after another on the calling task, so encoding never occupies the async worker
//! threads that drive the uploads. Measured (storage/BENCHMARKS.md, session 4): +27 % write
//! throughput with 8 writers on 8 cores, about 2x with 2 writers on 2 cores, no change with
//! 2 writers on 8 cores (a writer's rate there is bounded by something other than encoding
//! its columns one after another).

use arrow::array::Array;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::{
    ArrowColumnChunk, ArrowColumnWriter, ArrowLeafColumn, ArrowRowGroupWriterFactory,
    compute_leaves,
};
use parquet::errors::{ParquetError, Result};
use parquet::file::metadata::ParquetMetaData;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;

/// Columns are grouped into encoding tasks of at least this many bytes of Arrow data
/// (small columns such as ids and lengths ride along with a neighbour): one task per
/// large column, without paying a thread hand-off for each tiny one.
pub(crate) const DEFAULT_TASK_MIN_BYTES: usize = 32 << 10;

/// The row group being filled: one column writer per Parquet leaf column.
struct RowGroup {
    columns: Vec<ArrowColumnWriter>,
    rows: usize,
}

impl RowGroup {
    fn estimated_bytes(&self) -> usize {
        self.columns
            .iter()
            .map(ArrowColumnWriter::get_estimated_total_bytes)
            .sum()
    }
}

/// Encodes one Parquet file into an in-memory buffer that the caller drains with
/// [`Self::take_output`] (and uploads), row groups closed at `row_group_bytes`.
///
/// Invariant: after any error the encoder is poisoned (a column may hold more rows than
/// another), and every later call fails; the file it was writing must be abandoned.
pub(crate) struct ShardEncoder {
    file: SerializedFileWriter<Vec<u8>>,
    factory: ArrowRowGroupWriterFactory,
    schema: SchemaRef,
    row_group: Option<RowGroup>,
    row_group_bytes: usize,
    task_min_bytes: usize,
    poisoned: Option<String>,
}

impl ShardEncoder {
    /// A new file of `schema` with `properties`; row groups close once their estimated
    /// encoded size reaches `row_group_bytes` (as `ArrowWriter`'s byte bound does).
    pub(crate) fn new(
        schema: SchemaRef,
        properties: WriterProperties,
        row_group_bytes: usize,
        task_min_bytes: usize,
    ) -> Result<Self> {
        let (file, factory) = ArrowWriter::try_new(Vec::new(), schema.clone(), Some(properties))?
            .into_serialized_writer()?;
        Ok(ShardEncoder {
            file,
            factory,
            schema,
            row_group: None,
            row_group_bytes: row_group_bytes.max(1),
            task_min_bytes,
            poisoned: None,
        })
    }

    /// Bytes encoded into closed row groups so far (drained or not).
    pub(crate) fn bytes_written(&self) -> usize {
        self.file.bytes_written()
    }

    /// Estimated encoded size of the row group being filled.
    pub(crate) fn in_progress_size(&self) -> usize {
        self.row_group.as_ref().map_or(0, RowGroup::estimated_bytes)
    }

    /// The file bytes produced since the last call (whole row groups, then the footer).
    pub(crate) fn take_output(&mut self) -> Bytes {
        Bytes::from(std::mem::take(self.file.inner_mut()))
    }

    /// Appends `batch`, closing row groups at the byte bound. A batch is split across row
    /// groups where the average row size so far says it would overshoot the bound.
    pub(crate) async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.check_poisoned()?;
        let result = self.write_inner(batch).await;
        self.poison_on_error(result)
    }

    /// Closes the last row group and writes the footer; returns the file's metadata.
    pub(crate) async fn finish(&mut self) -> Result<ParquetMetaData> {
        self.check_poisoned()?;
        let result = async {
            self.flush_row_group().await?;
            self.file.finish()
        }
        .await;
        self.poison_on_error(result)
    }

    fn check_poisoned(&self) -> Result<()> {
        match &self.poisoned {
            Some(first) => Err(ParquetError::General(format!(
                "the shard encoder failed earlier ({first}); the shard is abandoned"
            ))),
            None => Ok(()),
        }
    }

    fn poison_on_error<T>(&mut self, result: Result<T>) -> Result<T> {
        if let Err(e) = &result {
            self.poisoned = Some(e.to_string());
        }
        result
    }

    async fn write_inner(&mut self, batch: &RecordBatch) -> Result<()> {
        let mut remaining = batch.clone();
        while remaining.num_rows() > 0 {
            let (buffered_rows, current_bytes) = match &self.row_group {
                Some(group) => (group.rows, group.estimated_bytes()),
                None => (0, 0),
            };
            // The same rule as `ArrowWriter::write` with only a byte bound, so that both
            // produce identical files: split where the average row size so far says the
            // bound would be crossed.
            let mut split_at = None;
            if let Some(average_row) = current_bytes.checked_div(buffered_rows) {
                if current_bytes >= self.row_group_bytes {
                    self.flush_row_group().await?;
                    continue;
                }
                if let Some(fit) = (self.row_group_bytes - current_bytes).checked_div(average_row)
                    && remaining.num_rows() > fit
                {
                    if fit == 0 {
                        self.flush_row_group().await?;
                        continue;
                    }
                    split_at = Some(fit);
                }
            }
            let rest = split_at.map(|fit| {
                let rest = remaining.slice(fit, remaining.num_rows() - fit);
                remaining = remaining.slice(0, fit);
                rest
            });
            self.encode(&remaining).await?;
            if self.in_progress_size() >= self.row_group_bytes {
                self.flush_row_group().await?;
            }
            remaining = match rest {
                Some(rest) => rest,
                None => break,
            };
        }
        Ok(())
    }

    /// Encodes all rows of `batch` into the current row group, column groups in parallel.
    async fn encode(&mut self, batch: &RecordBatch) -> Result<()> {
        let mut leaves_by_field = Vec::with_capacity(batch.num_columns());
        for (field, column) in self.schema.fields().iter().zip(batch.columns()) {
            let leaves = compute_leaves(field, column)?;
            leaves_by_field.push((leaves, column.get_array_memory_size()));
        }
        let group = match &mut self.row_group {
            Some(group) => group,
            slot => slot.insert(RowGroup {
                columns: self
                    .factory
                    .create_column_writers(self.file.flushed_row_groups().len())?,
                rows: 0,
            }),
        };
        let mut writers = std::mem::take(&mut group.columns).into_iter();
        let mut work: Vec<(Vec<(ArrowColumnWriter, ArrowLeafColumn)>, usize)> = Vec::new();
        for (leaves, bytes) in leaves_by_field {
            let pairs = leaves
                .into_iter()
                .map(|leaf| {
                    let writer = writers.next().ok_or_else(|| {
                        ParquetError::General("fewer column writers than leaf columns".into())
                    })?;
                    Ok((writer, leaf))
                })
                .collect::<Result<Vec<_>>>()?;
            work.push((pairs, bytes));
        }
        let tasks = group_by_size(work, self.task_min_bytes);
        let encoded = run_tasks(tasks, |pairs| {
            let mut writers = Vec::with_capacity(pairs.len());
            for (mut writer, leaf) in pairs {
                writer.write(&leaf)?;
                writers.push(writer);
            }
            Ok(writers)
        })
        .await?;
        group.columns = encoded.into_iter().flatten().collect();
        group.rows += batch.num_rows();
        Ok(())
    }

    /// Closes the current row group (its column writers in parallel) and appends it to the file.
    async fn flush_row_group(&mut self) -> Result<()> {
        let Some(group) = self.row_group.take() else {
            return Ok(());
        };
        let work = group
            .columns
            .into_iter()
            .map(|writer| {
                let bytes = writer.memory_size();
                (vec![writer], bytes)
            })
            .collect();
        let tasks = group_by_size(work, self.task_min_bytes);
        let chunks: Vec<ArrowColumnChunk> = run_tasks(tasks, |writers| {
            writers
                .into_iter()
                .map(ArrowColumnWriter::close)
                .collect::<Result<Vec<_>>>()
        })
        .await?
        .into_iter()
        .flatten()
        .collect();
        let mut row_group = self.file.next_row_group()?;
        for chunk in chunks {
            chunk.append_to_row_group(&mut row_group)?;
        }
        row_group.close()?;
        Ok(())
    }
}

/// Splits `items` (each with its size in bytes), in order, into consecutive groups of at
/// least `min_bytes` each (the last one may be smaller).
fn group_by_size<T>(items: Vec<(Vec<T>, usize)>, min_bytes: usize) -> Vec<Vec<T>> {
    let mut groups = Vec::new();
    let (mut current, mut current_bytes) = (Vec::new(), 0usize);
    for (item, bytes) in items {
        current.extend(item);
        current_bytes += bytes;
        if current_bytes >= min_bytes {
            groups.push(std::mem::take(&mut current));
            current_bytes = 0;
        }
    }
    if !current.is_empty() {
        groups.push(current);
    }
    groups
}

/// Runs `task` on every group on tokio's blocking pool, all at once; returns the outputs in
/// the groups' order (the first error, if any, after all have finished).
async fn run_tasks<T, U, F>(groups: Vec<Vec<T>>, task: F) -> Result<Vec<Vec<U>>>
where
    T: Send + 'static,
    U: Send + 'static,
    F: Fn(Vec<T>) -> Result<Vec<U>> + Send + Sync + Clone + 'static,
{
    let handles: Vec<_> = groups
        .into_iter()
        .map(|group| {
            let task = task.clone();
            tokio::task::spawn_blocking(move || task(group))
        })
        .collect();
    let mut outputs = Vec::with_capacity(handles.len());
    let mut first_error = None;
    for handle in handles {
        match handle.await {
            Ok(Ok(output)) => outputs.push(output),
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(join) => {
                first_error.get_or_insert(ParquetError::General(format!(
                    "a column encoding task failed: {join}"
                )));
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(outputs),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, BinaryArray, Float32Builder, Int32Array, ListBuilder};
    use arrow::datatypes::{DataType, Field, Schema};
    use parquet::basic::{Compression, ZstdLevel};
    use proptest::prelude::*;

    use super::*;

    fn schema() -> SchemaRef {
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

    /// A batch of `rows` rows whose sizes and contents follow `seed`, with some null lists.
    fn batch(seed: u64, rows: usize) -> RecordBatch {
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
        .unwrap()
    }

    fn properties(row_group_bytes: usize) -> WriterProperties {
        WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).unwrap()))
            .set_max_row_group_row_count(None)
            .set_max_row_group_bytes(Some(row_group_bytes))
            .set_dictionary_enabled(false)
            .build()
    }

    fn reference_file(batches: &[RecordBatch], row_group_bytes: usize) -> Vec<u8> {
        let mut writer =
            ArrowWriter::try_new(Vec::new(), schema(), Some(properties(row_group_bytes))).unwrap();
        for b in batches {
            writer.write(b).unwrap();
        }
        writer.into_inner().unwrap()
    }

    async fn encoded_file(
        batches: &[RecordBatch],
        row_group_bytes: usize,
        task_min_bytes: usize,
    ) -> (Vec<u8>, usize) {
        let mut encoder = ShardEncoder::new(
            schema(),
            properties(row_group_bytes),
            row_group_bytes,
            task_min_bytes,
        )
        .unwrap();
        let mut out = Vec::new();
        for b in batches {
            encoder.write(b).await.unwrap();
            out.extend_from_slice(&encoder.take_output());
        }
        let metadata = encoder.finish().await.unwrap();
        out.extend_from_slice(&encoder.take_output());
        (out, metadata.num_row_groups())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]
        /// Parallel column encoding writes the very bytes `ArrowWriter` writes: same row-group
        /// splits, same pages, same footer, for any batch sizes, bounds and task grouping.
        #[test]
        fn parallel_encoding_matches_arrow_writer(
            seed in any::<u64>(),
            rows in proptest::collection::vec(1usize..40, 1..12),
            row_group_kib in 1usize..64,
            task_min_bytes in prop_oneof![Just(0usize), Just(4096), Just(usize::MAX)],
        ) {
            let batches: Vec<RecordBatch> = rows
                .iter()
                .enumerate()
                .map(|(i, &n)| batch(seed ^ i as u64, n))
                .collect();
            let bound = row_group_kib << 10;
            let expected = reference_file(&batches, bound);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .build()
                .unwrap();
            let (actual, row_groups) =
                runtime.block_on(encoded_file(&batches, bound, task_min_bytes));
            prop_assert!(row_groups >= 1);
            prop_assert_eq!(actual.len(), expected.len());
            prop_assert!(actual == expected, "the files differ");
        }
    }

    /// A batch that cannot be encoded (a null in a non-nullable column) fails, and the
    /// encoder refuses any later write instead of producing an inconsistent row group.
    #[tokio::test]
    async fn an_encoding_error_poisons_the_encoder() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int32, false),
            Field::new("b", DataType::Int32, false),
        ]));
        let mut encoder =
            ShardEncoder::new(schema.clone(), properties(1 << 20), 1 << 20, 0).unwrap();
        // The record batch allows nulls in its own (nullable) schema; the file's does not.
        let loose = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int32, true),
            Field::new("b", DataType::Int32, true),
        ]));
        let bad = RecordBatch::try_new(
            loose,
            vec![
                Arc::new(Int32Array::from(vec![Some(1), Some(2)])) as ArrayRef,
                Arc::new(Int32Array::from(vec![Some(1), None])),
            ],
        )
        .unwrap();
        assert!(encoder.write(&bad).await.is_err());
        let good = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int32Array::from(vec![1])) as ArrayRef,
                Arc::new(Int32Array::from(vec![1])),
            ],
        )
        .unwrap();
        let later = encoder.write(&good).await.unwrap_err().to_string();
        assert!(later.contains("failed earlier"), "{later}");
        assert!(encoder.finish().await.is_err());
    }
}
