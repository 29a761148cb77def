//! InternVL (InternViT vision tower, pixel-shuffle MLP projector, Qwen2 language model) on candle
//! tensors, matching Hugging Face transformers' `InternVLForConditionalGeneration` numerically.
//!
//! Two checkpoint layouts hold the same model, told apart by `config.json`'s `architectures`:
//! the one OpenGVLab ships (`InternVLChatModel`: `vision_model.*`, `mlp1.*`,
//! `language_model.model.*`, one fused `attn.qkv` per vision block, the tiling settings in
//! `config.json`) and transformers' `-hf` one (`InternVLForConditionalGeneration`:
//! `model.vision_tower.*`, `model.multi_modal_projector.*`, `model.language_model.*`, separate
//! q/k/v projections, the tiling in `preprocessor_config.json`). Both load into one [`InternVl`].
//!
//! - **Tiles.** [`TilePreprocess`] is the processor's dynamic tiling (`crop_to_patches`): of the
//!   `cols × rows` grids with `min_num ≤ cols·rows ≤ max_num`, the one whose aspect ratio is
//!   closest to the image's (ties go to the later, larger grid while the image has more than half
//!   its area); the image is resized to that canvas of 448-px tiles and cut row by row, and, when
//!   it gave more than one tile, a thumbnail of the whole image resized to one tile comes last.
//!   Resizing and normalising are torchvision's (see [`super::vl_image`]): the same integers, so
//!   tiles equal transformers' level for level.
//! - **Vision.** A 14-px patch convolution (as one matmul), a class token in front, the learned
//!   position table added (tiles are always the table's size, so it is never resampled), then
//!   pre-LayerNorm blocks: full attention with biased q/k/v, layer scale `λ₁`, exact-GELU MLP,
//!   layer scale `λ₂`. The class token is dropped and the 32×32 grid pixel-shuffled by 0.5 into
//!   16×16 tokens of 4× the width (channels ordered row offset, column offset, channel), then
//!   LayerNorm (ε 1e-5) → Linear → GELU → Linear into the text width: 256 tokens per tile.
//! - **Text.** Qwen2 decoder layers (RMSNorm, biased q/k/v, 1-D rotary positions with
//!   rotate-half, grouped KV heads, SiLU MLP). The tiles' tokens replace the prompt's run of
//!   `<IMG_CONTEXT>` placeholders, in tile order.
//! - **Prefix sharing.** As for Qwen3-VL: [`InternVl::prefill`] runs `[system][image][prompt
//!   head]` once and keeps its keys and values; [`InternVl::suffix_logprobs`] runs every
//!   question's remainder packed end to end against them.

use super::qwen3_vl::{
    apply, full_attention, image_span, layer_norm, linear, read_config_json, safetensors_files,
    splice, RandomWeights,
};
use super::qwen_decoder::{DecoderShape, Generation, KvCache, QwenDecoder};
use super::vl_image::{level_tables, resize_bicubic_u8};
use crate::data::RawImage;
use crate::error::{input, Result};
use candle_core::{DType, Device, IndexOp, Module, Tensor};
use candle_nn::{LayerNorm, Linear, VarBuilder};
use serde_json::Value;
use std::path::Path;

/// ImageNet statistics: what the original InternVL code normalises with (its `build_transform`),
/// and what the `-hf` processors ship.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Which checkpoint layout a folder holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// OpenGVLab's own (`InternVLChatModel`, e.g. `OpenGVLab/InternVL2_5-1B`).
    Original,
    /// transformers' (`InternVLForConditionalGeneration`, e.g. `OpenGVLab/InternVL3-1B-hf`).
    Hf,
}

impl Layout {
    /// The layout `config.json`'s `architectures` names, if it is an InternVL one.
    pub fn from_config(v: &Value) -> Option<Layout> {
        let archs = v["architectures"].as_array()?;
        archs.iter().find_map(|a| match a.as_str()? {
            "InternVLChatModel" => Some(Layout::Original),
            "InternVLForConditionalGeneration" => Some(Layout::Hf),
            _ => None,
        })
    }
}

/// The parts of an InternVL `config.json` this implementation reads, resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct InternVlConfig {
    pub layout: Layout,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub tie_word_embeddings: bool,
    pub vision: InternVitConfig,
    /// `<IMG_CONTEXT>`'s id (the `-hf` config's `image_token_id`; the original layout's comes
    /// from the tokenizer).
    pub image_token_id: Option<u32>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct InternVitConfig {
    pub depth: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_heads: usize,
    pub patch_size: usize,
    /// Side of one tile in pixels (448).
    pub image_size: usize,
    pub qkv_bias: bool,
    pub layer_norm_eps: f64,
    /// Blocks run: `select_layer` / `vision_feature_layer` −1 is all of them, −2 all but the last.
    pub layers_used: usize,
}

impl InternVitConfig {
    /// Patches per tile side (32).
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Text tokens per tile after the pixel shuffle (256).
    pub fn tokens_per_tile(&self) -> usize {
        (self.grid() / 2) * (self.grid() / 2)
    }
}

/// A JSON number read as a positive size, with an input error naming the key otherwise.
fn size(o: &Value, k: &str, sect: &str, at: &str) -> Result<usize> {
    match o[k].as_u64() {
        Some(0) => Err(input(
            format!("`{sect}{k}` is 0"),
            at,
            "sizes and counts in config.json must be at least 1",
        )),
        Some(x) => Ok(x as usize),
        None => Err(input(
            format!("`{sect}{k}` is missing or not a number"),
            at,
            "the config.json of an InternVL checkpoint has it",
        )),
    }
}

