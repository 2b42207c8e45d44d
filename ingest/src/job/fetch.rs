//! Discovery and async fetching of the job's inputs from any object store.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use scalefold_featurize::inputs::TemplateHit;
use scalefold_storage::Location;
use tokio::sync::mpsc;

use super::IngestError;
use super::cache::CompactStructure;
use super::process::Context;
use crate::hhr::parse_hhr;
use crate::input::{decompress_if_gzip, decompress_if_gzip_borrowed};
use crate::mmcif::entry_id_from_file_name;
use crate::msa::AlignmentFormat;

/// One structure file: the unit of work, of resume and of the worker split.
#[derive(Debug, Clone)]
pub struct Source {
    /// Path relative to the structures root (the source key of its rows).
    pub key: String,
    /// Full object path.
    pub path: Path,
    /// Entry id from the file name (lowercase).
    pub entry_id: String,
}

/// A file's bytes as fetched, or why it could not be read (a per-input failure).
pub type FileBytes = Result<Bytes, String>;

/// One alignment folder's files, in merge order (name, bytes).
#[derive(Debug, Clone)]
pub struct ChainFiles {
    /// `<entry>_<chain>`.
    pub key: String,
    /// The folder, for messages.
    pub dir: String,
    /// Alignment files (a3m, Stockholm), in merge order.
    pub alignments: Vec<(String, FileBytes)>,
    /// hhr files.
    pub hhr: Vec<(String, FileBytes)>,
    /// The hits of each hhr file (same order as `hhr`), parsed once at fetch time (the
    /// fetch stage needs them to choose the template structures to fetch), or why the
    /// file could not be read, decompressed or parsed.
    pub hhr_hits: Vec<Result<Vec<TemplateHit>, String>>,
}

impl ChainFiles {
    /// Parses every hhr file of the folder into [`ChainFiles::hhr_hits`].
    fn parse_hits(&mut self) {
        self.hhr_hits = self
            .hhr
            .iter()
            .map(|(name, bytes)| {
                let raw = bytes.as_ref().map_err(|e| format!("{name}: {e}"))?;
                let text = decompress_if_gzip_borrowed(name, raw).map_err(|e| e.to_string())?;
                parse_hhr(name, &text).map_err(|e| e.to_string())
            })
            .collect();
    }
}

/// Everything one structure file needs, fetched.
#[derive(Debug)]
pub struct Fetched {
    /// The source.
    pub source: Source,
    /// Display name of the structure file.
    pub name: String,
    /// Raw (possibly gzip) bytes of the structure file.
    pub structure: FileBytes,
    /// The alignment folders of this entry's chains that exist, by chain key.
    pub chains: HashMap<String, ChainFiles>,
    /// Template entries' structures, best hits first.
    pub templates: Vec<TemplateFile>,
}

/// The structure file of one template candidate.
#[derive(Debug)]
pub struct TemplateFile {
    /// Entry id (lowercase), as hhr hits name it.
    pub entry_id: String,
    /// Display name of the file.
    pub name: String,
    /// Key of the file in the shared structure cache (its object path).
    pub cache_key: String,
    /// Its parsed structure or its bytes.
    pub input: TemplateInput,
}

/// A template structure: already parsed (from the cache) or fetched to be parsed.
#[derive(Debug)]
pub enum TemplateInput {
    /// Parsed earlier (`None`: it did not parse).
    Cached(Option<Arc<CompactStructure>>),
    /// The raw file.
    Raw(FileBytes),
}

impl Fetched {
    /// Bytes fetched for this source (structure, alignments, templates; a folder that
    /// several chains share counts once).
    pub fn bytes_read(&self) -> u64 {
        let len = |b: &FileBytes| b.as_ref().map_or(0, |b| b.len() as u64);
        let mut folders = std::collections::HashSet::new();
        len(&self.structure)
            + self
                .chains
                .values()
                .filter(|c| folders.insert(c.dir.as_str()))
                .flat_map(|c| c.alignments.iter().chain(&c.hhr))
                .map(|(_, b)| len(b))
                .sum::<u64>()
            + self
                .templates
                .iter()
                .map(|t| match &t.input {
                    TemplateInput::Raw(b) => len(b),
                    TemplateInput::Cached(_) => 0,
                })
                .sum::<u64>()
    }
}

