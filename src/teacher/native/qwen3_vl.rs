//! Qwen3-VL (vision tower + text decoder) on candle tensors, written here to match Hugging Face
//! transformers' `Qwen3VLForConditionalGeneration` numerically.
//!
//! candle-transformers 0.11 has a `qwen3_vl`, but its text model applies 1-D RoPE where Qwen3-VL
//! uses interleaved multimodal RoPE (separate temporal/height/width positions for image tokens),
//! it builds no causal mask for multi-token prompts, and its layers keep a hidden KV cache that
//! cannot be shared between prompts. Scoring many questions about one image needs exactly that
//! sharing, so the forward is ours:
//!
//! - **Vision.** Patches (already flattened by [`super::vl_image`] in HF's order: merge blocks,
//!   then channel × temporal × row × column) go through the Conv3d patch embedding as one matmul,
//!   plus the learned position table resampled to the image's grid (bilinear, corners aligned).
//!   Each block is pre-LayerNorm (ε 1e-6) full attention with 2-D rotary positions (row, column)
//!   and a tanh-GELU MLP. The merger LayerNorms each patch, concatenates 2×2 neighbours and
//!   projects them with an exact-GELU MLP to the text width; "DeepStack" mergers do the same on
//!   the outputs of some early blocks (normalising after concatenation).
//! - **Text.** Qwen3 decoder layers (RMSNorm, per-head RMSNorm of Q and K, SiLU MLP, grouped KV
//!   heads) with interleaved MRoPE: frequency `j` of the head is driven by the height position if
//!   `j % 3 == 1` and `j < 3·section[1]`, by the width position if `j % 3 == 2` and
//!   `j < 3·section[2]`, and by the temporal position otherwise. Text tokens have all three equal;
//!   the image's merged tokens get (start, start + row, start + column), and the text after the
//!   image continues from start + max(rows, columns). After decoder layer `i` the `i`-th DeepStack
//!   feature is added to the hidden states of the image tokens.
//! - **Prefix sharing.** [`Qwen3Vl::prefill`] runs `[system][image][prompt head]` once and keeps
//!   its keys and values; [`Qwen3Vl::suffix_logprobs`] then runs all question suffixes packed
//!   end to end (no padding), each attending to the shared prefix and its own past, and returns the
//!   next-token log-probabilities at each suffix's last real token.

