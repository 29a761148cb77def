//! The score store: where a teacher's answers meet the student's training.
//!
//! A store is a directory (format version 1):
//! - `manifest.json` ([`Manifest`]): dataset description and fingerprint, the ordered image ids,
//!   the aspect-set hash and question ids, and the teacher's description (never an API key).
//! - `scores.log`: the append log ([`log`]), 24-byte checksummed records written as work
//!   completes and fsync'd in batches. It is the source of truth while labeling: reopening a store
//!   streams it once, cuts a torn tail off (kill -9 mid-write) and continues without losing or
//!   repeating a pair.
//! - `scores.safetensors`: the compacted matrix, `p_yes` `[images, Q]` f32 and `status`
//!   `[images, Q]` u8 (0 ok, 1 floored, 2 missing), written atomically by
//!   [`ScoreWriter::finish`]. Pairs never scored are status missing with `p_yes` NaN; their count
//!   is kept in the file's metadata (`never_scored`).
//!
//! [`writer::ScoreWriter`] makes or resumes a store and [`writer::merge`] joins the shards of a
//! `--shard i/n` run; [`ScoreStore`] reads a finished one for training.

pub mod derive;
pub mod log;
mod shard;
pub mod writer;

pub use shard::Shard;

use crate::error::{input, IoContext, Result};
use crate::files;
use crate::teacher::{Status, TeacherInfo};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

pub const FORMAT_VERSION: u32 = 1;
pub const MANIFEST_FILE: &str = "manifest.json";
pub const LOG_FILE: &str = "scores.log";
pub const MATRIX_FILE: &str = "scores.safetensors";

pub const STATUS_OK: u8 = Status::Ok.as_u8();
pub const STATUS_FLOORED: u8 = Status::Floored.as_u8();
pub const STATUS_MISSING: u8 = Status::Missing.as_u8();

/// What a store was made from. Two label runs may share a store only if their manifests are equal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format_version: u32,
    /// [`crate::data::Dataset::describe`] of the labelled dataset.
    pub dataset: String,
    pub dataset_fingerprint: String,
    /// Row order of the matrix.
    pub image_ids: Vec<String>,
    /// [`crate::aspects::AspectSet::hash`] of the questions asked.
    pub aspect_hash: String,
    /// Column order of the matrix.
    pub question_ids: Vec<String>,
    pub teacher: TeacherInfo,
    /// Written `[i, n]`: this store holds the images with `index % n == i` (`--shard i/n`).
    pub shard: Option<Shard>,
}

impl Manifest {
    pub fn num_images(&self) -> usize {
        self.image_ids.len()
    }

    pub fn num_questions(&self) -> usize {
        self.question_ids.len()
    }

    /// Whether image `i` belongs to this store's shard.
    pub fn owns(&self, image: usize) -> bool {
        self.shard.is_none_or(|s| s.owns(image))
    }

    fn validate(&self, at: &str) -> Result<()> {
        if self.format_version != FORMAT_VERSION {
            return Err(input(
                format!(
                    "unsupported score store format_version {}",
                    self.format_version
                ),
                at,
                format!("this makd reads format_version {FORMAT_VERSION}: re-label with it"),
            ));
        }
        if self.question_ids.is_empty() || self.question_ids.len() > u16::MAX as usize {
            return Err(input(
                format!(
                    "a store needs 1..={} questions, got {}",
                    u16::MAX,
                    self.question_ids.len()
                ),
                at,
                "check the aspect set",
            ));
        }
        if self.image_ids.len() > u32::MAX as usize {
            return Err(input(
                "more than 2^32 images",
                at,
                "split the dataset into several stores",
            ));
        }
        Ok(())
    }

    /// The first field in which `self` (the stored manifest) and `other` differ, in words.
    fn difference(&self, other: &Manifest) -> Option<String> {
        if self.format_version != other.format_version {
            return Some(format!(
                "format version {} vs {}",
                self.format_version, other.format_version
            ));
        }
        if self.dataset_fingerprint != other.dataset_fingerprint
            || self.image_ids != other.image_ids
        {
            return Some(format!(
                "another dataset (store: {}, now: {})",
                self.dataset, other.dataset
            ));
        }
        if self.dataset != other.dataset {
            return Some(format!(
                "another dataset description (store: {}, now: {})",
                self.dataset, other.dataset
            ));
        }
        if self.aspect_hash != other.aspect_hash || self.question_ids != other.question_ids {
            return Some(format!(
                "another aspect set (store hash {}, now {})",
                short(&self.aspect_hash),
                short(&other.aspect_hash)
            ));
        }
        if !self.teacher.same_teacher(&other.teacher) {
            return Some(format!(
                "another teacher (store: {} {} {} mode, now: {} {} {} mode, or their prompts/tokens/settings differ)",
                self.teacher.backend,
                self.teacher.model,
                self.teacher.mode,
                other.teacher.backend,
                other.teacher.model,
                other.teacher.mode
            ));
        }
        if self.shard != other.shard {
            return Some(format!(
                "another shard (store: {}, now: {})",
                shard_str(self.shard),
                shard_str(other.shard)
            ));
        }
        None
    }
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

fn shard_str(s: Option<Shard>) -> String {
    s.map_or_else(|| "none".into(), |s| s.to_string())
}

fn read_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST_FILE);
    let m: Manifest = files::read_json(&path, "see README: score store format")?;
    m.validate(&path.display().to_string())?;
    Ok(m)
}

