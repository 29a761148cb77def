//! `makd bench native`: the native Qwen3-VL teacher (or InternVL, `--family internvl`) with its
//! image prefix shared by all Q questions, against one full prompt per question, on a model of
//! realistic shape with random weights (speed does not depend on the values).
//!
//! Both paths run in this process on the same model, image and questions; the unshared path is
//! timed on the first `--unshared` questions only (its cost per pair does not depend on Q), and
//! its log-probabilities are compared with the shared path's as a check.

use crate::cli::teacher_args::DtypeArg;
use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device};
use makd::data::RawImage;
use makd::error::input;
use makd::teacher::native::qwen3_vl::{Qwen3Vl, Qwen3VlConfig};
use makd::teacher::native::tokenizer::Tokenizer;
use makd::teacher::native::vl::{shared_prefix_len, VlOptions, VlTeacher};
use makd::teacher::native::vl_image::VisionPreprocess;
use makd::teacher::Subject;
use std::path::PathBuf;
use std::time::Instant;

/// The questions asked: the shipped Fashion-MNIST aspect set.
const ASPECTS: &str = include_str!("../../../examples/fashion-mnist/aspects.json");
/// The tokenizer of the parity fixture (byte-level BPE with Qwen's special tokens). Its small
/// vocabulary splits English into more tokens than Qwen's own, so suffixes are longer than a real
/// Qwen3-VL's and the measured ratio errs low; pass `--tokenizer` with a real tokenizer.json.
const TOKENIZER: &str = include_str!("../../../tests/fixtures/qwen3vl/tokenizer.json");
/// Qwen3-VL's shipped preprocessor settings.
const PREPROCESSOR: &str = r#"{"patch_size": 16, "merge_size": 2, "temporal_patch_size": 2,
  "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "rescale_factor": 0.00392156862745098,
  "do_resize": true, "do_rescale": true, "do_normalize": true, "do_convert_rgb": true,
  "size": {"longest_edge": 16777216, "shortest_edge": 65536}}"#;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    /// Qwen3-VL.
    #[value(name = "qwen3-vl")]
    Qwen3Vl,
    /// InternVL2.5 (InternViT-300M + Qwen2), the paper's teacher family.
    Internvl,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// Qwen3-VL-2B: 1.7B text, 0.4B vision (`--family qwen3-vl`).
    #[value(name = "2b")]
    TwoB,
    /// InternVL2.5-1B: 0.5B text, 0.3B vision (`--family internvl`).
    #[value(name = "1b")]
    OneB,
    /// A smoke test.
    Tiny,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model family: `qwen3-vl` or `internvl`.
    #[arg(long, value_enum, default_value = "qwen3-vl")]
    family: Family,
    /// Model shape: `2b` (Qwen3-VL-2B), `1b` (InternVL2.5-1B) or `tiny` (a smoke test)
    /// [default: the family's real one].
    #[arg(long, value_enum)]
    shape: Option<Shape>,
    /// A config.json of the family whose shape to use instead of --shape (weights stay random).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// A tokenizer.json to count prompt tokens with [default: the parity fixture's].
    #[arg(long, value_name = "FILE")]
    tokenizer: Option<PathBuf>,
    /// `--family internvl`: an InternVL folder (either layout) whose weights, tokenizer, chat
    /// template and tiling to run instead of random weights, so that another implementation can
    /// be timed on the very same model (bench/native_ratio.sh).
    #[arg(long, value_name = "DIR")]
    model_dir: Option<PathBuf>,
    /// Questions per image for the shared path.
    #[arg(long, default_value_t = 50)]
    questions: usize,
    /// Questions timed on the unshared path (one full prompt each, image included).
    #[arg(long, default_value_t = 3)]
    unshared: usize,
    /// Image width and height in pixels (a random RGB image; resized as the HF processor would).
    #[arg(long, default_value = "448x448", value_parser = parse_size)]
    image: (u32, u32),
    /// `f32` or `bf16`.
    #[arg(long, value_enum, default_value_t = DtypeArg::F32)]
    dtype: DtypeArg,
    /// The machine's peak f32 GFLOP/s for the utilisation figure [default: measured, a
    /// register-only AVX-512 FMA loop on one thread × the logical CPUs].
    #[arg(long)]
    peak_gflops: Option<f64>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s.split_once('x').ok_or("expected WxH, e.g. 448x448")?;
    let p = |v: &str| {
        v.parse::<u32>()
            .map_err(|_| format!("{v:?} is not a pixel count"))
    };
    Ok((p(w)?, p(h)?))
}