use super::qwen_decoder::{DecoderShape, Generation, KvCache, QwenDecoder};
use crate::error::{input, IoContext, Result};
use candle_core::{DType, Device, IndexOp, Module, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{LayerNorm, Linear, RmsNorm, VarBuilder};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;

/// The parts of a Qwen3-VL `config.json` this implementation reads, resolved.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Qwen3VlConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub mrope_section: [usize; 3],
    pub tie_word_embeddings: bool,
    pub attention_bias: bool,
    pub vision: VisionConfig,
    pub image_token_id: u32,
    pub vision_start_token_id: u32,
    pub vision_end_token_id: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VisionConfig {
    pub depth: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_heads: usize,
    pub in_channels: usize,
    pub patch_size: usize,
    pub spatial_merge_size: usize,
    pub temporal_patch_size: usize,
    pub out_hidden_size: usize,
    pub num_position_embeddings: usize,
    pub deepstack_visual_indexes: Vec<usize>,
    pub rope_theta: f64,
    /// `gelu_pytorch_tanh` (Qwen3-VL) or `gelu` (exact).
    pub hidden_act: String,
}

impl Qwen3VlConfig {
    /// Read `config.json` of a Hugging Face Qwen3-VL folder. Keys this model does not use are
    /// ignored (the file is Hugging Face's, not ours); missing required ones are errors.
    pub fn from_file(path: &Path) -> Result<Qwen3VlConfig> {
        Self::from_json(&read_config_json(path)?, &path.display().to_string())
    }

    pub fn from_json(v: &Value, at: &str) -> Result<Qwen3VlConfig> {
        let arch = v["model_type"].as_str().unwrap_or("");
        if arch != "qwen3_vl" {
            return Err(input(
                format!("model_type is `{arch}`, not `qwen3_vl`"),
                at,
                "the native backend loads Qwen3-VL dense models (e.g. Qwen/Qwen3-VL-2B-Instruct)",
            ));
        }
        let t = &v["text_config"];
        let vc = &v["vision_config"];
        // Every size and count read here divides something later (head_dim = hidden / heads,
        // grids by the merge size): zero is refused here, not as a division by zero there.
        let need = |o: &Value, k: &str, sect: &str| -> Result<usize> {
            match o[k].as_u64() {
                Some(0) => Err(input(
                    format!("`{sect}.{k}` is 0"),
                    at,
                    "sizes and counts in config.json must be at least 1",
                )),
                Some(x) => Ok(x as usize),
                None => Err(input(
                    format!("`{sect}.{k}` is missing or not a number"),
                    at,
                    "the config.json of a Qwen3-VL checkpoint has it",
                )),
            }
        };
        let optional = |o: &Value, k: &str, sect: &str, default: usize| -> Result<usize> {
            if o[k].is_null() {
                Ok(default)
            } else {
                need(o, k, sect)
            }
        };
        let rope = if t["rope_parameters"].is_object() {
            &t["rope_parameters"]
        } else {
            &t["rope_scaling"]
        };
        let rope_theta = t["rope_theta"]
            .as_f64()
            .or_else(|| rope["rope_theta"].as_f64())
            .unwrap_or(5_000_000.0);
        let sec: Vec<usize> = rope["mrope_section"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_u64().map(|x| x as usize))
                    .collect()
            })
            .unwrap_or_else(|| vec![24, 20, 20]);
        let heads = need(t, "num_attention_heads", "text_config")?;
        let hidden = need(t, "hidden_size", "text_config")?;
        let head_dim = optional(t, "head_dim", "text_config", hidden / heads)?;
        let kv_heads = optional(t, "num_key_value_heads", "text_config", heads)?;
        if head_dim == 0 || !heads.is_multiple_of(kv_heads) {
            return Err(input(
                format!(
                    "text_config: {heads} attention heads, {kv_heads} key/value heads, head_dim {head_dim}"
                ),
                at,
                "head_dim must be at least 1 and num_attention_heads a multiple of num_key_value_heads",
            ));
        }
        if sec.len() != 3 || sec.iter().sum::<usize>() != head_dim / 2 {
            return Err(input(
                format!(
                    "mrope_section {sec:?} does not sum to head_dim/2 = {}",
                    head_dim / 2
                ),
                at,
                "Qwen3-VL uses [24, 20, 20] with head_dim 128",
            ));
        }
        if rope["mrope_interleaved"].as_bool() == Some(false) {
            return Err(input(
                "mrope_interleaved is false (Qwen2-VL style chunked MRoPE)",
                at,
                "only Qwen3-VL's interleaved MRoPE is implemented",
            ));
        }
        let vrope = &vc["rope_parameters"];
        let vision = VisionConfig {
            depth: need(vc, "depth", "vision_config")?,
            hidden_size: need(vc, "hidden_size", "vision_config")?,
            intermediate_size: need(vc, "intermediate_size", "vision_config")?,
            num_heads: need(vc, "num_heads", "vision_config")?,
            in_channels: optional(vc, "in_channels", "vision_config", 3)?,
            patch_size: need(vc, "patch_size", "vision_config")?,
            spatial_merge_size: optional(vc, "spatial_merge_size", "vision_config", 2)?,
            temporal_patch_size: optional(vc, "temporal_patch_size", "vision_config", 2)?,
            out_hidden_size: need(vc, "out_hidden_size", "vision_config")?,
            num_position_embeddings: need(vc, "num_position_embeddings", "vision_config")?,
            deepstack_visual_indexes: vc["deepstack_visual_indexes"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_u64().map(|x| x as usize))
                        .collect()
                })
                .unwrap_or_default(),
            rope_theta: vrope["rope_theta"]
                .as_f64()
                .or_else(|| vc["rope_theta"].as_f64())
                .unwrap_or(10_000.0),
            hidden_act: vc["hidden_act"]
                .as_str()
                .unwrap_or("gelu_pytorch_tanh")
                .to_string(),
        };
        if !vision.hidden_size.is_multiple_of(vision.num_heads) {
            return Err(input(
                format!(
                    "vision_config: hidden_size {} is not a multiple of num_heads {}",
                    vision.hidden_size, vision.num_heads
                ),
                at,
                "check config.json",
            ));
        }
        let act = t["hidden_act"].as_str().unwrap_or("silu");
        if act != "silu" {
            return Err(input(
                format!("text hidden_act `{act}` is not supported"),
                at,
                "Qwen3-VL uses silu",
            ));
        }
        if !matches!(
            vision.hidden_act.as_str(),
            "gelu_pytorch_tanh" | "gelu" | "gelu_new"
        ) {
            return Err(input(
                format!("vision hidden_act `{}` is not supported", vision.hidden_act),
                at,
                "Qwen3-VL uses gelu_pytorch_tanh",
            ));
        }
        let tie = v["tie_word_embeddings"]
            .as_bool()
            .or_else(|| t["tie_word_embeddings"].as_bool())
            .unwrap_or(false);
        Ok(Qwen3VlConfig {
            vocab_size: need(t, "vocab_size", "text_config")?,
            hidden_size: hidden,
            intermediate_size: need(t, "intermediate_size", "text_config")?,
            num_hidden_layers: need(t, "num_hidden_layers", "text_config")?,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            head_dim,
            rms_norm_eps: t["rms_norm_eps"].as_f64().unwrap_or(1e-6),
            rope_theta,
            mrope_section: [sec[0], sec[1], sec[2]],
            tie_word_embeddings: tie,
            attention_bias: t["attention_bias"].as_bool().unwrap_or(false),
            vision,
            image_token_id: v["image_token_id"].as_u64().unwrap_or(151655) as u32,
            vision_start_token_id: v["vision_start_token_id"].as_u64().unwrap_or(151652) as u32,
            vision_end_token_id: v["vision_end_token_id"].as_u64().unwrap_or(151653) as u32,
        })
    }

    /// Qwen3-VL-2B-Instruct's shapes (text 1.7B, vision 0.4B), for benchmarks on random weights.
    pub fn qwen3_vl_2b() -> Qwen3VlConfig {
        Qwen3VlConfig {
            vocab_size: 151936,
            hidden_size: 2048,
            intermediate_size: 6144,
            num_hidden_layers: 28,
            num_attention_heads: 16,
            num_key_value_heads: 8,
            head_dim: 128,
            rms_norm_eps: 1e-6,
            rope_theta: 5_000_000.0,
            mrope_section: [24, 20, 20],
            tie_word_embeddings: true,
            attention_bias: false,
            vision: VisionConfig {
                depth: 24,
                hidden_size: 1024,
                intermediate_size: 4096,
                num_heads: 16,
                in_channels: 3,
                patch_size: 16,
                spatial_merge_size: 2,
                temporal_patch_size: 2,
                out_hidden_size: 2048,
                num_position_embeddings: 2304,
                deepstack_visual_indexes: vec![5, 11, 17],
                rope_theta: 10_000.0,
                hidden_act: "gelu_pytorch_tanh".into(),
            },
            image_token_id: 151655,
            vision_start_token_id: 151652,
            vision_end_token_id: 151653,
        }
    }

    /// A tiny shape of the same architecture (text: 2 layers, hidden 128, vocabulary 4096;
    /// vision: 2 blocks, hidden 64) for tests and smoke runs of the benchmark.
    pub fn tiny() -> Qwen3VlConfig {
        let mut c = Qwen3VlConfig::qwen3_vl_2b();
        c.vocab_size = 4096;
        c.hidden_size = 128;
        c.intermediate_size = 256;
        c.num_hidden_layers = 2;
        c.num_attention_heads = 4;
        c.num_key_value_heads = 2;
        c.head_dim = 32;
        c.mrope_section = [6, 5, 5];
        c.tie_word_embeddings = false;
        c.vision.depth = 2;
        c.vision.hidden_size = 64;
        c.vision.intermediate_size = 128;
        c.vision.num_heads = 2;
        c.vision.out_hidden_size = 128;
        c.vision.num_position_embeddings = 64;
        c.vision.deepstack_visual_indexes = vec![0, 1];
        (
            c.vision_start_token_id,
            c.vision_end_token_id,
            c.image_token_id,
        ) = (4093, 4094, 4095);
        c
    }

    pub(super) fn decoder_shape(&self) -> DecoderShape {
        DecoderShape {
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            num_key_value_heads: self.num_key_value_heads,
            head_dim: self.head_dim,
            rms_norm_eps: self.rms_norm_eps,
        }
    }

    /// FLOPs (matmuls only) of a text prefill of `t` new tokens attending to `past` earlier ones,
    /// with `rows_out` rows through the vocabulary head: the benchmark's ceiling model.
    pub fn text_flops(&self, t: usize, past: usize, rows_out: usize) -> f64 {
        let h = self.hidden_size as f64;
        let q = (self.num_attention_heads * self.head_dim) as f64;
        let kv = (self.num_key_value_heads * self.head_dim) as f64;
        let per_tok = 2.0 * (h * (q + 2.0 * kv) + q * h + 3.0 * h * self.intermediate_size as f64);
        let ctx = past as f64 + (t as f64 + 1.0) / 2.0;
        let attn = 4.0 * q * ctx;
        let layers = self.num_hidden_layers as f64;
        t as f64 * layers * (per_tok + attn) + 2.0 * h * self.vocab_size as f64 * rows_out as f64
    }

    /// FLOPs (matmuls only) of the vision tower on `n` patches: patch embedding, blocks, the
    /// merger and the DeepStack mergers.
    pub fn vision_flops(&self, n: usize) -> f64 {
        let v = &self.vision;
        let (vh, n) = (v.hidden_size as f64, n as f64);
        let k = (v.in_channels * v.temporal_patch_size * v.patch_size * v.patch_size) as f64;
        let block =
            2.0 * n * (4.0 * vh * vh + 2.0 * vh * v.intermediate_size as f64) + 4.0 * n * n * vh;
        let m = vh * (v.spatial_merge_size * v.spatial_merge_size) as f64;
        let merger = 2.0 * (n / 4.0) * (m * m + m * v.out_hidden_size as f64);
        2.0 * n * k * vh
            + v.depth as f64 * block
            + (1 + v.deepstack_visual_indexes.len()) as f64 * merger
    }

    /// Parameters of the text decoder and of the vision tower.
    pub fn param_counts(&self) -> (usize, usize) {
        let h = self.hidden_size;
        let kv = self.num_key_value_heads * self.head_dim;
        let q = self.num_attention_heads * self.head_dim;
        let layer = h * (q + 2 * kv) + q * h + 3 * h * self.intermediate_size + 2 * h;
        let head = if self.tie_word_embeddings {
            0
        } else {
            self.vocab_size * h
        };
        let text = self.vocab_size * h + self.num_hidden_layers * layer + head;
        let v = &self.vision;
        let vh = v.hidden_size;
        let block = vh * 3 * vh + vh * vh + 2 * vh * v.intermediate_size;
        let m = vh * v.spatial_merge_size * v.spatial_merge_size;
        let merger = m * m + m * v.out_hidden_size;
        let patch = vh * v.in_channels * v.temporal_patch_size * v.patch_size * v.patch_size;
        let vision = patch
            + v.num_position_embeddings * vh
            + v.depth * block
            + (1 + v.deepstack_visual_indexes.len()) * merger;
        (text, vision)
    }
}

