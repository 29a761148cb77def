//! The README's own command blocks, run as written. Every block marked `<!-- tested: tests/readme.rs -->`
//! is taken from README.md at test time by the heading of its section, so the README cannot drift
//! from the code, and runs with `bash -euo pipefail` in a scratch directory that looks like the
//! checkout to it: a copy of `examples/`, the build's `target/`, and the checkout's Cargo.toml above
//! it (the scratch directory lies under `target/`), so `cargo build --release` builds the checkout.
//! Then the files the README documents for the block are checked.
//!
//! The journey trains on all of Fashion-MNIST, as a user's would, reading the README top to bottom
//! in one checkout (the KD section's teacher is the Quick start's baseline; the experiment reads
//! its score store): it is `#[ignore]`d, and scripts/test runs it (`--include-ignored`).

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const MARKER: &str = "<!-- tested: tests/readme.rs -->";

const QUICK_START: &str = "Quick start (Fashion-MNIST)";
const KD: &str = "Knowledge distillation from a teacher network (Fashion-MNIST)";
const EXPERIMENT: &str = "Experiments (`makd experiment --config exp.toml --out DIR`)";

/// The headings whose marked block a journey below runs.
const JOURNEYS: [&str; 3] = [QUICK_START, KD, EXPERIMENT];

struct Block {
    heading: String,
    /// The fence's info string (`sh`, `toml`).
    lang: String,
    marked: bool,
    body: String,
}

/// Every fenced block of README.md with the heading of its section.
fn blocks() -> Vec<Block> {
    let text = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let mut out = Vec::new();
    let (mut heading, mut marked) = (String::new(), false);
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if let Some(lang) = line.strip_prefix("```") {
            let body: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
            out.push(Block {
                heading: heading.clone(),
                lang: lang.trim().to_string(),
                marked,
                body: body.join("\n") + "\n",
            });
        } else if line.starts_with('#') {
            heading = line.trim_start_matches('#').trim().to_string();
        }
        marked = line.trim() == MARKER;
    }
    out
}

/// The one marked block under `heading`.
fn marked(heading: &str) -> String {
    let found: Vec<Block> = blocks()
        .into_iter()
        .filter(|b| b.marked && b.heading == heading)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "README.md needs exactly one ```sh block marked {MARKER} under the heading {heading:?}"
    );
    assert_eq!(found[0].lang, "sh", "the marked block under {heading:?}");
    found[0].body.clone()
}

/// A marked block that no journey runs would claim a test it does not have; a journey whose
/// block lost its marker or heading would test nothing.
#[test]
fn every_marked_block_is_run_by_a_journey() {
    let mut headings: Vec<String> = blocks()
        .into_iter()
        .filter(|b| b.marked)
        .map(|b| b.heading)
        .collect();
    headings.sort();
    let mut want: Vec<String> = JOURNEYS.map(String::from).to_vec();
    want.sort();
    assert_eq!(headings, want);
    for h in JOURNEYS {
        marked(h);
    }
}

