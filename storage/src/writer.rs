//! Writing datasets: Parquet shards with zstd, row groups bounded by bytes, shards rolled
//! at a target size, uploaded with multipart uploads, and manifests written last.
//!
//! Protocol (what makes writers resumable and concurrent):
//! 1. Worker `i` of `n` writes shards named `shards/wIIIII-SSSSSS-NONCE.parquet`; no two
//!    writers (nor two runs of one writer) ever write the same object.
//! 2. After each shard is complete, the worker rewrites its partial manifest
//!    `_parts/worker-IIIII.json` (one atomic PUT) listing its finished shards. A shard is
//!    finished (its last row groups encoded, its last parts uploaded, its multipart upload
//!    completed) in the background while the next shard is written; at most one at a time.
//! 3. [`commit`] merges all partial manifests into `manifest.json` once every worker has
//!    finished, and removes shard objects that no partial manifest names (leftovers of
//!    interrupted runs).
//!
//! A shard that was being written when a writer died is in no manifest, so readers never see it.
//! A re-run asks [`DatasetWriter::is_finished`] for each source key and skips the finished ones;
//! since a source's rows are never split across shards, nothing is lost or duplicated.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::AsArray;
use arrow::datatypes::{Int64Type, SchemaRef};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parquet::arrow::ArrowSchemaConverter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;

use crate::encode::{EncodeTimings, ShardEncoder, SizeModel};
use crate::error::{Result, StorageError};
use crate::location::Location;
use crate::manifest::{
    FORMAT_VERSION, LengthStats, MANIFEST_NAME, Manifest, PARTS_DIR, PartManifest,
    SCHEMA_VERSION_KEY, SHARDS_DIR, ShardInfo, format_checksum,
};

/// The smallest multipart-upload part S3 (and compatible stores) accept: 5 MiB.
pub const MIN_UPLOAD_PART_BYTES: usize = 5 << 20;

/// How a [`DatasetWriter`] lays out its shards.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// zstd compression level (1..=22). Default 1: on feature data level 3 spent 1.6x the
    /// compression instructions for 1.9 % smaller shards (storage/BENCHMARKS.md).
    pub zstd_level: i32,
    /// Rows join a row group while its predicted encoded size (the rows' Arrow bytes times
    /// the compression measured so far) stays within this many bytes, so a loader can fetch
    /// one row group with one byte-range request; as with `ArrowWriter`, a group's first
    /// batch is taken whole. Default 4 MiB.
    pub row_group_bytes: usize,
    /// A shard is closed (at a source boundary) once it reaches this many bytes. Default 256 MiB.
    pub shard_bytes: u64,
    /// Size of each multipart-upload part. Default 16 MiB; at least
    /// [`MIN_UPLOAD_PART_BYTES`], the smallest part S3 accepts.
    pub upload_part_bytes: usize,
    /// Multipart-upload parts in flight at once, per writer. Default 4.
    pub upload_concurrency: usize,
    /// Row groups encoded at once, per writer, on tokio's blocking pool (each on one core).
    /// Default: the cores available, at most 8; values above 16 count as 16. Does not
    /// change the bytes written.
    pub encode_parallelism: usize,
    /// Top-level columns written without Parquet statistics (no min/max in the footer).
    /// Computing min/max of large binary or list values costs encoding time and footer
    /// bytes for no use when nothing filters on them. Default: none (chunk-level statistics
    /// for every column).
    pub columns_without_statistics: Vec<String>,
    /// This writer's index, `0..workers`.
    pub worker: u32,
    /// Number of writers that together write the dataset. Default 1.
    pub workers: u32,
    /// Version of the data schema, recorded in the manifest and in every shard.
    pub schema_version: u32,
    /// Free key-value metadata, recorded in the manifest and in every shard.
    pub metadata: BTreeMap<String, String>,
    /// Name of the column holding each row's source key, if any (recorded in the manifest).
    pub source_key_column: Option<String>,
    /// Name of an integer column to keep per-shard statistics of (e.g. sequence length).
    pub length_column: Option<String>,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            zstd_level: 1,
            row_group_bytes: 4 << 20,
            shard_bytes: 256 << 20,
            upload_part_bytes: 16 << 20,
            upload_concurrency: 4,
            encode_parallelism: default_encode_parallelism(),
            columns_without_statistics: Vec::new(),
            worker: 0,
            workers: 1,
            schema_version: 1,
            metadata: BTreeMap::new(),
            source_key_column: None,
            length_column: None,
        }
    }
}