/// A Hugging Face `config.json` as JSON (an unreadable or malformed file is an input error).
pub(super) fn read_config_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).at(path)?;
    serde_json::from_str(&text).map_err(|e| {
        input(
            format!("not valid JSON: {e}"),
            path.display().to_string(),
            "expected a Hugging Face config.json",
        )
    })
}

/// Every `*.safetensors` file of a model folder (one file or shards), sorted; none is an error.
pub(super) fn safetensors_files(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .at(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(input(
            "no *.safetensors weights",
            dir.display().to_string(),
            "the folder must hold the model's weights (model.safetensors or shards)",
        ));
    }
    Ok(files)
}

pub(super) fn linear(
    vb: &VarBuilder,
    inp: usize,
    out: usize,
    bias: bool,
) -> candle_core::Result<Linear> {
    let w = vb.get((out, inp), "weight")?;
    let b = if bias {
        Some(vb.get(out, "bias")?)
    } else {
        None
    };
    Ok(Linear::new(w, b))
}

pub(super) fn layer_norm(vb: &VarBuilder, size: usize, eps: f64) -> candle_core::Result<LayerNorm> {
    Ok(LayerNorm::new(
        vb.get(size, "weight")?,
        vb.get(size, "bias")?,
        eps,
    ))
}

pub(super) fn rms_norm(vb: &VarBuilder, size: usize, eps: f64) -> candle_core::Result<RmsNorm> {
    Ok(RmsNorm::new(vb.get(size, "weight")?, eps))
}

