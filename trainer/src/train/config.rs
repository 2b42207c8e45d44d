//! Training configs: one TOML document with the model's sizes, the sample
//! shapes, the optimizer, the schedule, the run and the data settings.
//!
//! Three presets are embedded in the binary (`tiny`, `initial_training`,
//! `fine_tuning`, the files in `trainer/configs/`); a config file may be complete
//! or start with `base = "<preset>"` and override only some keys. `--set
//! key.path=value` overrides are applied to the TOML tree before it is read
//! (values are TOML: `3`, `1e-4`, `true`, `"text"`; a bare word is a string).
//! Unknown keys, wrong types and out-of-range values are errors naming the
//! file, the key and what was expected.

use serde::{Deserialize, Serialize};
use toml::{Table, Value};

use scalefold_featurize::SampleConfig;

use super::data::DataConfig;
use super::schedule::LrSchedule;
use crate::error::{Result, TrainerError};
use crate::model::ModelConfig;
use crate::optim::OptimizerConfig;

/// Settings of the run itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// The run seed: weights, data order, samples, recycling counts and dropout derive from it.
    pub seed: u64,
    /// Training steps (one sample each).
    pub steps: u64,
    /// Extra recycling iterations at most; each step draws 0..=this (AlphaFold: 3).
    /// Must be below `sample.num_recycling_iterations`.
    pub max_extra_recycles: usize,
    /// Write a checkpoint every this many steps (0: only at the end).
    pub checkpoint_every: u64,
    /// Checkpoints kept on disk, newest first (0: all).
    pub keep_checkpoints: usize,
    /// Print a progress line every this many steps when stderr is not a terminal.
    pub log_every: u64,
    /// Run the trunk's forward and backward as CUDA-graph replays
    /// ([`crate::model::graph`]; `--device cuda` only). Same numbers as eager
    /// up to bf16 rounding, fewer launches.
    #[serde(default)]
    pub cuda_graphs: bool,
}

/// Settings of evaluation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// Extra recycling iterations at evaluation (at most `sample.num_recycling_iterations - 1`).
    pub recycles: usize,
    /// Validation chains evaluated, at most (0: all).
    pub max_chains: usize,
    /// Seed of the validation samples' crops and MSA sampling.
    pub seed: u64,
    /// Seconds between looks for new checkpoints in watch mode.
    pub poll_seconds: f64,
}

/// A whole training config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Model sizes and loss weights.
    pub model: ModelConfig,
    /// Sample shapes and the featurization's randomness.
    pub sample: SampleConfig,
    /// Adam, clipping, weight average; `optimizer.lr` is the peak learning rate.
    pub optimizer: OptimizerConfig,
    /// Warm-up and decay of the learning rate.
    pub schedule: LrSchedule,
    /// Seed, steps, recycling, checkpoints.
    pub run: RunConfig,
    /// The loader.
    pub data: DataConfig,
    /// Evaluation.
    pub eval: EvalConfig,
}

/// The embedded presets: (name, TOML text).
pub const PRESETS: [(&str, &str); 3] = [
    ("tiny", include_str!("../../configs/tiny.toml")),
    (
        "initial_training",
        include_str!("../../configs/initial_training.toml"),
    ),
    (
        "fine_tuning",
        include_str!("../../configs/fine_tuning.toml"),
    ),
];

fn config_err(file: &str, key: &str, detail: impl Into<String>) -> TrainerError {
    TrainerError::ConfigFile {
        file: file.to_string(),
        key: key.to_string(),
        detail: detail.into(),
    }
}

/// The TOML text of preset `name`.
pub fn preset_text(name: &str) -> Option<&'static str> {
    PRESETS.iter().find(|p| p.0 == name).map(|p| p.1)
}

/// Parses TOML text into a table; errors name `file` and the line.
fn parse_table(file: &str, text: &str) -> Result<Table> {
    text.parse::<Table>().map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
        let detail = e.message().to_string();
        match line {
            Some(line) => config_err(file, "", format!("line {line}: {detail}")),
            None => config_err(file, "", detail),
        }
    })
}

/// `over` merged into `base`: tables recursively, everything else replaced.
fn merge(base: &mut Table, over: Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(Value::Table(b)), Value::Table(o)) => merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Sets `path` (dotted) to `value` in `table`, creating missing tables.
fn set_path(file: &str, table: &mut Table, path: &str, value: Value) -> Result<()> {
    let keys: Vec<&str> = path.split('.').collect();
    if keys.iter().any(|k| k.is_empty()) {
        return Err(config_err(
            file,
            path,
            "empty key segment in the --set path",
        ));
    }
    let mut node = table;
    for (i, key) in keys[..keys.len() - 1].iter().enumerate() {
        let entry = node
            .entry(key.to_string())
            .or_insert_with(|| Value::Table(Table::new()));
        node = match entry {
            Value::Table(t) => t,
            other => {
                return Err(config_err(
                    file,
                    &keys[..=i].join("."),
                    format!(
                        "is a {}, not a table, so {path} cannot be set",
                        other.type_str()
                    ),
                ));
            }
        };
    }
    node.insert(keys[keys.len() - 1].to_string(), value);
    Ok(())
}

