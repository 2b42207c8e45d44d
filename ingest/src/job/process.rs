//! The CPU stage: parse one fetched structure file and its chains' alignments, apply the
//! filters, build the rows. Everything that goes wrong with an input becomes a report line.

use std::borrow::Cow;
use std::cell::OnceCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use scalefold_featurize::inputs::{ChainStructure, Structure, StructureHeader, TemplateHit};
use scalefold_featurize::templates::{TemplateFeatures, TemplateSearchConfig, template_features};
use scalefold_featurize::{ChainRecord, FlatMsa};

use super::IngestError;
use super::cache::{CompactStructure, TemplateCache};
use super::cpu::{Lap, Stage, StageCpu, timed_nested};
use super::fetch::{Fetched, FileBytes, TemplateFile, TemplateInput};
use super::report::{LineKind, ReportLine};
use crate::input::decompress_if_gzip_borrowed;
use crate::mmcif::{MmcifOptions, parse_mmcif};
use crate::msa::{Alignment, AlignmentFormat, merge_alignments_flat, parse_a3m, parse_stockholm};
use crate::pdb::parse_pdb;
use crate::schema::{ChainRow, rows_to_batch};
use arrow::array::RecordBatch;

/// Input filters; `None` disables a filter. Entry filters drop every chain of an entry.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filters {
    /// Entry: drop entries whose resolution is worse (larger) than this many Å. Entries
    /// without a resolution (0.0, e.g. NMR) pass.
    pub max_resolution: Option<f32>,
    /// Entry: drop entries released before this date (`YYYY-MM-DD`); with a date window,
    /// entries without a release date are dropped.
    pub min_date: Option<String>,
    /// Entry: drop entries released after this date (`YYYY-MM-DD`).
    pub max_date: Option<String>,
    /// Chain: drop chains with fewer residues.
    pub min_length: Option<usize>,
    /// Chain: drop chains in which one residue type makes up more than this fraction.
    pub max_single_residue_fraction: Option<f32>,
    /// Chain: drop chains with more than this fraction of unknown residues (`X`).
    pub max_unknown_fraction: Option<f32>,
}