/// `x @ w.T + b` for `x` of any rank (flattened to 2-D for one GEMM).
pub(super) fn apply(l: &Linear, x: &Tensor) -> candle_core::Result<Tensor> {
    let dims = x.dims().to_vec();
    let last = dims[dims.len() - 1];
    let rows = x.elem_count() / last;
    let y = l.forward(&x.reshape((rows, last))?)?;
    let mut out = dims;
    let n = out.len();
    out[n - 1] = y.dim(1)?;
    y.reshape(out)
}

struct VisionBlock {
    norm1: LayerNorm,
    norm2: LayerNorm,
    qkv: Linear,
    proj: Linear,
    fc1: Linear,
    fc2: Linear,
}

struct Merger {
    norm: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    postshuffle: bool,
}

impl Merger {
    fn load(vb: VarBuilder, c: &VisionConfig, postshuffle: bool) -> candle_core::Result<Merger> {
        let m = c.hidden_size * c.spatial_merge_size * c.spatial_merge_size;
        Ok(Merger {
            norm: layer_norm(
                &vb.pp("norm"),
                if postshuffle { m } else { c.hidden_size },
                1e-6,
            )?,
            fc1: linear(&vb.pp("linear_fc1"), m, m, true)?,
            fc2: linear(&vb.pp("linear_fc2"), m, c.out_hidden_size, true)?,
            postshuffle,
        })
    }

    fn forward(&self, x: &Tensor, unit: usize) -> candle_core::Result<Tensor> {
        let (n, h) = x.dims2()?;
        let x = if self.postshuffle {
            self.norm.forward(&x.reshape((n / unit, h * unit))?)?
        } else {
            self.norm.forward(x)?.reshape((n / unit, h * unit))?
        };
        self.fc2.forward(&self.fc1.forward(&x)?.gelu_erf()?)
    }
}

/// What the vision tower gives the text model for one image: the merged tokens and one
/// DeepStack feature per `deepstack_visual_indexes` entry, all `[tokens, text hidden]`.
pub struct VisionOut {
    pub embeds: Tensor,
    pub deepstack: Vec<Tensor>,
    /// The image grid in patches (t, h, w).
    pub grid: [usize; 3],
}

/// Keys and values of a shared prompt prefix, per text layer `[1, kv heads, len, head dim]`,
/// and the MRoPE position the next token takes.
pub struct Prefix {
    kv: KvCache,
    pub len: usize,
    pub next_pos: u32,
    /// Log-probabilities of the token after the prefix (`[vocab]`).
    pub last_logprobs: Tensor,
}

pub struct Qwen3Vl {
    pub cfg: Qwen3VlConfig,
    device: Device,
    dtype: DType,
    // vision
    patch_w: Tensor,
    patch_b: Tensor,
    pos_embed: Tensor,
    blocks: Vec<VisionBlock>,
    merger: Merger,
    deepstack: Vec<Merger>,
    text: QwenDecoder,
}

impl Qwen3Vl {
    /// Load `config.json` and every `*.safetensors` of a Hugging Face Qwen3-VL folder.
    pub fn load(dir: &Path, device: &Device, dtype: DType) -> Result<Qwen3Vl> {
        let cfg = Qwen3VlConfig::from_file(&dir.join("config.json"))?;
        let files = safetensors_files(dir)?;
        // SAFETY: the files are memory-mapped read-only; a file changed underneath a running
        // process is the user's doing, as with any mmap-based loader.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files, dtype, device)? };
        Self::with_progress(cfg, vb, "loading").map_err(|e| {
            input(
                format!("cannot load the weights: {e}"),
                dir.display().to_string(),
                "the checkpoint's tensor names and shapes must match config.json (Qwen3-VL dense)",
            )
        })
    }

    /// A model of the given shape with random weights (benchmarks): no file is read.
    pub fn random(cfg: Qwen3VlConfig, device: &Device, dtype: DType, seed: u64) -> Result<Qwen3Vl> {
        let vb = VarBuilder::from_backend(Box::new(RandomWeights { seed }), dtype, device.clone());
        Ok(Self::with_progress(cfg, vb, "random weights")?)
    }

    /// Build from a VarBuilder with a progress bar over the layers on stderr.
    fn with_progress(
        cfg: Qwen3VlConfig,
        vb: VarBuilder,
        what: &str,
    ) -> candle_core::Result<Qwen3Vl> {
        let layers = cfg.vision.depth + cfg.num_hidden_layers;
        let pb = crate::progress::bar(layers as u64, what, "layers");
        let m = Self::build(cfg, vb, &|| pb.inc(1));
        pb.finish_and_clear();
        m
    }

    pub fn new(cfg: Qwen3VlConfig, vb: VarBuilder) -> candle_core::Result<Qwen3Vl> {
        Self::build(cfg, vb, &|| ())
    }