/// The default [`WriterOptions::encode_parallelism`]: the cores available, at most 8.
pub fn default_encode_parallelism() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
}

/// Where a writer's time went, summed since it was created (see [`DatasetWriter::timings`]).
///
/// `encoding` is work on the blocking pool (it overlaps everything else); the waits are time
/// the writer's own task spent blocked, i.e. what bounded its rate.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct WriteTimings {
    /// Seconds of row-group encoding and compression, summed over the encoding tasks.
    pub encoding_s: f64,
    /// CPU seconds of those tasks (less than `encoding_s` when they wait for a core).
    pub encoding_cpu_s: f64,
    /// Seconds waiting for row groups to finish encoding (all encoding tasks busy, or a
    /// shard being finished).
    pub encode_wait_s: f64,
    /// Seconds waiting for the upload to take bytes (all parts in flight).
    pub upload_wait_s: f64,
    /// Seconds finishing shards (their last row groups, last parts and multipart
    /// completion), summed; every shard but the last is finished in the background.
    pub shard_close_s: f64,
    /// Seconds waiting for a shard to finish (the previous one still finishing when the
    /// next rolled, or the last ones at [`DatasetWriter::finish`]).
    pub close_wait_s: f64,
    /// Seconds publishing partial manifests (one PUT per finished shard and one at the end).
    pub manifest_s: f64,
    /// Row groups encoded.
    pub row_groups: u64,
    /// Shards finished.
    pub shards: u64,
}

impl std::ops::AddAssign for WriteTimings {
    /// Sums two writers' timings (e.g. the workers of one job).
    fn add_assign(&mut self, other: WriteTimings) {
        self.encoding_s += other.encoding_s;
        self.encoding_cpu_s += other.encoding_cpu_s;
        self.encode_wait_s += other.encode_wait_s;
        self.upload_wait_s += other.upload_wait_s;
        self.shard_close_s += other.shard_close_s;
        self.close_wait_s += other.close_wait_s;
        self.manifest_s += other.manifest_s;
        self.row_groups += other.row_groups;
        self.shards += other.shards;
    }
}

/// Writes one worker's share of a dataset. See the module docs for the protocol.
pub struct DatasetWriter {
    location: Location,
    schema: SchemaRef,
    options: WriterOptions,
    properties: WriterProperties,
    part: PartManifest,
    /// Source keys in finished shards of any worker, plus those written in this run.
    seen_keys: HashSet<String>,
    open: Option<OpenShard>,
    /// The previous shard, being finished in the background.
    closing: Option<ClosingShard>,
    next_seq: u32,
    nonce: String,
    /// Compression measured on this writer's finished shards (the next shard starts with it).
    size_model: SizeModel,
    /// Timings of finished shards and manifests (the open shard's encoder keeps its own).
    timings: WriteTimings,
}

/// The shard being written: its encoder and the multipart upload its bytes go to.
struct OpenShard {
    name: String,
    path: Path,
    encoder: ShardEncoder,
    upload: ChecksumWriter,
    rows: u64,
    source_keys: Vec<String>,
    length_stats: Option<LengthStats>,
}

