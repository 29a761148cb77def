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
        .map(without_wall_clock)
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

fn metrics_lines(run_dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The README's KD journey: a teacher network → `makd eval --split train --logits-out` → a
/// student with `kd.logits` (examples/fashion-mnist/kd.toml) whose loss carries a KD term.
#[test]
fn eval_logits_out_feeds_a_kd_student() {
    require_fashion_mnist();
    let tmp = tempfile::tempdir().unwrap();
    let teacher = tmp.path().join("teacher");
    ok(&mut small(&teacher, 1));

    // Without --logits-out, --split train scores the run's own training images.
    let out = ok(makd()
        .args(["eval", "--json", "--split", "train", "--run-dir"])
        .arg(&teacher));
    let e: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (e["split"].as_str(), e["images"].as_u64()),
        (Some("train"), Some(1000))
    );
    // Chance is 10 %.
    assert!(e["train_top1"].as_f64().unwrap() > 30.0, "{e}");

    // With it, every image of the full split, written in the documented format.
    let logits = tmp.path().join("work/teacher.logits");
    let out = ok(makd()
        .args(["eval", "--json", "--split", "train", "--run-dir"])
        .arg(&teacher)
        .arg("--logits-out")
        .arg(&logits));
    let e: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(e["images"], 60000);
    let bytes = std::fs::read(&logits).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    let full =
        makd::data::open(&"fashion-mnist".parse().unwrap(), makd::data::Split::Train).unwrap();
    assert_eq!(meta["dataset_fingerprint"], full.fingerprint());
    let ids: Vec<String> = serde_json::from_str(&meta["image_ids"]).unwrap();
    assert_eq!(ids.len(), 60000);
    assert_eq!(
        (ids[0].as_str(), ids[59999].as_str()),
        (full.id(0), full.id(59999))
    );
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor("logits").unwrap();
    assert_eq!(
        (t.dtype(), t.shape()),
        (safetensors::Dtype::F32, &[60000, 10][..])
    );
    let rows: Vec<f32> = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    // The rows are the class logits in dataset order: their argmax against the labels gives the
    // top-1 eval printed.
    let labels: Vec<u32> = (0..full.len()).map(|i| full.label(i) as u32).collect();
    let correct = makd::train::metrics::topk_correct(&rows, 10, &labels, 1);
    let top1 = 100.0 * correct as f64 / 60000.0;
    assert!(
        (top1 - e["train_top1"].as_f64().unwrap()).abs() < 1e-9,
        "{top1} vs {e}"
    );

    let student = tmp.path().join("student");
    let student_cmd = |run: &Path| {
        let mut c = makd();
        c.args([
            "train",
            "--config",
            "examples/fashion-mnist/kd.toml",
            "--run-dir",
        ])
        .arg(run)
        .args([
            "--set",
            "data.train_limit=1000",
            "--set",
            "data.test_limit=500",
        ])
        .args(["--set", "train.epochs=1", "--set", "train.batch_size=50"]);
        c
    };
    ok(student_cmd(&student)
        .arg("--set")
        .arg(format!("kd.logits={}", logits.display())));
    let m = metrics_lines(&student);
    let kd = m[0]["train_kd"].as_f64().expect("a train_kd column");
    assert!(kd.is_finite() && kd > 0.0, "KD term {kd}");
    // kd.weight = 1: the loss is CE + KD.
    let (loss, ce) = (
        m[0]["train_loss"].as_f64().unwrap(),
        m[0]["train_ce"].as_f64().unwrap(),
    );
    assert!(
        (loss - (ce + kd)).abs() < 1e-3 * loss,
        "loss {loss} vs CE {ce} + KD {kd}"
    );
    // A student without KD has no such column.
    assert!(metrics_lines(&teacher)[0].get("train_kd").is_none());

    // kd.toml's own path (relative to the config) is the README's work/fmnist-teacher.logits.
    let cfg = std::fs::read_to_string(repo().join("examples/fashion-mnist/kd.toml")).unwrap();
    assert!(cfg.contains("logits = \"../../work/fmnist-teacher.logits\""));
}

