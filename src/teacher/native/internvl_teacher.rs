//! The `native` backend on an InternVL folder: [`super::internvl`]'s model behind the chat format
//! the checkpoint ships.
//!
//! Every question becomes the one-user-turn prompt of InternVL2.5's template (ChatML), the image
//! first as the processor writes it:
//!
//! ```text
//! [<|im_start|>system\n{system}<|im_end|>\n]<|im_start|>user\n<img><IMG_CONTEXT>×(256·tiles)</img>\n{prompt}<|im_end|>\n<|im_start|>assistant\n
//! ```
//!
//! The system message is the template's own default when it writes one (InternVL2.5's names the
//! model), `--system` replacing it. As for Qwen3-VL, the prompts of one image share everything
//! up to the question: that prefix (system, all tiles' tokens, the text before `{question}`) runs
//! once and the questions' remainders run packed against its keys and values.

use super::answer_tokens;
use super::internvl::{shipped_template, template_system, InternVl, Layout, TilePreprocess};
use super::tokenizer::Tokenizer;
use super::vl::{prompt_logprobs, prompt_template, score_rows, VlOptions};
use crate::aspects::Question;
use crate::error::{input, IoContext, Result};
use crate::teacher::yesno::check_variants;
use crate::teacher::{Score, Subject, Teacher, TeacherInfo};
use candle_core::Device;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// InternVL's image placeholder and the tokens around an image.
pub const IMG_CONTEXT: &str = "<IMG_CONTEXT>";
const IMG_START: &str = "<img>";
const IMG_END: &str = "</img>";

/// An InternVL answering questions about images (or class names) in-process.
pub struct InternVlTeacher {
    pub model: InternVl,
    pub tokenizer: Tokenizer,
    pub preprocess: TilePreprocess,
    /// `<IMG_CONTEXT>`'s id.
    pub image_token_id: u32,
    opts: VlOptions,
    template: String,
    /// The system message in effect: `--system`, else the shipped template's default.
    system: Option<String>,
    answer_tokens: Vec<(String, u32)>,
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).at(path)?;
    serde_json::from_str(&text).map_err(|e| {
        input(
            format!("not valid JSON: {e}"),
            path.display().to_string(),
            "use the file shipped with the model",
        )
    })
}

impl InternVlTeacher {
    /// Load an InternVL folder of either layout (told apart by `config.json`).
    pub fn load(opts: &VlOptions) -> Result<InternVlTeacher> {
        let dir = &opts.model_dir;
        let at = dir.display().to_string();
        let need = |name: &str, hint: &str| -> Result<PathBuf> {
            let p = dir.join(name);
            if p.is_file() {
                Ok(p)
            } else {
                Err(input(format!("{name} is missing"), &at, hint.to_string()))
            }
        };
        let cfg_path = need("config.json", "an InternVL folder has config.json")?;
        let cfg = read_json(&cfg_path)?;
        let cfg_at = cfg_path.display().to_string();
        let layout = Layout::from_config(&cfg).ok_or_else(|| {
            input(
                "config.json names no InternVL architecture",
                &cfg_at,
                "expected InternVLChatModel or InternVLForConditionalGeneration",
            )
        })?;
        let tokenizer = Tokenizer::from_hf_json(&need(
            "tokenizer.json",
            "the folder needs the model's tokenizer.json (the fast-tokenizer file)",
        )?)?;
        let preprocess = match layout {
            Layout::Original => TilePreprocess::from_original_config(&cfg, &cfg_at)?,
            Layout::Hf => {
                let p = need(
                    "preprocessor_config.json",
                    "an InternVL -hf folder has preprocessor_config.json (its tiling settings)",
                )?;
                TilePreprocess::from_hf_preprocessor(&read_json(&p)?, &p.display().to_string())?
            }
        };
        let default_system = shipped_template(dir).and_then(|t| template_system(&t));
        let device = Device::cuda_if_available(0)?;
        let model = InternVl::load(dir, &device, opts.dtype)?;
        Self::new(model, tokenizer, preprocess, default_system, opts)
    }