impl DatasetWriter {
    /// Opens worker `options.worker`'s writer for the dataset at `url` with `schema`.
    ///
    /// If earlier runs left partial manifests, their finished shards are kept and their
    /// source keys reported by [`Self::is_finished`].
    pub async fn create(url: &str, schema: SchemaRef, options: WriterOptions) -> Result<Self> {
        validate_options(&schema, &options)?;
        let location = Location::parse(url)?;
        let parts = read_parts(&location).await?;
        let mut seen_keys = HashSet::new();
        let mut own: Option<PartManifest> = None;
        for part in parts {
            check_compatible(&location, &schema, &options, &part)?;
            for shard in &part.manifest.shards {
                seen_keys.extend(shard.source_keys.iter().cloned());
            }
            if part.worker == options.worker {
                own = Some(part);
            }
        }
        let part = own.unwrap_or_else(|| PartManifest {
            worker: options.worker,
            workers: options.workers,
            complete: false,
            manifest: Manifest {
                format_version: FORMAT_VERSION,
                schema_version: options.schema_version,
                schema: schema.as_ref().clone(),
                metadata: options.metadata.clone(),
                source_key_column: options.source_key_column.clone(),
                length_column: options.length_column.clone(),
                shards: Vec::new(),
            },
        });
        let next_seq = part.manifest.shards.len() as u32;
        let level = ZstdLevel::try_new(options.zstd_level)
            .map_err(|e| StorageError::InvalidArgument(format!("zstd level: {e}")))?;
        let mut kv: Vec<KeyValue> = options
            .metadata
            .iter()
            .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
            .collect();
        kv.push(KeyValue::new(
            SCHEMA_VERSION_KEY.to_string(),
            options.schema_version.to_string(),
        ));
        let mut properties = WriterProperties::builder()
            // No row-group bounds here: parquet applies them only in `ArrowWriter::write`,
            // which is never called; `ShardEncoder` closes row groups at `row_group_bytes`.
            .set_compression(Compression::ZSTD(level))
            // Feature columns are large numeric lists and blobs: a dictionary does not pay off
            // there (the stored size was identical with and without; storage/BENCHMARKS.md).
            .set_dictionary_enabled(false)
            .set_statistics_enabled(EnabledStatistics::Chunk)
            .set_key_value_metadata(Some(kv));
        for column in statistics_free_leaves(&schema, &options.columns_without_statistics)? {
            properties = properties.set_column_statistics_enabled(column, EnabledStatistics::None);
        }
        let properties = properties.build();
        Ok(DatasetWriter {
            location,
            schema,
            options,
            properties,
            part,
            seen_keys,
            open: None,
            closing: None,
            next_seq,
            nonce: run_nonce(),
            size_model: SizeModel::default(),
            timings: WriteTimings::default(),
        })
    }

    /// Whether the rows of `source_key` are already in a finished shard (of any worker) or
    /// were written in this run.
    pub fn is_finished(&self, source_key: &str) -> bool {
        self.seen_keys.contains(source_key)
    }

    /// Number of source keys already finished or written.
    pub fn finished_count(&self) -> usize {
        self.seen_keys.len()
    }

    /// The dataset's schema.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Where this writer's time went so far (including the open shard).
    pub fn timings(&self) -> WriteTimings {
        let mut timings = self.timings;
        if let Some(open) = &self.open {
            add_encode_timings(&mut timings, &open.encoder.timings());
        }
        timings
    }

    /// Writes all the rows of one source (e.g. all chains of one input file) in one call.
    ///
    /// A source's rows always land in one shard; writing a key twice is an error.
    pub async fn write_source(&mut self, source_key: &str, batch: &RecordBatch) -> Result<()> {
        if self.seen_keys.contains(source_key) {
            return Err(StorageError::InvalidArgument(format!(
                "source {source_key:?} was already written to {}",
                self.location.url
            )));
        }
        if batch.schema().fields() != self.schema.fields() {
            return Err(StorageError::SchemaMismatch {
                url: self.location.url.clone(),
                reason: format!(
                    "batch for source {source_key:?} has fields {:?}, the dataset {:?}",
                    field_names(&batch.schema()),
                    field_names(&self.schema)
                ),
            });
        }
        let lengths = self.length_stats_of(batch)?;
        if self
            .closing
            .as_ref()
            .is_some_and(|closing| closing.task.is_finished())
        {
            self.await_closing().await?;
        }
        let shard_bytes = self.options.shard_bytes;
        if let Some(open) = self
            .open
            .take_if(|open| open.encoder.estimated_size() >= shard_bytes)
        {
            // The next shard's row groups assume the compression seen so far; only groups
            // that are settled whatever the timing count, so the files stay deterministic.
            self.size_model = open.encoder.settled_size_model();
            self.await_closing().await?;
            self.closing = Some(ClosingShard {
                path: open.path.clone(),
                task: tokio::spawn(open.close()),
            });
        }
        if self.open.is_none() {
            self.open = Some(self.open_shard()?);
        }
        let open = self.open.as_mut().expect("a shard was just opened");
        let path = open.path.clone();
        open.encoder
            .write(batch)
            .await
            .map_err(|e| StorageError::from_parquet(path.as_ref(), e))?;
        let encoded = open.encoder.take_output();
        let start = Instant::now();
        open.upload.write(encoded, &path).await?;
        self.timings.upload_wait_s += start.elapsed().as_secs_f64();
        open.rows += batch.num_rows() as u64;
        open.source_keys.push(source_key.to_string());
        open.length_stats = match (open.length_stats, lengths) {
            (Some(a), Some(b)) => Some(a.merge(b)),
            (a, b) => a.or(b),
        };
        self.seen_keys.insert(source_key.to_string());
        self.part.complete = false;
        Ok(())
    }

