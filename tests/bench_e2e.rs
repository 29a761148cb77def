//! `makd bench train` and `makd bench loader` as `bench/train_ratio.sh` and a user run them: every
//! flag shows up in what they measure.

mod common;

use common::{makd, ok, user_error};
use serde_json::Value;
use std::path::Path;

fn json_line(out: &std::process::Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().expect("a JSON line");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

fn bench_train(extra: &[&str]) -> Value {
    let mut args = vec![
        "bench",
        "train",
        "--model",
        "cnn",
        "--size",
        "16",
        "--channels",
        "1",
        "--batch",
        "8",
        "--steps",
        "3",
        "--warmup",
        "1",
        "--json",
    ];
    args.extend_from_slice(extra);
    json_line(&ok(makd().args(&args)))
}

#[test]
fn bench_train_flags_act() {
    let train = bench_train(&[]);
    assert_eq!(train["mode"], "train");
    assert_eq!(
        (
            &train["model"],
            &train["size"],
            &train["batch"],
            &train["channels"]
        ),
        (
            &Value::from("cnn"),
            &Value::from(16),
            &Value::from(8),
            &Value::from(1)
        )
    );
    // The head has classes + aspects outputs over a 128-wide pool: 129 parameters per output.
    let more = bench_train(&["--classes", "3", "--aspects", "7"]);
    let params = |v: &Value| v["params"].as_i64().unwrap();
    assert_eq!(params(&train) - params(&more), 129 * (10 + 50 - 3 - 7));
    assert_eq!(bench_train(&["--threads", "1"])["threads"], 1);
    // --eval runs only the forward: a fraction of a training step (forward + backward + update).
    let eval = bench_train(&["--eval"]);
    assert_eq!(eval["mode"], "eval");
    let ms = |v: &Value| v["ms_per_step"].as_f64().unwrap();
    assert!(
        ms(&eval) < ms(&train),
        "eval {} ms vs train {} ms",
        ms(&eval),
        ms(&train)
    );
    let err = user_error(makd().args(["bench", "train", "--threads", "0"]));
    assert!(err.contains("--threads 0"), "{err}");
}

/// The binary keeps freed buffers for reuse (`keep_freed_memory` in main.rs): after the
/// warm-up a step maps little new memory (about 1 000 page faults, 4 MB), although its largest
/// activations (batch 512 × 32 × 28² floats, 51 MB) are above the size glibc would otherwise
/// unmap on every free: about 100 000 page faults a step then.
#[test]
fn training_steps_reuse_freed_memory() {
    let args = [
        "bench",
        "train",
        "--model",
        "cnn",
        "--size",
        "28",
        "--channels",
        "1",
        "--batch",
        "512",
        "--steps",
        "2",
        "--warmup",
        "2",
        "--json",
    ];
    let v = json_line(&ok(makd().args(args)));
    let faults = v["page_faults_per_step"]
        .as_f64()
        .expect("page_faults_per_step");
    assert!(faults < 10_000.0, "{faults} page faults a step: {v}");
}

fn jpegs(dir: &Path) -> usize {
    walk(dir)
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .count()
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn bench_loader_trains_on_the_jpegs_it_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("scratch");
    let run = |images: &str, extra: &[&str]| {
        let mut args = vec![
            "bench",
            "loader",
            "--dir",
            dir.to_str().unwrap(),
            "--images",
            images,
            "--size",
            "32",
            "--model",
            "cnn",
            "--batch",
            "4",
            "--json",
        ];
        args.extend_from_slice(extra);
        json_line(&ok(makd().args(&args)))
    };
    let out = run(
        "12",
        &["--workers", "1", "--epochs", "2", "--augment", "flip"],
    );
    assert_eq!(out["workers"], 1);
    assert_eq!(out["augment"], "flip");
    let epochs = out["epochs"].as_array().unwrap();
    assert_eq!(epochs.len(), 2);
    for e in epochs {
        let (s, w) = (
            e["seconds"].as_f64().unwrap(),
            e["loader_wait_s"].as_f64().unwrap(),
        );
        assert!(s > 0.0 && (0.0..=s).contains(&w), "{e}");
    }
    // 12 training images and 2 per class for the test split; the run trained on them.
    assert_eq!(jpegs(&dir.join("data/train")), 12);
    assert_eq!(jpegs(&dir.join("data/test")), 8);
    let config = std::fs::read_to_string(dir.join("run/config.toml")).unwrap();
    assert!(config.contains("augment = \"flip\""), "{config}");
    assert!(config.contains("workers = 1"), "{config}");
    // The default workers are makd train's; the folder is reused, and remade for another --images.
    assert_eq!(run("12", &[])["workers"], 2);
    assert_eq!(jpegs(&dir.join("data/train")), 12);
    run("8", &[]);
    assert_eq!(jpegs(&dir.join("data/train")), 8);
    // A folder the bench did not make is never written into.
    let theirs = tmp.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::fs::write(theirs.join("notes.txt"), "mine").unwrap();
    let err = user_error(makd().args(["bench", "loader", "--dir", theirs.to_str().unwrap()]));
    assert!(err.contains("not made by makd bench loader"), "{err}");
    assert_eq!(std::fs::read_dir(&theirs).unwrap().count(), 1);
}
