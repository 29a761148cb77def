//! A run dir: its files, what its model's outputs mean (`model.json`), and the checks that keep a
//! resume on the run it continues (same config, same data, same questions).

use crate::error::{input, IoContext, Result};
use crate::files;
use crate::train::config::TrainConfig;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What `makd train` writes into a run dir; `--fresh` removes these and nothing else.
const RUN_DIR_ENTRIES: [&str; 5] = [
    "config.toml",
    "model.json",
    "metrics.jsonl",
    "summary.json",
    "checkpoints",
];

/// The files of a run dir (see ARCHITECTURE.md: run dir).
#[derive(Clone, Debug)]
pub struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        RunDir { root: root.into() }
    }
    pub fn config(&self) -> PathBuf {
        self.root.join("config.toml")
    }
    pub fn metrics(&self) -> PathBuf {
        self.root.join("metrics.jsonl")
    }
    pub fn summary(&self) -> PathBuf {
        self.root.join("summary.json")
    }
    pub fn checkpoint(&self, which: &str) -> PathBuf {
        self.root.join("checkpoints").join(which)
    }
    /// The directory holding checkpoint `which` (`last` or `best`; `<which>.old` after a crash
    /// mid-save), or an input error when the run has none.
    pub fn weights(&self, which: &str) -> Result<PathBuf> {
        crate::train::checkpoint::existing(&self.checkpoint(which)).ok_or_else(|| {
            input(
                format!("no {which} checkpoint"),
                self.root.display().to_string(),
                "train first (makd train), or pass --checkpoint last",
            )
        })
    }

    pub fn model_info(&self) -> PathBuf {
        self.root.join("model.json")
    }
    pub fn load_model_info(&self) -> Result<ModelInfo> {
        files::read_json(&self.model_info(), "model.json is written by makd train")
    }
    /// A run dir is a directory holding `config.toml` beside `model.json` or `checkpoints/`:
    /// what `makd train` leaves after its first moments.
    pub fn is_run_dir(&self) -> bool {
        self.config().is_file()
            && (self.model_info().is_file() || self.root.join("checkpoints").is_dir())
    }

    /// Whether `--fresh` may start over here: a missing path, an empty directory or a run dir.
    /// Anything else is refused and left as it is, so a mistyped `--run-dir` never deletes a
    /// user's files.
    pub fn check_fresh(&self) -> Result<()> {
        let root = &self.root;
        if !root.exists() {
            return Ok(());
        }
        let refuse = |what: &str| {
            input(
                format!("{what}: --fresh would delete files makd train did not write"),
                root.display().to_string(),
                "pass --fresh only with a run dir of makd train (config.toml with model.json or \
                 checkpoints/), or use a new or empty --run-dir",
            )
        };
        if !root.is_dir() {
            return Err(refuse("not a directory"));
        }
        let empty = std::fs::read_dir(root).at(root)?.next().is_none();
        if empty {
            return Ok(());
        }
        if !self.is_run_dir() {
            return Err(refuse(
                "not a run dir (no config.toml with model.json or checkpoints/)",
            ));
        }
        Ok(())
    }

    /// Remove the run's own files for `--fresh` (after [`Self::check_fresh`]); files a user put
    /// beside them stay.
    pub fn clear_for_fresh(&self) -> Result<()> {
        self.check_fresh()?;
        let root = &self.root;
        for name in RUN_DIR_ENTRIES {
            let p = root.join(name);
            if p.is_dir() {
                std::fs::remove_dir_all(&p).at(&p)?;
            } else if p.exists() {
                std::fs::remove_file(&p).at(&p)?;
            }
        }
        Ok(())
    }

    /// The resolved config saved by `makd train`.
    pub fn load_config(&self) -> Result<TrainConfig> {
        let path = self.config();
        if !path.exists() {
            return Err(input(
                "not a run dir (no config.toml)",
                self.root.display().to_string(),
                "pass the --run-dir of a makd train run",
            ));
        }
        TrainConfig::load(&path, &[])
    }
}

/// `model.json`: what the outputs of the model mean (class names, then aspect questions), so
/// `eval` and `predict` need nothing but the run dir.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub arch: String,
    pub classes: Vec<String>,
    pub num_aspects: usize,
    /// Aspect questions in output order (ids and texts), when the aspect set was given.
    pub questions: Vec<crate::aspects::Question>,
    /// Fingerprints of the full train and test splits the run was trained on: a resume refuses
    /// a dataset whose images or labels changed (absent in run dirs of older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_fingerprint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_fingerprint: Option<String>,
}

impl ModelInfo {
    /// The model's outputs are named by `classes`; a dataset whose class list differs (a class
    /// added, removed or renamed, so that the sorted order shifts every label) would be scored
    /// against the wrong outputs.
    pub fn check_classes(&self, dataset_classes: &[String], run_dir: &Path) -> Result<()> {
        if self.classes == dataset_classes {
            return Ok(());
        }
        Err(input(
            format!(
                "the dataset's classes differ from those the run was trained on: {}",
                class_difference(&self.classes, dataset_classes)
            ),
            run_dir.join("model.json").display().to_string(),
            format!(
                "the model's outputs are model.json's classes {}, the dataset now has {}: restore \
                 the dataset the run was trained on, or train a new run on this one (another \
                 --run-dir)",
                show_list(&self.classes),
                show_list(dataset_classes)
            ),
        ))
    }

