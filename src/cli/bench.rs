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
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.what {
        What::Train(a) => super::bench_train::run(a),
        What::Label(a) => super::bench_label::run(a),
    }
}
