//! `makd experiment`: variants × seeds with honest controls, aggregated into a report.

use anyhow::Result;
use makd::experiment::config::ExperimentConfig;
use makd::experiment::runner;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Experiment config (TOML): train_config, seeds, variants (baseline, makd, random-target,
    /// shuffled-target, kd, dkd, makd+kd, makd-q<N>, makd-alpha<A>), aspect_counts, alphas, [kd]
    /// (exactly when kd, dkd or makd+kd is listed). See the README.
    #[arg(long)]
    config: PathBuf,
    /// Output dir: runs/<variant>/seed<k>/ (each a normal, resumable run dir), stores/ (control
    /// stores), results.json, report.md, report.html, plots/. Rerunning resumes.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let cfg = ExperimentConfig::load(&args.config)?;
    let json = serde_json::to_value(&cfg)?;
    let task = makd::train::config::TrainConfig::load(&cfg.train_config, &cfg.set)?.task;
    if task == makd::train::config::TaskKind::Detect {
        let r = makd::detect::experiment::run(&cfg, json, &args.out)?;
        println!("{}", makd::detect::experiment::markdown_table(&r));
        for c in &r.comparisons {
            println!("- {}", c.sentence);
        }
        println!("\nreport: {}", args.out.join("report.md").display());
        return Ok(());
    }
    let results = runner::run(&cfg, json, &args.out)?;
    makd::report::write_report(&results, &args.out)?;
    println!("{}", makd::report::markdown_table(&results));
    for c in &results.comparisons {
        println!("- {}", c.sentence);
    }
    println!("\nreport: {}", args.out.join("report.html").display());
    Ok(())
}
