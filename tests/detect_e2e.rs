//! Detection end to end through the binary, as the README tells a user: a CenterNet student on
//! synthetic scenes of Fashion-MNIST learns (its loss falls and AP50 rises far above an
//! untrained model's), pycocotools agrees with its `test_map` from `makd data export` and
//! `makd eval --detections-out`, the aspect head trains in both modes against table-teacher
//! stores, the detection experiment reports, and every detection-only flag acts (or is refused
//! on a classifier).

mod common;
#[path = "server/harness.rs"]
mod harness;
use common::*;
use std::path::Path;

/// The documented entry point, made CI-sized.
fn detect(run_dir: &Path, train: usize, test: usize, epochs: usize) -> std::process::Command {
    let mut c = makd();
    c.args([
        "train",
        "--config",
        "examples/scenes/detect.toml",
        "--run-dir",
    ])
    .arg(run_dir)
    .args(["--set", &format!("data.train_limit={train}")])
    .args(["--set", &format!("data.test_limit={test}")])
    .args(["--set", &format!("train.epochs={epochs}")]);
    c
}

fn metrics(run_dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_detector_learns_and_pycocotools_agrees_with_its_map() {
    require_fashion_mnist();
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    ok(&mut detect(&run, 2000, 200, 3));
    let m = metrics(&run);
    assert_eq!(m.len(), 3);
    let loss = |e: usize| m[e]["train_loss"].as_f64().unwrap();
    assert!(
        loss(2) < 0.7 * loss(0),
        "the loss should fall: {} → {}",
        loss(0),
        loss(2)
    );
    let s = read_json(&run.join("summary.json"));
    assert_eq!(s["task"], "detect");
    let (map, map50) = (
        s["test_map"].as_f64().unwrap(),
        s["test_map50"].as_f64().unwrap(),
    );
    assert!((0.0..=1.0).contains(&map) && (0.0..=1.0).contains(&map50));
    // An untrained detector scores AP50 ≈ 0.0–0.03 on these scenes (its heatmap is flat).
    assert!(map50 > 0.15, "AP50 {map50} after 3 short epochs");
    assert!(m[2]["test_map50"].as_f64().unwrap() > m[0]["test_map50"].as_f64().unwrap());

    // The same test images, exported for any COCO tool, and the run's detections on them.
    let export = tmp.path().join("export");
    ok(makd()
        .args([
            "data",
            "export",
            "--dataset",
            "scenes:fashion-mnist",
            "--split",
            "test",
            "--limit",
            "200",
            "--out",
        ])
        .arg(&export));
    let dets = tmp.path().join("dets.json");
    let out = ok(makd()
        .args(["eval", "--run-dir"])
        .arg(&run)
        .args(["--json", "--detections-out"])
        .arg(&dets));
    let eval: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        eval["coco"]["map"].as_f64().unwrap(),
        map,
        "eval re-scores the last checkpoint"
    );
    let results: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&dets).unwrap()).unwrap();
    assert!(!results.is_empty() && results.len() <= 200 * 100);
    if !harness::have_python(
        "pycocotools",
        "a_detector_learns_and_pycocotools_agrees_with_its_map",
    ) {
        return;
    }
    let py = std::process::Command::new(harness::python())
        .arg(repo().join("scripts/coco-map.py"))
        .arg(export.join("annotations.json"))
        .arg(&dets)
        .output()
        .unwrap();
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    let theirs: serde_json::Value = serde_json::from_slice(&py.stdout).unwrap();
    let (m_py, m50_py) = (
        theirs["map"].as_f64().unwrap(),
        theirs["map50"].as_f64().unwrap(),
    );
    eprintln!(
        "mAP: pycocotools {m_py:.6}, makd {map:.6}; AP50: pycocotools {m50_py:.6}, makd {map50:.6}"
    );
    assert!(
        (m_py - map).abs() < 0.005,
        "pycocotools mAP {m_py}, makd {map}"
    );
    assert!(
        (m50_py - map50).abs() < 0.005,
        "pycocotools AP50 {m50_py}, makd {map50}"
    );
}

/// Label the full train split of `dataset` with the table teacher in class mode.
fn label_table(dataset: &str, out: &Path) {
    ok(makd()
        .args([
            "label",
            "--dataset",
            dataset,
            "--split",
            "train",
            "--aspects",
        ])
        .arg(repo().join("examples/fashion-mnist/aspects.json"))
        .args(["--backend", "table", "--table"])
        .arg(repo().join("examples/fashion-mnist/aspect_table.csv"))
        .args(["--mode", "class", "--out"])
        .arg(out));
}

