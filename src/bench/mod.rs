//! What the benchmarks (`makd bench …`, `examples/kernels_bench.rs`) share: the machine's peaks
//! ([`peak`]), a worker pool that counts failures, and deterministic synthetic images.

pub mod peak;

use crate::data::{RawImage, Sample};
use crate::error::{input, IoContext, Result};
use crate::scores::writer::LOCK_FILE;
use crate::scores::{LOG_FILE, MANIFEST_FILE, MATRIX_FILE};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// Run `work(i)` for every `i` in `0..n` on `threads` threads, each taking the next index as it
/// finishes one; returns the wall seconds and how many calls returned `false`.
pub fn run_parallel(n: usize, threads: usize, work: impl Fn(usize) -> bool + Sync) -> (f64, usize) {
    let next = AtomicUsize::new(0);
    let failed = AtomicUsize::new(0);
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                if !work(i) {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    (t0.elapsed().as_secs_f64(), failed.into_inner())
}

/// A deterministic `side × side` gray image, a different stripe pattern per index `i`.
pub fn synthetic_sample(i: usize, side: u32) -> Sample {
    let pixels = (0..side * side)
        .map(|p| {
            let (x, y) = ((p % side) as usize, (p / side) as usize);
            (((x * (i % 5 + 1) + y * (i % 7 + 1)) * 37 + i * 11) % 256) as u8
        })
        .collect();
    Sample {
        id: format!("synthetic/{i:05}"),
        image: RawImage {
            width: side,
            height: side,
            channels: 1,
            pixels,
        },
        label: 0,
    }
}

/// `makd bench resume`'s scratch dir is removed before and after the bench; only an empty directory or one holding
/// nothing but the bench's own synthetic store may be, so a mistyped `--dir` deletes nothing else.
pub fn check_scratch_store_dir(dir: &Path) -> Result<()> {
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
        [MANIFEST_FILE, LOG_FILE, MATRIX_FILE, LOCK_FILE]
            .iter()
            .any(|f| n == *f || (n.starts_with(&format!(".{f}")) && n.contains(".tmp")))
    };
    if let Some(other) = names.iter().find(|n| !ours(n)) {
        return Err(refuse(format!(
            "holds {other:?}, which the bench did not write"
        )));
    }
    let manifest: serde_json::Value =
        crate::files::read_json(&dir.join(MANIFEST_FILE), "written by makd bench resume")
            .map_err(|_| refuse("holds a score store that is not the bench's".into()))?;
    let synthetic = manifest["dataset_fingerprint"] == "synthetic"
        && manifest["teacher"]["backend"] == "synthetic";
    if !synthetic {
        return Err(refuse("holds a score store that is not the bench's".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_visits_every_index_once_and_counts_failures() {
        let seen: Vec<AtomicUsize> = (0..100).map(|_| AtomicUsize::new(0)).collect();
        let (_, failed) = run_parallel(100, 3, |i| {
            seen[i].fetch_add(1, Ordering::Relaxed);
            i % 10 != 0
        });
        assert!(seen.iter().all(|c| c.load(Ordering::Relaxed) == 1));
        assert_eq!(failed, 10);
    }

    #[test]
    fn synthetic_images_differ_by_index_and_repeat_exactly() {
        let a = synthetic_sample(3, 8);
        assert_eq!(a.image.pixels, synthetic_sample(3, 8).image.pixels);
        assert_ne!(a.image.pixels, synthetic_sample(4, 8).image.pixels);
        assert_eq!((a.image.width, a.image.pixels.len()), (8, 64));
    }

    #[test]
    fn a_scratch_dir_left_by_a_crashed_bench_is_its_own() {
        // The writer's lock file is the bench's too: a dir a killed bench left behind is reusable,
        // while anything a user put there is not.
        let dir = tempfile::tempdir().unwrap();
        check_scratch_store_dir(dir.path()).unwrap();
        let m = crate::scores::writer::write_synthetic_log(dir.path(), 4, 2).unwrap();
        drop(crate::scores::writer::ScoreWriter::open(dir.path(), m).unwrap());
        assert!(dir.path().join(LOCK_FILE).exists());
        check_scratch_store_dir(dir.path()).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
        assert!(check_scratch_store_dir(dir.path()).is_err());
    }
}