/// Counts over a store. `ok + floored + missing + never_scored == images × questions`:
/// `missing` are pairs the teacher could not answer, `never_scored` pairs no run has reached yet
/// (other shards, `--limit`, an interrupted run). Both are stored as status missing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreSummary {
    pub images: usize,
    pub questions: usize,
    pub ok: usize,
    pub floored: usize,
    pub missing: usize,
    pub never_scored: usize,
}

impl std::fmt::Display for StoreSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let total = (self.images * self.questions).max(1) as f64;
        let pct = |n: usize| 100.0 * n as f64 / total;
        write!(
            f,
            "{} images × {} questions: {} ok ({:.1}%), {} floored ({:.1}%), {} missing ({:.1}%), {} never scored ({:.1}%)",
            self.images,
            self.questions,
            self.ok,
            pct(self.ok),
            self.floored,
            pct(self.floored),
            self.missing,
            pct(self.missing),
            self.never_scored,
            pct(self.never_scored)
        )
    }
}

/// A finished store, read for training.
#[derive(Clone, Debug)]
pub struct ScoreStore {
    pub manifest: Manifest,
    p_yes: Vec<f32>,
    status: Vec<u8>,
    never_scored: usize,
}

impl ScoreStore {
    /// Read `manifest.json` and `scores.safetensors` and validate every pair.
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.join(MANIFEST_FILE).exists() {
            return Err(input(
                format!("no score store here ({MANIFEST_FILE} is missing)"),
                dir.display().to_string(),
                "make one with `makd label ... --out DIR`, or fix the path (aspects.scores)",
            ));
        }
        let manifest = read_manifest(dir)?;
        let path = dir.join(MATRIX_FILE);
        if !path.exists() {
            let hint = if dir.join(LOG_FILE).exists() {
                "labeling was interrupted or is still running: run `makd label` again with the same arguments to finish and compact it"
            } else {
                "this directory is not a finished score store: run `makd label` into it"
            };
            return Err(input(
                format!("{MATRIX_FILE} is missing"),
                dir.display().to_string(),
                hint,
            ));
        }
        let bytes = std::fs::read(&path).at(&path)?;
        let m = read_matrix(
            &bytes,
            &path,
            manifest.num_images(),
            manifest.num_questions(),
        )?;
        check_matrix_is_current(dir, m.log_bytes)?;
        let store = ScoreStore {
            manifest,
            p_yes: m.p_yes,
            status: m.status,
            never_scored: m.never_scored,
        };
        store.validate_values(&path.display().to_string())?;
        Ok(store)
    }

    /// A store built in memory (random or shuffled control targets); validated like a file.
    pub fn from_parts(manifest: Manifest, p_yes: Vec<f32>, status: Vec<u8>) -> Result<Self> {
        manifest.validate("score store manifest")?;
        let n = manifest.num_images() * manifest.num_questions();
        if p_yes.len() != n || status.len() != n {
            return Err(input(
                format!(
                    "p_yes has {} values and status {}, the manifest needs {} × {} = {n}",
                    p_yes.len(),
                    status.len(),
                    manifest.num_images(),
                    manifest.num_questions()
                ),
                "score store",
                "build one value per (image, question) pair, image-major",
            ));
        }
        let store = ScoreStore {
            manifest,
            p_yes,
            status,
            never_scored: 0,
        };
        store.validate_values("score store")?;
        Ok(store)
    }

    /// Write `manifest.json` and `scores.safetensors` atomically. Refuses a directory holding a
    /// label log: the log would disagree with the matrix on the next resume.
    pub fn save(&self, dir: &Path) -> Result<()> {
        if dir.join(LOG_FILE).exists() {
            return Err(input(
                format!("{LOG_FILE} exists: this directory holds a label run"),
                dir.display().to_string(),
                "save a derived store into a new directory",
            ));
        }
        std::fs::create_dir_all(dir).at(dir)?;
        files::write_json_atomic(&dir.join(MANIFEST_FILE), &self.manifest)?;
        write_matrix(
            &dir.join(MATRIX_FILE),
            self.manifest.num_images(),
            self.manifest.num_questions(),
            &self.p_yes,
            &self.status,
            self.never_scored,
            None,
        )
    }

    fn validate_values(&self, at: &str) -> Result<()> {
        let q = self.manifest.num_questions();
        for (k, (&p, &s)) in self.p_yes.iter().zip(&self.status).enumerate() {
            let bad = match Status::from_u8(s) {
                None => Some(format!("unknown status byte {s}")),
                Some(st) if st.is_usable() && !(0.0..=1.0).contains(&p) => {
                    Some(format!("p_yes {p} is not a probability"))
                }
                _ => None,
            };
            if let Some(what) = bad {
                return Err(input(
                    format!(
                        "{what} for image {:?}, question {:?}",
                        self.manifest.image_ids[k / q],
                        self.manifest.question_ids[k % q]
                    ),
                    at,
                    "the store is damaged or was written by a buggy tool: re-label it",
                ));
            }
        }
        Ok(())
    }

    /// Is this store for that dataset and that aspect set?
    pub fn check(&self, dataset_fingerprint: &str, aspect_hash: &str) -> Result<()> {
        if self.manifest.dataset_fingerprint != dataset_fingerprint {
            return Err(input(
                format!(
                    "the score store was made for another dataset ({}, fingerprint {}; this one has {})",
                    self.manifest.dataset,
                    short(&self.manifest.dataset_fingerprint),
                    short(dataset_fingerprint)
                ),
                "score store",
                "label this dataset (`makd label`), or train on the dataset and split the store was made for",
            ));
        }
        if self.manifest.aspect_hash != aspect_hash {
            return Err(input(
                format!(
                    "the score store was made for another aspect set (hash {}; this one has {})",
                    short(&self.manifest.aspect_hash),
                    short(aspect_hash)
                ),
                "score store",
                "use the aspects.json the store was made with, or re-label with this one",
            ));
        }
        Ok(())
    }

    pub fn num_images(&self) -> usize {
        self.manifest.num_images()
    }

    pub fn num_questions(&self) -> usize {
        self.manifest.num_questions()
    }

    /// P(yes) of every question about image `image` (NaN where status is missing).
    pub fn p_yes_row(&self, image: usize) -> &[f32] {
        let q = self.num_questions();
        &self.p_yes[image * q..(image + 1) * q]
    }

    /// Status bytes of image `image` ([`STATUS_OK`], [`STATUS_FLOORED`], [`STATUS_MISSING`]).
    pub fn status_row(&self, image: usize) -> &[u8] {
        let q = self.num_questions();
        &self.status[image * q..(image + 1) * q]
    }

    /// 1.0 where the pair has a target (ok or floored), 0.0 where it is missing.
    pub fn mask_row(&self, image: usize) -> Vec<f32> {
        self.status_row(image)
            .iter()
            .map(|&s| if Status::byte_is_usable(s) { 1.0 } else { 0.0 })
            .collect()
    }

    /// Fill one row of training targets and mask: missing pairs get target 0 and mask 0, so a
    /// masked loss never sees a NaN.
    pub fn fill_row(&self, image: usize, target: &mut [f32], mask: &mut [f32]) {
        for (k, (&p, &s)) in self
            .p_yes_row(image)
            .iter()
            .zip(self.status_row(image))
            .enumerate()
        {
            let usable = Status::byte_is_usable(s);
            target[k] = if usable { p } else { 0.0 };
            mask[k] = if usable { 1.0 } else { 0.0 };
        }
    }

    /// The whole matrix, image-major.
    pub fn p_yes(&self) -> &[f32] {
        &self.p_yes
    }

    pub fn status(&self) -> &[u8] {
        &self.status
    }

    pub fn summary(&self) -> StoreSummary {
        let mut s = StoreSummary {
            images: self.num_images(),
            questions: self.num_questions(),
            ..StoreSummary::default()
        };
        for &b in &self.status {
            match b {
                STATUS_OK => s.ok += 1,
                STATUS_FLOORED => s.floored += 1,
                _ => s.missing += 1,
            }
        }
        s.never_scored = self.never_scored.min(s.missing);
        s.missing -= s.never_scored;
        s
    }
}