pub fn run(a: Args) -> Result<()> {
    ensure!(
        a.questions >= 1 && a.unshared >= 1,
        "--questions and --unshared must be >= 1"
    );
    if a.family == Family::Internvl {
        return run_internvl(a);
    }
    if a.model_dir.is_some() {
        return Err(input(
            "--model-dir loads InternVL folders only",
            "--family qwen3-vl",
            "pass --family internvl, or --shape/--config for random Qwen3-VL weights",
        )
        .into());
    }
    let shape = a.shape.unwrap_or(Shape::TwoB);
    if shape == Shape::OneB {
        return Err(input(
            "--shape 1b is InternVL2.5-1B's",
            "--family qwen3-vl",
            "pass --family internvl, or --shape 2b|tiny",
        )
        .into());
    }
    let dtype = DType::from(a.dtype);
    let tokenizer = match &a.tokenizer {
        Some(p) => Tokenizer::from_hf_json(p)?,
        None => Tokenizer::from_hf_str(TOKENIZER, "the parity fixture's tokenizer.json")?,
    };
    let mut cfg = match (&a.config, shape) {
        (Some(p), _) => Qwen3VlConfig::from_file(p)?,
        (None, Shape::Tiny) => Qwen3VlConfig::tiny(),
        (None, _) => Qwen3VlConfig::qwen3_vl_2b(),
    };
    let shape_name = match (&a.config, shape) {
        (Some(_), _) => "config",
        (None, Shape::Tiny) => "tiny",
        (None, _) => "2b",
    };
    let dtype_name = match a.dtype {
        DtypeArg::F32 => "f32",
        DtypeArg::Bf16 => "bf16",
    };
    // The placeholder ids must be the tokenizer's.
    let id = |s: &str| {
        tokenizer
            .token_id(s)
            .with_context(|| format!("tokenizer has no {s}"))
    };
    cfg.image_token_id = id("<|image_pad|>")?;
    cfg.vision_start_token_id = id("<|vision_start|>")?;
    cfg.vision_end_token_id = id("<|vision_end|>")?;
    ensure!(
        tokenizer.len() <= cfg.vocab_size,
        "the tokenizer has more tokens than the model's vocabulary"
    );
    let (text_params, vision_params) = cfg.param_counts();
    let t = Instant::now();
    let model = Qwen3Vl::random(cfg.clone(), &Device::cuda_if_available(0)?, dtype, 0)?;
    let load_s = t.elapsed().as_secs_f64();
    let pre = VisionPreprocess::from_json(&serde_json::from_str(PREPROCESSOR)?, "bench")?;
    let teacher = VlTeacher::new(
        model,
        tokenizer,
        pre,
        &VlOptions {
            model_dir: "random".into(),
            dtype,
            ..Default::default()
        },
    )?;
    let (questions, sample) = bench_inputs(&a)?;
    let qs: Vec<&str> = questions.iter().map(String::as_str).collect();
    let (w, h) = a.image;
    let (patches, grid, img_tokens) = teacher.image_input(&sample.image)?;
    let n_patches = grid.iter().product::<usize>();

    let m = &teacher.model;
    let prompts = teacher.prompt_ids("", &qs, img_tokens);
    let times = time_paths(
        &prompts,
        a.unshared,
        || m.encode_image(&patches, grid),
        |ids, vision| m.prefill(ids, Some(vision)),
        |prefix, sufs| m.suffix_logprobs(prefix, sufs),
        |n, shared| teacher.question_logprobs(Subject::Image(&sample), &qs[..n], shared),
    )?;
    let (p, suffix_tokens) = (times.prefix_tokens, times.suffix_tokens);
    let (vision_s, prefix_s, suffix_s) = (times.vision_s, times.prefix_s, times.suffix_s);
    let prefill_flops = cfg.vision_flops(n_patches) + cfg.text_flops(p, 0, 1);
    let prefill_s = vision_s + prefix_s;
    let prefill_tps = p as f64 / prefix_s;
    let achieved = prefill_flops / prefill_s / 1e9;
    let peak = a
        .peak_gflops
        .or_else(makd::bench::peak::machine_peak_gflops);
    let suffix_gflops =
        cfg.text_flops(suffix_tokens / qs.len(), p, 1) * qs.len() as f64 / suffix_s / 1e9;
    // The work each path does per pair, by the same count: the ratio prefix sharing can give.
    let mean_suffix = suffix_tokens as f64 / qs.len() as f64;
    let vision_f = cfg.vision_flops(n_patches);
    let shared_pair_flops = (vision_f + cfg.text_flops(p, 0, 0)) / qs.len() as f64
        + cfg.text_flops(mean_suffix.round() as usize, p, 1);
    let unshared_pair_flops = vision_f + cfg.text_flops(p + mean_suffix.round() as usize, 0, 1);
    let flop_ratio = unshared_pair_flops / shared_pair_flops;
    let out = merged(
        times.json(),
        serde_json::json!({
            "shape": shape_name,
            "dtype": dtype_name,
            "text_params": text_params, "vision_params": vision_params,
            "threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            "image": format!("{w}x{h}"), "grid_thw": grid, "patches": n_patches, "image_tokens": img_tokens,
            "random_weights_s": load_s,
            "flop_ratio": flop_ratio,
            "prefill_tokens_per_s": prefill_tps,
            "prefill_gflops_per_s": achieved,
            "suffix_batch_gflops_per_s": suffix_gflops,
            "peak_gflops_per_s": peak,
            "prefill_fraction_of_peak": peak.map(|pk| achieved / pk),
            "peak_rss_mb": makd::bench::peak::peak_rss_mb(),
        }),
    );
    if a.json {
        println!("{out}");
    } else {
        println!(
            "Qwen3-VL shape {} ({:.2}B text + {:.2}B vision params, random, {}), image {w}x{h} → {} patches, {} image tokens",
            out["shape"].as_str().unwrap_or(""),
            text_params as f64 / 1e9,
            vision_params as f64 / 1e9,
            dtype_name,
            n_patches,
            img_tokens
        );
        times.print(Some(flop_ratio));
        println!(
            "prefill: {prefill_tps:.0} tokens/s; vision+prefix {achieved:.0} GFLOP/s{}; suffix batch {suffix_gflops:.0} GFLOP/s",
            peak.map(|pk| format!(" = {:.0}% of {pk:.0} GFLOP/s peak", 100.0 * achieved / pk))
                .unwrap_or_default()
        );
        times.print_check();
    }
    Ok(())
}

