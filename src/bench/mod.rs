//! What the benchmarks (`makd bench …`, `examples/kernels_bench.rs`) share: the machine's peaks
//! ([`peak`]), a worker pool that counts failures, and deterministic synthetic images.

pub mod peak;

use crate::data::{RawImage, Sample};
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
}
