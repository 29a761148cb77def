//! `makd bench`: commands that measure and print figures (ratios against a reference where one exists).

use clap::Subcommand;

mod label;
mod loader;
mod native;
mod resume;
mod train;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand, Debug)]
enum What {
    /// Student training throughput (images/s) for one model, batch and input size.
    Train(train::Args),
    /// Labeling throughput against OpenAI-compatible endpoints: paper's pattern vs ours vs the server's ceiling.
    Label(label::Args),
    /// Native Qwen3-VL labeling: image prefix shared by all questions vs one full prompt each.
    Native(native::Args),
    /// Loader wait at the paper's input size: trains on a synthetic JPEG ImageFolder, prints the
    /// share of step time spent waiting for batches.
    Loader(loader::Args),
    /// Resuming a score store from a synthetic append log (ImageNet scale by default).
    Resume(resume::Args),
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.what {
        What::Train(a) => train::run(a),
        What::Label(a) => label::run(a),
        What::Resume(a) => resume::run(a),
        What::Loader(a) => loader::run(a),
        What::Native(a) => native::run(a),
    }
}
