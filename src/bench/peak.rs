//! Peaks the benchmarks report against: this CPU's fp32 rate, measured with a register-only FMA
//! loop (no memory traffic), the ceiling any kernel's GFLOP/s is compared with; and this
//! process's peak resident memory.

use std::time::Instant;

/// GFLOP/s of a register-only FMA loop on the calling thread (0 without AVX-512F).
pub fn fma_peak_one_thread() -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F.
            return unsafe { fma_loop_avx512() };
        }
    }
    0.0
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fma_loop_avx512() -> f64 {
    use std::arch::x86_64::*;
    // 10 independent chains cover 2 pipes × 4 cycles of FMA latency (more get spilled to the
    // stack, which serialises them through memory); best of 5 runs, as the clock ramps up and
    // neighbours come and go.
    let a = _mm512_set1_ps(0.999_999);
    let b = _mm512_set1_ps(1e-7);
    let iters = 10_000_000u64;
    let mut best = 0f64;
    for _ in 0..5 {
        let mut acc = [_mm512_set1_ps(1.0); 10];
        let start = Instant::now();
        for _ in 0..iters {
            for v in acc.iter_mut() {
                *v = _mm512_fmadd_ps(*v, a, b);
            }
        }
        let secs = start.elapsed().as_secs_f64();
        let mut sum = 0f32;
        for v in acc {
            sum += _mm512_reduce_add_ps(v);
        }
        std::hint::black_box(sum);
        best = best.max((iters * 10 * 16 * 2) as f64 / secs / 1e9);
    }
    best
}

/// The clock /proc/cpuinfo reports (often the nominal one, below turbo), GHz.
pub fn nominal_ghz() -> Option<f64> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("cpu MHz"))?;
    Some(line.split(':').nth(1)?.trim().parse::<f64>().ok()? / 1000.0)
}

/// Peak fp32 GFLOP/s of the whole machine: the one-thread FMA rate times the cores (every core
/// sustains it on a quiet machine; measuring all at once undercounts under load), or `None`
/// without AVX-512.
pub fn machine_peak_gflops() -> Option<f64> {
    let one = fma_peak_one_thread();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (one > 0.0).then_some(one * cores as f64)
}

/// Peak resident memory of this process (Linux `VmHWM`), MB.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// Minor page faults of this process so far (Linux `/proc/self/stat`, field 10): each is a
/// 4 KiB page the kernel mapped and zeroed on first touch, what reusing freed buffers avoids.
pub fn minor_page_faults() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(7)?.parse().ok()
}
