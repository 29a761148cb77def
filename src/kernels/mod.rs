//! Our CPU kernels (convolution, pooling, normalisation) as candle custom ops with their backward.
//!
//! candle 0.11.1 trains a CNN on the CPU about 10× slower than PyTorch: its convolution input
//! gradient is a direct conv-transpose loop, its batch norm is a dozen tensor passes each way,
//! and its pooling backward only works when kernel == stride. The functions here are drop-in
//! replacements that the student zoo calls:
//!
//! - [`conv2d`] (and the [`Conv2d`] layer from [`conv2d_layer`] / [`conv2d_no_bias_layer`]):
//!   im2col + the `gemm` crate for dense and grouped convolutions, a direct kernel for
//!   depthwise ones; backward computes both gradients in one pass over the batch.
//! - [`max_pool2d`], [`avg_pool2d`]: any kernel, stride and padding, with backward.
//! - [`batch_norm_train`] / [`batch_norm_act_train`] and the [`BatchNorm`] layer from
//!   [`batch_norm_layer`]: two passes forward, two backward, with the following activation
//!   ([`Act`]: ReLU, ReLU6, SiLU) fused in; in evaluation mode one pass.
//!
//! Each takes the fast path for f32 tensors on the CPU and otherwise (CUDA, f16/bf16) falls back
//! to candle's own ops, so a model built on these functions runs anywhere. Gradients are
//! first-order only: the backward of our ops is not itself differentiable.

mod buf;
pub mod conv;
mod excite;
mod norm;
pub mod pool;
#[cfg(test)]
mod reference;
mod simd;
#[cfg(test)]
mod tests;

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Module, ModuleT, Result, Shape,
    Tensor, Var,
};
use candle_nn::{BatchNormConfig, Conv2dConfig, VarBuilder};

use buf::{f32_data, is_cpu_f32, with_f32};
pub use conv::ConvGeom;
pub use norm::Act;
use norm::NormGeom;
pub use pool::PoolGeom;

// ---------------------------------------------------------------------------------------------
// Convolution

/// 2-D convolution of `x` `[N, C_in, H, W]` with `w` `[C_out, C_in / groups, kh, kw]`, square
/// `stride` and zero `padding`, dilation 1, plus an optional `bias` `[C_out]`: PyTorch's
/// `F.conv2d(x, w, bias, stride, padding, 1, groups)`.
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
    groups: usize,
) -> Result<Tensor> {
    let y = if is_cpu_f32(x) && is_cpu_f32(w) {
        let geom = ConvGeom::new(x.dims(), w.dims(), stride, padding, groups)?;
        x.contiguous()?
            .apply_op2(&w.contiguous()?, ConvOp { geom })?
    } else {
        x.conv2d(w, padding, stride, 1, groups)?
    };
    match bias {
        None => Ok(y),
        Some(b) => y.broadcast_add(&b.reshape((1, (), 1, 1))?),
    }
}

struct ConvOp {
    geom: ConvGeom,
}

impl CustomOp2 for ConvOp {
    fn name(&self) -> &'static str {
        "makd-conv2d"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = &self.geom;
        let x = f32_data(xs, xl, "conv2d")?;
        let w = f32_data(ws, wl, "conv2d")?;
        let y = conv::forward(g, x, w);
        Ok((CpuStorage::F32(y), Shape::from((g.n, g.o, g.oh, g.ow))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // The network's input image needs no gradient: skipping it saves the col2im of the
        // largest feature map.
        let (need_dx, need_dw) = (x.track_op(), w.track_op());
        let (dx, dw) = with_f32(x, "conv2d backward", |xd| {
            with_f32(w, "conv2d backward", |wd| {
                with_f32(grad, "conv2d backward", |gd| {
                    Ok(conv::backward(&self.geom, xd, wd, gd, need_dx, need_dw))
                })
            })
        })?;
        let dx = dx
            .map(|v| Tensor::from_vec(v, x.shape(), x.device()))
            .transpose()?;
        let dw = dw
            .map(|v| Tensor::from_vec(v, w.shape(), w.device()))
            .transpose()?;
        Ok((dx, dw))
    }
}

/// A convolution layer with candle-nn's `Conv2d` interface and checkpoint names (`weight`,
/// `bias`), running [`conv2d`].
#[derive(Clone, Debug)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    config: Conv2dConfig,
}

