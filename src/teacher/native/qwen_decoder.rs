//! The Qwen text decoder both native families run: Qwen3's (Qwen3-VL's language model) and
//! Qwen2's (InternVL2.5/3's). Their layers are the same pre-RMSNorm, grouped-KV, SiLU-MLP block
//! and differ only in the attention's input side: Qwen3 normalises each head of Q and K (RMSNorm)
//! and biases its projections only when `attention_bias` says so, Qwen2 always biases Q, K and V
//! and never the output. Rotary positions are the caller's (Qwen3-VL's MRoPE, Qwen2's 1-D), given
//! as cos/sin tables, so one decoder serves both.
//!
//! Prefix sharing is the decoder's too: [`QwenDecoder::prefill`] runs a prompt and keeps each
//! layer's keys and values; [`QwenDecoder::suffix_logprobs`] runs question suffixes packed end to
//! end (no padding) against them, each suffix seeing the prefix and its own past only.

use super::qwen3_vl::{apply, linear, rms_norm, softmax_f32};
use candle_core::{DType, Device, IndexOp, Module, Tensor, D};
use candle_nn::{Linear, RmsNorm, VarBuilder};

/// Which Qwen generation's decoder layers a checkpoint has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Generation {
    /// Qwen2: biased Q, K, V projections, no bias on the output projection.
    Qwen2,
    /// Qwen3: per-head RMSNorm of Q and K; every attention projection biased or none.
    Qwen3 { attention_bias: bool },
}

/// The text decoder's sizes, as both configs resolve them.
pub(super) struct DecoderShape {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
}

struct TextLayer {
    in_norm: RmsNorm,
    post_norm: RmsNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    /// Qwen3's per-head norms of Q and K.
    qk_norm: Option<(RmsNorm, RmsNorm)>,
    gate: Linear,
    up: Linear,
    down: Linear,
}

/// Keys and values per layer, `[1, kv heads, len, head dim]` each.
pub(super) type KvCache = Vec<(Tensor, Tensor)>;

pub(super) struct QwenDecoder {
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    device: Device,
    embed: Tensor,
    layers: Vec<TextLayer>,
    norm: RmsNorm,
    lm_head: Tensor,
}

impl QwenDecoder {
    /// Load from `vb` at the language model's root (`embed_tokens`, `layers.{i}`, `norm`);
    /// `lm_head` picks the output head given the embedding table (tied or its own tensor), and
    /// `layer_done` ticks after each layer.
    pub(super) fn load(
        vb: &VarBuilder,
        s: &DecoderShape,
        generation: Generation,
        lm_head: impl FnOnce(&Tensor) -> candle_core::Result<Tensor>,
        layer_done: &dyn Fn(),
    ) -> candle_core::Result<QwenDecoder> {
        let h = s.hidden_size;
        let (q, kv) = (
            s.num_attention_heads * s.head_dim,
            s.num_key_value_heads * s.head_dim,
        );
        let (qkv_bias, o_bias) = match generation {
            Generation::Qwen2 => (true, false),
            Generation::Qwen3 { attention_bias } => (attention_bias, attention_bias),
        };
        let embed = vb.pp("embed_tokens").get((s.vocab_size, h), "weight")?;
        let mut layers = Vec::with_capacity(s.num_hidden_layers);
        for i in 0..s.num_hidden_layers {
            let l = vb.pp("layers").pp(i);
            let qk_norm = match generation {
                Generation::Qwen2 => None,
                Generation::Qwen3 { .. } => Some((
                    rms_norm(&l.pp("self_attn.q_norm"), s.head_dim, s.rms_norm_eps)?,
                    rms_norm(&l.pp("self_attn.k_norm"), s.head_dim, s.rms_norm_eps)?,
                )),
            };
            layers.push(TextLayer {
                in_norm: rms_norm(&l.pp("input_layernorm"), h, s.rms_norm_eps)?,
                post_norm: rms_norm(&l.pp("post_attention_layernorm"), h, s.rms_norm_eps)?,
                q: linear(&l.pp("self_attn.q_proj"), h, q, qkv_bias)?,
                k: linear(&l.pp("self_attn.k_proj"), h, kv, qkv_bias)?,
                v: linear(&l.pp("self_attn.v_proj"), h, kv, qkv_bias)?,
                o: linear(&l.pp("self_attn.o_proj"), q, h, o_bias)?,
                qk_norm,
                gate: linear(&l.pp("mlp.gate_proj"), h, s.intermediate_size, false)?,
                up: linear(&l.pp("mlp.up_proj"), h, s.intermediate_size, false)?,
                down: linear(&l.pp("mlp.down_proj"), s.intermediate_size, h, false)?,
            });
            layer_done();
        }
        let norm = rms_norm(&vb.pp("norm"), h, s.rms_norm_eps)?;
        let lm_head = lm_head(&embed)?;
        Ok(QwenDecoder {
            heads: s.num_attention_heads,
            kv_heads: s.num_key_value_heads,
            head_dim: s.head_dim,
            device: vb.device().clone(),
            embed,
            layers,
            norm,
            lm_head,
        })
    }

