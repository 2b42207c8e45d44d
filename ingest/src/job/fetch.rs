//! Discovery and async fetching of the job's inputs from any object store.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use scalefold_featurize::inputs::TemplateHit;
use scalefold_storage::Location;
use std::path::PathBuf;
use tokio::sync::mpsc;

use super::IngestError;
use super::cache::CompactStructure;
use super::cpu::{Lap, Stage};
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

/// An input root (the structures or the alignments) and how its files are read.
///
/// A local folder (a path or `file://` URL) is read with plain file reads and folder
/// walks on the calling thread: the object store's local backend costs two blocking-pool
/// hops and a metadata call per file, and a blocking walk per listing. Object paths are
/// mapped to files exactly as that backend maps them, so both read the same files.
#[derive(Debug, Clone)]
pub struct Input {
    /// The location as parsed.
    pub location: Location,
    /// For a local folder: the backend whose path mapping the plain reads use.
    local: Option<Arc<LocalFileSystem>>,
}

impl Input {
    /// The input at `location`; local when `url` names a local folder.
    pub fn new(location: Location) -> Self {
        let url = location.url.as_str();
        let is_local = !url.contains("://") || url.starts_with("file://");
        Input {
            local: is_local.then(|| Arc::new(LocalFileSystem::new())),
            location,
        }
    }

    /// Whether this input is read with plain file reads (its reads then block the thread).
    pub fn is_local(&self) -> bool {
        self.local.is_some()
    }

    fn local_path(fs: &LocalFileSystem, path: &Path) -> Result<PathBuf, String> {
        fs.path_to_filesystem(path)
            .map_err(|e| format!("cannot read: {e}"))
    }

    /// A whole file.
    async fn read(&self, path: &Path) -> FileBytes {
        match &self.local {
            Some(fs) => {
                let file = Self::local_path(fs, path)?;
                std::fs::read(&file)
                    .map(Bytes::from)
                    .map_err(|e| format!("cannot read {}: {e}", file.display()))
            }
            None => get(&self.location.store, path).await,
        }
    }

    /// Bytes `range` of a file.
    async fn read_range(&self, path: &Path, range: std::ops::Range<u64>) -> FileBytes {
        let (start, end) = (range.start, range.end);
        match &self.local {
            Some(fs) => {
                use std::os::unix::fs::FileExt;
                let file = Self::local_path(fs, path)?;
                let fail = |e: std::io::Error| {
                    format!(
                        "cannot read bytes {start}..{end} of {}: {e}",
                        file.display()
                    )
                };
                let handle = std::fs::File::open(&file).map_err(fail)?;
                let mut buffer =
                    vec![0u8; usize::try_from(end - start).map_err(|e| e.to_string())?];
                handle.read_exact_at(&mut buffer, start).map_err(fail)?;
                Ok(Bytes::from(buffer))
            }
            None => self
                .location
                .store
                .get_range(path, range)
                .await
                .map_err(|e| format!("cannot read bytes {start}..{end}: {e}")),
        }
    }

    /// Every file under the folder `dir` (recursively), as object paths.
    async fn list_files(&self, dir: &Path) -> Result<Vec<Path>, IngestError> {
        let Some(fs) = &self.local else {
            let metas: Vec<_> = self
                .location
                .store
                .list(Some(dir))
                .try_collect()
                .await
                .map_err(|e| store_error(&self.location.url, e))?;
            return Ok(metas.into_iter().map(|m| m.location).collect());
        };
        let mut files = Vec::new();
        let mut pending = vec![dir.clone()];
        while let Some(folder) = pending.pop() {
            local_entries(fs, &folder, &mut pending, &mut files)?;
        }
        Ok(files)
    }

    /// The folders directly under `dir`, as object paths.
    async fn list_folders(&self, dir: &Path) -> Result<Vec<Path>, IngestError> {
        let Some(fs) = &self.local else {
            let listing = self
                .location
                .store
                .list_with_delimiter(Some(dir))
                .await
                .map_err(|e| store_error(&self.location.url, e))?;
            return Ok(listing.common_prefixes);
        };
        let (mut folders, mut files) = (Vec::new(), Vec::new());
        local_entries(fs, dir, &mut folders, &mut files)?;
        Ok(folders)
    }
}

/// The entries of the local folder at object path `folder`, split into sub-folders and
/// files (links followed, as the object store's walk does; a dangling link, a name that
/// is not UTF-8 and a missing folder are skipped, as that walk skips them).
fn local_entries(
    fs: &LocalFileSystem,
    folder: &Path,
    folders: &mut Vec<Path>,
    files: &mut Vec<Path>,
) -> Result<(), IngestError> {
    let Ok(path) = fs.path_to_filesystem(folder) else {
        return Ok(());
    };
    let entries = match std::fs::read_dir(&path) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(local_error(&path, source)),
    };
    for entry in entries {
        let entry = entry.map_err(|source| local_error(&path, source))?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let child = folder.clone().join(name.as_str());
        match entry.file_type() {
            Ok(kind) if kind.is_dir() => folders.push(child),
            Ok(kind) if kind.is_file() => files.push(child),
            _ => match std::fs::metadata(entry.path()) {
                Ok(meta) if meta.is_dir() => folders.push(child),
                Ok(_) => files.push(child),
                Err(_) => continue,
            },
        }
    }
    Ok(())
}

