//! Bad input never panics: every case below exits with code 2 and one clear error naming what and
//! where, with a hint.

mod common;
use common::*;

fn train_with(config: &str) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("bad.toml");
    std::fs::write(&cfg, config).unwrap();
    user_error(
        makd()
            .args(["train", "--config"])
            .arg(&cfg)
            .arg("--run-dir")
            .arg(tmp.path().join("run")),
    )
}

#[test]
fn unknown_config_keys_are_errors() {
    let err = train_with("[train]\nepochs = 1\nlearning_rate = 0.1\n");
    assert!(
        err.contains("learning_rate") && err.contains("bad.toml"),
        "{err}"
    );
    let err = train_with("[trian]\nepochs = 1\n");
    assert!(err.contains("trian"), "{err}");
}

#[test]
fn bad_config_values_are_errors() {
    assert!(train_with("[train]\nepochs = 0\n").contains("epochs"));
    assert!(train_with("[optim]\nlr = -1.0\n").contains("optim.lr"));
    assert!(train_with("[model]\narch = \"resnet9000\"\n").contains("resnet9000"));
    assert!(
        train_with("[transform]\nchannels = 3\nmean = [0.5]\nstd = [0.5, 0.5, 0.5]\n")
            .contains("mean")
    );
    assert!(train_with(
        "[data]\ndataset = \"imagefolder:/nonexistent/dir\"\n[train]\nepochs = 1\n"
    )
    .contains("/nonexistent/dir"));
    assert!(train_with("[data]\ndataset = \"nosuchkind:/x\"\n").contains("nosuchkind"));
    assert!(train_with("[train\nepochs = 1\n").contains("bad.toml:1"));
    let err = user_error(makd().args(["train", "--run-dir", "/tmp/x", "--set", "train.epochs"]));
    assert!(err.contains("key=value"), "{err}");
}

#[test]
fn missing_or_bad_run_dirs_and_stores_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let err = user_error(makd().args(["eval", "--run-dir"]).arg(tmp.path()));
    assert!(err.contains("config.toml"), "{err}");
    let err = user_error(
        makd()
            .args(["predict", "--run-dir"])
            .arg(tmp.path())
            .arg("x.png"),
    );
    assert!(err.contains("config.toml"), "{err}");
    // A score store that is not there.
    let err = train_with(&format!(
        "[aspects]\nscores = \"{}\"\n[train]\nepochs = 1\n",
        tmp.path().join("nope").display()
    ));
    assert!(err.contains("nope"), "{err}");
}

#[test]
fn bad_images_in_an_imagefolder_are_named() {
    // The committed corpus: zero-byte, truncated and non-image files.
    let root = repo().join("tests/corpus/data/imagefolder/bad-files");
    let tmp = tempfile::tempdir().unwrap();
    let err = user_error(
        makd()
            .args(["train", "--run-dir"])
            .arg(tmp.path().join("run"))
            .arg("--set")
            .arg(format!("data.dataset=\"imagefolder:{}\"", root.display()))
            .args(["--set", "train.epochs=1", "--set", "transform.size=8"]),
    );
    assert!(err.contains("bad-files"), "{err}");
}

/// `--fresh` deletes only a run dir's own files: a directory that is not a run dir is refused
/// (before any dataset is opened) and keeps its files; an empty one is fine to use.
#[test]
fn fresh_refuses_a_directory_that_is_not_a_run_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("photos");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("holiday.txt"), "keep me").unwrap();
    // Even a config.toml alone does not make it a run dir.
    std::fs::write(dir.join("config.toml"), "mine").unwrap();
    let err = user_error(
        makd()
            .args(["train", "--fresh", "--set", "train.epochs=1", "--run-dir"])
            .arg(&dir),
    );
    assert!(
        err.contains("not a run dir") && err.contains("photos"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("holiday.txt")).unwrap(),
        "keep me"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("config.toml")).unwrap(),
        "mine"
    );
    assert!(dir.join("sub").is_dir());
}

/// `makd bench resume --dir` removes its scratch dir before and after: an existing directory
/// with other files is refused and left alone; a new one is made and removed.
#[test]
fn bench_resume_refuses_a_directory_it_did_not_make() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("thesis.tex"), "years of work").unwrap();
    let bench = |d: &std::path::Path| {
        let mut c = makd();
        c.args([
            "bench",
            "resume",
            "--images",
            "20",
            "--questions",
            "3",
            "--dir",
        ])
        .arg(d);
        c
    };
    let err = user_error(&mut bench(&dir));
    assert!(err.contains("thesis.tex"), "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.join("thesis.tex")).unwrap(),
        "years of work"
    );
    let scratch = tmp.path().join("scratch");
    let out = ok(&mut bench(&scratch));
    assert!(String::from_utf8_lossy(&out.stdout).contains("60 pairs"));
    assert!(!scratch.exists());
}
