//! `makd label`: score every (image, question) pair with a teacher into a score store, and
//! `makd label merge`: join the stores of a `--shard i/n` run.

use super::openai_args::OpenAiArgs;
use anyhow::Context;
use makd::aspects::AspectSet;
use makd::data::Dataset;
use makd::label::{self, LabelJob};
use makd::teacher::table::TableTeacher;
use makd::teacher::{Mode, Teacher};
use std::path::PathBuf;
use std::sync::Arc;

/// Score every (image, question) pair of a dataset with a teacher into a score store.
///
/// The store (`--out`) is written as work completes and fsync'd in batches: after a crash or
/// Ctrl-C, run the same command again and it continues where it stopped, never asking a pair
/// twice. Runs on several machines: give each `--shard i/n`, then `makd label merge`.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Args {
    #[command(subcommand)]
    command: Option<Command>,

    // Boxed: the label flags would make `Args` much larger than the other subcommands' Args.
    #[command(flatten)]
    run: Box<RunArgs>,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Dataset to label (e.g. `fashion-mnist`, `idx:DIR`, `imagefolder:ROOT`, `csv:FILE`; see README).
    #[arg(long, value_name = "SPEC", required = true)]
    dataset: Option<String>,

    /// Which split of the dataset to label.
    #[arg(long, default_value = "train")]
    split: String,

    /// The aspect set (aspects.json) whose questions are asked; its classes must be the dataset's.
    #[arg(long, value_name = "FILE", required = true)]
    aspects: Option<PathBuf>,

    /// Who answers: `table` (an annotation file, --table), `openai` (an OpenAI-compatible
    /// server with logprobs, --endpoint/--model), `native` (a local Qwen3-VL folder,
    /// --model-dir) or `text` (a local GGUF LLM, --model FILE.gguf, with --mode class).
    #[arg(long, value_enum, required = true)]
    backend: Option<Backend>,

    /// Annotation file for `--backend table`: CSV with header `class,<question id>,...` or
    /// `image_id,<question id>,...`, or JSON {"classes"|"images": {...}}; values P(yes) in [0, 1].
    #[arg(long, value_name = "FILE", required_if_eq("backend", "table"))]
    table: Option<PathBuf>,

    /// Score store directory: created, or resumed when it exists (it must have been made with the
    /// same dataset, aspect set and teacher).
    #[arg(long, value_name = "DIR", required = true)]
    out: Option<PathBuf>,

    /// `image`: ask about every image; `class`: ask once per class name and give every image of
    /// the class that answer (text-only teachers, annotation tables).
    #[arg(long, value_enum, default_value_t = ModeArg::Image)]
    mode: ModeArg,

    /// Label only images with index % n == i (0-based i), e.g. `--shard 0/4` on the first of four
    /// machines; merge the shard stores with `makd label merge`.
    #[arg(long, value_name = "i/n", value_parser = parse_shard)]
    shard: Option<(usize, usize)>,

    /// Label only the first N images (of the shard) for a quick trial; the rest stay unscored and
    /// a later run without --limit (or with a larger one) continues.
    #[arg(long, value_name = "N")]
    limit: Option<usize>,

    /// Hugging Face Qwen3-VL folder for `--backend native`: config.json, tokenizer.json,
    /// preprocessor_config.json and *.safetensors (see the README for fetching one).
    #[arg(long, value_name = "DIR", required_if_eq("backend", "native"))]
    model_dir: Option<PathBuf>,

    /// Compute type of `--backend native`: `f32`, or `bf16` for half the memory (slower on most
    /// CPUs, which lack bf16 matrix units).
    #[arg(long, value_enum, default_value_t = DtypeArg::F32)]
    dtype: DtypeArg,

    /// A system message for `--backend native` (none by default, like Qwen3-VL's template).
    #[arg(long)]
    system: Option<String>,

    /// `--backend native`: questions scored per batch from one shared image prefix (memory
    /// grows with it; the default takes a whole 50-question aspect set in one batch).
    #[arg(long, default_value_t = 64)]
    batch: usize,

    #[command(flatten)]
    openai: OpenAiArgs,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum DtypeArg {
    F32,
    Bf16,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Join the score stores of a `--shard i/n` run (every shard once) into one store.
    Merge(MergeArgs),
}

#[derive(clap::Args, Debug)]
struct MergeArgs {
    /// The shards' --out directories, all n of them, in any order.
    #[arg(value_name = "SHARD_DIR", required = true)]
    shards: Vec<PathBuf>,
    /// Directory of the merged store.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Table,
    Openai,
    /// A text-only GGUF LLM run in-process by candle (Gemma 3, Qwen2, Qwen3); `--model FILE.gguf`,
    /// class mode only.
    Text,
    /// A Qwen3-VL run in-process by candle from a Hugging Face folder (`--model-dir`); the image
    /// prefix is computed once per image and shared by all questions.
    Native,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum ModeArg {
    Image,
    Class,
}

fn parse_shard(s: &str) -> Result<(usize, usize), String> {
    let (i, n) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?} is not i/n (e.g. 0/4)"))?;
    let i: usize = i
        .trim()
        .parse()
        .map_err(|_| format!("{i:?} is not a shard index"))?;
    let n: usize = n
        .trim()
        .parse()
        .map_err(|_| format!("{n:?} is not a shard count"))?;
    if n == 0 || i >= n {
        return Err(format!("shard {i}/{n}: need 0 <= i < n (i is 0-based)"));
    }
    Ok((i, n))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(Command::Merge(m)) = args.command {
        let summary = makd::scores::merge(&m.shards, &m.out)?;
        eprintln!("merged {} shards into {}", m.shards.len(), m.out.display());
        eprintln!("{summary}");
        return Ok(());
    }
    let args = *args.run;
    // clap enforces these when no subcommand is given.
    let dataset_spec = args.dataset.context("--dataset is required")?;
    let aspects_path = args.aspects.context("--aspects is required")?;
    let out = args.out.context("--out is required")?;
    let backend = args.backend.context("--backend is required")?;
    let mode = match args.mode {
        ModeArg::Image => Mode::Image,
        ModeArg::Class => Mode::Class,
    };

