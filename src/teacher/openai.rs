//! The OpenAI-compatible server teacher (vLLM, SGLang, llama.cpp, LMDeploy, Ollama, hosted APIs).
//!
//! One request per (image, question): the image as a base64 PNG data URL first, then the question
//! and the paper's answer cue, `max_tokens: 1`, `temperature: 0`, `logprobs` with the top-k
//! candidates of the single answer token, which [`crate::teacher::yesno`] turns into P(yes). The
//! paper generated up to 1024 tokens per pair; one token is all the answer needs.
//!
//! All questions of one image go to the same endpoint one after another, so the server's prefix
//! cache holds the image tokens and only the question is new work. Parallelism comes from the
//! driver running `endpoints × concurrency` groups at once; each group leases the least-busy
//! endpoint. In class mode (text-only LLMs) the subject is a class name and the prompt starts
//! "Consider a typical image of a {class}.".
//!
//! Servers without a chat template (base models such as Gemma 3 270M) are asked through
//! `/v1/completions` with a raw prompt instead; which API and the exact template are recorded in
//! [`TeacherInfo`].

use crate::aspects::Question;
use crate::data::RawImage;
use crate::error::{input, Result};
use crate::llm::client::{Client, ClientOptions, EndpointUrl};
use crate::llm::logprobs::{first_token, FirstToken};
use crate::teacher::yesno::{check_variants, default_variants, score_from_candidates};
use crate::teacher::{Mode, Score, Subject, Teacher, TeacherInfo, ANSWER_CUE};
use base64::Engine;
use serde_json::{json, Map, Value};
use std::time::Duration;

/// Which OpenAI endpoint carries the prompt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Api {
    /// `/v1/chat/completions`: the server applies the model's chat template (and takes images).
    #[default]
    Chat,
    /// `/v1/completions`: a raw prompt, for models without a chat template. Text only.
    Completions,
}

impl Api {
    pub fn name(self) -> &'static str {
        match self {
            Api::Chat => "chat",
            Api::Completions => "completions",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Api::Chat => "/chat/completions",
            Api::Completions => "/completions",
        }
    }
}

impl std::str::FromStr for Api {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "chat" => Ok(Api::Chat),
            "completions" | "completion" => Ok(Api::Completions),
            other => Err(format!(
                "unknown API {other:?}: expected `chat` or `completions`"
            )),
        }
    }
}

/// Everything needed to talk to one or more endpoints serving the same model.
#[derive(Clone, Debug)]
pub struct OpenAiOptions {
    pub endpoints: Vec<EndpointUrl>,
    /// Model name as the server knows it; empty lets a single-model server (llama.cpp) choose.
    pub model: String,
    /// Requests in flight per endpoint.
    pub concurrency: usize,
    pub mode: Mode,
    pub api: Api,
    /// Text of the prompt with `{question}`, `{class}` (class mode) and `{cue}` placeholders;
    /// `None` uses the paper's wording (see [`default_template`]).
    pub prompt_template: Option<String>,
    /// Candidates asked for on the answer token.
    pub top_logprobs: u32,
    /// Limit for one request.
    pub timeout: Duration,
    /// Tries per request before the pair is marked missing.
    pub max_attempts: u32,
    /// First retry wait (doubles per retry, with jitter).
    pub backoff_base: Duration,
    /// Token spellings counted as Yes / No (normalised, see [`crate::teacher::yesno`]).
    pub yes_tokens: Vec<String>,
    pub no_tokens: Vec<String>,
    /// Fields merged into every request body as given, e.g. vLLM's `allowed_token_ids` or
    /// llama.cpp's `cache_prompt`.
    pub extra_body: Map<String, Value>,
}

impl Default for OpenAiOptions {
    fn default() -> Self {
        let (yes, no) = default_variants();
        OpenAiOptions {
            endpoints: Vec::new(),
            model: String::new(),
            concurrency: 4,
            mode: Mode::Image,
            api: Api::Chat,
            prompt_template: None,
            top_logprobs: 20,
            timeout: Duration::from_secs(120),
            max_attempts: 6,
            backoff_base: Duration::from_millis(500),
            yes_tokens: yes,
            no_tokens: no,
            extra_body: Map::new(),
        }
    }
}

