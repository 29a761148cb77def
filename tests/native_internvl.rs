//! The native InternVL teacher against Hugging Face transformers, in both checkpoint layouts.
//!
//! `tests/fixtures/internvl/` holds one tiny random InternVL twice — `hf/` (transformers'
//! `InternVLForConditionalGeneration` layout) and `original/` (OpenGVLab's `InternVLChatModel`
//! layout, the same tensors renamed) — with transformers' reference outputs (float32, eager
//! attention) for 3 images × 3 questions, made once by `generate.py` there (see its NOTES.md).
//! Here both folders are loaded by `makd`'s own code: the tiles must equal the processor's level
//! for level, the vision tower and projector match to 1e-4, the token ids exactly, the next-token
//! log-probabilities within 1e-3, the prefix-shared path within 1e-4 of full prompts, and the two
//! layouts must give the same numbers.

mod common;

use candle_core::{DType, Tensor};
use common::reference::{answer_variants, max_diff, p_yes, p_yes_over, Reference};
use common::{makd, ok, repo, user_error};
use makd::data::{RawImage, Sample};
use makd::teacher::native::internvl::{InternVlConfig, Layout, IMAGENET_MEAN, IMAGENET_STD};
use makd::teacher::native::internvl_teacher::InternVlTeacher;
use makd::teacher::native::vl::{detect, Family, VlOptions};
use makd::teacher::Subject;
use std::path::PathBuf;

fn fixture() -> PathBuf {
    repo().join("tests/fixtures/internvl")
}

fn reference() -> Reference {
    Reference::load(fixture())
}

impl Reference {
    fn flat(&self, name: &str) -> Vec<f32> {
        flat(self.t(name))
    }
}

fn decode(p: &std::path::Path) -> RawImage {
    makd::data::imagefolder::decode_file(p).unwrap()
}

