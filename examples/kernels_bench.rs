//! Times makd's convolution kernels against candle's own on ResNet-18 (CIFAR stem) and
//! MobileNetV2 layer shapes, and reports GFLOP/s against this CPU's fp32 peak.
//!
//! ```text
//! cargo run --release --example kernels_bench -- [--size 32] [--batch 32] [--reps 5] [--no-candle] [--cpu-time] [--only SUBSTRING]
//! ```
//!
//! Each row is one convolution: our kernels on raw slices (forward, then backward for input and
//! weight gradients), then forward + backward through autograd with `sum_all().backward()` as
//! candle tensors, for ours and candle's conv, so both pay the same graph overhead. GFLOP/s
//! counts the direct convolution's flops (3 × forward); the 3×3 stride-1 layers run Winograd
//! F(2×2, 3×3) for forward and input gradient, which needs 2.25× fewer multiplies there, so
//! their figure is an effective rate and can exceed the machine's peak. Peak fp32 is measured here with a register-only
//! FMA loop (AVX-512 if the CPU has it) on 1 and on all threads, and also computed from the
//! nominal clock as cores × 2 FMA pipes × lanes × 2 flops × GHz.

use std::time::Instant;

use anyhow::Result;
use candle_core::{Device, Tensor, Var};
use makd::bench::peak::{fma_peak_one_thread, nominal_ghz};
use makd::kernels::{self, conv, ConvGeom};

struct Layer {
    name: &'static str,
    c: usize,
    o: usize,
    hw: usize,
    k: usize,
    s: usize,
    groups: usize,
}

const fn layer(
    name: &'static str,
    c: usize,
    o: usize,
    hw: usize,
    k: usize,
    s: usize,
    groups: usize,
) -> Layer {
    Layer {
        name,
        c,
        o,
        hw,
        k,
        s,
        groups,
    }
}

/// Layer shapes at a 32-px input; `hw` scales with the image size.
const LAYERS: &[Layer] = &[
    layer("r18 conv1 3→64", 3, 64, 32, 3, 1, 1),
    layer("r18 layer1 64→64", 64, 64, 32, 3, 1, 1),
    layer("r18 layer2.0 64→128/2", 64, 128, 32, 3, 2, 1),
    layer("r18 layer2 128→128", 128, 128, 16, 3, 1, 1),
    layer("r18 layer2 ds 1×1/2", 64, 128, 32, 1, 2, 1),
    layer("r18 layer3 256→256", 256, 256, 8, 3, 1, 1),
    layer("r18 layer4 512→512", 512, 512, 4, 3, 1, 1),
    layer("mv2 dw 96 3×3", 96, 96, 16, 3, 1, 96),
    layer("mv2 dw 144 3×3/2", 144, 144, 16, 3, 2, 144),
    layer("mv2 pw 144→24", 144, 24, 16, 1, 1, 1),
    layer("mv2 pw 24→144", 24, 144, 16, 1, 1, 1),
];

struct Args {
    size: usize,
    batch: usize,
    reps: usize,
    candle: bool,
    only: Option<String>,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        size: 32,
        batch: 32,
        reps: 5,
        candle: true,
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || -> Result<usize> {
            Ok(it
                .next()
                .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?
                .parse()?)
        };
        match flag.as_str() {
            "--size" => a.size = value()?,
            "--batch" => a.batch = value()?,
            "--reps" => a.reps = value()?,
            "--no-candle" => a.candle = false,
            "--only" => a.only = it.next(),
            "--cpu-time" => CPU_TIME.store(true, std::sync::atomic::Ordering::Relaxed),
            _ => anyhow::bail!("unknown flag {flag}; flags: --size N --batch N --reps N --no-candle --cpu-time --only SUBSTRING"),
        }
    }
    Ok(a)
}

/// CPU seconds this process has used (all threads), from `clock_gettime`.
fn process_cpu_seconds() -> f64 {
    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
    }
    const CLOCK_PROCESS_CPUTIME_ID: i32 = 2;
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // SAFETY: a valid clock id and a pointer to a live timespec.
    unsafe { clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.sec as f64 + ts.nsec as f64 * 1e-9
}

/// Whether to time by CPU seconds / threads instead of wall time (`--cpu-time`): on a machine
/// shared with other jobs, wall time measures the neighbours, CPU time measures us.
static CPU_TIME: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Median seconds of `reps` runs after one warm-up.
fn time(reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let cpu = CPU_TIME.load(std::sync::atomic::Ordering::Relaxed);
    let threads = rayon::current_num_threads() as f64;
    let mut t = Vec::with_capacity(reps);
    for _ in 0..reps {
        let start = Instant::now();
        let c0 = process_cpu_seconds();
        f()?;
        t.push(if cpu {
            (process_cpu_seconds() - c0) / threads
        } else {
            start.elapsed().as_secs_f64()
        });
    }
    t.sort_by(|a, b| a.total_cmp(b));
    Ok(t[t.len() / 2])
}

type ConvFn = fn(&Tensor, &Tensor, usize, usize, usize) -> candle_core::Result<Tensor>;

fn ours(x: &Tensor, w: &Tensor, s: usize, p: usize, g: usize) -> candle_core::Result<Tensor> {
    kernels::conv2d(x, w, None, s, p, g)
}

fn candles(x: &Tensor, w: &Tensor, s: usize, p: usize, g: usize) -> candle_core::Result<Tensor> {
    x.conv2d(w, p, s, 1, g)
}