/// The README's experiment config, which shows every option, is documentation, not a journey: it
/// must still load with the experiment config parser (unknown keys are errors there).
#[test]
fn the_documented_experiment_config_loads() {
    let toml: Vec<String> = blocks()
        .into_iter()
        .filter(|b| b.heading == EXPERIMENT && b.lang == "toml")
        .map(|b| b.body)
        .collect();
    assert_eq!(toml.len(), 1, "one ```toml block under {EXPERIMENT:?}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("exp.toml");
    std::fs::write(&path, &toml[0]).unwrap();
    let cfg = makd::experiment::config::ExperimentConfig::load(&path)
        .unwrap_or_else(|e| panic!("the README's experiment config: {e}\n{}", toml[0]));
    assert!(cfg.kd.is_some(), "the example shows the [kd] section");
}

/// A scratch directory where a README block runs as it would in the checkout.
struct Checkout {
    dir: tempfile::TempDir,
}

impl Checkout {
    fn new() -> Checkout {
        require_fashion_mnist();
        let bin = Path::new(env!("CARGO_BIN_EXE_makd"));
        assert!(
            bin.ends_with("release/makd"),
            "the README runs target/release/makd: run these tests with `cargo test --release` \
             (scripts/test does)"
        );
        let target = bin.parent().unwrap().parent().unwrap();
        let dir = tempfile::Builder::new()
            .prefix("readme-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        assert!(
            dir.path().starts_with(repo()),
            "the scratch directory must lie inside the checkout for `cargo build` to find \
             Cargo.toml; the build directory {} is outside it",
            target.display()
        );
        copy_dir(&repo().join("examples"), &dir.path().join("examples"));
        std::os::unix::fs::symlink(target, dir.path().join("target")).unwrap();
        Checkout { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Run the marked block under `heading`; returns its stdout.
    fn run(&self, heading: &str) -> String {
        let block = marked(heading);
        let mut bash = Command::new("bash");
        bash.args(["-euo", "pipefail", "-c", &block])
            .current_dir(self.dir.path());
        // A user's shell has none of the variables cargo sets for a test process; with them, the
        // block's `cargo build` would see ring's build script inputs (CARGO_MANIFEST_DIR,
        // CARGO_PKG_*) change and rebuild half the dependency tree, and the next plain build again.
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            let set_by_cargo = ["CARGO", "CARGO_MANIFEST_DIR", "CARGO_MANIFEST_PATH"]
                .contains(&k.as_ref())
                || ["CARGO_PKG_", "CARGO_BIN_", "CARGO_CRATE_", "CARGO_PRIMARY_"]
                    .iter()
                    .any(|p| k.starts_with(p));
            if set_by_cargo {
                bash.env_remove(k.as_ref());
            }
        }
        let out = bash.output().expect("run bash");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "the README block under {heading:?} failed ({:?}):\n{block}\nstdout:\n{stdout}\nstderr:\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn metrics(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap_or_else(|e| panic!("{}: {e}", run.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The run dir the README's "Artifact formats" documents; returns summary.json.
fn check_run_dir(run: &Path, aspects: usize) -> serde_json::Value {
    for f in [
        "config.toml",
        "model.json",
        "checkpoints/last/model.safetensors",
        "checkpoints/last/optimizer.safetensors",
        "checkpoints/last/state.json",
        "checkpoints/best/model.safetensors",
        "checkpoints/best/state.json",
    ] {
        assert!(run.join(f).is_file(), "{}: {f} missing", run.display());
    }
    let s = read_json(&run.join("summary.json"));
    for k in [
        "test_top1",
        "test_top5",
        "best_test_top1",
        "best_epoch",
        "epochs",
        "seconds",
        "params",
    ] {
        assert!(
            !s[k].is_null(),
            "{}: summary.json has no {k}",
            run.display()
        );
    }
    assert_eq!(s["num_aspects"], aspects);
    let m = metrics(run);
    assert_eq!(
        m.len() as u64,
        s["epochs"].as_u64().unwrap(),
        "one line per epoch"
    );
    for line in &m {
        for k in [
            "lr",
            "train_loss",
            "train_ce",
            "train_top1",
            "test_loss",
            "test_top1",
            "test_top5",
            "seconds",
            "images_per_s",
            "loader_wait_s",
        ] {
            assert!(
                line[k].is_number(),
                "metrics.jsonl line without {k}: {line}"
            );
        }
        assert_eq!(line["train_bce"].is_number(), aspects > 0, "{line}");
    }
    assert_eq!(m.last().unwrap()["test_top1"], s["test_top1"]);
    let model = read_json(&run.join("model.json"));
    assert_eq!(model["classes"].as_array().unwrap().len(), 10);
    s
}

/// The labels of the Fashion-MNIST training split, in image order.
fn train_labels() -> Vec<u8> {
    let gz = std::fs::read("/usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz").unwrap();
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut raw).unwrap();
    raw[8..].to_vec()
}

#[test]
#[ignore = "trains on all of Fashion-MNIST; scripts/test runs it"]
fn the_readme_top_to_bottom() {
    let c = Checkout::new();
    quick_start(&c);
    knowledge_distillation(&c);
    experiment(&c);
}

fn quick_start(c: &Checkout) {
    let stdout = c.run(QUICK_START);

    let baseline = check_run_dir(&c.path("runs/fmnist-baseline"), 0);
    assert_eq!(baseline["epochs"], 3);

    let store = c.path("work/fmnist-table");
    for f in ["manifest.json", "scores.log", "scores.safetensors"] {
        assert!(store.join(f).is_file(), "score store: {f} missing");
    }
    let manifest = read_json(&store.join("manifest.json"));
    assert_eq!(manifest["image_ids"].as_array().unwrap().len(), 60_000);
    assert_eq!(manifest["question_ids"].as_array().unwrap().len(), 50);

    let makd = check_run_dir(&c.path("runs/fmnist-makd"), 50);
    let model = read_json(&c.path("runs/fmnist-makd/model.json"));
    assert_eq!(model["questions"].as_array().unwrap().len(), 50);

    // eval prints the last checkpoint's numbers: the summary's.
    let top1 = format!("top-1 {:.2}%", makd["test_top1"].as_f64().unwrap());
    assert!(
        stdout.contains(&top1),
        "eval should print {top1}:\n{stdout}"
    );
    // predict lists the shipped test image's classes, most probable first.
    let image = "examples/fashion-mnist/ankle-boot.png";
    let after = stdout
        .split_once(&format!("{image}\n"))
        .unwrap_or_else(|| panic!("predict did not list {image}:\n{stdout}"))
        .1;
    let first = after.lines().next().unwrap();
    assert!(first.ends_with("%  Ankle boot"), "{first}");

    // The README's figure: the small CNN reaches 92% in 3 epochs.
    for s in [baseline, makd] {
        let top1 = s["test_top1"].as_f64().unwrap();
        assert!(top1 > 90.0, "test top-1 {top1}");
    }
}

fn knowledge_distillation(c: &Checkout) {
    c.run(KD);

    // The KD logits file: the teacher network's class logits for every training image, in order.
    let bytes = std::fs::read(c.path("work/fmnist-teacher.logits")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let logits = st.tensor("logits").unwrap();
    assert_eq!(logits.shape(), [60_000, 10]);
    assert_eq!(logits.dtype(), safetensors::Dtype::F32);
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap_or_default();
    assert!(
        meta.keys().any(|k| k.contains("fingerprint")),
        "no fingerprint in {:?}",
        meta.keys()
    );
    let values: Vec<f32> = logits
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let labels = train_labels();
    let right = values
        .chunks_exact(10)
        .zip(&labels)
        .filter(|(row, &y)| {
            let best = (0..10).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
            best == y as usize
        })
        .count();
    // A 3-epoch CNN fits the training images about as well as the test images (~92%).
    assert!(right > 54_000, "{right} of 60000 training images right");

    let kd = c.path("runs/fmnist-kd");
    check_run_dir(&kd, 0);
    let config = std::fs::read_to_string(kd.join("config.toml")).unwrap();
    assert!(config.contains("fmnist-teacher.logits"), "{config}");
    // Every epoch of the student reports a KD term.
    for line in metrics(&kd) {
        let kd_term = line
            .as_object()
            .unwrap()
            .iter()
            .find(|(k, _)| k.contains("kd"))
            .and_then(|(_, v)| v.as_f64());
        assert!(
            kd_term.is_some_and(|v| v.is_finite() && v > 0.0),
            "no KD term in {line}"
        );
    }
}

fn experiment(c: &Checkout) {
    let stdout = c.run(EXPERIMENT);
    let out = c.path("reports/fmnist");
    let r = read_json(&out.join("results.json"));
    let variants = r["variants"].as_array().unwrap();
    let names: Vec<&str> = variants
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    for v in ["baseline", "makd", "random-target", "shuffled-target"] {
        assert!(names.contains(&v), "{v} missing from {names:?}");
    }
    let runs_root = out.join("runs").canonicalize().unwrap();
    for v in variants {
        for run in v["runs"].as_array().unwrap() {
            // Relative to the directory the command ran in, or absolute.
            let dir = c.path(run["run_dir"].as_str().unwrap());
            assert!(
                dir.canonicalize().unwrap().starts_with(&runs_root),
                "{dir:?}"
            );
            let s = read_json(&dir.join("summary.json"));
            assert_eq!(s["test_top1"], run["test_top1"]);
        }
    }
    assert!(!r["comparisons"].as_array().unwrap().is_empty());
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("| makd |"), "{md}");
    assert!(stdout.contains("| makd |"), "{stdout}");
    for p in [
        "report.html",
        "plots/accuracy.png",
        "plots/learning_curves.png",
    ] {
        let len = std::fs::metadata(out.join(p))
            .unwrap_or_else(|e| panic!("{p}: {e}"))
            .len();
        assert!(len > 0, "{p} is empty");
    }
}