impl Conv2d {
    pub fn new(weight: Tensor, bias: Option<Tensor>, config: Conv2dConfig) -> Self {
        Conv2d {
            weight,
            bias,
            config,
        }
    }

    pub fn config(&self) -> &Conv2dConfig {
        &self.config
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
}

impl BiasFreeConv for Conv2d {
    fn parts(&self) -> Option<ConvParts<'_>> {
        let c = &self.config;
        (self.bias.is_none() && c.dilation == 1).then_some(ConvParts {
            weight: &self.weight,
            stride: c.stride,
            padding: c.padding,
            groups: c.groups,
        })
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        if c.dilation != 1 {
            // Not a case our kernels cover (no student uses it): candle's own conv.
            let y = x.conv2d(&self.weight, c.padding, c.stride, c.dilation, c.groups)?;
            return match &self.bias {
                None => Ok(y),
                Some(b) => y.broadcast_add(&b.reshape((1, (), 1, 1))?),
            };
        }
        conv2d(
            x,
            &self.weight,
            self.bias.as_ref(),
            c.stride,
            c.padding,
            c.groups,
        )
    }
}

/// Same variables, shapes and initialisation as `candle_nn::conv2d`, so checkpoints written by
/// either load in the other.
pub fn conv2d_layer(
    in_channels: usize,
    out_channels: usize,
    kernel_size: usize,
    cfg: Conv2dConfig,
    vb: VarBuilder,
) -> Result<Conv2d> {
    let conv = candle_nn::conv2d(in_channels, out_channels, kernel_size, cfg, vb)?;
    Ok(Conv2d::new(
        conv.weight().clone(),
        conv.bias().cloned(),
        cfg,
    ))
}

/// Same variables, shapes and initialisation as `candle_nn::conv2d_no_bias`.
pub fn conv2d_no_bias_layer(
    in_channels: usize,
    out_channels: usize,
    kernel_size: usize,
    cfg: Conv2dConfig,
    vb: VarBuilder,
) -> Result<Conv2d> {
    let conv = candle_nn::conv2d_no_bias(in_channels, out_channels, kernel_size, cfg, vb)?;
    Ok(Conv2d::new(conv.weight().clone(), None, cfg))
}

// ---------------------------------------------------------------------------------------------
// Pooling

/// Max-pool of `[N, C, H, W]` with a square `kernel`, `stride` and `padding` (padding counts as
/// −∞; at most half the kernel), floor mode: PyTorch's `F.max_pool2d(x, k, s, p)`. The gradient
/// goes to the first maximum of each window.
pub fn max_pool2d(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
    let geom = PoolGeom::new(x.dims(), kernel, stride, padding, "max_pool2d")?;
    if is_cpu_f32(x) {
        return x.contiguous()?.apply_op1(PoolOp::new(geom, PoolKind::Max));
    }
    pool_fallback(x, &geom, PoolKind::Max)
}

