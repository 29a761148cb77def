//! Training end to end through the binary: a baseline learns, a crash mid-run resumes to the same
//! result as an uninterrupted run, and MaKD training with a table-teacher store reports aspect metrics.

mod common;
use common::*;
use std::path::Path;
use std::time::{Duration, Instant};

/// A small, fast slice of Fashion-MNIST with the CNN.
fn small(run_dir: &Path, epochs: usize) -> std::process::Command {
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
        "data.train_limit=1000",
        "--set",
        "data.test_limit=500",
    ])
    .args([
        "--set",
        &format!("train.epochs={epochs}"),
        "--set",
        "train.batch_size=50",
    ]);
    c
}

fn metrics_without_time(run_dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let o = v.as_object_mut().unwrap();
            o.remove("seconds");
            o.remove("images_per_s");
            v
        })
        .collect()
}

#[test]
fn baseline_learns_and_writes_the_run_dir() {
    require_fashion_mnist();
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    ok(small(&run, 2).arg("--json"));
    let s = read_json(&run.join("summary.json"));
    let top1 = s["test_top1"].as_f64().unwrap();
    // 10 classes: chance is 10%. 1000 images × 2 epochs of a small CNN gets well past 60%.
    assert!(top1 > 60.0, "test top-1 {top1}");
    assert!(s["test_top5"].as_f64().unwrap() >= top1);
    assert_eq!(s["epochs"], 2);
    assert_eq!(s["test_images"], 500);
    assert_eq!(s["num_aspects"], 0);
    assert_eq!(metrics_without_time(&run).len(), 2);
    for f in [
        "config.toml",
        "model.json",
        "checkpoints/last/model.safetensors",
        "checkpoints/last/optimizer.safetensors",
        "checkpoints/last/state.json",
        "checkpoints/best/model.safetensors",
    ] {
        assert!(run.join(f).exists(), "{f} missing");
    }
    // eval on the run dir reproduces the summary exactly.
    let out = ok(makd().args(["eval", "--json", "--run-dir"]).arg(&run));
    let e: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(e["test_top1"], s["test_top1"]);
    assert_eq!(e["images"], 500);
}