/// The InternVL parity fixture's tokenizer and shipped chat template.
const INTERNVL_TOKENIZER: &str = include_str!("../../../tests/fixtures/internvl/hf/tokenizer.json");
const INTERNVL_TEMPLATE: &str =
    include_str!("../../../tests/fixtures/internvl/hf/chat_template.jinja");

/// The questions of the shipped aspect set, in order.
/// What both families are timed on: the shipped aspect questions, cycled to `--questions`, and
/// one random `--image`.
fn bench_inputs(a: &Args) -> Result<(Vec<String>, makd::data::Sample)> {
    let all = aspect_questions()?;
    let questions = (0..a.questions)
        .map(|i| all[i % all.len()].clone())
        .collect();
    let (w, h) = a.image;
    let sample = makd::data::Sample {
        id: "bench".into(),
        image: random_image(w, h),
        label: 0,
    };
    Ok((questions, sample))
}

fn aspect_questions() -> Result<Vec<String>> {
    let aspects: serde_json::Value = serde_json::from_str(ASPECTS)?;
    Ok(aspects["questions"]
        .as_array()
        .context("aspects.json has no questions")?
        .iter()
        .filter_map(|q| q["text"].as_str().map(str::to_string))
        .collect())
}

fn random_image(w: u32, h: u32) -> RawImage {
    let mut state = 0x9E3779B97F4A7C15u64;
    let pixels: Vec<u8> = (0..w as usize * h as usize * 3)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 56) as u8
        })
        .collect();
    RawImage {
        width: w,
        height: h,
        channels: 3,
        pixels,
    }
}

