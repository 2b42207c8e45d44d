//! Fetching row groups: retries with exponential backoff, and the in-memory
//! prefetch store that bounds the bytes held ahead of the transforms.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arrow::array::RecordBatch;
use futures::future::{BoxFuture, Shared};

use crate::error::LoaderError;
use crate::rng;
use crate::source::RowGroupSource;

/// How often and how patiently a failed row-group read is retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts, the first included (at least 1).
    pub max_attempts: u32,
    /// Wait before the second attempt; doubles each time.
    pub initial_backoff: Duration,
    /// Upper bound of one wait.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// 10 attempts, 50 ms doubling to at most 4 s: rides out about 15 s of outage.
    fn default() -> Self {
        Self {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(4),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt `attempt` (1-based), with ±25 % jitter derived
    /// from `salt` so concurrent readers do not retry in lockstep.
    pub fn backoff(&self, attempt: u32, salt: u64) -> Duration {
        let exp = self
            .initial_backoff
            .saturating_mul(1u32 << (attempt - 1).min(20));
        let base = exp.min(self.max_backoff);
        let jitter = (rng::mix(&[salt, attempt as u64]) % 501) as f64 / 1000.0 + 0.75;
        base.mul_f64(jitter)
    }
}

/// Reads row group `index`, retrying retryable errors per `policy`; counts retries.
pub async fn fetch_with_retry(
    source: &dyn RowGroupSource,
    index: usize,
    policy: &RetryPolicy,
    retries: &AtomicU64,
) -> Result<RecordBatch, LoaderError> {
    let mut attempt = 1;
    loop {
        match source.fetch(index).await {
            Ok(batch) => return Ok(batch),
            Err(e) if e.retryable && attempt < policy.max_attempts.max(1) => {
                tracing::warn!(row_group = index, attempt, error = %e, "row group read failed; retrying");
                retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(policy.backoff(attempt, index as u64)).await;
                attempt += 1;
            }
            Err(source) => {
                return Err(LoaderError::Fetch {
                    row_group: index,
                    attempts: attempt,
                    source,
                });
            }
        }
    }
}

/// A fetch in progress or done, shareable by every batch that needs the row group.
pub(crate) type SharedFetch = Shared<BoxFuture<'static, Result<Arc<RecordBatch>, LoaderError>>>;

struct Entry {
    fetch: SharedFetch,
    /// Planned samples that still need this row group.
    active: usize,
    bytes: u64,
    /// When `active` last fell to 0 (for least-recently-used eviction).
    idle_since: u64,
}

#[derive(Default)]
struct State {
    entries: HashMap<usize, Entry>,
    used: u64,
    clock: u64,
}

/// Row groups fetched (or being fetched) ahead of the transforms, within a byte
/// budget. A row group stays while planned samples need it. Once idle it is kept
/// for reuse until its bytes are needed (least recently idle goes first) only when
/// the store was built with `retain_idle`; otherwise it is dropped at once, which
/// frees its memory while it is still hot in the allocator (see [`Self::new`]).
///
/// Invariant: `used` is the sum of `bytes` over entries, and stays ≤ budget
/// except when a single batch alone needs more than the budget (then it is
/// admitted anyway, so the loader cannot deadlock).
pub(crate) struct PrefetchStore {
    state: Mutex<State>,
    released: tokio::sync::Notify,
    budget: u64,
    retain_idle: bool,
}

impl PrefetchStore {
    /// A store that keeps idle row groups for reuse (least recently idle evicted first).
    #[cfg(test)]
    pub(crate) fn new(budget: u64) -> Self {
        Self::with_retention(budget, true)
    }

    /// A store that keeps idle row groups only if `retain_idle`. Keeping them pays
    /// when the source's row groups all fit in the budget (later epochs then read
    /// from memory). When they do not, an epoch reads them in a cycle, and keeping
    /// the least recently idle ones never hits: it only holds up to `budget` bytes
    /// of dead batches, so every new row group lands on freshly faulted pages
    /// (measured: `loader/BENCHMARKS.md`, section 2).
    pub(crate) fn with_retention(budget: u64, retain_idle: bool) -> Self {
        Self {
            state: Mutex::new(State::default()),
            released: tokio::sync::Notify::new(),
            budget,
            retain_idle,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave it inconsistent (no user code runs under it).
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Bytes currently held or being fetched.
    pub(crate) fn used_bytes(&self) -> u64 {
        self.lock().used
    }

    /// Admits one batch: for each `(row group, bytes, uses)` returns the shared
    /// fetch, starting it with `start` if the row group is not held, waiting for
    /// budget when needed.
    pub(crate) async fn admit(
        &self,
        groups: &[(usize, u64, usize)],
        start: impl Fn(usize) -> SharedFetch,
    ) -> Vec<SharedFetch> {
        let mut own_bytes = 0u64;
        let mut fetches = Vec::with_capacity(groups.len());
        for &(group, bytes, uses) in groups {
            loop {
                let released = {
                    let mut state = self.lock();
                    if let Some(entry) = state.entries.get_mut(&group) {
                        // Held for earlier batches or idle: either way this batch now
                        // keeps it active until its own samples are done.
                        own_bytes += entry.bytes;
                        entry.active += uses;
                        fetches.push(entry.fetch.clone());
                        break;
                    }
                    // Entries this batch touched stay active until it is done, so
                    // `used == own_bytes` means nothing else will ever be released:
                    // admit over budget. (Counting only entries that were idle when
                    // touched deadlocked a batch that shares a row group with earlier
                    // batches and needs one more: loader/BENCHMARKS.md, session 5.)
                    if state.used + bytes <= self.budget || state.used == own_bytes {
                        let fetch = start(group);
                        fetches.push(fetch.clone());
                        state.entries.insert(
                            group,
                            Entry {
                                fetch,
                                active: uses,
                                bytes,
                                idle_since: 0,
                            },
                        );
                        state.used += bytes;
                        own_bytes += bytes;
                        break;
                    }
                    let victim = state
                        .entries
                        .iter()
                        .filter(|(_, e)| e.active == 0)
                        .min_by_key(|(_, e)| e.idle_since)
                        .map(|(g, _)| *g);
                    if let Some(victim) = victim {
                        let entry = state.entries.remove(&victim).expect("victim exists");
                        state.used -= entry.bytes;
                        continue;
                    }
                    self.released.notified()
                };
                released.await;
            }
        }
        fetches
    }

    /// One planned sample of `group` no longer needs it.
    pub(crate) fn release(&self, group: usize) {
        let mut state = self.lock();
        state.clock += 1;
        let clock = state.clock;
        if let Some(entry) = state.entries.get_mut(&group) {
            entry.active = entry.active.saturating_sub(1);
            if entry.active == 0 {
                entry.idle_since = clock;
                let dropped = if self.retain_idle {
                    None
                } else {
                    let entry = state.entries.remove(&group).expect("just updated");
                    state.used -= entry.bytes;
                    Some(entry)
                };
                drop(state);
                // The batch itself is freed here, outside the lock.
                drop(dropped);
                self.released.notify_one();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::SourceError;
    use crate::source::RowGroupInfo;
    use futures::FutureExt;
    use std::sync::atomic::AtomicU32;

    struct Flaky {
        infos: Vec<RowGroupInfo>,
        failures_left: AtomicU32,
        permanent: bool,
    }

    impl RowGroupSource for Flaky {
        fn row_groups(&self) -> &[RowGroupInfo] {
            &self.infos
        }
        fn fetch(&self, _index: usize) -> BoxFuture<'_, Result<RecordBatch, SourceError>> {
            let fail = self
                .failures_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            let permanent = self.permanent;
            Box::pin(async move {
                match (fail, permanent) {
                    (false, _) => Ok(RecordBatch::new_empty(Arc::new(
                        arrow::datatypes::Schema::empty(),
                    ))),
                    (true, true) => Err(SourceError::permanent("obj/a.parquet", "not found")),
                    (true, false) => Err(SourceError::transient(
                        "obj/a.parquet",
                        "connection refused",
                    )),
                }
            })
        }
        fn identity(&self) -> String {
            "flaky".into()
        }
    }

    fn flaky(failures: u32, permanent: bool) -> Flaky {
        Flaky {
            infos: vec![RowGroupInfo {
                object: "obj/a.parquet".into(),
                rows: 0,
                bytes: 1,
            }],
            failures_left: AtomicU32::new(failures),
            permanent,
        }
    }

    fn quick(attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts: attempts,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(4),
        }
    }

    #[tokio::test]
    async fn retries_transient_errors_then_succeeds() {
        let retries = AtomicU64::new(0);
        fetch_with_retry(&flaky(3, false), 0, &quick(4), &retries)
            .await
            .unwrap();
        assert_eq!(retries.load(Ordering::Relaxed), 3);
    }

    #[tokio::test]
    async fn gives_up_naming_the_object() {
        let retries = AtomicU64::new(0);
        let err = fetch_with_retry(&flaky(5, false), 0, &quick(3), &retries)
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("obj/a.parquet") && text.contains("3 attempt"),
            "{text}"
        );
        let err = fetch_with_retry(&flaky(1, true), 0, &quick(3), &retries)
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("1 attempt"),
            "permanent errors are not retried: {err}"
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        };
        assert!(p.backoff(1, 0) <= Duration::from_millis(125));
        assert!(p.backoff(3, 0) >= Duration::from_millis(300));
        assert!(p.backoff(30, 0) <= Duration::from_millis(1250));
    }

    fn ready(n: usize) -> SharedFetch {
        let schema = Arc::new(arrow::datatypes::Schema::empty());
        let _ = n;
        futures::future::ready(Ok(Arc::new(RecordBatch::new_empty(schema))))
            .boxed()
            .shared()
    }

    #[tokio::test]
    async fn budget_evicts_idle_and_waits_for_active() {
        let store = Arc::new(PrefetchStore::new(100));
        store.admit(&[(0, 60, 1)], ready).await;
        store.release(0);
        // Group 0 is idle: admitting 1 evicts it.
        store.admit(&[(1, 60, 2)], ready).await;
        assert_eq!(store.used_bytes(), 60);
        // Group 1 is active: admitting 2 must wait until it is released.
        let waiter = {
            let store = store.clone();
            tokio::spawn(async move { store.admit(&[(2, 60, 1)], ready).await.len() })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        store.release(1);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "one use of group 1 remains");
        store.release(1);
        assert_eq!(waiter.await.unwrap(), 1);
        assert_eq!(store.used_bytes(), 60);
    }

    #[tokio::test]
    async fn without_retention_idle_groups_leave_at_once() {
        let reads = std::sync::atomic::AtomicUsize::new(0);
        let counted = |n| {
            reads.fetch_add(1, Ordering::SeqCst);
            ready(n)
        };
        let store = PrefetchStore::with_retention(100, false);
        let fetches = store.admit(&[(0, 60, 2)], counted).await;
        let data = fetches[0].clone().await.unwrap();
        drop(fetches);
        store.release(0);
        assert_eq!(store.used_bytes(), 60, "one use remains");
        assert_eq!(
            Arc::strong_count(&data),
            2,
            "the store still holds the batch"
        );
        store.release(0);
        assert_eq!(store.used_bytes(), 0);
        assert_eq!(
            Arc::strong_count(&data),
            1,
            "the store holds the batch no more"
        );
        // Admitting the group again starts a new read; with retention it would not.
        store.admit(&[(0, 60, 1)], counted).await;
        assert_eq!(reads.load(Ordering::SeqCst), 2);
        let kept = PrefetchStore::new(100);
        kept.admit(&[(0, 60, 1)], counted).await;
        kept.release(0);
        kept.admit(&[(0, 60, 1)], counted).await;
        assert_eq!(reads.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_batch_sharing_a_held_group_and_needing_another_is_admitted() {
        // Budget for one group: batch A holds group 0; batch B needs group 0 too and
        // group 1. Group 0 can never be freed before B is done, so B must not wait.
        let store = PrefetchStore::with_retention(100, false);
        store.admit(&[(0, 60, 1)], ready).await;
        let b = tokio::time::timeout(
            Duration::from_secs(5),
            store.admit(&[(0, 60, 1), (1, 60, 1)], ready),
        )
        .await
        .expect("batch B deadlocked");
        assert_eq!(b.len(), 2);
        assert_eq!(store.used_bytes(), 120);
        // A batch touching only unrelated held groups still waits for budget.
        let waiter = {
            let store = Arc::new(store);
            let waiting = store.clone();
            let task = tokio::spawn(async move { waiting.admit(&[(2, 60, 1)], ready).await.len() });
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert!(!task.is_finished());
            store.release(0); // A's use
            store.release(0); // B's use
            store.release(1);
            task
        };
        assert_eq!(waiter.await.unwrap(), 1);
    }

    #[tokio::test]
    async fn a_batch_larger_than_the_budget_is_admitted_alone() {
        let store = PrefetchStore::new(100);
        let fetches = store
            .admit(&[(0, 80, 1), (1, 80, 1), (2, 500, 1)], ready)
            .await;
        assert_eq!(fetches.len(), 3);
        assert_eq!(store.used_bytes(), 660);
    }
}
