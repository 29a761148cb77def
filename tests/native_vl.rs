//! The native Qwen3-VL teacher against Hugging Face transformers.
//!
//! `tests/fixtures/qwen3vl/` holds a tiny random Qwen3-VL in the Hugging Face layout and the
//! reference outputs of `Qwen3VLForConditionalGeneration` (float32, eager attention) for 3 images
//! × 3 questions and one prompt with a system message, made once by `generate.py` in that folder.
//! Here the same folder is loaded by `makd`'s own code: the processor's token ids and pixel values
//! must be equal, the next-token log-probabilities within 1e-3, and the prefix-shared batch path
//! within 1e-4 of running each prompt in full.

mod common;

use candle_core::{DType, IndexOp, Tensor};
use common::reference::{answer_variants, max_diff, p_yes, p_yes_over, Reference};
use common::{makd, ok, repo, user_error};
use makd::teacher::native::vl::{VlOptions, VlTeacher};
use makd::teacher::Subject;
use std::path::PathBuf;

fn fixture() -> PathBuf {
    repo().join("tests/fixtures/qwen3vl")
}

fn reference() -> Reference {
    Reference::load(fixture())
}

impl Reference {
    /// The reference log-softmax of a pair's last-position logits.
    fn logprobs(&self, name: &str) -> Vec<f32> {
        candle_nn::ops::log_softmax(self.t(name), 0)
            .unwrap()
            .to_vec1()
            .unwrap()
    }
}

fn teacher(dtype: DType, system: Option<&str>) -> VlTeacher {
    VlTeacher::load(&VlOptions {
        model_dir: fixture(),
        dtype,
        system: system.map(str::to_string),
        ..Default::default()
    })
    .unwrap()
}

#[test]
fn processor_and_tokenizer_match_transformers() {
    let r = reference();
    let t = teacher(DType::F32, None);
    for i in 0..3 {
        let s = r.image(i);
        let (patches, grid, n) = t.image_input(&s.image).unwrap();
        let want = r.t(&format!("pixel_values_{i}"));
        assert_eq!(
            want.dims(),
            &[patches.len() / want.dim(1).unwrap(), want.dim(1).unwrap()]
        );
        assert_eq!(
            max_diff(&patches, &want.flatten_all().unwrap().to_vec1().unwrap()),
            0.0,
            "image {i}: pixel values"
        );
        let g: Vec<usize> = r
            .t(&format!("grid_{i}"))
            .i(0)
            .unwrap()
            .to_vec1::<i64>()
            .unwrap()
            .iter()
            .map(|&x| x as usize)
            .collect();
        assert_eq!(grid.to_vec(), g, "image {i}: grid");
        for (j, q) in r.questions().iter().enumerate() {
            let ids = t.tokenizer.encode(&t.prompt_text("", q, n), false);
            assert_eq!(
                ids,
                r.ids(&format!("ids_{i}_{j}")),
                "pair {i},{j}: token ids"
            );
        }
    }
    let sys = r.json["system"]["system_prompt"].as_str().unwrap();
    let ts = teacher(DType::F32, Some(sys));
    let (_, _, n) = ts.image_input(&r.image(0).image).unwrap();
    let ids = ts
        .tokenizer
        .encode(&ts.prompt_text("", &r.questions()[0], n), false);
    assert_eq!(ids, r.ids("ids_sys"));
}

#[test]
fn vision_tower_and_positions_match_transformers() {
    let r = reference();
    let t = teacher(DType::F32, None);
    let (patches, grid, n) = t.image_input(&r.image(0).image).unwrap();
    let v = t.model.encode_image(&patches, grid).unwrap();
    let flat = |x: &Tensor| x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let d = max_diff(&flat(&v.embeds), &flat(r.t("image_embeds_0_0")));
    assert!(d < 1e-4, "merged image embeddings: max |Δ| {d}");
    for (k, f) in v.deepstack.iter().enumerate() {
        let d = max_diff(&flat(f), &flat(r.t(&format!("deepstack_{k}_0_0"))));
        assert!(d < 1e-4, "deepstack feature {k}: max |Δ| {d}");
    }
    let ids = t
        .tokenizer
        .encode(&t.prompt_text("", &r.questions()[0], n), false);
    let (pos, _) = t.model.positions(&ids, Some(grid)).unwrap();
    let want = r.t("position_ids_0_0").to_dtype(DType::I64).unwrap();
    for axis in 0..3 {
        let w: Vec<u32> = want
            .i(axis)
            .unwrap()
            .to_vec1::<i64>()
            .unwrap()
            .iter()
            .map(|&x| x as u32)
            .collect();
        let got: Vec<u32> = pos.iter().map(|p| p[axis]).collect();
        assert_eq!(got, w, "MRoPE axis {axis}");
    }
}

