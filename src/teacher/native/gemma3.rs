//! Gemma 3 text decoder over GGUF quantized weights, written here rather than taken from
//! candle-transformers: its `quantized_gemma3` (0.11) uses SiLU in the MLP where Gemma uses
//! tanh-GELU (its logprobs are off by whole nats against llama.cpp), and it allocates 131072-row
//! RoPE tables per layer. This one follows llama.cpp's graph for `gemma3`: embeddings scaled by
//! √d, RMS norms before and after attention and MLP, per-head RMS norm of Q and K, NeoX RoPE with
//! base `rope.local_freq_base` (default 10 000) on sliding layers and `rope.freq_base` on every
//! sixth (global) layer, attention scale 1/√head_dim, a window of `attention.sliding_window`
//! tokens on sliding layers, and the tied embedding matrix as the output head.

use candle_core::quantized::{gguf_file::Content, QMatMul};
use candle_core::{DType, Device, Module, Result, Tensor};
use std::io::{Read, Seek};

struct Layer {
    attn_norm: Tensor,
    wq: QMatMul,
    wk: QMatMul,
    wv: QMatMul,
    wo: QMatMul,
    q_norm: Tensor,
    k_norm: Tensor,
    post_attn_norm: Tensor,
    ffn_norm: Tensor,
    gate: QMatMul,
    up: QMatMul,
    down: QMatMul,
    post_ffn_norm: Tensor,
    /// `Some(window)` on sliding-window layers.
    window: Option<usize>,
    rope_base: f32,
}

/// Layer weights up to this size in f32 are dequantized at load (see `from_gguf`).
const DEQUANTIZE_MAX_BYTES: usize = 2 << 30;

pub struct Gemma3 {
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    output: QMatMul,
    n_head: usize,
    n_kv_head: usize,
    head_dim: usize,
    eps: f32,
    dim: usize,
    device: Device,
}

impl Gemma3 {
    pub fn from_gguf<R: Read + Seek>(ct: &Content, r: &mut R, device: &Device) -> Result<Gemma3> {
        let md = |k: &str| {
            ct.metadata
                .get(&format!("gemma3.{k}"))
                .ok_or_else(|| candle_core::Error::Msg(format!("no gemma3.{k} in metadata")))
        };
        let n_head = md("attention.head_count")?.to_u32()? as usize;
        let n_kv_head = md("attention.head_count_kv")?.to_u32()? as usize;
        let n_layer = md("block_count")?.to_u32()? as usize;
        let dim = md("embedding_length")?.to_u32()? as usize;
        let head_dim = md("attention.key_length")?.to_u32()? as usize;
        let eps = md("attention.layer_norm_rms_epsilon")?.to_f32()?;
        let window = md("attention.sliding_window")?.to_u32()? as usize;
        let rope_global = md("rope.freq_base").and_then(|v| v.to_f32()).unwrap_or(1e6);
        let rope_local = md("rope.local_freq_base")
            .and_then(|v| v.to_f32())
            .unwrap_or(1e4);
        let mut t = |name: &str| ct.tensor(r, name, device);
        let vec = |q: candle_core::quantized::QTensor| q.dequantize(device);
        let embed_q = t("token_embd.weight")?;
        let embed = embed_q.dequantize(device)?;
        let output = match t("output.weight") {
            Ok(o) => QMatMul::from_qtensor(o)?,
            Err(_) => QMatMul::from_qtensor(embed_q)?,
        };
        let norm = vec(t("output_norm.weight")?)?;
        // candle's quantized CPU matmul does one vec-dot per (row, column): on a 40-token prompt
        // it runs about 8x slower than f32 GEMM on dequantized weights (measured on the 270M).
        // Small models therefore get their layer weights dequantized (f32 costs 4 bytes per
        // weight); large ones stay quantized so that they still fit in memory.
        let layer_weights: usize = ct
            .tensor_infos
            .iter()
            .filter(|(name, _)| name.starts_with("blk."))
            .map(|(_, info)| info.shape.elem_count())
            .sum();
        let dequantize = layer_weights * 4 <= DEQUANTIZE_MAX_BYTES;
        let mat = |q: candle_core::quantized::QTensor| -> Result<QMatMul> {
            if dequantize {
                Ok(QMatMul::Tensor(q.dequantize(device)?))
            } else {
                QMatMul::from_qtensor(q)
            }
        };
        let mut layers = Vec::with_capacity(n_layer);
        for i in 0..n_layer {
            let mut w = |n: &str| t(&format!("blk.{i}.{n}.weight"));
            let sliding = (i + 1) % 6 != 0;
            layers.push(Layer {
                attn_norm: vec(w("attn_norm")?)?,
                wq: mat(w("attn_q")?)?,
                wk: mat(w("attn_k")?)?,
                wv: mat(w("attn_v")?)?,
                wo: mat(w("attn_output")?)?,
                q_norm: vec(w("attn_q_norm")?)?,
                k_norm: vec(w("attn_k_norm")?)?,
                post_attn_norm: vec(w("post_attention_norm")?)?,
                ffn_norm: vec(w("ffn_norm")?)?,
                gate: mat(w("ffn_gate")?)?,
                up: mat(w("ffn_up")?)?,
                down: mat(w("ffn_down")?)?,
                post_ffn_norm: vec(w("post_ffw_norm")?)?,
                window: sliding.then_some(window),
                rope_base: if sliding { rope_local } else { rope_global },
            });
        }
        Ok(Gemma3 {
            embed,
            layers,
            norm,
            output,
            n_head,
            n_kv_head,
            head_dim,
            eps,
            dim,
            device: device.clone(),
        })
    }

