//! The dataset manifest: which shards make up a dataset, with their checksums and stats.
//!
//! `manifest.json` is written last and atomically (one PUT), so a reader either sees a
//! complete dataset or none. Writers publish their finished shards in partial manifests
//! under `_parts/`, which [`crate::commit`] merges.

use std::collections::BTreeMap;

use arrow::datatypes::Schema;
use serde::{Deserialize, Serialize};

use crate::error::{Result, StorageError};

/// Version of the dataset layout this build writes and reads (not the data schema version).
pub const FORMAT_VERSION: u32 = 1;

/// Name of the manifest object inside a dataset prefix.
pub const MANIFEST_NAME: &str = "manifest.json";

/// Folder of the shard objects inside a dataset prefix.
pub const SHARDS_DIR: &str = "shards";

/// Folder of the writers' partial manifests inside a dataset prefix.
pub const PARTS_DIR: &str = "_parts";

/// Parquet key-value metadata key holding the data schema version in every shard.
pub const SCHEMA_VERSION_KEY: &str = "scalefold.schema_version";

/// The manifest of a dataset (or, inside a [`PartManifest`], of one writer's shards).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Layout version ([`FORMAT_VERSION`] when written by this build).
    pub format_version: u32,
    /// Version of the data schema, chosen by the producer (e.g. ingest's feature schema).
    pub schema_version: u32,
    /// The Arrow schema every shard has.
    pub schema: Schema,
    /// Free key-value metadata (also written into every shard's Parquet metadata).
    pub metadata: BTreeMap<String, String>,
    /// Column holding each row's source key (the input it came from), if declared.
    pub source_key_column: Option<String>,
    /// Column whose per-shard statistics are kept (e.g. sequence length), if declared.
    pub length_column: Option<String>,
    /// The shards, sorted by name.
    pub shards: Vec<ShardInfo>,
}

/// One Parquet shard of a dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// Object name relative to the dataset prefix, e.g. `shards/w00000-000003.parquet`.
    pub name: String,
    /// Rows in the shard.
    pub rows: u64,
    /// Size of the object in bytes.
    pub bytes: u64,
    /// Checksum of the whole object, `crc32c:XXXXXXXX`.
    pub checksum: String,
    /// Rows of each row group, in file order.
    pub row_group_rows: Vec<u64>,
    /// Compressed bytes of each row group, in file order (what fetching it costs).
    pub row_group_bytes: Vec<u64>,
    /// The distinct source keys whose rows this shard holds, in write order.
    /// Invariant: a source's rows are never split across shards.
    pub source_keys: Vec<String>,
    /// Statistics of the length column over this shard's rows.
    pub length_stats: Option<LengthStats>,
}

/// Summary statistics of an integer length column.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LengthStats {
    /// Number of rows counted.
    pub count: u64,
    /// Smallest value.
    pub min: i64,
    /// Largest value.
    pub max: i64,
    /// Sum of all values (the mean is `sum / count`).
    pub sum: i64,
}

impl LengthStats {
    /// Statistics of one value.
    pub fn of(value: i64) -> Self {
        LengthStats {
            count: 1,
            min: value,
            max: value,
            sum: value,
        }
    }

    /// Combines two statistics.
    pub fn merge(self, other: LengthStats) -> Self {
        LengthStats {
            count: self.count + other.count,
            min: self.min.min(other.min),
            max: self.max.max(other.max),
            sum: self.sum + other.sum,
        }
    }

    /// Mean value (0 when empty).
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum as f64 / self.count as f64
        }
    }
}

impl Manifest {
    /// Total rows over all shards.
    pub fn total_rows(&self) -> u64 {
        self.shards.iter().map(|s| s.rows).sum()
    }

    /// Total bytes over all shards.
    pub fn total_bytes(&self) -> u64 {
        self.shards.iter().map(|s| s.bytes).sum()
    }

    /// Length statistics over the whole dataset.
    pub fn length_stats(&self) -> Option<LengthStats> {
        self.shards
            .iter()
            .filter_map(|s| s.length_stats)
            .reduce(LengthStats::merge)
    }

    /// Parses a manifest, checking the layout version. `path` names the object in errors.
    pub fn from_json(path: &str, bytes: &[u8]) -> Result<Manifest> {
        #[derive(Deserialize)]
        struct VersionOnly {
            format_version: u32,
        }
        let invalid = |e: serde_json::Error| StorageError::InvalidManifest {
            path: path.to_string(),
            reason: e.to_string(),
        };
        let version: VersionOnly = serde_json::from_slice(bytes).map_err(invalid)?;
        if version.format_version != FORMAT_VERSION {
            return Err(StorageError::UnknownFormatVersion {
                path: path.to_string(),
                found: version.format_version,
                supported: FORMAT_VERSION,
            });
        }
        serde_json::from_slice(bytes).map_err(invalid)
    }

    /// Serializes the manifest as pretty JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a manifest always serializes")
    }
}

/// A writer's partial manifest: its finished shards, and whether it has finished.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartManifest {
    /// This writer's index (0-based).
    pub worker: u32,
    /// Number of writers the dataset is split over.
    pub workers: u32,
    /// True once the writer has finished all its inputs.
    pub complete: bool,
    /// The shards this writer has finished so far, with the dataset-wide fields.
    pub manifest: Manifest,
}

impl PartManifest {
    /// Object name of worker `worker`'s partial manifest, relative to the dataset prefix.
    pub fn name(worker: u32) -> String {
        format!("{PARTS_DIR}/worker-{worker:05}.json")
    }

    /// Parses a partial manifest. `path` names the object in errors.
    pub fn from_json(path: &str, bytes: &[u8]) -> Result<PartManifest> {
        let part: PartManifest =
            serde_json::from_slice(bytes).map_err(|e| StorageError::InvalidManifest {
                path: path.to_string(),
                reason: e.to_string(),
            })?;
        if part.manifest.format_version != FORMAT_VERSION {
            return Err(StorageError::UnknownFormatVersion {
                path: path.to_string(),
                found: part.manifest.format_version,
                supported: FORMAT_VERSION,
            });
        }
        Ok(part)
    }
}

/// Checksum of a byte sequence as written in manifests.
pub fn format_checksum(crc: u32) -> String {
    format!("crc32c:{crc:08x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field};

    fn sample() -> Manifest {
        Manifest {
            format_version: FORMAT_VERSION,
            schema_version: 3,
            schema: Schema::new(vec![Field::new("x", DataType::Int32, false)]),
            metadata: BTreeMap::from([("k".into(), "v".into())]),
            source_key_column: Some("src".into()),
            length_column: None,
            shards: vec![ShardInfo {
                name: "shards/a.parquet".into(),
                rows: 4,
                bytes: 100,
                checksum: format_checksum(7),
                row_group_rows: vec![4],
                row_group_bytes: vec![60],
                source_keys: vec!["k1".into()],
                length_stats: Some(LengthStats::of(5).merge(LengthStats::of(9))),
            }],
        }
    }

    #[test]
    fn manifest_round_trips_through_json() {
        let m = sample();
        let back = Manifest::from_json("m", &m.to_json()).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.length_stats().unwrap().mean(), 7.0);
    }

    #[test]
    fn rejects_other_format_versions_and_garbage() {
        let mut m = sample();
        m.format_version = 99;
        let err = Manifest::from_json("x/manifest.json", &m.to_json()).unwrap_err();
        assert!(matches!(
            err,
            StorageError::UnknownFormatVersion { found: 99, .. }
        ));
        let err = Manifest::from_json("x/manifest.json", b"{not json").unwrap_err();
        assert!(err.to_string().contains("x/manifest.json"));
    }
}