    /// Question ids in output order.
    pub fn question_ids(&self) -> Vec<String> {
        self.questions.iter().map(|q| q.id.clone()).collect()
    }
}

/// `[a, b, c]`, cut after 20 names.
pub(crate) fn show_list(names: &[String]) -> String {
    const SHOWN: usize = 20;
    let mut s = names
        .iter()
        .take(SHOWN)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        s.push_str(&format!(", … ({} in all)", names.len()));
    }
    format!("[{s}]")
}

/// What differs between two class lists, in words: names only in one of them, else the first
/// position where their order differs.
fn class_difference(model: &[String], dataset: &[String]) -> String {
    let only = |a: &[String], b: &[String]| -> Vec<String> {
        a.iter().filter(|x| !b.contains(x)).cloned().collect()
    };
    let (gone, new) = (only(model, dataset), only(dataset, model));
    let mut parts = Vec::new();
    if !new.is_empty() {
        parts.push(format!("new in the dataset {}", show_list(&new)));
    }
    if !gone.is_empty() {
        parts.push(format!("no longer in the dataset {}", show_list(&gone)));
    }
    if parts.is_empty() {
        let i = model
            .iter()
            .zip(dataset)
            .position(|(a, b)| a != b)
            .unwrap_or(model.len().min(dataset.len()));
        parts.push(format!(
            "the same names in another order (label {i} is {:?} in model.json, {:?} now)",
            model.get(i).map_or("", String::as_str),
            dataset.get(i).map_or("", String::as_str)
        ));
    }
    parts.join("; ")
}

/// A resume continues the saved run only on the data it was trained on: the same classes in
/// the same order, the same images and labels, the same questions.
pub(crate) fn check_resumable(saved: &ModelInfo, now: &ModelInfo, root: &Path) -> Result<()> {
    saved.check_classes(&now.classes, root)?;
    let changed = |split: &str, a: &Option<String>, b: &Option<String>| {
        match (a, b) {
        (Some(a), Some(b)) if a != b => Err(input(
            format!(
                "the {split} split changed since the run started (dataset fingerprint {} in model.json, {} now: images or labels were added, removed or moved)",
                &a[..a.len().min(12)],
                &b[..b.len().min(12)]
            ),
            root.join("model.json").display().to_string(),
            "restore the dataset the run was trained on, or start over with --fresh (or another --run-dir)",
        )),
        _ => Ok(()),
    }
    };
    changed("train", &saved.train_fingerprint, &now.train_fingerprint)?;
    changed("test", &saved.test_fingerprint, &now.test_fingerprint)?;
    if saved.question_ids() != now.question_ids() {
        return Err(input(
            format!(
                "the aspect questions changed since the run started ({} in model.json, {} now)",
                show_list(&saved.question_ids()),
                show_list(&now.question_ids())
            ),
            root.join("model.json").display().to_string(),
            "use the score store the run was trained with, or start over with --fresh",
        ));
    }
    Ok(())
}

/// The dotted keys whose values differ between two TOML documents, with both values
/// (`train.epochs: 3 in the run dir, 5 now`).
pub(crate) fn config_diff(a: &str, b: &str) -> Vec<String> {
    fn walk(prefix: &str, a: Option<&toml::Value>, b: Option<&toml::Value>, out: &mut Vec<String>) {
        match (a, b) {
            (Some(toml::Value::Table(x)), Some(toml::Value::Table(y))) => {
                let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, x.get(k), y.get(k), out);
                }
            }
            (x, y) if x != y => {
                let show = |v: Option<&toml::Value>| v.map_or("(unset)".into(), |v| v.to_string());
                out.push(format!(
                    "{prefix}: {} in the run dir, {} now",
                    show(x),
                    show(y)
                ))
            }
            _ => {}
        }
    }
    let parse = |s: &str| s.parse::<toml::Value>().ok();
    let mut out = Vec::new();
    walk("", parse(a).as_ref(), parse(b).as_ref(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_differences_in_words() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let d = class_difference(&v(&["b", "c"]), &v(&["a", "b", "c"]));
        assert_eq!(d, "new in the dataset [a]");
        let d = class_difference(&v(&["b", "c"]), &v(&["a", "b"]));
        assert_eq!(d, "new in the dataset [a]; no longer in the dataset [c]");
        let d = class_difference(&v(&["x", "y"]), &v(&["y", "x"]));
        assert!(d.contains("another order") && d.contains("label 0"), "{d}");
        let many: Vec<String> = (0..30).map(|i| format!("c{i:02}")).collect();
        assert!(show_list(&many).ends_with(", … (30 in all)]"));
    }
}
