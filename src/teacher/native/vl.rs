//! The `native` backend: a Qwen3-VL folder (Hugging Face layout) run in-process; [`build`]
//! detects the family and hands InternVL folders to [`super::internvl_teacher`].
//!
//! `makd label --backend native --model-dir DIR` reads `config.json`, `tokenizer.json`,
//! `preprocessor_config.json` and `*.safetensors` from DIR. Each image is preprocessed as the
//! Hugging Face processor does ([`super::vl_image`]) and every question becomes the chat prompt
//! Qwen3-VL-Instruct's template renders for one user turn:
//!
//! ```text
//! [<|im_start|>system\n{system}<|im_end|>\n]<|im_start|>user\n<|vision_start|><|image_pad|>×n<|vision_end|>{prompt}<|im_end|>\n<|im_start|>assistant\n
//! ```
//!
//! with `{prompt}` = the prompt template filled with the question and the paper's answer cue.
//! All Q prompts of an image share their first tokens (system, image, and any common text): that
//! prefix runs once, and the Q remainders run as one batch against its keys and values
//! ([`Qwen3Vl::suffix_logprobs`]). P(yes) comes from the full next-token distribution, every
//! vocabulary token that reads as a Yes/No variant counting (see [`super::answer_tokens`]).

use super::qwen3_vl::{read_config_json, Qwen3Vl};
use super::tokenizer::Tokenizer;
use super::vl_image::VisionPreprocess;
use super::{answer_tokens, score_row};
use crate::aspects::Question;
use crate::error::{input, Result};
use crate::teacher::yesno::{check_variants, default_variants};
use crate::teacher::{Mode, Score, Subject, Teacher, TeacherInfo, ANSWER_CUE};
use candle_core::{DType, Device, IndexOp};
use serde_json::json;
use std::path::PathBuf;

/// Options of the `native` backend.
#[derive(Clone, Debug)]
pub struct VlOptions {
    pub model_dir: PathBuf,
    /// `f32` or `bf16` (weights are converted at load when the checkpoint's differ).
    pub dtype: DType,
    /// `{question}`, `{class}` (class mode) and `{cue}` placeholders; default `{question} {cue}`
    /// (image mode) or `Consider a typical image of a {class}. {question} {cue}` (class mode).
    pub prompt_template: Option<String>,
    /// A system message, none by default (Qwen3-VL's template has no default one).
    pub system: Option<String>,
    pub yes_tokens: Vec<String>,
    pub no_tokens: Vec<String>,
    pub mode: Mode,
    /// Questions scored per batch from one shared prefix (bounds memory; default: all).
    pub batch: usize,
}

impl Default for VlOptions {
    fn default() -> Self {
        let (yes_tokens, no_tokens) = default_variants();
        VlOptions {
            model_dir: PathBuf::new(),
            dtype: DType::F32,
            prompt_template: None,
            system: None,
            yes_tokens,
            no_tokens,
            mode: Mode::Image,
            batch: 64,
        }
    }
}

/// A Qwen3-VL answering questions about images (or class names) in-process.
pub struct VlTeacher {
    pub model: Qwen3Vl,
    pub tokenizer: Tokenizer,
    pub preprocess: VisionPreprocess,
    opts: VlOptions,
    template: String,
    answer_tokens: Vec<(String, u32)>,
}

/// One prompt's pieces: the image (if any) and the token ids.
pub struct Prompt {
    pub ids: Vec<u32>,
    pub image: Option<(Vec<f32>, [usize; 3])>,
}

/// The model families `--backend native` runs, told apart by the folder's `config.json`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Qwen3Vl,
    InternVl(super::internvl::Layout),
}

const FAMILIES_HINT: &str = "--model-dir must be a Hugging Face folder of Qwen3-VL \
     (Qwen3VLForConditionalGeneration) or InternVL (InternVLChatModel as OpenGVLab ships it, or \
     InternVLForConditionalGeneration, the -hf layout): config.json, tokenizer.json, \
     *.safetensors; see the README";