    /// Token embeddings `[t, hidden]`.
    pub(super) fn embed(&self, ids: &[u32]) -> candle_core::Result<Tensor> {
        self.embed.index_select(&Tensor::new(ids, &self.device)?, 0)
    }

    /// Run a whole prompt `x` (`[1, t, hidden]`, embeddings with any image rows spliced in) and
    /// keep every layer's keys and values. `after_layer(i, x)` may change the hidden states after
    /// layer `i` (Qwen3-VL adds its DeepStack features there). Returns the keys and values and
    /// the next-token log-probabilities after the last token (`[vocab]`).
    pub(super) fn prefill(
        &self,
        x: Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mut after_layer: impl FnMut(usize, Tensor) -> candle_core::Result<Tensor>,
    ) -> candle_core::Result<(KvCache, Tensor)> {
        let t = x.dim(1)?;
        let mut x = x;
        let mut kv = Vec::with_capacity(self.layers.len());
        for (i, l) in self.layers.iter().enumerate() {
            let (q, k, v) = self.qkv(l, &x, cos, sin)?;
            let o = attend(&q, &k, &v, self.head_dim)?;
            x = after_layer(i, self.finish_layer(l, &x, &o)?)?;
            kv.push((k, v));
        }
        let last = x.i((0, t - 1))?.unsqueeze(0)?;
        Ok((kv, self.logprobs(&last)?.squeeze(0)?))
    }

    /// Next-token log-probabilities (`[batch, vocab]`, f32) after each text suffix, every suffix
    /// continuing the prefix whose keys and values are `past`. `rope(lens)` gives the cos/sin
    /// tables of the packed suffixes' positions.
    pub(super) fn suffix_logprobs(
        &self,
        past: &[(Tensor, Tensor)],
        suffixes: &[Vec<u32>],
        rope: impl FnOnce(&[usize]) -> candle_core::Result<(Tensor, Tensor)>,
    ) -> candle_core::Result<Tensor> {
        if suffixes.is_empty() || suffixes.iter().any(Vec::is_empty) {
            candle_core::bail!("every suffix needs at least one token");
        }
        // Packed, not padded: the suffixes' tokens side by side as one sequence, so the
        // projections and MLPs do no work on padding; attention keeps them apart.
        let lens: Vec<usize> = suffixes.iter().map(Vec::len).collect();
        let mut x = self.embed(&suffixes.concat())?.unsqueeze(0)?;
        let (cos, sin) = rope(&lens)?;
        for (l, (pk, pv)) in self.layers.iter().zip(past) {
            let (q, k, v) = self.qkv(l, &x, &cos, &sin)?;
            let o = attend_packed(&q, (pk, pv), &k, &v, &lens, self.head_dim)?;
            x = self.finish_layer(l, &x, &o)?;
        }
        let rows: Vec<u32> = lens
            .iter()
            .scan(0usize, |end, &n| {
                *end += n;
                Some((*end - 1) as u32)
            })
            .collect();
        let rows = Tensor::new(rows.as_slice(), &self.device)?;
        let last = x.squeeze(0)?.index_select(&rows, 0)?;
        self.logprobs(&last)
    }

    /// Q, K, V of one layer, normed (Qwen3) and rotated: `[b, heads, t, head_dim]`.
    fn qkv(
        &self,
        l: &TextLayer,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
    ) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
        let (b, t, _) = x.dims3()?;
        let hd = self.head_dim;
        let y = l.in_norm.forward(x)?;
        let split = |lin: &Linear, heads: usize| -> candle_core::Result<Tensor> {
            apply(lin, &y)?.reshape((b, t, heads, hd))
        };
        let (mut q, mut k) = (split(&l.q, self.heads)?, split(&l.k, self.kv_heads)?);
        if let Some((q_norm, k_norm)) = &l.qk_norm {
            q = q_norm.forward(&q)?;
            k = k_norm.forward(&k)?;
        }
        let v = split(&l.v, self.kv_heads)?;
        let q = candle_nn::rotary_emb::rope(&q.transpose(1, 2)?.contiguous()?, cos, sin)?;
        let k = candle_nn::rotary_emb::rope(&k.transpose(1, 2)?.contiguous()?, cos, sin)?;
        Ok((q, k, v.transpose(1, 2)?.contiguous()?))
    }

    /// Output projection, residual, MLP, residual.
    fn finish_layer(&self, l: &TextLayer, x: &Tensor, o: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let o = o.transpose(1, 2)?.reshape((b, t, ()))?;
        let x = (x + apply(&l.o, &o)?)?;
        let y = l.post_norm.forward(&x)?;
        let g = apply(&l.gate, &y)?.silu()?;
        let u = apply(&l.up, &y)?;
        &x + apply(&l.down, &(g * u)?)?
    }

    /// Final norm, output head and log-softmax for hidden rows `[n, hidden]` → `[n, vocab]` f32.
    fn logprobs(&self, h: &Tensor) -> candle_core::Result<Tensor> {
        let h = self.norm.forward(h)?;
        let logits = h.matmul(&self.lm_head.t()?)?.to_dtype(DType::F32)?;
        candle_nn::ops::log_softmax(&logits, D::Minus1)
    }
}