#[test]
fn logprobs_match_transformers_within_1e3_and_sharing_changes_nothing() {
    let r = reference();
    let t = teacher(DType::F32, None);
    let yes = r.json["yes_no"]["yes_id"].as_u64().unwrap() as usize;
    let no = r.json["yes_no"]["no_id"].as_u64().unwrap() as usize;
    let qs = r.questions();
    let qs: Vec<&str> = qs.iter().map(String::as_str).collect();
    let mut p_spread = Vec::new();
    let (mut worst_ref, mut worst_share) = (0f32, 0f32);
    for i in 0..3 {
        let s = r.image(i);
        let full = t.question_logprobs(Subject::Image(&s), &qs, false).unwrap();
        let shared = t.question_logprobs(Subject::Image(&s), &qs, true).unwrap();
        for j in 0..qs.len() {
            let want = r.logprobs(&format!("logits_{i}_{j}"));
            let d = max_diff(&full[j], &want);
            assert!(
                d < 1e-3,
                "pair {i},{j}: max |Δ logprob| vs transformers {d}"
            );
            worst_ref = worst_ref.max(d);
            let d = max_diff(&shared[j], &full[j]);
            assert!(d < 1e-4, "pair {i},{j}: shared vs unshared max |Δ| {d}");
            worst_share = worst_share.max(d);
            let (pw, pg) = (p_yes(&want, yes, no), p_yes(&shared[j], yes, no));
            assert!((pw - pg).abs() < 1e-4, "pair {i},{j}: P(yes) {pg} vs {pw}");
            p_spread.push(pw);
        }
    }
    eprintln!(
        "max |Δ logprob|: vs transformers {worst_ref:.2e}, shared vs unshared {worst_share:.2e}"
    );
    // The fixture is only a test if the answers differ between pairs.
    let (lo, hi) = p_spread
        .iter()
        .fold((1f32, 0f32), |(l, h), &p| (l.min(p), h.max(p)));
    assert!(
        hi - lo > 0.3,
        "reference P(yes) spread {lo}..{hi} too narrow"
    );

    let sys = r.json["system"]["system_prompt"].as_str().unwrap();
    let ts = teacher(DType::F32, Some(sys));
    let lp = ts
        .question_logprobs(Subject::Image(&r.image(0)), &qs[..1], true)
        .unwrap();
    let d = max_diff(&lp[0], &r.logprobs("logits_sys"));
    assert!(d < 1e-3, "system prompt: max |Δ logprob| {d}");
}

#[test]
fn bf16_stays_close_to_the_f32_reference() {
    let r = reference();
    let t = teacher(DType::BF16, None);
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
            let want = r.logprobs(&format!("logits_{i}_{j}"));
            worst = worst.max((p_yes(row, yes, no) - p_yes(&want, yes, no)).abs());
        }
    }
    eprintln!("bf16: max |Δ P(yes)| vs the f32 reference {worst:.3}");
    assert!(worst < 0.05, "bf16 P(yes) off by up to {worst}");
}

/// `makd label --backend native` through the binary: the store holds the reference P(yes).
#[test]
fn label_command_writes_the_reference_answers() {
    let r = reference();
    let tmp = tempfile::tempdir().unwrap();
    let (dataset, aspects) = r.label_inputs(tmp.path());
    let store = tmp.path().join("scores");
    ok(makd()
        .args(["label", "--backend", "native", "--model-dir"])
        .arg(fixture())
        .args(["--dataset", &dataset, "--aspects"])
        .arg(&aspects)
        .arg("--out")
        .arg(&store));
    let s = makd::scores::ScoreStore::open(&store).unwrap();
    assert_eq!(s.manifest.teacher.backend, "native");
    // The vocabulary's Yes and No spellings (`Yes`, `ĠYes`, `YES`, …; here 5 + 5).
    let variants = answer_variants(&fixture().join("tokenizer.json"));
    assert_eq!((variants.0.len(), variants.1.len()), (5, 5));
    for (i, id) in s.manifest.image_ids.iter().enumerate() {
        let img = r.image_index(id);
        for j in 0..3 {
            // Every Yes spelling against every No spelling, from the reference distribution.
            let want = p_yes_over(&r.logprobs(&format!("logits_{img}_{j}")), &variants);
            let got = s.p_yes_row(i)[j];
            assert!((got - want).abs() < 1e-4, "{id} q{j}: {got} vs {want}");
        }
    }

    // A folder that is not a model: a user error naming what is missing.
    let err = user_error(
        makd()
            .args(["label", "--backend", "native", "--model-dir"])
            .arg(tmp.path())
            .args(["--dataset", &dataset, "--aspects"])
            .arg(&aspects)
            .arg("--out")
            .arg(tmp.path().join("s2")),
    );
    assert!(err.contains("tokenizer.json is missing"), "{err}");
}

/// Class mode (no image): the class sentence joins the shared prefix; sharing changes nothing.
#[test]
fn class_mode_shares_the_class_sentence() {
    let r = reference();
    let t = VlTeacher::load(&VlOptions {
        model_dir: fixture(),
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
    assert!(
        text.starts_with("<|im_start|>user\nConsider a typical image of a coat. Does the object"),
        "{text}"
    );
    assert!(!text.contains("<|vision_start|>"));
}
