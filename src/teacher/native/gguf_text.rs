//! A quantized text LLM loaded from one GGUF file: the architecture picked by
//! `general.architecture`, run by candle-transformers' quantized models on the CPU.

use crate::error::{input, Error, Result};
use crate::teacher::native::gemma3::Gemma3;
use crate::teacher::native::tokenizer::Tokenizer;
use candle_core::quantized::gguf_file::Content;
use candle_core::{Device, Tensor};
use candle_transformers::models::{quantized_qwen2, quantized_qwen3};
use std::path::Path;

enum Weights {
    Gemma3(Gemma3),
    Qwen2(quantized_qwen2::ModelWeights),
    Qwen3(quantized_qwen3::ModelWeights),
}

pub struct GgufText {
    weights: Weights,
    pub tokenizer: Tokenizer,
    pub architecture: String,
    device: Device,
}

fn model_err(path: &Path, e: impl std::fmt::Display) -> Error {
    input(
        format!("cannot load the GGUF model: {e}"),
        path.display().to_string(),
        "use a GGUF text model of a supported architecture (gemma3, qwen2, qwen3) as written by llama.cpp",
    )
}

impl GgufText {
    pub fn load(path: &Path) -> Result<GgufText> {
        let at = path.display().to_string();
        let mut file = std::fs::File::open(path).map_err(|e| {
            input(
                format!("cannot open the model file: {e}"),
                &at,
                "pass --gguf FILE.gguf, a local GGUF file",
            )
        })?;
        let ct = Content::read(&mut file).map_err(|e| {
            input(
                format!("not a readable GGUF file: {e}"),
                &at,
                "pass a .gguf model file (llama.cpp format)",
            )
        })?;
        let architecture = ct
            .metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_default();
        check_shape(&ct, &architecture, &at)?;
        let tokenizer = Tokenizer::from_gguf(&ct, &at)?;
        let device = Device::Cpu;
        let weights = match architecture.as_str() {
            "gemma3" => Weights::Gemma3(
                Gemma3::from_gguf(&ct, &mut file, &device)
                    .map_err(|e| model_err(path, e))?,
            ),
            "qwen2" => Weights::Qwen2(
                quantized_qwen2::ModelWeights::from_gguf(ct, &mut file, &device)
                    .map_err(|e| model_err(path, e))?,
            ),
            "qwen3" => Weights::Qwen3(
                quantized_qwen3::ModelWeights::from_gguf(ct, &mut file, &device)
                    .map_err(|e| model_err(path, e))?,
            ),
            other => {
                return Err(input(
                    format!("GGUF architecture `{other}` is not supported by --backend text"),
                    &at,
                    "supported: gemma3, qwen2, qwen3; other models can be served by llama.cpp and used with --backend openai",
                ))
            }
        };
        Ok(GgufText {
            weights,
            tokenizer,
            architecture,
            device,
        })
    }

    /// Log-probabilities of the token after `ids` over the whole vocabulary.
    pub fn next_logprobs(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        let mut run = || -> candle_core::Result<Vec<f32>> {
            let x = Tensor::new(ids, &self.device)?.unsqueeze(0)?;
            // Each prompt is independent: start from an empty KV cache at position 0.
            let logits = match &mut self.weights {
                Weights::Gemma3(m) => m.forward_last(ids)?.unsqueeze(0)?,
                Weights::Qwen2(m) => {
                    m.clear_kv_cache();
                    m.forward(&x, 0)?
                }
                Weights::Qwen3(m) => {
                    m.clear_kv_cache();
                    m.forward(&x, 0)?
                }
            };
            let logits = logits
                .squeeze(0)?
                .to_dtype(candle_core::DType::F32)?
                .to_vec1::<f32>()?;
            Ok(log_softmax(&logits))
        };
        Ok(run()?)
    }
}

/// The sizes the forward divides by, checked before any loader sees them: a GGUF with zero heads
/// would otherwise stop the process with a division by zero deep inside the model code.
fn check_shape(ct: &Content, arch: &str, at: &str) -> Result<()> {
    let get = |k: &str| {
        ct.metadata
            .get(&format!("{arch}.{k}"))
            .and_then(|v| v.to_u32().ok())
    };
    for k in [
        "block_count",
        "embedding_length",
        "attention.head_count",
        "attention.head_count_kv",
    ] {
        if get(k) == Some(0) {
            return Err(input(
                format!("{arch}.{k} is 0"),
                at,
                "the GGUF's metadata is damaged or was written by a buggy converter",
            ));
        }
    }
    if let (Some(h), Some(kv)) = (get("attention.head_count"), get("attention.head_count_kv")) {
        if !h.is_multiple_of(kv) {
            return Err(input(
                format!("{arch}: {h} attention heads are not a multiple of {kv} key/value heads"),
                at,
                "the GGUF's metadata is damaged or was written by a buggy converter",
            ));
        }
    }
    Ok(())
}

/// log-softmax in f64 accumulation, so tiny probabilities keep their logprob exactly.
pub fn log_softmax(x: &[f32]) -> Vec<f32> {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = x.iter().map(|&v| (v as f64 - max).exp()).sum();
    let lse = max + sum.ln();
    x.iter().map(|&v| (v as f64 - lse) as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::gguf_file::Value;

    fn write_gguf(path: &Path, md: &[(&str, Value)]) {
        let mut f = std::fs::File::create(path).unwrap();
        let md: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (*k, v)).collect();
        candle_core::quantized::gguf_file::write(&mut f, &md, &[]).unwrap();
    }

    #[test]
    fn zero_heads_are_an_input_error_not_a_division_by_zero() {
        let dir = tempfile::tempdir().unwrap();
        for (heads, kv, needle) in [
            (0u32, 1u32, "head_count is 0"),
            (4, 0, "head_count_kv is 0"),
            (4, 3, "not a multiple"),
        ] {
            let p = dir.path().join("m.gguf");
            write_gguf(
                &p,
                &[
                    ("general.architecture", Value::String("qwen2".into())),
                    ("qwen2.block_count", Value::U32(1)),
                    ("qwen2.embedding_length", Value::U32(8)),
                    ("qwen2.attention.head_count", Value::U32(heads)),
                    ("qwen2.attention.head_count_kv", Value::U32(kv)),
                ],
            );
            let err = GgufText::load(&p).err().expect("refused");
            assert!(
                matches!(&err, Error::Input { what, .. } if what.contains(needle)),
                "{heads}/{kv}: {err}"
            );
        }
    }
}