#[test]
fn killed_run_resumes_to_the_uninterrupted_result() {
    require_fashion_mnist();
    let tmp = tempfile::tempdir().unwrap();
    let straight = tmp.path().join("straight");
    ok(&mut small(&straight, 3));

    // Same run, killed (SIGKILL) once the first epoch's checkpoint exists, then resumed.
    let resumed = tmp.path().join("resumed");
    let mut child = small(&resumed, 3)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let state = resumed.join("checkpoints/last/state.json");
    let t0 = Instant::now();
    while !state.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "no checkpoint after 300 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let done = read_json(&state)["epoch"].as_u64().unwrap();
    assert!(done < 3, "the run finished before it could be killed");
    let out = ok(&mut small(&resumed, 3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("resuming"));

    assert_eq!(
        metrics_without_time(&straight),
        metrics_without_time(&resumed)
    );
    let (a, b) = (
        read_json(&straight.join("summary.json")),
        read_json(&resumed.join("summary.json")),
    );
    assert_eq!(a["test_top1"], b["test_top1"]);
    assert_eq!(a["test_top5"], b["test_top5"]);
    let wa = std::fs::read(straight.join("checkpoints/last/model.safetensors")).unwrap();
    let wb = std::fs::read(resumed.join("checkpoints/last/model.safetensors")).unwrap();
    assert!(wa == wb, "final weights differ after resume");
}

/// MobileNetV2's head has dropout: its masks come from (seed, step), so two runs with one seed
/// end with the same weights, bit for bit (and a resumed run draws the masks the uninterrupted
/// one drew, as the optimizer step is restored), while another seed gives other weights.
#[test]
fn dropout_masks_are_seeded() {
    require_fashion_mnist();
    let tmp = tempfile::tempdir().unwrap();
    let run = |name: &str, seed: u64| {
        let dir = tmp.path().join(name);
        ok(small(&dir, 2).args([
            "--set",
            "model.arch=\"mobilenet-v2\"",
            "--set",
            "data.train_limit=200",
            "--set",
            "data.test_limit=100",
            "--set",
            &format!("train.seed={seed}"),
        ]));
        std::fs::read(dir.join("checkpoints/last/model.safetensors")).unwrap()
    };
    let (a, b, c) = (run("a", 3), run("b", 3), run("c", 4));
    assert!(a == b, "same seed, different weights");
    assert!(a != c, "different seeds, same weights");
}

#[test]
fn a_different_config_in_the_same_run_dir_is_refused() {
    require_fashion_mnist();
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    ok(&mut small(&run, 1));
    let err = user_error(small(&run, 1).args(["--set", "optim.lr=0.5"]));
    assert!(
        err.contains("different config") && err.contains("--fresh"),
        "{err}"
    );
}

#[test]
fn makd_with_a_table_teacher_store_reports_aspect_metrics() {
    require_fashion_mnist();
    let tmp = tempfile::tempdir().unwrap();
    let (train_store, test_store) = (tmp.path().join("train"), tmp.path().join("test"));
    label_fashion_mnist_table("train", &train_store, &[]);
    label_fashion_mnist_table("test", &test_store, &[]);
    let store = read_json(&train_store.join("manifest.json"));
    assert_eq!(store["image_ids"].as_array().unwrap().len(), 60000);
    assert_eq!(store["question_ids"].as_array().unwrap().len(), 50);

    let run = tmp.path().join("run");
    ok(makd()
        .args([
            "train",
            "--config",
            "examples/fashion-mnist/makd.toml",
            "--run-dir",
        ])
        .arg(&run)
        .args([
            "--set",
            "data.train_limit=1000",
            "--set",
            "data.test_limit=500",
            "--set",
            "train.epochs=2",
            "--set",
            "train.batch_size=50",
        ])
        .arg("--set")
        .arg(format!("aspects.scores={}", train_store.display()))
        .arg("--set")
        .arg(format!("aspects.test_scores={}", test_store.display())));
    let s = read_json(&run.join("summary.json"));
    assert_eq!(s["num_aspects"], 50);
    let a = &s["test_aspects"];
    // Per-class teacher answers are learnable from the image: the aspect head must beat chance.
    let auc = a["auc"].as_f64().unwrap();
    let agreement = a["agreement"].as_f64().unwrap();
    assert!(auc > 0.7, "aspect AUC {auc}");
    assert!(agreement > 0.75, "agreement {agreement}");
    assert_eq!(a["pairs"], 500 * 50);
    let info = read_json(&run.join("model.json"));
    assert_eq!(info["questions"][0]["id"], "q01");

    // predict answers the questions for an image file.
    let img = tmp.path().join("x.png");
    image::GrayImage::from_fn(28, 28, |x, y| image::Luma([((x * 9 + y * 3) % 256) as u8]))
        .save(&img)
        .unwrap();
    let out = ok(makd()
        .args(["predict", "--json", "--run-dir"])
        .arg(&run)
        .arg(&img));
    let p: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(p["aspects"].as_array().unwrap().len(), 50);
    let total: f64 = p["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["p"].as_f64().unwrap())
        .sum();
    assert!(total > 0.0 && total <= 1.0 + 1e-6);
}

#[test]
fn a_store_for_another_dataset_or_aspect_set_is_refused() {
    require_fashion_mnist();
    let tmp = tempfile::tempdir().unwrap();
    let test_store = tmp.path().join("test");
    label_fashion_mnist_table("test", &test_store, &[]);
    // The test split's store used as training targets: another dataset fingerprint.
    let err = user_error(
        small(&tmp.path().join("run"), 1)
            .arg("--set")
            .arg(format!("aspects.scores={}", test_store.display())),
    );
    assert!(
        err.contains("fingerprint") || err.contains("another dataset"),
        "{err}"
    );
}
