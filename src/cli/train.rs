//! `makd train`: train a student into a run dir (resumes automatically from `checkpoints/last`).

use anyhow::Result;
use makd::train::config::{TaskKind, TrainConfig};
use makd::train::run_dir::RunDir;
use makd::train::trainer;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Training config (TOML). Without it, the paper's defaults on Fashion-MNIST.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Run dir: config.toml, metrics.jsonl, checkpoints/{last,best}, summary.json. An unfinished
    /// run there with the same config is resumed.
    #[arg(long)]
    run_dir: PathBuf,
    /// Override a config value, e.g. --set train.epochs=5 --set optim.lr=0.05 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Start over: delete the run's files in the run dir (config.toml, model.json, metrics.jsonl,
    /// summary.json, checkpoints/; other files stay). A directory that exists and is not a run
    /// dir (nor empty) is refused and left untouched.
    #[arg(long)]
    fresh: bool,
    /// Print summary.json to stdout when done.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let cfg = match &args.config {
        Some(p) => TrainConfig::load(p, &args.sets)?,
        None => TrainConfig::from_sets(&args.sets)?,
    };
    let run_dir = RunDir::new(&args.run_dir);
    if cfg.task == TaskKind::Detect {
        return super::detect::train(&cfg, &run_dir, args.fresh, args.json);
    }
    let summary = trainer::train(&cfg, &run_dir, args.fresh)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "{}: test top-1 {:.2}%  top-5 {:.2}%  (best {:.2}% at epoch {}; {} epochs, {:.0} s)",
            run_dir.root.display(),
            summary.test_top1,
            summary.test_top5,
            summary.best_test_top1,
            summary.best_epoch,
            summary.epochs,
            summary.seconds
        );
        if let Some(a) = &summary.test_aspects {
            println!(
                "aspects vs teacher on test: BCE {:.4}  AUC {}  agreement {:.1}%",
                a.bce,
                a.auc.map_or("n/a".into(), |v| format!("{v:.3}")),
                100.0 * a.agreement
            );
        }
    }
    Ok(())
}
