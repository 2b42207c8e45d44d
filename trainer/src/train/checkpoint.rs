//! Checkpoints: everything a run needs to continue exactly, in formats other
//! tools read.
//!
//! Layout under the run's output folder:
//!
//! ```text
//! OUT/ckpt-00000100/model.safetensors   f32 tensors params/<name>, adam_m/<name>,
//!                                       adam_v/<name>, ema/<name> (one per parameter,
//!                                       by its dotted name and shape)
//! OUT/ckpt-00000100/checkpoint.json     CheckpointMeta: step, config TOML, loader
//!                                       state, seed, optimizer step count, history
//! OUT/latest                            the name of the newest complete checkpoint
//! ```
//!
//! A checkpoint is written into a hidden temporary folder and renamed into
//! place, then `latest` is replaced the same way: a reader sees a complete
//! checkpoint or none. `params/<name>` are the f32 master weights (on the GPU the
//! bf16 compute copy is rounded from them); PyTorch opens the file with
//! `safetensors.torch.load_file`.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use scalefold_loader::LoaderState;
use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use crate::error::{Result, TrainerError};
use crate::layers::ParamTable;
use crate::optim::Optimizer;

/// Version of the checkpoint layout written by this code.
pub const CHECKPOINT_FORMAT: u32 = 1;
/// The tensor file inside a checkpoint folder.
pub const TENSORS_FILE: &str = "model.safetensors";
/// The metadata file inside a checkpoint folder.
pub const META_FILE: &str = "checkpoint.json";
/// The pointer file naming the newest checkpoint.
pub const LATEST_FILE: &str = "latest";

/// The four per-parameter tensor groups of a checkpoint, by key prefix.
pub const GROUPS: [&str; 4] = ["params", "adam_m", "adam_v", "ema"];

/// The losses of the steps taken so far (for the loss plot and the summary).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunHistory {
    /// Weighted total loss of each step, `None` where the step was skipped.
    pub losses: Vec<Option<f64>>,
    /// Steps skipped because the loss or the gradient norm was not finite.
    pub skipped: Vec<u64>,
}

/// The JSON half of a checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// [`CHECKPOINT_FORMAT`] of the writer.
    pub format: u32,
    /// Steps completed: the run continues with this 0-based step.
    pub step: u64,
    /// The run seed (every per-step random stream derives from it and the step).
    pub seed: u64,
    /// Optimizer updates applied (steps less the skipped ones).
    pub optimizer_steps: u32,
    /// The resolved training config, as TOML.
    pub config_toml: String,
    /// The loader's state after the last sample consumed.
    pub loader_state: Option<LoaderState>,
    /// Parameter names and shapes, in the order of the flat block.
    pub params: Vec<(String, Vec<usize>)>,
    /// Losses so far.
    pub history: RunHistory,
}