/// Average pool, PyTorch's `F.avg_pool2d(x, k, s, p, count_include_pad=...)` in floor mode: with
/// `count_include_pad` each window divides by k², otherwise by the real pixels it covers.
pub fn avg_pool2d(
    x: &Tensor,
    kernel: usize,
    stride: usize,
    padding: usize,
    count_include_pad: bool,
) -> Result<Tensor> {
    let geom = PoolGeom::new(x.dims(), kernel, stride, padding, "avg_pool2d")?;
    let kind = PoolKind::Avg { count_include_pad };
    if is_cpu_f32(x) {
        return x.contiguous()?.apply_op1(PoolOp::new(geom, kind));
    }
    pool_fallback(x, &geom, kind)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PoolKind {
    Max,
    Avg { count_include_pad: bool },
}

struct PoolOp {
    geom: PoolGeom,
    kind: PoolKind,
    /// Max pooling: where each window's maximum was, recorded by the forward for the backward
    /// (the graph keeps this op, and so these, until the gradients are computed).
    argmax: std::sync::Mutex<Option<Vec<u32>>>,
}

impl PoolOp {
    fn new(geom: PoolGeom, kind: PoolKind) -> Self {
        PoolOp {
            geom,
            kind,
            argmax: Default::default(),
        }
    }
}

impl CustomOp1 for PoolOp {
    fn name(&self) -> &'static str {
        match self.kind {
            PoolKind::Max => "makd-max-pool2d",
            PoolKind::Avg { .. } => "makd-avg-pool2d",
        }
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_data(s, l, self.name())?;
        let y = match self.kind {
            PoolKind::Max => {
                let (y, idx) = pool::max_forward(&self.geom, x);
                *self.argmax.lock().unwrap_or_else(|e| e.into_inner()) = idx;
                y
            }
            PoolKind::Avg { count_include_pad } => {
                pool::avg_forward(&self.geom, x, count_include_pad)
            }
        };
        let d = l.dims();
        Ok((
            CpuStorage::F32(y),
            Shape::from((d[0], d[1], self.geom.oh, self.geom.ow)),
        ))
    }

    fn bwd(&self, x: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let dx = with_f32(grad, self.name(), |dy| match self.kind {
            PoolKind::Max => with_f32(x, self.name(), |xd| {
                with_f32(res, self.name(), |yd| {
                    let idx = self.argmax.lock().unwrap_or_else(|e| e.into_inner());
                    Ok(pool::max_backward(&self.geom, xd, yd, idx.as_deref(), dy))
                })
            }),
            PoolKind::Avg { count_include_pad } => {
                Ok(pool::avg_backward(&self.geom, dy, count_include_pad))
            }
        })?;
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}

/// Pooling from candle tensor ops, for devices and dtypes our kernels do not cover: pad, then
/// combine the k² strided views of the padded input. Each view is a narrow + a reshape that
/// splits off the stride, so everything is differentiable by candle.
fn pool_fallback(x: &Tensor, g: &PoolGeom, kind: PoolKind) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (k, s, p) = (g.k, g.stride, g.pad);
    let fill = match kind {
        PoolKind::Max => f64::NEG_INFINITY,
        PoolKind::Avg { .. } => 0.0,
    };
    // Pad by `p` on the top/left and enough on the bottom/right that every view of `o·s` rows
    // starting at offset < k fits (those extra rows are never selected).
    let (hp, wp) = (
        (k - 1 + g.oh * s).max(h + 2 * p),
        (k - 1 + g.ow * s).max(w + 2 * p),
    );
    let pad_dim = |t: &Tensor, dim: usize, before: usize, after: usize| -> Result<Tensor> {
        let mut parts = Vec::with_capacity(3);
        let mut shape = t.dims().to_vec();
        if before > 0 {
            shape[dim] = before;
            parts.push(Tensor::full(fill, shape.as_slice(), t.device())?.to_dtype(t.dtype())?);
        }
        parts.push(t.clone());
        if after > 0 {
            shape[dim] = after;
            parts.push(Tensor::full(fill, shape.as_slice(), t.device())?.to_dtype(t.dtype())?);
        }
        Tensor::cat(&parts, dim)
    };
    let xp = pad_dim(x, 2, p, hp - h - p)?;
    let xp = pad_dim(&xp, 3, p, wp - w - p)?;
    let mut acc: Option<Tensor> = None;
    for di in 0..k {
        let rows = xp
            .narrow(2, di, g.oh * s)?
            .reshape((n, c, g.oh, s, wp))?
            .narrow(3, 0, 1)?;
        for dj in 0..k {
            let v = rows
                .narrow(4, dj, g.ow * s)?
                .reshape((n, c, g.oh, 1, g.ow, s))?
                .narrow(5, 0, 1)?
                .reshape((n, c, g.oh, g.ow))?;
            acc = Some(match acc {
                None => v,
                Some(a) => match kind {
                    PoolKind::Max => a.maximum(&v)?,
                    PoolKind::Avg { .. } => (a + v)?,
                },
            });
        }
    }
    let Some(acc) = acc else {
        candle_core::bail!("pool: empty kernel")
    };
    match kind {
        PoolKind::Max => Ok(acc),
        PoolKind::Avg { count_include_pad } => {
            let inv = pool::inverse_counts(g, count_include_pad);
            let inv = Tensor::from_vec(inv, (1, 1, g.oh, g.ow), x.device())?.to_dtype(x.dtype())?;
            acc.broadcast_mul(&inv)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Residual sum

/// `relu(a + b)` in one pass, the end of every ResNet block. candle runs it as an add and a
/// ReLU forward and, backward, as a comparison, a cast, a multiply and two gradient sums;
/// here the backward is one masked copy shared by both inputs.
pub fn add_relu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.dims() != b.dims() {
        candle_core::bail!("add_relu: shapes {:?} and {:?} differ", a.dims(), b.dims())
    }
    if is_cpu_f32(a) && is_cpu_f32(b) {
        return a.contiguous()?.apply_op2(&b.contiguous()?, AddRelu);
    }
    (a + b)?.relu()
}

struct AddRelu;

impl CustomOp2 for AddRelu {
    fn name(&self) -> &'static str {
        "makd-add-relu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let a = f32_data(s1, l1, self.name())?;
        let b = f32_data(s2, l2, self.name())?;
        Ok((CpuStorage::F32(norm::add_relu(a, b)), l1.shape().clone()))
    }

    fn bwd(
        &self,
        a: &Tensor,
        _b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = with_f32(res, self.name(), |y| {
            with_f32(grad, self.name(), |dy| Ok(norm::relu_grad(y, dy)))
        })?;
        let g = Tensor::from_vec(g, a.shape(), a.device())?;
        Ok((Some(g.clone()), Some(g)))
    }
}

// ---------------------------------------------------------------------------------------------
// Batch normalisation

/// Training-mode batch norm of `x` `[N, C, ...]` with batch statistics: returns
/// `(y, batch_mean, batch_var)` with `y = (x − mean) / sqrt(var + eps) · weight + bias` and the
/// biased variance (what normalises; a running average wants the unbiased one, see
/// [`BatchNorm`]). Gradients flow to `x`, `weight` and `bias`; `batch_mean` and `batch_var`
/// are detached.
pub fn batch_norm_train(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    batch_norm_act_train(x, weight, bias, eps, Act::None)
}

/// [`batch_norm_train`] followed by `act` in the same pass (and the same backward pass).
pub fn batch_norm_act_train(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    act: Act,
) -> Result<(Tensor, Tensor, Tensor)> {
    let dims = x.dims();
    if dims.len() < 2 {
        candle_core::bail!("batch_norm: expected at least [N, C], got {dims:?}")
    }
    let c = dims[1];
    if weight.dims() != [c] || bias.dims() != [c] {
        candle_core::bail!(
            "batch_norm: weight {:?} / bias {:?} do not match the {c} channels of {dims:?}",
            weight.dims(),
            bias.dims()
        )
    }
    if !(is_cpu_f32(x) && is_cpu_f32(weight) && is_cpu_f32(bias)) {
        return batch_norm_fallback(x, weight, bias, eps, act);
    }
    let x = x.contiguous()?;
    let (op, mean, var) = with_f32(&x, "batch_norm", |xd| {
        NormOp::from_batch(norm_geom(dims), xd, eps, act, x.device())
    })?;
    let y = x.apply_op3(&weight.contiguous()?, &bias.contiguous()?, op)?;
    Ok((y, mean, var))
}

/// A bias-free convolution as our kernels run it (dilation 1): what
/// [`BatchNorm::forward_conv_act_t`] fuses with the batch norm after it.
#[derive(Clone, Copy, Debug)]
pub struct ConvParts<'a> {
    pub weight: &'a Tensor,
    pub stride: usize,
    pub padding: usize,
    pub groups: usize,
}

