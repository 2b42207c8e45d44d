//! The transform pool: threads that run the user's transform on planned rows,
//! oldest planned batch first, catching errors and panics per row.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::DataType;
use serde::{Deserialize, Serialize};

use crate::error::LoaderError;
use crate::fetch::PrefetchStore;
use crate::plan::PlanEntry;
use crate::rng;

/// The error a transform returns for a row it cannot turn into a sample.
pub type TransformError = Box<dyn std::error::Error + Send + Sync>;

/// One row handed to the transform: row `index` of the row group `batch`.
#[derive(Debug, Clone, Copy)]
pub struct RowRef<'a> {
    /// The whole row group, as fetched (with the source's projection).
    pub batch: &'a RecordBatch,
    /// The row's index inside `batch`.
    pub index: usize,
    /// The row's global id (rows numbered across row groups).
    pub row: u64,
}

impl<'a> RowRef<'a> {
    /// The column `name` of the row group.
    pub fn column(&self, name: &str) -> Result<&'a ArrayRef, LoaderError> {
        self.batch
            .column_by_name(name)
            .ok_or_else(|| self.column_error(name, "not in the row group (projected out?)"))
    }

    /// This row's value of the binary column `name`, borrowed from the fetched row
    /// group (no copy), whichever layout it was read in: `Binary`, `LargeBinary`,
    /// `BinaryView` (see [`crate::BinaryLayout`]) or `FixedSizeBinary`. A transform
    /// that reads binary columns through this accessor works with either layout.
    /// A null value, or a column of another type, is an error naming the column.
    pub fn bytes(&self, name: &str) -> Result<&'a [u8], LoaderError> {
        let column = self.column(name)?;
        if column.is_null(self.index) {
            return Err(self.column_error(name, "null"));
        }
        let i = self.index;
        match column.data_type() {
            DataType::Binary => Ok(column.as_binary::<i32>().value(i)),
            DataType::LargeBinary => Ok(column.as_binary::<i64>().value(i)),
            DataType::BinaryView => Ok(column.as_binary_view().value(i)),
            DataType::FixedSizeBinary(_) => Ok(column.as_fixed_size_binary().value(i)),
            other => Err(self.column_error(name, &format!("{other}, not binary"))),
        }
    }

    fn column_error(&self, name: &str, reason: &str) -> LoaderError {
        LoaderError::Column {
            row: self.row,
            column: name.to_string(),
            reason: reason.to_string(),
        }
    }
}

/// The user's transform: `(row, seed) → sample`. It must be deterministic in
/// (row, seed) for replay to reproduce samples.
pub type TransformFn<T> = dyn Fn(RowRef<'_>, u64) -> Result<T, TransformError> + Send + Sync;

/// What to do with a row whose transform errors or panics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FaultPolicy {
    /// Leave the sample out: its batch is delivered one sample short.
    Skip,
    /// Try up to `attempts` other rows of the same row group, chosen from the
    /// sample's seed (so the replacement is the same in every run); skip if all fail.
    Replace {
        /// Replacement rows tried before giving up.
        attempts: u32,
    },
}

/// How a row went wrong.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FaultKind {
    /// The transform returned an error.
    Error(String),
    /// The transform panicked (the panic message).
    Panic(String),
    /// The transform ran longer than the slow-row limit (seconds so far).
    Slow {
        /// Seconds the row had been running when reported.
        seconds: f64,
    },
}

/// What the loader did about a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FaultAction {
    /// The sample was left out.
    Skipped,
    /// The sample was replaced by this row.
    Replaced {
        /// Global id of the replacement row.
        row: u64,
    },
    /// Only reported (slow rows still deliver their sample).
    Reported,
}

/// A row the transform failed on, or was slow on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    /// Epoch of the sample.
    pub epoch: u64,
    /// Global position of the sample in the epoch.
    pub position: u64,
    /// Global id of the row that faulted.
    pub row: u64,
    /// What went wrong.
    pub kind: FaultKind,
    /// What was done about it.
    pub action: FaultAction,
}

/// One sample to transform.
pub(crate) struct Job {
    pub seq: u64,
    pub slot: usize,
    pub epoch: u64,
    pub entry: PlanEntry,
    pub group: usize,
    pub index: usize,
    /// Global id of row 0 of `group`.
    pub group_start: u64,
    pub data: Arc<RecordBatch>,
}

