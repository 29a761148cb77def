//! `makd predict`: classify image files with a trained run and show its answers to the aspect questions.

use anyhow::Result;
use makd::data::transform::Transform;
use makd::data::{DatasetSource, DatasetSpec, Split};
use makd::train::classify;
use makd::train::run_dir::{ModelInfo, RunDir};
use makd::train::trainer;
use rand::SeedableRng;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Run dir written by `makd train`.
    #[arg(long)]
    run_dir: PathBuf,
    /// Which checkpoint: `last` or `best`.
    #[arg(long, default_value = "last")]
    checkpoint: String,
    /// How many classes to list per image.
    #[arg(long, default_value_t = 3)]
    top: usize,
    /// Print JSON (one object per image) instead of text.
    #[arg(long)]
    json: bool,
    /// Detection runs: draw the boxes, categories and top aspect answers onto the image and
    /// write it as this PNG (with several images: a directory, one `<image name>.png` each).
    #[arg(long, value_name = "OUT.png")]
    draw: Option<PathBuf>,
    /// Detection runs: list (and draw) only objects scoring at least this [default: 0.3].
    #[arg(long)]
    min_score: Option<f32>,
    /// Image files (png, jpeg, webp).
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let run_dir = RunDir::new(&args.run_dir);
    if run_dir.load_config()?.task == makd::train::config::TaskKind::Detect {
        return super::detect::predict(
            &run_dir,
            &args.checkpoint,
            &args.images,
            args.min_score.unwrap_or(0.3),
            args.draw.as_deref(),
            args.json,
        );
    }
    if args.draw.is_some() || args.min_score.is_some() {
        return Err(makd::error::input(
            "--draw and --min-score apply to detection runs (task = \"detect\"); this run is a classifier",
            run_dir.root.display().to_string(),
            "leave them out for a classifier",
        )
        .into());
    }
    let (cfg, info, model) = trainer::load_run(&run_dir, &args.checkpoint)?;
    check_dataset_classes(&cfg.data.dataset, &info, &run_dir)?;
    let dev = model.device.clone();
    let c = info.classes.len();
    let transform = Transform::new(cfg.transform.clone())?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let student = model.inference()?;
    for path in &args.images {
        let img = makd::data::imagefolder::decode_file(path)?;
        let x = transform.apply(&img, false, &mut rng);
        let xs = candle_core::Tensor::from_vec(
            x,
            (
                1,
                cfg.transform.channels,
                cfg.transform.size,
                cfg.transform.size,
            ),
            &dev,
        )?;
        let row = student
            .forward(&xs, makd::student::Pass::Eval)?
            .squeeze(0)?
            .to_vec1::<f32>()?;
        let (probs, aspects) = classify::split_outputs(&row, c)?;
        let mut order: Vec<usize> = (0..c).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
        if args.json {
            let classes: Vec<_> = order
                .iter()
                .take(args.top)
                .map(|&k| serde_json::json!({"class": info.classes[k], "p": probs[k]}))
                .collect();
            let asp: Vec<_> = aspects
                .iter()
                .enumerate()
                .map(|(j, p)| {
                    let q = info.questions.get(j);
                    serde_json::json!({"id": q.map(|q| q.id.clone()), "question": q.map(|q| q.text.clone()), "p_yes": p})
                })
                .collect();
            println!(
                "{}",
                serde_json::json!({"image": path, "classes": classes, "aspects": asp})
            );
        } else {
            println!("{}", path.display());
            for &k in order.iter().take(args.top) {
                println!("  {:>6.2}%  {}", 100.0 * probs[k], info.classes[k]);
            }
            for (j, p) in aspects.iter().enumerate() {
                let text = info
                    .questions
                    .get(j)
                    .map_or(String::new(), |q| format!("{} {}", q.id, q.text));
                let answer = if *p > 0.5 { "yes" } else { "no " };
                println!("  {answer} {:.2}  {text}", p);
            }
        }
    }
    Ok(())
}

/// The class names printed are model.json's. When the run's dataset is here, its classes must
/// still be those: a class added, removed or renamed since means the run dir and the data
/// disagree, and the names a user reads back may not be the ones the model was trained on.
/// Predicting needs only the run dir, so a dataset that cannot be opened is skipped with a note;
/// the built-in Fashion-MNIST has fixed class names and is not opened (it may download).
fn check_dataset_classes(spec: &DatasetSpec, info: &ModelInfo, run_dir: &RunDir) -> Result<()> {
    if matches!(spec.source, DatasetSource::FashionMnist(None)) {
        return Ok(());
    }
    match makd::data::open(spec, Split::Test) {
        Ok(ds) => info.check_classes(ds.classes(), &run_dir.root)?,
        Err(e) => makd::progress::log(format!(
            "class names from model.json (the run's dataset {spec} cannot be opened to check them: {e})"
        )),
    }
    Ok(())
}
