//! Classic knowledge distillation from a teacher network: its class logits for every training
//! image, computed once and cached in a file, then KD (Hinton) or DKD against the student's class
//! logits. Combined with MaKD this is the paper's "MaKD + KD".
//!
//! File format (`logits.safetensors`): tensor `logits` [N, C] f32; metadata `format_version`,
//! `dataset_fingerprint` (of the full split it was computed on) and `image_ids` (JSON list, row order).

use super::rows::{align_by_id, Rows};
use crate::data::Dataset;
use crate::error::{input, IoContext, Result};
use crate::files;
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KdConfig {
    /// Teacher logits for the training images (`makd eval --logits-out`). Absent: no KD term.
    pub logits: Option<PathBuf>,
    /// `kd` (Hinton) or `dkd` (decoupled KD).
    pub method: KdMethod,
    /// Weight of the KD term in the total loss.
    pub weight: f64,
    pub temperature: f64,
    /// DKD's target-class (α) and non-target (β) weights.
    pub dkd_alpha: f64,
    pub dkd_beta: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KdMethod {
    Kd,
    Dkd,
}

impl Default for KdConfig {
    fn default() -> Self {
        KdConfig {
            logits: None,
            method: KdMethod::Kd,
            weight: 1.0,
            temperature: 4.0,
            dkd_alpha: 1.0,
            dkd_beta: 8.0,
        }
    }
}

/// Teacher logits aligned with a dataset's indices.
pub struct TeacherLogits {
    pub c: usize,
    rows: Rows,
}

impl TeacherLogits {
    /// Write `logits` (row i = `ds` image i) for the full split `ds`.
    pub fn save(path: &Path, ds: &dyn Dataset, logits: &[Vec<f32>]) -> Result<()> {
        let c = logits.first().map_or(0, |r| r.len());
        let flat: Vec<f32> = logits.iter().flatten().copied().collect();
        let t = Tensor::from_vec(flat, (logits.len(), c), &Device::Cpu)?;
        let ids: Vec<&str> = (0..ds.len()).map(|i| ds.id(i)).collect();
        let meta: HashMap<String, String> = [
            ("format_version".to_string(), "1".to_string()),
            ("dataset_fingerprint".to_string(), ds.fingerprint()),
            (
                "image_ids".to_string(),
                serde_json::to_string(&ids).expect("ids serialize"),
            ),
        ]
        .into();
        let bytes = safetensors::serialize([("logits", &t)], Some(meta)).map_err(|e| {
            input(
                format!("cannot serialize logits: {e}"),
                path.display().to_string(),
                "report this bug",
            )
        })?;
        files::write_atomic(path, &bytes)
    }

    /// Load logits made for `full` (checked by fingerprint) and align them to `ds` by image id.
    pub fn load(path: &Path, full: &dyn Dataset, ds: &dyn Dataset) -> Result<TeacherLogits> {
        let at = path.display().to_string();
        let bytes = std::fs::read(path).at(path)?;
        let bad = |what: String| {
            input(
                what,
                at.clone(),
                "make it with `makd eval --run-dir TEACHER --split train --logits-out FILE`",
            )
        };
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| bad(format!("not a logits file: {e}")))?;
        let meta = meta.metadata().clone().unwrap_or_default();
        if meta.get("dataset_fingerprint").map(String::as_str) != Some(full.fingerprint().as_str())
        {
            return Err(bad(
                "the teacher logits were computed for another dataset".into()
            ));
        }
        let ids: Vec<String> =
            serde_json::from_str(meta.get("image_ids").map_or("[]", String::as_str))
                .map_err(|e| bad(format!("bad image_ids metadata: {e}")))?;
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| bad(format!("not a logits file: {e}")))?;
        let view = st
            .tensor("logits")
            .map_err(|e| bad(format!("no `logits` tensor: {e}")))?;
        let shape = view.shape().to_vec();
        if shape.len() != 2 || shape[0] != ids.len() || view.dtype() != safetensors::Dtype::F32 {
            return Err(bad(format!(
                "`logits` must be f32 [{}, C], found {:?} {:?}",
                ids.len(),
                view.dtype(),
                shape
            )));
        }
        let c = shape[1];
        let all: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if all.iter().any(|x| !x.is_finite()) {
            return Err(bad(
                "the teacher logits contain NaN or infinite values".into()
            ));
        }
        let src = align_by_id(&ids, ds, |id| bad(format!("no logits for image {id:?}")))?;
        let rows = Rows::from_fn(ds.len(), c, |i, row| {
            row.copy_from_slice(&all[src[i] * c..(src[i] + 1) * c])
        });
        Ok(TeacherLogits { c, rows })
    }

    pub fn batch(&self, indices: &[usize], device: &Device) -> Result<Tensor> {
        self.rows.batch(indices, device)
    }
}
