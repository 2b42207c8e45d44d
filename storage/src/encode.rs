//! Parquet encoding of one shard, several row groups encoded at once on tokio's blocking pool.
//!
//! [`ShardEncoder`] decides row-group boundaries on the calling task from the Arrow size of
//! the rows (scaled by the compression ratio measured so far), hands each full row group to
//! a blocking task that encodes and compresses it (the same column writers, in the same
//! order, as parquet's `ArrowWriter`), and appends the encoded groups to the file in order.
//! Up to `parallelism` row groups encode at once while the caller keeps adding rows and
//! uploading the groups already appended, so a single writer uses several cores and never
//! waits for one batch's encoding before taking the next.
//!
//! Why: a writer that encoded each batch and waited for it (session 4's encoder: the batch's
//! columns in parallel, then the next batch) spent 1.29 s waiting for 0.82 s of encoding
//! work on 256 MiB, ~1 ms of hand-off latency per source (storage/BENCHMARKS.md, session 5).
//!
//! Invariants:
//! - Every row group's bytes are exactly what `ArrowWriter` writes for the same rows given in
//!   the same batches and flushed at the same boundaries (property test below).
//! - The output is deterministic: boundaries depend only on the rows written and on the
//!   compression of row groups at least [`RATIO_LAG`] groups back (always finished by the
//!   time the group that uses them starts filling), never on timing or the parallelism.
//! - After any error the encoder is poisoned and every later call fails: the file it was
//!   writing must be abandoned.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, OffsetSizeTrait};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::{
    ArrowColumnChunk, ArrowColumnWriter, ArrowRowGroupWriterFactory, compute_leaves,
};
use parquet::errors::{ParquetError, Result};
use parquet::file::metadata::ParquetMetaData;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use tokio::task::JoinHandle;

/// The row-group bound for group `k` assumes the compression of groups `0..k - RATIO_LAG`:
/// with at most this many groups encoding at once those are always finished when group `k`
/// starts filling, so the boundaries never depend on timing nor on the parallelism.
const RATIO_LAG: usize = 16;

/// The most row groups one encoder encodes at once (see [`RATIO_LAG`]).
pub(crate) const MAX_PARALLELISM: usize = RATIO_LAG;

/// Arrow bytes against encoded (stored) bytes of finished row groups: the compression the
/// row-group bound assumes for rows not yet encoded. Carried from one shard to the next.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct SizeModel {
    /// Arrow bytes of the rows of the counted row groups.
    pub(crate) arrow_bytes: u64,
    /// Their encoded bytes in the file.
    pub(crate) stored_bytes: u64,
}

impl SizeModel {
    /// Stored bytes per Arrow byte; 1 before any row group finished (a conservative bound:
    /// the first groups come out smaller than the bound, never larger).
    fn ratio(&self) -> f64 {
        if self.arrow_bytes == 0 {
            1.0
        } else {
            (self.stored_bytes as f64 / self.arrow_bytes as f64).clamp(1.0 / 64.0, 2.0)
        }
    }

    fn add(&mut self, other: SizeModel) {
        self.arrow_bytes += other.arrow_bytes;
        self.stored_bytes += other.stored_bytes;
    }
}

/// Time an encoder spent, for [`crate::writer::WriteTimings`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct EncodeTimings {
    /// Summed over the blocking tasks: time encoding and compressing row groups.
    pub(crate) encoding: Duration,
    /// The same tasks' CPU time (less than `encoding` when they wait for a core).
    pub(crate) encoding_cpu: Duration,
    /// Time the caller waited for row groups to finish encoding (all `parallelism` tasks
    /// busy, or the file being finished).
    pub(crate) waiting: Duration,
    /// Row groups encoded.
    pub(crate) row_groups: u64,
}

/// The rows of the row group being filled, not encoded yet.
#[derive(Default)]
struct PendingGroup {
    batches: Vec<RecordBatch>,
    rows: usize,
    arrow_bytes: usize,
}

/// What a row-group task returns.
struct EncodedGroup {
    chunks: Vec<ArrowColumnChunk>,
    busy: Duration,
    cpu: Duration,
}

/// A row group being encoded on the blocking pool.
struct InFlight {
    handle: JoinHandle<Result<EncodedGroup>>,
    arrow_bytes: usize,
}

