//! `scalefold bench ingest [--json]`: end-to-end ingest throughput (chains/s, MB/s) on a
//! synthetic corpus, against the single-thread parse rate of the same files measured in
//! the same run, and the scaling over thread counts.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use scalefold_ingest::job::{IngestConfig, ingest};
use scalefold_ingest::msa::AlignmentFormat;
use scalefold_ingest::synth::{CorpusSummary, SynthConfig, write_corpus};
use scalefold_ingest::{MmcifOptions, parse_a3m, parse_hhr, parse_mmcif, parse_stockholm};

/// Arguments of `scalefold bench ingest`.
#[derive(Args, Debug)]
pub struct BenchIngestArgs {
    /// Chains in the synthetic corpus.
    #[arg(long, default_value_t = 2000)]
    pub chains: usize,
    /// Most a3m rows per chain (depths are log-uniform from 10).
    #[arg(long, default_value_t = 2000)]
    pub max_msa_depth: usize,
    /// Corpus folder: reused when it holds a corpus of the same settings, else written.
    /// Default: a temporary folder.
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// Thread counts to run end to end (default 1, 2, 4, ... up to all cores).
    #[arg(long, value_delimiter = ',')]
    pub threads: Vec<usize>,
    /// Also ingest into this dataset URL (e.g. an S3 prefix) with all cores.
    #[arg(long)]
    pub remote_out: Option<String>,
    /// zstd level of the shards (default: the storage crate's).
    #[arg(long, default_value_t = scalefold_storage::WriterOptions::default().zstd_level)]
    pub zstd_level: i32,
    /// Print one JSON line instead of text.
    #[arg(long)]
    pub json: bool,
}