    let aspects = AspectSet::load(&aspects_path)?;
    let teacher: Arc<dyn Teacher> = match backend {
        Backend::Table => {
            let table = args
                .table
                .context("--table FILE is required with --backend table")?;
            Arc::new(TableTeacher::load(&table, &aspects)?)
        }
        Backend::Openai => Arc::from(makd::teacher::openai::build(&args.openai.options(mode))?),
        Backend::Text => {
            let model = args
                .openai
                .model
                .clone()
                .context("--model FILE.gguf is required with --backend text")?;
            if mode != Mode::Class {
                return Err(makd::error::input(
                    "a text-only model cannot see images",
                    "--backend text",
                    "add --mode class: each class is asked once and its answers go to every image of the class",
                )
                .into());
            }
            let mut opts = makd::teacher::native::TextOptions {
                model: model.into(),
                prompt_template: args.openai.prompt_template.clone(),
                ..Default::default()
            };
            if !args.openai.yes_tokens.is_empty() {
                opts.yes_tokens = args.openai.yes_tokens.clone();
            }
            if !args.openai.no_tokens.is_empty() {
                opts.no_tokens = args.openai.no_tokens.clone();
            }
            Arc::from(makd::teacher::native::build_text(&opts)?)
        }
        Backend::Native => {
            let dir = args
                .model_dir
                .clone()
                .context("--model-dir DIR is required with --backend native")?;
            let mut opts = makd::teacher::native::vl::VlOptions {
                model_dir: dir,
                dtype: match args.dtype {
                    DtypeArg::F32 => candle_core::DType::F32,
                    DtypeArg::Bf16 => candle_core::DType::BF16,
                },
                prompt_template: args.openai.prompt_template.clone(),
                system: args.system.clone(),
                mode,
                batch: args.batch.max(1),
                ..Default::default()
            };
            if !args.openai.yes_tokens.is_empty() {
                opts.yes_tokens = args.openai.yes_tokens.clone();
            }
            if !args.openai.no_tokens.is_empty() {
                opts.no_tokens = args.openai.no_tokens.clone();
            }
            eprintln!("loading {}", opts.model_dir.display());
            Arc::from(makd::teacher::native::vl::build(&opts)?)
        }
    };
    let dataset = open_dataset(&dataset_spec, &args.split)?;
    eprintln!(
        "labeling {} with {} questions ({} mode) into {}",
        dataset.describe(),
        aspects.len(),
        mode,
        out.display()
    );
    label::run(LabelJob {
        dataset,
        aspects,
        teacher,
        out,
        shard: args.shard,
        limit: args.limit,
        mode,
    })?;
    Ok(())
}

/// Open `--dataset SPEC --split SPLIT`.
fn open_dataset(spec: &str, split: &str) -> anyhow::Result<Arc<dyn Dataset>> {
    let spec: makd::data::DatasetSpec = spec.parse()?;
    let split: makd::data::Split = split.parse()?;
    Ok(makd::data::open(&spec, split)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn parses_a_label_run_and_a_merge() {
        let cli = Cli::try_parse_from([
            "makd",
            "--dataset",
            "fashion-mnist",
            "--aspects",
            "a.json",
            "--backend",
            "table",
            "--table",
            "t.csv",
            "--out",
            "s",
            "--shard",
            "2/4",
            "--limit",
            "10",
            "--mode",
            "class",
        ])
        .unwrap();
        assert_eq!(cli.args.run.shard, Some((2, 4)));
        assert_eq!(cli.args.run.limit, Some(10));
        assert_eq!(cli.args.run.mode, ModeArg::Class);
        assert_eq!(cli.args.run.split, "train");

        let cli = Cli::try_parse_from(["makd", "merge", "a", "b", "--out", "m"]).unwrap();
        match cli.args.command {
            Some(Command::Merge(m)) => {
                assert_eq!(m.shards, vec![PathBuf::from("a"), PathBuf::from("b")]);
                assert_eq!(m.out, PathBuf::from("m"));
            }
            None => panic!("merge not parsed"),
        }
    }

    #[test]
    fn rejects_bad_flags() {
        let base = [
            "makd",
            "--dataset",
            "d",
            "--aspects",
            "a.json",
            "--out",
            "s",
        ];
        let with = |extra: &[&str]| {
            let mut v: Vec<&str> = base.to_vec();
            v.extend_from_slice(extra);
            Cli::try_parse_from(v)
        };
        // --table is required for the table backend; not for openai.
        assert!(with(&["--backend", "table"]).is_err());
        assert!(with(&["--backend", "openai"]).is_ok());
        for bad in ["4/4", "1", "a/2", "0/0"] {
            assert!(
                with(&["--backend", "openai", "--shard", bad]).is_err(),
                "{bad}"
            );
        }
        assert!(Cli::try_parse_from(["makd", "--backend", "openai"]).is_err());
    }
}