/// A square side given as a number or as `[h, w]` with `h == w`.
fn side(o: &Value, k: &str, sect: &str, at: &str) -> Result<usize> {
    match o[k].as_array().map(Vec::as_slice) {
        Some([h, w]) if h == w && h.as_u64().is_some_and(|x| x > 0) => {
            Ok(h.as_u64().unwrap_or(0) as usize)
        }
        Some(_) => Err(input(
            format!("`{sect}{k}` is {}, not a square size", o[k]),
            at,
            "InternVL tiles and patches are square",
        )),
        None => size(o, k, sect, at),
    }
}

fn text_str<'a>(o: &'a Value, k: &str, default: &'a str) -> &'a str {
    o[k].as_str().unwrap_or(default)
}

impl InternVlConfig {
    /// Read `config.json` of an InternVL folder of either layout.
    pub fn from_file(path: &Path) -> Result<InternVlConfig> {
        Self::from_json(&read_config_json(path)?, &path.display().to_string())
    }

    /// Keys this model does not use are ignored (the file is the checkpoint's, not ours); a
    /// variant this implementation does not compute (other language models, QK-norm, v1 pixel
    /// shuffle, other projector activations) is an input error, never a silent approximation.
    pub fn from_json(v: &Value, at: &str) -> Result<InternVlConfig> {
        let layout = Layout::from_config(v).ok_or_else(|| {
            input(
                format!(
                    "architectures is {}, not InternVLChatModel or InternVLForConditionalGeneration",
                    v["architectures"]
                ),
                at,
                "the native backend loads InternVL (OpenGVLab or -hf layout) and Qwen3-VL folders",
            )
        })?;
        let (t, vc, tsect, vsect) = match layout {
            Layout::Original => (
                &v["llm_config"],
                &v["vision_config"],
                "llm_config.",
                "vision_config.",
            ),
            Layout::Hf => (
                &v["text_config"],
                &v["vision_config"],
                "text_config.",
                "vision_config.",
            ),
        };
        if !t.is_object() || !vc.is_object() {
            return Err(input(
                format!("`{tsect}` or `{vsect}` is missing"),
                at,
                "an InternVL config.json has the language and vision model's settings inside",
            ));
        }
        let llm = match layout {
            Layout::Original => t["architectures"][0].as_str().unwrap_or(""),
            Layout::Hf => text_str(t, "model_type", ""),
        };
        if !matches!(llm, "Qwen2ForCausalLM" | "qwen2") {
            return Err(input(
                format!("the language model is `{llm}`, not Qwen2"),
                at,
                "InternVL2.5 and InternVL3 with a Qwen2 LLM (e.g. InternVL2_5-1B, InternVL3-1B) are \
                 supported; InternLM2-based ones (InternVL2-8B) are not",
            ));
        }
        let heads = size(t, "num_attention_heads", tsect, at)?;
        let hidden = size(t, "hidden_size", tsect, at)?;
        let kv_heads = if t["num_key_value_heads"].is_null() {
            heads
        } else {
            size(t, "num_key_value_heads", tsect, at)?
        };
        let head_dim = if t["head_dim"].is_null() {
            hidden / heads
        } else {
            size(t, "head_dim", tsect, at)?
        };
        if head_dim == 0 || !heads.is_multiple_of(kv_heads) || head_dim % 2 == 1 {
            return Err(input(
                format!("{tsect}: {heads} attention heads, {kv_heads} key/value heads, head_dim {head_dim}"),
                at,
                "head_dim must be even and num_attention_heads a multiple of num_key_value_heads",
            ));
        }
        let rope = if t["rope_parameters"].is_object() {
            &t["rope_parameters"]
        } else {
            &t["rope_scaling"]
        };
        let rope_type = rope["rope_type"]
            .as_str()
            .or_else(|| rope["type"].as_str())
            .unwrap_or("default");
        if rope_type != "default" {
            return Err(input(
                format!("rope type `{rope_type}` is not supported"),
                at,
                "only plain rotary positions (Qwen2's default) are implemented",
            ));
        }
        let rope_theta = t["rope_theta"]
            .as_f64()
            .or_else(|| rope["rope_theta"].as_f64())
            .unwrap_or(1_000_000.0);
        let act = text_str(t, "hidden_act", "silu");
        if act != "silu" {
            return Err(input(
                format!("{tsect}hidden_act `{act}` is not supported"),
                at,
                "Qwen2 uses silu",
            ));
        }
        let tie_default = layout == Layout::Hf;
        let tie = t["tie_word_embeddings"]
            .as_bool()
            .or_else(|| v["tie_word_embeddings"].as_bool())
            .unwrap_or(tie_default);

        // Vision tower and the projector's glue, named differently per layout.
        let (qkv_bias, qk_norm, select, ratio, proj_act, pooled) = match layout {
            Layout::Original => (
                vc["qkv_bias"].as_bool().unwrap_or(true),
                vc["qk_normalization"].as_bool().unwrap_or(false),
                v["select_layer"].as_i64().unwrap_or(-1),
                v["downsample_ratio"].as_f64().unwrap_or(0.5),
                "gelu",
                true,
            ),
            Layout::Hf => (
                vc["attention_bias"].as_bool().unwrap_or(false),
                vc["use_qk_norm"].as_bool().unwrap_or(false),
                v["vision_feature_layer"].as_i64().unwrap_or(-1),
                v["downsample_ratio"].as_f64().unwrap_or(0.5),
                text_str(v, "projector_hidden_act", "gelu"),
                vc["use_mean_pooling"].as_bool().unwrap_or(true),
            ),
        };
        if layout == Layout::Original && text_str(v, "ps_version", "v2") != "v2" {
            return Err(input(
                format!("ps_version is `{}`", text_str(v, "ps_version", "")),
                at,
                "only the v2 pixel shuffle (every InternVL2 and later checkpoint) is implemented",
            ));
        }
        if layout == Layout::Hf
            && text_str(v, "vision_feature_select_strategy", "default") != "default"
        {
            return Err(input(
                "vision_feature_select_strategy is not `default`",
                at,
                "InternVL drops the class token before the pixel shuffle",
            ));
        }
        if qk_norm {
            return Err(input(
                "the vision tower normalises q and k (InternViT-6B)",
                at,
                "InternViT-300M towers (InternVL2.5/3 up to 38B) are supported",
            ));
        }
        if text_str(vc, "norm_type", "layer_norm") != "layer_norm" {
            return Err(input(
                format!(
                    "vision norm_type `{}` is not supported",
                    text_str(vc, "norm_type", "")
                ),
                at,
                "InternViT-300M uses layer_norm",
            ));
        }
        if text_str(vc, "hidden_act", "gelu") != "gelu" || proj_act != "gelu" {
            return Err(input(
                "the vision or projector activation is not `gelu`",
                at,
                "InternVL uses exact GELU in both",
            ));
        }
        if ratio != 0.5 {
            return Err(input(
                format!("downsample_ratio is {ratio}"),
                at,
                "only the 0.5 pixel shuffle (2×2 patches per token) is implemented",
            ));
        }
        if !pooled {
            return Err(input(
                "vision use_mean_pooling is false (a final vision LayerNorm)",
                at,
                "InternVL checkpoints have none",
            ));
        }
        let depth = size(vc, "num_hidden_layers", vsect, at)?;
        let layers_used = if select < 0 && (-select) as usize <= depth {
            depth + 1 - (-select) as usize
        } else {
            return Err(input(
                format!("select_layer / vision_feature_layer is {select}"),
                at,
                "a negative layer index within the vision tower (InternVL uses -1)",
            ));
        };
        let vision = InternVitConfig {
            depth,
            hidden_size: size(vc, "hidden_size", vsect, at)?,
            intermediate_size: size(vc, "intermediate_size", vsect, at)?,
            num_heads: size(vc, "num_attention_heads", vsect, at)?,
            patch_size: side(vc, "patch_size", vsect, at)?,
            image_size: side(vc, "image_size", vsect, at)?,
            qkv_bias,
            layer_norm_eps: vc["layer_norm_eps"].as_f64().unwrap_or(1e-6),
            layers_used,
        };
        let g = vision.image_size / vision.patch_size.max(1);
        if !vision.hidden_size.is_multiple_of(vision.num_heads)
            || !vision.image_size.is_multiple_of(vision.patch_size)
            || g % 2 == 1
        {
            return Err(input(
                format!(
                    "vision: hidden {} / {} heads, tile {} px / patch {} px",
                    vision.hidden_size, vision.num_heads, vision.image_size, vision.patch_size
                ),
                at,
                "the hidden size must divide into heads and the tile into an even grid of patches",
            ));
        }
        Ok(InternVlConfig {
            layout,
            vocab_size: size(t, "vocab_size", tsect, at)?,
            hidden_size: hidden,
            intermediate_size: size(t, "intermediate_size", tsect, at)?,
            num_hidden_layers: size(t, "num_hidden_layers", tsect, at)?,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            head_dim,
            rms_norm_eps: t["rms_norm_eps"].as_f64().unwrap_or(1e-6),
            rope_theta,
            tie_word_embeddings: tie,
            vision,
            image_token_id: v["image_token_id"].as_u64().map(|x| x as u32),
        })
    }