    /// Closes the open shard, marks this worker complete and publishes its partial manifest.
    pub async fn finish(self) -> Result<PartManifest> {
        Ok(self.finish_timed().await?.0)
    }

    /// [`Self::finish`], also returning where the writer's time went.
    pub async fn finish_timed(mut self) -> Result<(PartManifest, WriteTimings)> {
        self.await_closing().await?;
        if let Some(open) = self.open.take() {
            let start = Instant::now();
            let closed = open.close().await;
            self.timings.close_wait_s += start.elapsed().as_secs_f64();
            self.record_closed(closed?).await?;
        }
        self.part.complete = true;
        self.publish_part().await?;
        Ok((self.part, self.timings))
    }

    /// For a single writer (`workers == 1`): [`Self::finish`], then [`commit`].
    pub async fn finish_and_commit(self) -> Result<Manifest> {
        if self.options.workers != 1 {
            return Err(StorageError::InvalidArgument(format!(
                "finish_and_commit needs a single writer; this is worker {} of {}: call finish() on each, then commit()",
                self.options.worker, self.options.workers
            )));
        }
        let url = self.location.url.clone();
        self.finish().await?;
        Ok(commit(&url).await?.manifest)
    }

    fn length_stats_of(&self, batch: &RecordBatch) -> Result<Option<LengthStats>> {
        let Some(column) = &self.options.length_column else {
            return Ok(None);
        };
        let array = batch
            .column_by_name(column)
            .ok_or_else(|| StorageError::UnknownColumn {
                url: self.location.url.clone(),
                column: column.clone(),
            })?;
        let values =
            arrow::compute::cast(array, &arrow::datatypes::DataType::Int64).map_err(|e| {
                StorageError::SchemaMismatch {
                    url: self.location.url.clone(),
                    reason: format!("length column {column:?} is not an integer column: {e}"),
                }
            })?;
        let values = values.as_primitive::<Int64Type>();
        Ok(values
            .iter()
            .flatten()
            .map(LengthStats::of)
            .reduce(LengthStats::merge))
    }

    fn open_shard(&mut self) -> Result<OpenShard> {
        let name = format!(
            "{SHARDS_DIR}/w{:05}-{:06}-{}.parquet",
            self.options.worker, self.next_seq, self.nonce
        );
        self.next_seq += 1;
        let path = self.location.child(&name);
        let upload = BufWriter::with_capacity(
            self.location.store.clone(),
            path.clone(),
            self.options.upload_part_bytes,
        )
        .with_max_concurrency(self.options.upload_concurrency);
        let encoder = ShardEncoder::new(
            self.schema.clone(),
            self.properties.clone(),
            self.options.row_group_bytes,
            self.options.encode_parallelism,
            self.size_model,
        )
        .map_err(|e| StorageError::from_parquet(path.as_ref(), e))?;
        Ok(OpenShard {
            name,
            path,
            encoder,
            upload: ChecksumWriter::new(upload),
            rows: 0,
            source_keys: Vec::new(),
            length_stats: None,
        })
    }

    /// Waits for the shard being finished in the background, if any, and records it.
    async fn await_closing(&mut self) -> Result<()> {
        let Some(mut closing) = self.closing.take() else {
            return Ok(());
        };
        let start = Instant::now();
        let closed = (&mut closing.task).await.map_err(|join| {
            StorageError::from_parquet(
                closing.path.as_ref(),
                ParquetError::General(format!("the task finishing the shard failed: {join}")),
            )
        })?;
        self.timings.close_wait_s += start.elapsed().as_secs_f64();
        self.record_closed(closed?).await
    }

