//! `makd bench resume`: how long `makd label` takes to resume from a large append log — one
//! streaming read of a synthetic log (default: ImageNet scale, 1.3M images × 50 questions = 64M
//! pairs, 1.5 GB), then compaction into scores.safetensors.

use anyhow::Result;
use makd::scores::writer::{write_synthetic_log, ScoreWriter};
use std::path::PathBuf;
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
        makd::bench::check_scratch_store_dir(&a.dir)?;
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