    /// InternVL2.5-1B's shapes (InternViT-300M-448px, Qwen2.5-0.5B), for benchmarks.
    pub fn internvl2_5_1b() -> InternVlConfig {
        InternVlConfig {
            layout: Layout::Original,
            vocab_size: 151674,
            hidden_size: 896,
            intermediate_size: 4864,
            num_hidden_layers: 24,
            num_attention_heads: 14,
            num_key_value_heads: 2,
            head_dim: 64,
            rms_norm_eps: 1e-6,
            rope_theta: 1_000_000.0,
            tie_word_embeddings: false,
            vision: InternVitConfig {
                depth: 24,
                hidden_size: 1024,
                intermediate_size: 4096,
                num_heads: 16,
                patch_size: 14,
                image_size: 448,
                qkv_bias: true,
                layer_norm_eps: 1e-6,
                layers_used: 24,
            },
            image_token_id: Some(151667),
        }
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

    /// A tiny shape of the same architecture for tests and smoke runs.
    pub fn tiny() -> InternVlConfig {
        let mut c = InternVlConfig::internvl2_5_1b();
        c.vocab_size = 4096;
        c.hidden_size = 64;
        c.intermediate_size = 128;
        c.num_hidden_layers = 2;
        c.num_attention_heads = 4;
        c.num_key_value_heads = 2;
        c.head_dim = 16;
        c.vision.depth = 2;
        c.vision.layers_used = 2;
        c.vision.hidden_size = 32;
        c.vision.intermediate_size = 64;
        c.vision.num_heads = 2;
        c.image_token_id = Some(4095);
        c
    }
}

/// The processor's dynamic tiling and normalisation.
#[derive(Clone, Debug, PartialEq)]
pub struct TilePreprocess {
    /// Side of one tile (448).
    pub tile: usize,
    pub min_num: usize,
    pub max_num: usize,
    /// Tiling on (`crop_to_patches` / `dynamic_image_size`); off, the image is one tile.
    pub dynamic: bool,
    pub use_thumbnail: bool,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub rescale_factor: f64,
    pub do_rescale: bool,
    pub do_normalize: bool,
}

impl TilePreprocess {
    /// The original layout keeps its tiling in `config.json` (`max_dynamic_patch`, …) and
    /// normalises with ImageNet statistics in code.
    pub fn from_original_config(v: &Value, at: &str) -> Result<TilePreprocess> {
        let n = |k: &str, d: usize| -> Result<usize> {
            if v[k].is_null() {
                Ok(d)
            } else {
                size(v, k, "", at)
            }
        };
        let tile = n("force_image_size", 448)?;
        let p = TilePreprocess {
            tile,
            min_num: n("min_dynamic_patch", 1)?,
            max_num: n("max_dynamic_patch", 12)?,
            dynamic: v["dynamic_image_size"].as_bool().unwrap_or(true),
            use_thumbnail: v["use_thumbnail"].as_bool().unwrap_or(true),
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
            rescale_factor: 1.0 / 255.0,
            do_rescale: true,
            do_normalize: true,
        };
        p.check(at)
    }

