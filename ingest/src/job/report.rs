//! The job's report: every input that failed or was filtered, with its reason, plus
//! totals; saved as JSON inside the dataset (`_reports/worker-NNNNN.json`) so a resumed
//! run still reports the failures of sources it no longer revisits.

use std::collections::{BTreeMap, HashSet};

use object_store::{ObjectStoreExt, PutPayload};
use scalefold_storage::Location;

use super::IngestError;
use super::cpu::StageSeconds;
use super::fetch::Source;

/// Whether an input failed (unreadable, malformed, inconsistent) or was filtered out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LineKind {
    /// The input could not be used.
    Failed,
    /// The input was valid but a filter dropped it.
    Filtered,
}

/// One failed or filtered input.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReportLine {
    /// Failed or filtered.
    pub kind: LineKind,
    /// The source key (structure file) the input belongs to.
    pub source: String,
    /// The structure file (entry-level) or chain id `<entry>_<chain>` (chain-level).
    pub input: String,
    /// Where: `read`, `parse`, `alignment`, `templates`, `featurize`, or the filter's name.
    pub stage: String,
    /// What was wrong, naming the file and line where there is one.
    pub reason: String,
}

/// Live counters for a progress display.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    /// Sources to process in this run.
    pub total: usize,
    /// Sources processed so far.
    pub done: usize,
    /// Rows written so far.
    pub chains_written: usize,
    /// Failed inputs so far.
    pub failed: usize,
    /// Filtered inputs so far.
    pub filtered: usize,
    /// Input bytes fetched so far.
    pub bytes_read: u64,
}

/// What the job did.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct IngestReport {
    /// This worker.
    pub worker: u32,
    /// Number of workers.
    pub workers: u32,
    /// Structure files assigned to this worker.
    pub assigned: usize,
    /// Of those, already in the dataset from an earlier run (skipped).
    pub already_done: usize,
    /// Structure files processed in this run.
    pub processed: usize,
    /// Structure files with at least one row written in this run.
    pub sources_written: usize,
    /// Rows (chains) written in this run.
    pub chains_written: usize,
    /// Input bytes fetched in this run.
    pub bytes_read: u64,
    /// Wall time of this run.
    pub seconds: f64,
    /// Whether this run committed the dataset's manifest.
    pub committed: bool,
    /// Structure files parsed in this run, for a source's rows or as a template (a file
    /// parsed again after it left the bounded cache counts again).
    #[serde(default)]
    pub structures_parsed: usize,
    /// Structures taken from the cache of parsed files instead of parsed again.
    #[serde(default)]
    pub structures_from_cache: usize,
    /// CPU seconds per stage of this run, summed over threads.
    #[serde(default)]
    pub cpu_seconds: StageSeconds,
    /// Failed and filtered inputs (this run's plus those of earlier runs' finished sources).
    pub lines: Vec<ReportLine>,
}

impl IngestReport {
    /// An empty report.
    pub fn new(worker: u32, workers: u32) -> Self {
        IngestReport {
            worker,
            workers,
            assigned: 0,
            already_done: 0,
            processed: 0,
            sources_written: 0,
            chains_written: 0,
            bytes_read: 0,
            seconds: 0.0,
            committed: false,
            structures_parsed: 0,
            structures_from_cache: 0,
            cpu_seconds: StageSeconds::default(),
            lines: Vec::new(),
        }
    }

    /// The CPU time of each stage divided by `per`, as one
    /// line, e.g. `fetch 0.21, structures 0.95, ...` (`per` = chains gives seconds per chain).
    pub fn cpu_by_stage(&self, per: f64) -> String {
        let c = &self.cpu_seconds;
        [
            ("fetch", c.fetch),
            ("structures", c.structures),
            ("alignments", c.alignments),
            ("templates", c.templates),
            ("records", c.records),
            ("batches", c.batches),
            ("encoding", c.encoding),
        ]
        .iter()
        .map(|(name, seconds)| format!("{name} {:.3}", seconds / per))
        .collect::<Vec<_>>()
        .join(", ")
    }

