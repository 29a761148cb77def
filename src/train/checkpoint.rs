//! Checkpoints: `checkpoints/{last,best}/` each with `model.safetensors` (the model zoo's tensor
//! names), `optimizer.safetensors` and `state.json`.
//!
//! A checkpoint is written into a temp dir and swapped in by renames, so a crash at any moment leaves
//! a complete `last/` (or its previous version as `last.old/`, which [`load`] falls back to).

use crate::error::{input, IoContext, Result};
use crate::files;
use crate::train::optim::Optimizer;
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where training stands: enough to continue exactly.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Completed epochs.
    pub epoch: usize,
    /// Optimizer steps taken.
    pub step: u64,
    /// The task's best end-of-epoch score (test top-1 %, or test mAP), the epoch `best/` holds.
    #[serde(alias = "best_test_top1")]
    pub best_score: f64,
    pub best_epoch: usize,
    /// Training seconds so far (summed over resumes).
    pub seconds: f64,
}

pub fn save(dir: &Path, varmap: &VarMap, opt: &Optimizer, state: &State) -> Result<()> {
    let tmp = with_suffix(dir, "tmp");
    let old = with_suffix(dir, "old");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).at(&tmp)?;
    }
    std::fs::create_dir_all(&tmp).at(&tmp)?;
    let model = tmp.join("model.safetensors");
    varmap.save(&model)?;
    candle_core::safetensors::save(&opt.state_tensors(), tmp.join("optimizer.safetensors"))?;
    files::write_json_atomic(&tmp.join("state.json"), state)?;
    for f in ["model.safetensors", "optimizer.safetensors"] {
        std::fs::File::open(tmp.join(f))
            .and_then(|f| f.sync_all())
            .at(tmp.join(f))?;
    }
    if dir.exists() {
        if old.exists() {
            std::fs::remove_dir_all(&old).at(&old)?;
        }
        std::fs::rename(dir, &old).at(dir)?;
    }
    std::fs::rename(&tmp, dir).at(dir)?;
    if old.exists() {
        std::fs::remove_dir_all(&old).at(&old)?;
    }
    Ok(())
}

/// The checkpoints at the end of an epoch: `best` (when this epoch improved on the best) and
/// `last`. `best` is written first because `last` is what a resume trusts: once `last` says epoch
/// e is done and names e as the best, `best` already holds epoch e. A crash between the two leaves
/// `last` at epoch e − 1, so the resume trains epoch e again and rewrites `best`.
pub fn save_epoch(
    last: &Path,
    best: &Path,
    varmap: &VarMap,
    opt: &Optimizer,
    state: &State,
    improved: bool,
) -> Result<()> {
    if improved {
        save(best, varmap, opt, state)?;
    }
    save(last, varmap, opt, state)
}

/// The checkpoint dir to read: `dir`, or `dir.old` when a crash hit between the two renames.
pub fn existing(dir: &Path) -> Option<PathBuf> {
    if dir.join("state.json").exists() {
        return Some(dir.to_path_buf());
    }
    let old = with_suffix(dir, "old");
    old.join("state.json").exists().then_some(old)
}

/// Load weights into `varmap` (every parameter must be present) and return the state.
pub fn load_model(dir: &Path, varmap: &mut VarMap) -> Result<State> {
    let model = dir.join("model.safetensors");
    varmap.load(&model).map_err(|e| {
        input(
            format!("cannot load weights: {e}"),
            model.display().to_string(),
            "the checkpoint does not match the model in config.toml",
        )
    })?;
    files::read_json(
        &dir.join("state.json"),
        "state.json is written by makd train",
    )
}

pub fn load_optimizer(
    dir: &Path,
    opt: &mut Optimizer,
    step: u64,
    device: &candle_core::Device,
) -> Result<()> {
    let path = dir.join("optimizer.safetensors");
    let tensors = candle_core::safetensors::load(&path, device)?;
    opt.load_state(tensors, step);
    Ok(())
}

fn with_suffix(dir: &Path, suffix: &str) -> PathBuf {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.with_file_name(format!("{name}.{suffix}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::optim::OptimConfig;
    use candle_core::{DType, Device};

    fn model() -> (VarMap, Optimizer) {
        let varmap = VarMap::new();
        let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        vb.get_with_hints(3, "w", candle_nn::Init::Const(0.5))
            .unwrap();
        let params = varmap
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        let opt = Optimizer::new(OptimConfig::default(), params);
        (varmap, opt)
    }

    /// A failure while `last` is saved (a crash between the two saves) must find `best` already
    /// written: `last` never names a best epoch that `best/` does not hold.
    #[test]
    fn best_is_written_before_last() {
        let dir = tempfile::tempdir().unwrap();
        let (last, best) = (dir.path().join("last"), dir.path().join("best"));
        let (varmap, opt) = model();
        let epoch1 = State {
            epoch: 1,
            best_epoch: 1,
            ..State::default()
        };
        save_epoch(&last, &best, &varmap, &opt, &epoch1, true).unwrap();
        // Saving `last` for epoch 2 fails: its temp dir cannot be made (a file blocks it).
        std::fs::write(dir.path().join("last.tmp"), b"in the way").unwrap();
        let epoch2 = State {
            epoch: 2,
            best_epoch: 2,
            ..State::default()
        };
        assert!(save_epoch(&last, &best, &varmap, &opt, &epoch2, true).is_err());
        let read = |d: &Path| -> State { files::read_json(&d.join("state.json"), "").unwrap() };
        assert_eq!(read(&best).epoch, 2, "best/ written before last/");
        assert_eq!(read(&last).epoch, 1, "last/ keeps the previous epoch");
        // Not improved: best/ stays as it was.
        std::fs::remove_file(dir.path().join("last.tmp")).unwrap();
        let epoch3 = State {
            epoch: 3,
            best_epoch: 2,
            ..State::default()
        };
        save_epoch(&last, &best, &varmap, &opt, &epoch3, false).unwrap();
        assert_eq!((read(&best).epoch, read(&last).epoch), (2, 3));
    }
}