    /// Assemble a teacher from parts (benchmarks build the model with random weights).
    pub fn new(
        model: InternVl,
        tokenizer: Tokenizer,
        preprocess: TilePreprocess,
        default_system: Option<String>,
        opts: &VlOptions,
    ) -> Result<InternVlTeacher> {
        let at = opts.model_dir.display().to_string();
        check_variants(&opts.yes_tokens, &opts.no_tokens)?;
        let template = prompt_template(opts)?;
        for special in [
            "<|im_start|>",
            "<|im_end|>",
            IMG_START,
            IMG_END,
            IMG_CONTEXT,
        ] {
            if tokenizer.token_id(special).is_none() {
                return Err(input(
                    format!("the tokenizer has no {special} token"),
                    &at,
                    "expected an InternVL2.5/3 tokenizer.json",
                ));
            }
        }
        let image_token_id = tokenizer.token_id(IMG_CONTEXT).unwrap_or(0);
        if let Some(id) = model.cfg.image_token_id {
            if model.cfg.layout == Layout::Hf && id != image_token_id {
                return Err(input(
                    format!("{IMG_CONTEXT} in tokenizer.json is {image_token_id}, config.json's image_token_id {id}"),
                    &at,
                    "tokenizer.json and config.json must come from the same checkpoint",
                ));
            }
        }
        if preprocess.tile != model.cfg.vision.image_size {
            return Err(input(
                format!(
                    "tiles of {} px but the vision tower takes {} px",
                    preprocess.tile, model.cfg.vision.image_size
                ),
                &at,
                "the tiling settings and config.json must come from the same checkpoint",
            ));
        }
        let answer_tokens = answer_tokens(&tokenizer, &opts.yes_tokens, &opts.no_tokens, &at)?;
        Ok(InternVlTeacher {
            model,
            tokenizer,
            preprocess,
            image_token_id,
            template,
            system: opts.system.clone().or(default_system),
            opts: opts.clone(),
            answer_tokens,
        })
    }

    /// The system message the prompts carry, if any.
    pub fn system(&self) -> Option<&str> {
        self.system.as_deref()
    }

    /// The chat-formatted prompt text for one question with `image_tokens` placeholders for the
    /// image (none in class mode).
    pub fn prompt_text(&self, class: &str, question: &str, image_tokens: usize) -> String {
        let mut s = String::new();
        if let Some(sys) = &self.system {
            s.push_str(&format!("<|im_start|>system\n{sys}<|im_end|>\n"));
        }
        s.push_str("<|im_start|>user\n");
        if image_tokens > 0 {
            s.push_str(IMG_START);
            s.push_str(&IMG_CONTEXT.repeat(image_tokens));
            s.push_str(IMG_END);
            s.push('\n');
        }
        s.push_str(&crate::teacher::render_prompt(
            &self.template,
            class,
            question,
        ));
        s.push_str("<|im_end|>\n<|im_start|>assistant\n");
        s
    }

    /// One image's pixel values, its tile count and its number of `<IMG_CONTEXT>` tokens.
    pub fn image_input(&self, img: &crate::data::RawImage) -> Result<(Vec<f32>, usize, usize)> {
        let (px, tiles) = self.preprocess.pixel_values(img)?;
        Ok((px, tiles, tiles * self.model.cfg.vision.tokens_per_tile()))
    }

    /// Token ids of each question's prompt.
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
            Some((px, tiles, _)) => Some(self.model.encode_image(px, *tiles)?),
            None => None,
        };
        let (m, it) = (&self.model, self.image_token_id);
        prompt_logprobs(
            &prompts,
            it,
            shared.then_some(self.opts.batch),
            |ids| m.prefill(ids, vision.as_ref(), it),
            |p| &p.last_logprobs,
            |p, sufs| m.suffix_logprobs(p, sufs),
        )
    }

    /// Score rows of log-probabilities.
    pub fn scores(&self, rows: &[Vec<f32>]) -> Vec<Score> {
        score_rows(rows, &self.answer_tokens, &self.opts)
    }
}

impl Teacher for InternVlTeacher {
    fn info(&self) -> TeacherInfo {
        let mut extra = serde_json::Map::new();
        extra.insert("architecture".into(), json!("internvl"));
        extra.insert(
            "layout".into(),
            json!(match self.model.cfg.layout {
                Layout::Original => "InternVLChatModel",
                Layout::Hf => "InternVLForConditionalGeneration",
            }),
        );
        extra.insert("dtype".into(), json!(format!("{:?}", self.opts.dtype)));
        extra.insert("chat_format".into(), json!("chatml (InternVL2.5)"));
        extra.insert(
            "tiles".into(),
            json!({
                "size": self.preprocess.tile,
                "min": self.preprocess.min_num,
                "max": self.preprocess.max_num,
                "dynamic": self.preprocess.dynamic,
                "thumbnail": self.preprocess.use_thumbnail,
            }),
        );
        if let Some(s) = &self.system {
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