/// A scratch folder under the system temp folder, removed when dropped.
struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    fn new() -> anyhow::Result<Self> {
        let path =
            std::env::temp_dir().join(format!("scalefold-bench-ingest-{}", std::process::id()));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(ScratchDir { path })
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            files_under(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

/// Seconds of the single-thread parse by file kind (each file's read, gunzip and parse).
#[derive(Debug, Default, serde::Serialize)]
struct ParseSeconds {
    mmcif: f64,
    a3m: f64,
    stockholm: f64,
    hhr: f64,
}

/// Reads and parses every input file once on this thread; returns (chains, bytes,
/// seconds, seconds by kind).
fn single_thread_parse(corpus: &Path) -> anyhow::Result<(usize, u64, f64, ParseSeconds)> {
    let mut files = Vec::new();
    for sub in ["mmcif", "alignments"] {
        files_under(&corpus.join(sub), &mut files)
            .with_context(|| format!("cannot list {}", corpus.join(sub).display()))?;
    }
    files.sort();
    let (mut chains, mut bytes) = (0usize, 0u64);
    let mut by_kind = ParseSeconds::default();
    let started = Instant::now();
    for file in &files {
        let file_started = Instant::now();
        let name = file.display().to_string();
        let raw = std::fs::read(file).with_context(|| format!("cannot read {name}"))?;
        bytes += raw.len() as u64;
        let text = scalefold_ingest::input::decompress_if_gzip(&name, raw)?;
        let plain = name.strip_suffix(".gz").unwrap_or(&name);
        let kind = if plain.ends_with(".cif") {
            chains += parse_mmcif(&name, &text, &MmcifOptions::default())?
                .chains
                .len();
            &mut by_kind.mmcif
        } else if plain.ends_with(".hhr") {
            parse_hhr(&name, &text)?;
            &mut by_kind.hhr
        } else {
            match AlignmentFormat::from_file_name(&name) {
                Some(AlignmentFormat::A3m) => {
                    parse_a3m(&name, &text)?;
                    &mut by_kind.a3m
                }
                Some(AlignmentFormat::Stockholm) => {
                    parse_stockholm(&name, &text)?;
                    &mut by_kind.stockholm
                }
                None => continue,
            }
        };
        *kind += file_started.elapsed().as_secs_f64();
    }
    Ok((chains, bytes, started.elapsed().as_secs_f64(), by_kind))
}

/// CPU seconds (user + system) this process has used so far, from `/proc/self/stat`
/// (clock ticks of 10 ms); `None` where that file is not available.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces):
    // state is field 3, utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i - 3)?.parse::<f64>().ok();
    Some((ticks(14)? + ticks(15)?) / 100.0)
}

/// One end-to-end run.
struct EndToEnd {
    chains: usize,
    seconds: f64,
    /// CPU seconds of the process during the run.
    cpu: Option<f64>,
    /// Structure files parsed (own or template use) and structures served by the cache.
    structures_parsed: usize,
    structures_from_cache: usize,
    /// The job's report (CPU time by stage).
    report: scalefold_ingest::job::IngestReport,
}

/// Runs the job once over the corpus.
fn end_to_end(
    corpus: &Path,
    out: &str,
    threads: usize,
    zstd_level: i32,
) -> anyhow::Result<EndToEnd> {
    let config = IngestConfig {
        structures: corpus.join("mmcif").display().to_string(),
        alignments: corpus.join("alignments").display().to_string(),
        clusters: Some(corpus.join("clusters.txt").display().to_string()),
        out: out.to_string(),
        threads,
        zstd_level,
        ..IngestConfig::default()
    };
    let started = Instant::now();
    let cpu_before = process_cpu_seconds();
    let report = super::dataset::runtime()?.block_on(ingest(&config, &|_| {}))?;
    let cpu = process_cpu_seconds()
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    anyhow::ensure!(
        report.failed() == 0,
        "the benchmark corpus failed to ingest:\n{}",
        report.summary()
    );
    Ok(EndToEnd {
        chains: report.chains_written,
        seconds: started.elapsed().as_secs_f64(),
        cpu,
        structures_parsed: report.structures_parsed,
        structures_from_cache: report.structures_from_cache,
        report,
    })
}

/// Runs `scalefold bench ingest`.
pub fn run(args: BenchIngestArgs) -> anyhow::Result<()> {
    let scratch = ScratchDir::new()?;
    let corpus = args
        .corpus
        .clone()
        .unwrap_or_else(|| scratch.path.join("corpus"));
    let synth = SynthConfig {
        chains: args.chains,
        max_msa_depth: args.max_msa_depth,
        ..SynthConfig::default()
    };
    let existing: Option<CorpusSummary> = std::fs::read(corpus.join("synth.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let summary = match existing {
        Some(s) if s.config == synth => s,
        _ => {
            let started = Instant::now();
            let s = write_corpus(&corpus, &synth)?;
            if !args.json {
                println!(
                    "synth: {} chains, {} files, {:.1} MB in {:.1} s",
                    s.chains,
                    s.files,
                    s.bytes as f64 / 1e6,
                    started.elapsed().as_secs_f64()
                );
            }
            s
        }
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut thread_counts = args.threads.clone();
    if thread_counts.is_empty() {
        let mut t = 1;
        while t < cores {
            thread_counts.push(t);
            t *= 2;
        }
        thread_counts.push(cores);
    }
    // Warm the page cache, then the single-thread parse figure of the same files.
    single_thread_parse(&corpus)?;
    let (parsed_chains, bytes, parse_seconds, parse_by_kind) = single_thread_parse(&corpus)?;
    let parse_rate = parsed_chains as f64 / parse_seconds;
    let mb = bytes as f64 / 1e6;
    let mut runs = Vec::new();
    let mut one_thread_rate = None;
    for &threads in &thread_counts {
        let out = scratch.path.join(format!("ds-{threads}"));
        let run = end_to_end(
            &corpus,
            &out.display().to_string(),
            threads,
            args.zstd_level,
        )?;
        let (chains, seconds, cpu) = (run.chains, run.seconds, run.cpu);
        let cpu_ms_per_chain = cpu.map(|c| 1000.0 * c / chains.max(1) as f64);
        let rate = chains as f64 / seconds;
        if threads == 1 {
            one_thread_rate = Some(rate);
        }
        let scaling = one_thread_rate.map(|one| rate / (one * threads as f64));
        runs.push(serde_json::json!({
            "scaling_vs_one_thread": scaling,
            "threads": threads,
            "chains": chains,
            "seconds": seconds,
            "chains_per_s": chains as f64 / seconds,
            "mb_per_s": mb / seconds,
            "efficiency_vs_parse": (chains as f64 / seconds) / (parse_rate * threads as f64),
            "cpu_seconds": cpu,
            "cpu_ms_per_chain": cpu_ms_per_chain,
            "structures_parsed": run.structures_parsed,
            "structures_from_cache": run.structures_from_cache,
            "cpu_s_by_stage": run.report.cpu_seconds,
        }));
        if !args.json {
            println!(
                "end to end, {threads:>3} threads: {:.1} chains/s, {:.1} MB/s ({:.2} s, {} CPU ms per chain, {} of {} structure files parsed, {} from cache) = {:.0} % of {threads} × single-thread parse, {} of {threads} × the 1-thread run",
                chains as f64 / seconds,
                mb / seconds,
                seconds,
                cpu_ms_per_chain.map_or("-".to_string(), |c| format!("{c:.2}")),
                run.structures_parsed,
                summary.entries,
                run.structures_from_cache,
                100.0 * (chains as f64 / seconds) / (parse_rate * threads as f64),
                scaling.map_or("-".to_string(), |s| format!("{:.0} %", 100.0 * s))
            );
            let c = &run.report.cpu_seconds;
            let staged = c.total();
            println!(
                "    CPU ms per chain by stage: {}, rest (runtime, channels, set-up, frees) {}",
                run.report.cpu_by_stage(chains.max(1) as f64 / 1000.0),
                cpu.map_or("-".to_string(), |c| format!(
                    "{:.3}",
                    1000.0 * (c - staged) / chains.max(1) as f64
                ))
            );
        }
    }
    let remote = match &args.remote_out {
        Some(url) => {
            let run = end_to_end(&corpus, url, cores, args.zstd_level)?;
            let (chains, seconds) = (run.chains, run.seconds);
            if !args.json {
                println!(
                    "end to end to {url}, {cores} threads: {:.1} chains/s, {:.1} MB/s",
                    chains as f64 / seconds,
                    mb / seconds
                );
            }
            Some(
                serde_json::json!({"url": url, "threads": cores, "seconds": seconds,
                "chains_per_s": chains as f64 / seconds, "mb_per_s": mb / seconds}),
            )
        }
        None => None,
    };
    let result = serde_json::json!({
        "bench": "ingest",
        "cores": cores,
        "zstd_level": args.zstd_level,
        "corpus": {"chains": summary.chains, "entries": summary.entries, "files": summary.files, "megabytes": mb},
        "single_thread_parse": {"seconds": parse_seconds, "chains_per_s": parse_rate, "mb_per_s": mb / parse_seconds, "seconds_by_kind": parse_by_kind},
        "end_to_end": runs,
        "remote": remote,
    });
    if args.json {
        println!("{result}");
    } else {
        println!(
            "single-thread parse of the same files (mmCIF, a3m, Stockholm, hhr): {:.1} chains/s, {:.1} MB/s, {:.2} ms per chain",
            parse_rate,
            mb / parse_seconds,
            1000.0 / parse_rate
        );
        let per_chain = |s: f64| 1000.0 * s / parsed_chains.max(1) as f64;
        println!(
            "    parse ms per chain by file kind: mmCIF {:.3}, a3m {:.3}, Stockholm {:.3}, hhr {:.3}",
            per_chain(parse_by_kind.mmcif),
            per_chain(parse_by_kind.a3m),
            per_chain(parse_by_kind.stockholm),
            per_chain(parse_by_kind.hhr)
        );
    }
    Ok(())
}