/// A convolution layer that can say whether it is a [`ConvParts`] (`None`: a bias or a
/// dilation, run unfused).
pub trait BiasFreeConv: Module {
    fn parts(&self) -> Option<ConvParts<'_>>;
}

/// Training-mode `act(batch_norm(conv2d(x, w)))` as one node of the graph: the same numbers as
/// [`conv2d`] then [`batch_norm_act_train`], returning `(y, batch_mean, batch_var)` likewise.
///
/// Why one node: candle's backward gives every tensor of the graph a zero-filled gradient and
/// then adds each incoming gradient to it, two more passes over (and a fresh buffer the size
/// of) the conv's output; inside one op, the batch norm's input gradient goes straight into the
/// convolution's backward. The conv output stays inside the op for the backward, as it stayed
/// in the graph before.
pub fn conv_batch_norm_act_train(
    x: &Tensor,
    conv: ConvParts,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    act: Act,
) -> Result<(Tensor, Tensor, Tensor)> {
    let w = conv.weight;
    if !([x, w, weight, bias].iter().all(|t| is_cpu_f32(t))) {
        let z = conv2d(x, w, None, conv.stride, conv.padding, conv.groups)?;
        return batch_norm_act_train(&z, weight, bias, eps, act);
    }
    let cgeom = ConvGeom::new(x.dims(), w.dims(), conv.stride, conv.padding, conv.groups)?;
    let c = cgeom.o;
    if weight.dims() != [c] || bias.dims() != [c] {
        candle_core::bail!(
            "batch_norm: weight {:?} / bias {:?} do not match the conv's {c} output channels",
            weight.dims(),
            bias.dims()
        )
    }
    let (x, w) = (x.contiguous()?, w.contiguous()?);
    let z = with_f32(&x, "conv-batch-norm", |xd| {
        with_f32(&w, "conv-batch-norm", |wd| {
            Ok(conv::forward(&cgeom, xd, wd))
        })
    })?;
    let ngeom = NormGeom {
        n: cgeom.n,
        c,
        hw: cgeom.oh * cgeom.ow,
    };
    let (norm, mean, var) = NormOp::from_batch(ngeom, &z, eps, act, x.device())?;
    let gamma_beta = Tensor::cat(&[weight, bias], 0)?;
    let y = x.apply_op3(
        &w,
        &gamma_beta,
        ConvNormOp {
            conv: cgeom,
            norm,
            z,
        },
    )?;
    Ok((y, mean, var))
}