    /// The `-hf` layout's `preprocessor_config.json` (`GotOcr2ImageProcessor`).
    pub fn from_hf_preprocessor(v: &Value, at: &str) -> Result<TilePreprocess> {
        let s = &v["size"];
        let (h, w) = (
            size(s, "height", "size.", at)?,
            size(s, "width", "size.", at)?,
        );
        if h != w {
            return Err(input(
                format!("size is {h}×{w}"),
                at,
                "InternVL tiles are square (448×448)",
            ));
        }
        if !v["resample"].is_null() && v["resample"].as_u64() != Some(3) {
            return Err(input(
                format!(
                    "`resample` is {}; only 3 (bicubic) is supported",
                    v["resample"]
                ),
                at,
                "InternVL processors resize bicubic",
            ));
        }
        if v["do_resize"].as_bool() == Some(false) {
            return Err(input(
                "do_resize is false",
                at,
                "tiles must be resized to the vision tower's size",
            ));
        }
        let triple = |k: &str| -> Result<[f32; 3]> {
            match v[k].as_array().map(Vec::as_slice) {
                None if v[k].is_null() => Ok(if k == "image_mean" {
                    IMAGENET_MEAN
                } else {
                    IMAGENET_STD
                }),
                Some([a, b, c]) if [a, b, c].iter().all(|x| x.is_number()) => Ok([
                    a.as_f64().unwrap_or(0.0) as f32,
                    b.as_f64().unwrap_or(0.0) as f32,
                    c.as_f64().unwrap_or(0.0) as f32,
                ]),
                _ => Err(input(
                    format!("`{k}` is {}, not a list of 3 numbers", v[k]),
                    at,
                    "use the preprocessor_config.json shipped with the model",
                )),
            }
        };
        let n = |k: &str, d: usize| -> Result<usize> {
            if v[k].is_null() {
                Ok(d)
            } else {
                size(v, k, "", at)
            }
        };
        let p = TilePreprocess {
            tile: h,
            min_num: n("min_patches", 1)?,
            max_num: n("max_patches", 12)?,
            // `InternVLProcessor` passes `crop_to_patches=True` on every call, whatever the
            // file says (the -hf files ship `false`, the image processor's own default).
            dynamic: true,
            use_thumbnail: true,
            mean: triple("image_mean")?,
            std: triple("image_std")?,
            rescale_factor: v["rescale_factor"].as_f64().unwrap_or(1.0 / 255.0),
            do_rescale: v["do_rescale"].as_bool().unwrap_or(true),
            do_normalize: v["do_normalize"].as_bool().unwrap_or(true),
        };
        p.check(at)
    }

    fn check(self, at: &str) -> Result<TilePreprocess> {
        if self.min_num > self.max_num || self.std.contains(&0.0) || self.rescale_factor <= 0.0 {
            return Err(input(
                format!(
                    "tiling {}..{} tiles, std {:?}, rescale {}",
                    self.min_num, self.max_num, self.std, self.rescale_factor
                ),
                at,
                "min tiles must not exceed max tiles; std and rescale_factor must be positive",
            ));
        }
        Ok(self)
    }

    /// `(columns, rows)` of tiles for an image of `width × height`: transformers'
    /// `get_optimal_tiled_canvas` (grids in order of tile count, then columns, then rows).
    pub fn grid(&self, width: usize, height: usize) -> (usize, usize) {
        if !self.dynamic {
            return (1, 1);
        }
        let mut grids: Vec<(usize, usize)> = Vec::new();
        for c in 1..=self.max_num {
            for r in 1..=self.max_num {
                let n = c * r;
                if n >= self.min_num && n <= self.max_num {
                    grids.push((c, r));
                }
            }
        }
        // Stable, as Python's sorted: equal counts keep the column-major order above.
        grids.sort_by_key(|(c, r)| c * r);
        let aspect = width as f64 / height as f64;
        let area = (width * height) as f64;
        let tile_area = (self.tile * self.tile) as f64;
        let mut best = (1, 1);
        let mut best_diff = f64::INFINITY;
        for (c, r) in grids {
            let diff = (aspect - c as f64 / r as f64).abs();
            if diff < best_diff {
                best_diff = diff;
                best = (c, r);
            } else if diff == best_diff && area > 0.5 * tile_area * (c * r) as f64 {
                best = (c, r);
            }
        }
        best
    }