impl Job {
    fn key(&self) -> (u64, usize) {
        (self.seq, self.slot)
    }
}
impl PartialEq for Job {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl Eq for Job {}
impl PartialOrd for Job {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Job {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

/// A finished sample, sent to the consumer.
pub(crate) struct Done<T> {
    pub seq: u64,
    pub slot: usize,
    pub sample: Option<(PlanEntry, T)>,
    pub faults: Vec<Fault>,
}

/// Messages from the background to the consumer.
pub(crate) enum Message<T> {
    Done(Done<T>),
    Failed(crate::LoaderError),
}

/// The row a worker is running, for the slow-row watchdog.
#[derive(Clone, Copy)]
pub(crate) struct Running {
    pub epoch: u64,
    pub position: u64,
    pub row: u64,
    pub started: Instant,
    pub reported: bool,
}

struct Queue {
    jobs: BinaryHeap<Reverse<Job>>,
    closed: bool,
}

/// State shared by the workers, the planner (which pushes jobs) and the consumer.
pub(crate) struct PoolShared {
    queue: Mutex<Queue>,
    available: Condvar,
    /// One slot per worker.
    pub running: Mutex<Vec<Option<Running>>>,
    /// Samples queued or being transformed.
    pub in_flight: AtomicU64,
}

fn relock<'a, G>(result: std::sync::LockResult<MutexGuard<'a, G>>) -> MutexGuard<'a, G> {
    // No user code runs while these locks are held, so a poisoned lock is still consistent.
    result.unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl PoolShared {
    pub(crate) fn new(workers: usize) -> Self {
        Self {
            queue: Mutex::new(Queue {
                jobs: BinaryHeap::new(),
                closed: false,
            }),
            available: Condvar::new(),
            running: Mutex::new(vec![None; workers]),
            in_flight: AtomicU64::new(0),
        }
    }

    pub(crate) fn push(&self, jobs: Vec<Job>) {
        let n = jobs.len();
        self.in_flight.fetch_add(n as u64, Ordering::Relaxed);
        let mut queue = relock(self.queue.lock());
        queue.jobs.extend(jobs.into_iter().map(Reverse));
        drop(queue);
        if n == 1 {
            self.available.notify_one()
        } else {
            self.available.notify_all()
        }
    }

    pub(crate) fn close(&self) {
        relock(self.queue.lock()).closed = true;
        self.available.notify_all();
    }

    fn pop(&self) -> Option<Job> {
        let mut queue = relock(self.queue.lock());
        loop {
            if queue.closed {
                return None;
            }
            if let Some(Reverse(job)) = queue.jobs.pop() {
                return Some(job);
            }
            queue = relock(self.available.wait(queue));
        }
    }

    pub(crate) fn running(&self) -> MutexGuard<'_, Vec<Option<Running>>> {
        relock(self.running.lock())
    }
}

/// Settings a worker needs.
pub(crate) struct WorkerContext<T> {
    pub shared: Arc<PoolShared>,
    pub prefetch: Arc<PrefetchStore>,
    pub transform: Arc<TransformFn<T>>,
    pub policy: FaultPolicy,
    pub slow_row: Option<Duration>,
    pub results: Sender<Message<T>>,
}

const TAG_REPLACE: u64 = 0x5245_504C;

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}

impl<T: Send + 'static> WorkerContext<T> {
    /// The worker loop: runs until the queue is closed or the consumer is gone.
    pub(crate) fn run(self, worker: usize) {
        while let Some(job) = self.shared.pop() {
            let done = self.transform_job(worker, &job);
            self.prefetch.release(job.group);
            self.shared.in_flight.fetch_sub(1, Ordering::Relaxed);
            if self.results.send(Message::Done(done)).is_err() {
                return;
            }
        }
    }

    fn attempt(&self, job: &Job, index: usize, row: u64, seed: u64) -> Result<T, FaultKind> {
        let call = || {
            (self.transform)(
                RowRef {
                    batch: &job.data,
                    index,
                    row,
                },
                seed,
            )
        };
        match catch_unwind(AssertUnwindSafe(call)) {
            Ok(Ok(sample)) => Ok(sample),
            Ok(Err(error)) => Err(FaultKind::Error(error.to_string())),
            Err(payload) => Err(FaultKind::Panic(panic_message(payload.as_ref()))),
        }
    }

    fn transform_job(&self, worker: usize, job: &Job) -> Done<T> {
        let started = Instant::now();
        self.shared.running()[worker] = Some(Running {
            epoch: job.epoch,
            position: job.entry.position,
            row: job.entry.row,
            started,
            reported: false,
        });
        let mut faults = Vec::new();
        let mut entry = job.entry;
        let mut outcome = self.attempt(job, job.index, entry.row, entry.seed);
        if let Err(kind) = &outcome {
            faults.push(Fault {
                epoch: job.epoch,
                position: entry.position,
                row: entry.row,
                kind: kind.clone(),
                action: FaultAction::Skipped,
            });
            let attempts = match self.policy {
                FaultPolicy::Skip => 0,
                FaultPolicy::Replace { attempts } => attempts,
            };
            let rows = job.data.num_rows() as u64;
            for k in 1..=attempts as u64 {
                let index = (rng::mix(&[TAG_REPLACE, job.entry.seed, k]) % rows) as usize;
                let row = job.group_start + index as u64;
                let seed = rng::mix(&[TAG_REPLACE, job.entry.seed, k, 1]);
                match self.attempt(job, index, row, seed) {
                    Ok(sample) => {
                        faults[0].action = FaultAction::Replaced { row };
                        entry = PlanEntry {
                            position: entry.position,
                            row,
                            seed,
                        };
                        outcome = Ok(sample);
                        break;
                    }
                    Err(kind) => faults.push(Fault {
                        epoch: job.epoch,
                        position: entry.position,
                        row,
                        kind,
                        action: FaultAction::Skipped,
                    }),
                }
            }
        }
        let finished = self.shared.running()[worker].take();
        let elapsed = started.elapsed();
        if let (Some(limit), Some(running)) = (self.slow_row, finished)
            && elapsed > limit
            && !running.reported
        {
            faults.push(Fault {
                epoch: job.epoch,
                position: job.entry.position,
                row: job.entry.row,
                kind: FaultKind::Slow {
                    seconds: elapsed.as_secs_f64(),
                },
                action: FaultAction::Reported,
            });
        }
        Done {
            seq: job.seq,
            slot: job.slot,
            sample: outcome.ok().map(|s| (entry, s)),
            faults,
        }
    }
}