    /// Number of failed inputs.
    pub fn failed(&self) -> usize {
        self.lines
            .iter()
            .filter(|l| l.kind == LineKind::Failed)
            .count()
    }

    /// Number of filtered inputs.
    pub fn filtered(&self) -> usize {
        self.lines
            .iter()
            .filter(|l| l.kind == LineKind::Filtered)
            .count()
    }

    /// Count of lines per (kind, stage).
    pub fn counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for l in &self.lines {
            let kind = match l.kind {
                LineKind::Failed => "failed",
                LineKind::Filtered => "filtered",
            };
            *counts.entry(format!("{kind}:{}", l.stage)).or_default() += 1;
        }
        counts
    }

    pub(super) fn add_lines(&mut self, lines: Vec<ReportLine>) {
        self.lines.extend(lines);
    }

    /// Keeps the earlier run's lines about sources this run skips as finished.
    pub(super) fn carry_over(&mut self, previous: Option<IngestReport>, finished: &[Source]) {
        let Some(previous) = previous else { return };
        let keys: HashSet<&str> = finished.iter().map(|s| s.key.as_str()).collect();
        self.lines.extend(
            previous
                .lines
                .into_iter()
                .filter(|l| keys.contains(l.source.as_str())),
        );
    }

    /// Sorts the lines (by input, then stage) so reports compare across runs.
    pub fn sort(&mut self) {
        self.lines
            .sort_by(|a, b| (&a.input, &a.stage).cmp(&(&b.input, &b.stage)));
        self.lines.dedup();
    }

    /// The human summary printed at the end of a run.
    pub fn summary(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "worker {}/{}: {} structure files assigned, {} already done, {} processed in {:.1} s",
            self.worker,
            self.workers,
            self.assigned,
            self.already_done,
            self.processed,
            self.seconds
        );
        let rate = if self.seconds > 0.0 {
            self.chains_written as f64 / self.seconds
        } else {
            0.0
        };
        let _ = writeln!(
            s,
            "  wrote {} chains from {} files ({:.1} chains/s, {:.1} MB read)",
            self.chains_written,
            self.sources_written,
            rate,
            self.bytes_read as f64 / 1e6
        );
        let _ = writeln!(
            s,
            "  {} failed, {} filtered{}",
            self.failed(),
            self.filtered(),
            if self.committed {
                "; dataset committed"
            } else {
                ""
            }
        );
        for (what, count) in self.counts() {
            let _ = writeln!(s, "    {what}: {count}");
        }
        let _ = writeln!(s, "  CPU seconds by stage: {}", self.cpu_by_stage(1.0));
        const SHOWN: usize = 20;
        let failures: Vec<&ReportLine> = self
            .lines
            .iter()
            .filter(|l| l.kind == LineKind::Failed)
            .collect();
        for l in failures.iter().take(SHOWN) {
            let _ = writeln!(s, "  FAILED {} [{}]: {}", l.input, l.stage, l.reason);
        }
        if failures.len() > SHOWN {
            let _ = writeln!(
                s,
                "  ... and {} more (see the JSON report)",
                failures.len() - SHOWN
            );
        }
        s
    }
}

/// Reads this worker's report of an earlier run, if there is a readable one.
pub(super) async fn load_previous(out: &Location, worker: u32) -> Option<IngestReport> {
    let path = out.child(&super::report_object_name(worker));
    let bytes = out.store.get(&path).await.ok()?.bytes().await.ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Saves the report inside the dataset.
pub(super) async fn save(
    out: &Location,
    worker: u32,
    report: &IngestReport,
) -> Result<(), IngestError> {
    let path = out.child(&super::report_object_name(worker));
    let json = serde_json::to_vec_pretty(report).expect("a report serializes");
    out.store
        .put(&path, PutPayload::from(json))
        .await
        .map_err(|e| {
            IngestError::Storage(scalefold_storage::StorageError::from_store(
                path.as_ref(),
                e,
            ))
        })?;
    Ok(())
}