/// The paper's prompt for a mode and API, with placeholders.
pub fn default_template(mode: Mode, api: Api) -> &'static str {
    match (mode, api) {
        (Mode::Image, Api::Chat) => "{question} {cue}",
        (Mode::Class, Api::Chat) => "Consider a typical image of a {class}. {question} {cue}",
        (Mode::Image, Api::Completions) => "Question: {question} {cue}\nAnswer:",
        (Mode::Class, Api::Completions) => {
            "Question: Consider a typical image of a {class}. {question} {cue}\nAnswer:"
        }
    }
}

/// A base64 PNG data URL of a decoded image (lossless: the model sees the dataset's pixels).
pub fn png_data_url(img: &RawImage) -> Result<String> {
    use image::ImageEncoder;
    let color = match img.channels {
        1 => image::ExtendedColorType::L8,
        3 => image::ExtendedColorType::Rgb8,
        c => {
            return Err(input(
                format!("an image with {c} channels cannot be sent"),
                "image",
                "datasets must decode to gray (1) or RGB (3)",
            ))
        }
    };
    let expect = img.width as usize * img.height as usize * img.channels as usize;
    if img.pixels.len() != expect || expect == 0 {
        return Err(input(
            format!(
                "image buffer holds {} bytes, expected {}×{}×{} = {expect}",
                img.pixels.len(),
                img.width,
                img.height,
                img.channels
            ),
            "image",
            "the dataset decoder produced an inconsistent image",
        ));
    }
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(&img.pixels, img.width, img.height, color)
        .map_err(|e| input(format!("PNG encoding failed: {e}"), "image", "report this"))?;
    Ok(format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(&png)
    ))
}

/// The server teacher. Build it with [`build`].
pub struct OpenAiTeacher {
    client: Client,
    opts: OpenAiOptions,
    /// The prompt text with `{cue}` filled in.
    template: String,
}

impl OpenAiTeacher {
    pub fn new(opts: &OpenAiOptions) -> Result<OpenAiTeacher> {
        let client = Client::new(
            &opts.endpoints,
            ClientOptions {
                timeout: opts.timeout,
                max_attempts: opts.max_attempts,
                backoff_base: opts.backoff_base,
                connections_per_host: opts.concurrency.max(1) * 2,
                ..Default::default()
            },
        )?;
        OpenAiTeacher::with_client(client, opts)
    }

    /// Over a prepared client (tests pass an explicit API key this way).
    pub fn with_client(client: Client, opts: &OpenAiOptions) -> Result<OpenAiTeacher> {
        if opts.api == Api::Completions && opts.mode == Mode::Image {
            return Err(input(
                "the completions API cannot carry images",
                "--api completions",
                "use --api chat for image mode, or --mode class for a text-only model",
            ));
        }
        if opts.top_logprobs == 0 {
            return Err(input(
                "top_logprobs must be at least 1",
                "--top-logprobs",
                "20 is what OpenAI-compatible servers usually allow",
            ));
        }
        check_variants(&opts.yes_tokens, &opts.no_tokens)?;
        let raw = opts
            .prompt_template
            .clone()
            .unwrap_or_else(|| default_template(opts.mode, opts.api).to_string());
        if !raw.contains("{question}") {
            return Err(input(
                "the prompt template has no {question} placeholder",
                "--prompt-template",
                "e.g. \"{question} {cue}\"",
            ));
        }
        if opts.mode == Mode::Class && !raw.contains("{class}") {
            return Err(input(
                "a class-mode prompt template needs a {class} placeholder",
                "--prompt-template",
                "e.g. \"Consider a typical image of a {class}. {question} {cue}\"",
            ));
        }
        Ok(OpenAiTeacher {
            client,
            opts: opts.clone(),
            template: raw.replace("{cue}", ANSWER_CUE),
        })
    }

    /// The request body for one question about `subject` (`image_url` already encoded).
    fn body(&self, class: &str, image_url: Option<&str>, question: &str) -> Value {
        let text = crate::teacher::render_prompt(&self.template, class, question);
        let mut body = Map::new();
        if !self.opts.model.is_empty() {
            body.insert("model".into(), json!(self.opts.model));
        }
        match self.opts.api {
            Api::Chat => {
                let content = match image_url {
                    Some(url) => json!([
                        {"type": "image_url", "image_url": {"url": url}},
                        {"type": "text", "text": text}
                    ]),
                    None => json!(text),
                };
                body.insert(
                    "messages".into(),
                    json!([{"role": "user", "content": content}]),
                );
                body.insert("logprobs".into(), json!(true));
                body.insert("top_logprobs".into(), json!(self.opts.top_logprobs));
            }
            Api::Completions => {
                body.insert("prompt".into(), json!(text));
                body.insert("logprobs".into(), json!(self.opts.top_logprobs));
            }
        }
        body.insert("max_tokens".into(), json!(1));
        body.insert("temperature".into(), json!(0));
        for (k, v) in &self.opts.extra_body {
            body.insert(k.clone(), v.clone());
        }
        Value::Object(body)
    }

