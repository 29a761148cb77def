//! makd — Multi-aspect Knowledge Distillation (arXiv 2501.13341) as one fast binary.
//!
//! The pipeline, stage by stage (each stage reads and writes one documented artifact):
//! 1. [`aspects`]: the yes/no questions about aspects of the objects (`aspects.json`).
//! 2. [`teacher`] + [`label`]: a (multimodal) LLM answers every (image, question) pair; P(yes) per
//!    pair goes into the [`scores`] store.
//! 3. [`student`] + [`train`]: a classifier with C + Q outputs learns CE on the class logits and
//!    α·BCE against P(yes) on the aspect logits.
//! 4. eval / predict on the resulting run dir.

pub mod aspects;
pub mod bench;
pub mod data;
pub mod detect;
pub mod error;
pub mod experiment;
pub mod files;
pub mod kernels;
pub mod label;
pub mod llm;
pub mod progress;
pub mod report;
pub mod scores;
pub mod student;
pub mod teacher;
pub mod train;

pub use error::{Error, Result};
