//! 2-D convolution on the CPU, forward and backward: the geometry and the choice of kernel.
//!
//! - [`depthwise`]: each output channel reads one input channel (depthwise, or a single-channel
//!   input): a direct kernel, since gemm with `K = kh · kw` wastes most of its work on packing.
//! - [`winograd`]: 3×3 stride-1 convolutions with enough channels, F(2×2, 3×3), forward and input
//!   gradient.
//! - [`im2col`]: everything else (and every weight gradient but the depthwise one): im2col + gemm.
//!
//! The geometry lives in [`geom`], below this dispatch, so the kernels import it without
//! importing each other.

mod depthwise;
mod geom;
mod im2col;
mod winograd;

pub use geom::ConvGeom;

/// Forward pass of a convolution on contiguous f32 data; returns `[n, o, oh, ow]`.
pub fn forward(g: &ConvGeom, x: &[f32], w: &[f32]) -> Vec<f32> {
    if g.one_input_channel_per_output() {
        depthwise::forward(g, x, w)
    } else if winograd::applies(g) {
        winograd::forward(g, x, w)
    } else {
        im2col::forward(g, x, w)
    }
}

/// Gradients of a convolution with respect to its input (`[n, c, h, w]`) and weight, each only
/// when asked for.
pub fn backward(
    g: &ConvGeom,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    need_dx: bool,
    need_dw: bool,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    if g.one_input_channel_per_output() {
        return depthwise::backward(g, x, w, dy, need_dx, need_dw);
    }
    if need_dx && winograd::applies(g) {
        let dx = winograd::input_grad(g, w, dy);
        let (_, dw) = im2col::backward(g, x, w, dy, false, need_dw);
        return (Some(dx), dw);
    }
    im2col::backward(g, x, w, dy, need_dx, need_dw)
}
