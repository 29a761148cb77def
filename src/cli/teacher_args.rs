//! `--backend` and the flags of each teacher, turned into a [`TeacherSpec`].

use super::openai_args::{OpenAiArgs, PromptArgs};
use makd::error::input;
use makd::teacher::native::vl::VlOptions;
use makd::teacher::native::TextOptions;
use makd::teacher::spec::TeacherSpec;
use makd::teacher::Mode;
use std::path::PathBuf;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Answers from an annotation file (`--table`).
    Table,
    /// An OpenAI-compatible server with logprobs (`--endpoint`, `--model`).
    Openai,
    /// A text-only GGUF LLM run in-process by candle (Gemma 3, Qwen2, Qwen3); `--gguf FILE`,
    /// class mode only.
    Text,
    /// A Qwen3-VL or InternVL run in-process by candle from a model folder (`--model-dir`); the
    /// image prefix is computed once per image and shared by all questions.
    Native,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModeArg {
    Image,
    Class,
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Mode {
        match m {
            ModeArg::Image => Mode::Image,
            ModeArg::Class => Mode::Class,
        }
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DtypeArg {
    F32,
    Bf16,
}

impl From<DtypeArg> for candle_core::DType {
    fn from(d: DtypeArg) -> candle_core::DType {
        match d {
            DtypeArg::F32 => candle_core::DType::F32,
            DtypeArg::Bf16 => candle_core::DType::BF16,
        }
    }
}

/// Who answers the questions, with every backend's flags.
#[derive(clap::Args, Debug, Clone)]
pub struct TeacherArgs {
    /// Who answers: `table` (an annotation file, --table), `openai` (an OpenAI-compatible
    /// server with logprobs, --endpoint/--model), `native` (a local Qwen3-VL or InternVL folder,
    /// --model-dir) or `text` (a local GGUF LLM, --gguf FILE, with --mode class).
    #[arg(long, value_enum, required = true)]
    pub backend: Option<Backend>,

    /// Annotation file for `--backend table`: CSV with header `class,<question id>,...` or
    /// `image_id,<question id>,...`, or JSON {"classes"|"images": {...}}; values P(yes) in [0, 1].
    #[arg(long, value_name = "FILE", required_if_eq("backend", "table"))]
    pub table: Option<PathBuf>,

    /// GGUF model file for `--backend text` (llama.cpp's format: Gemma 3, Qwen2, Qwen3).
    #[arg(long, value_name = "FILE", required_if_eq("backend", "text"))]
    pub gguf: Option<PathBuf>,

    /// Model folder for `--backend native`: Qwen3-VL, or InternVL in OpenGVLab's layout or the
    /// `-hf` one (told apart by config.json); config.json, tokenizer.json, *.safetensors and, for
    /// Qwen3-VL and InternVL -hf, preprocessor_config.json (see the README for fetching one).
    #[arg(long, value_name = "DIR", required_if_eq("backend", "native"))]
    pub model_dir: Option<PathBuf>,

    /// Compute type of `--backend native`: `f32`, or `bf16` for half the memory (slower on most
    /// CPUs, which lack bf16 matrix units).
    #[arg(long, value_enum, default_value_t = DtypeArg::F32)]
    pub dtype: DtypeArg,

    /// A system message for `--backend native`; by default the one the model's chat template
    /// writes (InternVL2.5's), none for Qwen3-VL.
    #[arg(long)]
    pub system: Option<String>,

    /// `--backend native`: questions scored per batch from one shared image prefix (memory
    /// grows with it; the default takes a whole 50-question aspect set in one batch).
    #[arg(long, default_value_t = 64)]
    pub batch: usize,

    #[command(flatten)]
    pub prompt: PromptArgs,

    #[command(flatten)]
    pub openai: OpenAiArgs,
}

impl TeacherArgs {
    /// The teacher these flags describe, for `mode`.
    pub fn spec(&self, mode: Mode) -> makd::Result<TeacherSpec> {
        let backend = self.backend.ok_or_else(|| {
            input(
                "no teacher chosen",
                "--backend",
                "pass --backend table|openai|text|native",
            )
        })?;
        let p = &self.prompt;
        Ok(match backend {
            Backend::Table => TeacherSpec::Table {
                file: self.table.clone().ok_or_else(|| {
                    input(
                        "--table FILE is required",
                        "--backend table",
                        "pass the annotation file",
                    )
                })?,
            },
            Backend::Openai => TeacherSpec::OpenAi(self.openai.options(mode, p)),
            Backend::Text => {
                let Some(model) = self.gguf.clone() else {
                    return Err(input(
                        "--gguf FILE is required",
                        "--backend text",
                        "pass the GGUF model file (`--model` names a server's model)",
                    ));
                };
                TeacherSpec::Text(TextOptions {
                    model,
                    prompt_template: p.prompt_template.clone(),
                    yes_tokens: p.yes_tokens.clone(),
                    no_tokens: p.no_tokens.clone(),
                    ..Default::default()
                })
            }
            Backend::Native => TeacherSpec::Native(VlOptions {
                model_dir: self.model_dir.clone().ok_or_else(|| {
                    input(
                        "--model-dir DIR is required",
                        "--backend native",
                        "pass a Qwen3-VL or InternVL model folder",
                    )
                })?,
                dtype: self.dtype.into(),
                prompt_template: p.prompt_template.clone(),
                system: self.system.clone(),
                mode,
                batch: self.batch.max(1),
                yes_tokens: p.yes_tokens.clone(),
                no_tokens: p.no_tokens.clone(),
            }),
        })
    }
}