fn local_error(path: &std::path::Path, source: std::io::Error) -> IngestError {
    IngestError::Io {
        path: path.display().to_string(),
        source,
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
pub async fn list_structures(input: &Input) -> Result<Vec<Source>, IngestError> {
    let root = &input.location;
    let mut sources: Vec<Source> = input
        .list_files(&root.prefix)
        .await?
        .into_iter()
        .filter(|path| is_structure_file(path.as_ref()))
        .map(|path| {
            let key = relative(&root.prefix, &path);
            Source {
                entry_id: entry_id_from_file_name(&key),
                key,
                path,
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
pub async fn list_chain_dirs(input: &Input) -> Result<ChainDirs, IngestError> {
    let root = &input.location;
    let mut dirs: ChainDirs = HashMap::new();
    for prefix in &input.list_folders(&root.prefix).await? {
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
    root: &Input,
    key: String,
    index_key: &str,
    entry: &IndexEntry,
) -> ChainFiles {
    let db = root.location.child(&entry.db);
    let base = format!(
        "{}/{}:{index_key}",
        root.location.url.trim_end_matches('/'),
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
                .read_range(&db, start..end)
                .await
                .map_err(|e| format!("{}: {e}", entry.db)),
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
    root: &Input,
    key: String,
    folder: &str,
    index: Option<&AlignmentIndex>,
) -> Result<ChainFiles, IngestError> {
    let url = &root.location.url;
    if let Some(index) = index {
        return match index.get(folder) {
            Some(entry) => Ok(fetch_indexed_chain(root, key, folder, entry).await),
            None => Ok(ChainFiles {
                dir: format!("{url}:{folder}"),
                alignments: Vec::new(),
                hhr: Vec::new(),
                hhr_hits: Vec::new(),
                key,
            }),
        };
    }
    let dir = root.location.child(folder);
    let mut alignment_paths = Vec::new();
    let mut hhr_paths = Vec::new();
    for path in root.list_files(&dir).await? {
        let name = relative(&root.location.prefix, &path);
        let plain = name.strip_suffix(".gz").unwrap_or(&name);
        if plain.ends_with(".hhr") {
            hhr_paths.push((name, path));
        } else if AlignmentFormat::from_file_name(&name).is_some() {
            alignment_paths.push((name, path));
        }
    }
    alignment_paths.sort_by_key(|(name, _)| merge_rank(name));
    hhr_paths.sort_by(|a, b| a.0.cmp(&b.0));
    let read_all = |paths: Vec<(String, Path)>| {
        futures::future::join_all(paths.into_iter().map(|(name, path)| async move {
            let bytes = root.read(&path).await;
            (name, bytes)
        }))
    };
    Ok(ChainFiles {
        dir: format!("{}/{folder}", url.trim_end_matches('/')),
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

/// What the fetch stage needs besides the sources, shared by its tasks.
pub struct Fetcher {
    /// The structure files' root.
    pub structures: Input,
    /// The alignments' root.
    pub alignments: Input,
    /// Alignment folders by entry id.
    pub chain_dirs: ChainDirs,
    /// The alignment index, if the alignments are in the database form.
    pub index: Option<AlignmentIndex>,
    /// Structure file of each entry id (template lookups).
    pub entry_paths: HashMap<String, Path>,
    /// The CPU stage's context (the shared structure cache).
    pub context: Arc<Context>,
}

impl Fetcher {
    /// Whether both roots are local folders (read with plain file reads on a blocking
    /// thread, see [`fetch_all`]).
    fn is_local(&self) -> bool {
        self.structures.is_local() && self.alignments.is_local()
    }

    async fn fetch_one(&self, source: Source) -> Result<Fetched, IngestError> {
        let Fetcher {
            structures,
            alignments,
            chain_dirs,
            index,
            entry_paths,
            context,
        } = self;
        let index = index.as_ref();
        let structure = structures.read(&source.path).await;
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
        let fetched_folders = if self.is_local() {
            // Already on a blocking thread (see `fetch_all`).
            fetched_folders.iter_mut().for_each(ChainFiles::parse_hits);
            fetched_folders
        } else {
            // Parsing is CPU work: keep it off the async runtime's threads.
            tokio::task::spawn_blocking(move || {
                fetched_folders.iter_mut().for_each(ChainFiles::parse_hits);
                fetched_folders
            })
            .await
            .map_err(|e| IngestError::InvalidArgument(format!("an hhr parse task failed: {e}")))?
        };
        // Each chain gets its folder's files: moved to the folder's last user, copied for
        // the others (duplicate chains sharing a folder).
        let folder_of = |folder: &str| folders.iter().position(|(_, f)| f == folder);
        let mut users = vec![0usize; folders.len()];
        keys.iter()
            .filter_map(|(_, folder)| folder_of(folder))
            .for_each(|i| users[i] += 1);
        let mut fetched_folders: Vec<Option<ChainFiles>> =
            fetched_folders.into_iter().map(Some).collect();
        let chain_files: Vec<ChainFiles> = keys
            .iter()
            .filter_map(|(key, folder)| {
                let i = folder_of(folder)?;
                users[i] -= 1;
                let files = if users[i] == 0 {
                    fetched_folders[i].take()?
                } else {
                    fetched_folders[i].clone()?
                };
                Some(ChainFiles {
                    key: key.clone(),
                    ..files
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
                structures.location.url.trim_end_matches('/'),
                relative(&structures.location.prefix, path)
            );
            let cache_key = path.to_string();
            let input = match context.templates.get(&cache_key) {
                Some(parsed) => TemplateInput::Cached(parsed),
                None => TemplateInput::Raw(structures.read(path).await),
            };
            templates.push(TemplateFile {
                entry_id: id,
                name,
                cache_key,
                input,
            });
        }
        Ok(Fetched {
            name: format!(
                "{}/{}",
                structures.location.url.trim_end_matches('/'),
                source.key
            ),
            chains: chain_files
                .into_iter()
                .map(|c| (c.key.clone(), c))
                .collect(),
            structure,
            templates,
            source,
        })
    }
}

/// Fetches every source, `concurrency` at a time, into `out` (bounded: this waits when
/// the CPU stage is behind). When both roots are local, each source is fetched whole in
/// one blocking task (plain reads; one hop per source instead of two per file).
pub async fn fetch_all(
    sources: Vec<Source>,
    fetcher: Arc<Fetcher>,
    concurrency: usize,
    out: mpsc::Sender<Fetched>,
) -> Result<(), IngestError> {
    let local = fetcher.is_local();
    let mut stream = futures::stream::iter(sources)
        .map(|source| {
            let fetcher = fetcher.clone();
            async move {
                if local {
                    // Local reads never wait on the runtime: the future completes in
                    // one poll on the blocking thread.
                    tokio::task::spawn_blocking(move || {
                        let mut lap = Lap::start();
                        let fetched = futures::executor::block_on(fetcher.fetch_one(source));
                        lap.mark(&fetcher.context.cpu, Stage::Fetch);
                        fetched
                    })
                    .await
                    .map_err(|e| {
                        IngestError::InvalidArgument(format!("a fetch task failed: {e}"))
                    })?
                } else {
                    fetcher.fetch_one(source).await
                }
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain-read path lists and reads exactly what the object store's local backend
    /// lists and reads (nested folders, a missing folder, a missing file, byte ranges).
    #[tokio::test]
    async fn local_reads_match_the_object_store() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("alignments");
        std::fs::create_dir_all(root.join("1abc_A/a3m")).unwrap();
        std::fs::create_dir_all(root.join("1abc_A/hhr")).unwrap();
        std::fs::write(
            root.join("1abc_A/uniref90_hits.sto"),
            b"# STOCKHOLM 1.0\n//\n",
        )
        .unwrap();
        std::fs::write(root.join("1abc_A/a3m/bfd uniclust.a3m"), b">q\nAC\n").unwrap();
        std::fs::write(root.join("1abc_A/hhr/pdb70_hits.hhr"), b"Query q\n").unwrap();
        let location = Location::parse(&root.display().to_string()).unwrap();
        let local = Input::new(location.clone());
        let store = Input {
            location: location.clone(),
            local: None,
        };
        assert!(local.is_local() && !store.is_local());
        for folder in ["1abc_A", "2xyz_B"] {
            let dir = location.child(folder);
            let mut a = local.list_files(&dir).await.unwrap();
            let mut b = store.list_files(&dir).await.unwrap();
            a.sort();
            b.sort();
            assert_eq!(a, b, "{folder}");
            for path in &a {
                assert_eq!(
                    local.read(path).await.unwrap(),
                    store.read(path).await.unwrap()
                );
                assert_eq!(
                    local.read_range(path, 1..4).await.unwrap(),
                    store.read_range(path, 1..4).await.unwrap()
                );
            }
            assert_eq!(a.len(), if folder == "1abc_A" { 3 } else { 0 });
        }
        let missing = location.child("1abc_A/none.a3m");
        assert!(local.read(&missing).await.is_err() && store.read(&missing).await.is_err());
        let past_end = location.child("1abc_A/a3m/bfd uniclust.a3m");
        assert!(local.read_range(&past_end, 2..100).await.is_err());
    }
}
