//! `experiment.toml`: which variants, how many seeds, what they share.

use crate::error::{input, IoContext, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    pub name: String,
    /// The training config every variant starts from (relative to this file). Aspect variants need
    /// its `aspects.scores` (the teacher's store); `aspects.test_scores` adds aspect metrics.
    pub train_config: PathBuf,
    /// One run per variant per seed. Three or more make intervals meaningful.
    #[serde(default = "default_seeds")]
    pub seeds: Vec<u64>,
    /// baseline, makd, random-target, shuffled-target, kd, makd+kd, dkd.
    #[serde(default = "default_variants")]
    pub variants: Vec<String>,
    /// `key=value` overrides applied to every run (as `makd train --set`).
    #[serde(default)]
    pub set: Vec<String>,
    /// Aspect-count sweep: each Q adds a variant `makd-q<Q>` using the first Q questions.
    #[serde(default)]
    pub aspect_counts: Vec<usize>,
    /// α sweep: each value adds a variant `makd-alpha<α>`.
    #[serde(default)]
    pub alphas: Vec<f64>,
    /// Test images whose per-question answers (teacher vs student) the report draws.
    #[serde(default = "default_examples")]
    pub examples: usize,
    /// Test images in the 2-D embedding plot.
    #[serde(default = "default_embedding_points")]
    pub embedding_points: usize,
    #[serde(default)]
    pub kd: Option<KdTeacher>,
    /// Sentences added to the report's notes.
    #[serde(default)]
    pub notes: Vec<String>,
}

/// The teacher network of the KD variants: trained by the experiment from a config, or an existing run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KdTeacher {
    /// Train the teacher from this config (seed = the first seed) before the students.
    pub config: Option<PathBuf>,
    /// Or use a finished run dir.
    pub run_dir: Option<PathBuf>,
    /// Overrides for the teacher's training.
    #[serde(default)]
    pub set: Vec<String>,
    #[serde(default = "default_temperature")]
    pub temperature: f64,
    #[serde(default = "one")]
    pub weight: f64,
    #[serde(default = "one")]
    pub dkd_alpha: f64,
    #[serde(default = "eight")]
    pub dkd_beta: f64,
}

fn default_seeds() -> Vec<u64> {
    vec![0, 1, 2]
}
fn default_variants() -> Vec<String> {
    ["baseline", "makd", "random-target", "shuffled-target"]
        .map(String::from)
        .to_vec()
}
fn default_examples() -> usize {
    4
}
fn default_embedding_points() -> usize {
    500
}
fn default_temperature() -> f64 {
    4.0
}
fn one() -> f64 {
    1.0
}
fn eight() -> f64 {
    8.0
}

pub const KNOWN_VARIANTS: [&str; 7] = [
    "baseline",
    "makd",
    "random-target",
    "shuffled-target",
    "kd",
    "makd+kd",
    "dkd",
];

impl ExperimentConfig {
    pub fn load(path: &Path) -> Result<ExperimentConfig> {
        let text = std::fs::read_to_string(path).at(path)?;
        let at = path.display().to_string();
        let mut cfg: ExperimentConfig = toml::from_str(&text).map_err(|e| {
            input(
                e.message().to_string(),
                &at,
                "see the experiment config example in the README",
            )
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let abs = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        abs(&mut cfg.train_config);
        if let Some(kd) = cfg.kd.as_mut() {
            kd.config.as_mut().map(abs);
            kd.run_dir.as_mut().map(abs);
        }
        cfg.validate(&at)?;
        Ok(cfg)
    }

    pub fn validate(&self, at: &str) -> Result<()> {
        if self.seeds.is_empty() {
            return Err(input(
                "seeds is empty",
                at,
                "give at least one seed; three make an interval",
            ));
        }
        for v in &self.variants {
            if !KNOWN_VARIANTS.contains(&v.as_str()) {
                return Err(input(
                    format!("unknown variant {v:?}"),
                    at,
                    format!("variants are {}", KNOWN_VARIANTS.join(", ")),
                ));
            }
        }
        let needs_kd = self.variants.iter().any(|v| v.contains("kd"));
        match &self.kd {
            None if needs_kd => {
                return Err(input(
                    "kd variants need a [kd] section",
                    at,
                    "set kd.config (a teacher config to train) or kd.run_dir",
                ))
            }
            Some(k) if needs_kd && (k.config.is_some() == k.run_dir.is_some()) => {
                return Err(input(
                    "[kd] needs exactly one of config and run_dir",
                    at,
                    "train a teacher from a config, or reuse a run",
                ))
            }
            _ => {}
        }
        if self.aspect_counts.contains(&0) || self.alphas.iter().any(|a| a.is_nan() || *a < 0.0) {
            return Err(input(
                "aspect_counts must be ≥ 1 and alphas ≥ 0",
                at,
                "e.g. aspect_counts = [5, 10, 25, 50]",
            ));
        }
        Ok(())
    }

    /// Every variant name in run order: the listed ones, then the sweeps.
    pub fn all_variants(&self) -> Vec<String> {
        let mut v = self.variants.clone();
        v.extend(self.aspect_counts.iter().map(|q| format!("makd-q{q}")));
        v.extend(self.alphas.iter().map(|a| format!("makd-alpha{a}")));
        v
    }
}
