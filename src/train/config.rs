//! The training config (`config.toml`): every knob with the paper's default, saved resolved into
//! the run dir so a run can be reproduced from its own folder alone.
//!
//! Unknown keys are errors. Relative paths in a config file are relative to that file; relative
//! paths given with `--set` are relative to the current directory. The saved copy has them absolute.

use crate::data::transform::TransformConfig;
use crate::data::DatasetSpec;
use crate::error::{input, IoContext, Result};
use crate::student::StudentSpec;
use crate::train::kd::KdConfig;
use crate::train::optim::OptimConfig;
use crate::train::schedule::ScheduleConfig;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// What the student learns: `classify` (the default) or `detect` (boxes; see `[detect]`).
    #[serde(default, skip_serializing_if = "TaskKind::is_classify")]
    pub task: TaskKind,
    #[serde(default)]
    pub data: DataConfig,
    #[serde(default)]
    pub transform: TransformConfig,
    #[serde(default)]
    pub model: StudentSpec,
    #[serde(default)]
    pub aspects: AspectsConfig,
    #[serde(default)]
    pub optim: OptimConfig,
    #[serde(default)]
    pub schedule: ScheduleConfig,
    #[serde(default)]
    pub train: LoopConfig,
    #[serde(default)]
    pub kd: KdConfig,
    /// The detector's settings (`task = "detect"` only).
    #[serde(default, skip_serializing_if = "DetectConfig::is_default")]
    pub detect: DetectConfig,
}

/// The task a run trains for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskKind {
    /// Image classification: C class logits + Q aspect logits.
    #[default]
    Classify,
    /// Object detection: a CenterNet-style detector with an aspect head.
    Detect,
}

impl TaskKind {
    pub fn is_classify(&self) -> bool {
        *self == TaskKind::Classify
    }
}

/// What the detector's aspect head answers for: `image` trains against a store labeled on the
/// scenes (`makd label --dataset scenes:…`), `object` against one labeled on their objects
/// (`makd label --dataset crops:…`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AspectMode {
    /// One answer per image (scene-level questions): pooled backbone features → Q logits.
    #[default]
    Image,
    /// One answer per object: Q channels on the stride-4 map, read at each object's centre.
    Object,
}

impl AspectMode {
    pub const ALL: [AspectMode; 2] = [AspectMode::Image, AspectMode::Object];

    pub fn name(self) -> &'static str {
        match self {
            AspectMode::Image => "image",
            AspectMode::Object => "object",
        }
    }
}

impl std::fmt::Display for AspectMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for AspectMode {
    type Err = crate::error::Error;

    fn from_str(s: &str) -> Result<Self> {
        AspectMode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                input(
                    format!("unknown aspect mode `{s}`"),
                    "detect.aspect_mode",
                    "use one of: image, object",
                )
            })
    }
}

/// `[detect]`: the CenterNet-style detector (output stride 4) on top of a `model.arch` backbone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectConfig {
    /// `image` (one aspect answer per scene) or `object` (one per ground-truth box).
    pub aspect_mode: AspectMode,
    /// Channels of the upsampling neck.
    pub neck_channels: usize,
    /// Channels of the hidden layer of each head (heatmap, size, offset, aspects).
    pub head_channels: usize,
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            aspect_mode: AspectMode::Image,
            neck_channels: 64,
            head_channels: 64,
        }
    }
}

