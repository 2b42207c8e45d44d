//! Reading datasets: open and validate the manifest, stream record batches with column
//! projection, fetch single row groups by byte range (footers cached), verify checksums.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use bytes::{Buf, Bytes};
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStreamBuilder};
use parquet::errors::ParquetError;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use parquet::file::reader::{ChunkReader, Length};

use crate::error::{Result, StorageError};
use crate::location::Location;
use crate::manifest::{MANIFEST_NAME, Manifest, ShardInfo, format_checksum};

/// Bytes fetched from the end of a shard on the first footer read; most footers fit.
const FOOTER_PREFETCH: usize = 64 << 10;

/// How columns whose Arrow type is `Binary` or `LargeBinary` come out of a read.
///
/// Parquet stores each value of such a column behind its length inside a page, so a
/// contiguous Arrow `Binary` array needs every value copied out of the decompressed page
/// (and the copy's buffer grown as it fills). A `BinaryView` array points into the
/// decompressed pages instead. Both give the same bytes; only the Arrow type differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BinaryLayout {
    /// The type the schema names (`Binary`, `LargeBinary`): values copied into one buffer.
    #[default]
    Offsets,
    /// `BinaryView` for every top-level `Binary` or `LargeBinary` column: each value is a
    /// view into the decompressed page holding it, so no value is copied after
    /// decompression (nested binary values, e.g. list items, keep their type). The pages
    /// stay alive as long as any value of the batch does.
    Views,
}

impl BinaryLayout {
    /// The schema batches read with this layout have, given the file's schema.
    pub fn apply(self, schema: &Schema) -> Schema {
        match self {
            BinaryLayout::Offsets => schema.clone(),
            BinaryLayout::Views => {
                let fields: Vec<Field> = schema
                    .fields()
                    .iter()
                    .map(|f| match f.data_type() {
                        DataType::Binary | DataType::LargeBinary => {
                            f.as_ref().clone().with_data_type(DataType::BinaryView)
                        }
                        _ => f.as_ref().clone(),
                    })
                    .collect();
                Schema::new_with_metadata(fields, schema.metadata().clone())
            }
        }
    }
}

/// Options for [`Dataset::open_with`].
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// Fail unless the dataset's schema version is this one.
    pub expected_schema_version: Option<u32>,
}

/// An opened dataset: its manifest, and readers of its shards.
///
/// Cheap to share (`Arc` inside); footers are read once per shard and cached.
#[derive(Clone)]
pub struct Dataset {
    inner: Arc<Inner>,
}

struct Inner {
    location: Location,
    manifest: Manifest,
    schema: SchemaRef,
    /// Reader metadata per (shard, binary layout); the footer itself is fetched once per shard.
    footers: Mutex<HashMap<(usize, BinaryLayout), ArrowReaderMetadata>>,
}

impl Dataset {
    /// Opens the dataset at `url`: reads and validates its manifest.
    pub async fn open(url: &str) -> Result<Dataset> {
        Self::open_with(url, OpenOptions::default()).await
    }

