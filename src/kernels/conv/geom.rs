//! The shape of one convolution, shared by every kernel below [`super`].

use candle_core::{bail, Result};

/// Shapes of one convolution: input `[n, c, h, w]`, weight `[o, c / groups, kh, kw]`, output
/// `[n, o, oh, ow]`; square stride and padding, dilation 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad: usize,
    pub groups: usize,
    pub oh: usize,
    pub ow: usize,
}

impl ConvGeom {
    pub fn new(
        x: &[usize],
        weight: &[usize],
        stride: usize,
        pad: usize,
        groups: usize,
    ) -> Result<Self> {
        let (&[n, c, h, w], &[o, cg, kh, kw]) = (x, weight) else {
            bail!("conv2d: expected a 4-D input and weight, got {x:?} and {weight:?}")
        };
        if stride == 0 || groups == 0 {
            bail!("conv2d: stride ({stride}) and groups ({groups}) must be at least 1")
        }
        if c % groups != 0 || o % groups != 0 || cg * groups != c {
            bail!(
                "conv2d: input {x:?} and weight {weight:?} do not fit groups = {groups} \
                 (want weight [C_out, C_in / groups, kh, kw] with both channel counts divisible)"
            )
        }
        if kh == 0 || kw == 0 || h + 2 * pad < kh || w + 2 * pad < kw {
            bail!("conv2d: kernel {kh}×{kw} does not fit input {h}×{w} with padding {pad}")
        }
        Ok(ConvGeom {
            n,
            c,
            h,
            w,
            o,
            kh,
            kw,
            stride,
            pad,
            groups,
            oh: (h + 2 * pad - kh) / stride + 1,
            ow: (w + 2 * pad - kw) / stride + 1,
        })
    }

    /// Input channels per group.
    pub fn cg(&self) -> usize {
        self.c / self.groups
    }

    /// Output channels per group.
    pub fn og(&self) -> usize {
        self.o / self.groups
    }

    /// Rows of the im2col matrix (the gemm reduction length of the forward pass).
    pub fn kg(&self) -> usize {
        self.cg() * self.kh * self.kw
    }

    /// Output pixels per image.
    pub fn p(&self) -> usize {
        self.oh * self.ow
    }

    /// Floating-point operations of the forward pass (2 per multiply-add); the backward costs
    /// twice as much (input and weight gradient).
    pub fn forward_flops(&self) -> f64 {
        2.0 * (self.n * self.o * self.p() * self.kg()) as f64
    }

    /// A 1×1, stride-1, unpadded convolution, whose im2col matrix is the image itself.
    pub(super) fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad == 0
    }

    /// Each output channel reads exactly one input channel: the direct kernel's case.
    pub(crate) fn one_input_channel_per_output(&self) -> bool {
        self.cg() == 1
    }
}
