//! `makd bench label`: labeling throughput three ways against the same server.
//!
//! (a) the paper's pattern as it behaves: sequential, one request per pair, the server's prompt
//!     cache off (`cache_prompt: false`, llama.cpp), the answer generated until it ends (cap 8);
//! (b) ours: the teacher as `makd label` drives it (1 token, subject-major order, prompt cache
//!     on, endpoints × concurrency groups in flight);
//! (c) the server's ceiling: the same 1-token requests fired with many in flight and no
//!     bookkeeping.
//! Prints pairs/s for each and the ratios (b)/(a) and (b)/(c).

use crate::cli::openai_args::{OpenAiArgs, PromptArgs};
use crate::cli::teacher_args::ModeArg;
use makd::aspects::{AspectSet, Question};
use makd::bench::{run_parallel, synthetic_sample};
use makd::data::Sample;
use makd::llm::logprobs;
use makd::teacher::openai::OpenAiTeacher;
use makd::teacher::{Mode, Status, Subject, Teacher};
use serde_json::{json, Value};
use std::sync::Mutex;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    openai: Box<OpenAiArgs>,
    #[command(flatten)]
    prompt: PromptArgs,
    /// Aspect set whose questions (and classes) are asked [default: 8 built-in questions].
    #[arg(long)]
    aspects: Option<std::path::PathBuf>,
    /// `class` (text-only: one prompt per class and question) or `image` (synthetic images).
    #[arg(long, value_enum, default_value_t = ModeArg::Class)]
    mode: ModeArg,
    /// Pairs scored by each pattern.
    #[arg(long, default_value_t = 80)]
    pairs: usize,
    /// Requests in flight for the ceiling pattern (c).
    #[arg(long, default_value_t = 16)]
    saturate: usize,
    /// Token cap for the paper's pattern (a).
    #[arg(long, default_value_t = 8)]
    paper_max_tokens: u32,
    /// Side of the synthetic gray images in image mode.
    #[arg(long, default_value_t = 28)]
    image_size: u32,
    /// Print the figures as JSON on stdout.
    #[arg(long)]
    json: bool,
}

const QUESTIONS: [&str; 8] = [
    "Does the object have sleeves?",
    "Is the object worn on the feet?",
    "Does the object have a handle or strap?",
    "Is the object made of soft fabric?",
    "Is the object longer than it is wide?",
    "Does the object cover the legs?",
    "Does the object have laces?",
    "Is the object usually worn outdoors in cold weather?",
];

struct Figures {
    pairs: usize,
    seconds: f64,
    failed: usize,
}

impl Figures {
    fn rate(&self) -> f64 {
        self.pairs as f64 / self.seconds.max(1e-9)
    }
    fn json(&self) -> Value {
        json!({"pairs": self.pairs, "seconds": self.seconds, "pairs_per_s": self.rate(), "failed": self.failed})
    }
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let mode = Mode::from(a.mode);
    let (classes, questions): (Vec<String>, Vec<Question>) = match &a.aspects {
        Some(p) => {
            let set = AspectSet::load(p)?;
            (set.classes, set.questions)
        }
        None => (
            makd::data::idx::FASHION_MNIST_CLASSES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            QUESTIONS
                .iter()
                .enumerate()
                .map(|(i, t)| Question {
                    id: format!("q{:02}", i + 1),
                    text: t.to_string(),
                    kind: String::new(),
                })
                .collect(),
        ),
    };
    let qn = questions.len();
    let groups = a.pairs.div_ceil(qn).max(1);
    let pairs = groups * qn;
    let opts = a.openai.options(mode, &a.prompt);
    let teacher = OpenAiTeacher::new(&opts)?;
    let images: Vec<Sample> = match mode {
        Mode::Image => (0..groups)
            .map(|i| synthetic_sample(i, a.image_size))
            .collect(),
        Mode::Class => Vec::new(),
    };
    let subject = |g: usize| match mode {
        Mode::Image => Subject::Image(&images[g]),
        Mode::Class => Subject::Class(&classes[g % classes.len()]),
    };
    let mut bodies: Vec<Value> = Vec::with_capacity(pairs);
    for g in 0..groups {
        bodies.extend(teacher.bodies(subject(g), &questions)?);
    }
    let client = teacher.client();
    let path = teacher.path();
    let parallel = teacher.parallelism();
    eprintln!(
        "bench label: {pairs} pairs ({groups} {} × {qn} questions) against {}",
        if mode == Mode::Image {
            "synthetic images"
        } else {
            "classes"
        },
        client.endpoints().join(", ")
    );