    /// The request bodies [`Teacher::score`] sends for `subject`, in order (benchmarks reuse them).
    pub fn bodies(&self, subject: Subject<'_>, questions: &[Question]) -> Result<Vec<Value>> {
        let (class, url) = match subject {
            Subject::Image(s) => {
                if self.opts.api == Api::Completions {
                    return Err(input(
                        "the completions API cannot carry images",
                        s.id.clone(),
                        "use --api chat for image mode",
                    ));
                }
                let url = png_data_url(&s.image).map_err(|e| match e {
                    crate::Error::Input { what, hint, .. } => input(what, s.id.clone(), hint),
                    other => other,
                })?;
                (String::new(), Some(url))
            }
            Subject::Class(c) => (c.to_string(), None),
        };
        Ok(questions
            .iter()
            .map(|q| self.body(&class, url.as_deref(), &q.text))
            .collect())
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The path requests go to (`/chat/completions` or `/completions`).
    pub fn path(&self) -> &'static str {
        self.opts.api.path()
    }
}

impl Teacher for OpenAiTeacher {
    fn info(&self) -> TeacherInfo {
        let mut extra = Map::new();
        extra.insert("api".into(), json!(self.opts.api.name()));
        extra.insert("endpoints".into(), json!(self.client.endpoints()));
        extra.insert("top_logprobs".into(), json!(self.opts.top_logprobs));
        extra.insert("max_tokens".into(), json!(1));
        extra.insert("temperature".into(), json!(0));
        if self.opts.mode == Mode::Image {
            extra.insert(
                "image".into(),
                json!("PNG base64 data URL, sent before the text"),
            );
        }
        if !self.opts.extra_body.is_empty() {
            extra.insert(
                "extra_body".into(),
                Value::Object(self.opts.extra_body.clone()),
            );
        }
        let prompt_template = match (self.opts.mode, self.opts.api) {
            (Mode::Image, Api::Chat) => format!("<image>{}", self.template),
            _ => self.template.clone(),
        };
        TeacherInfo {
            backend: "openai".into(),
            model: if self.opts.model.is_empty() {
                "(server default)".into()
            } else {
                self.opts.model.clone()
            },
            prompt_template,
            yes_tokens: self.opts.yes_tokens.clone(),
            no_tokens: self.opts.no_tokens.clone(),
            mode: self.opts.mode,
            extra,
        }
    }

    fn parallelism(&self) -> usize {
        self.client.endpoints().len() * self.opts.concurrency.max(1)
    }

    fn score(&self, subject: Subject<'_>, questions: &[Question]) -> Result<Vec<Score>> {
        let bodies = self.bodies(subject, questions)?;
        let lease = self.client.lease();
        let mut out = Vec::with_capacity(bodies.len());
        for body in &bodies {
            let got = self.client.post(&lease, self.path(), body, first_token)?;
            out.push(match got {
                Ok(FirstToken::Candidates(c)) => {
                    score_from_candidates(&c, &self.opts.yes_tokens, &self.opts.no_tokens)
                }
                Ok(FirstToken::Empty) | Err(_) => Score::missing(),
            });
        }
        Ok(out)
    }
}