/// Which family a model folder holds: `architectures` (then `model_type`) of its `config.json`.
pub fn detect(dir: &std::path::Path) -> Result<Family> {
    let at = dir.display().to_string();
    for name in ["tokenizer.json", "config.json"] {
        if !dir.join(name).is_file() {
            // Some checkpoints ship only the slow tokenizer's files.
            let hint = if name == "tokenizer.json" && dir.join("vocab.json").is_file() {
                "the folder has vocab.json but no tokenizer.json: write one with transformers, \
                 AutoTokenizer.from_pretrained(DIR).save_pretrained(DIR)"
            } else {
                FAMILIES_HINT
            };
            return Err(input(format!("{name} is missing"), &at, hint));
        }
    }
    let path = dir.join("config.json");
    let v = read_config_json(&path)?;
    if let Some(layout) = super::internvl::Layout::from_config(&v) {
        return Ok(Family::InternVl(layout));
    }
    let archs = &v["architectures"];
    let is_qwen3 = archs
        .as_array()
        .is_some_and(|a| a.iter().any(|x| x == "Qwen3VLForConditionalGeneration"))
        || v["model_type"] == "qwen3_vl";
    if is_qwen3 {
        return Ok(Family::Qwen3Vl);
    }
    Err(input(
        format!(
            "config.json describes architectures {archs}, model_type {}: not a family the native \
             backend runs",
            v["model_type"]
        ),
        path.display().to_string(),
        FAMILIES_HINT,
    ))
}

/// Load the folder's model, whichever supported family it holds.
pub fn build(opts: &VlOptions) -> Result<Box<dyn Teacher>> {
    Ok(match detect(&opts.model_dir)? {
        Family::Qwen3Vl => Box::new(VlTeacher::load(opts)?),
        Family::InternVl(_) => Box::new(super::internvl_teacher::InternVlTeacher::load(opts)?),
    })
}

impl VlTeacher {
    pub fn load(opts: &VlOptions) -> Result<VlTeacher> {
        let dir = &opts.model_dir;
        let need = |name: &str| -> Result<PathBuf> {
            let p = dir.join(name);
            if p.is_file() {
                Ok(p)
            } else {
                Err(input(
                    format!("{name} is missing"),
                    dir.display().to_string(),
                    "--model-dir must be a Hugging Face Qwen3-VL folder (config.json, tokenizer.json, \
                     preprocessor_config.json, *.safetensors); see the README",
                ))
            }
        };
        let tokenizer = Tokenizer::from_hf_json(&need("tokenizer.json")?)?;
        let preprocess = VisionPreprocess::from_file(&need("preprocessor_config.json")?)?;
        need("config.json")?;
        // The first GPU when built with `--features cuda` and one is present, else the CPU.
        let device = Device::cuda_if_available(0)?;
        let model = Qwen3Vl::load(dir, &device, opts.dtype)?;
        Self::new(model, tokenizer, preprocess, opts)
    }

    /// Assemble a teacher from parts (benchmarks build the model with random weights).
    pub fn new(
        model: Qwen3Vl,
        tokenizer: Tokenizer,
        preprocess: VisionPreprocess,
        opts: &VlOptions,
    ) -> Result<VlTeacher> {
        let at = opts.model_dir.display().to_string();
        check_variants(&opts.yes_tokens, &opts.no_tokens)?;
        let template = prompt_template(opts)?;
        for special in ["<|im_start|>", "<|im_end|>", "<|image_pad|>"] {
            if tokenizer.token_id(special).is_none() {
                return Err(input(
                    format!("the tokenizer has no {special} token"),
                    &at,
                    "expected a Qwen3-VL tokenizer.json",
                ));
            }
        }
        if tokenizer.token_id("<|image_pad|>") != Some(model.cfg.image_token_id) {
            return Err(input(
                "<|image_pad|> in tokenizer.json is not config.json's image_token_id",
                &at,
                "tokenizer.json and config.json must come from the same checkpoint",
            ));
        }
        let v = &model.cfg.vision;
        if (
            preprocess.patch_size,
            preprocess.merge_size,
            preprocess.temporal_patch_size,
        ) != (v.patch_size, v.spatial_merge_size, v.temporal_patch_size)
        {
            return Err(input(
                "preprocessor_config.json's patch, merge or temporal size differs from config.json's",
                &at,
                "both files must come from the same checkpoint",
            ));
        }
        let answer_tokens = answer_tokens(&tokenizer, &opts.yes_tokens, &opts.no_tokens, &at)?;
        Ok(VlTeacher {
            model,
            tokenizer,
            preprocess,
            template,
            opts: opts.clone(),
            answer_tokens,
        })
    }