    /// Adds a finished shard to this worker's partial manifest and publishes it.
    async fn record_closed(&mut self, closed: ClosedShard) -> Result<()> {
        add_encode_timings(&mut self.timings, &closed.encode);
        self.timings.shard_close_s += closed.close_s;
        self.timings.shards += 1;
        self.part.manifest.shards.push(closed.info);
        self.publish_part().await
    }

    /// Publishes this worker's partial manifest. Takes `&mut self` so that the writer's
    /// futures stay `Send` (the writer itself is not `Sync`).
    async fn publish_part(&mut self) -> Result<()> {
        let path = self.location.child(&PartManifest::name(self.part.worker));
        let json = serde_json::to_vec_pretty(&self.part).expect("a part manifest serializes");
        let store = self.location.store.clone();
        let start = Instant::now();
        store
            .put(&path, PutPayload::from(json))
            .await
            .map_err(|e| StorageError::from_store(path.as_ref(), e))?;
        self.timings.manifest_s += start.elapsed().as_secs_f64();
        tracing::debug!(worker = self.part.worker, timings = ?self.timings, "partial manifest published");
        Ok(())
    }
}

/// The result of [`commit`].
#[derive(Debug, Clone)]
pub struct CommitSummary {
    /// The manifest now published.
    pub manifest: Manifest,
    /// Shard objects that no writer had finished (leftovers of interrupted runs), now removed.
    pub removed_orphans: Vec<String>,
}

/// Merges every writer's partial manifest into the dataset's `manifest.json`.
///
/// Fails with [`StorageError::IncompleteWorkers`] unless every worker `0..workers` has finished.
/// Committing again after more writers ran (or re-ran) publishes the new union.
pub async fn commit(url: &str) -> Result<CommitSummary> {
    let location = Location::parse(url)?;
    let parts = read_parts(&location).await?;
    let Some(first) = parts.first() else {
        return Err(StorageError::InvalidArgument(format!(
            "nothing to commit at {url}: no writer has published a partial manifest under {PARTS_DIR}/"
        )));
    };
    let workers = first.workers;
    let schema = Arc::new(first.manifest.schema.clone());
    let reference = WriterOptions {
        workers,
        schema_version: first.manifest.schema_version,
        ..WriterOptions::default()
    };
    for part in &parts {
        check_compatible(&location, &schema, &reference, part)?;
    }
    let missing: Vec<u32> = (0..workers)
        .filter(|w| !parts.iter().any(|p| p.worker == *w && p.complete))
        .collect();
    if !missing.is_empty() {
        return Err(StorageError::IncompleteWorkers {
            url: url.to_string(),
            missing,
            workers,
        });
    }
    let mut manifest = first.manifest.clone();
    manifest.shards = parts
        .iter()
        .flat_map(|p| p.manifest.shards.iter().cloned())
        .collect();
    manifest.shards.sort_by(|a, b| a.name.cmp(&b.name));
    for part in &parts[1..] {
        for (k, v) in &part.manifest.metadata {
            manifest
                .metadata
                .entry(k.clone())
                .or_insert_with(|| v.clone());
        }
    }
    let path = location.child(MANIFEST_NAME);
    location
        .store
        .put(&path, PutPayload::from(manifest.to_json()))
        .await
        .map_err(|e| StorageError::from_store(path.as_ref(), e))?;

    let named: HashSet<&str> = manifest.shards.iter().map(|s| s.name.as_str()).collect();
    let shard_dir = location.child(SHARDS_DIR);
    let mut removed_orphans = Vec::new();
    let mut listing = location.store.list(Some(&shard_dir));
    while let Some(meta) = listing.next().await {
        let meta = meta.map_err(|e| StorageError::from_store(shard_dir.as_ref(), e))?;
        let relative = relative_name(&location.prefix, &meta.location);
        if !named.contains(relative.as_str()) {
            removed_orphans.push(relative);
        }
    }
    for orphan in &removed_orphans {
        let path = location.child(orphan);
        match location.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(StorageError::from_store(path.as_ref(), e)),
        }
    }
    Ok(CommitSummary {
        manifest,
        removed_orphans,
    })
}