    /// The tiles of an image as RGB `u8` (`tile × tile × 3` each), in the model's order: row by
    /// row, then the thumbnail when there is more than one tile.
    pub fn tiles_u8(&self, img: &RawImage) -> Result<Vec<Vec<u8>>> {
        let (w, h, c) = (
            img.width as usize,
            img.height as usize,
            img.channels as usize,
        );
        if w == 0 || h == 0 || !(c == 1 || c == 3) || img.pixels.len() != w * h * c {
            return Err(input(
                format!("malformed image: {} bytes", img.pixels.len()),
                format!("image {w}×{h}×{c}"),
                "expected width × height × channels bytes with 1 or 3 channels",
            ));
        }
        let rgb: std::borrow::Cow<[u8]> = if c == 1 {
            img.pixels.iter().flat_map(|&l| [l, l, l]).collect()
        } else {
            (&img.pixels[..]).into()
        };
        let s = self.tile;
        let (cols, rows) = self.grid(w, h);
        let canvas = resize_bicubic_u8(&rgb, w, h, 3, cols * s, rows * s);
        let stride = cols * s * 3;
        let mut tiles = Vec::with_capacity(cols * rows + 1);
        for r in 0..rows {
            for col in 0..cols {
                let mut t = Vec::with_capacity(s * s * 3);
                for y in r * s..(r + 1) * s {
                    let start = y * stride + col * s * 3;
                    t.extend_from_slice(&canvas[start..start + s * 3]);
                }
                tiles.push(t);
            }
        }
        if self.use_thumbnail && tiles.len() > 1 {
            tiles.push(resize_bicubic_u8(&rgb, w, h, 3, s, s));
        }
        Ok(tiles)
    }

    /// `pixel_values` `[tiles, 3, tile, tile]` (flat, channel-major per tile) and the tile count.
    pub fn pixel_values(&self, img: &RawImage) -> Result<(Vec<f32>, usize)> {
        let tiles = self.tiles_u8(img)?;
        let tables = level_tables(
            &self.mean,
            &self.std,
            self.rescale_factor,
            self.do_rescale,
            self.do_normalize,
        );
        let mut out = Vec::with_capacity(tiles.len() * 3 * self.tile * self.tile);
        for t in &tiles {
            for (ch, table) in tables.iter().enumerate() {
                out.extend(t.iter().skip(ch).step_by(3).map(|&l| table[l as usize]));
            }
        }
        Ok((out, tiles.len()))
    }
}

/// The default system message of a shipped chat template: the literal text of its
/// `<|im_start|>system` turn, if it writes one (InternVL2.5's names the model); `None` when the
/// template has no default system turn.
pub fn template_system(template: &str) -> Option<String> {
    let marker = "<|im_start|>system";
    let mut rest = template;
    while let Some(i) = rest.find(marker) {
        rest = &rest[i + marker.len()..];
        let body = rest
            .strip_prefix("\\n")
            .or_else(|| rest.strip_prefix('\n'))
            .unwrap_or(rest);
        let Some(end) = body.find("<|im_end|>") else {
            break;
        };
        let text = &body[..end];
        // A turn filled from the messages (`{{ ... }}`, string concatenation) is no default.
        if !text.contains("{{") && !text.contains('\'') && !text.contains('"') && !text.is_empty() {
            return Some(text.replace("\\n", "\n"));
        }
    }
    None
}

/// The chat template a folder ships: `chat_template.jinja`, or the `chat_template` of
/// `tokenizer_config.json` / `chat_template.json`.
pub fn shipped_template(dir: &Path) -> Option<String> {
    if let Ok(t) = std::fs::read_to_string(dir.join("chat_template.jinja")) {
        return Some(t);
    }
    for f in ["tokenizer_config.json", "chat_template.json"] {
        let Ok(text) = std::fs::read_to_string(dir.join(f)) else {
            continue;
        };
        if let Ok(v) = serde_json::from_str::<Value>(&text) {
            if let Some(t) = v["chat_template"].as_str() {
                return Some(t.to_string());
            }
        }
    }
    None
}

struct VitBlock {
    norm1: LayerNorm,
    norm2: LayerNorm,
    qkv: Linear,
    proj: Linear,
    ls1: Tensor,
    ls2: Tensor,
    fc1: Linear,
    fc2: Linear,
}

/// Keys and values of a shared prompt prefix, per text layer `[1, kv heads, len, head dim]`.
pub struct Prefix {
    kv: KvCache,
    pub len: usize,
    /// Log-probabilities of the token after the prefix (`[vocab]`).
    pub last_logprobs: Tensor,
}

pub struct InternVl {
    pub cfg: InternVlConfig,
    device: Device,
    dtype: DType,
    patch_w: Tensor,
    patch_b: Tensor,
    cls: Tensor,
    pos: Tensor,
    blocks: Vec<VitBlock>,
    proj_norm: LayerNorm,
    proj1: Linear,
    proj2: Linear,
    text: QwenDecoder,
}

impl InternVl {
    /// Load `config.json` and every `*.safetensors` of an InternVL folder (either layout).
    pub fn load(dir: &Path, device: &Device, dtype: DType) -> Result<InternVl> {
        let cfg = InternVlConfig::from_file(&dir.join("config.json"))?;
        let files = safetensors_files(dir)?;
        // SAFETY: read-only memory maps, as for Qwen3-VL.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files, dtype, device)? };
        let layout = cfg.layout;
        Self::new(cfg, vb).map_err(|e| {
            input(
                format!("cannot load the weights: {e}"),
                dir.display().to_string(),
                match layout {
                    Layout::Original => {
                        "config.json names InternVLChatModel, so the weights must use \
                         its names (vision_model.*, mlp1.*, language_model.model.*)"
                    }
                    Layout::Hf => {
                        "config.json names InternVLForConditionalGeneration, so the weights \
                         must use its names (vision_tower.*, multi_modal_projector.*, \
                         language_model.model.*)"
                    }
                },
            )
        })
    }

