//! `makd aspects generate | import`: make the aspect set (`aspects.json`).

use super::openai_args::ServerArgs;
use clap::Subcommand;
use makd::aspects::generate::{self, GenerateOptions};
use makd::aspects::import::{read_classes, read_questions};
use makd::aspects::{AspectSet, Provenance};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand, Debug)]
enum What {
    /// Ask an LLM for N yes/no questions about the classes, then to select Q (the paper's two steps).
    Generate(GenerateArgs),
    /// Make an aspect set from a text file of questions written by hand (one per line).
    Import(ImportArgs),
}

#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    /// Class names: a file with one per line, or a comma-separated list.
    #[arg(long, required_unless_present = "dataset", conflicts_with = "dataset")]
    classes: Option<String>,
    /// Take the class names (and the image count) from a dataset's training split instead.
    #[arg(long, value_name = "SPEC")]
    dataset: Option<String>,
    /// Number of images in the dataset (the paper's prompt states it; omitted if not given).
    #[arg(long)]
    images: Option<usize>,
    /// Questions to generate (step 1).
    #[arg(long, default_value_t = 150)]
    n: usize,
    /// Questions to select (step 2).
    #[arg(long, default_value_t = 50)]
    q: usize,
    /// Requests per step before giving up when the model writes too few usable questions.
    #[arg(long, default_value_t = 4)]
    rounds: u32,
    /// Sampling temperature for generation.
    #[arg(long, default_value_t = 0.7)]
    temperature: f32,
    /// Token limit of one generation reply.
    #[arg(long, default_value_t = 8192)]
    max_tokens: u32,
    #[command(flatten)]
    server: Box<ServerArgs>,
    /// Where to write the aspect set.
    #[arg(short, long)]
    out: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// Text file: one question per line; blank lines and `#` comments skipped; list markers
    /// (`1.`, `-`) stripped; an optional `[kind]` prefix (visual, shape, part, material,
    /// environment, function, abstract).
    questions: PathBuf,
    /// Class names: a file with one per line, or a comma-separated list.
    #[arg(long, required_unless_present = "dataset", conflicts_with = "dataset")]
    classes: Option<String>,
    /// Take the class names from a dataset's training split instead.
    #[arg(long, value_name = "SPEC")]
    dataset: Option<String>,
    /// Where to write the aspect set.
    #[arg(short, long)]
    out: PathBuf,
}

/// Class names (and the number of training images, when a dataset gives them).
fn class_list(
    classes: &Option<String>,
    dataset: &Option<String>,
) -> anyhow::Result<(Vec<String>, Option<usize>)> {
    match (classes, dataset) {
        (Some(c), _) => Ok((read_classes(c)?, None)),
        (None, Some(spec)) => {
            let ds = makd::data::open(&spec.parse()?, makd::data::Split::Train)?;
            Ok((ds.classes().to_vec(), Some(ds.len())))
        }
        (None, None) => anyhow::bail!("give --classes or --dataset"),
    }
}

fn generate(a: GenerateArgs) -> anyhow::Result<()> {
    let (classes, n_images) = class_list(&a.classes, &a.dataset)?;
    let client = a.server.client()?;
    eprintln!(
        "asking {} for {} questions about {} classes, then to select {}…",
        client.endpoints().join(", "),
        a.n,
        classes.len(),
        a.q
    );
    let set = generate::generate(
        &client,
        &GenerateOptions {
            classes,
            n_images: a.images.or(n_images),
            n: a.n,
            q: a.q,
            model: a.server.model.clone().unwrap_or_default(),
            max_rounds: a.rounds,
            temperature: a.temperature,
            max_tokens: a.max_tokens,
        },
    )?;
    set.save(&a.out)?;
    eprintln!(
        "wrote {} questions ({} generated) to {}{}",
        set.len(),
        set.provenance.n_generated.unwrap_or(0),
        a.out.display(),
        set.provenance
            .note
            .as_deref()
            .map(|n| format!(" — note: {n}"))
            .unwrap_or_default()
    );
    Ok(())
}

fn import(a: ImportArgs) -> anyhow::Result<()> {
    let (classes, _) = class_list(&a.classes, &a.dataset)?;
    let questions = read_questions(&a.questions)?;
    let set = AspectSet::new(
        classes,
        questions,
        Provenance {
            method: "import".into(),
            note: Some(format!("imported from {}", a.questions.display())),
            ..Default::default()
        },
    )?;
    set.save(&a.out)?;
    eprintln!("wrote {} questions to {}", set.len(), a.out.display());
    Ok(())
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.what {
        What::Generate(a) => generate(a),
        What::Import(a) => import(a),
    }
}