/// The teacher for `opts`, with the API key from the environment.
pub fn build(opts: &OpenAiOptions) -> Result<Box<dyn Teacher>> {
    Ok(Box::new(OpenAiTeacher::new(opts)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Sample;

    fn teacher(mode: Mode, api: Api) -> OpenAiTeacher {
        let opts = OpenAiOptions {
            endpoints: vec!["http://127.0.0.1:9/v1".parse().unwrap()],
            model: "m".into(),
            mode,
            api,
            ..Default::default()
        };
        OpenAiTeacher::with_client(
            Client::with_api_key(&opts.endpoints, ClientOptions::default(), None).unwrap(),
            &opts,
        )
        .unwrap()
    }

    fn q(text: &str) -> Question {
        Question {
            id: "q1".into(),
            text: text.into(),
            kind: String::new(),
        }
    }

    #[test]
    fn class_mode_chat_body() {
        let t = teacher(Mode::Class, Api::Chat);
        let b = t
            .bodies(Subject::Class("Sneaker"), &[q("Does it have laces?")])
            .unwrap();
        assert_eq!(
            b[0],
            json!({"model":"m","messages":[{"role":"user","content":
                "Consider a typical image of a Sneaker. Does it have laces? The answer must always be either Yes or No (do not provide any other response)."}],
                "logprobs":true,"top_logprobs":20,"max_tokens":1,"temperature":0})
        );
        assert_eq!(t.parallelism(), 4);
        let info = t.info();
        assert_eq!(info.extra["api"], json!("chat"));
        assert!(info
            .prompt_template
            .starts_with("Consider a typical image of a {class}."));
    }

    #[test]
    fn image_mode_sends_png_first_then_text() {
        let t = teacher(Mode::Image, Api::Chat);
        let s = Sample {
            id: "img0".into(),
            image: RawImage {
                width: 2,
                height: 1,
                channels: 1,
                pixels: vec![0, 255],
            },
            label: 0,
        };
        let b = t
            .bodies(Subject::Image(&s), &[q("Is it bright?"), q("Is it dark?")])
            .unwrap();
        let content = &b[0]["messages"][0]["content"];
        let url = content[0]["image_url"]["url"].as_str().unwrap();
        let png = base64::engine::general_purpose::STANDARD
            .decode(url.strip_prefix("data:image/png;base64,").unwrap())
            .unwrap();
        let back = image::load_from_memory(&png).unwrap().to_luma8();
        assert_eq!(back.into_raw(), vec![0, 255]);
        assert_eq!(
            content[1]["text"],
            json!(format!("Is it bright? {ANSWER_CUE}"))
        );
        assert_eq!(b[1]["messages"][0]["content"][0], content[0]);
        assert!(t
            .info()
            .prompt_template
            .starts_with("<image>{question} The answer"));
    }

    #[test]
    fn completions_body_and_extras() {
        let opts = OpenAiOptions {
            endpoints: vec!["http://127.0.0.1:9".parse().unwrap()],
            mode: Mode::Class,
            api: Api::Completions,
            extra_body: serde_json::from_str(r#"{"cache_prompt":false}"#).unwrap(),
            ..Default::default()
        };
        let t = OpenAiTeacher::with_client(
            Client::with_api_key(&opts.endpoints, ClientOptions::default(), None).unwrap(),
            &opts,
        )
        .unwrap();
        let b = t
            .bodies(Subject::Class("Bag"), &[q("Has it a {class} handle?")])
            .unwrap();
        assert_eq!(
            b[0],
            json!({"prompt": format!("Question: Consider a typical image of a Bag. Has it a {{class}} handle? {ANSWER_CUE}\nAnswer:"),
                "logprobs":20,"max_tokens":1,"temperature":0,"cache_prompt":false})
        );
        assert_eq!(t.info().model, "(server default)");
    }

    #[test]
    fn bad_options_are_input_errors() {
        let base = OpenAiOptions {
            endpoints: vec!["http://127.0.0.1:9/v1".parse().unwrap()],
            ..Default::default()
        };
        let mk = |o: &OpenAiOptions| {
            OpenAiTeacher::with_client(
                Client::with_api_key(&o.endpoints, ClientOptions::default(), None).unwrap(),
                o,
            )
        };
        let o = OpenAiOptions {
            api: Api::Completions,
            ..base.clone()
        };
        assert!(matches!(mk(&o), Err(crate::Error::Input { .. })));
        let o = OpenAiOptions {
            mode: Mode::Class,
            prompt_template: Some("{question}".into()),
            ..base.clone()
        };
        assert!(matches!(mk(&o), Err(crate::Error::Input { .. })));
        assert!(build(&OpenAiOptions::default()).is_err());
        let s = Sample {
            id: "bad".into(),
            image: RawImage {
                width: 2,
                height: 2,
                channels: 3,
                pixels: vec![0; 5],
            },
            label: 0,
        };
        let t = mk(&base).unwrap();
        let err = t
            .bodies(Subject::Image(&s), &[q("Is it bright?")])
            .unwrap_err();
        assert!(err.to_string().starts_with("bad:"), "{err}");
    }
}