    /// The chat-formatted prompt text for one question; `image_tokens` placeholder tokens stand
    /// for the image (none in class mode).
    pub fn prompt_text(&self, class: &str, question: &str, image_tokens: usize) -> String {
        let mut s = String::new();
        if let Some(sys) = &self.opts.system {
            s.push_str(&format!("<|im_start|>system\n{sys}<|im_end|>\n"));
        }
        s.push_str("<|im_start|>user\n");
        if image_tokens > 0 {
            s.push_str("<|vision_start|>");
            s.push_str(&"<|image_pad|>".repeat(image_tokens));
            s.push_str("<|vision_end|>");
        }
        s.push_str(&crate::teacher::render_prompt(
            &self.template,
            class,
            question,
        ));
        s.push_str("<|im_end|>\n<|im_start|>assistant\n");
        s
    }

    /// Preprocess an image: HF-order patches and the grid, and the number of merged tokens.
    pub fn image_input(
        &self,
        img: &crate::data::RawImage,
    ) -> Result<(Vec<f32>, [usize; 3], usize)> {
        let (patches, grid) = self.preprocess.preprocess(img)?;
        let m = self.model.cfg.vision.spatial_merge_size;
        let n = grid[0] * grid[1] * grid[2] / (m * m);
        Ok((patches, grid, n))
    }

    /// Token ids of each question's prompt, with `image_tokens` placeholders for the image.
    pub fn prompt_ids(
        &self,
        class: &str,
        questions: &[&str],
        image_tokens: usize,
    ) -> Vec<Vec<u32>> {
        questions
            .iter()
            .map(|q| {
                self.tokenizer
                    .encode(&self.prompt_text(class, q, image_tokens), false)
            })
            .collect()
    }

    /// Next-token log-probabilities after each question's prompt, sharing the common prefix
    /// (`shared = true`) or running every prompt in full (`false`, the reference path).
    pub fn question_logprobs(
        &self,
        subject: Subject<'_>,
        questions: &[&str],
        shared: bool,
    ) -> Result<Vec<Vec<f32>>> {
        let (class, image) = match subject {
            Subject::Image(s) => ("", Some(self.image_input(&s.image)?)),
            Subject::Class(c) => (c, None),
        };
        let n_img = image.as_ref().map_or(0, |(_, _, n)| *n);
        let prompts = self.prompt_ids(class, questions, n_img);
        let vision = match &image {
            Some((patches, grid, _)) => Some(self.model.encode_image(patches, *grid)?),
            None => None,
        };
        let m = &self.model;
        prompt_logprobs(
            &prompts,
            m.cfg.image_token_id,
            shared.then_some(self.opts.batch),
            |ids| m.prefill(ids, vision.as_ref()),
            |p| &p.last_logprobs,
            |p, sufs| m.suffix_logprobs(p, sufs),
        )
    }

    /// Score rows of log-probabilities.
    pub fn scores(&self, rows: &[Vec<f32>]) -> Vec<Score> {
        score_rows(rows, &self.answer_tokens, &self.opts)
    }
}

/// The prompt template in effect (`--prompt-template` or the mode's default), checked for its
/// placeholders, with the answer cue filled in.
pub(super) fn prompt_template(opts: &VlOptions) -> Result<String> {
    let raw = opts
        .prompt_template
        .clone()
        .unwrap_or_else(|| default_template(opts.mode).to_string());
    if !raw.contains("{question}") || (opts.mode == Mode::Class && !raw.contains("{class}")) {
        return Err(input(
            "the prompt template needs a {question} placeholder (and {class} in class mode)",
            "--prompt-template",
            "e.g. \"{question} {cue}\"",
        ));
    }
    Ok(raw.replace("{cue}", ANSWER_CUE))
}

