//! `makd label`'s teacher flags through the binary: each backend's own flags act, and an error
//! ends with its hint on the last line.

mod common;
use common::*;
use std::path::Path;

fn label(tmp: &Path, extra: &[&str]) -> std::process::Output {
    makd()
        .args(["label", "--dataset", "fashion-mnist", "--aspects"])
        .arg(repo().join("examples/fashion-mnist/aspects.json"))
        .arg("--out")
        .arg(tmp.join("store"))
        .args(extra)
        .output()
        .expect("spawn makd")
}

#[test]
fn the_text_backend_takes_its_model_from_gguf_not_model() {
    let tmp = tempfile::tempdir().unwrap();
    // `--model` names a server's model; the text backend needs `--gguf`.
    let out = label(
        tmp.path(),
        &["--backend", "text", "--mode", "class", "--model", "x.gguf"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--gguf"), "{err}");

    // `--gguf` is read: a file that is not a GGUF is refused, naming it.
    let bogus = tmp.path().join("not-a-model.gguf");
    std::fs::write(&bogus, b"hello").unwrap();
    let err = user_error(
        makd()
            .args(["label", "--dataset", "fashion-mnist", "--aspects"])
            .arg(repo().join("examples/fashion-mnist/aspects.json"))
            .args(["--backend", "text", "--mode", "class", "--gguf"])
            .arg(&bogus)
            .arg("--out")
            .arg(tmp.path().join("store")),
    );
    assert!(
        err.contains("not-a-model.gguf") && err.contains("GGUF"),
        "{err}"
    );
    // The hint comes last, on its own line, after the error.
    let last = err.trim_end().lines().last().unwrap_or_default();
    assert!(last.starts_with("hint: "), "{err}");
    assert!(err.starts_with("error: "), "{err}");
}

#[test]
fn a_text_teacher_in_image_mode_is_refused_before_loading() {
    let tmp = tempfile::tempdir().unwrap();
    let err = user_error(
        makd()
            .args(["label", "--dataset", "fashion-mnist", "--aspects"])
            .arg(repo().join("examples/fashion-mnist/aspects.json"))
            .args(["--backend", "text", "--gguf", "/nonexistent.gguf", "--out"])
            .arg(tmp.path().join("store")),
    );
    assert!(
        err.contains("cannot see images") && err.contains("--mode class"),
        "{err}"
    );
    assert!(!tmp.path().join("store").exists());
}

#[test]
fn aspects_generate_takes_server_flags_only() {
    // Prompt and request-shape flags belong to teachers: aspect generation refuses them instead
    // of ignoring them.
    for flag in [
        ["--yes-token", "oui"],
        ["--concurrency", "4"],
        ["--prompt-template", "{question}"],
    ] {
        let out = makd()
            .args([
                "aspects",
                "generate",
                "--classes",
                "a,b",
                "--endpoint",
                "http://127.0.0.1:9/v1",
                "-o",
                "/tmp/never.json",
            ])
            .args(flag)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag:?}: {err}");
        assert!(err.contains("unexpected argument"), "{flag:?}: {err}");
    }
}