fn is_date(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

impl Filters {
    /// Checks the ranges and date formats.
    pub fn check(&self) -> Result<(), IngestError> {
        for (flag, date) in [
            ("--min-date", &self.min_date),
            ("--max-date", &self.max_date),
        ] {
            if let Some(d) = date
                && !is_date(d)
            {
                return Err(IngestError::InvalidArgument(format!(
                    "{flag}: expected a date YYYY-MM-DD, found {d:?}"
                )));
            }
        }
        for (flag, fraction) in [
            (
                "--max-single-residue-fraction",
                self.max_single_residue_fraction,
            ),
            ("--max-unknown-fraction", self.max_unknown_fraction),
        ] {
            if let Some(f) = fraction
                && !(0.0..=1.0).contains(&f)
            {
                return Err(IngestError::InvalidArgument(format!(
                    "{flag}: expected a fraction in 0..=1, found {f}"
                )));
            }
        }
        if let Some(r) = self.max_resolution
            && (r.is_nan() || r <= 0.0)
        {
            return Err(IngestError::InvalidArgument(format!(
                "--max-resolution: expected a positive number of Å, found {r}"
            )));
        }
        Ok(())
    }

    /// Why an entry is filtered out, if it is: (filter name, reason).
    fn entry(&self, header: &StructureHeader) -> Option<(&'static str, String)> {
        if let Some(max) = self.max_resolution
            && header.resolution > max
        {
            return Some((
                "max_resolution",
                format!(
                    "resolution {} Å is above the cutoff {max} Å",
                    header.resolution
                ),
            ));
        }
        if self.min_date.is_some() || self.max_date.is_some() {
            let Some(date) = &header.release_date else {
                return Some((
                    "date",
                    "no release date, and a date window is set".to_string(),
                ));
            };
            if let Some(min) = &self.min_date
                && date < min
            {
                return Some(("date", format!("released {date}, before {min}")));
            }
            if let Some(max) = &self.max_date
                && date > max
            {
                return Some(("date", format!("released {date}, after {max}")));
            }
        }
        None
    }

    /// Why a chain is filtered out, if it is: (filter name, reason).
    fn chain(&self, chain: &ChainStructure) -> Option<(&'static str, String)> {
        let n = chain.sequence.len();
        if let Some(min) = self.min_length
            && n < min
        {
            return Some(("min_length", format!("{n} residues, fewer than {min}")));
        }
        if n == 0 {
            return Some(("min_length", "no residues".to_string()));
        }
        let mut counts = [0usize; 256];
        chain.sequence.bytes().for_each(|c| counts[c as usize] += 1);
        if let Some(max) = self.max_single_residue_fraction {
            let (residue, count) = counts
                .iter()
                .enumerate()
                .max_by_key(|&(_, c)| *c)
                .expect("256 counts");
            let fraction = *count as f32 / n as f32;
            if fraction > max {
                return Some((
                    "max_single_residue_fraction",
                    format!(
                        "{:.0} % of residues are {}, above {:.0} %",
                        fraction * 100.0,
                        residue as u8 as char,
                        max * 100.0
                    ),
                ));
            }
        }
        if let Some(max) = self.max_unknown_fraction {
            let fraction = counts[b'X' as usize] as f32 / n as f32;
            if fraction > max {
                return Some((
                    "max_unknown_fraction",
                    format!(
                        "{:.0} % unknown residues, above {:.0} %",
                        fraction * 100.0,
                        max * 100.0
                    ),
                ));
            }
        }
        if chain.atom_mask.iter().all(|m| m.iter().all(|&a| a == 0.0)) {
            return Some(("no_coordinates", "no resolved atom".to_string()));
        }
        None
    }
}

/// A template candidate of one source, loaded on first use: a candidate that no chain's
/// template selection asks for is never parsed, and of a cached candidate only the chains
/// that hits ask for are expanded.
struct TemplateSlot<'f> {
    file: &'f TemplateFile,
    loaded: OnceCell<Option<LoadedTemplate>>,
}

/// A template candidate's structure once looked up.
enum LoadedTemplate {
    /// Parsed for this source: every chain.
    Parsed(Structure),
    /// From the cache of parsed files: each chain expanded alone when first asked for.
    Cached {
        compact: Arc<CompactStructure>,
        /// One cell per chain of the entry, in `compact.chain_ids()` order.
        chains: Vec<OnceCell<Structure>>,
        /// The entry without chains, for a hit naming a chain the entry lacks.
        no_chain: OnceCell<Structure>,
    },
}

impl TemplateSlot<'_> {
    /// The candidate's structure holding chain `chain_id` (when the entry has it; other
    /// chains may be left out). It comes from the fetch-time cache hit, else from the
    /// cache (another thread may have parsed the file since it was fetched), else it is
    /// parsed now and cached. `None` when the file could not be read or parsed.
    fn structure(&self, ctx: &Context, chain_id: &str) -> Option<&Structure> {
        match self.loaded.get_or_init(|| self.load(ctx)).as_ref()? {
            LoadedTemplate::Parsed(structure) => Some(structure),
            LoadedTemplate::Cached {
                compact,
                chains,
                no_chain,
            } => {
                let cell = compact
                    .chain_ids()
                    .position(|id| id == chain_id)
                    .map_or(no_chain, |i| &chains[i]);
                Some(cell.get_or_init(|| compact.expand_chain(chain_id)))
            }
        }
    }

    fn load(&self, ctx: &Context) -> Option<LoadedTemplate> {
        let cached = match &self.file.input {
            TemplateInput::Cached(s) => Some(s.clone()),
            TemplateInput::Raw(_) => ctx.templates.get(&self.file.cache_key),
        };
        if let Some(cached) = cached {
            Context::count(&ctx.structures_from_cache);
            return cached.map(|compact| LoadedTemplate::Cached {
                chains: compact.chain_ids().map(|_| OnceCell::new()).collect(),
                compact,
                no_chain: OnceCell::new(),
            });
        }
        let TemplateInput::Raw(bytes) = &self.file.input else {
            return None;
        };
        let parsed = match bytes {
            Ok(b) => ctx
                .parse_and_cache(&self.file.cache_key, &self.file.name, b)
                .ok(),
            Err(_) => {
                ctx.templates.insert(&self.file.cache_key, None);
                None
            }
        };
        parsed.map(LoadedTemplate::Parsed)
    }
}

