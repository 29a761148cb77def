//! Native teachers: LLMs run in-process by candle, no server.
//!
//! [`build_text`] loads a quantized text LLM from one GGUF file (Gemma 3, Qwen2, Qwen3) for class
//! mode: the model never sees an image, it answers about "a typical image of a {class}". The
//! prompt is the server teacher's completions template, tokenized by the GGUF's own tokenizer
//! ([`tokenizer`]) with BOS when the file asks for it, so the numbers match llama.cpp serving the
//! same file. P(yes) comes from the full next-token distribution: every vocabulary token whose
//! piece normalises to a Yes (No) variant counts, so nothing is ever floored by a top-k cut.

pub mod gemma3;
pub mod gguf_text;
pub mod internvl;
pub mod internvl_teacher;
pub mod qwen3_vl;
mod qwen_decoder;
pub mod tokenizer;
pub mod vl;
pub mod vl_image;

use crate::aspects::Question;
use crate::error::{input, Result};
use crate::teacher::openai::{default_template, Api};
use crate::teacher::yesno::{
    check_variants, default_variants, normalize_token, score_from_candidates,
};
use crate::teacher::{Mode, Score, Subject, Teacher, TeacherInfo, ANSWER_CUE};
use gguf_text::GgufText;
use serde_json::json;
use std::path::PathBuf;
use std::sync::Mutex;

/// Options of the `text` backend (`makd label --backend text --gguf FILE.gguf --mode class`).
#[derive(Clone, Debug)]
pub struct TextOptions {
    pub model: PathBuf,
    /// `{class}`, `{question}` and `{cue}` placeholders; default: the completions class template.
    pub prompt_template: Option<String>,
    pub yes_tokens: Vec<String>,
    pub no_tokens: Vec<String>,
    /// CPU threads for candle. candle sizes its thread pool once per process from
    /// `CANDLE_NUM_THREADS`, so this only takes effect before the first model runs.
    pub threads: Option<usize>,
}

impl Default for TextOptions {
    fn default() -> Self {
        let (yes_tokens, no_tokens) = default_variants();
        TextOptions {
            model: PathBuf::new(),
            prompt_template: None,
            yes_tokens,
            no_tokens,
            threads: None,
        }
    }
}

/// A GGUF text LLM answering class-mode questions in-process.
pub struct TextTeacher {
    model: Mutex<GgufText>,
    opts: TextOptions,
    /// The template with `{cue}` filled in.
    template: String,
    /// (piece, id) of every vocabulary token that reads as a Yes or No variant.
    answer_tokens: Vec<(String, u32)>,
}

/// Load the model and check the options.
pub fn build_text(opts: &TextOptions) -> Result<Box<dyn Teacher>> {
    Ok(Box::new(TextTeacher::new(opts)?))
}

impl TextTeacher {
    pub fn new(opts: &TextOptions) -> Result<TextTeacher> {
        check_variants(&opts.yes_tokens, &opts.no_tokens)?;
        let raw = opts
            .prompt_template
            .clone()
            .unwrap_or_else(|| default_template(Mode::Class, Api::Completions).to_string());
        if !raw.contains("{question}") || !raw.contains("{class}") {
            return Err(input(
                "the prompt template needs {class} and {question} placeholders",
                "--prompt-template",
                "e.g. \"Question: Consider a typical image of a {class}. {question} {cue}\\nAnswer:\"",
            ));
        }
        if let Some(n) = opts.threads.filter(|&n| n > 0) {
            if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
                // Read by candle when it first builds its pool; set before any model runs.
                std::env::set_var("CANDLE_NUM_THREADS", n.to_string());
            }
        }
        let model = GgufText::load(&opts.model)?;
        let answer_tokens = answer_tokens(
            &model.tokenizer,
            &opts.yes_tokens,
            &opts.no_tokens,
            &opts.model.display().to_string(),
        )?;
        Ok(TextTeacher {
            model: Mutex::new(model),
            opts: opts.clone(),
            template: raw.replace("{cue}", ANSWER_CUE),
            answer_tokens,
        })
    }

    /// The prompt for one (class, question), as text.
    pub fn prompt(&self, class: &str, question: &str) -> String {
        crate::teacher::render_prompt(&self.template, class, question)
    }

    /// The token ids the model sees for one (class, question), BOS included when the GGUF asks.
    pub fn prompt_ids(&self, class: &str, question: &str) -> Vec<u32> {
        let m = self.model.lock().unwrap_or_else(|e| e.into_inner());
        m.tokenizer.encode(&self.prompt(class, question), true)
    }

    /// Next-token logprobs of every Yes/No variant token after the prompt, and the score.
    pub fn answer(&self, class: &str, question: &str) -> Result<(Vec<(String, f32)>, Score)> {
        let mut m = self.model.lock().unwrap_or_else(|e| e.into_inner());
        let ids = m.tokenizer.encode(&self.prompt(class, question), true);
        let lp = m.next_logprobs(&ids)?;
        Ok(score_row(
            &lp,
            &self.answer_tokens,
            &self.opts.yes_tokens,
            &self.opts.no_tokens,
        ))
    }

    /// Token ids of arbitrary text with this model's tokenizer (for parity checks).
    pub fn tokenize(&self, text: &str, add_special: bool) -> Vec<u32> {
        let m = self.model.lock().unwrap_or_else(|e| e.into_inner());
        m.tokenizer.encode(text, add_special)
    }

    /// Log-probabilities of the next token after `ids`, over the whole vocabulary.
    pub fn next_logprobs(&self, ids: &[u32]) -> Result<Vec<f32>> {
        let mut m = self.model.lock().unwrap_or_else(|e| e.into_inner());
        m.next_logprobs(ids)
    }
}

