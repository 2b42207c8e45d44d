//! The batch ingest job: structure files + OpenProteinSet-layout alignments → one dataset
//! row per protein chain ([`crate::schema`]), written through `scalefold_storage`.
//!
//! Pipeline (memory bounded whatever the input size):
//! 1. discover: list the structure files (`.cif`, `.cif.gz`, `.pdb`, `.ent`, optionally
//!    `.gz`) under the structures URL and the per-chain alignment folders under the
//!    alignments URL; keep this worker's share (xxh3 of the source key modulo `workers`)
//!    and drop the sources the dataset already holds (resume);
//! 2. fetch (async, `io_concurrency` sources in flight): the structure file, every
//!    alignment file of its chains, and the mmCIF files of the best template hits. Local
//!    roots are listed and read with plain file reads, each source whole in one blocking
//!    task; object stores through `object_store`, every request async;
//! 3. parse + filter + featurize + build the record batch on the rayon pool (at most
//!    `2 × threads` entries at once); templates are selected with the chain's own release
//!    date as cutoff, from the structures of the best hhr hits, each parsed only when a
//!    chain's selection looks it up. Parsed structure files go to one bounded, compact
//!    cache shared by both uses ([`TemplateCache`]): a file parsed as a template serves its
//!    own rows later and vice versa, so each file is parsed once while it stays cached;
//! 4. write: `writers` dataset writers per worker (Parquet encoding and zstd are serial
//!    per writer), each source to one writer by hash, all rows of one structure file in
//!    one `write_source` call (a file's rows never straddle shards, so a killed run
//!    resumes without loss or duplicates). The dataset has `workers × writers` parts;
//!    with one worker the job commits the manifest itself, else `scalefold_storage::commit`
//!    does once every worker finished.
//!
//! The source key is the structure file's path under the structures root; a chain's
//! alignments are the folder `<entry>_<chain>` (or, with a duplicate-chain file, that of
//! the first chain of its group that has one), merged UniRef90, BFD/Uniclust, MGnify,
//! then others by name, duplicates removed.
//!
//! Stages are joined by bounded channels. Every input that fails or is filtered becomes
//! a [`ReportLine`]; the job itself stops only on an [`IngestError`] (bad arguments,
//! unreadable store, failed dataset write).

mod cache;
mod cpu;
mod error;
mod fetch;
mod process;
mod report;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use scalefold_storage::{DatasetWriter, Location, WriterOptions};
use tokio::sync::{Semaphore, mpsc};

pub use cache::{CompactStructure, TemplateCache};
pub use cpu::StageSeconds;
pub use error::IngestError;
pub use process::Filters;
pub use report::{IngestReport, LineKind, Progress, ReportLine};

use crate::schema::{
    LENGTH_COLUMN, SCHEMA_VERSION, SOURCE_KEY_COLUMN, array_columns, chain_schema,
};

/// Default size of the parsed-structure cache, in MiB (about 110 bytes per residue: 2 GiB
/// hold ≈ 20 M residues, about a tenth of the PDB's protein chains).
pub const DEFAULT_TEMPLATE_CACHE_MIB: usize = 2048;