/// [`conv_batch_norm_act_train`]'s node: inputs `x`, the conv weight and `[gamma; beta]`.
struct ConvNormOp {
    conv: ConvGeom,
    norm: NormOp,
    /// The convolution's output, the batch norm's input.
    z: Vec<f32>,
}

impl CustomOp3 for ConvNormOp {
    fn name(&self) -> &'static str {
        "makd-conv-batch-norm-act"
    }

    fn cpu_fwd(
        &self,
        _xs: &CpuStorage,
        _xl: &Layout,
        _ws: &CpuStorage,
        _wl: &Layout,
        gbs: &CpuStorage,
        gbl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (gamma, beta) = f32_data(gbs, gbl, self.name())?.split_at(self.norm.geom.c);
        let y = self.norm.forward(&self.z, gamma, beta);
        let g = &self.conv;
        Ok((CpuStorage::F32(y), Shape::from((g.n, g.o, g.oh, g.ow))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        gamma_beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let name = self.name();
        let (dz, mut dgb, db) = with_f32(grad, name, |dy| {
            with_f32(gamma_beta, name, |gb| {
                let (gamma, beta) = gb.split_at(self.norm.geom.c);
                Ok(self.norm.backward(&self.z, dy, gamma, beta))
            })
        })?;
        dgb.extend_from_slice(&db);
        // The network's input image needs no gradient (see ConvOp).
        let (need_dx, need_dw) = (x.track_op(), w.track_op());
        let (dx, dw) = with_f32(x, name, |xd| {
            with_f32(w, name, |wd| {
                Ok(conv::backward(&self.conv, xd, wd, &dz, need_dx, need_dw))
            })
        })?;
        let dev = x.device();
        Ok((
            dx.map(|v| Tensor::from_vec(v, x.shape(), dev))
                .transpose()?,
            dw.map(|v| Tensor::from_vec(v, w.shape(), dev))
                .transpose()?,
            Some(Tensor::from_vec(dgb, gamma_beta.shape(), dev)?),
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Squeeze-excitation

/// The two layers of a squeeze-excitation: `w1` `[S, C]`, `b1` `[S]`, `w2` `[C, S]`, `b2` `[C]`.
#[derive(Clone, Copy, Debug)]
pub struct SqueezeWeights<'a> {
    pub w1: &'a Tensor,
    pub b1: &'a Tensor,
    pub w2: &'a Tensor,
    pub b2: &'a Tensor,
}

/// EfficientNet's squeeze-excitation of `x` `[N, C, H, W]`:
/// `x · σ(w2 · SiLU(w1 · mean_hw(x) + b1) + b2)` (torchvision's `fc1`/`fc2` 1×1 convs as
/// matrices, [`SqueezeWeights`]), as one graph node whose
/// backward makes two passes over the activations (see `excite.rs`). Gradients flow to `x`
/// and all four parameters.
pub fn squeeze_excitation(x: &Tensor, p: SqueezeWeights) -> Result<Tensor> {
    let SqueezeWeights { w1, b1, w2, b2 } = p;
    let (n, c, h, w) = x.dims4()?;
    let s = w1.dim(0)?;
    if w1.dims() != [s, c] || b1.dims() != [s] || w2.dims() != [c, s] || b2.dims() != [c] {
        candle_core::bail!(
            "squeeze_excitation: w1 {:?}, b1 {:?}, w2 {:?}, b2 {:?} do not fit {c} channels",
            w1.dims(),
            b1.dims(),
            w2.dims(),
            b2.dims()
        )
    }
    if !([x, w1, b1, w2, b2].iter().all(|t| is_cpu_f32(t))) {
        return squeeze_excitation_fallback(x, p);
    }
    let geom = excite::SeGeom { n, c, hw: h * w, s };
    let params = Tensor::cat(&[&w1.flatten_all()?, b1, &w2.flatten_all()?, b2], 0)?;
    let x = x.contiguous()?;
    let squeezed = with_f32(&x, "squeeze_excitation", |xd| {
        with_f32(&params, "squeeze_excitation", |pd| {
            Ok(excite::squeeze(&geom, xd, pd))
        })
    })?;
    x.apply_op2(&params, SeOp { geom, squeezed })
}

/// [`squeeze_excitation`] from candle ops, for devices and dtypes our kernels do not cover.
fn squeeze_excitation_fallback(x: &Tensor, p: SqueezeWeights) -> Result<Tensor> {
    let SqueezeWeights { w1, b1, w2, b2 } = p;
    let (n, c, _, _) = x.dims4()?;
    let m = x.mean_keepdim((2, 3))?.reshape((n, c))?;
    let hidden = m.matmul(&w1.t()?)?.broadcast_add(b1)?.silu()?;
    let gate = candle_nn::ops::sigmoid(&hidden.matmul(&w2.t()?)?.broadcast_add(b2)?)?;
    x.broadcast_mul(&gate.reshape((n, c, 1, 1))?)
}

/// [`squeeze_excitation`]'s node: inputs `x` and the flat `[w1; b1; w2; b2]`.
struct SeOp {
    geom: excite::SeGeom,
    squeezed: excite::Squeezed,
}

impl CustomOp2 for SeOp {
    fn name(&self) -> &'static str {
        "makd-squeeze-excitation"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        _ps: &CpuStorage,
        _pl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_data(xs, xl, self.name())?;
        let y = excite::excite(&self.geom, x, &self.squeezed.gate);
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        params: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let name = self.name();
        let (dx, dp) = with_f32(x, name, |xd| {
            with_f32(params, name, |pd| {
                with_f32(grad, name, |dy| {
                    Ok(excite::backward(&self.geom, xd, pd, &self.squeezed, dy))
                })
            })
        })?;
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), dev)?),
            Some(Tensor::from_vec(dp, params.shape(), dev)?),
        ))
    }
}

