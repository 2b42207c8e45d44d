//! CPU time per stage of the job, summed over threads: where an ingest run's core-seconds
//! went (fetching, parsing structures, alignments, templates, records, record batches).
//!
//! Times are the calling thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), so a thread that
//! waits or is preempted is not charged, unlike a wall clock. A stage measured inside
//! another ([`timed_nested`], e.g. a template's structure parse inside the template stage)
//! is charged to itself and not to the enclosing [`Lap`] mark.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use scalefold_storage::cpu_clock::thread_cpu_nanos;

/// The stages whose CPU time the job accounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Reading a source's files and parsing its hhr files (local inputs only: object-store
    /// fetches run across awaits on the async runtime and are not measured).
    Fetch,
    /// Parsing structure files (a source's own, and templates' when looked up).
    Structures,
    /// Parsing a chain's alignment files and merging them into one MSA.
    Alignments,
    /// Selecting and mapping template hits (their structure parses excluded).
    Templates,
    /// Building and validating the chain records.
    Records,
    /// Converting a source's rows into one Arrow record batch.
    Batches,
}

const STAGES: usize = 6;

impl Stage {
    fn index(self) -> usize {
        self as usize
    }
}

/// Nanoseconds of CPU time per stage, added to from any thread.
#[derive(Debug, Default)]
pub struct StageCpu {
    nanos: [AtomicU64; STAGES],
}

/// Seconds of CPU time per stage, summed over all threads of one run (see [`Stage`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StageSeconds {
    /// [`Stage::Fetch`].
    pub fetch: f64,
    /// [`Stage::Structures`].
    pub structures: f64,
    /// [`Stage::Alignments`].
    pub alignments: f64,
    /// [`Stage::Templates`].
    pub templates: f64,
    /// [`Stage::Records`].
    pub records: f64,
    /// [`Stage::Batches`].
    pub batches: f64,
    /// The dataset writers' Parquet encoding and compression (their blocking tasks, beside
    /// the stages above). The report saved in the dataset is written before the writers
    /// encode their last row groups, so only the returned report counts those.
    #[serde(default)]
    pub encoding: f64,
}

impl StageSeconds {
    /// All stages together.
    pub fn total(&self) -> f64 {
        self.fetch
            + self.structures
            + self.alignments
            + self.templates
            + self.records
            + self.batches
            + self.encoding
    }
}

impl StageCpu {
    /// Charges `nanos` of CPU time to `stage`.
    pub fn add(&self, stage: Stage, nanos: u64) {
        self.nanos[stage.index()].fetch_add(nanos, Ordering::Relaxed);
    }

    /// The totals so far, in seconds.
    pub fn seconds(&self) -> StageSeconds {
        let s = |stage: Stage| self.nanos[stage.index()].load(Ordering::Relaxed) as f64 * 1e-9;
        StageSeconds {
            fetch: s(Stage::Fetch),
            structures: s(Stage::Structures),
            alignments: s(Stage::Alignments),
            templates: s(Stage::Templates),
            records: s(Stage::Records),
            batches: s(Stage::Batches),
            encoding: 0.0,
        }
    }
}

thread_local! {
    /// CPU time this thread spent in [`timed_nested`] calls so far.
    static NESTED_NANOS: Cell<u64> = const { Cell::new(0) };
}

/// Runs `f`, charging its CPU time to `stage` and excluding it from the enclosing [`Lap`].
pub fn timed_nested<T>(cpu: &StageCpu, stage: Stage, f: impl FnOnce() -> T) -> T {
    let start = thread_cpu_nanos();
    let out = f();
    let spent = thread_cpu_nanos().saturating_sub(start);
    cpu.add(stage, spent);
    NESTED_NANOS.with(|n| n.set(n.get() + spent));
    out
}

/// Consecutive stages on one thread: each [`Lap::mark`] charges the CPU time since the
/// previous mark (less any [`timed_nested`] time in between) to a stage.
#[derive(Debug)]
pub struct Lap {
    at: u64,
    nested_at: u64,
}

impl Lap {
    /// Starts measuring on this thread.
    pub fn start() -> Self {
        Lap {
            at: thread_cpu_nanos(),
            nested_at: NESTED_NANOS.with(Cell::get),
        }
    }

    /// Charges the time since the last mark to `stage`.
    pub fn mark(&mut self, cpu: &StageCpu, stage: Stage) {
        let now = Lap::start();
        let spent = now.at.saturating_sub(self.at);
        let nested = now.nested_at.saturating_sub(self.nested_at);
        cpu.add(stage, spent.saturating_sub(nested));
        *self = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spin(nanos: u64) -> u64 {
        let start = thread_cpu_nanos();
        let mut x = 0u64;
        while thread_cpu_nanos() - start < nanos {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        x
    }

    #[test]
    fn laps_charge_their_own_time_and_not_nested_time() {
        let cpu = StageCpu::default();
        let mut lap = Lap::start();
        spin(20_000_000);
        lap.mark(&cpu, Stage::Records);
        spin(10_000_000);
        timed_nested(&cpu, Stage::Structures, || spin(30_000_000));
        lap.mark(&cpu, Stage::Templates);
        let s = cpu.seconds();
        assert!(s.records >= 0.020 && s.records < 0.030, "{s:?}");
        assert!(s.structures >= 0.030 && s.structures < 0.040, "{s:?}");
        // 10 ms of its own; the 30 ms nested parse is charged to structures only.
        assert!(s.templates >= 0.010 && s.templates < 0.020, "{s:?}");
        assert_eq!(s.fetch, 0.0);
    }

    #[test]
    fn a_sleeping_thread_is_not_charged() {
        let cpu = StageCpu::default();
        let mut lap = Lap::start();
        std::thread::sleep(std::time::Duration::from_millis(50));
        lap.mark(&cpu, Stage::Fetch);
        assert!(cpu.seconds().fetch < 0.010, "{:?}", cpu.seconds());
    }
}
