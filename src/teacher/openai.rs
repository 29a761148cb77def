//! The OpenAI-compatible server teacher (vLLM, SGLang, llama.cpp, LMDeploy, Ollama, hosted APIs).
//! (Being written: see issue "Teacher over real servers".)

use crate::error::{input, Result};
use crate::teacher::{Mode, Teacher};

/// Everything needed to talk to one or more endpoints serving the same model.
#[derive(Clone, Debug, Default)]
pub struct OpenAiOptions {
    pub endpoints: Vec<String>,
    pub model: String,
    /// Requests in flight per endpoint.
    pub concurrency: usize,
    pub mode: Mode,
}

pub fn build(_opts: &OpenAiOptions) -> Result<Box<dyn Teacher>> {
    Err(input(
        "the openai backend is not built yet",
        "--backend openai",
        "use --backend table for now",
    ))
}