fn store_error(url: &str, source: object_store::Error) -> IngestError {
    IngestError::Store {
        url: url.to_string(),
        source,
    }
}

/// The part of `path` below `prefix`.
fn relative(prefix: &Path, path: &Path) -> String {
    let p = path.as_ref();
    let pre = prefix.as_ref();
    if pre.is_empty() {
        return p.to_string();
    }
    p.strip_prefix(pre)
        .map(|r| r.trim_start_matches('/').to_string())
        .unwrap_or_else(|| p.to_string())
}

/// Whether a file name is a structure file the job reads.
pub fn is_structure_file(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let base = lower.strip_suffix(".gz").unwrap_or(&lower);
    [".cif", ".mmcif", ".pdb", ".ent"]
        .iter()
        .any(|s| base.ends_with(s))
}

/// Lists the structure files under the structures root, sorted by key.
pub async fn list_structures(root: &Location) -> Result<Vec<Source>, IngestError> {
    let metas: Vec<_> = root
        .store
        .list(Some(&root.prefix))
        .try_collect()
        .await
        .map_err(|e| store_error(&root.url, e))?;
    let mut sources: Vec<Source> = metas
        .into_iter()
        .filter(|m| is_structure_file(m.location.as_ref()))
        .map(|m| {
            let key = relative(&root.prefix, &m.location);
            Source {
                entry_id: entry_id_from_file_name(&key),
                key,
                path: m.location,
            }
        })
        .collect();
    if sources.is_empty() {
        return Err(IngestError::InvalidArgument(format!(
            "{}: no structure files (.cif, .cif.gz, .pdb, .ent) found",
            root.url
        )));
    }
    sources.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(sources)
}

/// The per-chain alignment folders (`<entry>_<chain>`) directly under the alignments
/// root, grouped by entry id (the part before the first `_`, lowercase), each group sorted.
pub async fn list_chain_dirs(root: &Location) -> Result<ChainDirs, IngestError> {
    let listing = root
        .store
        .list_with_delimiter(Some(&root.prefix))
        .await
        .map_err(|e| store_error(&root.url, e))?;
    let mut dirs: ChainDirs = HashMap::new();
    for prefix in &listing.common_prefixes {
        let name = relative(&root.prefix, prefix);
        if let Some(entry) = entry_of(&name) {
            dirs.entry(entry).or_default().push((name.clone(), name));
        }
    }
    if dirs.is_empty() {
        return Err(IngestError::InvalidArgument(format!(
            "{}: no per-chain alignment folders (<entry>_<chain>/) found",
            root.url
        )));
    }
    dirs.values_mut().for_each(|v| v.sort());
    Ok(dirs)
}

fn entry_of(chain_key: &str) -> Option<String> {
    chain_key
        .split_once('_')
        .map(|(entry, _)| entry.to_ascii_lowercase())
}

/// Chain alignment folders by entry id: (chain key, folder holding its alignments; with an
/// alignment index, the index key holding them).
pub type ChainDirs = HashMap<String, Vec<(String, String)>>;

/// One chain of an alignment index: the database file and its files' (name, byte offset,
/// byte length) in it.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct IndexEntry {
    /// Database file, relative to the alignments root.
    pub db: String,
    /// (file name, start, length) of each alignment file inside `db`.
    pub files: Vec<(String, u64, u64)>,
}

/// The "alignment database" form: a JSON object mapping each chain key to its
/// [`IndexEntry`]; the alignment files are byte ranges of a few large files.
pub type AlignmentIndex = HashMap<String, IndexEntry>;

