//! Experiments end to end: the default comparison on a user's own ImageFolder with nothing but
//! `train_config` and `seeds`; variants × seeds, controls, KD with a teacher network trained by the
//! experiment itself, and a report whose numbers are the ones in results.json; configs refused
//! before anything trains.

mod common;
use common::*;
use rand::{Rng, SeedableRng};
use std::path::Path;

/// Three classes anyone can tell apart (mostly red, green or blue 12×12 squares, with per-pixel
/// noise so no two images are alike): 8 training and 4 test images per class.
fn color_imagefolder(root: &Path) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    for (split, n) in [("train", 8), ("test", 4)] {
        for (c, class) in ["red", "green", "blue"].iter().enumerate() {
            let dir = root.join(split).join(class);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..n {
                let img = image::RgbImage::from_fn(12, 12, |_, _| {
                    let mut px = [0u8; 3];
                    for (k, v) in px.iter_mut().enumerate() {
                        let base = if k == c { 200 } else { 40 };
                        *v = base + rng.random_range(0..40);
                    }
                    image::Rgb(px)
                });
                img.save(dir.join(format!("{i:02}.png"))).unwrap();
            }
        }
    }
}

/// The colour ImageFolder labeled by the table teacher through the binary, as the README tells a
/// user to: an aspect set from a question list, then a per-class table for both splits. Returns
/// the training config (with `aspects.scores` and `aspects.test_scores`).
fn labeled_color_imagefolder(dir: &Path) -> std::path::PathBuf {
    let root = dir.join("colors");
    color_imagefolder(&root);
    let dataset = format!("imagefolder:{}", root.display());
    std::fs::write(
        dir.join("questions.txt"),
        "Is the image mostly red?\nIs the image mostly green?\nIs the image mostly blue?\n\
         Is the colour warm?\n",
    )
    .unwrap();
    ok(makd()
        .args(["aspects", "import"])
        .arg(dir.join("questions.txt"))
        .args(["--dataset", &dataset, "-o"])
        .arg(dir.join("aspects.json")));
    std::fs::write(
        dir.join("table.csv"),
        "class,q01,q02,q03,q04\nblue,0.05,0.1,0.95,0.1\ngreen,0.05,0.9,0.1,0.3\nred,0.95,0.05,0.05,0.9\n",
    )
    .unwrap();
    for (split, store) in [("train", "store"), ("test", "test-store")] {
        ok(makd()
            .args([
                "label",
                "--dataset",
                &dataset,
                "--split",
                split,
                "--aspects",
            ])
            .arg(dir.join("aspects.json"))
            .args(["--backend", "table", "--table"])
            .arg(dir.join("table.csv"))
            .arg("--out")
            .arg(dir.join(store)));
    }
    let train_config = dir.join("train.toml");
    std::fs::write(
        &train_config,
        format!(
            r#"[data]
dataset = "{dataset}"
workers = 1

[transform]
size = 12
channels = 3
mean = [0.5, 0.5, 0.5]
std = [0.3, 0.3, 0.3]
augment = "none"

[model]
arch = "cnn"
in_channels = 3

[optim]
kind = "adamw"
lr = 0.003

[train]
epochs = 2
batch_size = 8

[aspects]
scores = "store"
test_scores = "test-store"
aspects = "aspects.json"
"#
        ),
    )
    .unwrap();
    train_config
}

