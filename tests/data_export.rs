//! `makd data export` through the binary, on scenes over a tiny IDX dataset the test writes, and
//! the export read back as `coco:DIR/annotations.json`.

mod common;
use common::*;
use makd::data::detection;
use makd::data::Split;
use std::path::Path;

fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend_from_slice(data);
    b
}

/// 28×28 gray IDX files, 3 classes: 30 train images lit at 200 and 12 test images lit at 90, each
/// a rectangle whose place and size vary with the image.
fn tiny_idx(dir: &Path) {
    for (prefix, n, value) in [("train", 30u32, 200u8), ("t10k", 12, 90)] {
        let mut pixels = vec![0u8; (n * 28 * 28) as usize];
        for i in 0..n as usize {
            let img = &mut pixels[i * 784..(i + 1) * 784];
            for y in 2 + i % 6..20 + i % 7 {
                for x in 4 + i % 3..18 + i % 9 {
                    img[y * 28 + x] = value;
                }
            }
        }
        let labels: Vec<u8> = (0..n).map(|i| (i % 3) as u8).collect();
        std::fs::write(
            dir.join(format!("{prefix}-images-idx3-ubyte")),
            idx(&[n, 28, 28], &pixels),
        )
        .unwrap();
        std::fs::write(
            dir.join(format!("{prefix}-labels-idx1-ubyte")),
            idx(&[n], &labels),
        )
        .unwrap();
    }
    std::fs::write(dir.join("classes.txt"), "shoe\nbag\nhat\n").unwrap();
}

fn export(spec: &str, split: &str, out: &Path, extra: &[&str]) -> std::process::Command {
    let mut c = makd();
    c.args([
        "data",
        "export",
        "--dataset",
        spec,
        "--split",
        split,
        "--out",
    ])
    .arg(out)
    .args(extra);
    c
}

#[test]
fn export_round_trips_through_coco() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("idx");
    std::fs::create_dir(&data).unwrap();
    tiny_idx(&data);
    let spec = format!("scenes:idx:{}", data.display());
    let out = t.path().join("export");
    let stdout = ok(&mut export(&spec, "train", &out, &["--limit", "12"])).stdout;
    assert!(String::from_utf8_lossy(&stdout).contains("wrote 12 images"));

    let json = read_json(&out.join("annotations.json"));
    assert_eq!(json["images"].as_array().unwrap().len(), 12);
    assert_eq!(
        json["categories"][1],
        serde_json::json!({"id": 2, "name": "bag"})
    );
    assert_eq!(json["images"][0]["file_name"], "train/000001.png");
    let ann_ids: Vec<u64> = json["annotations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ann_ids, (1..=ann_ids.len() as u64).collect::<Vec<_>>());

    let scenes = makd::data::open_detection(&spec.parse().unwrap(), Split::Train).unwrap();
    assert_eq!(scenes.len(), 15, "half of 30 source images");
    let coco_spec = format!("coco:{}", out.join("annotations.json").display());
    for split in [Split::Train, Split::Test] {
        let back = makd::data::open_detection(&coco_spec.parse().unwrap(), split).unwrap();
        assert_eq!(back.len(), 12);
        assert_eq!(back.categories(), scenes.categories());
        for i in 0..12 {
            let (a, b) = (scenes.get(i).unwrap(), back.get(i).unwrap());
            assert_eq!(b.image_id, a.image_id);
            assert_eq!(back.file_name(i), scenes.file_name(i));
            assert_eq!(b.boxes, a.boxes, "image {i}");
            assert_eq!(b.image, a.image, "PNG is lossless");
        }
    }

    // The export can be replaced (stale images go), anything else is refused.
    ok(&mut export(&spec, "test", &out, &["--limit", "2"]));
    let names: Vec<_> = std::fs::read_dir(out.join("images"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names, ["test"]);
    assert_eq!(
        std::fs::read_dir(out.join("images/test")).unwrap().count(),
        2
    );
    let other = t.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("notes.txt"), "mine").unwrap();
    let err = user_error(&mut export(&spec, "train", &other, &[]));
    assert!(err.contains("not empty") && err.contains("other"), "{err}");
    assert!(other.join("notes.txt").exists() && !other.join("images").exists());
    let err = user_error(&mut export("voc:x", "train", &t.path().join("new"), &[]));
    assert!(err.contains("voc"), "{err}");
}