/// Reads an alignment index (local path or URL, gzip or not).
pub async fn read_alignment_index(url: &str) -> Result<AlignmentIndex, IngestError> {
    let bytes = read_bytes(url).await?;
    serde_json::from_slice(&bytes).map_err(|e| {
        IngestError::InvalidArgument(format!(
            "{url}: expected an alignment index (a JSON object of chain -> {{\"db\": file, \"files\": [[name, start, length], ...]}}): {e}"
        ))
    })
}

/// The chains of an alignment index, grouped by entry id.
pub fn index_chain_dirs(index: &AlignmentIndex) -> ChainDirs {
    let mut dirs: ChainDirs = HashMap::new();
    for key in index.keys() {
        if let Some(entry) = entry_of(key) {
            dirs.entry(entry)
                .or_default()
                .push((key.clone(), key.clone()));
        }
    }
    dirs.values_mut().for_each(|v| v.sort());
    dirs
}

/// Lets chains without their own alignment folder use the folder of the first chain of
/// their duplicate group that has one (OpenProteinSet stores one copy per group).
pub fn add_duplicates(dirs: &mut ChainDirs, groups: &[Vec<String>]) {
    let have: std::collections::HashSet<String> = dirs
        .values()
        .flatten()
        .map(|(key, _)| key.clone())
        .collect();
    for group in groups {
        let Some(representative) = group.iter().find(|m| have.contains(*m)) else {
            continue;
        };
        for member in group.iter().filter(|m| !have.contains(*m)) {
            if let Some(entry) = entry_of(member) {
                dirs.entry(entry)
                    .or_default()
                    .push((member.clone(), representative.clone()));
            }
        }
    }
    dirs.values_mut().for_each(|v| v.sort());
}

/// Merge order of alignment files: UniRef90, then BFD/Uniclust, then MGnify, then any
/// other by name (the reference pipeline's order).
fn merge_rank(name: &str) -> (u8, String) {
    let base = name.rsplit('/').next().unwrap_or(name).to_ascii_lowercase();
    let rank = if base.starts_with("uniref90") {
        0
    } else if base.starts_with("bfd") || base.contains("uniclust") {
        1
    } else if base.starts_with("mgnify") {
        2
    } else {
        3
    };
    (rank, name.to_string())
}

async fn get(store: &Arc<dyn ObjectStore>, path: &Path) -> FileBytes {
    match store.get(path).await {
        Ok(result) => result
            .bytes()
            .await
            .map_err(|e| format!("cannot read: {e}")),
        Err(e) => Err(format!("cannot read: {e}")),
    }
}

/// One chain's files from an alignment index: byte ranges of its database file.
async fn fetch_indexed_chain(
    root: &Location,
    key: String,
    index_key: &str,
    entry: &IndexEntry,
) -> ChainFiles {
    let db = root.child(&entry.db);
    let base = format!(
        "{}/{}:{index_key}",
        root.url.trim_end_matches('/'),
        entry.db
    );
    let mut files: Vec<(String, u64, u64)> = entry.files.clone();
    files.sort_by_key(|(name, _, _)| merge_rank(name));
    let mut out = ChainFiles {
        dir: base.clone(),
        alignments: Vec::new(),
        hhr: Vec::new(),
        hhr_hits: Vec::new(),
        key,
    };
    for (name, start, length) in files {
        let plain = name.strip_suffix(".gz").unwrap_or(&name);
        let is_hhr = plain.ends_with(".hhr");
        if !is_hhr && AlignmentFormat::from_file_name(&name).is_none() {
            continue;
        }
        let bytes = match start.checked_add(length) {
            Some(end) => root
                .store
                .get_range(&db, start..end)
                .await
                .map_err(|e| format!("cannot read bytes {start}..{end} of {}: {e}", entry.db)),
            None => Err(format!(
                "index entry {name}: start {start} + length {length} overflows"
            )),
        };
        let display = format!("{base}/{name}");
        if is_hhr {
            out.hhr.push((display, bytes));
        } else {
            out.alignments.push((display, bytes));
        }
    }
    out
}