/// Parses one `key.path=value` override; the value is TOML, or a string.
fn parse_override(file: &str, spec: &str) -> Result<(String, Value)> {
    let (key, raw) = spec
        .split_once('=')
        .ok_or_else(|| config_err(file, spec, "an override must look like key.path=value"))?;
    let key = key.trim();
    let raw = raw.trim();
    let value = match format!("v = {raw}").parse::<Table>() {
        Ok(mut t) => t.remove("v").expect("parsed the key v"),
        Err(_) => Value::String(raw.to_string()),
    };
    Ok((key.to_string(), value))
}

/// Keys of `input` that `output` lacks (dotted paths): keys the config types ignored.
fn unknown_keys(input: &Table, output: &Table, prefix: &str, found: &mut Vec<String>) {
    for (key, value) in input {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match (value, output.get(key)) {
            (_, None) => found.push(path),
            (Value::Table(i), Some(Value::Table(o))) => unknown_keys(i, o, &path, found),
            _ => {}
        }
    }
}

impl TrainConfig {
    /// Reads a config: `spec` is a preset name or a file path; `overrides` are
    /// `key.path=value` strings applied in order.
    pub fn load(spec: &str, overrides: &[String]) -> Result<Self> {
        let (file, text) = match preset_text(spec) {
            Some(text) => (format!("preset {spec}"), text.to_string()),
            None => {
                let text = std::fs::read_to_string(spec).map_err(|e| {
                    let presets: Vec<&str> = PRESETS.iter().map(|p| p.0).collect();
                    config_err(
                        spec,
                        "",
                        format!(
                            "cannot read it ({e}); expected a file or a preset ({})",
                            presets.join(", ")
                        ),
                    )
                })?;
                (spec.to_string(), text)
            }
        };
        Self::from_toml(&file, &text, overrides)
    }

    /// Reads a config from TOML `text` (named `file` in errors).
    pub fn from_toml(file: &str, text: &str, overrides: &[String]) -> Result<Self> {
        let mut table = parse_table(file, text)?;
        if let Some(base) = table.remove("base") {
            let Value::String(name) = &base else {
                return Err(config_err(
                    file,
                    "base",
                    format!("{base}; expected a preset name"),
                ));
            };
            let base_text = preset_text(name)
                .ok_or_else(|| config_err(file, "base", format!("no preset {name:?}")))?;
            let mut merged = parse_table(&format!("preset {name}"), base_text)?;
            merge(&mut merged, table);
            table = merged;
        }
        for spec in overrides {
            let (key, value) = parse_override(file, spec)?;
            set_path(file, &mut table, &key, value)?;
        }
        let input = table.clone();
        let config: TrainConfig = serde_path_to_error::deserialize(Value::Table(table))
            .map_err(|e| config_err(file, &e.path().to_string(), e.inner().to_string()))?;
        let Value::Table(output) = Value::try_from(&config)
            .map_err(|e| config_err(file, "", format!("cannot write the config back: {e}")))?
        else {
            return Err(config_err(file, "", "the config is not a table"));
        };
        let mut unknown = Vec::new();
        unknown_keys(&input, &output, "", &mut unknown);
        if let Some(key) = unknown.first() {
            return Err(config_err(file, key, "unknown key"));
        }
        config.validate().map_err(|e| match e {
            TrainerError::Config { field, detail } => config_err(file, field, detail),
            other => config_err(file, "", other.to_string()),
        })?;
        Ok(config)
    }

    /// The config as TOML (reads back to an equal config).
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string(self).map_err(|e| config_err("(in memory)", "", e.to_string()))
    }

    /// Checks every section and the relations between them.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &'static str, detail: String| Err(TrainerError::Config { field, detail });
        self.model.validate()?;
        self.optimizer.validate()?;
        self.schedule.validate()?;
        self.data.validate()?;
        let featurized = self.sample.num_recycling_iterations;
        if featurized == 0 {
            return bad(
                "sample.num_recycling_iterations",
                "0; expected at least 1".into(),
            );
        }
        if self.run.max_extra_recycles >= featurized {
            return bad(
                "run.max_extra_recycles",
                format!(
                    "{}; expected at most sample.num_recycling_iterations - 1 = {}",
                    self.run.max_extra_recycles,
                    featurized - 1
                ),
            );
        }
        if self.eval.recycles >= featurized {
            return bad(
                "eval.recycles",
                format!(
                    "{}; expected at most {}",
                    self.eval.recycles,
                    featurized - 1
                ),
            );
        }
        if self.run.steps == 0 {
            return bad("run.steps", "0; expected at least 1".into());
        }
        if !(self.eval.poll_seconds.is_finite() && self.eval.poll_seconds > 0.0) {
            return bad(
                "eval.poll_seconds",
                format!("{}; expected > 0", self.eval.poll_seconds),
            );
        }
        Ok(())
    }
}
