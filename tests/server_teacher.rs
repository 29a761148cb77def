//! The server teacher against a real llama.cpp server (tiny random GGUF), through a
//! fault-injecting proxy, and against a recording fake server for image-mode requests (the real
//! multimodal server is tests/server_image.rs).
//! All traffic stays on 127.0.0.1. See tests/server/harness.rs for what these need.

#[path = "server/harness.rs"]
mod harness;

use harness::*;
use makd::aspects::Question;
use makd::data::{RawImage, Sample};
use makd::llm::client::{Client, ClientOptions};
use makd::teacher::openai::{Api, OpenAiOptions, OpenAiTeacher};
use makd::teacher::{Mode, Score, Status, Subject, Teacher, ANSWER_CUE};
use serde_json::Value;
use std::collections::HashMap;
use std::time::{Duration, Instant};

const WORDS: [&str; 10] = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
];

fn questions(words: &[&str]) -> Vec<Question> {
    words
        .iter()
        .enumerate()
        .map(|(i, w)| Question {
            id: format!("q{i:02}"),
            text: format!("Does the object have the {w} feature?"),
            kind: String::new(),
        })
        .collect()
}

fn teacher(url: &str, mode: Mode, api: Api, attempts: u32, timeout_s: f64) -> OpenAiTeacher {
    let opts = OpenAiOptions {
        endpoints: vec![url.parse().unwrap()],
        model: "tiny".into(),
        concurrency: 2,
        mode,
        api,
        max_attempts: attempts,
        timeout: Duration::from_secs_f64(timeout_s),
        backoff_base: Duration::from_millis(50),
        ..Default::default()
    };
    teacher_with(&opts, None)
}

fn teacher_with(opts: &OpenAiOptions, key: Option<&str>) -> OpenAiTeacher {
    let client = Client::with_api_key(
        &opts.endpoints,
        ClientOptions {
            timeout: opts.timeout,
            max_attempts: opts.max_attempts,
            backoff_base: opts.backoff_base,
            ..Default::default()
        },
        key.map(str::to_string),
    )
    .unwrap();
    OpenAiTeacher::with_client(client, opts).unwrap()
}

/// Score every class the way the label driver does: `parallelism()` groups at once.
fn score_classes(
    t: &OpenAiTeacher,
    classes: &[&str],
    qs: &[Question],
) -> makd::Result<Vec<Vec<Score>>> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let out = std::sync::Mutex::new(vec![Vec::new(); classes.len()]);
    let err = std::sync::Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..t.parallelism() {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= classes.len() {
                    break;
                }
                match t.score(Subject::Class(classes[i]), qs) {
                    Ok(v) => out.lock().unwrap()[i] = v,
                    Err(e) => {
                        *err.lock().unwrap() = Some(e);
                        break;
                    }
                }
            });
        }
    });
    match err.into_inner().unwrap() {
        Some(e) => Err(e),
        None => Ok(out.into_inner().unwrap()),
    }
}

/// Recorded responses keyed by the prompt text the request carried.
fn responses_by_prompt(path: &std::path::Path) -> HashMap<String, Value> {
    records(path)
        .into_iter()
        .map(|r| {
            let req = &r["request"];
            let key = req["messages"][0]["content"]
                .as_str()
                .or_else(|| req["prompt"].as_str())
                .unwrap_or_default()
                .to_string();
            (key, r["response"].clone())
        })
        .collect()
}