/// (piece, id) of every vocabulary token whose piece normalises to one of the Yes or No
/// variants; an error when either side has none (`at` names the model in it).
pub fn answer_tokens(
    tok: &tokenizer::Tokenizer,
    yes: &[String],
    no: &[String],
    at: &str,
) -> Result<Vec<(String, u32)>> {
    let norm = |v: &[String]| v.iter().map(|s| normalize_token(s)).collect::<Vec<_>>();
    let (yes, no) = (norm(yes), norm(no));
    let found: Vec<(String, u32)> = (0..tok.len() as u32)
        .filter_map(|id| {
            let p = normalize_token(tok.piece(id));
            (yes.contains(&p) || no.contains(&p)).then(|| (tok.piece(id).to_string(), id))
        })
        .collect();
    let has = |side: &[String]| {
        found
            .iter()
            .any(|(p, _)| side.contains(&normalize_token(p)))
    };
    if !has(&yes) || !has(&no) {
        return Err(input(
            "the model's vocabulary has no token for the Yes or the No variants",
            at,
            "check --yes-token / --no-token against the model's tokenizer",
        ));
    }
    Ok(found)
}

/// The candidates (answer-token piece, logprob) read from a full next-token distribution, and
/// the score they give.
pub fn score_row(
    lp: &[f32],
    answer_tokens: &[(String, u32)],
    yes: &[String],
    no: &[String],
) -> (Vec<(String, f32)>, Score) {
    let cands: Vec<(String, f32)> = answer_tokens
        .iter()
        .map(|(p, id)| (p.clone(), lp.get(*id as usize).copied().unwrap_or(f32::NAN)))
        .collect();
    let score = score_from_candidates(&cands, yes, no);
    (cands, score)
}

impl Teacher for TextTeacher {
    fn info(&self) -> TeacherInfo {
        let m = self.model.lock().unwrap_or_else(|e| e.into_inner());
        let mut extra = serde_json::Map::new();
        extra.insert("architecture".into(), json!(m.architecture));
        extra.insert("bos".into(), json!(m.tokenizer.add_bos));
        extra.insert(
            "answer_tokens".into(),
            json!("every vocabulary token whose piece normalises to a Yes/No variant"),
        );
        TeacherInfo {
            backend: "text".into(),
            model: self.opts.model.display().to_string(),
            prompt_template: self.template.clone(),
            yes_tokens: self.opts.yes_tokens.clone(),
            no_tokens: self.opts.no_tokens.clone(),
            mode: Mode::Class,
            extra,
        }
    }

    fn score(&self, subject: Subject<'_>, questions: &[Question]) -> Result<Vec<Score>> {
        let class = match subject {
            Subject::Class(c) => c,
            Subject::Image(s) => {
                return Err(input(
                    "a text-only model cannot look at images",
                    format!("--backend text (image {})", s.id),
                    "use --mode class with --backend text, or an image-capable teacher for --mode image",
                ))
            }
        };
        questions
            .iter()
            .map(|q| self.answer(class, &q.text).map(|(_, s)| s))
            .collect()
    }
}