    /// Opens the dataset at `url`, checking the schema version if asked.
    pub async fn open_with(url: &str, options: OpenOptions) -> Result<Dataset> {
        let location = Location::parse(url)?;
        let path = location.child(MANIFEST_NAME);
        let bytes = match crate::writer::get_bytes(&location.store, &path).await {
            Ok(bytes) => bytes,
            Err(StorageError::NotFound { path }) => {
                return Err(StorageError::ManifestNotFound {
                    url: url.to_string(),
                    path,
                });
            }
            Err(e) => return Err(e),
        };
        let manifest = Manifest::from_json(path.as_ref(), &bytes)?;
        if let Some(expected) = options.expected_schema_version
            && manifest.schema_version != expected
        {
            return Err(StorageError::UnknownSchemaVersion {
                url: url.to_string(),
                found: manifest.schema_version,
                expected,
            });
        }
        let schema = Arc::new(manifest.schema.clone());
        Ok(Dataset {
            inner: Arc::new(Inner {
                location,
                manifest,
                schema,
                footers: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The URL this dataset was opened from.
    pub fn url(&self) -> &str {
        &self.inner.location.url
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.inner.manifest
    }

    /// The Arrow schema of every shard.
    pub fn schema(&self) -> SchemaRef {
        self.inner.schema.clone()
    }

    /// The schema of the batches [`Self::read_row_group_with`] returns for `layout`
    /// (all columns; a projection picks from it).
    pub fn read_schema(&self, layout: BinaryLayout) -> SchemaRef {
        match layout {
            BinaryLayout::Offsets => self.inner.schema.clone(),
            BinaryLayout::Views => Arc::new(layout.apply(&self.inner.schema)),
        }
    }

    /// The shards, in manifest order.
    pub fn shards(&self) -> &[ShardInfo] {
        &self.inner.manifest.shards
    }

    /// The object store holding the dataset.
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        self.inner.location.store.clone()
    }

    /// Object path of shard `shard`.
    pub fn shard_path(&self, shard: usize) -> Result<Path> {
        Ok(self.inner.location.child(&self.shard(shard)?.name))
    }

    /// Total rows of the dataset.
    pub fn num_rows(&self) -> u64 {
        self.inner.manifest.total_rows()
    }

    fn shard(&self, shard: usize) -> Result<&ShardInfo> {
        let shards = &self.inner.manifest.shards;
        shards.get(shard).ok_or_else(|| StorageError::OutOfRange {
            url: self.url().to_string(),
            what: "shard",
            index: shard,
            len: shards.len(),
        })
    }

    /// Resolves column names to a projection. Unknown names are an error.
    fn projection(
        &self,
        columns: Option<&[String]>,
        layout: BinaryLayout,
    ) -> Result<Option<Projection>> {
        let Some(columns) = columns else {
            return Ok(None);
        };
        let requested = columns
            .iter()
            .map(|c| {
                self.inner
                    .schema
                    .index_of(c)
                    .map_err(|_| StorageError::UnknownColumn {
                        url: self.url().to_string(),
                        column: c.clone(),
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut file_order = requested.clone();
        file_order.sort_unstable();
        file_order.dedup();
        let reorder = requested
            .iter()
            .map(|i| {
                file_order
                    .binary_search(i)
                    .expect("every requested index is present")
            })
            .collect();
        let schema = Arc::new(self.read_schema(layout).project(&requested).map_err(|e| {
            StorageError::SchemaMismatch {
                url: self.url().to_string(),
                reason: e.to_string(),
            }
        })?);
        Ok(Some(Projection {
            file_order,
            reorder,
            schema,
        }))
    }

    /// Parquet metadata of a shard, read once (one suffix request for most footers) and cached.
    pub async fn shard_metadata(&self, shard: usize) -> Result<ArrowReaderMetadata> {
        if let Some(meta) = self.lock_footers().get(&(shard, BinaryLayout::Offsets)) {
            return Ok(meta.clone());
        }
        let info = self.shard(shard)?;
        let path = self.inner.location.child(&info.name);
        let mut reader = ShardReader::new(self.store(), path.clone());
        let metadata = ParquetMetaDataReader::new()
            .with_prefetch_hint(Some(FOOTER_PREFETCH))
            .load_and_finish(&mut reader, info.bytes)
            .await
            .map_err(|e| StorageError::from_parquet(path.as_ref(), e))?;
        let meta = ArrowReaderMetadata::try_new(Arc::new(metadata), ArrowReaderOptions::new())
            .map_err(|e| StorageError::from_parquet(path.as_ref(), e))?;
        self.lock_footers()
            .insert((shard, BinaryLayout::Offsets), meta.clone());
        Ok(meta)
    }

    /// [`Self::shard_metadata`] with the Arrow schema of `layout` (the same footer, cached).
    async fn shard_metadata_for(
        &self,
        shard: usize,
        layout: BinaryLayout,
    ) -> Result<ArrowReaderMetadata> {
        let plain = self.shard_metadata(shard).await?;
        if layout == BinaryLayout::Offsets {
            return Ok(plain);
        }
        if let Some(meta) = self.lock_footers().get(&(shard, layout)) {
            return Ok(meta.clone());
        }
        // The hint is the file's own Arrow schema with the layout's types, so only those differ.
        let hint = Arc::new(layout.apply(plain.schema()));
        let path = self.shard_path(shard)?;
        let meta = ArrowReaderMetadata::try_new(
            plain.metadata().clone(),
            ArrowReaderOptions::new().with_schema(hint),
        )
        .map_err(|e| StorageError::from_parquet(path.as_ref(), e))?;
        self.lock_footers().insert((shard, layout), meta.clone());
        Ok(meta)
    }

    fn lock_footers(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(usize, BinaryLayout), ArrowReaderMetadata>> {
        self.inner
            .footers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A stream of the batches of some row groups of one shard (all when `row_groups` is `None`).
    async fn shard_stream(
        &self,
        shard: usize,
        row_groups: Option<Vec<usize>>,
        projection: Option<&[String]>,
    ) -> Result<BoxStream<'static, Result<RecordBatch>>> {
        let projection = self.projection(projection, BinaryLayout::Offsets)?;
        let meta = self.shard_metadata(shard).await?;
        let path = self.shard_path(shard)?;
        let n_row_groups = meta.metadata().num_row_groups();
        if let Some(groups) = &row_groups
            && let Some(&bad) = groups.iter().find(|&&g| g >= n_row_groups)
        {
            return Err(StorageError::OutOfRange {
                url: self.url().to_string(),
                what: "row group",
                index: bad,
                len: n_row_groups,
            });
        }
        let mask = projection
            .as_ref()
            .map(|p| ProjectionMask::roots(meta.parquet_schema(), p.file_order.iter().copied()));
        let mut builder = ParquetRecordBatchStreamBuilder::new_with_metadata(
            ShardReader::new(self.store(), path.clone()),
            meta,
        )
        .with_batch_size(8192);
        if let Some(mask) = mask {
            builder = builder.with_projection(mask);
        }
        if let Some(groups) = row_groups {
            builder = builder.with_row_groups(groups);
        }
        let name = path.to_string();
        let stream = builder
            .build()
            .map_err(|e| StorageError::from_parquet(&name, e))?;
        let url = self.url().to_string();
        Ok(stream
            .map_err(move |e| StorageError::from_parquet(&name, e))
            .and_then(move |batch| {
                let reordered = match &projection {
                    Some(p) => p.apply(&url, &batch),
                    None => Ok(batch),
                };
                futures::future::ready(reordered)
            })
            .boxed())
    }

    /// Reads one row group of one shard, with byte-range requests for just its columns.
    ///
    /// The column chunks are fetched asynchronously (one coalesced `get_ranges`), then
    /// decompressed and decoded on tokio's blocking pool: several row groups in flight
    /// decode on several cores even when their futures are polled by one task (as
    /// `buffer_unordered` does), and decoding never stalls an async worker thread.
    /// Binary columns come back as the schema says ([`BinaryLayout::Offsets`]).
    pub async fn read_row_group(
        &self,
        shard: usize,
        row_group: usize,
        projection: Option<&[String]>,
    ) -> Result<RecordBatch> {
        self.read_row_group_with(shard, row_group, projection, BinaryLayout::Offsets)
            .await
    }

    /// [`Self::read_row_group`] with binary columns in `layout`: with
    /// [`BinaryLayout::Views`] the values stay in the decompressed pages (no copy).
    pub async fn read_row_group_with(
        &self,
        shard: usize,
        row_group: usize,
        projection: Option<&[String]>,
        layout: BinaryLayout,
    ) -> Result<RecordBatch> {
        let projection = self.projection(projection, layout)?;
        let meta = self.shard_metadata_for(shard, layout).await?;
        let path = self.shard_path(shard)?;
        let n_row_groups = meta.metadata().num_row_groups();
        if row_group >= n_row_groups {
            return Err(StorageError::OutOfRange {
                url: self.url().to_string(),
                what: "row group",
                index: row_group,
                len: n_row_groups,
            });
        }
        let group = meta.metadata().row_group(row_group);
        let columns: Vec<usize> = match &projection {
            Some(p) => p.file_order.clone(),
            None => (0..group.num_columns()).collect(),
        };
        let ranges: Vec<Range<u64>> = columns
            .iter()
            .map(|&c| {
                let (start, len) = group.column(c).byte_range();
                start..start + len
            })
            .collect();
        let name = path.to_string();
        let fetched = self
            .store()
            .get_ranges(&path, &ranges)
            .await
            .map_err(|e| StorageError::from_store(&name, e))?;
        let chunks = FetchedChunks {
            ranges: ranges.iter().map(|r| r.start).zip(fetched).collect(),
            file_len: self.shard(shard)?.bytes,
        };
        let rows = group.num_rows().max(1) as usize;
        let url = self.url().to_string();
        tokio::task::spawn_blocking(move || {
            let mask = projection.as_ref().map(|p| {
                ProjectionMask::roots(meta.parquet_schema(), p.file_order.iter().copied())
            });
            let mut builder = ParquetRecordBatchReaderBuilder::new_with_metadata(chunks, meta)
                .with_row_groups(vec![row_group])
                .with_batch_size(rows);
            if let Some(mask) = mask {
                builder = builder.with_projection(mask);
            }
            let reader = builder
                .build()
                .map_err(|e| StorageError::from_parquet(&name, e))?;
            let schema = arrow::record_batch::RecordBatchReader::schema(&reader);
            let batches: Vec<RecordBatch> =
                reader.collect::<std::result::Result<_, _>>().map_err(|e| {
                    StorageError::CorruptShard {
                        path: name.clone(),
                        reason: e.to_string(),
                    }
                })?;
            let batch = match batches.len() {
                1 => batches.into_iter().next().expect("one batch"),
                _ => arrow::compute::concat_batches(&schema, &batches).map_err(|e| {
                    StorageError::SchemaMismatch {
                        url: url.clone(),
                        reason: e.to_string(),
                    }
                })?,
            };
            match &projection {
                Some(p) => p.apply(&url, &batch),
                None => Ok(batch),
            }
        })
        .await
        .map_err(|e| StorageError::CorruptShard {
            path: path.to_string(),
            reason: format!("decoding row group {row_group} failed: {e}"),
        })?
    }

    /// Streams every row of the dataset, shard after shard, as record batches.
    pub fn stream(
        &self,
        projection: Option<Vec<String>>,
    ) -> BoxStream<'static, Result<RecordBatch>> {
        let dataset = self.clone();
        futures::stream::iter(0..self.shards().len())
            .then(move |shard| {
                let dataset = dataset.clone();
                let projection = projection.clone();
                async move {
                    dataset
                        .shard_stream(shard, None, projection.as_deref())
                        .await
                }
            })
            .try_flatten()
            .boxed()
    }

    /// Reads every shard whole and checks its size, checksum and row count against the manifest.
    pub async fn verify(&self) -> VerifyReport {
        let mut shards = Vec::with_capacity(self.shards().len());
        for (index, info) in self.shards().iter().enumerate() {
            let outcome = self.verify_shard(index).await;
            shards.push(ShardVerdict {
                name: info.name.clone(),
                error: outcome.err().map(|e| e.to_string()),
            });
        }
        VerifyReport { shards }
    }

    async fn verify_shard(&self, shard: usize) -> Result<()> {
        let info = self.shard(shard)?;
        let path = self.shard_path(shard)?;
        let result = self
            .store()
            .get(&path)
            .await
            .map_err(|e| StorageError::from_store(path.as_ref(), e))?;
        // Stream the object through the checksum: memory stays bounded by one chunk.
        let mut chunks = result.into_stream();
        let mut crc = 0u32;
        let mut size = 0u64;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| StorageError::from_store(path.as_ref(), e))?;
            crc = crc32c::crc32c_append(crc, &chunk);
            size += chunk.len() as u64;
        }
        if size != info.bytes {
            return Err(StorageError::ShardMismatch {
                path: path.to_string(),
                what: "bytes",
                expected: info.bytes,
                actual: size,
            });
        }
        let actual = format_checksum(crc);
        if actual != info.checksum {
            return Err(StorageError::ChecksumMismatch {
                path: path.to_string(),
                expected: info.checksum.clone(),
                actual,
            });
        }
        // The footer, fetched afresh (not from the cache) by byte range.
        let mut reader = ShardReader::new(self.store(), path.clone());
        let metadata = ParquetMetaDataReader::new()
            .with_prefetch_hint(Some(FOOTER_PREFETCH))
            .load_and_finish(&mut reader, size)
            .await
            .map_err(|e| StorageError::from_parquet(path.as_ref(), e))?;
        let rows = metadata.file_metadata().num_rows() as u64;
        if rows != info.rows {
            return Err(StorageError::ShardMismatch {
                path: path.to_string(),
                what: "rows",
                expected: info.rows,
                actual: rows,
            });
        }
        Ok(())
    }
}

/// A column projection: the columns to fetch in file order, and how to put them in the
/// order the caller asked for.
struct Projection {
    file_order: Vec<usize>,
    reorder: Vec<usize>,
    schema: SchemaRef,
}

impl Projection {
    /// Puts a batch read in file order into the requested column order.
    fn apply(&self, url: &str, batch: &RecordBatch) -> Result<RecordBatch> {
        let columns = self
            .reorder
            .iter()
            .map(|&i| batch.column(i).clone())
            .collect();
        RecordBatch::try_new(self.schema.clone(), columns).map_err(|e| {
            StorageError::SchemaMismatch {
                url: url.to_string(),
                reason: e.to_string(),
            }
        })
    }
}

/// The outcome of [`Dataset::verify`]: one verdict per shard.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VerifyReport {
    /// Every shard, in manifest order.
    pub shards: Vec<ShardVerdict>,
}

/// Whether one shard passed verification.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ShardVerdict {
    /// Shard name relative to the dataset.
    pub name: String,
    /// What is wrong with it, or `None` when it is sound.
    pub error: Option<String>,
}

impl VerifyReport {
    /// The shards that failed.
    pub fn bad_shards(&self) -> Vec<&ShardVerdict> {
        self.shards.iter().filter(|s| s.error.is_some()).collect()
    }

    /// True when every shard passed.
    pub fn is_ok(&self) -> bool {
        self.shards.iter().all(|s| s.error.is_none())
    }
}

/// Parquet's view of one shard object: byte ranges through the object store.
struct ShardReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
}

impl ShardReader {
    fn new(store: Arc<dyn ObjectStore>, path: Path) -> Self {
        ShardReader { store, path }
    }
}

fn external(e: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

impl AsyncFileReader for ShardReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            self.store
                .get_range(&self.path, range)
                .await
                .map_err(external)
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move {
            self.store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(external)
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.store.head(&self.path).await.map_err(external)?.size;
            let metadata = ParquetMetaDataReader::new()
                .with_prefetch_hint(Some(FOOTER_PREFETCH))
                .with_arrow_reader_options(options)
                .load_and_finish(&mut *self, size)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

/// The fetched column chunks of one row group, as the synchronous Parquet reader's
/// input: every read must fall inside one fetched range (the reader only asks for the
/// column chunks it was told to decode).
struct FetchedChunks {
    /// (file offset, bytes) of each fetched range.
    ranges: Vec<(u64, Bytes)>,
    /// Size of the whole shard object.
    file_len: u64,
}

impl FetchedChunks {
    fn slice(&self, start: u64, len: usize) -> parquet::errors::Result<Bytes> {
        self.ranges
            .iter()
            .find_map(|(offset, bytes)| {
                let begin = start.checked_sub(*offset)? as usize;
                (begin + len <= bytes.len()).then(|| bytes.slice(begin..begin + len))
            })
            .ok_or_else(|| {
                ParquetError::General(format!(
                    "read of {len} bytes at offset {start} outside the fetched column chunks"
                ))
            })
    }
}

impl Length for FetchedChunks {
    fn len(&self) -> u64 {
        self.file_len
    }
}

impl ChunkReader for FetchedChunks {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        // A reader runs to the end of the range holding `start`.
        let (offset, bytes) = self
            .ranges
            .iter()
            .find(|(offset, bytes)| (*offset..*offset + bytes.len() as u64).contains(&start))
            .ok_or_else(|| {
                ParquetError::General(format!(
                    "read at offset {start} outside the fetched column chunks"
                ))
            })?;
        Ok(bytes.slice((start - offset) as usize..).reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        self.slice(start, length)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::writer::{DatasetWriter, WriterOptions};
    use arrow::array::{Array, ArrayRef, AsArray, BinaryArray, LargeBinaryArray, StringArray};
    use proptest::prelude::*;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("payload", DataType::Binary, false),
            Field::new("note", DataType::LargeBinary, true),
        ]))
    }

    /// Writes `rows` (payload, note) as one source to a fresh in-memory dataset, small row groups.
    fn write(name: &str, rows: &[(Vec<u8>, Option<Vec<u8>>)]) -> Dataset {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let url = format!("memory://reader-tests/{name}");
        runtime.block_on(async {
            let options = WriterOptions {
                row_group_bytes: 4 << 10,
                ..WriterOptions::default()
            };
            let mut writer = DatasetWriter::create(&url, schema(), options)
                .await
                .unwrap();
            // Sources of 16 rows: row groups close between sources.
            for (source, chunk) in rows.chunks(16).enumerate() {
                let ids: Vec<String> = (0..chunk.len())
                    .map(|i| format!("r{}", source * 16 + i))
                    .collect();
                let batch = RecordBatch::try_new(
                    schema(),
                    vec![
                        Arc::new(StringArray::from(ids)) as ArrayRef,
                        Arc::new(BinaryArray::from_iter_values(chunk.iter().map(|r| &r.0))),
                        Arc::new(LargeBinaryArray::from_iter(
                            chunk.iter().map(|r| r.1.as_deref()),
                        )),
                    ],
                )
                .unwrap();
                let key = format!("s{source}");
                writer.write_source(&key, &batch).await.unwrap();
            }
            writer.finish_and_commit().await.unwrap();
            Dataset::open(&url).await.unwrap()
        })
    }

    /// Every row group of `dataset` read with `layout` and `projection`.
    fn read_all(
        dataset: &Dataset,
        layout: BinaryLayout,
        projection: Option<&[String]>,
    ) -> Vec<RecordBatch> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut batches = Vec::new();
        for (s, shard) in dataset.shards().iter().enumerate() {
            for g in 0..shard.row_group_rows.len() {
                batches.push(
                    runtime
                        .block_on(dataset.read_row_group_with(s, g, projection, layout))
                        .unwrap(),
                );
            }
        }
        batches
    }

    /// The values of a binary column of any layout, nulls as `None`.
    fn values(column: &ArrayRef) -> Vec<Option<Vec<u8>>> {
        let value = |i: usize| -> Vec<u8> {
            match column.data_type() {
                DataType::Binary => column.as_binary::<i32>().value(i).to_vec(),
                DataType::LargeBinary => column.as_binary::<i64>().value(i).to_vec(),
                DataType::BinaryView => column.as_binary_view().value(i).to_vec(),
                other => panic!("not a binary column: {other}"),
            }
        };
        (0..column.len())
            .map(|i| column.is_valid(i).then(|| value(i)))
            .collect()
    }

    fn column_values(batches: &[RecordBatch], name: &str) -> Vec<Option<Vec<u8>>> {
        batches
            .iter()
            .flat_map(|b| values(b.column_by_name(name).unwrap()))
            .collect()
    }

    #[test]
    fn views_hold_the_same_bytes_as_offsets_and_only_binary_columns_change() {
        // Short values (inlined in the view), long ones (pointing into the page), empty, null.
        let rows: Vec<(Vec<u8>, Option<Vec<u8>>)> = (0..300u32)
            .map(|i| {
                let payload: Vec<u8> = (0..(i * 37) % 700).map(|j| (i ^ j) as u8).collect();
                let note = (i % 3 != 0).then(|| vec![i as u8; (i % 20) as usize]);
                (payload, note)
            })
            .collect();
        let dataset = write("views", &rows);
        assert!(
            dataset.shards()[0].row_group_rows.len() > 2,
            "several row groups"
        );
        let expected_payload: Vec<Option<Vec<u8>>> =
            rows.iter().map(|r| Some(r.0.clone())).collect();
        let expected_note: Vec<Option<Vec<u8>>> = rows.iter().map(|r| r.1.clone()).collect();

        let views = read_all(&dataset, BinaryLayout::Views, None);
        let schema = views[0].schema();
        assert_eq!(schema.field(0).data_type(), &DataType::Utf8);
        assert_eq!(schema.field(1).data_type(), &DataType::BinaryView);
        assert_eq!(schema.field(2).data_type(), &DataType::BinaryView);
        assert_eq!(schema, dataset.read_schema(BinaryLayout::Views));
        assert_eq!(column_values(&views, "payload"), expected_payload);
        assert_eq!(column_values(&views, "note"), expected_note);

        let offsets = read_all(&dataset, BinaryLayout::Offsets, None);
        assert_eq!(offsets[0].schema().field(1).data_type(), &DataType::Binary);
        assert_eq!(
            offsets[0].schema().field(2).data_type(),
            &DataType::LargeBinary
        );
        assert_eq!(column_values(&offsets, "payload"), expected_payload);
        assert_eq!(column_values(&offsets, "note"), expected_note);

        // A projection in another order than the file's, with views.
        let projection = ["note".to_string(), "id".to_string()];
        let projected = read_all(&dataset, BinaryLayout::Views, Some(&projection));
        assert_eq!(projected[0].num_columns(), 2);
        assert_eq!(projected[0].schema().field(0).name(), "note");
        assert_eq!(
            projected[0].schema().field(0).data_type(),
            &DataType::BinaryView
        );
        assert_eq!(column_values(&projected, "note"), expected_note);
        assert_eq!(
            projected[0].column(1).as_string::<i32>().value(0),
            "r0",
            "strings keep their type"
        );
    }

    #[test]
    fn views_point_into_the_decompressed_pages() {
        // 40 values of 1000 bytes: a copying decoder makes one values buffer of all of
        // them; views keep the pages they were decoded from, so no buffer holds values
        // that the column does not (and there is no contiguous copy to hold them).
        let rows: Vec<(Vec<u8>, Option<Vec<u8>>)> =
            (0..40u8).map(|i| (vec![i; 1000], None)).collect();
        let dataset = write("pages", &rows);
        let batch = &read_all(&dataset, BinaryLayout::Views, Some(&["payload".into()]))[0];
        let column = batch.column(0).as_binary_view();
        let in_buffers: usize = column.data_buffers().iter().map(|b| b.len()).sum();
        let values: usize = (0..column.len()).map(|i| column.value(i).len()).sum();
        // Each Parquet page holds its values behind 4-byte lengths and nothing else.
        assert_eq!(in_buffers, values + 4 * column.len());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]
        #[test]
        fn any_binary_values_read_back_alike_in_both_layouts(
            rows in proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 0..200),
                 proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40))),
                1..120,
            ),
        ) {
            static CASE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let case = CASE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dataset = write(&format!("prop{case}"), &rows);
            let views = read_all(&dataset, BinaryLayout::Views, None);
            let offsets = read_all(&dataset, BinaryLayout::Offsets, None);
            for name in ["payload", "note"] {
                prop_assert_eq!(column_values(&views, name), column_values(&offsets, name));
            }
            let expected: Vec<Option<Vec<u8>>> = rows.iter().map(|r| r.1.clone()).collect();
            prop_assert_eq!(column_values(&views, "note"), expected);
        }
    }
}