#[test]
fn the_aspect_head_trains_per_scene_and_per_object() {
    require_fashion_mnist();
    let tmp = tempfile::tempdir().unwrap();
    let scenes = tmp.path().join("scenes.scores");
    let objects = tmp.path().join("objects.scores");
    label_table("scenes:fashion-mnist", &scenes);
    label_table("crops:scenes:fashion-mnist", &objects);
    let aspects = repo().join("examples/fashion-mnist/aspects.json");
    for (mode, store) in [("image", &scenes), ("object", &objects)] {
        let run = tmp.path().join(mode);
        ok(detect(&run, 200, 50, 1)
            .args(["--set", &format!("aspects.scores={}", store.display())])
            .args(["--set", &format!("aspects.aspects={}", aspects.display())])
            .args(["--set", &format!("detect.aspect_mode=\"{mode}\"")]));
        let s = read_json(&run.join("summary.json"));
        assert_eq!(s["num_aspects"], 50, "{mode}");
        assert_eq!(s["aspect_mode"], mode);
        assert_eq!(s["aspect_targets"]["masked_train_pairs"], 0, "{mode}");
        let bce = metrics(&run)[0]["train_bce"].as_f64().unwrap();
        assert!(bce.is_finite() && bce > 0.0, "{mode}: train_bce {bce}");
    }
    // A store of the scenes is not a store of their objects.
    let err = user_error(
        detect(&tmp.path().join("wrong"), 200, 50, 1)
            .args(["--set", &format!("aspects.scores={}", scenes.display())])
            .args(["--set", "detect.aspect_mode=\"object\""]),
    );
    assert!(err.contains("crops:"), "{err}");
}

#[test]
fn detection_configs_that_cannot_train_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("r");
    let cases: [(&[&str], &str); 4] = [
        (
            &["data.dataset=\"fashion-mnist\""],
            "needs a detection dataset",
        ),
        (
            &["transform.augment=\"crop-flip\""],
            "not available for detection",
        ),
        (&["kd.logits=\"x.safetensors\""], "KD"),
        (&["detect.neck_channels=0"], "must be > 0"),
    ];
    for (sets, want) in cases {
        let mut c = detect(&run, 10, 10, 1);
        for s in sets {
            c.args(["--set", s]);
        }
        let err = user_error(&mut c);
        assert!(err.contains(want), "{sets:?}: {err}");
    }
    // A [detect] section on a classifier does nothing, so it is refused.
    let err = user_error(
        makd()
            .args([
                "train",
                "--config",
                "examples/fashion-mnist/baseline.toml",
                "--run-dir",
            ])
            .arg(&run)
            .args(["--set", "detect.aspect_mode=\"object\""]),
    );
    assert!(err.contains("[detect]"), "{err}");
}

#[test]
fn eval_and_predict_flags_act_on_detectors_and_are_refused_on_classifiers() {
    require_fashion_mnist();
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("det");
    ok(&mut detect(&run, 200, 20, 1));
    // --checkpoint picks the weights. After one epoch best/ and last/ hold the same ones, so
    // best/ is given another run's (another seed, same data): eval must report that run's mAP.
    let other = tmp.path().join("other");
    ok(detect(&other, 200, 20, 1).args(["--set", "train.seed=7"]));
    for f in ["model.safetensors", "state.json"] {
        std::fs::copy(
            other.join("checkpoints/last").join(f),
            run.join("checkpoints/best").join(f),
        )
        .unwrap();
    }
    let map_of = |which: &str| {
        let out = ok(makd()
            .args(["eval", "--json", "--checkpoint", which, "--run-dir"])
            .arg(&run));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["checkpoint"], which);
        v["coco"]["map"].as_f64().unwrap()
    };
    let ours = read_json(&run.join("summary.json"))["test_map"]
        .as_f64()
        .unwrap();
    let theirs = read_json(&other.join("summary.json"))["test_map"]
        .as_f64()
        .unwrap();
    assert_ne!(
        ours, theirs,
        "two seeds gave the same mAP: the check below would prove nothing"
    );
    assert_eq!(map_of("last"), ours);
    assert_eq!(map_of("best"), theirs);
    let export = tmp.path().join("export");
    ok(makd()
        .args([
            "data",
            "export",
            "--dataset",
            "scenes:fashion-mnist",
            "--split",
            "test",
            "--limit",
            "2",
            "--out",
        ])
        .arg(&export));
    let image = export.join("images/test/000001.png");
    let png = tmp.path().join("drawn.png");
    let out = ok(makd()
        .args(["predict", "--run-dir"])
        .arg(&run)
        .args(["--json", "--min-score", "0", "--draw"])
        .arg(&png)
        .arg(&image));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["detections"].as_array().unwrap().len(),
        100,
        "--min-score 0 keeps the top 100"
    );
    let drawn = image::open(&png).unwrap();
    assert_eq!(
        (drawn.width(), drawn.height()),
        (512, 512),
        "64 px drawn 8× larger"
    );
    let out = ok(makd()
        .args(["predict", "--run-dir"])
        .arg(&run)
        .args(["--json", "--min-score", "1.01"])
        .arg(&image));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["detections"].as_array().unwrap().is_empty(),
        "no score reaches 1.01"
    );
    // --split train evaluates the run's own training images.
    let out = ok(makd()
        .args(["eval", "--json", "--split", "train", "--run-dir"])
        .arg(&run));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["images"], 200);

    // The same flags on a classifier are refused, as its flags are on a detector.
    let cls = tmp.path().join("cls");
    ok(makd()
        .args([
            "train",
            "--config",
            "examples/fashion-mnist/baseline.toml",
            "--run-dir",
        ])
        .arg(&cls)
        .args([
            "--set",
            "data.train_limit=100",
            "--set",
            "data.test_limit=20",
            "--set",
            "train.epochs=1",
        ]));
    let err = user_error(
        makd()
            .args(["eval", "--run-dir"])
            .arg(&cls)
            .args(["--detections-out"])
            .arg(tmp.path().join("d.json")),
    );
    assert!(err.contains("detection runs"), "{err}");
    let err = user_error(
        makd()
            .args(["predict", "--run-dir"])
            .arg(&cls)
            .args(["--draw"])
            .arg(&png)
            .arg(&image),
    );
    assert!(err.contains("detection runs"), "{err}");
    let err = user_error(
        makd()
            .args(["eval", "--run-dir"])
            .arg(&run)
            .args(["--logits-out"])
            .arg(tmp.path().join("l.safetensors")),
    );
    assert!(err.contains("classification runs"), "{err}");
}