/// Reads every partial manifest of the dataset, sorted by worker.
async fn read_parts(location: &Location) -> Result<Vec<PartManifest>> {
    let dir = location.child(PARTS_DIR);
    let metas: Vec<_> = location
        .store
        .list(Some(&dir))
        .try_collect()
        .await
        .map_err(|e| StorageError::from_store(dir.as_ref(), e))?;
    let mut parts = Vec::with_capacity(metas.len());
    for meta in metas {
        if !meta.location.as_ref().ends_with(".json") {
            continue;
        }
        let bytes = get_bytes(&location.store, &meta.location).await?;
        parts.push(PartManifest::from_json(meta.location.as_ref(), &bytes)?);
    }
    parts.sort_by_key(|p| p.worker);
    Ok(parts)
}

/// Reads a whole object.
pub(crate) async fn get_bytes(store: &Arc<dyn ObjectStore>, path: &Path) -> Result<Bytes> {
    let result = store
        .get(path)
        .await
        .map_err(|e| StorageError::from_store(path.as_ref(), e))?;
    result
        .bytes()
        .await
        .map_err(|e| StorageError::from_store(path.as_ref(), e))
}

/// `full` relative to `prefix`, as a `/`-joined name.
fn relative_name(prefix: &Path, full: &Path) -> String {
    match full.prefix_match(prefix) {
        Some(parts) => parts
            .map(|p| p.as_ref().to_string())
            .collect::<Vec<_>>()
            .join("/"),
        None => full.as_ref().to_string(),
    }
}

/// A shard being finished by a background task. Dropping it (with the writer, when a run
/// is interrupted) stops the task: like a shard left open, the shard stays unfinished and
/// in no manifest.
struct ClosingShard {
    path: Path,
    task: JoinHandle<Result<ClosedShard>>,
}

impl Drop for ClosingShard {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A finished shard: its manifest entry and what finishing it took.
struct ClosedShard {
    info: ShardInfo,
    encode: EncodeTimings,
    close_s: f64,
}

impl OpenShard {
    /// Encodes the last row groups, uploads the rest of the file and completes the
    /// multipart upload; returns the shard's manifest entry.
    async fn close(mut self) -> Result<ClosedShard> {
        let start = Instant::now();
        let metadata = self
            .encoder
            .finish()
            .await
            .map_err(|e| StorageError::from_parquet(self.path.as_ref(), e))?;
        let rest = self.encoder.take_output();
        self.upload.write(rest, &self.path).await?;
        self.upload.complete(&self.path).await?;
        let row_groups = metadata.row_groups();
        let info = ShardInfo {
            name: self.name,
            rows: self.rows,
            bytes: self.upload.bytes,
            checksum: format_checksum(self.upload.crc),
            row_group_rows: row_groups.iter().map(|rg| rg.num_rows() as u64).collect(),
            row_group_bytes: row_groups
                .iter()
                .map(|rg| rg.compressed_size() as u64)
                .collect(),
            source_keys: self.source_keys,
            length_stats: self.length_stats,
        };
        Ok(ClosedShard {
            info,
            encode: self.encoder.timings(),
            close_s: start.elapsed().as_secs_f64(),
        })
    }
}

/// Adds an encoder's timings to a writer's.
fn add_encode_timings(timings: &mut WriteTimings, encode: &EncodeTimings) {
    timings.encoding_s += encode.encoding.as_secs_f64();
    timings.encoding_cpu_s += encode.encoding_cpu.as_secs_f64();
    timings.encode_wait_s += encode.waiting.as_secs_f64();
    timings.row_groups += encode.row_groups;
}

/// The Parquet leaf columns of the named top-level fields (a list column's values, a
/// struct's members), for turning their statistics off.
fn statistics_free_leaves(
    schema: &SchemaRef,
    names: &[String],
) -> Result<Vec<parquet::schema::types::ColumnPath>> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let descriptor = ArrowSchemaConverter::new()
        .convert(schema)
        .map_err(|e| StorageError::InvalidArgument(format!("schema has no Parquet form: {e}")))?;
    let mut leaves = Vec::new();
    for name in names {
        let before = leaves.len();
        leaves.extend(
            descriptor
                .columns()
                .iter()
                .filter(|c| c.path().parts().first() == Some(name))
                .map(|c| c.path().clone()),
        );
        if leaves.len() == before {
            return Err(StorageError::InvalidArgument(format!(
                "columns_without_statistics names {name:?}, which is not in the schema {:?}",
                field_names(schema)
            )));
        }
    }
    Ok(leaves)
}