/// Write the matrix as safetensors, atomically ([`files::write_atomic_with`]). Written by hand rather than through
/// `safetensors::serialize` so a 1.3M × 50 matrix is streamed from the vectors without a second
/// in-memory copy; the layout follows the safetensors spec and the tests read it back with the
/// safetensors crate.
fn write_matrix(
    path: &Path,
    images: usize,
    questions: usize,
    p_yes: &[f32],
    status: &[u8],
    never_scored: usize,
    log_bytes: Option<u64>,
) -> Result<()> {
    let n = images * questions;
    debug_assert_eq!(p_yes.len(), n);
    debug_assert_eq!(status.len(), n);
    let mut meta = serde_json::json!({
        "format": "makd-scores",
        "format_version": FORMAT_VERSION.to_string(),
        "never_scored": never_scored.to_string(),
    });
    if let Some(b) = log_bytes {
        // How long the log was when it was compacted: a longer (or cut) log means this matrix
        // is stale, see `ScoreStore::open`.
        meta["log_bytes"] = b.to_string().into();
    }
    let header = serde_json::json!({
        "__metadata__": meta,
        "p_yes": {"dtype": "F32", "shape": [images, questions], "data_offsets": [0, 4 * n]},
        "status": {"dtype": "U8", "shape": [images, questions], "data_offsets": [4 * n, 5 * n]},
    });
    let mut header = serde_json::to_vec(&header).expect("plain JSON");
    // The spec pads the header with spaces so the data starts 8-byte aligned.
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    files::write_atomic_with(path, |w| {
        w.write_all(&(header.len() as u64).to_le_bytes())?;
        w.write_all(&header)?;
        for chunk in p_yes.chunks(1 << 16) {
            let bytes: Vec<u8> = chunk.iter().flat_map(|v| v.to_le_bytes()).collect();
            w.write_all(&bytes)?;
        }
        w.write_all(status)
    })
}

