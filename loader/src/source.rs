//! Sources: anything that knows its row groups and can fetch one as an Arrow
//! [`RecordBatch`]. The loader reads only through this trait, so it works the
//! same over a storage-crate dataset, an in-memory table or a test double.

use std::sync::Arc;

use arrow::array::RecordBatch;
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};

use crate::error::SourceError;

/// What the loader knows about one row group before fetching it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowGroupInfo {
    /// The object (file, key) holding the row group; used in error messages and cache keys.
    pub object: String,
    /// Rows in the row group.
    pub rows: u64,
    /// Bytes read to fetch it (compressed, on the store); the prefetch budget counts these.
    pub bytes: u64,
}

/// A table split into row groups that can be fetched independently.
///
/// Invariant: `fetch(i)` returns a batch of exactly `row_groups()[i].rows` rows,
/// the same every time it is called.
pub trait RowGroupSource: Send + Sync + 'static {
    /// The row groups, in row order.
    fn row_groups(&self) -> &[RowGroupInfo];

    /// Reads row group `index` (byte ranges of exactly that row group where the
    /// store allows). Errors name the object and say whether a retry may help.
    fn fetch(&self, index: usize) -> BoxFuture<'_, Result<RecordBatch, SourceError>>;

    /// A string that identifies the source's content (used to key the disk cache).
    fn identity(&self) -> String;
}

impl<S: RowGroupSource + ?Sized> RowGroupSource for Arc<S> {
    fn row_groups(&self) -> &[RowGroupInfo] {
        (**self).row_groups()
    }
    fn fetch(&self, index: usize) -> BoxFuture<'_, Result<RecordBatch, SourceError>> {
        (**self).fetch(index)
    }
    fn identity(&self) -> String {
        (**self).identity()
    }
}

/// Rows per row group, as the plan wants them.
pub fn row_group_rows(source: &dyn RowGroupSource) -> Vec<u64> {
    source.row_groups().iter().map(|g| g.rows).collect()
}

/// A source held in memory: each batch is one row group. For tests, examples and
/// small tables.
#[derive(Debug, Clone)]
pub struct MemorySource {
    name: String,
    batches: Vec<RecordBatch>,
    infos: Vec<RowGroupInfo>,
}

impl MemorySource {
    /// Wraps the batches; `name` appears in errors and cache keys.
    pub fn new(name: impl Into<String>, batches: Vec<RecordBatch>) -> Self {
        let name = name.into();
        let infos = batches
            .iter()
            .enumerate()
            .map(|(i, b)| RowGroupInfo {
                object: format!("{name}#{i}"),
                rows: b.num_rows() as u64,
                bytes: b.get_array_memory_size() as u64,
            })
            .collect();
        Self {
            name,
            batches,
            infos,
        }
    }
}

impl RowGroupSource for MemorySource {
    fn row_groups(&self) -> &[RowGroupInfo] {
        &self.infos
    }

    fn fetch(&self, index: usize) -> BoxFuture<'_, Result<RecordBatch, SourceError>> {
        let result = self
            .batches
            .get(index)
            .cloned()
            .ok_or_else(|| SourceError::permanent(&self.name, format!("no row group {index}")));
        Box::pin(async move { result })
    }

    fn identity(&self) -> String {
        format!("memory:{}", self.name)
    }
}

/// Computes one weight per row (in global row order) by reading every row group
/// of `source` (typically a source projected to the few columns the weights need)
/// and calling `weight(batch, row_index)`, with up to `concurrency` reads at once.
pub async fn compute_weights<S, F>(
    source: &S,
    concurrency: usize,
    weight: F,
) -> Result<Vec<f64>, SourceError>
where
    S: RowGroupSource + ?Sized,
    F: Fn(&RecordBatch, usize) -> f64,
{
    let batches: Vec<RecordBatch> = futures::stream::iter(0..source.row_groups().len())
        .map(|i| source.fetch(i))
        .buffered(concurrency.max(1))
        .try_collect()
        .await?;
    Ok(batches
        .iter()
        .flat_map(|b| (0..b.num_rows()).map(|i| weight(b, i)))
        .collect())
}