/// Everything the job needs to know.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Folder or object-store URL of the structure files.
    pub structures: String,
    /// Folder or object-store URL holding one `<id>_<chain>/` folder per chain.
    pub alignments: String,
    /// The dataset to write (folder or URL).
    pub out: String,
    /// Optional cluster file: one cluster per line, chain ids separated by spaces.
    pub clusters: Option<String>,
    /// Optional duplicate-chain file (OpenProteinSet `duplicate_pdb_chains.txt`): one
    /// group per line of chains with identical sequences; a chain without its own
    /// alignment folder uses the folder of the first chain of its group that has one.
    pub duplicate_chains: Option<String>,
    /// Optional alignment index (the "alignment database" form): a JSON object mapping
    /// each chain to `{"db": file, "files": [[name, start, length], ...]}`, the database
    /// files relative to `alignments`. With it, `alignments` holds the database files
    /// instead of one folder per chain.
    pub alignment_index: Option<String>,
    /// This worker's index, `0..workers`.
    pub worker: u32,
    /// Number of workers sharing the inputs.
    pub workers: u32,
    /// Input filters.
    pub filters: Filters,
    /// Dataset writers per worker, each encoding its own shards in parallel (Parquet
    /// encoding and zstd are serial per writer). The dataset has `workers × writers`
    /// parts; every run and every worker of one dataset must use the same value.
    pub writers: u32,
    /// Most templates kept per chain (the best by `Sum_probs` that pass selection).
    pub max_templates: usize,
    /// MiB of parsed structure files kept in memory, compact, for their use as templates
    /// and as sources (a bounded cache; about 110 bytes per residue; 0 disables it).
    pub template_cache_mib: usize,
    /// CPU threads for parse + featurize (0: all cores).
    pub threads: usize,
    /// Object-store requests in flight at once.
    pub io_concurrency: usize,
    /// Shards close at about this many bytes.
    pub shard_bytes: u64,
    /// Row groups close at about this many bytes.
    pub row_group_bytes: usize,
    /// zstd level of the shards (1..=22): compression is most of the writers' work.
    pub zstd_level: i32,
    /// Stop after this many sources were written in this run (None: all). For tests and
    /// benchmarks that need a partial run.
    pub limit: Option<usize>,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            structures: String::new(),
            alignments: String::new(),
            out: String::new(),
            clusters: None,
            duplicate_chains: None,
            alignment_index: None,
            worker: 0,
            workers: 1,
            filters: Filters::default(),
            writers: 4,
            max_templates: 4,
            template_cache_mib: DEFAULT_TEMPLATE_CACHE_MIB,
            threads: 0,
            io_concurrency: 32,
            shard_bytes: 256 << 20,
            row_group_bytes: 4 << 20,
            zstd_level: scalefold_storage::WriterOptions::default().zstd_level,
            limit: None,
        }
    }
}

impl IngestConfig {
    fn check(&self) -> Result<(), IngestError> {
        let bad = |m: String| Err(IngestError::InvalidArgument(m));
        if self.workers == 0 || self.worker >= self.workers {
            return bad(format!(
                "--worker {} must be below --workers {} (and workers at least 1)",
                self.worker, self.workers
            ));
        }
        if self.writers == 0 {
            return bad("writers must be at least 1".to_string());
        }
        if self.io_concurrency == 0 {
            return bad("io concurrency must be at least 1".to_string());
        }
        self.filters.check()
    }
}

/// Name of this worker's report object inside the dataset.
pub fn report_object_name(worker: u32) -> String {
    format!("_reports/worker-{worker:05}.json")
}

/// Which worker a source belongs to: xxh3 of its key modulo `workers` (stable across
/// machines and listings).
pub fn worker_of(source_key: &str, workers: u32) -> u32 {
    (xxhash_rust::xxh3::xxh3_64(source_key.as_bytes()) % u64::from(workers.max(1))) as u32
}

/// Which of a worker's `writers` writes a source (independent of [`worker_of`]'s bits).
fn writer_of(source_key: &str, workers: u32, writers: u32) -> usize {
    let hash = xxhash_rust::xxh3::xxh3_64(source_key.as_bytes()) / u64::from(workers.max(1));
    (hash % u64::from(writers.max(1))) as usize
}