async fn fetch_chain(
    root: &Location,
    key: String,
    folder: &str,
    index: Option<&AlignmentIndex>,
) -> Result<ChainFiles, IngestError> {
    if let Some(index) = index {
        return match index.get(folder) {
            Some(entry) => Ok(fetch_indexed_chain(root, key, folder, entry).await),
            None => Ok(ChainFiles {
                dir: format!("{}:{folder}", root.url),
                alignments: Vec::new(),
                hhr: Vec::new(),
                hhr_hits: Vec::new(),
                key,
            }),
        };
    }
    let dir = root.child(folder);
    let metas: Vec<_> = root
        .store
        .list(Some(&dir))
        .try_collect()
        .await
        .map_err(|e| store_error(&root.url, e))?;
    let mut alignment_paths = Vec::new();
    let mut hhr_paths = Vec::new();
    for meta in metas {
        let name = relative(&root.prefix, &meta.location);
        let plain = name.strip_suffix(".gz").unwrap_or(&name);
        if plain.ends_with(".hhr") {
            hhr_paths.push((name, meta.location));
        } else if AlignmentFormat::from_file_name(&name).is_some() {
            alignment_paths.push((name, meta.location));
        }
    }
    alignment_paths.sort_by_key(|(name, _)| merge_rank(name));
    hhr_paths.sort_by(|a, b| a.0.cmp(&b.0));
    let read_all = |paths: Vec<(String, Path)>| {
        futures::future::join_all(paths.into_iter().map(|(name, path)| async move {
            let bytes = get(&root.store, &path).await;
            (name, bytes)
        }))
    };
    Ok(ChainFiles {
        dir: format!("{}/{folder}", root.url.trim_end_matches('/')),
        alignments: read_all(alignment_paths).await,
        hhr: read_all(hhr_paths).await,
        hhr_hits: Vec::new(),
        key,
    })
}

/// Template entry ids of the best hits (by `Sum_probs`) of the given chains' hhr files, at
/// most `limit` distinct ids, not counting `own_entry`.
fn template_candidates(chains: &[ChainFiles], own_entry: &str, limit: usize) -> Vec<String> {
    let mut hits: Vec<&TemplateHit> = chains
        .iter()
        .flat_map(|c| c.hhr_hits.iter().flatten().flatten())
        .collect();
    hits.sort_by(|a, b| b.sum_probs.total_cmp(&a.sum_probs));
    let mut out: Vec<String> = Vec::new();
    for hit in hits {
        let Some((id, _)) = hit
            .name
            .split_whitespace()
            .next()
            .and_then(|w| w.split_once('_'))
        else {
            continue;
        };
        let id = id.to_ascii_lowercase();
        if id != own_entry && !out.contains(&id) {
            out.push(id);
            if out.len() >= limit {
                break;
            }
        }
    }
    out
}

