//! Stage 1, the aspects: the yes/no questions a teacher answers about every image.
//!
//! - [`set`]: the file (`aspects.json`): classes, questions `{id, text, kind}`, how they were made
//!   (model, prompts, N generated, Q selected) and a content hash over the classes and questions.
//!   A score store records that hash, and training refuses a store whose hash differs.
//! - [`import`]: a hand-written list of questions and class names (`makd aspects import`).
//! - [`generate`]: the paper's two prompts to an LLM (generate N, select Q), parsing, validation
//!   and de-duplication (`makd aspects generate`), over the [`crate::llm`] client.

pub mod generate;
pub mod import;
pub mod set;

pub use set::{check_question, guess_kind, AspectSet, Provenance, Question, FORMAT_VERSION, KINDS};