/// `--family internvl`: the same comparison on InternVL (its tiles, its chat template with the
/// default system message, 256 tokens per tile).
fn run_internvl(a: Args) -> Result<()> {
    use makd::teacher::native::internvl_teacher::InternVlTeacher;
    if a.model_dir.is_some() && (a.shape.is_some() || a.config.is_some() || a.tokenizer.is_some()) {
        return Err(input(
            "--model-dir brings its own shape and tokenizer",
            "--shape/--config/--tokenizer",
            "drop them, or drop --model-dir for random weights",
        )
        .into());
    }
    let dtype = DType::from(a.dtype);
    let t = Instant::now();
    let (teacher, shape_name, weights) = match &a.model_dir {
        Some(dir) => {
            let teacher = InternVlTeacher::load(&VlOptions {
                model_dir: dir.clone(),
                dtype,
                ..Default::default()
            })?;
            (teacher, "model-dir", dir.display().to_string())
        }
        None => {
            let (teacher, shape_name) = random_internvl(&a, dtype)?;
            (teacher, shape_name, "random".to_string())
        }
    };
    let load_s = t.elapsed().as_secs_f64();
    let (questions, sample) = bench_inputs(&a)?;
    let qs: Vec<&str> = questions.iter().map(String::as_str).collect();
    let (w, h) = a.image;
    let (px, tiles, img_tokens) = teacher.image_input(&sample.image)?;
    let m = &teacher.model;
    let it = teacher.image_token_id;
    let prompts = teacher.prompt_ids("", &qs, img_tokens);
    let times = time_paths(
        &prompts,
        a.unshared,
        || m.encode_image(&px, tiles),
        |ids, vision| m.prefill(ids, Some(vision), it),
        |prefix, sufs| m.suffix_logprobs(prefix, sufs),
        |n, shared| teacher.question_logprobs(Subject::Image(&sample), &qs[..n], shared),
    )?;
    let dtype_name = match a.dtype {
        DtypeArg::F32 => "f32",
        DtypeArg::Bf16 => "bf16",
    };
    // softmax over the single `Yes` and `No` tokens per question: what another implementation
    // given the same folder must reproduce, proving both ran the same weights.
    let yes_no = ["Yes", "No"].map(|s| teacher.tokenizer.token_id(s));
    let p_yes: Option<Vec<f32>> = match yes_no {
        [Some(y), Some(n)] => Some(
            times
                .shared
                .iter()
                .map(|lp| 1.0 / (1.0 + (lp[n as usize] - lp[y as usize]).exp()))
                .collect(),
        ),
        _ => None,
    };
    let out = merged(
        times.json(),
        serde_json::json!({
            "family": "internvl",
            "shape": shape_name,
            "weights": weights,
            "dtype": dtype_name,
            // rayon's pool runs the matmuls (RAYON_NUM_THREADS sets it).
            "threads": rayon::current_num_threads(),
            "p_yes_yes_no": p_yes,
            "image": format!("{w}x{h}"), "tiles": tiles, "image_tokens": img_tokens,
            "random_weights_s": load_s,
            "peak_rss_mb": makd::bench::peak::peak_rss_mb(),
        }),
    );
    if a.json {
        println!("{out}");
    } else {
        println!(
            "InternVL shape {shape_name} (weights: {weights}, {dtype_name}), image {w}x{h} → {tiles} tiles, {img_tokens} image tokens"
        );
        times.print(None);
        times.print_check();
    }
    Ok(())
}

/// Both paths timed on one image's prompts, the same way for every family.
struct PathTimes {
    questions: usize,
    prefix_tokens: usize,
    suffix_tokens: usize,
    /// The shared path's phases: vision tower, prefix prefill, the packed suffix batch.
    vision_s: f64,
    prefix_s: f64,
    suffix_s: f64,
    /// The teacher's own calls: shared over every question, unshared over the first
    /// `unshared_timed`, then those full prompts again with the image encoded once.
    shared: Vec<Vec<f32>>,
    shared_s: f64,
    unshared_timed: usize,
    unshared_s: f64,
    unshared_text_s: f64,
    max_diff: f32,
}

