//! A small experiment end to end: variants × seeds, controls, KD with a teacher network trained by
//! the experiment itself, and a report whose numbers are the ones in results.json.

mod common;
use common::*;

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