fn norm_geom(dims: &[usize]) -> NormGeom {
    NormGeom {
        n: dims[0],
        c: dims[1],
        hw: dims[2..].iter().product(),
    }
}

fn norm_op_name(act: Act) -> &'static str {
    match act {
        Act::None => "makd-batch-norm",
        Act::Relu => "makd-batch-norm-relu",
        Act::Relu6 => "makd-batch-norm-relu6",
        Act::Silu => "makd-batch-norm-silu",
    }
}

struct NormOp {
    geom: NormGeom,
    mean: Vec<f32>,
    invstd: Vec<f32>,
    act: Act,
}

impl NormOp {
    /// The node normalising `x` with its own batch statistics, and those statistics (mean and
    /// biased variance) as detached tensors.
    fn from_batch(
        geom: NormGeom,
        x: &[f32],
        eps: f64,
        act: Act,
        device: &candle_core::Device,
    ) -> Result<(Self, Tensor, Tensor)> {
        let (mean, var) = norm::batch_stats(&geom, x);
        let invstd = var
            .iter()
            .map(|&v| (1.0 / (v as f64 + eps).sqrt()) as f32)
            .collect();
        let mean_t = Tensor::from_slice(&mean, geom.c, device)?;
        let var_t = Tensor::from_vec(var, geom.c, device)?;
        let op = NormOp {
            geom,
            mean,
            invstd,
            act,
        };
        Ok((op, mean_t, var_t))
    }

    fn forward(&self, x: &[f32], gamma: &[f32], beta: &[f32]) -> Vec<f32> {
        let coef = norm::affine_coefficients(&self.mean, &self.invstd, gamma, beta);
        norm::apply(&self.geom, x, &coef, self.act)
    }

    /// `(dx, dgamma, dbeta)`.
    fn backward(
        &self,
        x: &[f32],
        dy: &[f32],
        gamma: &[f32],
        beta: &[f32],
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let coef = norm::affine_coefficients(&self.mean, &self.invstd, gamma, beta);
        norm::backward(&self.geom, x, dy, &self.mean, &self.invstd, &coef, self.act)
    }
}

