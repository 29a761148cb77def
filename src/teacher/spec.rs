//! Which teacher to build: the one factory behind `makd label`, the demo and the benchmarks.

use super::native::vl::VlOptions;
use super::native::TextOptions;
use super::openai::OpenAiOptions;
use super::table::TableTeacher;
use super::{Mode, Teacher};
use crate::aspects::AspectSet;
use crate::error::{input, Result};
use std::path::PathBuf;
use std::sync::Arc;

/// A teacher and its settings, one variant per backend.
#[derive(Clone, Debug)]
pub enum TeacherSpec {
    /// Answers from an annotation file (per class or per image).
    Table { file: PathBuf },
    /// An OpenAI-compatible server with logprobs.
    OpenAi(OpenAiOptions),
    /// A text-only GGUF LLM run in process; class mode only.
    Text(TextOptions),
    /// A Qwen3-VL checkpoint run in process.
    Native(VlOptions),
}

impl TeacherSpec {
    /// The backend's name as users write it (`--backend`) and manifests record it.
    pub fn backend(&self) -> &'static str {
        match self {
            TeacherSpec::Table { .. } => "table",
            TeacherSpec::OpenAi(_) => "openai",
            TeacherSpec::Text(_) => "text",
            TeacherSpec::Native(_) => "native",
        }
    }
}

/// Load or connect the teacher `spec` describes, for questions from `aspects` asked in `mode`.
pub fn build(spec: &TeacherSpec, aspects: &AspectSet, mode: Mode) -> Result<Arc<dyn Teacher>> {
    Ok(match spec {
        TeacherSpec::Table { file } => Arc::new(TableTeacher::load(file, aspects)?),
        TeacherSpec::OpenAi(o) => {
            Arc::from(super::openai::build(&OpenAiOptions { mode, ..o.clone() })?)
        }
        TeacherSpec::Text(o) => {
            if mode != Mode::Class {
                return Err(input(
                    "a text-only model cannot see images",
                    "--backend text",
                    "add --mode class: each class is asked once and its answers go to every image of the class",
                ));
            }
            Arc::from(super::native::build_text(o)?)
        }
        TeacherSpec::Native(o) => {
            eprintln!("loading {}", o.model_dir.display());
            Arc::from(super::native::vl::build(&VlOptions { mode, ..o.clone() })?)
        }
    })
}
