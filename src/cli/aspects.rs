//! `makd aspects generate | import`: make the aspect set (`aspects.json`).

use super::openai_args::OpenAiArgs;
use clap::Subcommand;
use makd::aspects::{check_question, AspectSet, Provenance, Question};
use makd::error::input;
use makd::llm::aspects_gen::{self, GenerateOptions, KINDS};
use makd::llm::client::{Client, ClientOptions};
use makd::teacher::Mode;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    openai: Box<OpenAiArgs>,
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

/// Class names from a file (one per line) or a comma-separated list.
pub fn read_classes(spec: &str) -> makd::Result<Vec<String>> {
    let path = Path::new(spec);
    let classes: Vec<String> = if path.is_file() {
        std::fs::read_to_string(path)
            .map_err(|e| makd::error::io(path, e))?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect()
    } else if spec.contains(',') {
        spec.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    } else {
        return Err(input(
            format!("{spec:?} is neither a file nor a comma-separated list"),
            "--classes",
            "give a file with one class per line, or a list like 'cat,dog,bird'",
        ));
    };
    if classes.is_empty() {
        return Err(input(
            "no class names",
            "--classes",
            "list at least one class",
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for c in &classes {
        if !seen.insert(c) {
            return Err(input(
                format!("class {c:?} is listed twice"),
                format!("--classes {spec}"),
                "class names must be unique",
            ));
        }
    }
    Ok(classes)
}

/// Questions from a hand-written text file; errors name the line.
pub fn read_questions(path: &Path) -> makd::Result<Vec<Question>> {
    let text = std::fs::read_to_string(path).map_err(|e| makd::error::io(path, e))?;
    let mut texts: Vec<(String, String)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let at = format!("{}:{}", path.display(), i + 1);
        let mut t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        t = t.trim_start_matches(['-', '*', '•']).trim_start();
        let d = t.chars().take_while(|c| c.is_ascii_digit()).count();
        if d > 0 && t[d..].starts_with(['.', ')']) {
            t = t[d + 1..].trim_start();
        }
        let mut kind = String::new();
        if let Some(rest) = t.strip_prefix('[') {
            let close = rest.find(']').ok_or_else(|| {
                input(
                    "`[` without `]`",
                    &at,
                    "write `[kind] question?` or just the question",
                )
            })?;
            let k = rest[..close].trim().to_lowercase();
            if !KINDS.contains(&k.as_str()) {
                return Err(input(
                    format!("unknown kind {k:?}"),
                    &at,
                    format!("kinds: {}", KINDS.join(", ")),
                ));
            }
            kind = k;
            t = rest[close + 1..].trim();
        }
        check_question(t)
            .map_err(|why| input(why, &at, "write one yes/no question ending in '?' per line"))?;
        if let Some(j) = texts.iter().position(|(q, _)| q.eq_ignore_ascii_case(t)) {
            return Err(input(
                format!("duplicate of question {} ", j + 1),
                &at,
                "remove the repeated line",
            ));
        }
        if kind.is_empty() {
            kind = aspects_gen::guess_kind(t).to_string();
        }
        texts.push((t.to_string(), kind));
    }
    if texts.is_empty() {
        return Err(input(
            "no questions found",
            path.display().to_string(),
            "write one yes/no question per line",
        ));
    }
    let width = texts.len().to_string().len().max(2);
    Ok(texts
        .into_iter()
        .enumerate()
        .map(|(i, (text, kind))| Question {
            id: format!("q{:0width$}", i + 1),
            text,
            kind,
        })
        .collect())
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
    let o = a.openai.options(Mode::Class);
    let client = Client::new(
        &o.endpoints,
        ClientOptions {
            timeout: o.timeout.max(Duration::from_secs(1)),
            max_attempts: o.max_attempts,
            backoff_base: o.backoff_base,
            ..Default::default()
        },
    )?;
    eprintln!(
        "asking {} for {} questions about {} classes, then to select {}…",
        client.endpoints().join(", "),
        a.n,
        classes.len(),
        a.q
    );
    let set = aspects_gen::generate(
        &client,
        &GenerateOptions {
            classes,
            n_images: a.images.or(n_images),
            n: a.n,
            q: a.q,
            model: o.model,
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