/// P(yes) of each row of next-token log-probabilities, every token in `answer_tokens` counting
/// for the Yes or No variant it reads as.
pub(super) fn score_rows(
    rows: &[Vec<f32>],
    answer_tokens: &[(String, u32)],
    opts: &VlOptions,
) -> Vec<Score> {
    rows.iter()
        .map(|lp| score_row(lp, answer_tokens, &opts.yes_tokens, &opts.no_tokens).1)
        .collect()
}

/// Next-token log-probabilities after each prompt: in full, one prompt at a time
/// (`shared_batch = None`, the reference path), or with their common prefix run once by `prefill`
/// and the remainders `shared_batch` at a time by `suffix`, packed against its keys and values.
/// The prefix must include the whole image (`image_token` run), or sharing would split it.
pub(super) fn prompt_logprobs<P>(
    prompts: &[Vec<u32>],
    image_token: u32,
    shared_batch: Option<usize>,
    prefill: impl Fn(&[u32]) -> Result<P>,
    last: impl Fn(&P) -> &candle_core::Tensor,
    suffix: impl Fn(&P, &[Vec<u32>]) -> Result<candle_core::Tensor>,
) -> Result<Vec<Vec<f32>>> {
    let mut out = Vec::with_capacity(prompts.len());
    let Some(batch) = shared_batch else {
        for ids in prompts {
            out.push(last(&prefill(ids)?).to_vec1::<f32>()?);
        }
        return Ok(out);
    };
    let p = shared_prefix_len(prompts);
    if let Some(span_end) = prompts[0].iter().rposition(|&t| t == image_token) {
        if p <= span_end {
            return Err(input(
                "the prompts differ before the end of the image",
                "native teacher",
                "put {question} after the image in the prompt template",
            ));
        }
    }
    let prefix = prefill(&prompts[0][..p])?;
    for chunk in prompts.chunks(batch.max(1)) {
        let suffixes: Vec<Vec<u32>> = chunk.iter().map(|ids| ids[p..].to_vec()).collect();
        let lp = suffix(&prefix, &suffixes)?;
        for i in 0..suffixes.len() {
            out.push(lp.i(i)?.to_vec1::<f32>()?);
        }
    }
    Ok(out)
}

/// The length of the longest prefix all prompts share, leaving every prompt at least one token
/// of its own.
pub fn shared_prefix_len(prompts: &[Vec<u32>]) -> usize {
    let shortest = prompts.iter().map(Vec::len).min().unwrap_or(0);
    let mut p = 0;
    while p + 1 < shortest && prompts.iter().all(|ids| ids[p] == prompts[0][p]) {
        p += 1;
    }
    p
}

/// The default prompt text inside the chat turn.
pub fn default_template(mode: Mode) -> &'static str {
    match mode {
        Mode::Image => "{question} {cue}",
        Mode::Class => "Consider a typical image of a {class}. {question} {cue}",
    }
}

impl Teacher for VlTeacher {
    fn info(&self) -> TeacherInfo {
        let mut extra = serde_json::Map::new();
        extra.insert("architecture".into(), json!("qwen3_vl"));
        extra.insert("dtype".into(), json!(format!("{:?}", self.opts.dtype)));
        extra.insert("chat_format".into(), json!("chatml (Qwen3-VL-Instruct)"));
        if let Some(s) = &self.opts.system {
            extra.insert("system".into(), json!(s));
        }
        extra.insert(
            "answer_tokens".into(),
            json!("every vocabulary token whose piece normalises to a Yes/No variant"),
        );
        TeacherInfo {
            backend: "native".into(),
            model: self.opts.model_dir.display().to_string(),
            prompt_template: self.template.clone(),
            yes_tokens: self.opts.yes_tokens.clone(),
            no_tokens: self.opts.no_tokens.clone(),
            mode: self.opts.mode,
            extra,
        }
    }

    fn score(&self, subject: Subject<'_>, questions: &[Question]) -> Result<Vec<Score>> {
        let qs: Vec<&str> = questions.iter().map(|q| q.text.as_str()).collect();
        let rows = self.question_logprobs(subject, &qs, true)?;
        Ok(self.scores(&rows))
    }
}