/// Settings and shared state of the CPU stage.
#[derive(Debug)]
pub struct Context {
    /// Input filters.
    pub filters: Filters,
    /// Most templates per chain.
    pub max_templates: usize,
    /// Cluster (id, size) per chain id.
    pub clusters: HashMap<String, (i64, u32)>,
    /// Parsed structure files (own and template use).
    pub templates: TemplateCache,
    /// Structure files parsed (for a source or as a template) in this run.
    pub structures_parsed: AtomicUsize,
    /// Structures taken from the cache instead of parsed (for a source or as a template).
    pub structures_from_cache: AtomicUsize,
    /// CPU time per stage, summed over threads.
    pub cpu: StageCpu,
}

impl Context {
    fn count(counter: &AtomicUsize) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Parses a structure file (a source's own or a template candidate), counts it,
    /// charges its CPU to the structures stage and caches the result, a failure as
    /// unparsable so that template lookups do not parse it again.
    fn parse_and_cache(&self, key: &str, name: &str, raw: &[u8]) -> Result<Structure, String> {
        Context::count(&self.structures_parsed);
        let parsed = timed_nested(&self.cpu, Stage::Structures, || parse_structure(name, raw));
        self.templates.insert(key, parsed.as_ref().ok());
        parsed
    }
}

/// The result of one source.
#[derive(Debug)]
pub struct Processed {
    /// The source key.
    pub source_key: String,
    /// The rows to write as one record batch (none when every chain failed or was filtered).
    pub batch: Option<RecordBatch>,
    /// Number of rows in `batch`.
    pub chains: usize,
    /// Failed and filtered inputs.
    pub lines: Vec<ReportLine>,
    /// Bytes fetched for the source.
    pub bytes_read: u64,
}

fn line(
    kind: LineKind,
    source: &str,
    input: &str,
    stage: &str,
    reason: impl Into<String>,
) -> ReportLine {
    ReportLine {
        kind,
        source: source.to_string(),
        input: input.to_string(),
        stage: stage.to_string(),
        reason: reason.into(),
    }
}

fn is_pdb_format(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let base = lower.strip_suffix(".gz").unwrap_or(&lower);
    base.ends_with(".pdb") || base.ends_with(".ent")
}

/// Parses a structure file (either format, gzip or not).
fn parse_structure(name: &str, raw: &[u8]) -> Result<Structure, String> {
    let bytes = decompress_if_gzip_borrowed(name, raw).map_err(|e| e.to_string())?;
    if is_pdb_format(name) {
        parse_pdb(name, &bytes)
            .map(|e| e.structure)
            .map_err(|e| e.to_string())
    } else {
        parse_mmcif(name, &bytes, &MmcifOptions::default()).map_err(|e| e.to_string())
    }
}

/// Adds files to a source checksum: each readable file's length (u64, little-endian),
/// then its bytes.
fn hash_files<'a>(h: &mut xxhash_rust::xxh3::Xxh3, parts: impl IntoIterator<Item = &'a FileBytes>) {
    for bytes in parts.into_iter().filter_map(|p| p.as_ref().ok()) {
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
}

/// [`process`], with a panic (a bug in a parser or in featurization, never expected on
/// any input) turned into a failed-input line, so one bad file cannot stop the job.
pub fn process_guarded(ctx: &Context, fetched: Fetched) -> Processed {
    let source_key = fetched.source.key.clone();
    let name = fetched.name.clone();
    let bytes_read = fetched.bytes_read();
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| process(ctx, fetched))).unwrap_or_else(
        |panic| {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".to_string());
            Processed {
                lines: vec![line(
                    LineKind::Failed,
                    &source_key,
                    &name,
                    "internal",
                    format!(
                        "processing panicked (a bug; please report it with this file): {message}"
                    ),
                )],
                source_key,
                batch: None,
                chains: 0,
                bytes_read,
            }
        },
    )
}

