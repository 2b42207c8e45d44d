//! The loader: plans batches, fetches their row groups, transforms their rows on
//! the pool and delivers whichever batch is ready first within the window.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures::FutureExt;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::error::LoaderError;
use crate::fetch::{PrefetchStore, RetryPolicy, SharedFetch, fetch_with_retry};
use crate::plan::{Plan, PlanEntry};
use crate::pool::{
    Done, Fault, FaultAction, FaultKind, FaultPolicy, Job, Message, PoolShared, RowRef,
    TransformError, WorkerContext,
};
use crate::source::RowGroupSource;

/// The order batches are delivered in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Whichever batch is complete first, lowest sequence number first, within the window.
    ReadyFirst,
    /// Exactly the recorded order (sequence numbers from [`Loader::delivery_log`]);
    /// after the log's end, ready-first.
    Replay(Arc<[u64]>),
}

/// Loader settings. `LoaderConfig::default()` is ready-first with W = 8.
#[derive(Debug, Clone)]
pub struct LoaderConfig {
    /// The window W ≥ 1: a batch is overtaken by at most W − 1 later ones. 1 is strict order.
    pub window: usize,
    /// Transform threads; 0 means one per available core.
    pub workers: usize,
    /// Batches planned but not yet delivered, at most; 0 means
    /// `window + 2·⌈workers / batch_size⌉`. Always raised to at least `window`.
    pub in_flight_batches: usize,
    /// Bytes of row groups held ahead of the transforms (on-store bytes). When the
    /// whole source fits, row groups stay in memory once read (later epochs reuse
    /// them); otherwise each is dropped as soon as no planned sample needs it.
    pub prefetch_bytes: u64,
    /// Row-group reads at once.
    pub fetch_concurrency: usize,
    /// Threads of the loader's IO runtime.
    pub io_threads: usize,
    /// Retries of failed reads.
    pub retry: RetryPolicy,
    /// What to do with rows whose transform fails.
    pub fault_policy: FaultPolicy,
    /// Report rows whose transform runs longer than this.
    pub slow_row: Option<Duration>,
    /// `next()` fails with [`LoaderError::Stalled`] after waiting this long.
    pub stall_timeout: Option<Duration>,
    /// The first epoch.
    pub start_epoch: u64,
    /// Epochs to deliver; `None` runs until dropped.
    pub epochs: Option<u64>,
    /// Ready-first or replay.
    pub delivery: Delivery,
    /// Continue from a saved state instead of the start of `start_epoch`.
    pub resume: Option<LoaderState>,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        Self {
            window: 8,
            workers: 0,
            in_flight_batches: 0,
            prefetch_bytes: 256 << 20,
            fetch_concurrency: 16,
            io_threads: 2,
            retry: RetryPolicy::default(),
            fault_policy: FaultPolicy::Skip,
            slow_row: None,
            stall_timeout: None,
            start_epoch: 0,
            epochs: Some(1),
            delivery: Delivery::ReadyFirst,
            resume: None,
        }
    }
}

/// A small serializable state from which a new loader continues exactly.
///
/// Sequence numbers count batches across epochs: `seq = epoch · batches_per_epoch + index`.
/// Size is O(W): everything before `cursor` was delivered, and `delivered_ahead`
/// holds the (< W) batches after it that were delivered out of order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoaderState {
    /// The plan's fingerprint; resuming with a different plan is refused.
    pub plan_fingerprint: u64,
    /// Batches per epoch of the plan.
    pub batches_per_epoch: u64,
    /// Epoch of the oldest undelivered batch.
    pub epoch: u64,
    /// Sequence number of the oldest undelivered batch.
    pub cursor: u64,
    /// Sequence numbers after `cursor` that were already delivered.
    pub delivered_ahead: Vec<u64>,
    /// Batches delivered since the run began (the position in a replay log).
    pub log_position: u64,
}