    /// A model of the given shape with random weights (benchmarks): no file is read.
    pub fn random(
        cfg: InternVlConfig,
        device: &Device,
        dtype: DType,
        seed: u64,
    ) -> Result<InternVl> {
        let vb = VarBuilder::from_backend(Box::new(RandomWeights { seed }), dtype, device.clone());
        Ok(Self::new(cfg, vb)?)
    }

    pub fn new(cfg: InternVlConfig, vb: VarBuilder) -> candle_core::Result<InternVl> {
        let device = vb.device().clone();
        let dtype = vb.dtype();
        let c = &cfg.vision;
        let (vh, k) = (c.hidden_size, 3 * c.patch_size * c.patch_size);
        let n = c.grid() * c.grid();
        let orig = cfg.layout == Layout::Original;
        // transformers 5 saves `-hf` checkpoints under the hub's names (`vision_tower.*`,
        // `language_model.model.*`); its in-memory names put `model.` in front (and the head at
        // `lm_head`): either is read.
        let hub = vb.contains_tensor("vision_tower.embeddings.cls_token");
        let (vision, projector, text, head) = match (orig, hub) {
            (true, _) => (
                "vision_model",
                "mlp1",
                "language_model.model",
                "language_model.lm_head",
            ),
            (false, true) => (
                "vision_tower",
                "multi_modal_projector",
                "language_model.model",
                "language_model.lm_head",
            ),
            (false, false) => (
                "model.vision_tower",
                "model.multi_modal_projector",
                "model.language_model",
                "lm_head",
            ),
        };
        let vv = vb.pp(vision);
        let emb = vv.pp("embeddings");
        let (patch, cls_name, pos_name) = if orig {
            ("patch_embedding", "class_embedding", "position_embedding")
        } else {
            (
                "patch_embeddings.projection",
                "cls_token",
                "position_embeddings",
            )
        };
        let patch_w = emb
            .pp(patch)
            .get((vh, 3, c.patch_size, c.patch_size), "weight")?
            .reshape((vh, k))?;
        let patch_b = emb.pp(patch).get(vh, "bias")?;
        let cls = emb.get((1, 1, vh), cls_name)?.reshape((1, vh))?;
        let pos = emb.get((1, n + 1, vh), pos_name)?.reshape((n + 1, vh))?;
        let eps = c.layer_norm_eps;
        let mut blocks = Vec::with_capacity(c.depth);
        for i in 0..c.layers_used {
            let b = if orig {
                vv.pp("encoder.layers").pp(i)
            } else {
                vv.pp("encoder.layer").pp(i)
            };
            let blk = if orig {
                VitBlock {
                    norm1: layer_norm(&b.pp("norm1"), vh, eps)?,
                    norm2: layer_norm(&b.pp("norm2"), vh, eps)?,
                    qkv: linear(&b.pp("attn.qkv"), vh, 3 * vh, c.qkv_bias)?,
                    proj: linear(&b.pp("attn.proj"), vh, vh, true)?,
                    ls1: b.get(vh, "ls1")?,
                    ls2: b.get(vh, "ls2")?,
                    fc1: linear(&b.pp("mlp.fc1"), vh, c.intermediate_size, true)?,
                    fc2: linear(&b.pp("mlp.fc2"), c.intermediate_size, vh, true)?,
                }
            } else {
                // Separate q, k, v in the file; one fused GEMM here, as the original layout has.
                let a = b.pp("attention");
                let parts = ["q_proj", "k_proj", "v_proj"]
                    .iter()
                    .map(|p| linear(&a.pp(p), vh, vh, c.qkv_bias))
                    .collect::<candle_core::Result<Vec<_>>>()?;
                let w = Tensor::cat(&parts.iter().map(|l| l.weight()).collect::<Vec<_>>(), 0)?;
                let bias = if c.qkv_bias {
                    let bs: Vec<&Tensor> = parts.iter().filter_map(|l| l.bias()).collect();
                    Some(Tensor::cat(&bs, 0)?)
                } else {
                    None
                };
                VitBlock {
                    norm1: layer_norm(&b.pp("layernorm_before"), vh, eps)?,
                    norm2: layer_norm(&b.pp("layernorm_after"), vh, eps)?,
                    qkv: Linear::new(w, bias),
                    proj: linear(&a.pp("projection_layer"), vh, vh, true)?,
                    ls1: b.get(vh, "lambda_1")?,
                    ls2: b.get(vh, "lambda_2")?,
                    fc1: linear(&b.pp("mlp.fc1"), vh, c.intermediate_size, true)?,
                    fc2: linear(&b.pp("mlp.fc2"), c.intermediate_size, vh, true)?,
                }
            };
            blocks.push(blk);
        }
        let h = cfg.hidden_size;
        let wide = 4 * vh;
        // nn.LayerNorm's default ε: neither layout's projector sets one.
        let m = vb.pp(projector);
        let (proj_norm, proj1, proj2) = if orig {
            (
                layer_norm(&m.pp("0"), wide, 1e-5)?,
                linear(&m.pp("1"), wide, h, true)?,
                linear(&m.pp("3"), h, h, true)?,
            )
        } else {
            (
                layer_norm(&m.pp("layer_norm"), wide, 1e-5)?,
                linear(&m.pp("linear_1"), wide, h, true)?,
                linear(&m.pp("linear_2"), h, h, true)?,
            )
        };
        let text = QwenDecoder::load(
            &vb.pp(text),
            &cfg.decoder_shape(),
            Generation::Qwen2,
            |embed| {
                if cfg.tie_word_embeddings {
                    Ok(embed.clone())
                } else {
                    vb.pp(head).get((cfg.vocab_size, h), "weight")
                }
            },
            &|| (),
        )?;
        Ok(InternVl {
            cfg,
            device,
            dtype,
            patch_w,
            patch_b,
            cls,
            pos,
            blocks,
            proj_norm,
            proj1,
            proj2,
            text,
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The vision tower's output (class token dropped) for `tiles` tiles of `pixel_values`
    /// (`[tiles, 3, S, S]` flat): `[tiles, grid², vision hidden]`.
    pub fn vision_features(&self, pixel_values: &[f32], tiles: usize) -> Result<Tensor> {
        Ok(self.vision_inner(pixel_values, tiles)?)
    }

    fn vision_inner(&self, px: &[f32], tiles: usize) -> candle_core::Result<Tensor> {
        let c = &self.cfg.vision;
        let (s, p, g) = (c.image_size, c.patch_size, c.grid());
        if px.len() != tiles * 3 * s * s || tiles == 0 {
            candle_core::bail!(
                "{} pixel values are not {tiles} tiles of 3×{s}×{s}",
                px.len()
            );
        }
        // im2col: each patch's [channel][y][x], patches row-major within a tile.
        let k = 3 * p * p;
        let mut cols = Vec::with_capacity(tiles * g * g * k);
        for t in 0..tiles {
            let tile = &px[t * 3 * s * s..(t + 1) * 3 * s * s];
            for py in 0..g {
                for pxi in 0..g {
                    for ch in 0..3 {
                        for y in py * p..(py + 1) * p {
                            let row = ch * s * s + y * s + pxi * p;
                            cols.extend_from_slice(&tile[row..row + p]);
                        }
                    }
                }
            }
        }
        let (vh, heads) = (c.hidden_size, c.num_heads);
        let hd = vh / heads;
        let n = g * g + 1;
        let x = Tensor::from_vec(cols, (tiles * g * g, k), &self.device)?.to_dtype(self.dtype)?;
        let x = x
            .matmul(&self.patch_w.t()?)?
            .broadcast_add(&self.patch_b)?
            .reshape((tiles, g * g, vh))?;
        let cls = self.cls.unsqueeze(0)?.broadcast_as((tiles, 1, vh))?;
        let mut x = Tensor::cat(&[&cls, &x], 1)?.broadcast_add(&self.pos.unsqueeze(0)?)?;
        let scale = (hd as f64).powf(-0.5);
        for b in &self.blocks {
            let y = b.norm1.forward(&x)?;
            let qkv = apply(&b.qkv, &y)?.reshape((tiles, n, 3, heads, hd))?;
            let part = |j: usize| -> candle_core::Result<Tensor> {
                qkv.i((.., .., j))?
                    .transpose(1, 2)?
                    .contiguous()?
                    .reshape((tiles * heads, n, hd))
            };
            let q = (part(0)? * scale)?;
            let kt = part(1)?.t()?;
            let o = full_attention(&q, &kt, &part(2)?)?
                .reshape((tiles, heads, n, hd))?
                .transpose(1, 2)?
                .reshape((tiles, n, vh))?;
            x = (&x + apply(&b.proj, &o)?.broadcast_mul(&b.ls1)?)?;
            let y = apply(&b.fc1, &b.norm2.forward(&x)?)?.gelu_erf()?;
            x = (&x + apply(&b.fc2, &y)?.broadcast_mul(&b.ls2)?)?;
        }
        x.narrow(1, 1, g * g)?.contiguous()
    }

    /// The projector's output for the vision features: `[tiles · tokens_per_tile, text hidden]`,
    /// the rows that replace the prompt's `<IMG_CONTEXT>` tokens.
    pub fn project(&self, features: &Tensor) -> Result<Tensor> {
        Ok(self.project_inner(features)?)
    }

    fn project_inner(&self, f: &Tensor) -> candle_core::Result<Tensor> {
        let (tiles, _, vh) = f.dims3()?;
        let g = self.cfg.vision.grid();
        let h2 = g / 2;
        // Pixel shuffle 0.5: token (i, j) gathers patches (2i + a, 2j + b), channels ordered
        // (a, b, channel), as transformers' view/permute sequence lays them out.
        let x = f
            .reshape((tiles * h2, 2, h2, 2 * vh))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((tiles * h2 * h2, 4 * vh))?;
        let x = self.proj_norm.forward(&x)?;
        let x = self.proj1.forward(&x)?.gelu_erf()?;
        self.proj2.forward(&x)
    }

    /// Vision tower and projector on one image's tiles.
    pub fn encode_image(&self, pixel_values: &[f32], tiles: usize) -> Result<Tensor> {
        self.project(&self.vision_features(pixel_values, tiles)?)
    }

    fn rope(&self, start: usize, lens: &[usize]) -> candle_core::Result<(Tensor, Tensor)> {
        let hd = self.cfg.head_dim;
        let half = hd / 2;
        let inv: Vec<f32> = (0..half)
            .map(|j| 1.0 / (self.cfg.rope_theta as f32).powf((2 * j) as f32 / hd as f32))
            .collect();
        let total: usize = lens.iter().sum();
        let mut ang = Vec::with_capacity(total * half);
        for &n in lens {
            for i in 0..n {
                let p = (start + i) as f32;
                ang.extend(inv.iter().map(|f| p * f));
            }
        }
        let ang = Tensor::from_vec(ang, (total, half), &self.device)?;
        Ok((
            ang.cos()?.to_dtype(self.dtype)?,
            ang.sin()?.to_dtype(self.dtype)?,
        ))
    }

    /// Run a whole prompt (its `<IMG_CONTEXT>` run replaced by `image`'s rows) and keep its keys
    /// and values for [`InternVl::suffix_logprobs`]; a prompt run this way in full is the
    /// unshared reference path.
    pub fn prefill(&self, ids: &[u32], image: Option<&Tensor>, image_token: u32) -> Result<Prefix> {
        let span = image_span(ids, image_token)?;
        if span.is_some() != image.is_some() {
            return Err(input(
                "the prompt's image tokens and the image do not go together",
                "InternVL prompt",
                "pass the image exactly when the prompt has <IMG_CONTEXT> tokens",
            ));
        }
        Ok(self.prefill_inner(ids, span, image)?)
    }

    fn prefill_inner(
        &self,
        ids: &[u32],
        span: Option<(usize, usize)>,
        image: Option<&Tensor>,
    ) -> candle_core::Result<Prefix> {
        let t = ids.len();
        let mut x = self.text.embed(ids)?;
        if let (Some((s, e)), Some(img)) = (span, image) {
            if img.dim(0)? != e - s {
                candle_core::bail!(
                    "{} image tokens in the prompt but the image gives {}",
                    e - s,
                    img.dim(0)?
                );
            }
            x = splice(&x, s, e, &img.to_dtype(self.dtype)?)?;
        }
        let (cos, sin) = self.rope(0, &[t])?;
        let (kv, lp) = self
            .text
            .prefill(x.unsqueeze(0)?, &cos, &sin, |_, x| Ok(x))?;
        Ok(Prefix {
            kv,
            len: t,
            last_logprobs: lp,
        })
    }

    /// Next-token log-probabilities (`[batch, vocab]`, f32) after each text suffix, every suffix
    /// continuing `prefix`; the suffixes run packed end to end, without padding.
    pub fn suffix_logprobs(&self, prefix: &Prefix, suffixes: &[Vec<u32>]) -> Result<Tensor> {
        Ok(self
            .text
            .suffix_logprobs(&prefix.kv, suffixes, |lens| self.rope(prefix.len, lens))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(max: usize) -> TilePreprocess {
        TilePreprocess {
            tile: 448,
            min_num: 1,
            max_num: max,
            dynamic: true,
            use_thumbnail: true,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
            rescale_factor: 1.0 / 255.0,
            do_rescale: true,
            do_normalize: true,
        }
    }

    #[test]
    fn tiling_picks_transformers_grids() {
        let p = tp(12);
        // The grid whose aspect ratio equals the image's.
        assert_eq!(p.grid(448, 448), (1, 1));
        assert_eq!(p.grid(896, 448), (2, 1));
        assert_eq!(p.grid(100, 300), (1, 3));
        // Exact ties on the ratio: the larger grid wins only while the image covers more than
        // half of it. 800×800 vs 2×2 (4 tiles of 448²: half is 401 408 px < 640 000) → 2×2.
        assert_eq!(p.grid(800, 800), (2, 2));
        // A small square image stays one tile.
        assert_eq!(p.grid(300, 300), (1, 1));
        let mut off = tp(12);
        off.dynamic = false;
        assert_eq!(off.grid(2000, 300), (1, 1));
        let p4 = tp(4);
        assert_eq!(p4.grid(5000, 100), (4, 1));
    }

    #[test]
    fn default_system_is_read_from_the_template() {
        let t = "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}{%- else %}{{- '<|im_start|>system\\nYou are InternVL.<|im_end|>\\n' }}{%- endif %}";
        assert_eq!(template_system(t).as_deref(), Some("You are InternVL."));
        assert_eq!(template_system("{{ '<|im_start|>user\\n' }}"), None);
    }

    #[test]
    fn shared_prefix_equals_full_prompts() {
        let m = InternVl::random(InternVlConfig::tiny(), &Device::Cpu, DType::F32, 3).unwrap();
        let px: Vec<f32> = (0..2 * 3 * 448 * 448)
            .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
            .collect();
        let img = m.encode_image(&px, 2).unwrap();
        assert_eq!(img.dims(), &[512, 64]);
        let it = 4095u32;
        let mut head = vec![5u32, 6];
        head.extend(std::iter::repeat_n(it, 512));
        head.push(7);
        let sufs = vec![vec![8u32, 9, 10], vec![11u32], vec![12u32, 13, 14, 15, 16]];
        let prefix = m.prefill(&head, Some(&img), it).unwrap();
        let shared = m.suffix_logprobs(&prefix, &sufs).unwrap();
        for (i, suf) in sufs.iter().enumerate() {
            let full: Vec<u32> = head.iter().chain(suf).copied().collect();
            let r = m.prefill(&full, Some(&img), it).unwrap().last_logprobs;
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
