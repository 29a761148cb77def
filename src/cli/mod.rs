//! Command-line interface: one file per subcommand, each with its `Args` and a `run()` that wires
//! library calls together. No logic of the method lives here.

mod aspects;
mod bench;
mod data;
mod demo;
mod detect;
mod eval;
mod experiment;
mod label;
mod openai_args;
mod predict;
mod teacher_args;
mod train;

use clap::{Parser, Subcommand};

/// makd — distill a multimodal LLM's answers to yes/no aspect questions into a small image classifier
/// (Multi-aspect Knowledge Distillation, arXiv 2501.13341).
#[derive(Parser, Debug)]
#[command(name = "makd", version, about, long_about = None, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Make or import the aspect set (the yes/no questions).
    Aspects(aspects::Args),
    /// Score every (image, question) pair with a teacher into a score store.
    Label(label::Args),
    /// Train a student (CE on class logits + α·BCE on aspect logits) into a run dir.
    Train(train::Args),
    /// Evaluate a run dir's best (or last) checkpoint on the test split.
    Eval(eval::Args),
    /// Classify image files with a trained run and show its aspect answers.
    Predict(predict::Args),
    /// Variants × seeds (baseline, MaKD, random/shuffled controls, KD, sweeps) with a report.
    Experiment(experiment::Args),
    /// The whole method in one command on the offline default (Fashion-MNIST), with a report.
    Demo(demo::Args),
    /// Benchmarks that print measured figures (not tests).
    Bench(bench::Args),
    /// Detection data: export a dataset as COCO (annotations.json + images/) for other tools.
    Data(data::Args),
}

/// Whether this invocation trains or evaluates students (our kernels parallelise with rayon), as
/// opposed to running a native LLM teacher (candle's own matmuls want candle's threads).
pub fn wants_one_candle_thread() -> bool {
    let first = std::env::args().nth(1).unwrap_or_default();
    let second = std::env::args().nth(2).unwrap_or_default();
    matches!(
        first.as_str(),
        "train" | "eval" | "predict" | "experiment" | "demo"
    ) || (first == "bench" && matches!(second.as_str(), "train" | "loader"))
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Aspects(a) => aspects::run(a),
        Command::Label(a) => label::run(a),
        Command::Train(a) => train::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Predict(a) => predict::run(a),
        Command::Experiment(a) => experiment::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Data(a) => data::run(a),
    }
}