/// Causal grouped-query attention within one prompt: `q` `[b, heads, s, d]`, keys and values
/// `[b, kv heads, s, d]`. Returns `[b, heads, s, d]`.
fn attend(q: &Tensor, k: &Tensor, v: &Tensor, hd: usize) -> candle_core::Result<Tensor> {
    let (b, hq, s, _) = q.dims4()?;
    let hkv = k.dim(1)?;
    let rep = hq / hkv;
    // Query heads of one KV group stacked: [b, hkv, rep·s, d].
    let qg = (q.reshape((b, hkv, rep * s, hd))? * (hd as f64).powf(-0.5))?;
    let own = qg.matmul(&k.t()?)?;
    let w = softmax_f32(&own.broadcast_add(&causal_mask(rep, s, q)?)?)?;
    w.matmul(v)?.reshape((b, hq, s, hd))
}

/// `[rep·s, s]`: row `r·s + i` (query position `i`) sees keys `0..=i`.
fn causal_mask(rep: usize, s: usize, like: &Tensor) -> candle_core::Result<Tensor> {
    let mask: Vec<f32> = (0..rep * s)
        .flat_map(|r| (0..s).map(move |j| if j > r % s { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(mask, (rep * s, s), like.device())?.to_dtype(like.dtype())
}

/// Attention of packed suffixes over one shared prefix. `q` is `[1, heads, total, d]` and `k`,
/// `v` `[1, kv heads, total, d]` for the suffixes laid end to end (`lens` tokens each); `past`
/// holds the prefix's keys and values `[1, kv heads, p, d]`. Every suffix sees the whole prefix
/// and its own earlier tokens, never another suffix. Returns `[1, heads, total, d]`.
fn attend_packed(
    q: &Tensor,
    past: (&Tensor, &Tensor),
    k: &Tensor,
    v: &Tensor,
    lens: &[usize],
    hd: usize,
) -> candle_core::Result<Tensor> {
    let (_, hq, total, _) = q.dims4()?;
    let hkv = k.dim(1)?;
    let rep = hq / hkv;
    let scale = (hd as f64).powf(-0.5);
    let (pk, pv) = (past.0.squeeze(0)?, past.1.squeeze(0)?);
    let p = pk.dim(1)?;
    let qg = (q.squeeze(0)?.reshape((hkv, rep, total, hd))? * scale)?;
    let (k, v) = (k.squeeze(0)?, v.squeeze(0)?);
    // All queries against the shared prefix in one matmul per KV group.
    let shared = qg
        .reshape((hkv, rep * total, hd))?
        .matmul(&pk.t()?)?
        .reshape((hkv, rep, total, p))?;
    let mut outs = Vec::with_capacity(lens.len());
    let mut start = 0;
    for &n in lens {
        let qs = qg
            .narrow(2, start, n)?
            .contiguous()?
            .reshape((hkv, rep * n, hd))?;
        let ks = k.narrow(1, start, n)?.contiguous()?;
        let vs = v.narrow(1, start, n)?.contiguous()?;
        let own = qs
            .matmul(&ks.t()?)?
            .broadcast_add(&causal_mask(rep, n, q)?)?;
        let sp = shared
            .narrow(2, start, n)?
            .contiguous()?
            .reshape((hkv, rep * n, p))?;
        let w = softmax_f32(&Tensor::cat(&[&sp, &own], D::Minus1)?)?;
        let o = (w.narrow(D::Minus1, 0, p)?.contiguous()?.matmul(&pv)?
            + w.narrow(D::Minus1, p, n)?.contiguous()?.matmul(&vs)?)?;
        outs.push(o.reshape((hkv, rep, n, hd))?);
        start += n;
    }
    Tensor::cat(&outs, 2)?.reshape((1, hq, total, hd))
}