fn flat(x: &Tensor) -> Vec<f32> {
    x.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn teacher(layout: &str, system: Option<&str>) -> InternVlTeacher {
    InternVlTeacher::load(&VlOptions {
        model_dir: fixture().join(layout),
        system: system.map(str::to_string),
        ..Default::default()
    })
    .unwrap()
}

#[test]
fn both_layouts_are_detected_and_others_refused() {
    assert_eq!(
        detect(&fixture().join("hf")).unwrap(),
        Family::InternVl(Layout::Hf)
    );
    assert_eq!(
        detect(&fixture().join("original")).unwrap(),
        Family::InternVl(Layout::Original)
    );
    assert_eq!(
        detect(&repo().join("tests/fixtures/qwen3vl")).unwrap(),
        Family::Qwen3Vl
    );
    let cfg = common::read_json(&fixture().join("original/config.json"));
    for (pointer, value, needle) in [
        (
            "/architectures",
            serde_json::json!(["LlavaForConditionalGeneration"]),
            "not InternVLChatModel",
        ),
        (
            "/llm_config/architectures",
            serde_json::json!(["InternLM2ForCausalLM"]),
            "not Qwen2",
        ),
        ("/ps_version", serde_json::json!("v1"), "ps_version"),
        (
            "/downsample_ratio",
            serde_json::json!(0.25),
            "downsample_ratio",
        ),
        (
            "/vision_config/qk_normalization",
            serde_json::json!(true),
            "normalises q and k",
        ),
        ("/select_layer", serde_json::json!(-9), "select_layer"),
        (
            "/vision_config/num_attention_heads",
            serde_json::json!(0),
            "num_attention_heads` is 0",
        ),
    ] {
        let mut bad = cfg.clone();
        *bad.pointer_mut(pointer).unwrap() = value;
        let err = InternVlConfig::from_json(&bad, "c").unwrap_err().report();
        assert!(err.contains(needle), "{pointer}: {err}");
    }
}

/// The tiles (grid, resize, crop, thumbnail) equal the -hf processor's level for level; the
/// original pipeline (Pillow's bicubic) is within 2 levels of them; the normalisation is
/// torchvision's fused formula, bit for bit.
#[test]
fn tiles_equal_the_processors() {
    let r = reference();
    let hf = teacher("hf", None);
    let orig = teacher("original", None);
    // The original layout's settings (config.json, ImageNet constants) equal the -hf file's.
    assert_eq!(hf.preprocess, orig.preprocess);
    let mean: Vec<f32> = IMAGENET_MEAN.iter().map(|m| m * 255.0).collect();
    let std: Vec<f32> = IMAGENET_STD.iter().map(|s| s * 255.0).collect();
    for i in 0..3 {
        let img = r.image(i).image;
        let tiles = hf.preprocess.tiles_u8(&img).unwrap();
        let t = &r.json["tiling"][i];
        assert_eq!(tiles.len() as u64, t["num_tiles"].as_u64().unwrap());
        let (w, h) = (img.width as usize, img.height as usize);
        let (cols, rows) = hf.preprocess.grid(w, h);
        assert_eq!(
            serde_json::json!([cols, rows]),
            t["grid_cols_rows"],
            "image {i}: grid"
        );
        for (k, tile) in tiles.iter().enumerate() {
            let want = decode(&fixture().join(t["hf_tiles"][k].as_str().unwrap()));
            assert_eq!((want.width, want.height, want.channels), (448, 448, 3));
            assert!(tile == &want.pixels, "image {i} tile {k}: pixels differ");
            let o = decode(&fixture().join(t["orig_tiles"][k].as_str().unwrap()));
            let d = tile
                .iter()
                .zip(&o.pixels)
                .map(|(a, b)| a.abs_diff(*b))
                .max()
                .unwrap();
            assert!(d <= 2, "image {i} tile {k}: {d} levels from Pillow's");
        }
        let (px, n) = hf.preprocess.pixel_values(&img).unwrap();
        assert_eq!(n, tiles.len());
        for (k, tile) in tiles.iter().enumerate() {
            for ch in 0..3 {
                for (y, &l) in tile.iter().skip(ch).step_by(3).enumerate() {
                    let want = (l as f32 - mean[ch]) / std[ch];
                    let got = px[(k * 3 + ch) * 448 * 448 + y];
                    assert!(
                        got.to_bits() == want.to_bits(),
                        "image {i} tile {k} ch {ch}: {got} vs {want}"
                    );
                }
            }
        }
    }
}

#[test]
fn vision_tower_projector_and_token_ids_match_transformers() {
    let r = reference();
    let qs = r.questions();
    for layout in ["hf", "original"] {
        let t = teacher(layout, None);
        let mut worst = (0f32, 0f32);
        for i in 0..3 {
            let (px, tiles, n) = t.image_input(&r.image(i).image).unwrap();
            let f = t.model.vision_features(&px, tiles).unwrap();
            let want = r.t(&format!("vision_out_{i}")).narrow(1, 1, 1024).unwrap();
            let d = max_diff(&flat(&f), &flat(&want));
            assert!(d < 1e-4, "{layout} image {i}: vision tower max |Δ| {d}");
            worst.0 = worst.0.max(d);
            let e = t.model.project(&f).unwrap();
            let d = max_diff(&flat(&e), &r.flat(&format!("image_embeds_{i}")));
            assert!(d < 1e-4, "{layout} image {i}: projector max |Δ| {d}");
            worst.1 = worst.1.max(d);
            for (j, q) in qs.iter().enumerate() {
                let ids = t.tokenizer.encode(&t.prompt_text("", q, n), false);
                assert_eq!(
                    ids,
                    r.ids(&format!("ids_{i}_{j}")),
                    "{layout} pair {i},{j}: ids"
                );
            }
        }
        eprintln!(
            "{layout}: max |Δ| vision tower {:.2e}, projector {:.2e}",
            worst.0, worst.1
        );
        assert_eq!(
            t.system(),
            r.json["default_system"].as_str(),
            "{layout}: the template's default system message"
        );
        let sys = r.json["system"]["system_prompt"].as_str().unwrap();
        let ts = teacher(layout, Some(sys));
        let (_, _, n) = ts.image_input(&r.image(0).image).unwrap();
        let ids = ts.tokenizer.encode(&ts.prompt_text("", &qs[0], n), false);
        assert_eq!(ids, r.ids("ids_sys"), "{layout}: ids with a system message");
    }
}

#[test]
fn logprobs_match_transformers_in_both_layouts_and_sharing_changes_nothing() {
    let r = reference();
    let yes = r.json["yes_no"]["yes_id"].as_u64().unwrap() as usize;
    let no = r.json["yes_no"]["no_id"].as_u64().unwrap() as usize;
    let qs = r.questions();
    let qs: Vec<&str> = qs.iter().map(String::as_str).collect();
    let mut by_layout = Vec::new();
    for layout in ["hf", "original"] {
        let t = teacher(layout, None);
        let (mut worst_ref, mut worst_share, mut worst_p) = (0f32, 0f32, 0f32);
        let mut rows = Vec::new();
        for i in 0..3 {
            let s = r.image(i);
            let full = t.question_logprobs(Subject::Image(&s), &qs, false).unwrap();
            let shared = t.question_logprobs(Subject::Image(&s), &qs, true).unwrap();
            for j in 0..qs.len() {
                let want = r.flat(&format!("logprobs_{i}_{j}"));
                let d = max_diff(&full[j], &want);
                assert!(d < 1e-3, "{layout} pair {i},{j}: max |Δ logprob| {d}");
                worst_ref = worst_ref.max(d);
                let d = max_diff(&shared[j], &full[j]);
                assert!(d < 1e-4, "{layout} pair {i},{j}: shared vs full {d}");
                worst_share = worst_share.max(d);
                let pw = r.json["pairs"][i * 3 + j]["p_yes"].as_f64().unwrap() as f32;
                let pg = p_yes(&shared[j], yes, no);
                assert!(
                    (pw - pg).abs() < 1e-4,
                    "{layout} {i},{j}: P(yes) {pg} vs {pw}"
                );
                worst_p = worst_p.max((pw - pg).abs());
            }
            rows.extend(shared);
        }
        eprintln!(
            "{layout}: max |Δ logprob| vs transformers {worst_ref:.2e}, shared vs full \
             {worst_share:.2e}, max |Δ P(yes)| {worst_p:.2e}"
        );
        let sys = r.json["system"]["system_prompt"].as_str().unwrap();
        let ts = teacher(layout, Some(sys));
        let lp = ts
            .question_logprobs(Subject::Image(&r.image(0)), &qs[..1], true)
            .unwrap();
        let d = max_diff(&lp[0], &r.flat("logprobs_sys"));
        assert!(d < 1e-3, "{layout} system prompt: max |Δ logprob| {d}");
        by_layout.push(rows);
    }
    let d = by_layout[0]
        .iter()
        .zip(&by_layout[1])
        .map(|(a, b)| max_diff(a, b))
        .fold(0f32, f32::max);
    eprintln!("hf vs original layout: max |Δ logprob| {d:.2e}");
    assert!(d < 1e-6, "the two layouts differ by {d}");
    // The fixture is only a test if the answers differ between pairs.
    let lo = r.json["p_yes_min"].as_f64().unwrap();
    let hi = r.json["p_yes_max"].as_f64().unwrap();
    assert!(
        hi - lo > 0.3,
        "reference P(yes) spread {lo}..{hi} too narrow"
    );
}

#[test]
fn bf16_stays_close_to_the_f32_reference() {
    let r = reference();
    let t = InternVlTeacher::load(&VlOptions {
        model_dir: fixture().join("hf"),
        dtype: DType::BF16,
        ..Default::default()
    })
    .unwrap();
    let yes = r.json["yes_no"]["yes_id"].as_u64().unwrap() as usize;
    let no = r.json["yes_no"]["no_id"].as_u64().unwrap() as usize;
    let qs = r.questions();
    let qs: Vec<&str> = qs.iter().map(String::as_str).collect();
    let mut worst = 0f32;
    for i in 0..3 {
        let rows = t
            .question_logprobs(Subject::Image(&r.image(i)), &qs, true)
            .unwrap();
        for (j, row) in rows.iter().enumerate() {
            let want = r.flat(&format!("logprobs_{i}_{j}"));
            worst = worst.max((p_yes(row, yes, no) - p_yes(&want, yes, no)).abs());
        }
    }
    eprintln!("bf16: max |Δ P(yes)| vs the f32 reference {worst:.3}");
    assert!(worst < 0.05, "bf16 P(yes) off by up to {worst}");
}

/// `makd label --backend native` through the binary, on both layouts: the store holds
/// transformers' P(yes) over every Yes/No spelling of the vocabulary.
#[test]
fn label_command_writes_the_reference_answers() {
    let r = reference();
    let tmp = tempfile::tempdir().unwrap();
    let (dataset, aspects) = r.label_inputs(tmp.path());
    let variants = answer_variants(&fixture().join("hf/tokenizer.json"));
    assert!(
        variants.0.len() >= 2 && variants.1.len() >= 2,
        "{variants:?}"
    );
    for layout in ["hf", "original"] {
        let store = tmp.path().join(format!("scores-{layout}"));
        ok(makd()
            .args(["label", "--backend", "native", "--model-dir"])
            .arg(fixture().join(layout))
            .args(["--dataset", &dataset, "--aspects"])
            .arg(&aspects)
            .arg("--out")
            .arg(&store));
        let s = makd::scores::ScoreStore::open(&store).unwrap();
        assert_eq!(s.manifest.teacher.backend, "native");
        for (i, id) in s.manifest.image_ids.iter().enumerate() {
            let img = r.image_index(id);
            for j in 0..3 {
                let want = p_yes_over(&r.flat(&format!("logprobs_{img}_{j}")), &variants);
                let got = s.p_yes_row(i)[j];
                assert!(
                    (got - want).abs() < 1e-4,
                    "{layout} {id} q{j}: {got} vs {want}"
                );
            }
        }
    }

    // A folder of another architecture: a user error saying what was found and what is run.
    let other = tmp.path().join("llava");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::copy(
        fixture().join("hf/tokenizer.json"),
        other.join("tokenizer.json"),
    )
    .unwrap();
    std::fs::write(
        other.join("config.json"),
        r#"{"architectures": ["LlavaForConditionalGeneration"], "model_type": "llava"}"#,
    )
    .unwrap();
    let err = user_error(
        makd()
            .args(["label", "--backend", "native", "--model-dir"])
            .arg(&other)
            .args(["--dataset", &dataset, "--aspects"])
            .arg(&aspects)
            .arg("--out")
            .arg(tmp.path().join("s2")),
    );
    assert!(
        err.contains("LlavaForConditionalGeneration") && err.contains("InternVLChatModel"),
        "{err}"
    );
}

/// `makd bench native --family internvl` runs the InternVL path: its tiles and 256 tokens per
/// tile, and the shared path agreeing with full prompts.
#[test]
fn bench_native_runs_internvl() {
    for (image, tiles) in [("448x448", 1), ("896x448", 3)] {
        let out = ok(makd().args([
            "bench",
            "native",
            "--family",
            "internvl",
            "--shape",
            "tiny",
            "--questions",
            "4",
            "--unshared",
            "2",
            "--image",
            image,
            "--json",
        ]));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["family"], "internvl");
        assert_eq!(v["tiles"], tiles, "{image}");
        assert_eq!(v["image_tokens"], 256 * tiles, "{image}");
        assert_eq!(v["questions"], 4);
        let d = v["max_abs_logprob_diff_shared_vs_unshared"]
            .as_f64()
            .unwrap();
        assert!(d < 1e-4, "{image}: shared vs unshared {d}");
        assert!(v["shared"]["pairs_per_s"].as_f64().unwrap() > 0.0);
    }
    let err = user_error(makd().args(["bench", "native", "--family", "internvl", "--shape", "2b"]));
    assert!(err.contains("Qwen3-VL-2B"), "{err}");
}