/// Counters and timings of a loader since it started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoaderMetrics {
    /// Batches delivered.
    pub batches: u64,
    /// Samples delivered.
    pub samples: u64,
    /// Faults (errors, panics, slow rows) reported.
    pub faults: u64,
    /// Row-group reads retried.
    pub fetch_retries: u64,
    /// Seconds `next()` spent waiting, in total.
    pub wait_seconds_total: f64,
    /// The longest single wait of `next()`, in seconds.
    pub wait_seconds_max: f64,
    /// Waits of `next()` by decade: < 10 µs, < 100 µs, < 1 ms, < 10 ms, < 100 ms, < 1 s, ≥ 1 s.
    pub wait_histogram: [u64; 7],
    /// `reorder_histogram[d]`: batches delivered after `d` later batches had overtaken them (d < W).
    pub reorder_histogram: Vec<u64>,
    /// Seconds since the loader started.
    pub elapsed_seconds: f64,
    /// Samples delivered per second since the start.
    pub samples_per_second: f64,
    /// On-store bytes of row groups fetched.
    pub bytes_fetched: u64,
    /// `bytes_fetched` per second since the start.
    pub bytes_per_second: f64,
    /// Samples queued or being transformed now.
    pub in_flight_samples: u64,
    /// Batches planned and not yet delivered now.
    pub in_flight_batches: u64,
    /// Bytes of row groups held in the prefetch store now.
    pub prefetched_bytes: u64,
}

/// A delivered batch.
#[derive(Debug)]
pub struct Batch<T> {
    /// The epoch it belongs to.
    pub epoch: u64,
    /// Its index within the rank's epoch.
    pub index: u64,
    /// Its sequence number (`epoch · batches_per_epoch + index`).
    pub seq: u64,
    /// The samples, in plan order; failed rows are missing (skip policy).
    pub samples: Vec<T>,
    /// The plan entry each sample came from (replacements show the replacement row and seed).
    pub entries: Vec<PlanEntry>,
    /// Faults of this batch's rows.
    pub faults: Vec<Fault>,
    /// How long `next()` waited for this batch.
    pub waited: Duration,
}

/// Counters updated by the background tasks.
#[derive(Default)]
struct Counters {
    bytes_fetched: AtomicU64,
    retries: AtomicU64,
}

struct Assembly<T> {
    slots: Vec<Option<(PlanEntry, T)>>,
    remaining: usize,
    faults: Vec<Fault>,
}

/// Everything the planner task needs.
struct Planner<T> {
    source: Arc<dyn RowGroupSource>,
    plan: Arc<Plan>,
    prefetch: Arc<PrefetchStore>,
    pool: Arc<PoolShared>,
    in_flight: Arc<Semaphore>,
    fetch_slots: Arc<Semaphore>,
    retry: RetryPolicy,
    counters: Arc<Counters>,
    results: Sender<Message<T>>,
    first: u64,
    end: u64,
    skip: BTreeSet<u64>,
}

impl<T: Send + 'static> Planner<T> {
    /// Starts reading a row group now (a spawned task), shareable by every batch needing it.
    fn start_fetch(&self, group: usize) -> SharedFetch {
        let source = self.source.clone();
        let slots = self.fetch_slots.clone();
        let retry = self.retry.clone();
        let counters = self.counters.clone();
        let bytes = source.row_groups()[group].bytes;
        let task = tokio::spawn(async move {
            let _slot = slots
                .acquire_owned()
                .await
                .map_err(|_| LoaderError::Shutdown("fetch slots closed".into()))?;
            let batch = fetch_with_retry(source.as_ref(), group, &retry, &counters.retries).await?;
            counters.bytes_fetched.fetch_add(bytes, Ordering::Relaxed);
            Ok(Arc::new(batch))
        });
        async move {
            match task.await {
                Ok(result) => result,
                Err(e) => Err(LoaderError::Shutdown(format!(
                    "row group {group} read task: {e}"
                ))),
            }
        }
        .boxed()
        .shared()
    }

    async fn run(self) {
        let batch_size = self.plan.config().batch_size;
        let per_epoch = self.plan.batches_per_epoch();
        let mut epoch_entries: Option<(u64, Arc<Vec<PlanEntry>>)> = None;
        // Row groups are fetched ahead as far as the byte budget allows; batches are
        // handed to the pool only as in-flight permits allow.
        let (admitted_tx, admitted_rx) = tokio::sync::mpsc::channel(ADMITTED_AHEAD);
        tokio::spawn(dispatch(
            admitted_rx,
            self.in_flight.clone(),
            self.pool.clone(),
            self.results.clone(),
            self.plan.clone(),
        ));
        let mut seq = self.first;
        while seq < self.end {
            if self.skip.contains(&seq) {
                seq += 1;
                continue;
            }
            let (epoch, index) = (seq / per_epoch, (seq % per_epoch) as usize);
            let entries = match &epoch_entries {
                Some((e, entries)) if *e == epoch => entries.clone(),
                _ => {
                    let plan = self.plan.clone();
                    let entries =
                        match tokio::task::spawn_blocking(move || plan.rank_epoch(epoch)).await {
                            Ok(entries) => Arc::new(entries),
                            Err(e) => {
                                let _ = self
                                    .results
                                    .send(Message::Failed(LoaderError::Shutdown(e.to_string())));
                                return;
                            }
                        };
                    epoch_entries = Some((epoch, entries.clone()));
                    entries
                }
            };
            let batch: Vec<PlanEntry> =
                entries[index * batch_size..(index + 1) * batch_size].to_vec();
            let mut uses: BTreeMap<usize, usize> = BTreeMap::new();
            let located: Vec<(usize, usize)> =
                batch.iter().map(|e| self.plan.locate(e.row)).collect();
            for (group, _) in &located {
                *uses.entry(*group).or_default() += 1;
            }
            let groups: Vec<(usize, u64, usize)> = uses
                .iter()
                .map(|(&g, &n)| (g, self.source.row_groups()[g].bytes, n))
                .collect();
            let fetches = self.prefetch.admit(&groups, |g| self.start_fetch(g)).await;
            let admitted = Admitted {
                seq,
                epoch,
                batch,
                located,
                groups,
                fetches,
            };
            if admitted_tx.send(admitted).await.is_err() {
                return;
            }
            seq += 1;
        }
    }
}