/// Encodes one Parquet file into an in-memory buffer that the caller drains with
/// [`Self::take_output`] (and uploads). See the module docs for the invariants.
pub(crate) struct ShardEncoder {
    file: SerializedFileWriter<Vec<u8>>,
    factory: ArrowRowGroupWriterFactory,
    schema: SchemaRef,
    row_group_bytes: usize,
    parallelism: usize,
    pending: PendingGroup,
    in_flight: VecDeque<InFlight>,
    /// Row groups handed to tasks so far (the index of the group being filled).
    dispatched: usize,
    /// Compression of the shards written before this one.
    prior: SizeModel,
    /// Per appended row group of this file, in order.
    appended: Vec<SizeModel>,
    /// Stored bytes per Arrow byte assumed for the group being filled.
    ratio: f64,
    /// Predicted stored bytes of the dispatched row groups (at their own ratio).
    dispatched_estimate: f64,
    timings: EncodeTimings,
    poisoned: Option<String>,
}

impl ShardEncoder {
    /// A new file of `schema` with `properties`. Rows join a row group while its predicted
    /// encoded size stays within `row_group_bytes`, except that a group's first batch is taken
    /// whole (as `ArrowWriter` does); up to `parallelism` of them (at most [`MAX_PARALLELISM`]) encode at once. `prior` is the compression
    /// measured on earlier shards of the same writer ([`SizeModel::default`] for none).
    pub(crate) fn new(
        schema: SchemaRef,
        properties: WriterProperties,
        row_group_bytes: usize,
        parallelism: usize,
        prior: SizeModel,
    ) -> Result<Self> {
        let (file, factory) = ArrowWriter::try_new(Vec::new(), schema.clone(), Some(properties))?
            .into_serialized_writer()?;
        Ok(ShardEncoder {
            file,
            factory,
            schema,
            row_group_bytes: row_group_bytes.max(1),
            parallelism: parallelism.clamp(1, MAX_PARALLELISM),
            pending: PendingGroup::default(),
            in_flight: VecDeque::new(),
            dispatched: 0,
            prior,
            appended: Vec::new(),
            ratio: prior.ratio(),
            dispatched_estimate: 0.0,
            timings: EncodeTimings::default(),
            poisoned: None,
        })
    }

    /// Predicted size of the file so far: its row groups (encoded or not) at the compression
    /// assumed when each was filled. Deterministic (it does not depend on which groups have
    /// finished encoding), so shards roll at the same rows in every run.
    pub(crate) fn estimated_size(&self) -> u64 {
        (self.dispatched_estimate + self.pending.arrow_bytes as f64 * self.ratio) as u64
    }

    /// The compression of the prior shards plus this file's row groups that are settled
    /// whatever the timing (all but the last [`RATIO_LAG`] dispatched), for the next shard.
    pub(crate) fn settled_size_model(&self) -> SizeModel {
        let mut model = self.prior;
        let settled = self.dispatched.saturating_sub(RATIO_LAG);
        self.appended[..settled].iter().for_each(|g| model.add(*g));
        model
    }

    /// Time spent so far.
    pub(crate) fn timings(&self) -> EncodeTimings {
        self.timings
    }

    /// The file bytes appended since the last call (whole row groups, then the footer).
    pub(crate) fn take_output(&mut self) -> Bytes {
        Bytes::from(std::mem::take(self.file.inner_mut()))
    }

