//! The resumable writer: one streaming replay of the log on open, appends while labeling,
//! compaction on finish.

use super::log::{self, Record, Replay};
use super::{
    read_manifest, read_matrix, write_matrix, Manifest, StoreSummary, LOG_FILE, MANIFEST_FILE,
    MATRIX_FILE, STATUS_FLOORED, STATUS_MISSING, STATUS_OK,
};
use crate::error::{input, IoContext, Result};
use crate::files;
use crate::teacher::{Score, Status};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The lock file of a store being written (see [`ScoreWriter`]).
pub const LOCK_FILE: &str = "scores.lock";

/// Take the store's write lock, or say who holds it. The lock is the kernel's (flock), so it is
/// released when the process dies, kill -9 included: no stale lock files to clean up.
fn lock_store(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .at(&path)?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(input(
            "another makd process is writing this score store",
            dir.display().to_string(),
            "wait for that `makd label` (or `label merge`) to finish, or label into another --out",
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(crate::error::io(&path, e)),
    }
}

/// Status byte of a pair no run has reached yet; never written to disk.
const NEVER: u8 = 0xFF;
/// Durability batch: a crash loses at most this many records or this much time of work.
const SYNC_EVERY_RECORDS: usize = 16384;
const SYNC_EVERY: Duration = Duration::from_secs(2);

/// Makes or resumes a score store. Memory is the matrix itself: `images × Q × 5` bytes.
pub struct ScoreWriter {
    dir: PathBuf,
    manifest: Manifest,
    questions: usize,
    p_yes: Vec<f32>,
    status: Vec<u8>,
    log: BufWriter<File>,
    log_path: PathBuf,
    unsynced: usize,
    last_sync: Instant,
    recovered: Replay,
    /// Held (flock, exclusive) while this writer lives: two `makd label` runs on one `--out`
    /// would interleave their records.
    _lock: File,
}

impl ScoreWriter {
    /// Create the store at `dir`, or resume the one there. An existing store must have been made
    /// with an equal manifest (same dataset, aspect set, teacher, shard).
    pub fn open(dir: &Path, manifest: Manifest) -> Result<Self> {
        let at = dir.display().to_string();
        manifest.validate(&at)?;
        std::fs::create_dir_all(dir).at(dir)?;
        let lock = lock_store(dir)?;
        let manifest_path = dir.join(MANIFEST_FILE);
        let log_path = dir.join(LOG_FILE);
        if manifest_path.exists() {
            let stored = read_manifest(dir)?;
            if let Some(diff) = stored.difference(&manifest) {
                return Err(input(
                    format!("this store was made for {diff}"),
                    at,
                    format!(
                        "use another --out, or delete {} to start over",
                        dir.display()
                    ),
                ));
            }
        } else if log_path.exists() {
            return Err(input(
                format!("{LOG_FILE} exists but {MANIFEST_FILE} does not"),
                at,
                format!(
                    "the directory is damaged: delete {} or use another --out",
                    dir.display()
                ),
            ));
        } else {
            files::write_json_atomic(&manifest_path, &manifest)?;
        }

        let images = manifest.num_images();
        let questions = manifest.num_questions();
        let mut p_yes = vec![f32::NAN; images * questions];
        let mut status = vec![NEVER; images * questions];
        let mut recovered = Replay::default();
        let mut fresh_log = true;
        if log_path.exists() {
            recovered = log::replay(&log_path, images, questions, record_is_valid, |r| {
                let k = r.image as usize * questions + r.question as usize;
                p_yes[k] = r.p_yes;
                status[k] = r.status;
            })?;
            if !recovered.header_torn {
                fresh_log = false;
                // Cut the torn or corrupt tail so new records follow the last good one.
                let f = OpenOptions::new()
                    .write(true)
                    .open(&log_path)
                    .at(&log_path)?;
                if f.metadata().at(&log_path)?.len() != recovered.valid_end {
                    f.set_len(recovered.valid_end).at(&log_path)?;
                    f.sync_all().at(&log_path)?;
                }
            }
        }
        if fresh_log {
            let mut f = File::create(&log_path).at(&log_path)?;
            f.write_all(&log::encode_header(images as u32, questions as u32))
                .at(&log_path)?;
            f.sync_all().at(&log_path)?;
            sync_dir(dir);
        }
        let file = OpenOptions::new()
            .append(true)
            .open(&log_path)
            .at(&log_path)?;
        let mut w = ScoreWriter {
            dir: dir.to_path_buf(),
            manifest,
            questions,
            p_yes,
            status,
            log: BufWriter::with_capacity(1 << 16, file),
            log_path,
            unsynced: 0,
            last_sync: Instant::now(),
            recovered,
            _lock: lock,
        };
        if fresh_log && w.dir.join(MATRIX_FILE).exists() {
            // A store saved without its log (a merge target, a derived store): put its answers
            // back into the log so resuming never redoes them.
            w.absorb_matrix(&w.dir.clone())?;
            w.flush()?;
        }
        Ok(w)
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// What opening found in the log: records replayed, corrupt records skipped, where it was cut.
    pub fn recovered(&self) -> Replay {
        self.recovered
    }

    /// Has a run already recorded this pair (with any status, missing included)?
    pub fn is_done(&self, image: usize, question: usize) -> bool {
        self.status[image * self.questions + question] != NEVER
    }

    /// The questions not yet recorded for `image`, in order.
    pub fn pending(&self, image: usize) -> Vec<usize> {
        let row = &self.status[image * self.questions..(image + 1) * self.questions];
        row.iter()
            .enumerate()
            .filter(|(_, &s)| s == NEVER)
            .map(|(q, _)| q)
            .collect()
    }

    /// Append one answer. Durable after the next batch sync ([`ScoreWriter::flush`]).
    pub fn record(&mut self, image: usize, question: usize, score: &Score) -> Result<()> {
        let at = || self.dir.display().to_string();
        if image >= self.manifest.num_images() || question >= self.questions {
            return Err(input(
                format!(
                    "pair (image {image}, question {question}) is outside the store's {} × {}",
                    self.manifest.num_images(),
                    self.questions
                ),
                at(),
                "this is a bug in the caller",
            ));
        }
        if !self.manifest.owns(image) {
            return Err(input(
                format!("image {image} does not belong to this store's shard"),
                at(),
                "this is a bug in the caller",
            ));
        }
        let p_yes = match score.status {
            Status::Missing => f32::NAN,
            _ => {
                if !(0.0..=1.0).contains(&score.p_yes) {
                    return Err(input(
                        format!(
                            "the teacher returned p_yes {} for image {:?}, question {:?}",
                            score.p_yes,
                            self.manifest.image_ids[image],
                            self.manifest.question_ids[question]
                        ),
                        at(),
                        "a teacher must return a probability in [0, 1] or a missing score",
                    ));
                }
                score.p_yes
            }
        };
        self.append(&Record {
            image: image as u32,
            question: question as u16,
            status: score.status.as_u8(),
            p_yes,
            logit_yes: score.logit_yes,
            logit_no: score.logit_no,
        })?;
        if self.unsynced >= SYNC_EVERY_RECORDS || self.last_sync.elapsed() >= SYNC_EVERY {
            self.flush()?;
        }
        Ok(())
    }

    fn append(&mut self, r: &Record) -> Result<()> {
        self.log.write_all(&r.encode()).at(&self.log_path)?;
        let k = r.image as usize * self.questions + r.question as usize;
        self.p_yes[k] = r.p_yes;
        self.status[k] = r.status;
        self.unsynced += 1;
        Ok(())
    }

    /// Write buffered records and fsync the log.
    pub fn flush(&mut self) -> Result<()> {
        self.log.flush().at(&self.log_path)?;
        self.log.get_ref().sync_data().at(&self.log_path)?;
        self.unsynced = 0;
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Counts over the store as it stands.
    pub fn summary(&self) -> StoreSummary {
        let mut s = StoreSummary {
            images: self.manifest.num_images(),
            questions: self.questions,
            ..StoreSummary::default()
        };
        for &b in &self.status {
            match b {
                STATUS_OK => s.ok += 1,
                STATUS_FLOORED => s.floored += 1,
                STATUS_MISSING => s.missing += 1,
                _ => s.never_scored += 1,
            }
        }
        s
    }

    /// Sync the log and compact it into `scores.safetensors` (atomically). The log stays, so a
    /// later run with more work (a larger `--limit`) resumes from it.
    pub fn finish(mut self) -> Result<StoreSummary> {
        self.flush()?;
        let summary = self.summary();
        let status: Vec<u8> = self
            .status
            .iter()
            .map(|&s| if s == NEVER { STATUS_MISSING } else { s })
            .collect();
        write_matrix(
            &self.dir.join(MATRIX_FILE),
            summary.images,
            summary.questions,
            &self.p_yes,
            &status,
            summary.never_scored,
            Some(self.log.get_ref().metadata().at(&self.log_path)?.len()),
        )?;
        Ok(summary)
    }

    /// Append every answer of a shard store for the images its shard owns: from its log when it
    /// has one (exact, including missing answers), else the usable pairs of its matrix.
    pub(super) fn absorb_shard(&mut self, dir: &Path) -> Result<()> {
        if !dir.join(LOG_FILE).exists() {
            return self.absorb_matrix(dir);
        }
        let m = read_manifest(dir)?;
        let path = dir.join(LOG_FILE);
        let mut failed = None;
        log::replay(
            &path,
            m.num_images(),
            m.num_questions(),
            record_is_valid,
            |r| {
                if failed.is_none() && m.owns(r.image as usize) {
                    if let Err(e) = self.append(r) {
                        failed = Some(e);
                    }
                }
            },
        )?;
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn absorb_matrix(&mut self, dir: &Path) -> Result<()> {
        let m = read_manifest(dir)?;
        let path = dir.join(MATRIX_FILE);
        let bytes = std::fs::read(&path).at(&path)?;
        let matrix = read_matrix(&bytes, &path, m.num_images(), m.num_questions())?;
        for (k, (&p, &s)) in matrix.p_yes.iter().zip(&matrix.status).enumerate() {
            let image = k / self.questions;
            if Status::byte_is_usable(s) && (0.0..=1.0).contains(&p) && m.owns(image) {
                self.append(&Record {
                    image: image as u32,
                    question: (k % self.questions) as u16,
                    status: s,
                    p_yes: p,
                    logit_yes: f32::NAN,
                    logit_no: f32::NAN,
                })?;
            }
        }
        Ok(())
    }
}

/// A checksummed record is still rejected if its status is unknown or an answered pair's p_yes
/// is not a probability (a record from a buggy writer must not poison training).
fn record_is_valid(r: &Record) -> bool {
    match Status::from_u8(r.status) {
        Some(s) if s.is_usable() => (0.0..=1.0).contains(&r.p_yes),
        Some(_) => true,
        None => false,
    }
}

/// Write a synthetic finished log of `images × questions` answers into `dir` (for the resume
/// benchmark); returns the manifest to open it with. Values are a cheap deterministic pattern.
pub fn write_synthetic_log(dir: &Path, images: usize, questions: usize) -> Result<Manifest> {
    let manifest = Manifest {
        format_version: super::FORMAT_VERSION,
        dataset: format!("synthetic: {images} images"),
        dataset_fingerprint: "synthetic".into(),
        image_ids: (0..images).map(|i| format!("synthetic/{i}")).collect(),
        aspect_hash: "synthetic".into(),
        question_ids: (0..questions).map(|q| format!("q{q:02}")).collect(),
        teacher: crate::teacher::TeacherInfo {
            backend: "synthetic".into(),
            ..Default::default()
        },
        shard: None,
    };
    manifest.validate(&dir.display().to_string())?;
    std::fs::create_dir_all(dir).at(dir)?;
    files::write_json_atomic(&dir.join(MANIFEST_FILE), &manifest)?;
    let path = dir.join(LOG_FILE);
    let mut w = BufWriter::with_capacity(1 << 20, File::create(&path).at(&path)?);
    w.write_all(&log::encode_header(images as u32, questions as u32))
        .at(&path)?;
    for i in 0..images {
        for q in 0..questions {
            let p = ((i * 31 + q * 17) % 101) as f32 / 100.0;
            let r = Record {
                image: i as u32,
                question: q as u16,
                status: STATUS_OK,
                p_yes: p,
                logit_yes: p.ln(),
                logit_no: (1.0 - p).ln(),
            };
            w.write_all(&r.encode()).at(&path)?;
        }
    }
    let f = w.into_inner().map_err(|e| e.into_error()).at(&path)?;
    f.sync_all().at(&path)?;
    Ok(manifest)
}

/// Make a file's creation durable: fsync its directory (best effort; not every platform can).
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Join the stores of a `--shard i/n` run (one directory per shard, all `n` of them, each once)
/// into one unsharded store at `out`. The shards' logs are replayed into `out`'s log, so `out` is
/// exactly what one unsharded run would have written and can itself be resumed.
pub fn merge(shards: &[PathBuf], out: &Path) -> Result<StoreSummary> {
    if shards.is_empty() {
        return Err(input(
            "no shard directories given",
            "makd label merge",
            "pass every shard's --out directory",
        ));
    }
    let manifests: Vec<Manifest> = shards
        .iter()
        .map(|d| read_manifest(d))
        .collect::<Result<_>>()?;
    let mut merged = manifests[0].clone();
    merged.shard = None;
    let mut seen: HashMap<usize, &PathBuf> = HashMap::new();
    let mut count = None;
    for (dir, m) in shards.iter().zip(&manifests) {
        let at = dir.display().to_string();
        let Some((i, n)) = m.shard.map(|s| (s.index(), s.count())) else {
            return Err(input(
                "this store is not a shard (it was labelled without --shard)",
                at,
                "merge only the stores of one --shard i/n run",
            ));
        };
        let mut plain = m.clone();
        plain.shard = None;
        if let Some(diff) = merged.difference(&plain) {
            return Err(input(
                format!("this shard differs from {}: {diff}", shards[0].display()),
                at,
                "merge only shards of one run: same dataset, aspects.json and teacher",
            ));
        }
        if *count.get_or_insert(n) != n {
            return Err(input(
                format!(
                    "this shard is {i}/{n} but {} is of /{}",
                    shards[0].display(),
                    count.unwrap_or(0)
                ),
                at,
                "merge only shards of one --shard i/n run",
            ));
        }
        if let Some(other) = seen.insert(i, dir) {
            return Err(input(
                format!("shard {i}/{n} is given twice (also {})", other.display()),
                at,
                "pass each shard directory once",
            ));
        }
    }
    let n = count.unwrap_or(0);
    if let Some(gap) = (0..n).find(|i| !seen.contains_key(i)) {
        return Err(input(
            format!(
                "shard {gap}/{n} is missing: its images would be left unlabelled ({} of {n} shards given)",
                seen.len()
            ),
            out.display().to_string(),
            format!("label it with --shard {gap}/{n} and pass its directory too"),
        ));
    }
    let mut writer = ScoreWriter::open(out, merged)?;
    for dir in shards {
        writer.absorb_shard(dir)?;
    }
    writer.finish()
}