/// Batches admitted to the prefetch store (their row groups being fetched) and
/// not yet handed to the pool, at most.
const ADMITTED_AHEAD: usize = 4096;

/// A batch whose row groups are admitted to the prefetch store.
struct Admitted {
    seq: u64,
    epoch: u64,
    batch: Vec<PlanEntry>,
    located: Vec<(usize, usize)>,
    groups: Vec<(usize, u64, usize)>,
    fetches: Vec<SharedFetch>,
}

/// Hands admitted batches to the pool in plan order, one in-flight permit each,
/// once their row groups have arrived.
async fn dispatch<T: Send + 'static>(
    mut admitted: tokio::sync::mpsc::Receiver<Admitted>,
    in_flight: Arc<Semaphore>,
    pool: Arc<PoolShared>,
    results: Sender<Message<T>>,
    plan: Arc<Plan>,
) {
    while let Some(Admitted {
        seq,
        epoch,
        batch,
        located,
        groups,
        fetches,
    }) = admitted.recv().await
    {
        match in_flight.acquire().await {
            Ok(permit) => permit.forget(),
            Err(_) => return,
        }
        let pool = pool.clone();
        let results = results.clone();
        let plan = plan.clone();
        tokio::spawn(async move {
            let mut data = HashMap::new();
            for ((group, _, _), fetch) in groups.iter().zip(fetches) {
                match fetch.await {
                    Ok(batch) => {
                        data.insert(*group, batch);
                    }
                    Err(error) => {
                        let _ = results.send(Message::Failed(error));
                        return;
                    }
                }
            }
            let jobs = batch
                .iter()
                .zip(located)
                .enumerate()
                .map(|(slot, (entry, (group, index)))| Job {
                    seq,
                    slot,
                    epoch,
                    entry: *entry,
                    group,
                    index,
                    group_start: plan.row_id(group, 0),
                    data: data[&group].clone(),
                })
                .collect();
            pool.push(jobs);
        });
    }
}

/// The streaming loader of one data-parallel rank. See the crate documentation
/// for an example.
///
/// Dropping it stops its IO tasks at once and its transform threads after their
/// current row (threads still busy after 2 s are detached).
pub struct Loader<T> {
    plan: Arc<Plan>,
    window: u64,
    delivery: Delivery,
    slow_row: Option<Duration>,
    stall_timeout: Option<Duration>,
    end: u64,
    results: Receiver<Message<T>>,
    pool: Arc<PoolShared>,
    prefetch: Arc<PrefetchStore>,
    in_flight: Arc<Semaphore>,
    in_flight_limit: usize,
    counters: Arc<Counters>,
    workers: Vec<JoinHandle<()>>,
    runtime: Option<tokio::runtime::Runtime>,
    assembling: HashMap<u64, Assembly<T>>,
    ready: BTreeMap<u64, Assembly<T>>,
    cursor: u64,
    delivered_ahead: BTreeSet<u64>,
    log: Vec<u64>,
    log_position: u64,
    faults: Vec<Fault>,
    fatal: Option<LoaderError>,
    metrics: LoaderMetrics,
    started: Instant,
}

