//! `makd demo`: the whole method on the offline default, in one command — Fashion-MNIST, the shipped
//! 50-question aspect set, a teacher answering in class mode, then baseline / MaKD / random-target
//! students over several seeds, and the report.

use super::openai_args::{OpenAiArgs, PromptArgs};
use anyhow::Result;
use makd::aspects::AspectSet;
use makd::data::{self, Split};
use makd::experiment::config::{ExperimentConfig, ExperimentFile};
use makd::experiment::runner;
use makd::experiment::variant::Variant;
use makd::label::{self, LabelJob};
use makd::scores::derive::broadcast_classes;
use makd::scores::ScoreStore;
use makd::teacher::{Mode, Teacher};
use std::path::PathBuf;
use std::sync::Arc;

const ASPECTS: &str = include_str!("../../examples/fashion-mnist/aspects.json");
const TABLE: &str = include_str!("../../examples/fashion-mnist/aspect_table.csv");
const TRAIN_CONFIG: &str = include_str!("../../examples/fashion-mnist/makd.toml");

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Smaller and faster (about 2 minutes on 2 cores): fewer images and epochs, two seeds.
    #[arg(long)]
    quick: bool,
    /// Where everything goes (stores, runs, report). Rerunning resumes.
    #[arg(long, default_value = "runs/demo")]
    out: PathBuf,
    /// Seeds per variant, at least 1 (default 3; 2 with --quick).
    #[arg(long)]
    seeds: Option<usize>,
    /// Use the shipped hand-written per-class answers instead of an LLM (no server needed).
    #[arg(long, conflicts_with = "endpoints")]
    table_teacher: bool,
    /// The LLM teacher: an OpenAI-compatible server (scripts/demo starts llama.cpp with Gemma 3
    /// 270M and passes its URL). A real MLLM behind vLLM works the same way.
    #[command(flatten)]
    openai: OpenAiArgs,
    #[command(flatten)]
    prompt: PromptArgs,
}

pub fn run(args: Args) -> Result<()> {
    let out = &args.out;
    std::fs::create_dir_all(out)?;
    let aspects_path = out.join("aspects.json");
    std::fs::write(&aspects_path, ASPECTS)?;
    let train_store = out.join("scores-train");
    let test_store = out.join("scores-test");
    let use_table = args.table_teacher || args.openai.server.endpoints.is_empty();

    // The experiment is written as a user's experiment.toml and read back through the same
    // validation, before anything slow runs: a bad --seeds fails now, and the file reruns the
    // students alone with `makd experiment --config OUT/experiment.toml --out OUT`.
    let seeds = args.seeds.unwrap_or(if args.quick { 2 } else { 3 });
    let (train_limit, test_limit, epochs) = if args.quick {
        (3000, 2000, 2)
    } else {
        (12000, 5000, 3)
    };
    let teacher_note = if use_table {
        "Teacher: hand-written per-class answers (examples/fashion-mnist/aspect_table.csv), a stand-in for an MLLM: it knows each class, not each image.".to_string()
    } else {
        let model = args.openai.server.model.clone().unwrap_or_default();
        format!(
            "Teacher: `{model}` answering in class mode (one answer per class and question, broadcast to its images). \
             A text-only model this small is a weak teacher: it proves the mechanics, not the method. \
             For a real result point the demo at an MLLM: `makd demo --endpoint http://HOST:8000/v1 --model Qwen/Qwen2.5-VL-7B-Instruct` \
             (vLLM), or label the images in process with a Qwen3-VL or InternVL folder: `makd label --backend native --model-dir DIR`."
        )
    };
    std::fs::write(out.join("train.toml"), TRAIN_CONFIG)?;
    let abs = |p: &std::path::Path| -> Result<String> {
        Ok(std::path::absolute(p)?.display().to_string())
    };
    let file = ExperimentFile {
        name: Some("makd demo: Fashion-MNIST".into()),
        seeds: (0..seeds as u64).collect(),
        variants: [Variant::Baseline, Variant::Makd, Variant::RandomTarget]
            .map(String::from)
            .to_vec(),
        set: vec![
            format!("aspects.scores={}", abs(&train_store)?),
            format!("aspects.test_scores={}", abs(&test_store)?),
            format!("aspects.aspects={}", abs(&aspects_path)?),
            format!("data.train_limit={train_limit}"),
            format!("data.test_limit={test_limit}"),
            format!("train.epochs={epochs}"),
        ],
        examples: 4,
        embedding_points: if args.quick { 300 } else { 600 },
        notes: vec![
            teacher_note,
            format!("Students: the small CNN on {train_limit} training images (class-balanced), {epochs} epoch(s), evaluated on {test_limit} test images; sized to finish in minutes on 2 CPU cores, not to reach the best accuracy."),
        ],
        ..ExperimentFile::new("train.toml")
    };
    let experiment_path = out.join("experiment.toml");
    std::fs::write(
        &experiment_path,
        format!(
            "# Written by `makd demo`: the students' experiment, rerun alone with\n\
             # makd experiment --config {} --out {}\n{}",
            experiment_path.display(),
            out.display(),
            toml::to_string(&file)?
        ),
    )?;
    let cfg = ExperimentConfig::load(&experiment_path)?;

    let aspects = AspectSet::load(&aspects_path)?;
    let spec: data::DatasetSpec = "fashion-mnist".parse()?;
    let train = data::open(&spec, Split::Train)?;
    let test = data::open(&spec, Split::Test)?;

    let teacher: Arc<dyn Teacher> = if use_table {
        if !args.table_teacher {
            eprintln!("no --endpoint given: using the shipped hand-written per-class answers as the teacher (scripts/demo starts a local LLM)");
        }
        let table = out.join("aspect_table.csv");
        std::fs::write(&table, TABLE)?;
        Arc::new(makd::teacher::table::TableTeacher::load(&table, &aspects)?)
    } else {
        Arc::from(makd::teacher::openai::build(
            &args.openai.options(Mode::Class, &args.prompt),
        )?)
    };

    // Stage 2: the teacher answers every question for every class; the answers are broadcast to the
    // images of that class. The test split gets the same per-class rows (for aspect metrics).
    label::run(LabelJob {
        dataset: train.clone(),
        aspects: aspects.clone(),
        teacher,
        out: train_store.clone(),
        shard: None,
        limit: None,
        mode: Mode::Class,
    })?;
    if !test_store.join("scores.safetensors").exists() {
        broadcast_classes(
            &ScoreStore::open(&train_store)?,
            train.as_ref(),
            test.as_ref(),
        )?
        .save(&test_store)?;
    }

    // Stage 3: students.
    let json = serde_json::to_value(&cfg)?;
    let results = runner::run(&cfg, json, out)?;
    makd::report::write_report(&results, out)?;
    println!("{}", makd::report::markdown_table(&results));
    for c in &results.comparisons {
        println!("- {}", c.sentence);
    }
    for n in &results.notes {
        println!("- {n}");
    }
    println!("\nreport: {}", out.join("report.html").display());
    Ok(())
}