#[test]
fn a_detection_experiment_runs_the_controls_and_reports() {
    require_fashion_mnist();
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("scenes.scores");
    label_table("scenes:fashion-mnist", &store);
    let cfg = tmp.path().join("experiment.toml");
    std::fs::write(
        &cfg,
        format!(
            "train_config = \"{}\"\nseeds = [0, 1]\nset = [\"data.train_limit=200\", \"data.test_limit=40\", \"train.epochs=1\", \"aspects.scores={}\", \"aspects.aspects={}\"]\n",
            repo().join("examples/scenes/detect.toml").display(),
            store.display(),
            repo().join("examples/fashion-mnist/aspects.json").display()
        ),
    )
    .unwrap();
    let out = tmp.path().join("out");
    ok(makd()
        .args(["experiment", "--config"])
        .arg(&cfg)
        .arg("--out")
        .arg(&out));
    let r = read_json(&out.join("results.json"));
    let names: Vec<&str> = r["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["baseline", "makd", "random-target", "shuffled-target"]
    );
    for v in r["variants"].as_array().unwrap() {
        assert_eq!(v["runs"].as_array().unwrap().len(), 2);
        assert_eq!(v["map"]["n"], 2);
    }
    let comparisons: Vec<String> = r["comparisons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{} vs {}",
                c["a"].as_str().unwrap(),
                c["b"].as_str().unwrap()
            )
        })
        .collect();
    assert!(
        comparisons.contains(&"makd vs random-target".to_string()),
        "{comparisons:?}"
    );
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("| makd |") && md.contains("mAP (%)"), "{md}");
    assert!(
        md.contains("| CenterNet loss + α·BCE against the teacher's P(yes) |")
            && !md.contains("CE only"),
        "a detector's loss is CenterNet's, not CE: {md}"
    );
    let pic = image::open(out.join("plots/predictions.png")).unwrap();
    assert!(pic.width() > pic.height(), "a strip of test scenes");
    // Rerunning resumes: every run dir is finished, so nothing trains again.
    let t0 = std::time::Instant::now();
    ok(makd()
        .args(["experiment", "--config"])
        .arg(&cfg)
        .arg("--out")
        .arg(&out));
    assert_eq!(
        read_json(&out.join("results.json"))["variants"],
        r["variants"]
    );
    eprintln!("rerun took {:.1} s", t0.elapsed().as_secs_f64());
}

#[test]
fn neck_and_head_widths_change_the_detector() {
    require_fashion_mnist();
    let tmp = tempfile::tempdir().unwrap();
    let params = |name: &str, sets: &[&str]| -> u64 {
        let run = tmp.path().join(name);
        let mut c = detect(&run, 32, 4, 1);
        for s in sets {
            c.args(["--set", s]);
        }
        ok(&mut c);
        read_json(&run.join("summary.json"))["params"]
            .as_u64()
            .unwrap()
    };
    let base = params("cnn64", &[]);
    assert!(params("cnn32", &["detect.head_channels=32"]) < base);
    // The cnn's stride is already 4 (no neck); an ImageNet-stem ResNet-18 has three neck stages.
    let resnet = ["model.arch=\"resnet18\"", "model.stem=\"imagenet\""];
    let wide = params("r64", &resnet);
    let narrow = params("r32", &[resnet[0], resnet[1], "detect.neck_channels=32"]);
    assert!(narrow < wide, "{narrow} vs {wide}");
}