/// A store whose log has moved on since the matrix was compacted (a later `makd label` run that
/// was interrupted) would train on the old answers without a word: refuse it. Matrices from
/// before `log_bytes` was recorded fall back to comparing modification times.
fn check_matrix_is_current(dir: &Path, log_bytes: Option<u64>) -> Result<()> {
    let log_path = dir.join(LOG_FILE);
    let Ok(log_meta) = std::fs::metadata(&log_path) else {
        return Ok(());
    };
    let stale = match log_bytes {
        Some(b) => log_meta.len() != b,
        None => {
            let matrix_time = std::fs::metadata(dir.join(MATRIX_FILE)).and_then(|m| m.modified());
            match (log_meta.modified(), matrix_time) {
                (Ok(l), Ok(m)) => l > m,
                _ => false,
            }
        }
    };
    if stale {
        return Err(input(
            format!("{MATRIX_FILE} is older than {LOG_FILE}: a later labeling run added answers and did not finish"),
            dir.display().to_string(),
            "run the same `makd label` command again: it resumes from the log and compacts the matrix",
        ));
    }
    Ok(())
}

struct Matrix {
    p_yes: Vec<f32>,
    status: Vec<u8>,
    never_scored: usize,
    /// Length of the log it was compacted from (absent in matrices written without a log).
    log_bytes: Option<u64>,
}

fn read_matrix(bytes: &[u8], path: &Path, images: usize, questions: usize) -> Result<Matrix> {
    let at = path.display().to_string();
    let bad = |what: String| {
        input(
            what,
            at.clone(),
            "the store is damaged: re-run `makd label` into it (the log rebuilds the matrix) or re-label",
        )
    };
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| bad(format!("not a valid safetensors file: {e}")))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| bad(format!("not a valid safetensors file: {e}")))?;
    let field = |k: &str| {
        meta.metadata()
            .as_ref()
            .and_then(|m| m.get(k))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let never_scored = field("never_scored").unwrap_or(0) as usize;
    let log_bytes = field("log_bytes");
    let get = |name: &str, dtype: safetensors::Dtype| {
        let t = st
            .tensor(name)
            .map_err(|_| bad(format!("tensor {name:?} is missing")))?;
        if t.dtype() != dtype || t.shape() != [images, questions] {
            return Err(bad(format!(
                "tensor {name:?} is {:?} {:?}, the manifest needs {dtype:?} [{images}, {questions}]",
                t.dtype(),
                t.shape()
            )));
        }
        Ok(t.data())
    };
    let p_yes = get("p_yes", safetensors::Dtype::F32)?
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let status = get("status", safetensors::Dtype::U8)?.to_vec();
    Ok(Matrix {
        p_yes,
        status,
        never_scored,
        log_bytes,
    })
}

#[cfg(test)]
mod tests;
