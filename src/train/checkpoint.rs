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
    pub best_test_top1: f64,
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