    /// Adds the rows of `batch`, handing row groups to the encoding tasks as they fill, and
    /// appends the groups whose encoding already finished. Waits only while `parallelism`
    /// groups are encoding.
    pub(crate) async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.check_poisoned()?;
        let result = self.write_inner(batch).await;
        self.poison_on_error(result)
    }

    /// Encodes the last row group, appends every group and writes the footer; returns the
    /// file's metadata.
    pub(crate) async fn finish(&mut self) -> Result<ParquetMetaData> {
        self.check_poisoned()?;
        let result = async {
            self.dispatch()?;
            while !self.in_flight.is_empty() {
                self.append_oldest().await?;
            }
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
        if batch.schema().fields() != self.schema.fields() {
            return Err(ParquetError::General(format!(
                "batch fields {:?} differ from the file's {:?}",
                batch.schema().fields(),
                self.schema.fields()
            )));
        }
        let mut remaining = batch.clone();
        while remaining.num_rows() > 0 {
            let bound = self.row_group_bytes as f64;
            let filled = self.pending.arrow_bytes as f64 * self.ratio;
            let room = bound - filled;
            let arrow_bytes = batch_arrow_bytes(&remaining);
            let predicted = arrow_bytes as f64 * self.ratio;
            // As in `ArrowWriter`, the first rows of a group are taken whole (a group passes
            // the bound by at most its first batch); later ones fill it up to the bound.
            if predicted <= room || self.pending.rows == 0 {
                self.add_to_pending(remaining, arrow_bytes);
                if self.pending.arrow_bytes as f64 * self.ratio >= bound {
                    self.dispatch_and_make_room().await?;
                }
                break;
            }
            // The rows that fit, by the remaining rows' average size.
            let per_row = predicted / remaining.num_rows() as f64;
            let fit = ((room.max(0.0) / per_row) as usize).min(remaining.num_rows());
            if fit == 0 {
                self.dispatch_and_make_room().await?;
                continue;
            }
            let head = remaining.slice(0, fit);
            let head_bytes = batch_arrow_bytes(&head);
            self.add_to_pending(head, head_bytes);
            remaining = remaining.slice(fit, remaining.num_rows() - fit);
            self.dispatch_and_make_room().await?;
        }
        self.append_finished().await
    }

    fn add_to_pending(&mut self, batch: RecordBatch, arrow_bytes: usize) {
        self.pending.rows += batch.num_rows();
        self.pending.arrow_bytes += arrow_bytes;
        self.pending.batches.push(batch);
    }

    /// Hands the pending group to a task, after waiting (appending in order) until fewer
    /// than `parallelism` are encoding; then sets the ratio for the next group from the
    /// groups at least [`RATIO_LAG`] back, which are all appended by now.
    async fn dispatch_and_make_room(&mut self) -> Result<()> {
        while self.in_flight.len() >= self.parallelism {
            self.append_oldest().await?;
        }
        self.dispatch()?;
        self.ratio = self.settled_size_model().ratio();
        Ok(())
    }

    /// Starts encoding the pending group (if it has rows) on the blocking pool.
    fn dispatch(&mut self) -> Result<()> {
        if self.pending.rows == 0 {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        let writers = self.factory.create_column_writers(self.dispatched)?;
        let schema = self.schema.clone();
        let handle = tokio::task::spawn_blocking(move || {
            encode_row_group(&schema, writers, pending.batches)
        });
        self.dispatched_estimate += pending.arrow_bytes as f64 * self.ratio;
        self.dispatched += 1;
        self.in_flight.push_back(InFlight {
            handle,
            arrow_bytes: pending.arrow_bytes,
        });
        Ok(())
    }

    /// Appends the oldest groups whose encoding has finished, without waiting.
    async fn append_finished(&mut self) -> Result<()> {
        while self
            .in_flight
            .front()
            .is_some_and(|group| group.handle.is_finished())
        {
            self.append_oldest().await?;
        }
        Ok(())
    }

    /// Waits for the oldest group in flight and appends it to the file.
    async fn append_oldest(&mut self) -> Result<()> {
        let Some(group) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let start = Instant::now();
        let encoded = group.handle.await.map_err(|join| {
            ParquetError::General(format!("a row-group encoding task failed: {join}"))
        })??;
        self.timings.waiting += start.elapsed();
        self.timings.encoding += encoded.busy;
        self.timings.encoding_cpu += encoded.cpu;
        self.timings.row_groups += 1;
        let before = self.file.bytes_written();
        let total: u64 = encoded
            .chunks
            .iter()
            .map(|c| c.close().metadata.compressed_size().max(0) as u64)
            .sum();
        self.file.inner_mut().reserve(total as usize);
        let mut row_group = self.file.next_row_group()?;
        for chunk in encoded.chunks {
            chunk.append_to_row_group(&mut row_group)?;
        }
        row_group.close()?;
        self.appended.push(SizeModel {
            arrow_bytes: group.arrow_bytes as u64,
            stored_bytes: (self.file.bytes_written() - before) as u64,
        });
        Ok(())
    }
}

/// Encodes one row group: every batch's leaves through the column writers, in order (as
/// `ArrowWriter` does), then closes the column chunks (compressing their last pages).
fn encode_row_group(
    schema: &SchemaRef,
    mut writers: Vec<ArrowColumnWriter>,
    batches: Vec<RecordBatch>,
) -> Result<EncodedGroup> {
    let start = Instant::now();
    let cpu_start = crate::cpu_clock::thread_cpu_nanos();
    for batch in &batches {
        let mut next = writers.iter_mut();
        for (field, column) in schema.fields().iter().zip(batch.columns()) {
            for leaf in compute_leaves(field, column)? {
                next.next()
                    .ok_or_else(|| {
                        ParquetError::General("fewer column writers than leaf columns".into())
                    })?
                    .write(&leaf)?;
            }
        }
    }
    let chunks = writers
        .into_iter()
        .map(ArrowColumnWriter::close)
        .collect::<Result<Vec<_>>>()?;
    Ok(EncodedGroup {
        chunks,
        busy: start.elapsed(),
        cpu: Duration::from_nanos(crate::cpu_clock::thread_cpu_nanos().saturating_sub(cpu_start)),
    })
}

/// Arrow bytes of the rows of `batch` (not of whole shared buffers when it is a slice).
fn batch_arrow_bytes(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|c| array_bytes(c.as_ref()))
        .sum()
}