#[test]
fn class_mode_through_real_llama_server_matches_an_independent_reference() {
    if !have_python("xllamacpp, gguf", "class_mode_through_real_llama_server") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = llama_server(dir.path());
    let (proxy, record) = fault_proxy(dir.path(), &server.url, r#"{"rules":[]}"#);
    let classes = ["shirt", "sneaker", "bag"];
    let qs = questions(&WORDS[..4]);
    for api in [Api::Chat, Api::Completions] {
        let _ = std::fs::remove_file(&record);
        let t = teacher(&proxy.url, Mode::Class, api, 3, 30.0);
        let got = score_classes(&t, &classes, &qs).unwrap();
        let recorded = responses_by_prompt(&record);
        assert_eq!(recorded.len(), classes.len() * qs.len(), "{api:?}");
        let mut ok = 0;
        for (c, class) in classes.iter().enumerate() {
            for (k, q) in qs.iter().enumerate() {
                let prompt = match api {
                    Api::Chat => format!(
                        "Consider a typical image of a {class}. {} {ANSWER_CUE}",
                        q.text
                    ),
                    Api::Completions => format!(
                        "Question: Consider a typical image of a {class}. {} {ANSWER_CUE}\nAnswer:",
                        q.text
                    ),
                };
                let resp = &recorded[&prompt];
                let s = got[c][k];
                match reference_p_yes(resp) {
                    Some((p, both)) => {
                        assert!(
                            (s.p_yes as f64 - p).abs() < 1e-5,
                            "{class}/{}: {s:?} vs {p}",
                            q.id
                        );
                        assert_eq!(s.status, if both { Status::Ok } else { Status::Floored });
                        ok += both as usize;
                    }
                    None => assert_eq!(s.status, Status::Missing),
                }
            }
        }
        // The tiny model is built so Yes and No are nearly always in its top 20.
        assert!(
            ok >= 10,
            "{api:?}: only {ok} of 12 pairs had both Yes and No"
        );
        assert_eq!(t.info().extra["api"], Value::from(api.name()));
    }
}

#[test]
fn faults_between_makd_and_real_server_heal_or_give_the_right_status() {
    if !have_python("xllamacpp, gguf", "faults_between_makd_and_real_server") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // One slot and no prompt cache make the server deterministic (continuous batching and
    // cache hits change float rounding by ~1e-3), so a healed pair must equal the clean run.
    let server = llama_server_slots(dir.path(), 1);
    let rules = r#"{"stall_s": 3, "rules": [
        {"match": "alpha", "faults": ["500", "503"]},
        {"match": "bravo", "faults": ["429"]},
        {"match": "charlie", "faults": ["stall"]},
        {"match": "delta", "faults": ["drop", "drop"]},
        {"match": "echo", "faults": ["truncate"]},
        {"match": "foxtrot", "faults": ["nonjson", "nologprobs"]},
        {"match": "golf", "always": "500"},
        {"match": "hotel", "always": "no_no"},
        {"match": "india", "always": "neither"}]}"#;
    let (proxy, _) = fault_proxy(dir.path(), &server.url, rules);
    let classes = ["shirt", "bag"];
    let qs = questions(&WORDS);

    let no_cache = |url: &str| {
        let mut t = OpenAiOptions {
            endpoints: vec![url.parse().unwrap()],
            model: "tiny".into(),
            concurrency: 2,
            mode: Mode::Class,
            max_attempts: 4,
            timeout: Duration::from_secs(1),
            backoff_base: Duration::from_millis(50),
            ..Default::default()
        };
        t.extra_body
            .insert("cache_prompt".into(), Value::Bool(false));
        teacher_with(&t, None)
    };
    let clean = no_cache(&server.url);
    let want = score_classes(&clean, &classes, &qs).unwrap();
    let faulty = no_cache(&proxy.url);
    let t0 = Instant::now();
    let got = score_classes(&faulty, &classes, &qs).unwrap();
    let took = t0.elapsed();

    for c in 0..classes.len() {
        for (k, w) in WORDS.iter().enumerate() {
            let (g, e) = (got[c][k], want[c][k]);
            match *w {
                "golf" | "india" => {
                    assert_eq!(g.status, Status::Missing, "{w}");
                    assert!(g.p_yes.is_nan());
                }
                "hotel" => {
                    assert_eq!(g.status, Status::Floored, "{w}");
                    assert!(
                        (g.logit_yes - e.logit_yes).abs() < 1e-4,
                        "{w}: {g:?} vs {e:?}"
                    );
                    assert!(
                        g.logit_no <= e.logit_no + 1e-4,
                        "the bound is below the true No mass"
                    );
                }
                _ => {
                    assert_eq!(g.status, e.status, "{w}");
                    assert!((g.p_yes - e.p_yes).abs() < 1e-6, "{w}: {g:?} vs {e:?}");
                }
            }
        }
    }
    let stats = get_json(&format!("{}/__stats", proxy.url.trim_end_matches("/v1")));
    let inj = &stats["injected"];
    let n = |k: &str| inj[k].as_u64().unwrap_or(0);
    // Per class: alpha 2, bravo 1, charlie 1, delta 2, echo 1, foxtrot 2, golf 4 (every attempt),
    // hotel 1, india 1 — times 2 classes.
    assert_eq!(n("500"), 2 + 8, "{stats}");
    for (k, v) in [
        ("503", 2),
        ("429", 2),
        ("stall", 2),
        ("drop", 4),
        ("truncate", 2),
        ("nonjson", 2),
        ("nologprobs", 2),
        ("no_no", 2),
        ("neither", 2),
    ] {
        assert_eq!(n(k), v, "{k}: {stats}");
    }
    // 20 pairs + one retry per healed fault (9 per class) + 3 extra tries for each golf pair.
    assert_eq!(stats["requests"].as_u64().unwrap(), 20 + 18 + 6, "{stats}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
    eprintln!(
        "fault run: {} faults injected, {took:?}",
        inj.as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum::<u64>()
    );
}