/// Processes one fetched source: its rows already converted to a record batch, so the
/// (serial) writer stage only encodes.
pub fn process(ctx: &Context, fetched: Fetched) -> Processed {
    let mut lap = Lap::start();
    let (rows, mut lines) = source_rows(ctx, &fetched, &mut lap);
    let mut batch = None;
    if !rows.is_empty() {
        match rows_to_batch(&rows) {
            Ok(b) => batch = Some(b),
            Err(e) => lines.push(line(
                LineKind::Failed,
                &fetched.source.key,
                &fetched.name,
                "featurize",
                e.to_string(),
            )),
        }
    }
    lap.mark(&ctx.cpu, Stage::Batches);
    Processed {
        source_key: fetched.source.key.clone(),
        chains: batch.as_ref().map_or(0, RecordBatch::num_rows),
        batch,
        lines,
        bytes_read: fetched.bytes_read(),
    }
}

struct SourceRows {
    rows: Vec<ChainRow>,
    lines: Vec<ReportLine>,
}

/// The rows and report lines of one fetched source; `lap` charges each chain's stages.
fn source_rows(
    ctx: &Context,
    fetched: &Fetched,
    lap: &mut Lap,
) -> (Vec<ChainRow>, Vec<ReportLine>) {
    let mut out = SourceRows {
        rows: Vec::new(),
        lines: Vec::new(),
    };
    let name = fetched.name.as_str();
    let source = fetched.source.key.as_str();
    let raw = match &fetched.structure {
        Ok(raw) => raw,
        Err(e) => {
            out.lines
                .push(line(LineKind::Failed, source, name, "read", e.clone()));
            return (out.rows, out.lines);
        }
    };
    // The file's own structure: parsed earlier as some source's template, or now.
    let cache_key = fetched.source.path.to_string();
    let structure: Structure = match ctx.templates.get(&cache_key) {
        Some(Some(cached)) => {
            Context::count(&ctx.structures_from_cache);
            cached.expand()
        }
        // Not cached, or cached as unparsable: parsed (again) for the report's reason.
        _ => match ctx.parse_and_cache(&cache_key, name, raw) {
            Ok(s) => s,
            Err(e) => {
                out.lines
                    .push(line(LineKind::Failed, source, name, "parse", e));
                return (out.rows, out.lines);
            }
        },
    };
    if let Some((filter, reason)) = ctx.filters.entry(&structure.header) {
        out.lines
            .push(line(LineKind::Filtered, source, name, filter, reason));
        return (out.rows, out.lines);
    }
    if structure.chains.is_empty() {
        out.lines.push(line(
            LineKind::Filtered,
            source,
            name,
            "no_protein",
            "no protein chain",
        ));
        return (out.rows, out.lines);
    }
    // Template structures, parsed (or taken from the cache) when first looked up.
    let inputs = SourceInputs {
        fetched,
        structure: &structure,
        templates: fetched
            .templates
            .iter()
            .map(|file| {
                let slot = TemplateSlot {
                    file,
                    loaded: OnceCell::new(),
                };
                (file.entry_id.as_str(), slot)
            })
            .collect(),
    };
    // Merged MSAs of the folders that several chains share (duplicate chains), by folder.
    let mut shared = SourceShared::new(fetched);
    lap.mark(&ctx.cpu, Stage::Records);
    for chain in &structure.chains {
        let key = format!("{}_{}", structure.id, chain.chain_id);
        if let Some((filter, reason)) = ctx.filters.chain(chain) {
            out.lines
                .push(line(LineKind::Filtered, source, &key, filter, reason));
            continue;
        }
        match chain_row(ctx, &inputs, &mut shared, chain, &key, lap) {
            Ok(row) => out.rows.push(row),
            Err((stage, reason)) => {
                out.lines
                    .push(line(LineKind::Failed, source, &key, stage, reason))
            }
        }
    }
    (out.rows, out.lines)
}

