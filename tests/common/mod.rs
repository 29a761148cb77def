//! Helpers shared by the integration tests: run the `makd` binary like a user does.

#![allow(dead_code)]

pub mod reference;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn makd() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_makd"));
    c.current_dir(repo());
    c
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Run and require success; the panic message carries stderr.
pub fn ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("spawn makd");
    assert!(
        out.status.success(),
        "{cmd:?} failed with {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Run and require failure with exit code 2 (a user error); returns stderr.
pub fn user_error(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn makd");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{cmd:?}: expected exit 2, got {:?}\nstderr:\n{err}",
        out.status.code()
    );
    assert!(
        !err.contains("panicked"),
        "panic instead of an error:\n{err}"
    );
    assert!(err.contains("hint:"), "error without a hint:\n{err}");
    err
}

pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(
        &std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

pub fn fashion_mnist_installed() -> bool {
    Path::new("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists()
}

/// Fashion-MNIST is installed by scripts/test; a test that needs it fails loudly without it.
pub fn require_fashion_mnist() {
    assert!(
        fashion_mnist_installed(),
        "Fashion-MNIST is missing: run scripts/test (it installs dataset-fashion-mnist)"
    );
}

/// Label a Fashion-MNIST split with the shipped aspect set and its per-class annotation table
/// (`extra` flags, e.g. `["--mode", "class"]`, go before `--out`).
pub fn label_fashion_mnist_table(split: &str, out: &Path, extra: &[&str]) {
    label_fashion_mnist_with(
        split,
        &repo().join("examples/fashion-mnist/aspects.json"),
        &repo().join("examples/fashion-mnist/aspect_table.csv"),
        out,
        extra,
    );
}

/// Label a Fashion-MNIST split with the table teacher, from a given aspect set and table.
pub fn label_fashion_mnist_with(
    split: &str,
    aspects: &Path,
    table: &Path,
    out: &Path,
    extra: &[&str],
) {
    ok(makd()
        .args([
            "label",
            "--dataset",
            "fashion-mnist",
            "--split",
            split,
            "--aspects",
        ])
        .arg(aspects)
        .args(["--backend", "table", "--table"])
        .arg(table)
        .args(extra)
        .arg("--out")
        .arg(out));
}

/// A small ImageFolder at `root`: `per_class` 8×8 gray PNGs per class in `train/` and half as
/// many (at least one) in `test/`, each class drawn with its own stripe pattern.
pub fn tiny_imagefolder(root: &Path, classes: &[&str], per_class: usize) {
    for (split, n) in [("train", per_class), ("test", (per_class / 2).max(1))] {
        for (k, class) in classes.iter().enumerate() {
            let dir = root.join(split).join(class);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..n {
                let img = image::GrayImage::from_fn(8, 8, |x, y| {
                    let stripe = (x as usize + k * y as usize).is_multiple_of(k + 2);
                    image::Luma([if stripe { 220 } else { (i * 7 % 40) as u8 }])
                });
                img.save(dir.join(format!("{i:03}.png"))).unwrap();
            }
        }
    }
}

/// The fields of a `metrics.jsonl` line that are wall-clock readings, not results: two runs of
/// the same config agree on everything else.
pub const WALL_CLOCK_FIELDS: [&str; 3] = ["seconds", "images_per_s", "loader_wait_s"];

/// A `metrics.jsonl` line without its [`WALL_CLOCK_FIELDS`].
pub fn without_wall_clock(line: &str) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
    let o = v.as_object_mut().unwrap();
    for k in WALL_CLOCK_FIELDS {
        o.remove(k);
    }
    v
}
