//! `experiment.toml`: which variants, how many seeds, what they share.
//!
//! [`ExperimentFile`] is the file as written (variant names as strings); [`ExperimentConfig`] is
//! what an experiment runs, made from it by [`ExperimentConfig::load`], the one place a config is
//! parsed and validated: `makd experiment` and `makd demo` both go through it.

use crate::error::{input, Error, IoContext, Result};
use crate::experiment::variant::{Variant, VARIANT_NAMES};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// `experiment.toml` as a user writes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentFile {
    /// Default: the config file's name without `.toml`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The training config every variant starts from (relative to this file). Aspect variants need
    /// its `aspects.scores` (the teacher's store); `aspects.test_scores` adds aspect metrics.
    pub train_config: PathBuf,
    /// One run per variant per seed. Three or more make intervals meaningful.
    #[serde(default = "default_seeds")]
    pub seeds: Vec<u64>,
    /// See [`VARIANT_NAMES`].
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
    /// Sentences added to the report's notes.
    #[serde(default)]
    pub notes: Vec<String>,
    /// Last: TOML writes a table after every plain value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kd: Option<KdTeacher>,
}

/// A validated experiment: variants parsed, paths absolute, `[kd]` present exactly when a
/// variant needs it. Serialized (variant names as the user wrote them) into `results.json`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ExperimentConfig {
    pub name: String,
    pub train_config: PathBuf,
    pub seeds: Vec<u64>,
    /// The listed variants, in the config's order.
    pub variants: Vec<Variant>,
    pub set: Vec<String>,
    pub aspect_counts: Vec<usize>,
    pub alphas: Vec<f64>,
    pub examples: usize,
    pub embedding_points: usize,
    pub kd: Option<KdTeacher>,
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
/// The core comparison: the method, the baseline and both controls.
fn default_variants() -> Vec<String> {
    [
        Variant::Baseline,
        Variant::Makd,
        Variant::RandomTarget,
        Variant::ShuffledTarget,
    ]
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

impl ExperimentFile {
    /// A file with every default but the two keys a config must give.
    pub fn new(train_config: impl Into<PathBuf>) -> ExperimentFile {
        ExperimentFile {
            name: None,
            train_config: train_config.into(),
            seeds: default_seeds(),
            variants: default_variants(),
            set: vec![],
            aspect_counts: vec![],
            alphas: vec![],
            examples: default_examples(),
            embedding_points: default_embedding_points(),
            notes: vec![],
            kd: None,
        }
    }
}

impl ExperimentConfig {
    /// Read, parse and validate an `experiment.toml`; relative paths are relative to the file.
    pub fn load(path: &Path) -> Result<ExperimentConfig> {
        let text = std::fs::read_to_string(path).at(path)?;
        let at = path.display().to_string();
        let file: ExperimentFile = toml::from_str(&text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            input(
                e.message().to_string(),
                match line {
                    Some(l) => format!("{at}:{l}"),
                    None => at.clone(),
                },
                "see the experiment config example in the README; unknown keys are errors",
            )
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let default_name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Self::from_file(file, &base, &default_name, &at)
    }

    fn from_file(
        mut file: ExperimentFile,
        base: &Path,
        default_name: &str,
        at: &str,
    ) -> Result<ExperimentConfig> {
        let abs = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        abs(&mut file.train_config);
        if let Some(kd) = file.kd.as_mut() {
            kd.config.as_mut().map(abs);
            kd.run_dir.as_mut().map(abs);
        }
        let variants = file
            .variants
            .iter()
            .map(|v| v.parse::<Variant>().map_err(|e| located(e, at)))
            .collect::<Result<Vec<_>>>()?;
        let cfg = ExperimentConfig {
            name: file.name.unwrap_or_else(|| default_name.to_string()),
            train_config: file.train_config,
            seeds: file.seeds,
            variants,
            set: file.set,
            aspect_counts: file.aspect_counts,
            alphas: file.alphas,
            examples: file.examples,
            embedding_points: file.embedding_points,
            kd: file.kd,
            notes: file.notes,
        };
        cfg.validate(at)?;
        Ok(cfg)
    }

    fn validate(&self, at: &str) -> Result<()> {
        let at_key = |key: &str| format!("{at}: {key}");
        if self.seeds.is_empty() {
            return Err(input(
                "no seeds: an experiment needs at least one run per variant",
                at_key("seeds"),
                "give at least one seed, e.g. seeds = [0, 1, 2]; three make an interval",
            ));
        }
        if let Some(s) = first_repeat(&self.seeds) {
            return Err(input(
                format!("seed {s} is listed twice"),
                at_key("seeds"),
                "each seed names one run dir (runs/<variant>/seed<k>); list each once",
            ));
        }
        if self.aspect_counts.contains(&0) {
            return Err(input(
                "aspect_counts must be ≥ 1",
                at_key("aspect_counts"),
                "e.g. aspect_counts = [5, 10, 25, 50]",
            ));
        }
        if self.alphas.iter().any(|a| !a.is_finite() || *a < 0.0) {
            return Err(input(
                "alphas must be finite and ≥ 0",
                at_key("alphas"),
                "e.g. alphas = [1.0, 4.0, 8.0]",
            ));
        }
        let all = self.all_variants();
        if all.is_empty() {
            return Err(input(
                "no variants to run",
                at_key("variants"),
                format!("list some of: {VARIANT_NAMES}"),
            ));
        }
        if let Some(v) = first_repeat(&all) {
            return Err(input(
                format!(
                    "variant {v} is listed twice (variants, aspect_counts and alphas together)"
                ),
                at_key("variants"),
                "each variant names one run dir (runs/<variant>/); list it once",
            ));
        }
        let kd_variants: Vec<String> = all
            .iter()
            .filter(|v| v.uses_kd_teacher())
            .map(Variant::to_string)
            .collect();
        match &self.kd {
            None if !kd_variants.is_empty() => Err(input(
                format!(
                    "variant(s) {} need a teacher network, and there is no [kd] section",
                    kd_variants.join(", ")
                ),
                at,
                "add [kd] with config = \"teacher.toml\" (trained by the experiment) or \
                 run_dir = \"runs/teacher\", or drop the KD variants (kd, dkd, makd+kd)",
            )),
            Some(_) if kd_variants.is_empty() => Err(input(
                "[kd] is set but no variant uses a teacher network",
                at_key("kd"),
                "add kd, dkd or makd+kd to variants, or remove the [kd] section",
            )),
            Some(k) if k.config.is_some() == k.run_dir.is_some() => Err(input(
                "[kd] needs exactly one of config and run_dir",
                at_key("kd"),
                "train a teacher from a config, or reuse a run",
            )),
            _ => Ok(()),
        }
    }

    /// Every variant in run order: the listed ones, then the sweeps.
    pub fn all_variants(&self) -> Vec<Variant> {
        let mut v = self.variants.clone();
        v.extend(self.aspect_counts.iter().map(|&q| Variant::MakdQ(q)));
        v.extend(self.alphas.iter().map(|&a| Variant::MakdAlpha(a)));
        v
    }

    /// True when some variant needs the `[kd]` teacher network's logits.
    pub fn needs_kd_teacher(&self) -> bool {
        self.all_variants().iter().any(|v| v.uses_kd_teacher())
    }
}

/// Point an error raised about a key at the file it came from.
fn located(e: Error, file: &str) -> Error {
    match e {
        Error::Input { what, at, hint } => input(what, format!("{file}: {at}"), hint),
        e => e,
    }
}

fn first_repeat<T: PartialEq + Copy>(xs: &[T]) -> Option<T> {
    xs.iter()
        .enumerate()
        .find(|(i, x)| xs[..*i].contains(x))
        .map(|(_, x)| *x)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml: &str) -> Result<ExperimentConfig> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exp.toml");
        std::fs::write(&path, toml).unwrap();
        ExperimentConfig::load(&path)
    }

    fn err(toml: &str) -> String {
        let e = load(toml).unwrap_err();
        assert_eq!(e.exit_code(), 2, "{e}");
        e.report()
    }

    #[test]
    fn only_train_config_gives_the_core_comparison() {
        let cfg = load("train_config = \"makd.toml\"\n").unwrap();
        assert_eq!(
            cfg.all_variants(),
            [
                Variant::Baseline,
                Variant::Makd,
                Variant::RandomTarget,
                Variant::ShuffledTarget
            ]
        );
        assert_eq!(cfg.seeds, [0, 1, 2]);
        assert_eq!(cfg.name, "exp");
        assert!(cfg.train_config.is_absolute() && cfg.train_config.ends_with("makd.toml"));
        assert!(cfg.kd.is_none() && !cfg.needs_kd_teacher());
    }

    #[test]
    fn makd_does_not_need_kd() {
        // "makd" contains "kd": the old substring check asked for [kd] here.
        let cfg = load(
            "train_config = \"t.toml\"\nvariants = [\"makd\"]\naspect_counts = [5]\nalphas = [1.0]\n",
        )
        .unwrap();
        assert_eq!(
            cfg.all_variants(),
            [Variant::Makd, Variant::MakdQ(5), Variant::MakdAlpha(1.0)]
        );
        assert!(!cfg.needs_kd_teacher());
    }

    #[test]
    fn kd_section_is_required_exactly_with_kd_variants() {
        for v in ["kd", "dkd", "makd+kd"] {
            let msg = err(&format!(
                "train_config = \"t.toml\"\nvariants = [\"baseline\", \"{v}\"]\n"
            ));
            assert!(
                msg.contains(&format!("variant(s) {v} need a teacher network")),
                "{msg}"
            );
            assert!(msg.contains("hint: add [kd]"), "{msg}");
        }
        let cfg = load(
            "train_config = \"t.toml\"\nvariants = [\"makd\", \"kd\"]\n[kd]\nconfig = \"teacher.toml\"\n",
        )
        .unwrap();
        assert!(cfg.needs_kd_teacher());
        assert!(cfg.kd.unwrap().config.unwrap().is_absolute());
        // A [kd] no variant uses would be parsed and never act.
        let msg = err("train_config = \"t.toml\"\n[kd]\nconfig = \"teacher.toml\"\n");
        assert!(msg.contains("[kd] is set but no variant uses"), "{msg}");
        let msg = err("train_config = \"t.toml\"\nvariants = [\"kd\"]\n[kd]\n");
        assert!(msg.contains("exactly one of config and run_dir"), "{msg}");
    }

    #[test]
    fn unknown_variants_and_keys_are_refused_with_hints() {
        let msg = err("train_config = \"t.toml\"\nvariants = [\"baseline\", \"mkad\"]\n");
        assert!(
            msg.contains("exp.toml: variants: unknown variant \"mkad\""),
            "{msg}"
        );
        assert!(
            msg.contains(&format!("hint: variants are {VARIANT_NAMES}")),
            "{msg}"
        );
        let msg = err("train_config = \"t.toml\"\nvariant = [\"makd\"]\n");
        assert!(msg.contains("unknown field `variant`"), "{msg}");
        assert!(msg.contains("exp.toml:2"), "{msg}");
    }

    #[test]
    fn seeds_and_sweeps_are_checked() {
        let msg = err("train_config = \"t.toml\"\nseeds = []\n");
        assert!(
            msg.contains("no seeds") && msg.contains("hint: give at least one seed"),
            "{msg}"
        );
        assert!(
            err("train_config = \"t.toml\"\nseeds = [1, 1]\n").contains("seed 1 is listed twice")
        );
        assert!(err("train_config = \"t.toml\"\naspect_counts = [0]\n").contains("≥ 1"));
        assert!(err("train_config = \"t.toml\"\nalphas = [-1.0]\n").contains("alphas"));
        let msg = err("train_config = \"t.toml\"\nvariants = [\"makd-q5\"]\naspect_counts = [5]\n");
        assert!(msg.contains("variant makd-q5 is listed twice"), "{msg}");
        assert!(err("train_config = \"t.toml\"\nvariants = []\n").contains("no variants"));
    }

    #[test]
    fn a_file_written_by_makd_loads_back() {
        // What `makd demo` does: build the file, write it as TOML, load it like a user's.
        let mut file = ExperimentFile::new("train.toml");
        file.name = Some("demo".into());
        file.seeds = vec![3, 4];
        file.variants.push("kd".into());
        file.notes = vec!["a note".into()];
        file.kd = Some(KdTeacher {
            config: Some("teacher.toml".into()),
            run_dir: None,
            set: vec![],
            temperature: 2.0,
            weight: 1.0,
            dkd_alpha: 1.0,
            dkd_beta: 8.0,
        });
        let cfg = load(&toml::to_string(&file).unwrap()).unwrap();
        assert_eq!(cfg.name, "demo");
        assert_eq!(cfg.seeds, [3, 4]);
        assert_eq!(cfg.variants.last(), Some(&Variant::Kd));
        assert_eq!(cfg.notes, ["a note"]);
        assert_eq!(cfg.kd.unwrap().temperature, 2.0);
    }

    #[test]
    fn the_validated_config_serializes_with_the_users_names() {
        let cfg = load(
            "name = \"n\"\ntrain_config = \"t.toml\"\nvariants = [\"makd+kd\", \"makd-alpha0.5\"]\n\
             [kd]\nrun_dir = \"runs/teacher\"\n",
        )
        .unwrap();
        let json = serde_json::to_value(&cfg).unwrap();
        assert_eq!(
            json["variants"],
            serde_json::json!(["makd+kd", "makd-alpha0.5"])
        );
        assert_eq!(json["name"], "n");
    }
}