/// What the chains of one source share: the merged MSAs of alignment folders that several
/// of them use (duplicate chains sharing their representative's folder: parsed and merged
/// for the first chain, copied for the others with the same sequence), and the source
/// checksum's state after the structure file (hashed once, not once per chain).
struct SourceShared {
    /// The source checksum after the structure file.
    structure_hash: xxhash_rust::xxh3::Xxh3,
    /// Folders used by more than one chain of the source.
    shared_dirs: Vec<String>,
    /// (folder, the chain sequence it was checked against, merged MSA).
    merged: Vec<(String, String, FlatMsa)>,
}

impl SourceShared {
    fn new(fetched: &Fetched) -> Self {
        let mut seen: Vec<&str> = Vec::new();
        let mut shared_dirs = Vec::new();
        for files in fetched.chains.values() {
            if seen.contains(&files.dir.as_str()) {
                if !shared_dirs.contains(&files.dir) {
                    shared_dirs.push(files.dir.clone());
                }
            } else {
                seen.push(&files.dir);
            }
        }
        let mut structure_hash = xxhash_rust::xxh3::Xxh3::new();
        hash_files(&mut structure_hash, [&fetched.structure]);
        SourceShared {
            structure_hash,
            shared_dirs,
            merged: Vec::new(),
        }
    }

    /// A copy of the MSA merged from `dir` for a chain of the same sequence, if any.
    fn get(&self, dir: &str, sequence: &str) -> Option<FlatMsa> {
        self.merged
            .iter()
            .find(|(d, s, _)| d == dir && s == sequence)
            .map(|(_, _, msa)| msa.clone())
    }

    /// Keeps `msa` for the other chains when `dir` is shared.
    fn keep(&mut self, dir: &str, sequence: &str, msa: &FlatMsa) {
        if self.shared_dirs.iter().any(|d| d == dir) {
            self.merged
                .push((dir.to_string(), sequence.to_string(), msa.clone()));
        }
    }
}

/// Parses one alignment file and checks it belongs to the chain.
fn read_alignment(name: &str, bytes: &FileBytes, sequence: &str) -> Result<Alignment, String> {
    let raw = bytes.as_ref().map_err(|e| format!("{name}: {e}"))?;
    let text = decompress_if_gzip_borrowed(name, raw).map_err(|e| e.to_string())?;
    let alignment = match AlignmentFormat::from_file_name(name) {
        Some(AlignmentFormat::A3m) => parse_a3m(name, &text),
        _ => parse_stockholm(name, &text),
    }
    .map_err(|e| e.to_string())?;
    let query = alignment.query();
    if query.len() != sequence.len() {
        return Err(format!(
            "{name}: the query has {} columns, the chain {} residues: the alignment belongs to another query",
            query.len(),
            sequence.len()
        ));
    }
    if let Some((column, (&q, s))) = query
        .iter()
        .zip(sequence.bytes())
        .enumerate()
        .find(|&(_, (&q, s))| q != s && q != b'X' && s != b'X')
    {
        return Err(format!(
            "{name}: the query differs from the chain's sequence at column {column} ({} vs {}): the alignment belongs to another query",
            q as char, s as char
        ));
    }
    Ok(alignment)
}

