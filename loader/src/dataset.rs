//! [`DatasetSource`]: the storage crate's datasets as a loader source. Each row
//! group of each shard is one loader row group, read with byte-range requests
//! for just the projected columns (footers cached by the dataset), in the
//! source's [`BinaryLayout`].

use arrow::array::RecordBatch;
use futures::future::BoxFuture;
use scalefold_storage::{BinaryLayout, Dataset, StorageError};

use crate::error::{LoaderError, SourceError};
use crate::source::{RowGroupInfo, RowGroupSource};

/// A storage-crate dataset, optionally projected to some columns.
///
/// Binary columns arrive as the schema says ([`BinaryLayout::Offsets`]) unless
/// [`Self::with_binary_layout`] asks for [`BinaryLayout::Views`]: then each value stays
/// in the decompressed Parquet page it was stored in (one copy of every byte fewer per
/// read; `loader/BENCHMARKS.md`, session 5) and the transform sees `BinaryView` columns.
/// A transform that reads binary values with [`crate::RowRef::bytes`] works with both.
#[derive(Clone)]
pub struct DatasetSource {
    dataset: Dataset,
    projection: Option<Vec<String>>,
    binary_layout: BinaryLayout,
    infos: Vec<RowGroupInfo>,
    /// (shard, row group in shard) of each loader row group.
    addresses: Vec<(usize, usize)>,
}

impl DatasetSource {
    /// Wraps an opened dataset; `projection` names the columns the transform
    /// reads (`None`: all). Unknown column names are a configuration error.
    pub fn new(dataset: Dataset, projection: Option<Vec<String>>) -> Result<Self, LoaderError> {
        if let Some(columns) = &projection {
            let schema = dataset.schema();
            if let Some(missing) = columns.iter().find(|c| schema.index_of(c).is_err()) {
                return Err(LoaderError::Config(format!(
                    "dataset {} has no column {missing:?}",
                    dataset.url()
                )));
            }
        }
        let mut infos = Vec::new();
        let mut addresses = Vec::new();
        for (s, shard) in dataset.shards().iter().enumerate() {
            let object = dataset
                .shard_path(s)
                .map(|p| p.to_string())
                .unwrap_or_else(|_| shard.name.clone());
            for (g, &rows) in shard.row_group_rows.iter().enumerate() {
                let bytes = shard
                    .row_group_bytes
                    .get(g)
                    .copied()
                    .unwrap_or(shard.bytes / shard.row_group_rows.len().max(1) as u64);
                infos.push(RowGroupInfo {
                    object: object.clone(),
                    rows,
                    bytes,
                });
                addresses.push((s, g));
            }
        }
        Ok(Self {
            dataset,
            projection,
            binary_layout: BinaryLayout::Offsets,
            infos,
            addresses,
        })
    }

    /// Opens the dataset at `url` (a path, `file://`, `s3://`, `gs://`, `az://`, `memory://`).
    pub async fn open(url: &str, projection: Option<Vec<String>>) -> Result<Self, LoaderError> {
        let dataset = Dataset::open(url)
            .await
            .map_err(|e| LoaderError::Config(e.to_string()))?;
        Self::new(dataset, projection)
    }

    /// The wrapped dataset.
    pub fn dataset(&self) -> &Dataset {
        &self.dataset
    }

    /// The same dataset with another projection (e.g. the few columns sampling weights
    /// need), in the same binary layout.
    pub fn with_projection(&self, projection: Option<Vec<String>>) -> Result<Self, LoaderError> {
        Ok(Self::new(self.dataset.clone(), projection)?.with_binary_layout(self.binary_layout))
    }

    /// This source reading binary columns in `layout` (see the type's documentation).
    pub fn with_binary_layout(mut self, layout: BinaryLayout) -> Self {
        self.binary_layout = layout;
        self
    }

    /// The layout binary columns are read in.
    pub fn binary_layout(&self) -> BinaryLayout {
        self.binary_layout
    }
}

/// Network and server failures may pass; missing objects, corrupt files and bad requests will not.
fn is_retryable(error: &StorageError) -> bool {
    matches!(error, StorageError::ObjectStore { .. })
}

impl RowGroupSource for DatasetSource {
    fn row_groups(&self) -> &[RowGroupInfo] {
        &self.infos
    }

    fn fetch(&self, index: usize) -> BoxFuture<'_, Result<RecordBatch, SourceError>> {
        Box::pin(async move {
            let Some(&(shard, group)) = self.addresses.get(index) else {
                return Err(SourceError::permanent(
                    self.dataset.url(),
                    format!("no row group {index}"),
                ));
            };
            let object = &self.infos[index].object;
            match self
                .dataset
                .read_row_group_with(shard, group, self.projection.as_deref(), self.binary_layout)
                .await
            {
                Ok(batch) if batch.num_rows() as u64 == self.infos[index].rows => Ok(batch),
                Ok(batch) => Err(SourceError::permanent(
                    object,
                    format!(
                        "row group {group} has {} rows; the manifest says {}",
                        batch.num_rows(),
                        self.infos[index].rows
                    ),
                )),
                Err(e) => Err(SourceError {
                    object: object.clone(),
                    message: format!("row group {group}: {e}"),
                    retryable: is_retryable(&e),
                }),
            }
        })
    }

    fn identity(&self) -> String {
        let manifest = self.dataset.manifest();
        let checksums: Vec<&str> = manifest
            .shards
            .iter()
            .map(|s| s.checksum.as_str())
            .collect();
        // The layout is part of the content: a disk cache keyed by this must not hand a
        // `Binary` batch to a source that reads `BinaryView`.
        let layout = match self.binary_layout {
            BinaryLayout::Offsets => String::new(),
            BinaryLayout::Views => "|views".to_string(),
        };
        format!(
            "{}|{:?}|{}{layout}",
            self.dataset.url(),
            self.projection,
            checksums.join(",")
        )
    }
}
