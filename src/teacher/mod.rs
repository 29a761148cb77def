//! Teachers: whatever answers the aspect questions with P(yes).
//!
//! A [`Teacher`] scores one group — an image (or, in class mode, a class name) together with a
//! list of questions — and returns one [`Score`] per question. The label driver
//! ([`crate::label`]) decides the order and the parallelism and writes the score store; teachers know
//! nothing about files.
//!
//! Implementations: [`table`] (values from an annotation file), [`openai`] (any OpenAI-compatible
//! server with logprobs), [`native`] (Qwen3-VL and text-only GGUF models run in process).
//! `spec::build` makes any of them from a `spec::TeacherSpec` (the one factory, above the
//! backends); [`yesno`] turns Yes/No token logits into P(yes) for every backend.

pub mod native;
pub mod openai;
pub mod spec;
pub mod table;
pub mod yesno;

use crate::aspects::Question;
use crate::data::Sample;
use crate::error::Result;
use serde::{Deserialize, Serialize};

/// Outcome of one (image, question) pair, as stored in the score store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u8)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Both Yes and No were among the returned candidates.
    Ok = 0,
    /// Only one side was returned: the other is bounded (see [`yesno`]).
    Floored = 1,
    /// Neither side was returned (or the server never answered): no target for this pair.
    Missing = 2,
}

impl Status {
    /// The byte the score store keeps.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// The status a store byte stands for, if any.
    pub fn from_u8(b: u8) -> Option<Status> {
        [Status::Ok, Status::Floored, Status::Missing]
            .into_iter()
            .find(|s| s.as_u8() == b)
    }

    /// Whether a pair with this status carries a training target: the one place this rule lives.
    pub fn is_usable(self) -> bool {
        matches!(self, Status::Ok | Status::Floored)
    }

    /// [`Status::is_usable`] for a store byte (an unknown byte is not usable).
    pub fn byte_is_usable(b: u8) -> bool {
        Status::from_u8(b).is_some_and(Status::is_usable)
    }
}

/// One (image, question) answer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Score {
    pub p_yes: f32,
    pub logit_yes: f32,
    pub logit_no: f32,
    pub status: Status,
}

impl Score {
    /// A pair with no usable answer. `p_yes` is NaN so it can never be mistaken for a value.
    pub fn missing() -> Score {
        Score {
            p_yes: f32::NAN,
            logit_yes: f32::NAN,
            logit_no: f32::NAN,
            status: Status::Missing,
        }
    }
}

/// What a teacher is asked about: an image, or (class mode, text-only LLMs) a class name whose
/// answers are broadcast to every image of that class.
#[derive(Clone, Copy, Debug)]
pub enum Subject<'a> {
    Image(&'a Sample),
    Class(&'a str),
}

/// Whether a label run asks about each image or about each class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Image,
    Class,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Image => "image",
            Mode::Class => "class",
        })
    }
}

/// How a teacher describes itself in the score store manifest. Never holds an API key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct TeacherInfo {
    /// `table`, `openai`, `native`, `text`.
    pub backend: String,
    /// Model name or file; for `table` the annotation file.
    pub model: String,
    /// The prompt template with `{question}` (and `{class}` in class mode) placeholders.
    pub prompt_template: String,
    /// The token spellings counted as Yes and as No.
    pub yes_tokens: Vec<String>,
    pub no_tokens: Vec<String>,
    pub mode: Mode,
    /// Anything else worth recording (endpoints without credentials, top_logprobs, …).
    #[serde(default)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// `extra` keys that say where a teacher was served, not what it answers: a score store resumes
/// and merges across them (another port, more vLLM endpoints, shards labeled on other machines).
pub const DEPLOYMENT_KEYS: &[&str] = &["endpoints"];

impl TeacherInfo {
    /// Whether two descriptions name the same teacher: equal in everything but [`DEPLOYMENT_KEYS`].
    pub fn same_teacher(&self, other: &TeacherInfo) -> bool {
        let strip = |t: &TeacherInfo| {
            let mut t = t.clone();
            for k in DEPLOYMENT_KEYS {
                t.extra.remove(*k);
            }
            t
        };
        strip(self) == strip(other)
    }
}

/// Answers aspect questions. Called from several threads at once when [`Teacher::parallelism`] > 1.
pub trait Teacher: Send + Sync {
    fn info(&self) -> TeacherInfo;
    /// How many groups the driver should keep in flight at once (e.g. endpoints × requests each).
    fn parallelism(&self) -> usize {
        1
    }
    /// Score `questions` about `subject`: one [`Score`] per question, in order. A pair the
    /// teacher could not answer is [`Score::missing`], not an error; an error stops the run.
    fn score(&self, subject: Subject<'_>, questions: &[Question]) -> Result<Vec<Score>>;
}

/// The cue appended to every question (the paper's wording).
pub const ANSWER_CUE: &str =
    "The answer must always be either Yes or No (do not provide any other response).";

/// Fill a prompt template's `{question}` and `{class}` in one pass (server and native teachers),
/// so a question that happens to contain the text
/// `{class}` is sent as written.
pub fn render_prompt(template: &str, class: &str, question: &str) -> String {
    let mut out = String::with_capacity(template.len() + question.len() + class.len());
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(t) = tail.strip_prefix("{question}") {
            out.push_str(question);
            rest = t;
        } else if let Some(t) = tail.strip_prefix("{class}") {
            out.push_str(class);
            rest = t;
        } else {
            out.push('{');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}