/// What every chain of one source is built from.
struct SourceInputs<'a> {
    /// The fetched files.
    fetched: &'a Fetched,
    /// The parsed structure file.
    structure: &'a Structure,
    /// Template candidates by entry id, parsed when first looked up.
    templates: HashMap<&'a str, TemplateSlot<'a>>,
}

fn chain_row(
    ctx: &Context,
    inputs: &SourceInputs,
    shared: &mut SourceShared,
    chain: &ChainStructure,
    key: &str,
    lap: &mut Lap,
) -> Result<ChainRow, (&'static str, String)> {
    let SourceInputs {
        fetched,
        structure,
        templates,
    } = inputs;
    let Some(files) = fetched.chains.get(key) else {
        return Err((
            "alignment",
            format!("no alignment folder {key}/ under the alignments root"),
        ));
    };
    if files.alignments.is_empty() {
        return Err((
            "alignment",
            format!("{}: no a3m or Stockholm file", files.dir),
        ));
    }
    let msa = match shared.get(&files.dir, &chain.sequence) {
        Some(msa) => msa,
        None => {
            let alignments: Vec<(&str, Alignment)> = files
                .alignments
                .iter()
                .map(|(name, bytes)| {
                    Ok((name.as_str(), read_alignment(name, bytes, &chain.sequence)?))
                })
                .collect::<Result<_, String>>()
                .map_err(|e| ("alignment", e))?;
            let refs: Vec<(&str, &Alignment)> = alignments.iter().map(|(n, a)| (*n, a)).collect();
            let msa = merge_alignments_flat(&refs).map_err(|e| ("alignment", e.to_string()))?;
            shared.keep(&files.dir, &chain.sequence, &msa);
            msa
        }
    };
    lap.mark(&ctx.cpu, Stage::Alignments);
    // The hhr files were parsed by the fetch stage; one file's hits are used in place.
    let hits: Cow<[TemplateHit]> = match files.hhr_hits.as_slice() {
        [one] => Cow::Borrowed(one.as_deref().map_err(|e| ("templates", e.clone()))?),
        all => {
            let mut hits = Vec::new();
            for file in all {
                hits.extend_from_slice(file.as_deref().map_err(|e| ("templates", e.clone()))?);
            }
            Cow::Owned(hits)
        }
    };
    let features = if hits.is_empty() || ctx.max_templates == 0 {
        TemplateFeatures::default()
    } else {
        let config = TemplateSearchConfig {
            max_hits: ctx.max_templates,
            release_date_cutoff: structure.header.release_date.clone(),
            ..TemplateSearchConfig::default()
        };
        let lookup = |id: &str, chain_id: &str| -> Option<&Structure> {
            if id == structure.id {
                return Some(structure);
            }
            templates
                .get(id)
                .and_then(|slot| slot.structure(ctx, chain_id))
        };
        template_features(&chain.sequence, &hits, lookup, &config).features
    };
    lap.mark(&ctx.cpu, Stage::Templates);
    let record = ChainRecord::from_flat_msa(
        &structure.id,
        &structure.header,
        chain,
        msa,
        features,
        false,
    )
    .map_err(|e| ("featurize", e.to_string()))?;
    let (cluster_id, cluster_size) = ctx.clusters.get(key).copied().unwrap_or((-1, 1));
    // The structure file, hashed once per source, then this chain's alignment and hhr files.
    let mut checksum = shared.structure_hash.clone();
    hash_files(
        &mut checksum,
        files.alignments.iter().chain(&files.hhr).map(|(_, b)| b),
    );
    let row = ChainRow {
        source_key: fetched.source.key.clone(),
        record,
        cluster_id,
        cluster_size,
        source_checksum: checksum.digest(),
    };
    lap.mark(&ctx.cpu, Stage::Records);
    Ok(row)
}