impl<T: Send + 'static> Loader<T> {
    /// Starts a loader over `source` following `plan`, transforming each planned
    /// row with `transform(row, seed)`.
    pub fn new<F>(
        source: Arc<dyn RowGroupSource>,
        plan: Plan,
        transform: F,
        config: LoaderConfig,
    ) -> Result<Self, LoaderError>
    where
        F: Fn(RowRef<'_>, u64) -> Result<T, TransformError> + Send + Sync + 'static,
    {
        let rows: Vec<u64> = source.row_groups().iter().map(|g| g.rows).collect();
        if rows.len() != plan.row_group_count()
            || (0..rows.len()).any(|g| rows[g] != plan.row_group_rows(g))
        {
            return Err(LoaderError::Config(
                "the plan was built for row groups of different sizes".into(),
            ));
        }
        if config.window == 0 {
            return Err(LoaderError::Config("window must be at least 1".into()));
        }
        let workers = if config.workers == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            config.workers
        };
        let batch_size = plan.config().batch_size;
        let in_flight_batches = if config.in_flight_batches == 0 {
            config.window + 2 * workers.div_ceil(batch_size)
        } else {
            config.in_flight_batches.max(config.window)
        };
        let per_epoch = plan.batches_per_epoch();
        let first = config.start_epoch * per_epoch;
        let end = match config.epochs {
            Some(n) => (config.start_epoch + n) * per_epoch,
            None => u64::MAX,
        };
        let (cursor, delivered_ahead, log_position) = match &config.resume {
            None => (first, BTreeSet::new(), 0),
            Some(state) => {
                if state.plan_fingerprint != plan.fingerprint()
                    || state.batches_per_epoch != per_epoch
                {
                    return Err(LoaderError::StateMismatch(format!(
                        "state fingerprint {:#x} with {} batches/epoch, plan {:#x} with {}",
                        state.plan_fingerprint,
                        state.batches_per_epoch,
                        plan.fingerprint(),
                        per_epoch
                    )));
                }
                let ahead: BTreeSet<u64> = state.delivered_ahead.iter().copied().collect();
                if ahead
                    .iter()
                    .any(|&s| s <= state.cursor || s >= state.cursor + config.window as u64)
                {
                    return Err(LoaderError::StateMismatch(format!(
                        "delivered_ahead {:?} is not inside the window after cursor {}",
                        state.delivered_ahead, state.cursor
                    )));
                }
                (state.cursor, ahead, state.log_position)
            }
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.io_threads.max(1))
            .thread_name("scalefold-loader-io")
            .enable_all()
            .build()
            .map_err(|e| LoaderError::Config(format!("cannot start the IO runtime: {e}")))?;
        let plan = Arc::new(plan);
        let (sender, results) = mpsc::channel();
        let pool = Arc::new(PoolShared::new(workers));
        let source_bytes: u64 = source.row_groups().iter().map(|g| g.bytes).sum();
        let prefetch = Arc::new(PrefetchStore::with_retention(
            config.prefetch_bytes,
            source_bytes <= config.prefetch_bytes,
        ));
        let in_flight = Arc::new(Semaphore::new(in_flight_batches));
        let counters = Arc::new(Counters::default());
        let transform: Arc<crate::pool::TransformFn<T>> = Arc::new(transform);
        let mut handles = Vec::with_capacity(workers);
        for worker in 0..workers {
            let context = WorkerContext {
                shared: pool.clone(),
                prefetch: prefetch.clone(),
                transform: transform.clone(),
                policy: config.fault_policy,
                slow_row: config.slow_row,
                results: sender.clone(),
            };
            let handle = std::thread::Builder::new()
                .name(format!("scalefold-loader-{worker}"))
                .spawn(move || context.run(worker))
                .map_err(|e| {
                    LoaderError::Config(format!("cannot start a transform thread: {e}"))
                })?;
            handles.push(handle);
        }
        let planner = Planner {
            source,
            plan: plan.clone(),
            prefetch: prefetch.clone(),
            pool: pool.clone(),
            in_flight: in_flight.clone(),
            fetch_slots: Arc::new(Semaphore::new(config.fetch_concurrency.max(1))),
            retry: config.retry.clone(),
            counters: counters.clone(),
            results: sender,
            first: cursor,
            end,
            skip: delivered_ahead.clone(),
        };
        runtime.spawn(planner.run());
        let window = config.window as u64;
        Ok(Self {
            plan,
            window,
            delivery: config.delivery,
            slow_row: config.slow_row,
            stall_timeout: config.stall_timeout,
            end,
            results,
            pool,
            prefetch,
            in_flight,
            in_flight_limit: in_flight_batches,
            counters,
            workers: handles,
            runtime: Some(runtime),
            assembling: HashMap::new(),
            ready: BTreeMap::new(),
            cursor,
            delivered_ahead,
            log: Vec::new(),
            log_position,
            faults: Vec::new(),
            fatal: None,
            metrics: LoaderMetrics {
                batches: 0,
                samples: 0,
                faults: 0,
                fetch_retries: 0,
                wait_seconds_total: 0.0,
                wait_seconds_max: 0.0,
                wait_histogram: [0; 7],
                reorder_histogram: vec![0; config.window],
                elapsed_seconds: 0.0,
                samples_per_second: 0.0,
                bytes_fetched: 0,
                bytes_per_second: 0.0,
                in_flight_samples: 0,
                in_flight_batches: 0,
                prefetched_bytes: 0,
            },
            started: Instant::now(),
        })
    }

    /// The plan this loader follows.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The next batch, waiting if none is deliverable yet; `Ok(None)` after the
    /// last epoch. After an error the loader keeps returning that error.
    pub fn next_batch(&mut self) -> Result<Option<Batch<T>>, LoaderError> {
        let started = Instant::now();
        let tick = Duration::from_millis(20);
        loop {
            if let Some(error) = &self.fatal {
                return Err(error.clone());
            }
            if self.cursor >= self.end {
                return Ok(None);
            }
            match self.pick() {
                Ok(Some(seq)) => return Ok(Some(self.deliver(seq, started.elapsed()))),
                Ok(None) => {}
                Err(error) => {
                    self.fatal = Some(error);
                    continue;
                }
            }
            match self.results.recv_timeout(tick) {
                Ok(message) => {
                    self.absorb(message);
                    while let Ok(message) = self.results.try_recv() {
                        self.absorb(message);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.watch_slow_rows();
                    if let Some(limit) = self.stall_timeout
                        && started.elapsed() > limit
                    {
                        let running = self
                            .pool
                            .running()
                            .iter()
                            .flatten()
                            .map(|r| r.row)
                            .collect();
                        return Err(LoaderError::Stalled {
                            waited: started.elapsed(),
                            running,
                        });
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.fatal = Some(LoaderError::Shutdown("all background tasks ended".into()));
                }
            }
        }
    }

    fn absorb(&mut self, message: Message<T>) {
        match message {
            Message::Failed(error) => {
                if self.fatal.is_none() {
                    self.fatal = Some(error);
                }
            }
            Message::Done(Done {
                seq,
                slot,
                sample,
                faults,
            }) => {
                let batch_size = self.plan.config().batch_size;
                let assembly = self.assembling.entry(seq).or_insert_with(|| Assembly {
                    slots: (0..batch_size).map(|_| None).collect(),
                    remaining: batch_size,
                    faults: Vec::new(),
                });
                assembly.slots[slot] = sample;
                assembly.remaining -= 1;
                for fault in &faults {
                    tracing::warn!(row = fault.row, position = fault.position, epoch = fault.epoch, kind = ?fault.kind, action = ?fault.action, "transform fault");
                }
                self.faults.extend(faults.iter().cloned());
                self.metrics.faults += faults.len() as u64;
                assembly.faults.extend(faults);
                if assembly.remaining == 0 {
                    let done = self.assembling.remove(&seq).expect("just updated");
                    self.ready.insert(seq, done);
                }
            }
        }
    }

    /// Reports rows running past the slow-row limit (once each).
    fn watch_slow_rows(&mut self) {
        let Some(limit) = self.slow_row else { return };
        let mut running = self.pool.running();
        for slot in running.iter_mut().flatten() {
            let elapsed = slot.started.elapsed();
            if elapsed > limit && !slot.reported {
                slot.reported = true;
                let fault = Fault {
                    epoch: slot.epoch,
                    position: slot.position,
                    row: slot.row,
                    kind: FaultKind::Slow {
                        seconds: elapsed.as_secs_f64(),
                    },
                    action: FaultAction::Reported,
                };
                tracing::warn!(
                    row = fault.row,
                    seconds = elapsed.as_secs_f64(),
                    "slow transform"
                );
                self.faults.push(fault);
                self.metrics.faults += 1;
            }
        }
    }

    /// The batch to deliver now, if any.
    fn pick(&self) -> Result<Option<u64>, LoaderError> {
        let window_end = self.cursor.saturating_add(self.window).min(self.end);
        if let Delivery::Replay(log) = &self.delivery
            && let Some(&seq) = log.get(self.log_position as usize)
        {
            if seq < self.cursor || seq >= window_end || self.delivered_ahead.contains(&seq) {
                return Err(LoaderError::Config(format!(
                    "replay log entry {} is batch {seq}, which is not deliverable with cursor {} and window {}",
                    self.log_position, self.cursor, self.window
                )));
            }
            return Ok(self.ready.contains_key(&seq).then_some(seq));
        }
        Ok(self
            .ready
            .range(self.cursor..window_end)
            .next()
            .map(|(&seq, _)| seq))
    }

    fn deliver(&mut self, seq: u64, waited: Duration) -> Batch<T> {
        let assembly = self.ready.remove(&seq).expect("picked from ready");
        let overtaken_by = self.delivered_ahead.range(seq + 1..).count();
        self.metrics.reorder_histogram[overtaken_by] += 1;
        if seq == self.cursor {
            self.cursor += 1;
            while self.delivered_ahead.remove(&self.cursor) {
                self.cursor += 1;
            }
        } else {
            self.delivered_ahead.insert(seq);
        }
        self.log.push(seq);
        self.log_position += 1;
        self.in_flight.add_permits(1);
        let (entries, samples): (Vec<PlanEntry>, Vec<T>) =
            assembly.slots.into_iter().flatten().unzip();
        let metrics = &mut self.metrics;
        metrics.batches += 1;
        metrics.samples += samples.len() as u64;
        let seconds = waited.as_secs_f64();
        metrics.wait_seconds_total += seconds;
        metrics.wait_seconds_max = metrics.wait_seconds_max.max(seconds);
        let decade = if seconds <= 0.0 {
            0
        } else {
            ((seconds.log10() + 5.0).floor().max(0.0) as usize).min(6)
        };
        metrics.wait_histogram[decade] += 1;
        let per_epoch = self.plan.batches_per_epoch();
        Batch {
            epoch: seq / per_epoch,
            index: seq % per_epoch,
            seq,
            samples,
            entries,
            faults: assembly.faults,
            waited,
        }
    }

    /// The state to resume from: everything delivered so far stays delivered.
    pub fn state(&self) -> LoaderState {
        LoaderState {
            plan_fingerprint: self.plan.fingerprint(),
            batches_per_epoch: self.plan.batches_per_epoch(),
            epoch: self.cursor / self.plan.batches_per_epoch(),
            cursor: self.cursor,
            delivered_ahead: self.delivered_ahead.iter().copied().collect(),
            log_position: self.log_position,
        }
    }

    /// Sequence numbers delivered by this loader, in delivery order (a replay log,
    /// continuing at the resumed state's `log_position`).
    pub fn delivery_log(&self) -> &[u64] {
        &self.log
    }

    /// Faults reported so far (also attached to each batch), emptied by this call.
    pub fn take_faults(&mut self) -> Vec<Fault> {
        std::mem::take(&mut self.faults)
    }

    /// Counters and timings now.
    pub fn metrics(&self) -> LoaderMetrics {
        let mut m = self.metrics.clone();
        let elapsed = self.started.elapsed().as_secs_f64();
        m.elapsed_seconds = elapsed;
        m.bytes_fetched = self.counters.bytes_fetched.load(Ordering::Relaxed);
        m.fetch_retries = self.counters.retries.load(Ordering::Relaxed);
        m.samples_per_second = m.samples as f64 / elapsed.max(1e-9);
        m.bytes_per_second = m.bytes_fetched as f64 / elapsed.max(1e-9);
        m.in_flight_samples = self.pool.in_flight.load(Ordering::Relaxed);
        m.in_flight_batches =
            self.in_flight_limit
                .saturating_sub(self.in_flight.available_permits()) as u64;
        m.prefetched_bytes = self.prefetch.used_bytes();
        m
    }
}

impl<T: Send + 'static> Iterator for Loader<T> {
    type Item = Result<Batch<T>, LoaderError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_batch().transpose()
    }
}

impl<T> Drop for Loader<T> {
    fn drop(&mut self) {
        self.in_flight.close();
        self.pool.close();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline && self.workers.iter().any(|w| !w.is_finished()) {
            std::thread::sleep(Duration::from_millis(1));
        }
        for worker in self.workers.drain(..) {
            if worker.is_finished() {
                let _ = worker.join();
            }
        }
    }
}