fn io_err(path: &Path, source: std::io::Error) -> TrainerError {
    TrainerError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn ckpt_err(path: &Path, detail: impl Into<String>) -> TrainerError {
    TrainerError::Checkpoint {
        path: path.display().to_string(),
        detail: detail.into(),
    }
}

/// The folder name of the checkpoint after `step` steps.
pub fn checkpoint_name(step: u64) -> String {
    format!("ckpt-{step:08}")
}

/// Complete checkpoints under `root`, by step, oldest first.
pub fn list_checkpoints(root: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(root, e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_err(root, e))?;
        let name = entry.file_name();
        let Some(step) = name
            .to_str()
            .and_then(|n| n.strip_prefix("ckpt-"))
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        if entry.path().join(META_FILE).is_file() {
            found.push((step, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// The checkpoint `latest` points to, if any.
pub fn latest_checkpoint(root: &Path) -> Result<Option<PathBuf>> {
    let pointer = root.join(LATEST_FILE);
    match std::fs::read_to_string(&pointer) {
        Ok(name) => {
            let dir = root.join(name.trim());
            if dir.join(META_FILE).is_file() {
                Ok(Some(dir))
            } else {
                Err(ckpt_err(
                    &pointer,
                    format!(
                        "points to {}, which is not a complete checkpoint",
                        dir.display()
                    ),
                ))
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(&pointer, e)),
    }
}

/// Writes `bytes` to `path` and flushes them to the disk.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = std::fs::File::create(path).map_err(|e| io_err(path, e))?;
    file.write_all(bytes).map_err(|e| io_err(path, e))?;
    file.sync_all().map_err(|e| io_err(path, e))
}

/// Writes `bytes` to `path` atomically (a temporary file renamed over it).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    write_synced(&tmp, bytes)?;
    std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))
}

/// Each parameter's element range in the flat (padded) blocks.
fn flat_ranges(table: &ParamTable, align: usize) -> Vec<std::ops::Range<usize>> {
    let mut offset = 0;
    table
        .entries
        .iter()
        .map(|e| {
            let n: usize = e.shape.iter().product();
            let range = offset..offset + n;
            offset += n.next_multiple_of(align);
            range
        })
        .collect()
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Saves the model's master weights, both Adam moments and the weight average
/// with `meta` as `root/ckpt-<step>/`, points `latest` at it and deletes all but
/// the newest `keep` checkpoints (0 keeps all). Returns the checkpoint folder.
pub fn save_checkpoint<B: Backend>(
    root: &Path,
    be: &mut B,
    table: &ParamTable,
    optimizer: &Optimizer,
    meta: &CheckpointMeta,
    keep: usize,
) -> Result<PathBuf> {
    std::fs::create_dir_all(root).map_err(|e| io_err(root, e))?;
    let ranges = flat_ranges(table, be.param_align());
    let state = &optimizer.state;
    let mut blobs: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (group, tensor) in GROUPS
        .iter()
        .zip([state.master, state.m, state.v, state.ema])
    {
        let flat = be.read(tensor)?;
        for (entry, range) in table.entries.iter().zip(&ranges) {
            let values = flat.get(range.clone()).ok_or_else(|| {
                ckpt_err(
                    root,
                    format!("the {group} block is shorter than the parameter table"),
                )
            })?;
            blobs.push((
                format!("{group}/{}", entry.name),
                entry.shape.clone(),
                f32_bytes(values),
            ));
        }
    }
    let views = blobs
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|view| (name.clone(), view))
                .map_err(|e| ckpt_err(root, format!("tensor {name}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let info = HashMap::from([
        ("format".to_string(), "scalefold".to_string()),
        ("step".to_string(), meta.step.to_string()),
    ]);
    let tensors = safetensors::serialize(views, Some(info))
        .map_err(|e| ckpt_err(root, format!("safetensors: {e}")))?;
    let json =
        serde_json::to_vec_pretty(meta).map_err(|e| ckpt_err(root, format!("metadata: {e}")))?;

    let name = checkpoint_name(meta.step);
    let tmp = root.join(format!(".{name}.tmp-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| io_err(&tmp, e))?;
    }
    std::fs::create_dir(&tmp).map_err(|e| io_err(&tmp, e))?;
    write_synced(&tmp.join(TENSORS_FILE), &tensors)?;
    write_synced(&tmp.join(META_FILE), &json)?;
    let dir = root.join(&name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
    }
    std::fs::rename(&tmp, &dir).map_err(|e| io_err(&dir, e))?;
    write_atomic(&root.join(LATEST_FILE), name.as_bytes())?;
    if keep > 0 {
        let all = list_checkpoints(root)?;
        for (_, old) in &all[..all.len().saturating_sub(keep)] {
            std::fs::remove_dir_all(old).map_err(|e| io_err(old, e))?;
        }
    }
    Ok(dir)
}

/// A checkpoint read back from its folder.
#[derive(Debug)]
pub struct Checkpoint {
    /// The folder it was read from.
    pub dir: PathBuf,
    /// Its JSON half.
    pub meta: CheckpointMeta,
    tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

impl Checkpoint {
    /// Reads both files of the checkpoint folder `dir`.
    pub fn load(dir: &Path) -> Result<Self> {
        let meta_path = dir.join(META_FILE);
        let text = std::fs::read(&meta_path).map_err(|e| io_err(&meta_path, e))?;
        let meta: CheckpointMeta = serde_json::from_slice(&text)
            .map_err(|e| ckpt_err(&meta_path, format!("not a checkpoint description: {e}")))?;
        if meta.format != CHECKPOINT_FORMAT {
            return Err(ckpt_err(
                &meta_path,
                format!(
                    "format {} (this build reads {CHECKPOINT_FORMAT})",
                    meta.format
                ),
            ));
        }
        let path = dir.join(TENSORS_FILE);
        let bytes = std::fs::read(&path).map_err(|e| io_err(&path, e))?;
        let file = SafeTensors::deserialize(&bytes).map_err(|e| ckpt_err(&path, format!("{e}")))?;
        let mut tensors = HashMap::new();
        for (name, view) in file.tensors() {
            if view.dtype() != Dtype::F32 {
                return Err(ckpt_err(
                    &path,
                    format!("tensor {name} is {:?}; expected F32", view.dtype()),
                ));
            }
            let values = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            tensors.insert(name, (view.shape().to_vec(), values));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            meta,
            tensors,
        })
    }

    /// The values of tensor `key` (e.g. `ema/evoformer.0.msa_row.lin_q.w`).
    pub fn tensor(&self, key: &str) -> Option<&[f32]> {
        self.tensors.get(key).map(|(_, v)| v.as_slice())
    }

    /// Group `group`'s tensor of every parameter of `table`, checked against its shape.
    fn group<'a>(&'a self, group: &str, table: &ParamTable) -> Result<Vec<&'a [f32]>> {
        let path = self.dir.join(TENSORS_FILE);
        table
            .entries
            .iter()
            .map(|e| {
                let key = format!("{group}/{}", e.name);
                match self.tensors.get(&key) {
                    None => Err(ckpt_err(&path, format!("no tensor {key}"))),
                    Some((shape, _)) if *shape != e.shape => Err(ckpt_err(
                        &path,
                        format!(
                            "tensor {key} has shape {shape:?}; the model's is {:?}",
                            e.shape
                        ),
                    )),
                    Some((_, values)) => Ok(values.as_slice()),
                }
            })
            .collect()
    }

    /// Group `group` as one flat block in the backend's padded layout.
    fn flat(&self, group: &str, table: &ParamTable, align: usize) -> Result<Vec<f32>> {
        let mut flat = Vec::new();
        for values in self.group(group, table)? {
            flat.extend_from_slice(values);
            flat.resize(flat.len().next_multiple_of(align), 0.0);
        }
        Ok(flat)
    }

    /// Restores the training state: weights and master weights from `params/`,
    /// both moments, the weight average and the optimizer's step count.
    pub fn restore_training<B: Backend>(
        &self,
        be: &mut B,
        table: &ParamTable,
        optimizer: &mut Optimizer,
    ) -> Result<()> {
        let align = be.param_align();
        let state = &optimizer.state;
        for (group, tensor) in GROUPS
            .iter()
            .zip([state.master, state.m, state.v, state.ema])
        {
            be.write(tensor, &self.flat(group, table, align)?)?;
        }
        self.write_weights("params", be, table)?;
        optimizer.steps = self.meta.optimizer_steps;
        Ok(())
    }

    /// Writes the weight average into the model's weights (for evaluation).
    pub fn load_ema_weights<B: Backend>(&self, be: &mut B, table: &ParamTable) -> Result<()> {
        self.write_weights("ema", be, table)
    }

    fn write_weights<B: Backend>(&self, group: &str, be: &mut B, table: &ParamTable) -> Result<()> {
        for (entry, values) in table.entries.iter().zip(self.group(group, table)?) {
            be.write(entry.param.w, values)?;
        }
        Ok(())
    }
}