    /// cos/sin tables (seq, head_dim/2) for positions 0..n.
    fn rope_tables(&self, n: usize, base: f32) -> Result<(Tensor, Tensor)> {
        let half = self.head_dim / 2;
        let mut cos = Vec::with_capacity(n * half);
        let mut sin = Vec::with_capacity(n * half);
        for p in 0..n {
            for i in 0..half {
                let theta = base.powf(-2.0 * i as f32 / self.head_dim as f32);
                let a = p as f32 * theta;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        Ok((
            Tensor::from_vec(cos, (n, half), &self.device)?,
            Tensor::from_vec(sin, (n, half), &self.device)?,
        ))
    }

    /// Additive mask (n, n): 0 where query i may see key j, −∞ elsewhere.
    fn mask(&self, n: usize, window: Option<usize>) -> Result<Tensor> {
        let m: Vec<f32> = (0..n)
            .flat_map(|i| {
                (0..n).map(move |j| {
                    let visible = j <= i && window.is_none_or(|w| i - j < w);
                    if visible {
                        0.0
                    } else {
                        f32::NEG_INFINITY
                    }
                })
            })
            .collect();
        Tensor::from_vec(m, (n, n), &self.device)
    }

    /// Logits of the token after `ids` (vocab).
    pub fn forward_last(&self, ids: &[u32]) -> Result<Tensor> {
        let n = ids.len();
        let ids_t = Tensor::new(ids, &self.device)?;
        let mut x = (self.embed.index_select(&ids_t, 0)? * (self.dim as f64).sqrt())?;
        let rms = |x: &Tensor, w: &Tensor| candle_nn::ops::rms_norm(x, w, self.eps);
        let (hd, nh, nkv) = (self.head_dim, self.n_head, self.n_kv_head);
        let mut ropes: Vec<(f32, (Tensor, Tensor))> = Vec::new();
        let mut masks: Vec<(Option<usize>, Tensor)> = Vec::new();
        for l in &self.layers {
            if !ropes.iter().any(|(b, _)| *b == l.rope_base) {
                ropes.push((l.rope_base, self.rope_tables(n, l.rope_base)?));
            }
            if !masks.iter().any(|(w, _)| *w == l.window) {
                masks.push((l.window, self.mask(n, l.window)?));
            }
            let (cos, sin) = &ropes.iter().find(|(b, _)| *b == l.rope_base).unwrap().1;
            let mask = &masks.iter().find(|(w, _)| *w == l.window).unwrap().1;

            let h = rms(&x, &l.attn_norm)?;
            // (n, heads, hd) → (1, heads, n, hd)
            let heads = |t: Tensor, k: usize| t.reshape((1, n, k, hd))?.transpose(1, 2);
            let q = rms(&heads(l.wq.forward(&h)?, nh)?.contiguous()?, &l.q_norm)?;
            let k = rms(&heads(l.wk.forward(&h)?, nkv)?.contiguous()?, &l.k_norm)?;
            let v = heads(l.wv.forward(&h)?, nkv)?.contiguous()?;
            let q = candle_nn::rotary_emb::rope(&q, cos, sin)?;
            let k = candle_nn::rotary_emb::rope(&k, cos, sin)?;
            // Grouped-query attention: each KV head serves nh/nkv query heads.
            let group = nh / nkv;
            let q = q.reshape((nkv, group * n, hd))?;
            let k = k.reshape((nkv, n, hd))?;
            let v = v.reshape((nkv, n, hd))?;
            let att = (q.matmul(&k.t()?)? * (1.0 / (hd as f64).sqrt()))?;
            let att = att
                .reshape((nkv, group, n, n))?
                .broadcast_add(mask)?
                .reshape((nkv, group * n, n))?;
            let att = candle_nn::ops::softmax_last_dim(&att)?;
            let o = att.matmul(&v)?; // (nkv, group*n, hd) = (heads, n, hd)
            let o = o
                .reshape((nh, n, hd))?
                .transpose(0, 1)?
                .reshape((n, nh * hd))?;
            let o = rms(&l.wo.forward(&o)?, &l.post_attn_norm)?;
            x = (x + o)?;

            let h = rms(&x, &l.ffn_norm)?;
            let g = l.gate.forward(&h)?.gelu()?;
            let f = l.down.forward(&(g * l.up.forward(&h)?)?)?;
            x = (x + rms(&f, &l.post_ffn_norm)?)?;
        }
        let last = x.narrow(0, n - 1, 1)?;
        let last = rms(&last, &self.norm)?;
        self.output.forward(&last)?.squeeze(0)?.to_dtype(DType::F32)
    }
}