#[test]
fn a_4xx_that_cannot_heal_stops_with_the_servers_message_and_never_the_key() {
    if !have_python("json", "a_4xx_that_cannot_heal") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (upstream, _) = fake_server(dir.path(), "{}", "fake");
    let (proxy, _) = fault_proxy(
        dir.path(),
        &upstream.url,
        r#"{"rules":[{"match":"kilo","always":"401"}]}"#,
    );
    let secret = "sk-makd-test-S3CRET-value";
    let opts = OpenAiOptions {
        endpoints: vec![proxy.url.parse().unwrap()],
        mode: Mode::Class,
        max_attempts: 4,
        backoff_base: Duration::from_millis(10),
        ..Default::default()
    };
    let t = teacher_with(&opts, Some(secret));
    let ok = t
        .score(Subject::Class("shirt"), &questions(&["lima"]))
        .unwrap();
    assert_eq!(ok[0].status, Status::Ok);
    let err = t
        .score(Subject::Class("shirt"), &questions(&["kilo"]))
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, makd::Error::Remote { .. }), "{text}");
    assert!(
        text.contains("HTTP 401") && text.contains("invalid credentials: Bearer ***"),
        "{text}"
    );
    assert!(
        err.hint().is_some_and(|h| h.contains("set the API key")),
        "{text}"
    );
    assert!(!text.contains(secret) && !format!("{err:?}").contains(secret));
    let info = serde_json::to_string(&t.info()).unwrap();
    assert!(!info.contains(secret), "{info}");
    let stats = get_json(&format!("{}/__stats", proxy.url.trim_end_matches("/v1")));
    // One request for lima, exactly one for kilo: a 401 is not retried. Both carried the key.
    assert_eq!(stats["requests"], 2);
    assert_eq!(stats["auth_seen"], 2);
}

#[test]
fn a_dead_endpoint_stops_the_run_instead_of_marking_everything_missing() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let opts = OpenAiOptions {
        endpoints: vec![format!("http://127.0.0.1:{port}/v1").parse().unwrap()],
        mode: Mode::Class,
        max_attempts: 2,
        backoff_base: Duration::from_millis(5),
        timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let t = teacher_with(&opts, None);
    let err = t
        .score(Subject::Class("shirt"), &questions(&WORDS[..5]))
        .unwrap_err();
    let text = err.report();
    assert!(
        text.contains("no request has succeeded; 3 gave up"),
        "{text}"
    );
    assert!(
        text.contains("hint: check that the server is running"),
        "{text}"
    );
}

fn sample(id: &str, w: u32, h: u32, ch: u8) -> Sample {
    let pixels = (0..w * h * ch as u32)
        .map(|i| (i * 37 % 256) as u8)
        .collect();
    Sample {
        id: id.into(),
        image: RawImage {
            width: w,
            height: h,
            channels: ch,
            pixels,
        },
        label: 0,
    }
}