fn validate_options(schema: &SchemaRef, options: &WriterOptions) -> Result<()> {
    if options.workers == 0 || options.worker >= options.workers {
        return Err(StorageError::InvalidArgument(format!(
            "worker {} of {}: need 0 <= worker < workers",
            options.worker, options.workers
        )));
    }
    if options.row_group_bytes == 0
        || options.shard_bytes == 0
        || options.upload_part_bytes == 0
        || options.encode_parallelism == 0
    {
        return Err(StorageError::InvalidArgument(
            "row_group_bytes, shard_bytes, upload_part_bytes and encode_parallelism must be positive"
                .into(),
        ));
    }
    for column in [&options.source_key_column, &options.length_column]
        .into_iter()
        .flatten()
    {
        if schema.field_with_name(column).is_err() {
            return Err(StorageError::InvalidArgument(format!(
                "column {column:?} named in the writer options is not in the schema {:?}",
                field_names(schema)
            )));
        }
    }
    Ok(())
}

/// Checks that an existing partial manifest belongs to the same dataset layout.
fn check_compatible(
    location: &Location,
    schema: &SchemaRef,
    options: &WriterOptions,
    part: &PartManifest,
) -> Result<()> {
    let mismatch = |reason: String| StorageError::SchemaMismatch {
        url: location.url.clone(),
        reason,
    };
    if part.workers != options.workers {
        return Err(mismatch(format!(
            "worker {} of an earlier run split the dataset over {} workers, this run over {}",
            part.worker, part.workers, options.workers
        )));
    }
    if part.manifest.schema.fields() != schema.fields() {
        return Err(mismatch(format!(
            "worker {} wrote fields {:?}, this writer has {:?}",
            part.worker,
            field_names(&Arc::new(part.manifest.schema.clone())),
            field_names(schema)
        )));
    }
    if part.manifest.schema_version != options.schema_version {
        return Err(mismatch(format!(
            "worker {} wrote schema version {}, this writer has {}",
            part.worker, part.manifest.schema_version, options.schema_version
        )));
    }
    Ok(())
}

fn field_names(schema: &SchemaRef) -> Vec<&str> {
    schema.fields().iter().map(|f| f.name().as_str()).collect()
}

/// A name unique to this run of a writer, so shards of different runs never collide.
fn run_nonce() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}{:x}", nanos & 0xffff_ffff_ffff, std::process::id())
}

/// Sends a shard's bytes to its multipart upload, computing the object's CRC32C and size.
struct ChecksumWriter {
    upload: BufWriter,
    crc: u32,
    bytes: u64,
}

impl ChecksumWriter {
    fn new(upload: BufWriter) -> Self {
        ChecksumWriter {
            upload,
            crc: 0,
            bytes: 0,
        }
    }

    /// Checksums `bytes` and hands them to the upload (which sends full parts as they fill).
    async fn write(&mut self, bytes: Bytes, path: &Path) -> Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.crc = crc32c::crc32c_append(self.crc, &bytes);
        self.bytes += bytes.len() as u64;
        self.upload
            .put(bytes)
            .await
            .map_err(|e| StorageError::from_store(path.as_ref(), e))
    }

    /// Sends the last part and completes the multipart upload.
    async fn complete(&mut self, path: &Path) -> Result<()> {
        self.upload
            .shutdown()
            .await
            .map_err(|e| upload_error(path, e))
    }
}

