//! Where a dataset lives: a URL or path resolved to an object store and a prefix.
//!
//! Supported forms: a local path (relative or absolute), `file://`, `memory://NAME/prefix`
//! (an in-process store shared by every open of the same NAME), `s3://bucket/prefix`,
//! `gs://bucket/prefix` and `az://container/prefix`. Cloud stores take their credentials,
//! endpoint, region and `allow_http` from the usual environment variables
//! (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
//! `AWS_ALLOW_HTTP`, `GOOGLE_SERVICE_ACCOUNT`, `AZURE_STORAGE_ACCOUNT_NAME`, ...), and retry
//! transient failures with exponential backoff.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{BackoffConfig, ObjectStore, RetryConfig};

use crate::error::{Result, StorageError};

/// A resolved dataset location: the store, the prefix inside it, and the URL as given.
#[derive(Clone, Debug)]
pub struct Location {
    /// The URL or path this location was resolved from (for messages).
    pub url: String,
    /// The object store holding the dataset.
    pub store: Arc<dyn ObjectStore>,
    /// The dataset's prefix inside the store; objects are `prefix/manifest.json`, `prefix/shards/...`.
    pub prefix: Path,
}

impl Location {
    /// Resolves a dataset URL or local path.
    pub fn parse(url: &str) -> Result<Location> {
        let invalid = |reason: &str| StorageError::InvalidUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let Some((scheme, rest)) = url.split_once("://") else {
            return local(url, url);
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = Path::parse(path.trim_end_matches('/'))
            .map_err(|e| invalid(&format!("bad object path: {e}")))?;
        let config_err = |source| StorageError::StoreConfig {
            url: url.to_string(),
            source,
        };
        let store: Arc<dyn ObjectStore> = match scheme {
            "file" => return local(url, &format!("/{path}")),
            "memory" => memory_store(authority),
            "s3" | "s3a" => {
                non_empty(authority).ok_or_else(|| invalid("missing bucket name"))?;
                Arc::new(
                    AmazonS3Builder::from_env()
                        .with_bucket_name(authority)
                        .with_retry(retry_config())
                        .build()
                        .map_err(config_err)?,
                )
            }
            "gs" => {
                non_empty(authority).ok_or_else(|| invalid("missing bucket name"))?;
                Arc::new(
                    GoogleCloudStorageBuilder::from_env()
                        .with_bucket_name(authority)
                        .with_retry(retry_config())
                        .build()
                        .map_err(config_err)?,
                )
            }
            "az" | "azure" | "abfs" => {
                non_empty(authority).ok_or_else(|| invalid("missing container name"))?;
                Arc::new(
                    MicrosoftAzureBuilder::from_env()
                        .with_container_name(authority)
                        .with_retry(retry_config())
                        .build()
                        .map_err(config_err)?,
                )
            }
            other => {
                return Err(invalid(&format!(
                    "unsupported scheme {other:?} (use a path, file://, memory://, s3://, gs:// or az://)"
                )));
            }
        };
        Ok(Location {
            url: url.to_string(),
            store,
            prefix,
        })
    }

    /// Path of an object inside the dataset, from parts relative to the prefix.
    pub fn child(&self, relative: &str) -> Path {
        relative
            .split('/')
            .filter(|p| !p.is_empty())
            .fold(self.prefix.clone(), |p, part| p.join(part))
    }
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// A local folder as a location; the folder need not exist yet (writers create it).
fn local(url: &str, path: &str) -> Result<Location> {
    let abs = std::path::absolute(path).map_err(|e| StorageError::InvalidUrl {
        url: url.to_string(),
        reason: format!("cannot make the path absolute: {e}"),
    })?;
    let prefix = Path::from_absolute_path(&abs).map_err(|e| StorageError::InvalidUrl {
        url: url.to_string(),
        reason: format!("not a valid local path: {e}"),
    })?;
    Ok(Location {
        url: url.to_string(),
        store: Arc::new(LocalFileSystem::new()),
        prefix,
    })
}

/// The in-process store named `name`, created on first use and shared afterwards.
fn memory_store(name: &str) -> Arc<dyn ObjectStore> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<InMemory>>>> = OnceLock::new();
    let mut stores = STORES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    stores
        .entry(name.to_string())
        .or_insert_with(|| Arc::new(InMemory::new()))
        .clone()
}

/// Retry policy for cloud stores: exponential backoff from 100 ms up to 15 s, at most
/// `SCALEFOLD_MAX_RETRIES` (default 10) attempts within `SCALEFOLD_RETRY_TIMEOUT_S` (default 180 s).
fn retry_config() -> RetryConfig {
    let env_u64 = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(15),
            base: 2.0,
        },
        max_retries: env_u64("SCALEFOLD_MAX_RETRIES", 10) as usize,
        retry_timeout: Duration::from_secs(env_u64("SCALEFOLD_RETRY_TIMEOUT_S", 180)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_supported_forms() {
        let l = Location::parse("memory://t1/a/b/").unwrap();
        assert_eq!(l.prefix.as_ref(), "a/b");
        assert_eq!(l.child("shards/x.parquet").as_ref(), "a/b/shards/x.parquet");
        let l = Location::parse("/tmp/some/ds").unwrap();
        assert_eq!(l.prefix.as_ref(), "tmp/some/ds");
        let l = Location::parse("file:///tmp/other").unwrap();
        assert_eq!(l.prefix.as_ref(), "tmp/other");
    }

    #[test]
    fn rejects_unknown_schemes_and_missing_buckets() {
        assert!(matches!(
            Location::parse("ftp://x/y"),
            Err(StorageError::InvalidUrl { .. })
        ));
        assert!(matches!(
            Location::parse("s3:///nobucket"),
            Err(StorageError::InvalidUrl { .. })
        ));
    }

    #[test]
    fn memory_stores_are_shared_by_name() {
        let a = Location::parse("memory://shared-name/x").unwrap();
        let b = Location::parse("memory://shared-name/y").unwrap();
        assert!(Arc::ptr_eq(&a.store, &b.store));
    }
}