async fn fetch_one(
    source: Source,
    structures: &Location,
    alignments: &Location,
    chain_dirs: &ChainDirs,
    index: Option<&AlignmentIndex>,
    entry_paths: &HashMap<String, Path>,
    context: &Context,
) -> Result<Fetched, IngestError> {
    let structure = get(&structures.store, &source.path).await;
    let keys = chain_dirs
        .get(&source.entry_id)
        .map_or(&[][..], Vec::as_slice);
    // Chains sharing an alignment folder (duplicate chains) fetch and parse it once.
    let mut folders: Vec<&(String, String)> = Vec::new();
    for pair in keys {
        if !folders.iter().any(|(_, folder)| *folder == pair.1) {
            folders.push(pair);
        }
    }
    let mut fetched_folders = futures::future::try_join_all(
        folders
            .iter()
            .map(|(key, folder)| fetch_chain(alignments, key.clone(), folder, index)),
    )
    .await?;
    fetched_folders.iter_mut().for_each(ChainFiles::parse_hits);
    let chain_files: Vec<ChainFiles> = keys
        .iter()
        .filter_map(|(key, folder)| {
            let i = folders.iter().position(|(_, f)| f == folder)?;
            let files = &fetched_folders[i];
            Some(if files.key == *key {
                files.clone()
            } else {
                ChainFiles {
                    key: key.clone(),
                    ..files.clone()
                }
            })
        })
        .collect();
    let mut templates = Vec::new();
    for id in template_candidates(&chain_files, &source.entry_id, context.max_templates * 2) {
        let Some(path) = entry_paths.get(&id) else {
            continue;
        };
        let name = format!(
            "{}/{}",
            structures.url.trim_end_matches('/'),
            relative(&structures.prefix, path)
        );
        let cache_key = path.to_string();
        let input = match context.templates.get(&cache_key) {
            Some(parsed) => TemplateInput::Cached(parsed),
            None => TemplateInput::Raw(get(&structures.store, path).await),
        };
        templates.push(TemplateFile {
            entry_id: id,
            name,
            cache_key,
            input,
        });
    }
    Ok(Fetched {
        name: format!("{}/{}", structures.url.trim_end_matches('/'), source.key),
        chains: chain_files
            .into_iter()
            .map(|c| (c.key.clone(), c))
            .collect(),
        structure,
        templates,
        source,
    })
}

/// Fetches every source, `concurrency` at a time, into `out` (bounded: this waits when
/// the CPU stage is behind).
#[allow(clippy::too_many_arguments)]
pub async fn fetch_all(
    sources: Vec<Source>,
    structures: Location,
    alignments: Location,
    chain_dirs: Arc<ChainDirs>,
    index: Option<Arc<AlignmentIndex>>,
    entry_paths: Arc<HashMap<String, Path>>,
    context: Arc<Context>,
    concurrency: usize,
    out: mpsc::Sender<Fetched>,
) -> Result<(), IngestError> {
    let mut stream = futures::stream::iter(sources)
        .map(|source| {
            fetch_one(
                source,
                &structures,
                &alignments,
                &chain_dirs,
                index.as_deref(),
                &entry_paths,
                &context,
            )
        })
        .buffer_unordered(concurrency);
    while let Some(fetched) = stream.next().await {
        if out.send(fetched?).await.is_err() {
            break;
        }
    }
    Ok(())
}

/// Reads a whole file (local path or URL), decompressing gzip.
async fn read_bytes(url: &str) -> Result<Vec<u8>, IngestError> {
    let (dir, name) = url.rsplit_once('/').unwrap_or((".", url));
    let location = Location::parse(if dir.is_empty() { "/" } else { dir })?;
    let bytes = location
        .store
        .get(&location.child(name))
        .await
        .map_err(|e| store_error(url, e))?
        .bytes()
        .await
        .map_err(|e| store_error(url, e))?;
    Ok(decompress_if_gzip(url, bytes.to_vec())?)
}

/// Reads a small text file (local path or URL), gzip or not, as lines of words.
async fn read_word_lines(url: &str) -> Result<Vec<Vec<String>>, IngestError> {
    let bytes = read_bytes(url).await?;
    let text = crate::input::as_utf8(url, &bytes)?;
    Ok(text
        .lines()
        .map(|line| line.split_whitespace().map(str::to_string).collect())
        .collect())
}

/// Reads a cluster file: line `i` is cluster `i`; returns, per chain id, (cluster id,
/// cluster size).
pub async fn read_clusters(url: &str) -> Result<HashMap<String, (i64, u32)>, IngestError> {
    let mut clusters = HashMap::new();
    for (i, members) in read_word_lines(url).await?.iter().enumerate() {
        for member in members {
            clusters.insert(member.clone(), (i as i64, members.len() as u32));
        }
    }
    Ok(clusters)
}

/// Reads a duplicate-chain file: one group of chain ids sharing their alignments per line.
pub async fn read_duplicates(url: &str) -> Result<Vec<Vec<String>>, IngestError> {
    Ok(read_word_lines(url)
        .await?
        .into_iter()
        .filter(|g| g.len() > 1)
        .collect())
}
