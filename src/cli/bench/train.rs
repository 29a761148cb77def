//! `makd bench train`: training throughput of one student on random data — the same step as
//! `makd train` (forward, CE + α·BCE, backward, SGD with momentum), timed after a warm-up; with
//! `--eval`, the forward `makd eval` runs (evaluation mode, no gradient graph).
//! `bench/train_ratio.sh` runs this and the PyTorch reference (`bench/torch_train.py`) and prints the ratio.

use anyhow::Result;
use candle_core::{DType, Tensor};
use makd::student::{Arch, Pass, Stem, StudentSpec};
use makd::train::classify::Model;
use makd::train::config::TrainConfig;
use makd::train::loss;
use makd::train::optim::{OptimConfig, Optimizer};
use makd::train::trainer;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Student architecture (cnn, resnet18, resnet34, resnet50, mobilenet-v1, mobilenet-v2, efficientnet-b0).
    #[arg(long, default_value = "resnet18")]
    model: Arch,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Input height = width in pixels.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Input channels (1 or 3).
    #[arg(long, default_value_t = 3)]
    channels: usize,
    #[arg(long, default_value_t = 10)]
    classes: usize,
    /// Aspect outputs (Q); the loss adds 4·BCE over them.
    #[arg(long, default_value_t = 50)]
    aspects: usize,
    /// Timed steps (after the warm-up).
    #[arg(long, default_value_t = 10)]
    steps: usize,
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Time inference instead of training: the forward pass `makd eval` runs (BatchNorm running
    /// statistics, no dropout, no gradient graph), as PyTorch's `model.eval()` under `torch.no_grad()`.
    #[arg(long)]
    eval: bool,
    /// Threads for makd's kernels (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    if let Some(n) = a.threads {
        if n == 0 {
            return Err(makd::error::input(
                "--threads 0",
                "makd bench train",
                "pass at least 1 thread",
            )
            .into());
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()?;
    }
    let mut cfg = TrainConfig {
        model: StudentSpec {
            arch: a.model,
            in_channels: a.channels,
            stem: Stem::Auto,
        },
        ..Default::default()
    };
    cfg.transform.size = a.size;
    cfg.transform.channels = a.channels;
    let dev = trainer::device()?;
    let model = Model::build(&cfg, a.classes, a.aspects, &dev)?;
    let mut opt = Optimizer::new(OptimConfig::default(), model.trainable());
    let xs = Tensor::randn(0f32, 1.0, (a.batch, a.channels, a.size, a.size), &dev)?;
    let ys = Tensor::from_vec(
        (0..a.batch as u32)
            .map(|i| i % a.classes as u32)
            .collect::<Vec<_>>(),
        a.batch,
        &dev,
    )?;
    let targets = Tensor::rand(0f32, 1.0, (a.batch, a.aspects), &dev)?;
    let mask = Tensor::ones((a.batch, a.aspects), DType::F32, &dev)?;
    let inference = if a.eval {
        Some(model.inference()?)
    } else {
        None
    };
    let step = |opt: &mut Optimizer| -> Result<()> {
        if let Some(student) = &inference {
            student
                .forward(&xs, Pass::Eval)?
                .sum_all()?
                .to_scalar::<f32>()?;
            return Ok(());
        }
        let logits = model.student.forward(&xs, Pass::Train { seed: 0 })?;
        let mut total = loss::cross_entropy(&logits.narrow(1, 0, a.classes)?, &ys, 0.0)?;
        if a.aspects > 0 {
            let bce = loss::soft_bce_with_logits(
                &logits.narrow(1, a.classes, a.aspects)?,
                &targets,
                &mask,
            )?;
            total = (total + (bce * 4.0)?)?;
        }
        let grads = total.backward()?;
        opt.step(&grads)?;
        total.to_scalar::<f32>()?;
        Ok(())
    };
    for _ in 0..a.warmup {
        step(&mut opt)?;
    }
    let mut times = Vec::with_capacity(a.steps);
    let faults_before = makd::bench::peak::minor_page_faults();
    for _ in 0..a.steps {
        let t = Instant::now();
        step(&mut opt)?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let ips = a.batch as f64 / median;
    let threads = rayon::current_num_threads();
    let rss = makd::bench::peak::peak_rss_mb();
    let faults = makd::bench::peak::minor_page_faults()
        .zip(faults_before)
        .map(|(after, before)| (after - before) as f64 / a.steps.max(1) as f64);
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "impl": "makd", "mode": if a.eval { "eval" } else { "train" }, "model": a.model.to_string(), "batch": a.batch, "size": a.size, "channels": a.channels,
                "classes": a.classes, "aspects": a.aspects, "steps": a.steps, "threads": threads,
                "ms_per_step": median * 1e3, "images_per_s": ips, "peak_rss_mb": rss, "page_faults_per_step": faults, "params": model.param_count(),
            })
        );
    } else {
        println!(
            "{} {} batch {} {}px: {:.1} ms/step, {:.1} images/s (median of {}), peak RSS {:.0} MB, {:.0} page faults/step",
            a.model,
            if a.eval { "eval" } else { "train" },
            a.batch,
            a.size,
            median * 1e3,
            ips,
            a.steps,
            rss.unwrap_or(f64::NAN),
            faults.unwrap_or(f64::NAN)
        );
    }
    Ok(())
}