impl DetectConfig {
    pub fn is_default(&self) -> bool {
        *self == DetectConfig::default()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// `fashion-mnist`, `fashion-mnist:DIR`, `idx:DIR`, `imagefolder:ROOT`, `csv:FILE`.
    pub dataset: DatasetSpec,
    /// Train on a class-balanced subset of this many images (quick trials, tests).
    pub train_limit: Option<usize>,
    /// Evaluate on a class-balanced subset of this many test images.
    pub test_limit: Option<usize>,
    /// Loader threads decoding and augmenting images.
    pub workers: usize,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            dataset: "fashion-mnist".parse().expect("built-in spec"),
            train_limit: None,
            test_limit: None,
            workers: 2,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AspectsConfig {
    /// Score store of the training images (from `makd label`). Absent: Q = 0, the plain baseline.
    pub scores: Option<PathBuf>,
    /// The aspect set the store was made with; checked against the store's hash.
    pub aspects: Option<PathBuf>,
    /// Optional score store of the test images, for aspect metrics at evaluation.
    pub test_scores: Option<PathBuf>,
    /// Weight α of the aspect BCE (paper: 4.0).
    pub alpha: f64,
    /// Train on a store that is not fully labeled (pairs never scored: a `--limit` run, one shard
    /// of a `--shard i/n` run, an interrupted run) with those pairs masked out. Off, such a
    /// store is refused: a half-labeled store would weaken MaKD without a word.
    pub allow_partial: bool,
}

impl Default for AspectsConfig {
    fn default() -> Self {
        AspectsConfig {
            scores: None,
            aspects: None,
            test_scores: None,
            alpha: 4.0,
            allow_partial: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoopConfig {
    /// Paper: 240.
    pub epochs: usize,
    /// Paper: 16.
    pub batch_size: usize,
    pub eval_batch_size: usize,
    /// Seeds the weights, the shuffling and the augmentation.
    pub seed: u64,
    pub label_smoothing: f64,
}

impl Default for LoopConfig {
    fn default() -> Self {
        LoopConfig {
            epochs: 240,
            batch_size: 16,
            eval_batch_size: 256,
            seed: 0,
            label_smoothing: 0.0,
        }
    }
}

/// Config keys holding paths (resolved against the config file's directory).
const PATH_KEYS: [&str; 4] = [
    "aspects.scores",
    "aspects.aspects",
    "aspects.test_scores",
    "kd.logits",
];

impl TrainConfig {
    /// Read `path`, apply `--set key=value` overrides, resolve paths, validate.
    pub fn load(path: &Path, sets: &[String]) -> Result<TrainConfig> {
        let text = std::fs::read_to_string(path).at(path)?;
        let at = path.display().to_string();
        let mut value: toml::Table = toml::from_str(&text).map_err(|e| {
            input(
                format!("invalid TOML: {}", e.message()),
                toml_at(&at, &text, e.span()),
                "check the syntax",
            )
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        resolve_paths(&mut value, &base);
        let cwd = std::env::current_dir().at(".")?;
        apply_sets(&mut value, sets, &cwd)?;
        Self::from_table(value, &at)
    }

    /// The defaults with overrides only (no file).
    pub fn from_sets(sets: &[String]) -> Result<TrainConfig> {
        let mut value = toml::Table::new();
        let cwd = std::env::current_dir().at(".")?;
        apply_sets(&mut value, sets, &cwd)?;
        Self::from_table(value, "--set")
    }

    fn from_table(value: toml::Table, at: &str) -> Result<TrainConfig> {
        let cfg: TrainConfig =
            toml::Value::Table(value)
                .try_into()
                .map_err(|e: toml::de::Error| {
                    input(
                        e.message().to_string(),
                        at,
                        "see the config reference in the README; unknown keys are errors",
                    )
                })?;
        cfg.validate(at)?;
        Ok(cfg)
    }

    pub fn validate(&self, at: &str) -> Result<()> {
        let t = &self.train;
        if t.epochs == 0 || t.batch_size == 0 || t.eval_batch_size == 0 {
            return Err(input(
                "train.epochs, train.batch_size and train.eval_batch_size must be > 0",
                at,
                "set them to positive integers",
            ));
        }
        if !(self.optim.lr > 0.0 && self.optim.lr.is_finite()) {
            return Err(input(
                format!("optim.lr = {} must be a positive number", self.optim.lr),
                at,
                "the paper uses 0.01 with SGD",
            ));
        }
        if !(self.aspects.alpha >= 0.0 && self.aspects.alpha.is_finite()) {
            return Err(input(
                format!("aspects.alpha = {} must be ≥ 0", self.aspects.alpha),
                at,
                "the paper uses 4.0",
            ));
        }
        if !(0.0..1.0).contains(&t.label_smoothing) {
            return Err(input(
                "train.label_smoothing must be in [0, 1)",
                at,
                "0 disables it",
            ));
        }
        if self.data.workers == 0 {
            return Err(input(
                "data.workers must be ≥ 1",
                at,
                "use 2 on a 2-core machine",
            ));
        }
        let kd = &self.kd;
        if !(kd.temperature > 0.0 && kd.weight >= 0.0 && kd.dkd_alpha >= 0.0 && kd.dkd_beta >= 0.0)
        {
            return Err(input(
                "kd.temperature must be > 0 and kd weights ≥ 0",
                at,
                "Hinton's default: temperature 4, weight 1",
            ));
        }
        self.transform.validate()?;
        self.validate_task(at)
    }

    /// The combinations a task cannot train: a `[detect]` section on a classifier, KD or
    /// augmentations that would move boxes on a detector.
    fn validate_task(&self, at: &str) -> Result<()> {
        match self.task {
            TaskKind::Classify if !self.detect.is_default() => Err(input(
                "a [detect] section is set but task is \"classify\"",
                at,
                "set task = \"detect\" to train a detector, or remove [detect]",
            )),
            TaskKind::Classify => Ok(()),
            TaskKind::Detect => {
                if self.kd.logits.is_some() {
                    return Err(input(
                        "kd.logits is set but task is \"detect\": KD from a teacher network's class logits applies to classifiers",
                        at,
                        "remove [kd] from a detection config",
                    ));
                }
                if !matches!(
                    self.transform.augment,
                    crate::data::transform::Augment::None | crate::data::transform::Augment::Flip
                ) {
                    return Err(input(
                        format!(
                            "transform.augment = {:?} is not available for detection (it would move boxes out of their objects)",
                            self.transform.augment
                        ),
                        at,
                        "use \"none\" or \"flip\" (boxes are flipped with the image)",
                    ));
                }
                let d = &self.detect;
                if d.neck_channels == 0 || d.head_channels == 0 {
                    return Err(input(
                        "detect.neck_channels and detect.head_channels must be > 0",
                        at,
                        "CenterNet's small heads use 64",
                    ));
                }
                Ok(())
            }
        }
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serializes")
    }

    /// The same config with every path absolute, relative ones taken from `base`: what a run dir
    /// keeps, so that loading its config.toml (whose relative paths would be read from the run
    /// dir) finds the same files.
    pub fn with_absolute_paths(&self, base: &Path) -> Result<TrainConfig> {
        let mut table: toml::Table = toml::from_str(&self.to_toml()).expect("config round-trips");
        resolve_paths(&mut table, base);
        Self::from_table(table, "config")
    }
}

fn toml_at(file: &str, text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(s) => {
            let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
            format!("{file}:{line}")
        }
        None => file.to_string(),
    }
}

fn resolve_paths(table: &mut toml::Table, base: &Path) {
    for key in PATH_KEYS {
        let (sec, field) = key.split_once('.').expect("dotted key");
        if let Some(toml::Value::String(s)) = table.get_mut(sec).and_then(|v| v.get_mut(field)) {
            *s = absolutize(s, base);
        }
    }
    // A dataset spec carries paths too (`idx:DIR`, `coco:FILE:DIR`, `crops:scenes:DIR@0.2`).
    if let Some(toml::Value::String(s)) = table.get_mut("data").and_then(|v| v.get_mut("dataset")) {
        *s = absolutize_spec(s, base);
    }
}

/// The dataset spec `s` with its paths taken from `base`; a spec that does not parse is left
/// for validation to report.
fn absolutize_spec(s: &str, base: &Path) -> String {
    match s.parse::<DatasetSpec>() {
        Ok(spec) => spec.absolute(base).to_string(),
        Err(_) => s.to_string(),
    }
}

fn absolutize(p: &str, base: &Path) -> String {
    let path = Path::new(p);
    if path.is_absolute() || p.is_empty() {
        p.to_string()
    } else {
        base.join(path).display().to_string()
    }
}

/// Apply `key.sub=value` overrides. The value is parsed as a TOML value (`3`, `0.1`, `true`,
/// `[1,2]`, `"x"`) and falls back to a plain string.
fn apply_sets(table: &mut toml::Table, sets: &[String], cwd: &Path) -> Result<()> {
    for set in sets {
        let Some((key, raw)) = set.split_once('=') else {
            return Err(input(
                format!("--set {set:?} is not key=value"),
                "--set",
                "e.g. --set train.epochs=5",
            ));
        };
        let key = key.trim();
        let mut value = parse_value(raw.trim());
        if let toml::Value::String(s) = &mut value {
            if PATH_KEYS.contains(&key) {
                *s = absolutize(s, cwd);
            } else if key == "data.dataset" {
                *s = absolutize_spec(s, cwd);
            }
        }
        let parts: Vec<&str> = key.split('.').collect();
        let mut cur = &mut *table;
        for part in &parts[..parts.len() - 1] {
            let entry = cur
                .entry(part.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            cur = match entry {
                toml::Value::Table(t) => t,
                _ => {
                    return Err(input(
                        format!("--set {key}: {part} is not a section"),
                        "--set",
                        "use section.key=value",
                    ))
                }
            };
        }
        cur.insert(parts[parts.len() - 1].to_string(), value);
    }
    Ok(())
}

fn parse_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match toml::from_str::<toml::Table>(&doc) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A path set in code (the experiment runner's control stores) is relative to the working
    /// directory; saved absolute, the run dir's copy loads back equal to it.
    #[test]
    fn saved_configs_reload_equal() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("runs/a");
        std::fs::create_dir_all(&run).unwrap();
        let mut cfg = TrainConfig::from_sets(&[]).unwrap();
        cfg.aspects.scores = Some("out/stores/random-target-seed0".into());
        let saved = cfg.with_absolute_paths(dir.path()).unwrap();
        assert_eq!(
            saved.aspects.scores,
            Some(dir.path().join("out/stores/random-target-seed0"))
        );
        std::fs::write(run.join("config.toml"), saved.to_toml()).unwrap();
        let back = TrainConfig::load(&run.join("config.toml"), &[]).unwrap();
        assert_eq!(back, saved);
    }

    #[test]
    fn paper_defaults() {
        let c = TrainConfig::from_sets(&[]).unwrap();
        assert_eq!(c.train.epochs, 240);
        assert_eq!(c.train.batch_size, 16);
        assert_eq!(c.aspects.alpha, 4.0);
        assert_eq!(c.optim.lr, 0.01);
        assert_eq!(c.optim.momentum, 0.9);
        assert_eq!(c.optim.weight_decay, 1e-4);
        assert_eq!(c.schedule.milestones, vec![150, 180, 210]);
    }

    #[test]
    fn sets_override_and_unknown_keys_fail() {
        let c = TrainConfig::from_sets(&[
            "train.epochs=3".into(),
            "optim.kind=\"adamw\"".into(),
            "optim.lr=1e-3".into(),
        ])
        .unwrap();
        assert_eq!(c.train.epochs, 3);
        assert_eq!(c.optim.kind, crate::train::optim::OptimKind::Adamw);
        let err = TrainConfig::from_sets(&["train.epoch=3".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `epoch`"), "{err}");
        assert!(TrainConfig::from_sets(&["nonsense".into()]).is_err());
    }

    #[test]
    fn relative_paths_follow_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[aspects]\nscores = \"s\"\n[train]\nepochs = 2\n").unwrap();
        let c = TrainConfig::load(&path, &[]).unwrap();
        assert_eq!(c.aspects.scores.unwrap(), dir.path().join("s"));
        std::fs::write(&path, "[train]\nepochs = 2\nbogus = 1\n").unwrap();
        let err = TrainConfig::load(&path, &[]).unwrap_err().to_string();
        assert!(err.contains("bogus") && err.contains("c.toml"), "{err}");
        std::fs::write(&path, "[train\n").unwrap();
        assert!(TrainConfig::load(&path, &[])
            .unwrap_err()
            .to_string()
            .contains("c.toml:1"));
    }
}