/// `makd bench native --family internvl --model-dir DIR` runs DIR's weights, not random ones:
/// its P(yes) per question is what the teacher loaded from DIR gives on the bench image, the
/// same for both layouts of the fixture, and not what random weights give. (bench/native_ratio.sh
/// relies on it to time transformers and makd on the very same model.)
#[test]
fn bench_native_runs_the_weights_of_model_dir() {
    let bench = |extra: &[&str]| -> serde_json::Value {
        let out = ok(makd()
            .args([
                "bench",
                "native",
                "--family",
                "internvl",
                "--questions",
                "3",
            ])
            .args(["--unshared", "1", "--image", "448x448", "--json"])
            .args(extra));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let p_yes = |v: &serde_json::Value| -> Vec<f64> {
        v["p_yes_yes_no"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_f64().unwrap())
            .collect()
    };
    let hf_dir = fixture().join("hf");
    let hf = bench(&["--model-dir", hf_dir.to_str().unwrap()]);
    assert_eq!(hf["shape"], "model-dir");
    assert_eq!(hf["weights"], hf_dir.display().to_string());
    let orig = bench(&["--model-dir", fixture().join("original").to_str().unwrap()]);
    let random = bench(&["--shape", "tiny"]);
    assert_eq!(random["weights"], "random");

    // The bench image (makd bench native's xorshift pixels) through the teacher loaded here.
    let mut state = 0x9E3779B97F4A7C15u64;
    let pixels = (0..448 * 448 * 3)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 56) as u8
        })
        .collect();
    let sample = Sample {
        id: "bench".into(),
        image: RawImage {
            width: 448,
            height: 448,
            channels: 3,
            pixels,
        },
        label: 0,
    };
    let t = InternVlTeacher::load(&VlOptions {
        model_dir: hf_dir.clone(),
        ..Default::default()
    })
    .unwrap();
    let aspects: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("examples/fashion-mnist/aspects.json")).unwrap(),
    )
    .unwrap();
    let qs: Vec<&str> = aspects["questions"].as_array().unwrap()[..3]
        .iter()
        .map(|q| q["text"].as_str().unwrap())
        .collect();
    let rows = t
        .question_logprobs(Subject::Image(&sample), &qs, false)
        .unwrap();
    let (yes, no) = (
        t.tokenizer.token_id("Yes").unwrap() as usize,
        t.tokenizer.token_id("No").unwrap() as usize,
    );
    let (hf_p, orig_p, random_p) = (p_yes(&hf), p_yes(&orig), p_yes(&random));
    assert_eq!(hf_p.len(), 3);
    for (j, lp) in rows.iter().enumerate() {
        let want = 1.0 / (1.0 + ((lp[no] - lp[yes]) as f64).exp());
        assert!(
            (hf_p[j] - want).abs() < 1e-4,
            "question {j}: -hf {} vs {want}",
            hf_p[j]
        );
        assert!(
            (orig_p[j] - want).abs() < 1e-4,
            "question {j}: original {} vs {want}",
            orig_p[j]
        );
    }
    let moved = hf_p
        .iter()
        .zip(&random_p)
        .map(|(a, b)| (a - b).abs())
        .fold(0f64, f64::max);
    assert!(
        moved > 1e-2,
        "random weights give the same P(yes): {random_p:?} vs {hf_p:?}"
    );

    let err = user_error(
        makd()
            .args(["bench", "native", "--family", "qwen3-vl", "--model-dir"])
            .arg(&hf_dir),
    );
    assert!(err.contains("InternVL folders only"), "{err}");
    let err = user_error(
        makd()
            .args([
                "bench",
                "native",
                "--family",
                "internvl",
                "--shape",
                "tiny",
                "--model-dir",
            ])
            .arg(&hf_dir),
    );
    assert!(err.contains("--shape"), "{err}");
}

/// Class mode (no image): the system message and the class sentence join the shared prefix;
/// sharing changes nothing.
#[test]
fn class_mode_shares_the_class_sentence() {
    let r = reference();
    let t = InternVlTeacher::load(&VlOptions {
        model_dir: fixture().join("original"),
        mode: makd::teacher::Mode::Class,
        ..Default::default()
    })
    .unwrap();
    let qs = r.questions();
    let qs: Vec<&str> = qs.iter().map(String::as_str).collect();
    let full = t
        .question_logprobs(Subject::Class("coat"), &qs, false)
        .unwrap();
    let shared = t
        .question_logprobs(Subject::Class("coat"), &qs, true)
        .unwrap();
    for j in 0..qs.len() {
        let d = max_diff(&full[j], &shared[j]);
        assert!(d < 1e-4, "question {j}: shared vs unshared max |Δ| {d}");
    }
    let text = t.prompt_text("coat", qs[0], 0);
    let sys = r.json["default_system"].as_str().unwrap();
    assert!(
        text.starts_with(&format!(
            "<|im_start|>system\n{sys}<|im_end|>\n<|im_start|>user\nConsider a typical image of a coat. Does"
        )),
        "{text}"
    );
    assert!(!text.contains("<img>"));
}
