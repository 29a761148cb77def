//! `makd aspects generate | import` driven like a user, against loopback servers.
//!
//! Generation needs a model that writes questions: the tiny random GGUF writes junk, so the
//! real-server test checks that junk ends in a clear, bounded error; the parsing of real-looking
//! replies (JSON, fenced JSON, numbered lines, prose) is checked against a fake server returning
//! canned text.

#[path = "server/harness.rs"]
mod harness;

use harness::*;
use makd::aspects::AspectSet;
use std::process::Command;

fn makd() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_makd"));
    c.env_remove("MAKD_API_KEY").env_remove("OPENAI_API_KEY");
    c
}

#[test]
fn generate_parses_messy_replies_dedupes_and_selects_q() {
    if !have_python("json", "generate_parses_messy_replies") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Round 1: fenced JSON with a duplicate and an open question; round 2: numbered lines in
    // prose; step 2: a selection with an out-of-range number and a repeat.
    let texts = serde_json::json!({"texts": [
        "Here you go:\n```json\n[{\"question\": \"Does the object have sleeves?\", \"kind\": \"part\"},\n {\"question\": \"does the object have SLEEVES?\"},\n {\"question\": \"What colour is it?\"},\n \"Is the object made of leather?\"]\n```",
        "Sure!\n1. Is the object worn on the feet?\n2) **Does the object have a handle?**\n3. Is it longer than it is wide? (shape)\nThat's all.",
        "I choose [5, 2, 99, 2, 4]"
    ]});
    let (fake, record) = fake_server(dir.path(), &texts.to_string(), "gen");
    let out = dir.path().join("aspects.json");
    let st = makd()
        .args([
            "aspects",
            "generate",
            "--classes",
            "Shirt,Sneaker,Bag",
            "--images",
            "300",
        ])
        .args(["--n", "5", "--q", "3", "--rounds", "3", "--model", "canned"])
        .args(["--endpoint", &fake.url, "-o", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let set = AspectSet::load(&out).unwrap();
    let texts: Vec<&str> = set.questions.iter().map(|q| q.text.as_str()).collect();
    assert_eq!(
        texts,
        [
            "Is it longer than it is wide?",
            "Is the object made of leather?",
            "Does the object have a handle?"
        ]
    );
    let ids: Vec<&str> = set.questions.iter().map(|q| q.id.as_str()).collect();
    assert_eq!(ids, ["q01", "q02", "q03"]);
    assert_eq!(set.questions[0].kind, "shape");
    assert_eq!(set.questions[1].kind, "material");
    assert_eq!(set.classes, ["Shirt", "Sneaker", "Bag"]);
    let p = &set.provenance;
    assert_eq!(
        (p.method.as_str(), p.n_generated, p.q_selected),
        ("llm", Some(5), Some(3))
    );
    assert_eq!(p.model.as_deref(), Some("canned"));
    assert!(p.prompts[0].starts_with("The dataset consists of 3 classes and 300 images. The class list is as follows: [Shirt, Sneaker, Bag]."));
    assert!(
        p.prompts[1].contains("5. Is it longer than it is wide?\nSelect 3 of the most relevant")
    );
    assert!(
        p.note
            .as_deref()
            .unwrap()
            .contains("1 invalid and 1 duplicate"),
        "{p:?}"
    );
    let reqs = records(&record);
    assert_eq!(reqs.len(), 3);
    assert!(reqs[1]["request"]["messages"][0]["content"]
        .as_str()
        .unwrap()
        .contains("do not repeat them: [\"Does the object have sleeves?\",\"Is the object made of leather?\"]"));
}

#[test]
fn generate_against_a_random_model_fails_clearly_after_bounded_rounds() {
    if !have_python("xllamacpp, gguf", "generate_against_a_random_model") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = llama_server(dir.path());
    let (proxy, _) = fault_proxy(dir.path(), &server.url, r#"{"rules":[]}"#);
    let out = dir.path().join("aspects.json");
    let st = makd()
        .args([
            "aspects",
            "generate",
            "--classes",
            "Shirt,Bag",
            "--n",
            "20",
            "--q",
            "5",
        ])
        .args([
            "--rounds",
            "2",
            "--max-tokens",
            "64",
            "--endpoint",
            &proxy.url,
        ])
        .args(["-o", out.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&st.stderr);
    assert_eq!(st.status.code(), Some(2), "{err}");
    assert!(
        err.contains("valid distinct yes/no questions in 2 rounds, 5 are needed"),
        "{err}"
    );
    assert!(
        err.contains("hint: use a stronger instruction-tuned model"),
        "{err}"
    );
    assert!(!out.exists());
    let stats = get_json(&format!("{}/__stats", proxy.url.trim_end_matches("/v1")));
    assert_eq!(stats["requests"], 2, "exactly the bounded number of rounds");
}

#[test]
fn import_numbers_questions_and_rejects_bad_lines_by_line_number() {
    let dir = tempfile::tempdir().unwrap();
    let qs = dir.path().join("questions.txt");
    let classes = dir.path().join("classes.txt");
    std::fs::write(&classes, "cat\ndog\n# comment\n\nbird\n").unwrap();
    std::fs::write(
        &qs,
        "# my questions\n1. Does the animal have feathers?\n- [shape] Is the animal long and thin?\n\nCan the animal swim well?\n",
    )
    .unwrap();
    let out = dir.path().join("aspects.json");
    let st = makd()
        .args(["aspects", "import", qs.to_str().unwrap(), "--classes"])
        .args([classes.to_str().unwrap(), "-o", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let set = AspectSet::load(&out).unwrap();
    assert_eq!(set.classes, ["cat", "dog", "bird"]);
    let got: Vec<(&str, &str, &str)> = set
        .questions
        .iter()
        .map(|q| (q.id.as_str(), q.text.as_str(), q.kind.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("q01", "Does the animal have feathers?", "visual"),
            ("q02", "Is the animal long and thin?", "shape"),
            ("q03", "Can the animal swim well?", "visual")
        ]
    );
    assert_eq!(set.provenance.method, "import");

    std::fs::write(&qs, "Does the animal have feathers?\nIs it a dog\n").unwrap();
    let st = makd()
        .args([
            "aspects",
            "import",
            qs.to_str().unwrap(),
            "--classes",
            "cat,dog",
        ])
        .args(["-o", out.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&st.stderr);
    assert_eq!(st.status.code(), Some(2), "{err}");
    assert!(
        err.contains("questions.txt:2: a yes/no question must end with '?'"),
        "{err}"
    );
}
