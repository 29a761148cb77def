//! `makd eval`: evaluate a run dir's checkpoint on every test image.

use anyhow::Result;
use makd::data::transform::Transform;
use makd::train::checkpoint;
use makd::train::targets::Targets;
use makd::train::trainer::{self, RunDir};
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
    /// Score store of the test images, for aspect metrics (default: the run's aspects.test_scores).
    #[arg(long)]
    scores: Option<PathBuf>,
    /// Split to evaluate: `test` (default) or `train` (e.g. with --logits-out for a KD teacher).
    #[arg(long, default_value = "test")]
    split: makd::data::Split,
    /// Also write the class logits of every image of the (full) split to this file, for use as
    /// `kd.logits` when this run is the teacher network of a KD student.
    #[arg(long)]
    logits_out: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let run_dir = RunDir::new(&args.run_dir);
    let (cfg, info, model) = trainer::load_run(&run_dir, &args.checkpoint)?;
    // The directory the weights came from (`<name>.old` after a crash mid-save).
    let ckpt_dir = checkpoint::existing(&run_dir.checkpoint(&args.checkpoint))
        .unwrap_or_else(|| run_dir.checkpoint(&args.checkpoint));
    let ds = trainer::open_datasets(&cfg)?;
    let q = info.num_aspects;
    let scores = args.scores.or(cfg.aspects.test_scores.clone());
    let targets = match &scores {
        Some(p) if q > 0 => {
            let full_test = makd::data::open(&cfg.data.dataset, makd::data::Split::Test)?;
            let (store, _) =
                trainer::open_store(p, cfg.aspects.aspects.as_deref(), full_test.as_ref())?;
            Some(Targets::from_store(
                &store,
                ds.test.as_ref(),
                &p.display().to_string(),
            )?)
        }
        _ => None,
    };
    let transform = Arc::new(Transform::new(cfg.transform.clone())?);
    let r = trainer::evaluate(
        &model,
        ds.test.clone(),
        &transform,
        cfg.train.eval_batch_size,
        cfg.data.workers,
        targets.as_ref(),
        false,
    )?;
    if args.json {
        let v = serde_json::json!({
            "checkpoint": ckpt_dir, "images": r.images, "test_loss": r.loss, "test_top1": r.top1, "test_top5": r.top5,
            "aspects": r.aspects,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "{} images: top-1 {:.2}%  top-5 {:.2}%  loss {:.4}",
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
