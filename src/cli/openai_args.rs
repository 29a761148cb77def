//! Flags shared by every command that talks to an OpenAI-compatible endpoint: [`ServerArgs`]
//! (where and how patiently: `aspects generate` needs no more), [`OpenAiArgs`] (the server
//! teacher's request shape) and [`PromptArgs`] (how any model-backed teacher is asked).

use makd::llm::client::{Client, ClientOptions, EndpointUrl};
use makd::teacher::openai::{Api, OpenAiOptions};
use makd::teacher::Mode;
use std::time::Duration;

/// A JSON object given on the command line (merged into every request body).
fn json_object(s: &str) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    match serde_json::from_str::<serde_json::Value>(s) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        Ok(_) => Err("expected a JSON object, e.g. '{\"allowed_token_ids\":[9454,2753]}'".into()),
        Err(e) => Err(format!("not valid JSON: {e}")),
    }
}

fn endpoint_url(s: &str) -> Result<EndpointUrl, String> {
    s.parse::<EndpointUrl>().map_err(|e| e.report())
}

fn positive_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err("expected a positive number of seconds".into()),
    }
}

/// Where the server is and how long to wait for it.
#[derive(clap::Args, Debug, Clone)]
pub struct ServerArgs {
    /// Base URL of an OpenAI-compatible server (e.g. http://127.0.0.1:8000/v1); repeat to share work.
    #[arg(long = "endpoint", value_parser = endpoint_url)]
    pub endpoints: Vec<EndpointUrl>,
    /// Model name as the server knows it (a local GGUF file is `--gguf`, a local Qwen3-VL folder
    /// `--model-dir`).
    #[arg(long)]
    pub model: Option<String>,
    /// Seconds before one request is abandoned and retried.
    #[arg(long, default_value_t = 120.0, value_parser = positive_secs)]
    pub timeout: f64,
    /// Retries per request after the first try (timeouts, resets, 429, 5xx); then the pair is
    /// marked missing and the run goes on.
    #[arg(long, default_value_t = 5)]
    pub retries: u32,
    /// Seconds before the first retry (doubles each time, with jitter; Retry-After wins if longer).
    #[arg(long, default_value_t = 0.5, value_parser = positive_secs)]
    pub backoff: f64,
}

impl ServerArgs {
    /// A client for the endpoints with these timeouts (API keys from the environment).
    pub fn client(&self) -> makd::Result<Client> {
        Client::new(
            &self.endpoints,
            ClientOptions {
                timeout: Duration::from_secs_f64(self.timeout),
                max_attempts: self.retries.saturating_add(1),
                backoff_base: Duration::from_secs_f64(self.backoff),
                ..Default::default()
            },
        )
    }
}

/// The server teacher's flags: the server, and the shape of each request.
#[derive(clap::Args, Debug, Clone)]
pub struct OpenAiArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Requests in flight per endpoint. Keep it above the server's parallel slots (llama.cpp `--parallel`, vLLM batches freely) so it never idles between requests.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// `chat` (/v1/chat/completions, takes images) or `completions` (/v1/completions, a raw
    /// prompt: for base models without a chat template; text only).
    #[arg(long, default_value = "chat")]
    pub api: Api,
    /// Candidates asked for on the answer token (servers cap this; 20 is the common limit).
    #[arg(long, default_value_t = 20)]
    pub top_logprobs: u32,
    /// JSON object merged into every request body, e.g. vLLM's
    /// '{"allowed_token_ids":[…]}' or llama.cpp's '{"cache_prompt":true}'.
    #[arg(long = "extra-body", visible_alias = "vllm-extras", value_parser = json_object)]
    pub extra_body: Option<serde_json::Map<String, serde_json::Value>>,
}

/// How a teacher is asked: the flags every backend that prompts a model shares.
#[derive(clap::Args, Debug, Clone)]
pub struct PromptArgs {
    /// Prompt text with {question}, {class} (class mode) and {cue} placeholders [default: the
    /// paper's wording].
    #[arg(long)]
    pub prompt_template: Option<String>,
    /// A token spelling that counts as Yes (repeatable; compared after normalisation).
    #[arg(long = "yes-token", default_values_t = ["yes".to_string()])]
    pub yes_tokens: Vec<String>,
    /// A token spelling that counts as No (repeatable).
    #[arg(long = "no-token", default_values_t = ["no".to_string()])]
    pub no_tokens: Vec<String>,
}

impl OpenAiArgs {
    /// The server teacher's options for `mode`, asked as `prompt` says.
    pub fn options(&self, mode: Mode, prompt: &PromptArgs) -> OpenAiOptions {
        let s = &self.server;
        OpenAiOptions {
            endpoints: s.endpoints.clone(),
            model: s.model.clone().unwrap_or_default(),
            concurrency: self.concurrency,
            mode,
            api: self.api,
            prompt_template: prompt.prompt_template.clone(),
            top_logprobs: self.top_logprobs,
            timeout: Duration::from_secs_f64(s.timeout),
            max_attempts: s.retries.saturating_add(1),
            backoff_base: Duration::from_secs_f64(s.backoff),
            yes_tokens: prompt.yes_tokens.clone(),
            no_tokens: prompt.no_tokens.clone(),
            extra_body: self.extra_body.clone().unwrap_or_default(),
        }
    }
}
