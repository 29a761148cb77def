//! `makd bench resume`: how long `makd label` takes to resume from a large append log — one
//! streaming read of a synthetic log (default: ImageNet scale, 1.3M images × 50 questions = 64M
//! pairs, 1.5 GB), then compaction into scores.safetensors.

use anyhow::Result;
use makd::error::{input, IoContext};
use makd::scores::{write_synthetic_log, ScoreWriter, LOG_FILE, MANIFEST_FILE, MATRIX_FILE};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long, default_value_t = 1_281_167)]
    images: usize,
    #[arg(long, default_value_t = 50)]
    questions: usize,
    /// Scratch directory (needs images × questions × 24 bytes free); removed afterwards. An
    /// existing one must be empty or a previous run's (an interrupted bench leaves its synthetic
    /// store behind); anything else is refused and left alone.
    #[arg(long, default_value = "work/bench-resume")]
    dir: PathBuf,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    if a.dir.exists() {
        check_own_dir(&a.dir)?;
        std::fs::remove_dir_all(&a.dir)?;
    }
    let t = Instant::now();
    let manifest = write_synthetic_log(&a.dir, a.images, a.questions)?;
    let write_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let writer = ScoreWriter::open(&a.dir, manifest)?;
    let resume_s = t.elapsed().as_secs_f64();
    let rss_after_resume = makd::bench::peak::peak_rss_mb();
    let t = Instant::now();
    let summary = writer.finish()?;
    let compact_s = t.elapsed().as_secs_f64();
    let pairs = a.images * a.questions;
    let log_mb = (pairs * 24) as f64 / 1e6;
    std::fs::remove_dir_all(&a.dir)?;
    anyhow::ensure!(
        summary.ok == pairs,
        "resume lost pairs: {} of {pairs} ok",
        summary.ok
    );
    if a.json {
        println!(
            "{}",
            serde_json::json!({"pairs": pairs, "log_mb": log_mb, "write_s": write_s, "resume_s": resume_s,
                "resume_pairs_per_s": pairs as f64 / resume_s, "compact_s": compact_s, "peak_rss_mb": rss_after_resume})
        );
    } else {
        println!(
            "{pairs} pairs ({log_mb:.0} MB log): resume {resume_s:.2} s ({:.1} M pairs/s), compaction {compact_s:.2} s, peak RSS {:.0} MB (matrix: {:.0} MB)",
            pairs as f64 / resume_s / 1e6,
            rss_after_resume.unwrap_or(f64::NAN),
            (pairs * 5) as f64 / 1e6
        );
    }
    Ok(())
}

/// The scratch dir is removed before and after the bench; only an empty directory or one holding
/// nothing but the bench's own synthetic store may be, so a mistyped `--dir` deletes nothing else.
fn check_own_dir(dir: &Path) -> makd::Result<()> {
    let refuse = |why: String| {
        input(
            format!("{why}: the bench would delete it"),
            dir.display().to_string(),
            "pass a --dir that does not exist yet (the bench makes and removes it), or an empty one",
        )
    };
    if !dir.is_dir() {
        return Err(refuse("not a directory".into()));
    }
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).at(dir)? {
        names.push(entry.at(dir)?.file_name().to_string_lossy().into_owned());
    }
    if names.is_empty() {
        return Ok(());
    }
    let ours = |n: &str| {
        // The store's own files and their temp files (`.scores.safetensors.tmp.<pid>`, …).
        [MANIFEST_FILE, LOG_FILE, MATRIX_FILE]
            .iter()
            .any(|f| n == *f || (n.starts_with(&format!(".{f}")) && n.contains(".tmp")))
    };
    if let Some(other) = names.iter().find(|n| !ours(n)) {
        return Err(refuse(format!(
            "holds {other:?}, which the bench did not write"
        )));
    }
    let manifest: serde_json::Value =
        makd::files::read_json(&dir.join(MANIFEST_FILE), "written by makd bench resume")
            .map_err(|_| refuse("holds a score store that is not the bench's".into()))?;
    let synthetic = manifest["dataset_fingerprint"] == "synthetic"
        && manifest["teacher"]["backend"] == "synthetic";
    if !synthetic {
        return Err(refuse("holds a score store that is not the bench's".into()));
    }
    Ok(())
}