/// The storage error of a failed upload completion, which `BufWriter` reports as an I/O
/// error wrapping the object store's error.
fn upload_error(path: &Path, error: std::io::Error) -> StorageError {
    let kind = error.kind();
    let source = match error.into_inner() {
        Some(inner) => match inner.downcast::<object_store::Error>() {
            Ok(store) => return StorageError::from_store(path.as_ref(), *store),
            Err(other) => other,
        },
        None => Box::new(std::io::Error::from(kind)),
    };
    StorageError::from_store(
        path.as_ref(),
        object_store::Error::Generic {
            store: "multipart upload",
            source,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The writer's futures can run on a multi-threaded runtime (`tokio::spawn`).
    #[test]
    fn writer_futures_are_send() {
        fn assert_send<T: Send>(_: T) {}
        fn check(mut w: DatasetWriter, b: RecordBatch) {
            assert_send(async move {
                w.write_source("k", &b).await.unwrap();
                w.finish().await.unwrap();
            });
        }
        let _ = check;
    }

    use parquet::file::reader::{FileReader, SerializedFileReader};

    use crate::test_batches::schema;

    /// Source `i`: two rows of pseudo-random lengths, values and payloads.
    fn source(i: u64) -> RecordBatch {
        crate::test_batches::batch(i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1, 2)
    }

    /// Writes sources `0..n` to `url` as one writer; returns the manifest, each shard's
    /// bytes and the writer's timings.
    async fn write(
        url: &str,
        n: u64,
        options: WriterOptions,
    ) -> (Manifest, Vec<Bytes>, WriteTimings) {
        let mut writer = DatasetWriter::create(url, schema(), options).await.unwrap();
        for i in 0..n {
            writer
                .write_source(&format!("s{i}"), &source(i))
                .await
                .unwrap();
        }
        let (_, timings) = writer.finish_timed().await.unwrap();
        let manifest = commit(url).await.unwrap().manifest;
        let location = Location::parse(url).unwrap();
        let mut shards = Vec::new();
        for shard in &manifest.shards {
            shards.push(
                get_bytes(&location.store, &location.child(&shard.name))
                    .await
                    .unwrap(),
            );
        }
        (manifest, shards, timings)
    }

    fn small(encode_parallelism: usize) -> WriterOptions {
        WriterOptions {
            row_group_bytes: 8 << 10,
            shard_bytes: 40 << 10,
            encode_parallelism,
            ..WriterOptions::default()
        }
    }

    /// Shards finished in the background and row groups encoded in parallel give the same
    /// files whatever the parallelism, and the timings count what was written.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn output_does_not_depend_on_parallelism() {
        let nonce = run_nonce();
        let (serial, serial_bytes, serial_timings) =
            write(&format!("memory://w/{nonce}-1"), 60, small(1)).await;
        let (parallel, parallel_bytes, timings) =
            write(&format!("memory://w/{nonce}-4"), 60, small(4)).await;
        assert!(serial.shards.len() >= 3, "{} shards", serial.shards.len());
        assert_eq!(serial_bytes, parallel_bytes);
        for (a, b) in serial.shards.iter().zip(&parallel.shards) {
            assert_eq!(
                (a.rows, &a.source_keys, &a.checksum),
                (b.rows, &b.source_keys, &b.checksum)
            );
        }
        let row_groups: usize = parallel.shards.iter().map(|s| s.row_group_rows.len()).sum();
        assert_eq!(timings.row_groups, row_groups as u64);
        assert_eq!(timings.shards, parallel.shards.len() as u64);
        assert_eq!(serial_timings.shards, timings.shards);
        assert!(timings.encoding_s > 0.0 && timings.shard_close_s > 0.0);
        assert!(
            timings.encoding_cpu_s > 0.0
                && timings.encoding_cpu_s <= timings.encoding_s * 1.05 + 0.01
        );
    }

    /// Named columns are written without statistics; the others keep theirs; an unknown
    /// name is refused when the writer is created.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn statistics_can_be_turned_off_per_column() {
        let url = format!("memory://w/{}-stats", run_nonce());
        let options = WriterOptions {
            columns_without_statistics: vec!["values".into(), "payload".into()],
            ..small(2)
        };
        let (_, shards, _) = write(&url, 10, options).await;
        let (_, with_stats, _) = write(&format!("{url}-all"), 10, small(2)).await;
        assert!(shards[0].len() < with_stats[0].len());
        let reader = SerializedFileReader::new(shards[0].clone()).unwrap();
        let group = reader.metadata().row_group(0);
        let stats: Vec<(String, bool)> = group
            .columns()
            .iter()
            .map(|c| (c.column_path().string(), c.statistics().is_some()))
            .collect();
        assert_eq!(
            stats,
            [
                ("length".to_string(), true),
                ("values.list.item".to_string(), false),
                ("payload".to_string(), false)
            ]
        );

        let options = WriterOptions {
            columns_without_statistics: vec!["nope".into()],
            ..WriterOptions::default()
        };
        let refused = DatasetWriter::create(&format!("{url}-bad"), schema(), options).await;
        assert!(
            matches!(&refused, Err(StorageError::InvalidArgument(m)) if m.contains("\"nope\"")),
            "{:?}",
            refused.err()
        );
    }
}