/// Phase timings of the shared path (`encode`, `prefill` of the common prefix, `suffix` of the
/// remainders), then the whole of it as the teacher runs it (`question_logprobs(n, shared)` on the
/// first `n` questions), then full prompts with the image encoded once (a server with an
/// image-embedding cache).
fn time_paths<V, P>(
    prompts: &[Vec<u32>],
    unshared: usize,
    encode: impl FnOnce() -> makd::error::Result<V>,
    prefill: impl Fn(&[u32], &V) -> makd::error::Result<P>,
    suffix: impl Fn(&P, &[Vec<u32>]) -> makd::error::Result<candle_core::Tensor>,
    question_logprobs: impl Fn(usize, bool) -> makd::error::Result<Vec<Vec<f32>>>,
) -> Result<PathTimes> {
    let p = shared_prefix_len(prompts);
    let suffix_tokens: usize = prompts.iter().map(|ids| ids.len() - p).sum();
    let t = Instant::now();
    let vision = encode()?;
    let vision_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let prefix = prefill(&prompts[0][..p], &vision)?;
    let prefix_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let sufs: Vec<Vec<u32>> = prompts.iter().map(|ids| ids[p..].to_vec()).collect();
    let _ = suffix(&prefix, &sufs)?;
    let suffix_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let shared = question_logprobs(prompts.len(), true)?;
    let shared_s = t.elapsed().as_secs_f64();
    let k = unshared.min(prompts.len());
    let t = Instant::now();
    let unshared = question_logprobs(k, false)?;
    let unshared_s = t.elapsed().as_secs_f64();
    let max_diff = shared
        .iter()
        .zip(&unshared)
        .flat_map(|(x, y)| x.iter().zip(y).map(|(a, b)| (a - b).abs()))
        .fold(0f32, f32::max);
    let t = Instant::now();
    for ids in &prompts[..k] {
        let _ = prefill(ids, &vision)?;
    }
    let unshared_text_s = t.elapsed().as_secs_f64();
    Ok(PathTimes {
        questions: prompts.len(),
        prefix_tokens: p,
        suffix_tokens,
        vision_s,
        prefix_s,
        suffix_s,
        shared,
        shared_s,
        unshared_timed: k,
        unshared_s,
        unshared_text_s,
        max_diff,
    })
}

impl PathTimes {
    fn shared_pps(&self) -> f64 {
        self.questions as f64 / self.shared_s
    }

    fn unshared_pps(&self) -> f64 {
        self.unshared_timed as f64 / self.unshared_s
    }

    fn unshared_text_pps(&self) -> f64 {
        self.unshared_timed as f64 / self.unshared_text_s
    }

    /// The report's keys every family has.
    fn json(&self) -> serde_json::Value {
        let (shared_pps, unshared_pps, unshared_text_pps) = (
            self.shared_pps(),
            self.unshared_pps(),
            self.unshared_text_pps(),
        );
        serde_json::json!({
            "questions": self.questions, "prefix_tokens": self.prefix_tokens,
            "mean_suffix_tokens": self.suffix_tokens as f64 / self.questions as f64,
            "shared": {"seconds": self.shared_s, "pairs_per_s": shared_pps,
                       "vision_s": self.vision_s, "prefix_s": self.prefix_s,
                       "suffix_batch_s": self.suffix_s},
            "unshared": {"questions_timed": self.unshared_timed, "seconds": self.unshared_s,
                         "pairs_per_s": unshared_pps},
            "unshared_vision_cached": {"seconds": self.unshared_text_s,
                                       "pairs_per_s": unshared_text_pps},
            "ratio": shared_pps / unshared_pps,
            "ratio_vs_vision_cached": shared_pps / unshared_text_pps,
            "max_abs_logprob_diff_shared_vs_unshared": self.max_diff,
        })
    }

