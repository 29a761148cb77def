//! Flags shared by every command that talks to an OpenAI-compatible endpoint.

use makd::teacher::openai::OpenAiOptions;
use makd::teacher::Mode;

#[derive(clap::Args, Debug, Clone)]
pub struct OpenAiArgs {
    /// Base URL of an OpenAI-compatible server (e.g. http://127.0.0.1:8000/v1); repeat to share work.
    #[arg(long = "endpoint")]
    pub endpoints: Vec<String>,
    /// Model name as the server knows it.
    #[arg(long)]
    pub model: Option<String>,
    /// Requests in flight per endpoint.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
}

impl OpenAiArgs {
    pub fn options(&self, mode: Mode) -> OpenAiOptions {
        OpenAiOptions {
            endpoints: self.endpoints.clone(),
            model: self.model.clone().unwrap_or_default(),
            concurrency: self.concurrency,
            mode,
        }
    }
}