#[test]
fn default_variants_run_on_an_imagefolder_without_kd() {
    let tmp = tempfile::tempdir().unwrap();
    let train_config = labeled_color_imagefolder(tmp.path());
    // Only the two keys the README says a config needs.
    let cfg = tmp.path().join("exp.toml");
    std::fs::write(&cfg, "train_config = \"train.toml\"\nseeds = [0, 1]\n").unwrap();
    assert!(train_config.exists());
    let out_dir = tmp.path().join("out");
    let out = ok(makd()
        .args(["experiment", "--config"])
        .arg(&cfg)
        .arg("--out")
        .arg(&out_dir));
    let stdout = String::from_utf8_lossy(&out.stdout);

    let r = read_json(&out_dir.join("results.json"));
    assert_eq!(r["name"], "exp");
    assert_eq!(r["classes"], serde_json::json!(["blue", "green", "red"]));
    let variants = r["variants"].as_array().unwrap();
    let names: Vec<&str> = variants
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["baseline", "makd", "random-target", "shuffled-target"]
    );
    for v in variants {
        let name = v["name"].as_str().unwrap();
        let runs = v["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 2, "{name}");
        let mut top1 = Vec::new();
        for (run, seed) in runs.iter().zip([0, 1]) {
            // Each run is a normal run dir under runs/<variant>/seed<k>, and results.json holds
            // the number its summary.json holds.
            let dir = out_dir.join("runs").join(name).join(format!("seed{seed}"));
            assert_eq!(run["seed"], seed);
            assert_eq!(Path::new(run["run_dir"].as_str().unwrap()), dir);
            let summary = read_json(&dir.join("summary.json"));
            assert_eq!(run["test_top1"], summary["test_top1"], "{name} seed {seed}");
            let t = run["test_top1"].as_f64().unwrap();
            assert!((0.0..=100.0).contains(&t));
            top1.push(t);
        }
        let mean = (top1[0] + top1[1]) / 2.0;
        assert!(
            (v["top1"]["mean"].as_f64().unwrap() - mean).abs() < 1e-9,
            "{name}"
        );
        assert!(stdout.contains(&format!("| {name} |")), "{stdout}");
        // The baseline has no aspect head; the others are scored against the test store.
        assert_eq!(v["aspect_auc"].is_null(), name == "baseline", "{name}");
    }
    // The colours are trivial: the teacher's store trains a student that agrees with it.
    let makd_agreement = variants[1]["aspect_agreement"]["mean"].as_f64().unwrap();
    assert!(makd_agreement > 0.7, "makd agreement {makd_agreement}");

    // Variant − baseline for each, MaKD − each control: one family of five, every one paired
    // over the two seeds and Holm-adjusted over the five.
    let cmp = r["comparisons"].as_array().unwrap();
    let pairs: Vec<(&str, &str)> = cmp
        .iter()
        .map(|c| (c["a"].as_str().unwrap(), c["b"].as_str().unwrap()))
        .collect();
    assert_eq!(
        pairs,
        [
            ("makd", "baseline"),
            ("random-target", "baseline"),
            ("shuffled-target", "baseline"),
            ("makd", "random-target"),
            ("makd", "shuffled-target")
        ]
    );
    for c in cmp {
        assert_eq!(c["method"], "paired-t");
        assert_eq!((c["n_a"].as_u64(), c["n_b"].as_u64()), (Some(2), Some(2)));
        let s = c["sentence"].as_str().unwrap();
        assert!(s.contains("paired t over 2 seeds"), "{s}");
        if let Some(p) = c["p_value"].as_f64() {
            let adj = c["p_adjusted"].as_f64().unwrap();
            assert!(adj >= p && adj <= 1.0, "{c}");
            assert!(s.contains("Holm-adjusted"), "{s}");
        }
    }
    // No KD variant was listed, so no teacher network was trained or asked for logits.
    assert!(!out_dir.join("runs/kd-teacher").exists());
    assert!(!out_dir.join("kd-teacher-logits.safetensors").exists());
    let mut dirs: Vec<String> = std::fs::read_dir(out_dir.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    assert_eq!(
        dirs,
        ["baseline", "makd", "random-target", "shuffled-target"]
    );
    assert!(out_dir.join("report.html").exists() && out_dir.join("report.md").exists());
}

#[test]
fn kd_variants_without_a_kd_section_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("exp.toml");
    // The train config need not exist: the experiment config is checked first.
    std::fs::write(
        &cfg,
        "train_config = \"train.toml\"\nvariants = [\"baseline\", \"makd\", \"kd\"]\n",
    )
    .unwrap();
    let out_dir = tmp.path().join("out");
    let err = user_error(
        makd()
            .args(["experiment", "--config"])
            .arg(&cfg)
            .arg("--out")
            .arg(&out_dir),
    );
    assert!(
        err.contains("variant(s) kd need a teacher network"),
        "{err}"
    );
    assert!(err.contains("hint: add [kd]"), "{err}");
    assert!(
        !out_dir.exists(),
        "nothing may run before the config is valid"
    );

    // `makd` alone does not ask for [kd]: the config passes, and the run stops at the next
    // check, the training config's missing score store (before any data is read).
    std::fs::write(
        &cfg,
        "train_config = \"train.toml\"\nvariants = [\"makd\"]\n",
    )
    .unwrap();
    std::fs::write(tmp.path().join("train.toml"), "[train]\nepochs = 1\n").unwrap();
    let err = user_error(
        makd()
            .args(["experiment", "--config"])
            .arg(&cfg)
            .arg("--out")
            .arg(&out_dir),
    );
    assert!(
        !err.contains("[kd]") && !err.contains("teacher network"),
        "{err}"
    );
    assert!(
        err.contains("aspect variants need the teacher's score store"),
        "{err}"
    );
}

#[test]
fn zero_seeds_are_a_user_error() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("exp.toml");
    std::fs::write(&cfg, "train_config = \"train.toml\"\nseeds = []\n").unwrap();
    let err = user_error(
        makd()
            .args(["experiment", "--config"])
            .arg(&cfg)
            .arg("--out")
            .arg(tmp.path().join("out")),
    );
    assert!(
        err.contains("no seeds") && err.contains("hint: give at least one seed"),
        "{err}"
    );
    // The demo builds its experiment through the same validation, before labeling anything.
    let demo_out = tmp.path().join("demo");
    let err = user_error(
        makd()
            .args(["demo", "--table-teacher", "--seeds", "0", "--out"])
            .arg(&demo_out),
    );
    assert!(
        err.contains("no seeds") && err.contains("experiment.toml"),
        "{err}"
    );
    assert!(!demo_out.join("scores-train").exists());
}

