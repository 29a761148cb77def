//! `makd bench loader`: does the loader keep the step fed at the paper's input size? Writes a
//! synthetic ImageFolder of JPEGs at ImageNet-like sizes (once; reused afterwards), trains on it
//! through `makd train`'s own path (the same config validation, loader, transforms and step) and
//! prints the share of each epoch's training time the step spent waiting for its next batch
//! (`loader_wait_s` in `metrics.jsonl`).

use anyhow::Result;
use image::codecs::jpeg::JpegEncoder;
use makd::error::{input, IoContext};
use makd::student::Arch;
use makd::train::config::TrainConfig;
use makd::train::run_dir::RunDir;
use makd::train::trainer;
use std::path::Path;

/// Marks a folder as this bench's own, so that a mistyped `--dir` is never written into.
const MARKER: &str = ".makd-bench-loader";
const CLASSES: usize = 4;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Scratch folder for the synthetic ImageFolder and the run dir (made if missing, reused when
    /// this bench made it; any other non-empty folder is refused).
    #[arg(long)]
    dir: std::path::PathBuf,
    /// Training images to write (JPEG, 300–500 px sides like ImageNet's, quality 90).
    #[arg(long, default_value_t = 320)]
    images: usize,
    /// Input size after the transform (`transform.size`).
    #[arg(long, default_value_t = 224)]
    size: usize,
    /// Student architecture.
    #[arg(long, default_value = "resnet18")]
    model: Arch,
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Loader threads (`data.workers`); default: `makd train`'s default.
    #[arg(long)]
    workers: Option<usize>,
    /// Augmentation (`transform.augment`); the paper trains with `resized-crop-flip`.
    #[arg(long, default_value = "resized-crop-flip")]
    augment: String,
    /// Epochs over the images (the first one includes the page cache warming up).
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    if a.images < CLASSES {
        return Err(input(
            format!("--images {} is fewer than the {CLASSES} classes", a.images),
            "makd bench loader",
            format!("pass --images {CLASSES} or more"),
        )
        .into());
    }
    prepare(&a.dir, a.images)?;
    let mut sets = vec![
        format!(
            "data.dataset=\"imagefolder:{}\"",
            a.dir.join("data").display()
        ),
        format!("transform.size={}", a.size),
        "transform.channels=3".into(),
        "transform.mean=[0.485, 0.456, 0.406]".into(),
        "transform.std=[0.229, 0.224, 0.225]".into(),
        format!("transform.augment=\"{}\"", a.augment),
        format!("model.arch=\"{}\"", a.model),
        "model.in_channels=3".into(),
        format!("train.epochs={}", a.epochs),
        format!("train.batch_size={}", a.batch),
    ];
    if let Some(w) = a.workers {
        sets.push(format!("data.workers={w}"));
    }
    let cfg = TrainConfig::from_sets(&sets)?;
    let run_dir = RunDir::new(a.dir.join("run"));
    trainer::train(&cfg, &run_dir, true)?;
    let text = std::fs::read_to_string(run_dir.metrics()).at(run_dir.metrics())?;
    let epochs: Vec<serde_json::Value> = text
        .lines()
        .map(serde_json::from_str)
        .collect::<std::result::Result<_, _>>()?;
    let rows: Vec<(f64, f64)> = epochs
        .iter()
        .map(|e| {
            (
                e["seconds"].as_f64().unwrap_or(f64::NAN),
                e["loader_wait_s"].as_f64().unwrap_or(f64::NAN),
            )
        })
        .collect();
    let workers = cfg.data.workers;
    if a.json {
        let per_epoch: Vec<_> = rows
            .iter()
            .map(
                |(s, w)| serde_json::json!({"seconds": s, "loader_wait_s": w, "wait_share": w / s}),
            )
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "model": a.model.to_string(), "size": a.size, "batch": a.batch, "images": a.images,
                "augment": a.augment, "workers": workers, "epochs": per_epoch,
            })
        );
    } else {
        for (i, (s, w)) in rows.iter().enumerate() {
            println!(
                "epoch {}: {:.1} s training, the step waited {:.2} s for batches ({:.1} % of it); \
                 data.workers = {}, {} {} px batch {}, {}",
                i + 1,
                s,
                w,
                100.0 * w / s,
                workers,
                a.model,
                a.size,
                a.batch,
                a.augment
            );
        }
    }
    Ok(())
}

/// Write `dir/data/{train,test}/class_k/*.jpg` unless this bench already did.
fn prepare(dir: &Path, images: usize) -> Result<()> {
    if dir.join(MARKER).exists() {
        let made: usize = std::fs::read_to_string(dir.join(MARKER))
            .at(dir.join(MARKER))?
            .trim()
            .parse()
            .unwrap_or(0);
        if made == images {
            return Ok(());
        }
        std::fs::remove_dir_all(dir.join("data")).ok();
    } else if dir.exists() && std::fs::read_dir(dir).at(dir)?.next().is_some() {
        return Err(input(
            "the folder is not empty and was not made by makd bench loader",
            dir.display().to_string(),
            "pass a --dir that does not exist yet (the bench makes it)",
        )
        .into());
    }
    let pb = makd::progress::bar(images as u64, "writing JPEGs", "images");
    for (split, n) in [("train", images), ("test", CLASSES * 2)] {
        for i in 0..n {
            let class_dir = dir
                .join("data")
                .join(split)
                .join(format!("class_{}", i % CLASSES));
            std::fs::create_dir_all(&class_dir).at(&class_dir)?;
            let path = class_dir.join(format!("{i:06}.jpg"));
            let file = std::fs::File::create(&path).at(&path)?;
            let (w, h, rgb) = synthetic_photo(i);
            JpegEncoder::new_with_quality(std::io::BufWriter::new(file), 90).encode(
                &rgb,
                w,
                h,
                image::ExtendedColorType::Rgb8,
            )?;
            if split == "train" {
                pb.inc(1);
            }
        }
    }
    pb.finish_and_clear();
    std::fs::write(dir.join(MARKER), images.to_string()).at(dir.join(MARKER))?;
    Ok(())
}

/// A `w × h` RGB picture with smooth shapes and fine texture, so that JPEG decoding costs about
/// what a photo's does (a flat image would decode much faster). Sides 300–500 px, varying by `i`.
fn synthetic_photo(i: usize) -> (u32, u32, Vec<u8>) {
    let w = 300 + (i * 37 % 201) as u32;
    let h = 300 + (i * 53 % 201) as u32;
    let mut state = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut rgb = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let noise = (state & 31) as i32 - 16;
            let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
            let ring = ((fx - 0.5).hypot(fy - 0.5) * (8 + i % 5) as f32).sin();
            for c in 0..3 {
                let base = 128.0 + 90.0 * ring * [1.0, -0.6, 0.3][c] + 60.0 * (fx - fy) * c as f32;
                rgb.push((base as i32 + noise).clamp(0, 255) as u8);
            }
        }
    }
    (w, h, rgb)
}