impl CustomOp3 for NormOp {
    fn name(&self) -> &'static str {
        norm_op_name(self.act)
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_data(xs, xl, self.name())?;
        let gamma = f32_data(gs, gl, self.name())?;
        let beta = f32_data(bs, bl, self.name())?;
        Ok((
            CpuStorage::F32(self.forward(x, gamma, beta)),
            xl.shape().clone(),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let name = self.name();
        let (dx, dg, db) = with_f32(x, name, |xd| {
            with_f32(grad, name, |dy| {
                with_f32(gamma, name, |gd| {
                    with_f32(beta, name, |bd| Ok(self.backward(xd, dy, gd, bd)))
                })
            })
        })?;
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), dev)?),
            Some(Tensor::from_vec(dg, gamma.shape(), dev)?),
            Some(Tensor::from_vec(db, beta.shape(), dev)?),
        ))
    }
}

/// Evaluation-mode batch norm with its activation, `act(x · scale_c + shift_c)`, in one pass.
/// The gradient flows to `x` only (what a saliency map or a receptive-field probe asks for):
/// nothing trains through the running statistics, and training runs in training mode.
struct EvalNormOp {
    coef: Vec<(f32, f32)>,
    act: Act,
}

impl CustomOp1 for EvalNormOp {
    fn name(&self) -> &'static str {
        norm_op_name(self.act)
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_data(xs, xl, self.name())?;
        let y = norm::apply(&norm_geom(xl.dims()), x, &self.coef, self.act);
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let name = self.name();
        let grad = grad.contiguous()?;
        let dx = with_f32(x, name, |xd| {
            with_f32(&grad, name, |dy| {
                Ok(norm::apply_backward(
                    &norm_geom(x.dims()),
                    xd,
                    dy,
                    &self.coef,
                    self.act,
                ))
            })
        })?;
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}

impl Act {
    /// The activation from candle ops (any device or dtype).
    pub fn apply(self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Act::None => Ok(xs.clone()),
            Act::Relu => xs.relu(),
            Act::Relu6 => xs.clamp(0f32, 6f32),
            Act::Silu => xs.silu(),
        }
    }
}

/// Batch norm from candle tensor ops (any device or dtype), computed in f32 at least.
fn batch_norm_fallback(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    act: Act,
) -> Result<(Tensor, Tensor, Tensor)> {
    let dtype = x.dtype();
    let work = match dtype {
        DType::F16 | DType::BF16 => DType::F32,
        d => d,
    };
    let c = x.dim(1)?;
    let mut bshape = vec![1; x.rank()];
    bshape[1] = c;
    let xw = x.to_dtype(work)?;
    let reduce: Vec<usize> = (0..x.rank()).filter(|&d| d != 1).collect();
    let mean = xw.mean_keepdim(reduce.as_slice())?;
    let xc = xw.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(reduce.as_slice())?;
    let scale = (var.clone() + eps)?
        .sqrt()?
        .recip()?
        .broadcast_mul(&weight.to_dtype(work)?.reshape(bshape.as_slice())?)?;
    let y = xc
        .broadcast_mul(&scale)?
        .broadcast_add(&bias.to_dtype(work)?.reshape(bshape.as_slice())?)?;
    let y = act.apply(&y)?;
    Ok((
        y.to_dtype(dtype)?,
        mean.flatten_all()?.detach(),
        var.flatten_all()?.detach(),
    ))
}

/// Batch norm with candle-nn's `BatchNorm` variables (`weight`, `bias`, `running_mean`,
/// `running_var`), initialisation and running-statistics update (momentum on the unbiased batch
/// variance), training through [`batch_norm_train`].
#[derive(Clone, Debug)]
pub struct BatchNorm {
    running_mean: Var,
    running_var: Var,
    weight: Tensor,
    bias: Tensor,
    eps: f64,
    momentum: f64,
}

