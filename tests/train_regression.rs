//! Classification training is bit-identical to a run recorded before the training loop was
//! shared with detection: the same losses, accuracies and checkpoint bytes, for the baseline and
//! for MaKD with a table-teacher store.
//!
//! The recording (`tests/fixtures/train_regression.json`) was made by the loop as it was before
//! the split, with `MAKD_RECORD_REGRESSION=1 cargo test --release --test train_regression`.
//! Floating-point results depend on the CPU's vector width (the GEMM picks its kernel at run
//! time), so the recording names the features it was made with and a machine without them is
//! told so instead of compared.

mod common;
use common::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::Path;

fn fixture() -> std::path::PathBuf {
    repo().join("tests/fixtures/train_regression.json")
}

fn cpu_features() -> Value {
    json!({
        "avx512f": std::arch::is_x86_feature_detected!("avx512f"),
        "avx2": std::arch::is_x86_feature_detected!("avx2"),
        "fma": std::arch::is_x86_feature_detected!("fma"),
    })
}

/// Everything a run dir says about the numbers, without wall-clock fields.
fn record(run_dir: &Path) -> Value {
    let metrics: Vec<Value> = std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(without_wall_clock)
        .collect();
    let mut summary = read_json(&run_dir.join("summary.json"));
    summary.as_object_mut().unwrap().remove("seconds");
    let mut checkpoint = serde_json::Map::new();
    let last = run_dir.join("checkpoints/last");
    let mut names: Vec<_> = std::fs::read_dir(&last)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".safetensors"))
        .collect();
    names.sort();
    for n in names {
        let bytes = std::fs::read(last.join(&n)).unwrap();
        checkpoint.insert(n, json!(hex::encode(Sha256::digest(&bytes))));
    }
    json!({ "metrics": metrics, "summary": summary, "checkpoint": checkpoint })
}

fn train(run_dir: &Path, extra: &[String]) {
    let mut c = makd();
    c.args([
        "train",
        "--config",
        "examples/fashion-mnist/baseline.toml",
        "--run-dir",
    ])
    .arg(run_dir)
    .args([
        "--set",
        "data.train_limit=300",
        "--set",
        "data.test_limit=200",
        "--set",
        "train.epochs=2",
        "--set",
        "train.batch_size=50",
    ]);
    for e in extra {
        c.args(["--set", e]);
    }
    ok(&mut c);
}

#[test]
fn classification_training_is_bit_identical_to_the_recorded_run() {
    require_fashion_mnist();
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("train.scores");
    label_fashion_mnist_table("train", &store, &["--mode", "class"]);
    train(&tmp.path().join("baseline"), &[]);
    train(
        &tmp.path().join("makd"),
        &[
            format!("aspects.scores={}", store.display()),
            format!(
                "aspects.aspects={}",
                repo().join("examples/fashion-mnist/aspects.json").display()
            ),
        ],
    );
    let now = json!({
        "cpu": cpu_features(),
        "baseline": record(&tmp.path().join("baseline")),
        "makd": record(&tmp.path().join("makd")),
    });
    if std::env::var_os("MAKD_RECORD_REGRESSION").is_some() {
        std::fs::write(
            fixture(),
            serde_json::to_string_pretty(&now).unwrap() + "\n",
        )
        .unwrap();
        return;
    }
    let recorded: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture()).unwrap()).unwrap();
    if recorded["cpu"] != now["cpu"] {
        eprintln!(
            "SKIPPED: recorded on a CPU with {}, this one has {}: the GEMM kernels differ, so the bits do",
            recorded["cpu"], now["cpu"]
        );
        return;
    }
    for run in ["baseline", "makd"] {
        assert_eq!(
            recorded[run]["metrics"], now[run]["metrics"],
            "{run}: metrics.jsonl differs from the recorded run"
        );
        assert_eq!(
            recorded[run]["summary"], now[run]["summary"],
            "{run}: summary.json"
        );
        assert_eq!(
            recorded[run]["checkpoint"], now[run]["checkpoint"],
            "{run}: checkpoint bytes"
        );
    }
}
