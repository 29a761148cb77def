//! `makd label`: score every (image, question) pair with a teacher into a score store, and
//! `makd label merge`: join the stores of a `--shard i/n` run.

use super::teacher_args::{ModeArg, TeacherArgs};
use anyhow::Context;
use makd::aspects::AspectSet;
use makd::data::Dataset;
use makd::label::{self, LabelJob};
use makd::scores::Shard;
use makd::teacher::Mode;
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
    shard: Option<Shard>,

    /// Label only the first N images (of the shard) for a quick trial; the rest stay unscored and
    /// a later run without --limit (or with a larger one) continues.
    #[arg(long, value_name = "N")]
    limit: Option<usize>,

    #[command(flatten)]
    teacher: TeacherArgs,
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

fn parse_shard(s: &str) -> Result<Shard, String> {
    s.parse().map_err(|e: makd::Error| e.report())
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(Command::Merge(m)) = args.command {
        let summary = makd::scores::writer::merge(&m.shards, &m.out)?;
        eprintln!("merged {} shards into {}", m.shards.len(), m.out.display());
        eprintln!("{summary}");
        return Ok(());
    }
    let args = *args.run;
    // clap enforces these when no subcommand is given.
    let dataset_spec = args.dataset.context("--dataset is required")?;
    let aspects_path = args.aspects.context("--aspects is required")?;
    let out = args.out.context("--out is required")?;
    let mode = Mode::from(args.mode);
    let aspects = AspectSet::load(&aspects_path)?;
    let teacher = makd::teacher::spec::build(&args.teacher.spec(mode)?, &aspects, mode)?;
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
        assert_eq!(cli.args.run.shard, Some(Shard::new(2, 4).unwrap()));
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
