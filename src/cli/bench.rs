//! `makd bench`: commands that measure and print figures (ratios against a reference where one exists).

use clap::Subcommand;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand, Debug)]
enum What {
    /// Student training throughput (images/s) for one model, batch and input size.
    Train(super::bench_train::Args),
    /// Labeling throughput against OpenAI-compatible endpoints: paper's pattern vs ours vs the server's ceiling.
    Label(super::bench_label::Args),
    /// Native Qwen3-VL labeling: image prefix shared by all questions vs one full prompt each.
    Native(super::bench_native::Args),
    /// Resuming a score store from a synthetic append log (ImageNet scale by default).
    Resume(super::bench_resume::Args),
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.what {
        What::Train(a) => super::bench_train::run(a),
        What::Label(a) => super::bench_label::run(a),
        What::Resume(a) => super::bench_resume::run(a),
        What::Native(a) => super::bench_native::run(a),
    }
}