/// Same variables, shapes and initialisation as `candle_nn::batch_norm` (an `affine = false`
/// config is served with a fixed weight of 1 and bias of 0 that are not variables).
pub fn batch_norm_layer(
    num_features: usize,
    cfg: BatchNormConfig,
    vb: VarBuilder,
) -> Result<BatchNorm> {
    if cfg.eps < 0.0 {
        candle_core::bail!("batch-norm eps cannot be negative {}", cfg.eps)
    }
    let running_mean =
        vb.get_with_hints(num_features, "running_mean", candle_nn::Init::Const(0.))?;
    let running_var = vb.get_with_hints(num_features, "running_var", candle_nn::Init::Const(1.))?;
    let (weight, bias) = if cfg.affine {
        (
            vb.get_with_hints(num_features, "weight", candle_nn::Init::Const(1.))?,
            vb.get_with_hints(num_features, "bias", candle_nn::Init::Const(0.))?,
        )
    } else {
        (
            Tensor::ones(num_features, vb.dtype(), vb.device())?,
            Tensor::zeros(num_features, vb.dtype(), vb.device())?,
        )
    };
    Ok(BatchNorm {
        running_mean: Var::from_tensor(&running_mean)?,
        running_var: Var::from_tensor(&running_var)?,
        weight,
        bias,
        eps: cfg.eps,
        momentum: cfg.momentum,
    })
}

impl BatchNorm {
    pub fn running_mean(&self) -> &Tensor {
        self.running_mean.as_tensor()
    }

    pub fn running_var(&self) -> &Tensor {
        self.running_var.as_tensor()
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn bias(&self) -> &Tensor {
        &self.bias
    }

    /// Batch norm then `act`; in training mode one fused kernel that also updates the running
    /// statistics, in eval mode the running statistics' affine map (fused too on the CPU).
    pub fn forward_act_t(&self, x: &Tensor, train: bool, act: Act) -> Result<Tensor> {
        if !train {
            return self.forward_eval(x, act);
        }
        let (y, mean, var) = batch_norm_act_train(x, &self.weight, &self.bias, self.eps, act)?;
        self.update_running_stats(&y, mean, var)?;
        Ok(y)
    }

    /// `act(self(conv(x)))`; in training one fused node ([`conv_batch_norm_act_train`]) when
    /// `conv` is a [`ConvParts`].
    pub fn forward_conv_act_t(
        &self,
        conv: &impl BiasFreeConv,
        x: &Tensor,
        train: bool,
        act: Act,
    ) -> Result<Tensor> {
        let Some(parts) = conv.parts().filter(|_| train) else {
            return self.forward_act_t(&conv.forward(x)?, train, act);
        };
        let (y, mean, var) =
            conv_batch_norm_act_train(x, parts, &self.weight, &self.bias, self.eps, act)?;
        self.update_running_stats(&y, mean, var)?;
        Ok(y)
    }

    /// PyTorch's momentum update from a batch's mean and biased variance over `y`'s
    /// `N · H · W` values per channel (the running variance takes the unbiased one).
    fn update_running_stats(&self, y: &Tensor, mean: Tensor, var: Tensor) -> Result<()> {
        let m = (y.elem_count() / y.dim(1)?) as f64;
        let unbiased = if m > 1.0 { m / (m - 1.0) } else { 1.0 };
        let mo = self.momentum;
        let rm = ((self.running_mean.as_tensor() * (1.0 - mo))? + (mean * mo)?)?;
        let rv = ((self.running_var.as_tensor() * (1.0 - mo))? + (var * (mo * unbiased))?)?;
        self.running_mean
            .set(&rm.to_dtype(self.running_mean.dtype())?)?;
        self.running_var
            .set(&rv.to_dtype(self.running_var.dtype())?)
    }

    fn forward_eval(&self, x: &Tensor, act: Act) -> Result<Tensor> {
        let mut bshape = vec![1; x.rank()];
        bshape[1] = x.dim(1)?;
        let scale = (self.running_var.as_tensor() + self.eps)?
            .sqrt()?
            .recip()?
            .mul(&self.weight)?;
        let shift = (&self.bias - self.running_mean.as_tensor().mul(&scale)?)?;
        let fused = x.rank() >= 2 && is_cpu_f32(x) && is_cpu_f32(&scale) && is_cpu_f32(&shift);
        if fused {
            let coef = scale
                .to_vec1::<f32>()?
                .into_iter()
                .zip(shift.to_vec1::<f32>()?)
                .collect();
            return x.contiguous()?.apply_op1(EvalNormOp { coef, act });
        }
        let y = x
            .broadcast_mul(&scale.reshape(bshape.as_slice())?)?
            .broadcast_add(&shift.reshape(bshape.as_slice())?)?;
        act.apply(&y)
    }
}

impl ModuleT for BatchNorm {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_act_t(x, train, Act::None)
    }
}