#[test]
fn small_experiment_with_controls_and_kd() {
    require_fashion_mnist();
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("train-store");
    let test_store = tmp.path().join("test-store");
    for (split, out) in [("train", &store), ("test", &test_store)] {
        label_fashion_mnist_table(split, out, &["--mode", "class"]);
    }
    let base = repo().join("examples/fashion-mnist");
    let cfg = tmp.path().join("exp.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"name = "tiny"
train_config = "{base}/makd.toml"
seeds = [0, 1]
variants = ["baseline", "makd", "random-target", "shuffled-target", "kd", "makd+kd"]
aspect_counts = [5]
set = ["data.train_limit=300", "data.test_limit=200", "train.epochs=1", "train.batch_size=50",
       "aspects.scores={store}", "aspects.test_scores={test_store}"]
examples = 2
embedding_points = 100
[kd]
config = "{base}/baseline.toml"
set = ["data.train_limit=300", "data.test_limit=200", "train.epochs=1", "train.batch_size=50"]
"#,
            base = base.display(),
            store = store.display(),
            test_store = test_store.display()
        ),
    )
    .unwrap();
    let out_dir = tmp.path().join("out");
    let out = ok(makd()
        .args(["experiment", "--config"])
        .arg(&cfg)
        .arg("--out")
        .arg(&out_dir));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(stdout.contains("| makd |"), "{stdout}");

    let r = read_json(&out_dir.join("results.json"));
    let variants = r["variants"].as_array().unwrap();
    let names: Vec<&str> = variants
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "baseline",
            "makd",
            "random-target",
            "shuffled-target",
            "kd",
            "makd+kd",
            "makd-q5"
        ]
    );
    for v in variants {
        let runs = v["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 2);
        let t: Vec<f64> = runs
            .iter()
            .map(|r| r["test_top1"].as_f64().unwrap())
            .collect();
        let mean = (t[0] + t[1]) / 2.0;
        assert!((v["top1"]["mean"].as_f64().unwrap() - mean).abs() < 1e-9);
        // The same table row in report.md carries the same mean.
        let md = std::fs::read_to_string(out_dir.join("report.md")).unwrap();
        let prefix = format!("| {} |", v["name"].as_str().unwrap());
        let rows: Vec<&str> = md.lines().filter(|l| l.starts_with(&prefix)).collect();
        assert!(
            rows.iter().any(|row| row.contains(&format!("{mean:.2} ±"))),
            "{rows:?} vs {mean}"
        );
    }
    // Aspect variants are scored against the real teacher on the test split; baseline has none.
    assert!(variants[0]["aspect_auc"].is_null());
    assert!(variants[1]["aspect_auc"]["mean"].as_f64().is_some());
    // The Q = 5 sweep scores the first five questions; the other 45 are absent (null), not zero.
    let pq = variants[6]["per_question_auc"].as_array().unwrap();
    assert_eq!(pq.len(), 50);
    assert!(
        pq[..5].iter().all(|x| x.is_f64()) && pq[5..].iter().all(|x| x.is_null()),
        "{pq:?}"
    );
    // Seeds differ, so runs differ.
    let b = &variants[0]["runs"];
    assert_ne!(b[0]["run_dir"], b[1]["run_dir"]);
    let cmp: Vec<String> = r["comparisons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| format!("{} vs {}", c["a"], c["b"]))
        .collect();
    assert!(
        cmp.contains(&"\"makd\" vs \"random-target\"".to_string()),
        "{cmp:?}"
    );
    assert!(
        cmp.contains(&"\"makd+kd\" vs \"kd\"".to_string()),
        "{cmp:?}"
    );
    assert!(out_dir.join("kd-teacher-logits.safetensors").exists());
    assert_eq!(r["examples"].as_array().unwrap().len(), 2);
    assert_eq!(r["embedding"]["points"].as_array().unwrap().len(), 100);
    for p in [
        "report.html",
        "plots/accuracy.png",
        "plots/learning_curves.png",
        "plots/embedding.png",
        "plots/aspect_auc.png",
        "plots/examples.png",
    ] {
        assert!(out_dir.join(p).exists(), "{p} missing");
    }
    // Rerunning resumes: nothing is retrained and the numbers are identical.
    ok(makd()
        .args(["experiment", "--config"])
        .arg(&cfg)
        .arg("--out")
        .arg(&out_dir));
    let r2 = read_json(&out_dir.join("results.json"));
    assert_eq!(r["variants"], r2["variants"]);
}