#[test]
fn image_mode_requests_carry_the_png_first_and_questions_consecutively() {
    // The request format, the order, and P(yes) from the answers, byte for byte against a
    // recording fake server (tests/server_image.rs runs image mode against a real one).
    if !have_python("json", "image_mode_requests") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (fake, record) = fake_server(dir.path(), "{}", "fake");
    let t = teacher(&fake.url, Mode::Image, Api::Chat, 2, 10.0);
    let images = [sample("rgb", 3, 2, 3), sample("gray", 4, 4, 1)];
    let qs = questions(&WORDS[..3]);
    let got: Vec<Vec<Score>> = std::thread::scope(|s| {
        let hs: Vec<_> = images
            .iter()
            .map(|im| s.spawn(|| t.score(Subject::Image(im), &qs).unwrap()))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let recs = records(&record);
    assert_eq!(recs.len(), 6);
    for (im, scores) in images.iter().zip(&got) {
        let mine: Vec<&Value> = recs
            .iter()
            .filter(|r| {
                let url = r["request"]["messages"][0]["content"][0]["image_url"]["url"]
                    .as_str()
                    .unwrap();
                let b64 = url.strip_prefix("data:image/png;base64,").unwrap();
                use base64::Engine;
                let png = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .unwrap();
                let back = image::load_from_memory(&png).unwrap();
                let px = if im.image.channels == 1 {
                    back.to_luma8().into_raw()
                } else {
                    back.to_rgb8().into_raw()
                };
                px == im.image.pixels
            })
            .collect();
        assert_eq!(mine.len(), 3, "{}", im.id);
        for (k, r) in mine.iter().enumerate() {
            let req = &r["request"];
            assert_eq!(r["path"], "/v1/chat/completions");
            assert_eq!(req["model"], "tiny");
            assert_eq!(req["max_tokens"], 1);
            assert_eq!(req["temperature"], 0);
            assert_eq!(req["logprobs"], true);
            assert_eq!(req["top_logprobs"], 20);
            let content = &req["messages"][0]["content"];
            assert_eq!(content[0]["type"], "image_url");
            assert_eq!(content[1]["type"], "text");
            // Consecutive and in question order.
            assert_eq!(
                content[1]["text"],
                Value::from(format!("{} {ANSWER_CUE}", qs[k].text))
            );
            let (p, both) = reference_p_yes(&r["response"]).unwrap();
            assert!(both);
            assert!((scores[k].p_yes as f64 - p).abs() < 1e-6);
            assert_eq!(scores[k].status, Status::Ok);
        }
    }
}

#[test]
fn several_endpoints_share_groups_and_keep_each_group_on_one_server() {
    if !have_python("json", "several_endpoints_share_groups") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (a, rec_a) = fake_server(dir.path(), "{}", "a");
    let (b, rec_b) = fake_server(dir.path(), "{}", "b");
    let opts = OpenAiOptions {
        endpoints: vec![a.url.parse().unwrap(), b.url.parse().unwrap()],
        mode: Mode::Class,
        concurrency: 2,
        ..Default::default()
    };
    let t = teacher_with(&opts, None);
    assert_eq!(t.parallelism(), 4);
    let classes: Vec<String> = (0..8).map(|i| format!("class{i}")).collect();
    let refs: Vec<&str> = classes.iter().map(String::as_str).collect();
    let got = score_classes(&t, &refs, &questions(&WORDS[..3])).unwrap();
    assert!(got.iter().flatten().all(|s| s.status == Status::Ok));
    let class_of = |r: &Value| {
        let text = r["request"]["messages"][0]["content"].as_str().unwrap();
        text.split_whitespace()
            .nth(6)
            .unwrap()
            .trim_end_matches('.')
            .to_string()
    };
    let (ra, rb) = (records(&rec_a), records(&rec_b));
    assert!(
        !ra.is_empty() && !rb.is_empty(),
        "a: {}, b: {}",
        ra.len(),
        rb.len()
    );
    assert_eq!(ra.len() + rb.len(), 24);
    for c in &classes {
        let on_a = ra.iter().filter(|r| &class_of(r) == c).count();
        let on_b = rb.iter().filter(|r| &class_of(r) == c).count();
        assert!(
            on_a == 3 && on_b == 0 || on_a == 0 && on_b == 3,
            "{c}: {on_a} + {on_b}"
        );
    }
}