#[test]
fn train_and_test_scenes_come_from_their_own_files() {
    let t = tempfile::tempdir().unwrap();
    tiny_idx(t.path());
    let spec: detection::DetectionSpec = format!("scenes:{}", t.path().display()).parse().unwrap();
    for (split, lit) in [(Split::Train, 200u8), (Split::Test, 90)] {
        let ds = makd::data::open_detection(&spec, split).unwrap();
        for i in 0..ds.len() {
            let s = ds.get(i).unwrap();
            let max = s.image.pixels.iter().copied().max().unwrap();
            assert_eq!(max, lit, "{split} scene {i}");
        }
    }
}

#[test]
fn export_help_explains_every_flag() {
    let help = String::from_utf8(ok(makd().args(["data", "export", "--help"])).stdout).unwrap();
    for flag in [
        "--dataset",
        "--split",
        "--out",
        "--limit",
        "annotations.json",
        "earlier export",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
}

/// Measured figures on the real data: scene rendering speed and the open time of the views.
#[test]
#[ignore = "needs Fashion-MNIST; prints timings"]
fn scenes_speed_on_fashion_mnist() {
    require_fashion_mnist();
    let spec: detection::DetectionSpec = "scenes:fashion-mnist".parse().unwrap();
    let t0 = std::time::Instant::now();
    let ds = makd::data::open_detection(&spec, Split::Train).unwrap();
    let opened = t0.elapsed();
    let t0 = std::time::Instant::now();
    for i in 0..2000 {
        ds.get(i).unwrap();
    }
    let per_scene = t0.elapsed() / 2000;
    let t0 = std::time::Instant::now();
    let images = makd::data::open(&"scenes:fashion-mnist".parse().unwrap(), Split::Train).unwrap();
    let view = t0.elapsed();
    let t0 = std::time::Instant::now();
    let crops =
        makd::data::open(&"crops:scenes:fashion-mnist".parse().unwrap(), Split::Train).unwrap();
    let crops_open = t0.elapsed();
    eprintln!(
        "scenes: {} opened in {opened:?}; {per_scene:?} per scene; images view open {view:?}; \
         crops open {crops_open:?} ({} objects)",
        ds.len(),
        crops.len()
    );
    assert_eq!((ds.len(), images.len()), (30000, 30000));
    assert!(
        per_scene < std::time::Duration::from_millis(1),
        "{per_scene:?}"
    );
}

/// The label stage runs unchanged on a scene view (one sample per scene) and on its objects
/// (`crops:`, one sample per box): the store's ids are the image ids and `<image id>#<k>`.
#[test]
fn label_runs_on_scene_images_and_their_crops() {
    let t = tempfile::tempdir().unwrap();
    tiny_idx(t.path());
    // The shipped aspect set and table name Fashion-MNIST's classes; labels 0..2 use three of them.
    let names = makd::data::idx::FASHION_MNIST_CLASSES.join("\n");
    std::fs::write(t.path().join("classes.txt"), names).unwrap();
    let det = format!("scenes:idx:{}", t.path().display());
    for (spec, split) in [(det.clone(), "test"), (format!("crops:{det}@0.2"), "test")] {
        let out = t.path().join(format!("store-{}", spec.len()));
        ok(makd()
            .args(["label", "--dataset", &spec, "--split", split, "--aspects"])
            .arg(repo().join("examples/fashion-mnist/aspects.json"))
            .args(["--backend", "table", "--table"])
            .arg(repo().join("examples/fashion-mnist/aspect_table.csv"))
            .arg("--out")
            .arg(&out));
        let store = makd::scores::ScoreStore::open(&out).unwrap();
        let ds = makd::data::open(&spec.parse().unwrap(), Split::Test).unwrap();
        let ids: Vec<&str> = (0..ds.len()).map(|i| ds.id(i)).collect();
        assert_eq!(store.manifest.image_ids, ids, "{spec}");
        let scenes = makd::data::open_detection(&det.parse().unwrap(), Split::Test).unwrap();
        if spec.starts_with("crops:") {
            let boxes: usize = (0..scenes.len())
                .map(|i| scenes.boxes(i).unwrap().len())
                .sum();
            assert_eq!(ids.len(), boxes);
            assert!(ids.iter().all(|id| id.contains('#')));
        } else {
            assert_eq!(
                ids,
                (1..=scenes.len())
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
            );
        }
    }
}