/// (forward seconds, forward + backward seconds)
fn bench_conv(l: &Layer, a: &Args, f: ConvFn) -> Result<(f64, f64)> {
    let hw = l.hw * a.size / 32;
    let dev = Device::Cpu;
    let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (a.batch, l.c, hw, hw), &dev)?)?;
    let w = Var::from_tensor(&Tensor::randn(
        0f32,
        0.1,
        (l.o, l.c / l.groups, l.k, l.k),
        &dev,
    )?)?;
    let p = (l.k - 1) / 2;
    let xd = x.as_tensor().detach();
    let wd = w.as_tensor().detach();
    let fwd = time(a.reps, || {
        f(&xd, &wd, l.s, p, l.groups)?;
        Ok(())
    })?;
    let both = time(a.reps, || {
        let y = f(x.as_tensor(), w.as_tensor(), l.s, p, l.groups)?;
        let g = y.sum_all()?.backward()?;
        assert!(g.get(x.as_tensor()).is_some() && g.get(w.as_tensor()).is_some());
        Ok(())
    })?;
    Ok((fwd, both))
}

/// Our kernels on raw slices, without candle's graph: (forward seconds, backward seconds).
fn bench_raw(g: &ConvGeom, reps: usize) -> Result<(f64, f64)> {
    let x: Vec<f32> = (0..g.n * g.c * g.h * g.w)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    let w: Vec<f32> = (0..g.o * g.cg() * g.kh * g.kw)
        .map(|i| ((i * 104_729) % 1000) as f32 / 1e4)
        .collect();
    let dy: Vec<f32> = (0..g.n * g.o * g.oh * g.ow)
        .map(|i| ((i * 31) % 100) as f32 / 100.0)
        .collect();
    let fwd = time(reps, || {
        std::hint::black_box(conv::forward(g, &x, &w));
        Ok(())
    })?;
    let bwd = time(reps, || {
        std::hint::black_box(conv::backward(g, &x, &w, &dy, true, true));
        Ok(())
    })?;
    Ok((fwd, bwd))
}

fn main() -> Result<()> {
    let a = parse_args()?;
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // candle's elementwise pool spins between ops and competes with rayon for the cores.
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    let threads = rayon::current_num_threads();
    let one = fma_peak_one_thread();
    let all: f64 = {
        use rayon::prelude::*;
        (0..threads)
            .into_par_iter()
            .map(|_| fma_peak_one_thread())
            .sum()
    };
    let ghz = nominal_ghz().unwrap_or(0.0);
    let lanes = if std::arch::is_x86_feature_detected!("avx512f") {
        16.0
    } else {
        8.0
    };
    let nominal = threads as f64 * 2.0 * lanes * 2.0 * ghz;
    println!(
        "fp32 peak: measured FMA loop {one:.0} GFLOP/s on 1 thread, {all:.0} on {threads}; \
         nominal {threads} cores × 2 FMA × {lanes} lanes × 2 × {ghz:.2} GHz = {nominal:.0} GFLOP/s"
    );
    // Under load from other processes the all-thread loop undercounts; every core sustains
    // the single-thread rate when the machine is quiet.
    let peak = (one * threads as f64).max(all);
    println!(
        "batch {}, {} px, median of {} (fraction of peak uses {peak:.0} GFLOP/s)\n",
        a.batch, a.size, a.reps
    );
    println!(
        "{:<24} {:>7} {:>7} {:>6} {:>6} | {:>8} | {:>8} {:>8} {:>6}",
        "layer", "fwd ms", "bwd ms", "GF/s", "%peak", "f+b ms", "candle", "f+b ms", "f+b ×"
    );
    println!(
        "{:<24} {:>30} | {:>8} | {:>8} {:>8}",
        "", "(our kernels on slices)", "(tensors)", "fwd ms", ""
    );
    let (mut tot_raw, mut tot_ours, mut tot_candle, mut tot_flops) = (0.0, 0.0, 0.0, 0.0);
    for l in LAYERS {
        if a.only
            .as_ref()
            .is_some_and(|o| !l.name.contains(o.as_str()))
        {
            continue;
        }
        let hw = l.hw * a.size / 32;
        let g = ConvGeom::new(
            &[a.batch, l.c, hw, hw],
            &[l.o, l.c / l.groups, l.k, l.k],
            l.s,
            (l.k - 1) / 2,
            l.groups,
        )?;
        let flops = 3.0 * g.forward_flops();
        let (rf, rb) = bench_raw(&g, a.reps)?;
        let gf = flops / (rf + rb) / 1e9;
        tot_raw += rf + rb;
        tot_flops += flops;
        let (_, b) = bench_conv(l, &a, ours)?;
        tot_ours += b;
        print!(
            "{:<24} {:>7.2} {:>7.2} {:>6.1} {:>5.1}% | {:>8.2} |",
            l.name,
            rf * 1e3,
            rb * 1e3,
            gf,
            100.0 * gf / peak,
            b * 1e3,
        );
        if a.candle {
            let (cf, cb) = bench_conv(l, &a, candles)?;
            tot_candle += cb;
            println!(" {:>8.2} {:>8.2} {:>5.1}×", cf * 1e3, cb * 1e3, cb / b);
        } else {
            println!();
        }
    }
    println!(
        "\ntotal: our kernels {:.1} ms fwd+bwd ({:.1} GFLOP/s, {:.1}% of peak); as tensors {:.1} ms",
        tot_raw * 1e3,
        tot_flops / tot_raw / 1e9,
        100.0 * tot_flops / tot_raw / 1e9 / peak,
        tot_ours * 1e3,
    );
    if a.candle {
        println!(
            "       candle {:.1} ms as tensors: ours is {:.1}× faster",
            tot_candle * 1e3,
            tot_candle / tot_ours
        );
    }
    Ok(())
}
