//! `makd eval`: evaluate a run dir's checkpoint on a split, and optionally cache its class logits
//! for a KD student (`kd.logits`).

use anyhow::Result;
use makd::data::transform::Transform;
use makd::data::Split;
use makd::train::classify;
use makd::train::config::TaskKind;
use makd::train::kd::TeacherLogits;
use makd::train::run_dir::RunDir;
use makd::train::trainer;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Run dir written by `makd train`.
    #[arg(long)]
    run_dir: PathBuf,
    /// Which checkpoint: `last` (the run's final weights) or `best`.
    #[arg(long, default_value = "last")]
    checkpoint: String,
    /// Score store of the evaluated split, for aspect metrics (default: the run's
    /// aspects.test_scores for `--split test`, aspects.scores for `--split train`).
    #[arg(long)]
    scores: Option<PathBuf>,
    /// Split to evaluate: `test` (default) or `train` (e.g. with --logits-out for a KD teacher).
    /// Without --logits-out the run's own images of it (data.test_limit / data.train_limit).
    #[arg(long, default_value = "test")]
    split: Split,
    /// Also write the class logits of every image of the full split to this file (safetensors,
    /// see README: KD logits), for use as `kd.logits` when this run is the teacher network of a
    /// KD student. The whole split is scored, so any student's subset of it is covered.
    #[arg(long)]
    logits_out: Option<PathBuf>,
    /// Detection runs: also write every detection (top 100 per image, boxes in the original
    /// images' pixels) as COCO results JSON `[{image_id, category_id, bbox, score}]`, with the
    /// ids of `makd data export`'s annotations.json, for pycocotools or any COCO tool.
    #[arg(long)]
    detections_out: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let run_dir = RunDir::new(&args.run_dir);
    if run_dir.load_config()?.task == TaskKind::Detect {
        if args.logits_out.is_some() || args.scores.is_some() {
            return Err(makd::error::input(
                "--logits-out and --scores apply to classification runs; this is a detection run",
                run_dir.root.display().to_string(),
                "use --detections-out FILE for a detection run's COCO results",
            )
            .into());
        }
        return super::detect::eval(
            &run_dir,
            &args.checkpoint,
            args.split,
            args.detections_out.as_deref(),
            args.json,
        );
    }
    if let Some(p) = &args.detections_out {
        return Err(makd::error::input(
            "--detections-out applies to detection runs (task = \"detect\"); this run is a classifier",
            p.display().to_string(),
            "use --logits-out FILE for a classifier's class logits",
        )
        .into());
    }
    let (cfg, info, model) = trainer::load_run(&run_dir, &args.checkpoint)?;
    // The directory the weights came from (`<name>.old` after a crash mid-save).
    let ckpt_dir = run_dir.weights(&args.checkpoint)?;
    let datasets = trainer::open_datasets(&cfg)?;
    info.check_classes(datasets.train.classes(), &run_dir.root)?;
    let split = args.split;
    let full = datasets.full(split).clone();
    let ds = match &args.logits_out {
        Some(_) => full.clone(),
        None => datasets.used(split).clone(),
    };
    let q = info.num_aspects;
    let scores = args.scores.clone().or(match split {
        Split::Test => cfg.aspects.test_scores.clone(),
        Split::Train => cfg.aspects.scores.clone(),
    });
    let targets = match &scores {
        Some(p) if q > 0 => Some(trainer::open_targets(
            p,
            cfg.aspects.aspects.as_deref(),
            full.as_ref(),
            ds.as_ref(),
            &info.question_ids(),
        )?),
        _ => None,
    };
    let transform = Arc::new(Transform::new(cfg.transform.clone())?);
    let r = classify::evaluate(
        &model,
        ds.clone(),
        &transform,
        cfg.train.eval_batch_size,
        cfg.data.workers,
        targets.as_ref(),
        args.logits_out.is_some(),
    )?;
    if let (Some(path), Some(outputs)) = (&args.logits_out, &r.outputs) {
        let c = info.classes.len();
        let class_logits: Vec<Vec<f32>> = outputs.iter().map(|row| row[..c].to_vec()).collect();
        TeacherLogits::save(path, ds.as_ref(), &class_logits)?;
        eprintln!(
            "wrote the class logits of {} {split} images to {}",
            class_logits.len(),
            path.display()
        );
    }
    if args.json {
        let key = |name: &str| format!("{split}_{name}");
        let mut v = serde_json::json!({
            "checkpoint": ckpt_dir, "split": split, "images": r.images, "aspects": r.aspects,
            "logits_out": args.logits_out,
        });
        let o = v.as_object_mut().expect("an object");
        o.insert(key("loss"), r.loss.into());
        o.insert(key("top1"), r.top1.into());
        o.insert(key("top5"), r.top5.into());
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "{split}: {} images: top-1 {:.2}%  top-5 {:.2}%  loss {:.4}",
            r.images, r.top1, r.top5, r.loss
        );
        if let Some(a) = &r.aspects {
            println!(
                "aspects vs teacher: BCE {:.4}  AUC {}  agreement {:.1}%",
                a.bce,
                a.auc.map_or("n/a".into(), |v| format!("{v:.3}")),
                100.0 * a.agreement
            );
        }
    }
    Ok(())
}