    // Warm the server (model pages, first-request allocations) outside every timing.
    let lease = client.lease();
    client
        .post(&lease, path, &bodies[0], logprobs::first_token)?
        .map_err(|why| anyhow::anyhow!("warm-up request failed: {why}"))?;
    drop(lease);

    // (a) the paper's pattern.
    let paper_bodies: Vec<Value> = bodies
        .iter()
        .map(|b| {
            let mut b = b.clone();
            let o = b.as_object_mut().expect("request bodies are objects");
            o.remove("logprobs");
            o.remove("top_logprobs");
            o.insert("max_tokens".into(), json!(a.paper_max_tokens));
            o.insert("cache_prompt".into(), json!(false));
            b
        })
        .collect();
    eprintln!(
        "(a) paper: sequential, no prompt cache, up to {} tokens…",
        a.paper_max_tokens
    );
    let (secs, failed) = run_parallel(pairs, 1, |i| {
        let lease = client.lease();
        matches!(
            client.post(&lease, path, &paper_bodies[i], logprobs::text),
            Ok(Ok(_))
        )
    });
    let paper = Figures {
        pairs,
        seconds: secs,
        failed,
    };

    // (b) ours.
    eprintln!("(b) ours: {parallel} groups in flight, 1 token…");
    let statuses = Mutex::new([0usize; 3]);
    let (secs, failed) = run_parallel(groups, parallel, |g| {
        match teacher.score(subject(g), &questions) {
            Ok(scores) => {
                let mut st = statuses.lock().unwrap();
                for s in scores {
                    st[s.status as usize] += 1;
                }
                true
            }
            Err(_) => false,
        }
    });
    let ours = Figures {
        pairs,
        seconds: secs,
        failed: failed * qn,
    };
    let st = statuses.into_inner().unwrap();

    // (c) the ceiling.
    eprintln!(
        "(c) ceiling: {} in flight, 1 token, no bookkeeping…",
        a.saturate
    );
    let (secs, failed) = run_parallel(pairs, a.saturate, |i| {
        let lease = client.lease();
        matches!(
            client.post(&lease, path, &bodies[i], |_| Ok(())),
            Ok(Ok(()))
        )
    });
    let ceiling = Figures {
        pairs,
        seconds: secs,
        failed,
    };

    let r_paper = ours.rate() / paper.rate();
    let r_ceiling = ours.rate() / ceiling.rate();
    if a.json {
        let out = json!({
            "endpoints": client.endpoints(),
            "model": teacher.info().model,
            "mode": mode.to_string(),
            "api": teacher.info().extra["api"],
            "questions": qn,
            "groups": groups,
            "in_flight_ours": parallel,
            "in_flight_ceiling": a.saturate,
            "paper": paper.json(),
            "ours": {
                "pairs": ours.pairs, "seconds": ours.seconds, "pairs_per_s": ours.rate(),
                "failed": ours.failed,
                "ok": st[Status::Ok as usize], "floored": st[Status::Floored as usize],
                "missing": st[Status::Missing as usize],
            },
            "ceiling": ceiling.json(),
            "ours_over_paper": r_paper,
            "ours_over_ceiling": r_ceiling,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "(a) paper    {:8.2} pairs/s  ({} pairs in {:.2} s)",
            paper.rate(),
            pairs,
            paper.seconds
        );
        println!(
            "(b) ours     {:8.2} pairs/s  ({} pairs in {:.2} s; ok {}, floored {}, missing {})",
            ours.rate(),
            pairs,
            ours.seconds,
            st[0],
            st[1],
            st[2]
        );
        println!(
            "(c) ceiling  {:8.2} pairs/s  ({} pairs in {:.2} s)",
            ceiling.rate(),
            pairs,
            ceiling.seconds
        );
        println!("(b)/(a) = {r_paper:.2}   (b)/(c) = {r_ceiling:.2}");
    }
    Ok(())
}