    /// The human-readable lines every family prints, with the FLOP ratio where one is modelled.
    fn print(&self, flop_ratio: Option<f64>) {
        let (shared_pps, unshared_pps, unshared_text_pps) = (
            self.shared_pps(),
            self.unshared_pps(),
            self.unshared_text_pps(),
        );
        let (p, q, k) = (self.prefix_tokens, self.questions, self.unshared_timed);
        let (vision_s, prefix_s, suffix_s) = (self.vision_s, self.prefix_s, self.suffix_s);
        println!(
            "prompt: {p} shared prefix tokens + {:.1} tokens per question (Q = {q})",
            self.suffix_tokens as f64 / q as f64,
        );
        println!(
            "prefix-shared:            {shared_pps:8.3} pairs/s  (vision {vision_s:.2} s, prefix {prefix_s:.2} s, {q} suffixes {suffix_s:.2} s)",
        );
        println!("one full prompt/question: {unshared_pps:8.3} pairs/s  ({k} timed)");
        println!("  same, vision cached:    {unshared_text_pps:8.3} pairs/s");
        println!(
            "ratio shared / full prompt: {:.1}x   (vs vision-cached: {:.1}x{})",
            shared_pps / unshared_pps,
            shared_pps / unshared_text_pps,
            flop_ratio
                .map(|r| format!("; by FLOPs per pair: {r:.1}x"))
                .unwrap_or_default()
        );
    }

    fn print_check(&self) {
        println!(
            "check: max |Δ logprob| shared vs unshared = {:.2e}",
            self.max_diff
        );
    }
}

/// `base` with `extra`'s keys added (both JSON objects).
fn merged(mut base: serde_json::Value, extra: serde_json::Value) -> serde_json::Value {
    if let (Some(b), serde_json::Value::Object(e)) = (base.as_object_mut(), extra) {
        b.extend(e);
    }
    base
}

/// InternVL of `--shape`/`--config` with random weights, the fixture's tokenizer and template.
fn random_internvl(
    a: &Args,
    dtype: DType,
) -> Result<(
    makd::teacher::native::internvl_teacher::InternVlTeacher,
    &'static str,
)> {
    use makd::teacher::native::internvl::{
        template_system, InternVl, InternVlConfig, TilePreprocess,
    };
    use makd::teacher::native::internvl_teacher::{InternVlTeacher, IMG_CONTEXT};
    let tokenizer = match &a.tokenizer {
        Some(p) => Tokenizer::from_hf_json(p)?,
        None => {
            Tokenizer::from_hf_str(INTERNVL_TOKENIZER, "the InternVL fixture's tokenizer.json")?
        }
    };
    let shape = a.shape.unwrap_or(Shape::OneB);
    if shape == Shape::TwoB {
        return Err(input(
            "--shape 2b is Qwen3-VL-2B's",
            "--family internvl",
            "pass --shape 1b|tiny with --family internvl",
        )
        .into());
    }
    let mut cfg = match (&a.config, shape) {
        (Some(p), _) => InternVlConfig::from_file(p)?,
        (None, Shape::Tiny) => InternVlConfig::tiny(),
        (None, _) => InternVlConfig::internvl2_5_1b(),
    };
    let shape_name = match (&a.config, shape) {
        (Some(_), _) => "config",
        (None, Shape::Tiny) => "tiny",
        (None, _) => "1b",
    };
    cfg.image_token_id = Some(
        tokenizer
            .token_id(IMG_CONTEXT)
            .with_context(|| format!("tokenizer has no {IMG_CONTEXT}"))?,
    );
    ensure!(
        tokenizer.len() <= cfg.vocab_size,
        "the tokenizer has more tokens than the model's vocabulary"
    );
    let model = InternVl::random(cfg.clone(), &Device::cuda_if_available(0)?, dtype, 0)?;
    // InternVL2.5-1B's tiling: 448-px tiles, up to 12, thumbnail.
    let pre = TilePreprocess::from_original_config(
        &serde_json::json!({"force_image_size": cfg.vision.image_size, "max_dynamic_patch": 12}),
        "bench",
    )?;
    let teacher = InternVlTeacher::new(
        model,
        tokenizer,
        pre,
        template_system(INTERNVL_TEMPLATE),
        &VlOptions {
            model_dir: "random".into(),
            dtype,
            ..Default::default()
        },
    )?;
    Ok((teacher, shape_name))
}