/// Bytes of the values an array (or a slice of one) holds: offsets, validity and data, with
/// lists counted by the child values their offsets reach.
fn array_bytes(array: &dyn Array) -> usize {
    let validity = array.nulls().map_or(0, |n| n.len().div_ceil(8));
    let nested = match array.data_type() {
        DataType::List(_) => Some(list_bytes::<i32>(array)),
        DataType::LargeList(_) => Some(list_bytes::<i64>(array)),
        DataType::FixedSizeList(_, size) => {
            let list = array.as_fixed_size_list();
            let size = *size as usize;
            let values = list.values().slice(list.offset() * size, list.len() * size);
            Some(array_bytes(values.as_ref()))
        }
        DataType::Struct(_) => Some(
            array
                .as_struct()
                .columns()
                .iter()
                .map(|c| array_bytes(c.as_ref()))
                .sum(),
        ),
        _ => None,
    };
    match nested {
        Some(bytes) => validity + bytes,
        // Flat layouts (primitives, strings, binaries): exact for slices.
        None => array
            .to_data()
            .get_slice_memory_size()
            .unwrap_or_else(|_| array.get_array_memory_size()),
    }
}

/// Bytes of a (possibly sliced) list array with offsets of type `O`, without its validity:
/// its offsets plus the child values those offsets reach.
fn list_bytes<O: OffsetSizeTrait>(array: &dyn Array) -> usize {
    let list = array.as_list::<O>();
    let offsets = list.value_offsets();
    let (first, last) = (offsets[0].as_usize(), offsets[list.len()].as_usize());
    std::mem::size_of::<O>() * (list.len() + 1)
        + array_bytes(list.values().slice(first, last - first).as_ref())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Int32Array};
    use arrow::datatypes::{DataType, Field, Schema};
    use parquet::basic::{Compression, ZstdLevel};
    use proptest::prelude::*;

    use super::*;

    use crate::test_batches::{batch, schema};

    /// The writer properties the dataset writer uses, without a row-group bound of parquet's
    /// own (the reference is flushed by hand at the encoder's boundaries).
    fn properties() -> WriterProperties {
        WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).unwrap()))
            .set_max_row_group_row_count(None)
            .set_max_row_group_bytes(None)
            .set_dictionary_enabled(false)
            .build()
    }

    /// `ArrowWriter`'s file for `batches`, flushed after the row counts of `groups`.
    fn reference_file(batches: &[RecordBatch], groups: &[usize]) -> Vec<u8> {
        let mut writer = ArrowWriter::try_new(Vec::new(), schema(), Some(properties())).unwrap();
        let all = arrow::compute::concat_batches(&schema(), batches).unwrap();
        let mut offset = 0;
        for &rows in groups {
            // The encoder writes the caller's batches, sliced at group boundaries: give
            // ArrowWriter the very same pieces.
            for piece in pieces(batches, offset, rows) {
                writer.write(&piece).unwrap();
            }
            writer.flush().unwrap();
            offset += rows;
        }
        assert_eq!(offset, all.num_rows());
        writer.into_inner().unwrap()
    }

    /// The slices of `batches` covering rows `offset..offset + rows` of their concatenation.
    fn pieces(batches: &[RecordBatch], offset: usize, rows: usize) -> Vec<RecordBatch> {
        let (mut start, mut out) = (0, Vec::new());
        for b in batches {
            let end = start + b.num_rows();
            let lo = offset.max(start);
            let hi = (offset + rows).min(end);
            if lo < hi {
                out.push(b.slice(lo - start, hi - lo));
            }
            start = end;
        }
        out
    }

    async fn encoded_file(
        batches: &[RecordBatch],
        row_group_bytes: usize,
        parallelism: usize,
    ) -> (Vec<u8>, ParquetMetaData) {
        let mut encoder = ShardEncoder::new(
            schema(),
            properties(),
            row_group_bytes,
            parallelism,
            SizeModel::default(),
        )
        .unwrap();
        let mut out = Vec::new();
        for b in batches {
            encoder.write(b).await.unwrap();
            out.extend_from_slice(&encoder.take_output());
        }
        let metadata = encoder.finish().await.unwrap();
        out.extend_from_slice(&encoder.take_output());
        (out, metadata)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]
        /// Row groups encoded in parallel are the very bytes `ArrowWriter` writes for the same
        /// rows flushed at the same boundaries; the same input gives the same file whatever
        /// the parallelism.
        #[test]
        fn parallel_row_groups_match_arrow_writer(
            seed in any::<u64>(),
            rows in proptest::collection::vec(1usize..40, 1..12),
            row_group_kib in 1usize..64,
            parallelism in 1usize..5,
        ) {
            let batches: Vec<RecordBatch> = rows
                .iter()
                .enumerate()
                .map(|(i, &n)| batch(seed ^ i as u64, n))
                .collect();
            let bound = row_group_kib << 10;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .build()
                .unwrap();
            let (actual, metadata) =
                runtime.block_on(encoded_file(&batches, bound, parallelism));
            let groups: Vec<usize> =
                metadata.row_groups().iter().map(|g| g.num_rows() as usize).collect();
            prop_assert!(!groups.is_empty());
            let expected = reference_file(&batches, &groups);
            prop_assert_eq!(actual.len(), expected.len());
            prop_assert!(actual == expected, "the files differ");
            let (serial, _) = runtime.block_on(encoded_file(&batches, bound, 1));
            prop_assert!(serial == actual, "parallelism changed the file");
        }
    }

    /// With the compression known, row groups come out near the bound: not above it by more
    /// than a batch, and (apart from the last) not far below.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn row_groups_are_bounded_by_stored_bytes() {
        let batches: Vec<RecordBatch> = (0..800).map(|i| batch(i, 3)).collect();
        let bound = 32 << 10;
        let (_, metadata) = encoded_file(&batches, bound, 3).await;
        let sizes: Vec<i64> = metadata
            .row_groups()
            .iter()
            .map(|g| g.compressed_size())
            .collect();
        assert!(sizes.len() >= RATIO_LAG + 8, "{sizes:?}");
        // The first RATIO_LAG groups assume no compression; the rest use the measured one.
        for &size in &sizes[..RATIO_LAG] {
            assert!(size as usize <= bound, "{sizes:?}");
        }
        for &size in &sizes[RATIO_LAG..sizes.len() - 1] {
            assert!(size as usize <= bound + (8 << 10), "{sizes:?}");
            assert!(size as usize >= bound / 2, "{sizes:?}");
        }
    }

    /// The Arrow size of a slice counts the sliced rows only, lists by the values they reach.
    #[test]
    fn arrow_bytes_of_slices() {
        let b = batch(7, 30);
        let whole = batch_arrow_bytes(&b);
        let halves = batch_arrow_bytes(&b.slice(0, 15)) + batch_arrow_bytes(&b.slice(15, 15));
        // Offsets and validity bytes round per half; the values add up.
        assert!(halves.abs_diff(whole) <= 16, "{whole} vs {halves}");
        assert!(batch_arrow_bytes(&b.slice(0, 1)) < whole / 5);
    }

    /// A batch that cannot be encoded (a null in a non-nullable column) fails, and the
    /// encoder refuses any later write instead of producing an inconsistent row group.
    #[tokio::test]
    async fn an_encoding_error_poisons_the_encoder() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int32, false),
            Field::new("b", DataType::Int32, false),
        ]));
        let mut encoder = ShardEncoder::new(
            schema.clone(),
            properties(),
            1 << 20,
            2,
            SizeModel::default(),
        )
        .unwrap();
        // The record batch allows nulls in its own (nullable) schema; the file's does not.
        let loose = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int32, true),
            Field::new("b", DataType::Int32, true),
        ]));
        let bad = RecordBatch::try_new(
            loose.clone(),
            vec![
                Arc::new(Int32Array::from(vec![Some(1), Some(2)])) as ArrayRef,
                Arc::new(Int32Array::from(vec![Some(1), None])),
            ],
        )
        .unwrap();
        // Fields differ (nullability): refused before anything is encoded.
        assert!(encoder.write(&bad).await.is_err());
        let later = encoder.finish().await.unwrap_err().to_string();
        assert!(later.contains("failed earlier"), "{later}");
    }
}