/// Runs the ingest job. `progress` is called after each finished source.
///
/// With `workers == 1` the dataset is committed at the end; otherwise each worker only
/// publishes its part and [`scalefold_storage::commit`] merges them once all are done.
pub async fn ingest(
    config: &IngestConfig,
    progress: &(dyn Fn(&Progress) + Send + Sync),
) -> Result<IngestReport, IngestError> {
    config.check()?;
    let started = Instant::now();
    let structures = Location::parse(&config.structures)?;
    let alignments = Location::parse(&config.alignments)?;
    let out = Location::parse(&config.out)?;
    let clusters = match &config.clusters {
        Some(url) => fetch::read_clusters(url).await?,
        None => HashMap::new(),
    };
    let parts = config.workers * config.writers;
    let mut writers = Vec::with_capacity(config.writers as usize);
    for k in 0..config.writers {
        let options = WriterOptions {
            worker: config.worker * config.writers + k,
            workers: parts,
            schema_version: SCHEMA_VERSION,
            shard_bytes: config.shard_bytes,
            row_group_bytes: config.row_group_bytes,
            zstd_level: config.zstd_level,
            metadata: chain_schema()
                .metadata()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<BTreeMap<_, _>>(),
            source_key_column: Some(SOURCE_KEY_COLUMN.to_string()),
            length_column: Some(LENGTH_COLUMN.to_string()),
            columns_without_statistics: array_columns(),
            ..WriterOptions::default()
        };
        writers.push(DatasetWriter::create(&config.out, chain_schema(), options).await?);
    }

    let structures = fetch::Input::new(structures);
    let alignments = fetch::Input::new(alignments);
    // Both listings at once: until they end, no core has work.
    let (sources, chain_dirs) = tokio::try_join!(fetch::list_structures(&structures), async {
        match &config.alignment_index {
            Some(url) => {
                let index = fetch::read_alignment_index(url).await?;
                Ok((fetch::index_chain_dirs(&index), Some(index)))
            }
            None => Ok((fetch::list_chain_dirs(&alignments).await?, None)),
        }
    })?;
    let (mut chain_dirs, index) = chain_dirs;
    tracing::info!(
        sources = sources.len(),
        seconds = started.elapsed().as_secs_f64(),
        "inputs listed"
    );
    let entry_paths: HashMap<String, object_store::path::Path> = sources
        .iter()
        .map(|s| (s.entry_id.clone(), s.path.clone()))
        .collect();
    if let Some(url) = &config.duplicate_chains {
        fetch::add_duplicates(&mut chain_dirs, &fetch::read_duplicates(url).await?);
    }
    let mine: Vec<fetch::Source> = sources
        .into_iter()
        .filter(|s| worker_of(&s.key, config.workers) == config.worker)
        .collect();
    let previous = report::load_previous(&out, config.worker).await;
    let mut report = IngestReport::new(config.worker, config.workers);
    report.assigned = mine.len();
    let (done, todo): (Vec<_>, Vec<_>) = mine
        .into_iter()
        .partition(|s| writers[0].is_finished(&s.key));
    report.already_done = done.len();
    report.carry_over(previous, &done);
    let pending = todo.len();
    let todo: Vec<fetch::Source> = match config.limit {
        Some(limit) => todo.into_iter().take(limit).collect(),
        None => todo,
    };
    let total = todo.len();

    let threads = if config.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        config.threads
    };
    let pool = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("ingest-{i}"))
            .build()
            .map_err(|e| {
                IngestError::InvalidArgument(format!("cannot start {threads} threads: {e}"))
            })?,
    );
    let context = Arc::new(process::Context {
        filters: config.filters.clone(),
        max_templates: config.max_templates,
        clusters,
        templates: TemplateCache::new(config.template_cache_mib.saturating_mul(1 << 20)),
        structures_parsed: 0.into(),
        structures_from_cache: 0.into(),
        cpu: cpu::StageCpu::default(),
    });

    // Stage 2 → 3 and 3 → 4 channels; their capacities bound the entries in memory.
    let (fetched_tx, mut fetched_rx) = mpsc::channel::<fetch::Fetched>(threads * 2);
    let (done_tx, mut done_rx) = mpsc::channel::<process::Processed>(threads * 2);
    let fetcher = tokio::spawn(fetch::fetch_all(
        todo,
        Arc::new(fetch::Fetcher {
            structures,
            alignments,
            chain_dirs,
            index,
            entry_paths,
            context: context.clone(),
        }),
        config.io_concurrency,
        fetched_tx,
    ));
    let permits = Arc::new(Semaphore::new(threads * 2));
    let dispatcher = {
        let pool = pool.clone();
        let context = context.clone();
        tokio::spawn(async move {
            while let Some(fetched) = fetched_rx.recv().await {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    break;
                };
                let done_tx = done_tx.clone();
                let context = context.clone();
                pool.spawn(move || {
                    let processed = process::process_guarded(&context, fetched);
                    let _ = done_tx.blocking_send(processed);
                    drop(permit);
                });
            }
        })
    };

    // One task per writer: Parquet encoding runs on several runtime threads at once.
    let mut writer_inputs = Vec::with_capacity(writers.len());
    let mut writer_tasks = Vec::with_capacity(writers.len());
    for mut writer in writers {
        let (tx, mut rx) = mpsc::channel::<(String, arrow::array::RecordBatch)>(2);
        writer_inputs.push(tx);
        writer_tasks.push(tokio::spawn(async move {
            while let Some((key, batch)) = rx.recv().await {
                writer.write_source(&key, &batch).await?;
            }
            Ok::<DatasetWriter, IngestError>(writer)
        }));
    }

    let mut state = Progress {
        total,
        ..Progress::default()
    };
    while let Some(processed) = done_rx.recv().await {
        state.done += 1;
        state.bytes_read += processed.bytes_read;
        report.bytes_read += processed.bytes_read;
        report.processed += 1;
        if let Some(batch) = processed.batch {
            let slot = writer_of(&processed.source_key, config.workers, config.writers);
            if writer_inputs[slot]
                .send((processed.source_key.clone(), batch))
                .await
                .is_err()
            {
                break; // the writer failed: its error is returned below
            }
            report.sources_written += 1;
            report.chains_written += processed.chains;
            state.chains_written += processed.chains;
        }
        for line in &processed.lines {
            match line.kind {
                LineKind::Failed => state.failed += 1,
                LineKind::Filtered => state.filtered += 1,
            }
            tracing::warn!(input = %line.input, kind = ?line.kind, stage = %line.stage, reason = %line.reason, "input skipped");
        }
        tracing::info!(source = %processed.source_key, chains = processed.chains, done = state.done, total, "source finished");
        report.add_lines(processed.lines);
        progress(&state);
    }
    drop(writer_inputs);
    tracing::info!(
        seconds = started.elapsed().as_secs_f64(),
        "every source processed"
    );
    let mut writers = Vec::with_capacity(writer_tasks.len());
    for task in writer_tasks {
        writers.push(
            task.await.map_err(|e| {
                IngestError::InvalidArgument(format!("a writer task failed: {e}"))
            })??,
        );
    }
    dispatcher
        .await
        .map_err(|e| IngestError::InvalidArgument(format!("the dispatcher task failed: {e}")))?;
    fetcher
        .await
        .map_err(|e| IngestError::InvalidArgument(format!("the fetch task failed: {e}")))??;

    let complete = config.limit.is_none_or(|l| l >= pending);
    report.structures_parsed = context.structures_parsed.load(Ordering::Relaxed);
    report.structures_from_cache = context.structures_from_cache.load(Ordering::Relaxed);
    report.cpu_seconds = context.cpu.seconds();
    report.cpu_seconds.encoding = writers.iter().map(|w| w.timings().encoding_cpu_s).sum();
    report.seconds = started.elapsed().as_secs_f64();
    report.sort();
    report::save(&out, config.worker, &report).await?;
    if complete {
        // Each writer encodes its last row group and closes its shard on its own task.
        let finishing: Vec<_> = writers
            .into_iter()
            .map(|writer| tokio::spawn(writer.finish_timed()))
            .collect();
        report.cpu_seconds.encoding = 0.0;
        for task in finishing {
            let (_, timings) = task.await.map_err(|e| {
                IngestError::InvalidArgument(format!("a writer's finish task failed: {e}"))
            })??;
            report.cpu_seconds.encoding += timings.encoding_cpu_s;
        }
        tracing::info!(
            seconds = started.elapsed().as_secs_f64(),
            "writers finished"
        );
        if config.workers == 1 {
            scalefold_storage::commit(&config.out).await?;
            report.committed = true;
        }
    } else {
        // A partial run (limit): publish what was written without marking the worker
        // complete, exactly as a killed run would leave it.
        drop(writers);
    }
    Ok(report)
}