    fn build(
        cfg: Qwen3VlConfig,
        vb: VarBuilder,
        layer_done: &dyn Fn(),
    ) -> candle_core::Result<Qwen3Vl> {
        let device = vb.device().clone();
        let dtype = vb.dtype();
        let c = &cfg.vision;
        let vv = vb.pp("model").pp("visual");
        let k = c.in_channels * c.temporal_patch_size * c.patch_size * c.patch_size;
        let patch_w = vv
            .pp("patch_embed.proj")
            .get(
                (
                    c.hidden_size,
                    c.in_channels,
                    c.temporal_patch_size,
                    c.patch_size,
                    c.patch_size,
                ),
                "weight",
            )?
            .reshape((c.hidden_size, k))?;
        let patch_b = vv.pp("patch_embed.proj").get(c.hidden_size, "bias")?;
        let pos_embed = vv
            .pp("pos_embed")
            .get((c.num_position_embeddings, c.hidden_size), "weight")?;
        let mut blocks = Vec::with_capacity(c.depth);
        for i in 0..c.depth {
            let b = vv.pp("blocks").pp(i);
            let h = c.hidden_size;
            blocks.push(VisionBlock {
                norm1: layer_norm(&b.pp("norm1"), h, 1e-6)?,
                norm2: layer_norm(&b.pp("norm2"), h, 1e-6)?,
                qkv: linear(&b.pp("attn.qkv"), h, 3 * h, true)?,
                proj: linear(&b.pp("attn.proj"), h, h, true)?,
                fc1: linear(&b.pp("mlp.linear_fc1"), h, c.intermediate_size, true)?,
                fc2: linear(&b.pp("mlp.linear_fc2"), c.intermediate_size, h, true)?,
            });
            layer_done();
        }
        let merger = Merger::load(vv.pp("merger"), c, false)?;
        let deepstack = (0..c.deepstack_visual_indexes.len())
            .map(|i| Merger::load(vv.pp("deepstack_merger_list").pp(i), c, true))
            .collect::<candle_core::Result<Vec<_>>>()?;

        let tied = cfg.tie_word_embeddings && !vb.contains_tensor("lm_head.weight");
        let text = QwenDecoder::load(
            &vb.pp("model").pp("language_model"),
            &cfg.decoder_shape(),
            Generation::Qwen3 {
                attention_bias: cfg.attention_bias,
            },
            |embed| {
                if tied {
                    Ok(embed.clone())
                } else {
                    vb.pp("lm_head")
                        .get((cfg.vocab_size, cfg.hidden_size), "weight")
                }
            },
            layer_done,
        )?;
        Ok(Qwen3Vl {
            cfg,
            device,
            dtype,
            patch_w,
            patch_b,
            pos_embed,
            blocks,
            merger,
            deepstack,
            text,
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Run the vision tower on one image's patches (`[t·h·w, C·T·P·P]`, HF order) of grid
    /// `(t, h, w)` patches.
    pub fn encode_image(&self, patches: &[f32], grid: [usize; 3]) -> Result<VisionOut> {
        Ok(self.encode_image_inner(patches, grid)?)
    }

    fn encode_image_inner(
        &self,
        patches: &[f32],
        grid: [usize; 3],
    ) -> candle_core::Result<VisionOut> {
        let c = &self.cfg.vision;
        let [t, gh, gw] = grid;
        let m = c.spatial_merge_size;
        let n = t * gh * gw;
        let k = self.patch_w.dim(1)?;
        if patches.len() != n * k || gh % m != 0 || gw % m != 0 {
            candle_core::bail!(
                "{} pixel values do not form a {t}x{gh}x{gw} grid of {k}-value patches divisible by {m}",
                patches.len()
            );
        }
        let x = Tensor::from_slice(patches, (n, k), &self.device)?.to_dtype(self.dtype)?;
        let mut x = x.matmul(&self.patch_w.t()?)?.broadcast_add(&self.patch_b)?;

        // Each patch's (row, column), in merge-block order.
        let rc: Vec<(usize, usize)> = (0..n)
            .map(|i| {
                let w = i % (gh * gw);
                let (in_col, in_row) = (w % m, (w / m) % m);
                let blocks_w = gw / m;
                let (block_col, block_row) = ((w / (m * m)) % blocks_w, w / (m * m * blocks_w));
                (block_row * m + in_row, block_col * m + in_col)
            })
            .collect();

        // Learned positions, bilinearly resampled (corners aligned) from the square table.
        let side = (c.num_position_embeddings as f64).sqrt() as usize;
        let axis = |i: usize, size: usize| -> [(usize, f32); 2] {
            let src = i as f32 * (side as f32 - 1.0) / (size.max(2) - 1) as f32;
            let f = src.floor();
            let d = src - f;
            let f = f as usize;
            [
                (f.min(side - 1), (1.0 - d).max(0.0)),
                ((f + 1).min(side - 1), (1.0 - (1.0 - d).abs()).max(0.0)),
            ]
        };
        let mut idx = Vec::with_capacity(n * 4);
        let mut wts = Vec::with_capacity(n * 4);
        for &(r, col) in &rc {
            for (hr, hw) in axis(r, gh) {
                for (wc, ww) in axis(col, gw) {
                    idx.push((hr * side + wc) as u32);
                    wts.push(hw * ww);
                }
            }
        }
        let idx = Tensor::from_vec(idx, n * 4, &self.device)?;
        let wts = Tensor::from_vec(wts, (n, 4, 1), &self.device)?.to_dtype(self.dtype)?;
        let pos = self
            .pos_embed
            .index_select(&idx, 0)?
            .reshape((n, 4, c.hidden_size))?
            .broadcast_mul(&wts)?
            .sum(1)?;
        x = (x + pos)?;

        // 2-D rotary angles: the first quarter of the head's frequencies from the row, the
        // second from the column, the whole repeated for the two halves (rotate-half layout).
        let hd = c.hidden_size / c.num_heads;
        let quarter = hd / 4;
        let inv: Vec<f32> = (0..quarter)
            .map(|j| 1.0 / (c.rope_theta as f32).powf((2 * j) as f32 / (hd / 2) as f32))
            .collect();
        let mut ang = Vec::with_capacity(n * hd / 2);
        for &(r, col) in &rc {
            ang.extend(inv.iter().map(|f| r as f32 * f));
            ang.extend(inv.iter().map(|f| col as f32 * f));
        }
        let ang = Tensor::from_vec(ang, (n, hd / 2), &self.device)?;
        let (cos, sin) = (
            ang.cos()?.to_dtype(self.dtype)?,
            ang.sin()?.to_dtype(self.dtype)?,
        );

        let scale = (hd as f64).powf(-0.5);
        let tanh_gelu = c.hidden_act != "gelu";
        let mut deepstack = Vec::new();
        for (i, b) in self.blocks.iter().enumerate() {
            let y = b.norm1.forward(&x)?;
            let qkv = b.qkv.forward(&y)?.reshape((n, 3, c.num_heads, hd))?;
            let heads = |j: usize| -> candle_core::Result<Tensor> {
                qkv.i((.., j))?.transpose(0, 1)?.unsqueeze(0)?.contiguous()
            };
            // Scaled before the product: n×d multiplications instead of n×n.
            let q = (candle_nn::rotary_emb::rope(&heads(0)?, &cos, &sin)? * scale)?;
            let kk = candle_nn::rotary_emb::rope(&heads(1)?, &cos, &sin)?;
            let v = heads(2)?;
            let o = full_attention(&q.squeeze(0)?, &kk.squeeze(0)?.t()?, &v.squeeze(0)?)?
                .transpose(0, 1)?
                .reshape((n, c.hidden_size))?;
            x = (x + b.proj.forward(&o)?)?;
            let y = b.fc1.forward(&b.norm2.forward(&x)?)?;
            let y = if tanh_gelu { y.gelu()? } else { y.gelu_erf()? };
            x = (&x + b.fc2.forward(&y)?)?;
            if let Some(j) = c.deepstack_visual_indexes.iter().position(|&d| d == i) {
                deepstack.push((j, self.deepstack[j].forward(&x, m * m)?));
            }
        }
        deepstack.sort_by_key(|(j, _)| *j);
        Ok(VisionOut {
            embeds: self.merger.forward(&x, m * m)?,
            deepstack: deepstack.into_iter().map(|(_, t)| t).collect(),
            grid,
        })
    }

    /// MRoPE positions (t, h, w) of a prompt whose image placeholder tokens (if any) form one
    /// contiguous run, and the position the next token takes.
    pub fn positions(&self, ids: &[u32], grid: Option<[usize; 3]>) -> Result<(Vec<[u32; 3]>, u32)> {
        let m = self.cfg.vision.spatial_merge_size;
        let img = self.cfg.image_token_id;
        let span = image_span(ids, img)?;
        let mut pos = Vec::with_capacity(ids.len());
        let mut cur = 0u32;
        let mut i = 0;
        while i < ids.len() {
            match span {
                Some((s, e)) if i == s => {
                    let [gt, gh, gw] = grid.ok_or_else(|| {
                        input(
                            "the prompt has image tokens but no image was given",
                            "Qwen3-VL prompt",
                            "pass the image with the prompt",
                        )
                    })?;
                    let (lh, lw) = (gh / m, gw / m);
                    if gt * lh * lw != e - s {
                        return Err(input(
                            format!(
                                "{} image tokens in the prompt, the image has {}",
                                e - s,
                                gt * lh * lw
                            ),
                            "Qwen3-VL prompt",
                            "the number of <|image_pad|> tokens must equal the merged grid size",
                        ));
                    }
                    for tt in 0..gt {
                        for r in 0..lh {
                            for col in 0..lw {
                                pos.push([cur + tt as u32, cur + r as u32, cur + col as u32]);
                            }
                        }
                    }
                    cur += lh.max(lw) as u32;
                    i = e;
                }
                _ => {
                    pos.push([cur; 3]);
                    cur += 1;
                    i += 1;
                }
            }
        }
        Ok((pos, cur))
    }

    /// cos/sin tables `[len, head_dim/2]` for MRoPE positions.
    fn mrope(&self, pos: &[[u32; 3]]) -> candle_core::Result<(Tensor, Tensor)> {
        let hd = self.cfg.head_dim;
        let half = hd / 2;
        let sec = self.cfg.mrope_section;
        let inv: Vec<f32> = (0..half)
            .map(|j| 1.0 / (self.cfg.rope_theta as f32).powf((2 * j) as f32 / hd as f32))
            .collect();
        let axis: Vec<usize> = (0..half)
            .map(|j| {
                if j % 3 == 1 && j < 3 * sec[1] {
                    1
                } else if j % 3 == 2 && j < 3 * sec[2] {
                    2
                } else {
                    0
                }
            })
            .collect();
        let mut ang = Vec::with_capacity(pos.len() * half);
        for p in pos {
            ang.extend((0..half).map(|j| p[axis[j]] as f32 * inv[j]));
        }
        let ang = Tensor::from_vec(ang, (pos.len(), half), &self.device)?;
        Ok((
            ang.cos()?.to_dtype(self.dtype)?,
            ang.sin()?.to_dtype(self.dtype)?,
        ))
    }

    /// Run a whole prompt (with its image when it has image tokens) and keep its keys and values
    /// for [`Qwen3Vl::suffix_logprobs`]. The prefix's own next-token log-probabilities come back
    /// too, so a prompt run this way in full is the unshared reference path.
    pub fn prefill(&self, ids: &[u32], image: Option<&VisionOut>) -> Result<Prefix> {
        let (pos, next) = self.positions(ids, image.map(|v| v.grid))?;
        let span = image_span(ids, self.cfg.image_token_id)?;
        Ok(self.prefill_inner(ids, &pos, next, span, image)?)
    }

    fn prefill_inner(
        &self,
        ids: &[u32],
        pos: &[[u32; 3]],
        next: u32,
        span: Option<(usize, usize)>,
        image: Option<&VisionOut>,
    ) -> candle_core::Result<Prefix> {
        let t = ids.len();
        let mut x = self.text.embed(ids)?;
        let mut ds: Option<(usize, usize, &[Tensor])> = None;
        if let (Some((s, e)), Some(v)) = (span, image) {
            if v.embeds.dim(0)? != e - s {
                candle_core::bail!(
                    "{} image tokens but the image gives {}",
                    e - s,
                    v.embeds.dim(0)?
                );
            }
            x = splice(&x, s, e, &v.embeds.to_dtype(self.dtype)?)?;
            ds = Some((s, e, &v.deepstack));
        }
        let (cos, sin) = self.mrope(pos)?;
        // After decoder layer `i`, the `i`-th DeepStack feature joins the image tokens' states.
        let (kv, lp) = self.text.prefill(x.unsqueeze(0)?, &cos, &sin, |i, x| {
            let Some((s, e, f)) = ds.and_then(|(s, e, feats)| Some((s, e, feats.get(i)?))) else {
                return Ok(x);
            };
            let x2 = x.squeeze(0)?;
            let add = (x2.narrow(0, s, e - s)? + f.to_dtype(self.dtype)?)?;
            splice(&x2, s, e, &add)?.unsqueeze(0)
        })?;
        Ok(Prefix {
            kv,
            len: t,
            next_pos: next,
            last_logprobs: lp,
        })
    }

    /// Next-token log-probabilities (`[batch, vocab]`, f32) after each suffix, every suffix
    /// continuing the same `prefix`. Suffixes are text only; they run together, packed end to
    /// end without padding.
    pub fn suffix_logprobs(&self, prefix: &Prefix, suffixes: &[Vec<u32>]) -> Result<Tensor> {
        Ok(self.text.suffix_logprobs(&prefix.kv, suffixes, |lens| {
            let pos: Vec<[u32; 3]> = lens
                .iter()
                .flat_map(|&n| (0..n as u32).map(|i| [prefix.next_pos + i; 3]))
                .collect();
            self.mrope(&pos)
        })?)
    }
}

/// Bidirectional attention `softmax(q kᵀ) v` for `q`, `v` `[heads, n, d]` and `kt` `[heads, d, n]`
/// (`q` already scaled), a block of query rows at a time so the score matrix stays below ~16 MB:
/// a 448×448 image's scores would be 39 MB, a 896×896 one's 630 MB, per layer, and allocations
/// past glibc's 32 MB mmap threshold are returned to the kernel and page-faulted in again.
pub(super) fn full_attention(q: &Tensor, kt: &Tensor, v: &Tensor) -> candle_core::Result<Tensor> {
    let (heads, n, _) = q.dims3()?;
    let rows = (4 << 20) / (heads * n).max(1);
    let rows = rows.clamp(1, n);
    let mut outs = Vec::with_capacity(n.div_ceil(rows));
    let mut start = 0;
    while start < n {
        let r = rows.min(n - start);
        let w = softmax_f32(&q.narrow(1, start, r)?.matmul(kt)?)?;
        outs.push(w.matmul(v)?);
        start += r;
    }
    Tensor::cat(&outs, 1)
}

/// Softmax over the last dimension, computed in f32 whatever the model's dtype.
pub(super) fn softmax_f32(x: &Tensor) -> candle_core::Result<Tensor> {
    let dt = x.dtype();
    candle_nn::ops::softmax_last_dim(&x.to_dtype(DType::F32)?.contiguous()?)?.to_dtype(dt)
}

/// Replace rows `s..e` of `x` (`[t, h]`) by `rows`.
pub(super) fn splice(x: &Tensor, s: usize, e: usize, rows: &Tensor) -> candle_core::Result<Tensor> {
    let t = x.dim(0)?;
    let mut parts = Vec::with_capacity(3);
    if s > 0 {
        parts.push(x.narrow(0, 0, s)?);
    }
    parts.push(rows.clone());
    if e < t {
        parts.push(x.narrow(0, e, t - e)?);
    }
    Tensor::cat(&parts, 0)
}

/// The `[start, end)` run of image placeholder tokens, if any (at most one image per prompt).
pub(super) fn image_span(ids: &[u32], img: u32) -> Result<Option<(usize, usize)>> {
    let Some(s) = ids.iter().position(|&t| t == img) else {
        return Ok(None);
    };
    let e = s + ids[s..].iter().take_while(|&&t| t == img).count();
    if ids[e..].contains(&img) {
        return Err(input(
            "the prompt has more than one run of image tokens",
            "Qwen3-VL prompt",
            "one image per prompt is supported",
        ));
    }
    Ok(Some((s, e)))
}

/// Random weights for benchmarks: N(0, 1/fan_in) for matrices, 1 for norm weights, 0 for biases;
/// each tensor from its own seed so the model does not depend on load order.
pub(super) struct RandomWeights {
    pub(super) seed: u64,
}

impl SimpleBackend for RandomWeights {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        use rand::{Rng, SeedableRng};
        let n = s.elem_count();
        let norm = name.contains("norm");
        if name.ends_with("bias") {
            return Tensor::zeros(s, dtype, dev);
        }
        if norm {
            return Tensor::ones(s, dtype, dev);
        }
        let fan_in = s.dims()[1..].iter().product::<usize>().max(1);
        let std = (1.0 / fan_in as f32).sqrt();
        let mut h = self.seed;
        for b in name.bytes() {
            h = h.wrapping_mul(0x100000001b3).wrapping_add(b as u64);
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(h);
        // Uniform with the normal's variance: cheap to draw for billions of weights.
        let a = std * 3f32.sqrt();
        let data: Vec<f32> = (0..n).map(|_| rng.random_range(-a..a)).collect();
        Tensor::from_vec(data, s, dev)?.to_dtype(dtype)
    }

    fn get_unchecked(
        &self,
        name: &str,
        _dtype: DType,
        _dev: &Device,
    ) -> candle_core::Result<Tensor> {
        candle_core::bail!("random weights need a shape for {name}")
    }

    fn contains_tensor(&self, _name: &str) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tiny shape with 4-pixel patches (small test images) and image token 49.
    fn tiny() -> Qwen3VlConfig {
        let mut c = Qwen3VlConfig::tiny();
        c.vision.patch_size = 4;
        c.image_token_id = 49;
        c
    }

    #[test]
    fn reads_both_config_layouts_and_refuses_others() {
        let base = serde_json::json!({
            "model_type": "qwen3_vl", "image_token_id": 9, "tie_word_embeddings": true,
            "text_config": {"vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
                "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
                "head_dim": 8, "rope_theta": 1000.0,
                "rope_scaling": {"mrope_section": [2, 1, 1], "mrope_interleaved": true}},
            "vision_config": {"depth": 1, "hidden_size": 8, "intermediate_size": 8, "num_heads": 2,
                "patch_size": 4, "out_hidden_size": 8, "num_position_embeddings": 4}
        });
        let c = Qwen3VlConfig::from_json(&base, "c").unwrap();
        assert_eq!(
            (c.mrope_section, c.rope_theta, c.tie_word_embeddings),
            ([2, 1, 1], 1000.0, true)
        );
        assert_eq!(
            (c.vision.rope_theta, c.vision.spatial_merge_size),
            (10_000.0, 2)
        );
        // transformers 5 writes rope_parameters (theta inside) and may tie in text_config.
        let mut v5 = base.clone();
        let t = v5["text_config"].as_object_mut().unwrap();
        t.remove("rope_scaling");
        t.remove("rope_theta");
        t.insert(
            "rope_parameters".into(),
            serde_json::json!({"rope_theta": 7.0, "mrope_section": [2, 1, 1]}),
        );
        v5.as_object_mut().unwrap().remove("tie_word_embeddings");
        let c5 = Qwen3VlConfig::from_json(&v5, "c").unwrap();
        assert_eq!((c5.rope_theta, c5.tie_word_embeddings), (7.0, false));
        for (parent, key, value, needle) in [
            (
                "",
                "model_type",
                serde_json::json!("qwen2_5_vl"),
                "model_type",
            ),
            (
                "/text_config/rope_scaling",
                "mrope_section",
                serde_json::json!([1, 1, 1]),
                "mrope_section",
            ),
            (
                "/text_config/rope_scaling",
                "mrope_interleaved",
                serde_json::json!(false),
                "interleaved",
            ),
            (
                "/text_config",
                "hidden_act",
                serde_json::json!("gelu"),
                "hidden_act",
            ),
            (
                "/vision_config",
                "depth",
                serde_json::json!("x"),
                "vision_config.depth",
            ),
            // Zeros that used to divide by zero further in.
            (
                "/text_config",
                "num_attention_heads",
                serde_json::json!(0),
                "num_attention_heads` is 0",
            ),
            (
                "/text_config",
                "num_key_value_heads",
                serde_json::json!(0),
                "num_key_value_heads` is 0",
            ),
            (
                "/text_config",
                "num_key_value_heads",
                serde_json::json!(3),
                "multiple of num_key_value_heads",
            ),
            (
                "/vision_config",
                "num_heads",
                serde_json::json!(0),
                "num_heads` is 0",
            ),
            (
                "/vision_config",
                "spatial_merge_size",
                serde_json::json!(0),
                "spatial_merge_size` is 0",
            ),
            (
                "/vision_config",
                "num_heads",
                serde_json::json!(3),
                "multiple of num_heads",
            ),
        ] {
            let mut bad = base.clone();
            bad.pointer_mut(parent)
                .and_then(|o| o.as_object_mut())
                .unwrap()
                .insert(key.into(), value);
            let err = Qwen3VlConfig::from_json(&bad, "c").unwrap_err().report();
            assert!(err.contains(needle), "{parent}/{key}: {err}");
        }
    }

    #[test]
    fn positions_follow_the_image_grid() {
        let m = Qwen3Vl::random(tiny(), &Device::Cpu, DType::F32, 1).unwrap();
        // 2 text, 2x3 merged image tokens (grid 1x4x6 patches), 2 text.
        let ids = [1, 2, 49, 49, 49, 49, 49, 49, 3, 4];
        let (pos, next) = m.positions(&ids, Some([1, 4, 6])).unwrap();
        assert_eq!(&pos[..3], &[[0, 0, 0], [1, 1, 1], [2, 2, 2]]);
        assert_eq!(pos[4], [2, 2, 4]);
        assert_eq!(pos[5], [2, 3, 2]);
        assert_eq!(pos[8], [5, 5, 5]);
        assert_eq!(next, 7);
        assert!(m.positions(&ids, Some([1, 4, 4])).is_err());
        assert!(m.positions(&[49, 1, 49], Some([1, 2, 2])).is_err());
    }

    #[test]
    fn shared_prefix_equals_full_prompts() {
        let m = Qwen3Vl::random(tiny(), &Device::Cpu, DType::F32, 7).unwrap();
        let patches: Vec<f32> = (0..16 * 3 * 2 * 16)
            .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
            .collect();
        let img = m.encode_image(&patches, [1, 4, 4]).unwrap();
        let head = [5u32, 6, 49, 49, 49, 49, 7];
        let sufs = vec![vec![8u32, 9, 10], vec![11u32], vec![12u32, 13, 14, 15, 16]];
        let prefix = m.prefill(&head, Some(&img)).unwrap();
        let shared = m.suffix_logprobs(&prefix, &sufs).unwrap();
        for (i, suf) in sufs.iter().enumerate() {
            let full: Vec<u32> = head.iter().chain(suf).copied().collect();
            let r = m.prefill(&full, Some(&img)).unwrap().last_logprobs;
            let d = (shared.i(i).unwrap() - r)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(d < 1e-4, "suffix {i}: max |Δ| = {d}");
        }
    }
}