/// A score store with pairs no labeling run reached (`--limit`, one shard) is refused for
/// training unless `aspects.allow_partial = true`; then those pairs are masked and counted in
/// summary.json. A model trained without the aspect set, evaluated against a test store of
/// other questions, is refused too (it used to index past the store's mask).
#[test]
fn partial_stores_need_allow_partial_and_are_counted() {
    require_fashion_mnist();
    let tmp = tempfile::tempdir().unwrap();
    let limited = tmp.path().join("limited");
    label_fashion_mnist_table("train", &limited, &["--limit", "20000"]);
    let shard = tmp.path().join("shard");
    label_fashion_mnist_table("train", &shard, &["--shard", "0/2"]);

    let train = |run: &Path, store: &Path| {
        let mut c = small(run, 1);
        c.arg("--set")
            .arg(format!("aspects.scores={}", store.display()))
            .args([
                "--set",
                "data.train_limit=300",
                "--set",
                "data.test_limit=100",
            ]);
        c
    };
    let err = user_error(&mut train(&tmp.path().join("a"), &limited));
    assert!(
        err.contains("never scored") && err.contains("--limit") && err.contains("allow_partial"),
        "{err}"
    );
    assert!(!tmp.path().join("a/checkpoints").exists());
    let err = user_error(&mut train(&tmp.path().join("b"), &shard));
    assert!(
        err.contains("shard 0/2") && err.contains("makd label merge"),
        "{err}"
    );

    let run = tmp.path().join("partial");
    ok(train(&run, &limited).args(["--set", "aspects.allow_partial=true"]));
    let s = read_json(&run.join("summary.json"));
    let t = &s["aspect_targets"];
    assert_eq!(t["never_scored"], 40000 * 50);
    assert_eq!(
        t["ok"].as_u64().unwrap() + t["floored"].as_u64().unwrap(),
        20000 * 50
    );
    assert_eq!(t["missing"], 0);
    assert_eq!(t["train_pairs"], 300 * 50);
    // The stratified 300 come from all 60000 images; those past the first 20000 have no targets.
    let masked = t["masked_train_pairs"].as_u64().unwrap();
    assert!(
        masked.is_multiple_of(50) && masked > 0 && masked < 300 * 50,
        "{masked}"
    );
    assert_eq!(s["num_aspects"], 50);

    // A test store of 2 other questions against this model's 50 aspect outputs.
    let questions = tmp.path().join("q.txt");
    std::fs::write(
        &questions,
        "Does the object have sleeves?\nIs the object worn on the feet?\n",
    )
    .unwrap();
    let two = tmp.path().join("two.json");
    ok(makd()
        .args(["aspects", "import"])
        .arg(&questions)
        .args(["--dataset", "fashion-mnist", "-o"])
        .arg(&two));
    let table: String =
        std::fs::read_to_string(repo().join("examples/fashion-mnist/aspect_table.csv"))
            .unwrap()
            .lines()
            .map(|l| l.splitn(4, ',').take(3).collect::<Vec<_>>().join(",") + "\n")
            .collect();
    let table_path = tmp.path().join("two.csv");
    std::fs::write(&table_path, table).unwrap();
    let two_test = tmp.path().join("two-test");
    label_fashion_mnist_with("test", &two, &table_path, &two_test, &[]);
    let err = user_error(
        makd()
            .args(["eval", "--run-dir"])
            .arg(&run)
            .arg("--scores")
            .arg(&two_test),
    );
    assert!(
        err.contains("2 questions") && err.contains("50 aspect outputs"),
        "{err}"
    );
}

/// An ImageFolder whose classes change under a run (a class renamed so it sorts first shifts
/// every label) is refused by eval, predict and a resume; a resume also refuses changed images.
#[test]
fn a_changed_imagefolder_is_refused_by_eval_predict_and_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("data");
    tiny_imagefolder(&root, &["b", "c"], 6);
    let run = tmp.path().join("run");
    let train = || {
        let mut c = makd();
        c.args(["train", "--run-dir"])
            .arg(&run)
            .arg("--set")
            .arg(format!("data.dataset=\"imagefolder:{}\"", root.display()))
            .args(["--set", "transform.size=8", "--set", "train.epochs=1"])
            .args(["--set", "train.batch_size=4", "--set", "data.workers=1"]);
        c
    };
    ok(&mut train());
    ok(makd().args(["eval", "--run-dir"]).arg(&run));
    let img = root.join("test/b/000.png");
    ok(makd().args(["predict", "--run-dir"]).arg(&run).arg(&img));
    // The same command again resumes the finished run: fine while the data is the same.
    ok(&mut train());

    for split in ["train", "test"] {
        std::fs::rename(root.join(split).join("c"), root.join(split).join("a")).unwrap();
    }
    let both_lists = |err: &str| err.contains("[b, c]") && err.contains("[a, b]");
    let err = user_error(makd().args(["eval", "--run-dir"]).arg(&run));
    assert!(both_lists(&err) && err.contains("model.json"), "{err}");
    let err = user_error(makd().args(["predict", "--run-dir"]).arg(&run).arg(&img));
    assert!(both_lists(&err), "{err}");
    let err = user_error(&mut train());
    assert!(both_lists(&err), "{err}");

    // Same classes, one image moved to another class: the labels changed under the run.
    for split in ["train", "test"] {
        std::fs::rename(root.join(split).join("a"), root.join(split).join("c")).unwrap();
    }
    std::fs::rename(root.join("train/b/000.png"), root.join("train/c/100.png")).unwrap();
    let err = user_error(&mut train());
    assert!(
        err.contains("train split changed") && err.contains("fingerprint"),
        "{err}"
    );

    // --fresh starts over in a run dir; a file the user put there stays.
    std::fs::write(run.join("notes.txt"), "mine").unwrap();
    ok(train().arg("--fresh"));
    assert_eq!(
        std::fs::read_to_string(run.join("notes.txt")).unwrap(),
        "mine"
    );
    assert_eq!(metrics_lines(&run).len(), 1);
}
