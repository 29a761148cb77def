//! Max and average pooling over `[N, C, H, W]` with any square kernel, stride and padding
//! (PyTorch's floor mode), forward and backward, parallel over planes.

use candle_core::{bail, Result};
use rayon::prelude::*;

use super::simd::multiversion;

/// Shapes of one pooling: input planes `h × w`, output planes `oh × ow`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolGeom {
    pub planes: usize,
    pub h: usize,
    pub w: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    pub oh: usize,
    pub ow: usize,
}

impl PoolGeom {
    pub fn new(dims: &[usize], k: usize, stride: usize, pad: usize, op: &str) -> Result<Self> {
        let &[n, c, h, w] = dims else {
            bail!("{op}: expected a 4-D [N, C, H, W] input, got {dims:?}")
        };
        if k == 0 || stride == 0 {
            bail!("{op}: kernel ({k}) and stride ({stride}) must be at least 1")
        }
        if 2 * pad > k {
            // PyTorch's rule too: otherwise a window can be all padding.
            bail!("{op}: padding {pad} must be at most half the kernel {k}")
        }
        if h + 2 * pad < k || w + 2 * pad < k {
            bail!("{op}: kernel {k} does not fit input {h}×{w} with padding {pad}")
        }
        Ok(PoolGeom {
            planes: n * c,
            h,
            w,
            k,
            stride,
            pad,
            oh: (h + 2 * pad - k) / stride + 1,
            ow: (w + 2 * pad - k) / stride + 1,
        })
    }

    fn rows(&self, oy: usize) -> (usize, usize) {
        window(oy, self.k, self.stride, self.pad, self.h)
    }

    fn cols(&self, ox: usize) -> (usize, usize) {
        window(ox, self.k, self.stride, self.pad, self.w)
    }
}

/// The input indices `lo..hi` that output index `o`'s window covers, clipped to the image.
fn window(o: usize, k: usize, stride: usize, pad: usize, size: usize) -> (usize, usize) {
    let start = (o * stride) as isize - pad as isize;
    let lo = start.max(0) as usize;
    let hi = ((start + k as isize).min(size as isize)).max(0) as usize;
    (lo, hi.max(lo))
}

/// Whether `g` is the plain 2×2/2 pool, which has its own vectorised loops and needs no indices.
fn is_2x2(g: &PoolGeom) -> bool {
    g.k == 2 && g.stride == 2 && g.pad == 0
}

/// Max pooling: the pooled planes and, unless `g` [`is_2x2`], the index within its plane of
/// each window's first maximum (NaN counts as the maximum, as in PyTorch), which the backward
/// scatters onto instead of searching every window again.
pub(crate) fn max_forward(g: &PoolGeom, x: &[f32]) -> (Vec<f32>, Option<Vec<u32>>) {
    let (hw, ohw) = (g.h * g.w, g.oh * g.ow);
    let mut y = vec![0f32; g.planes * ohw];
    if ohw == 0 {
        return (y, None);
    }
    if is_2x2(g) {
        y.par_chunks_mut(ohw)
            .zip(x.par_chunks(hw))
            .for_each(|(yp, xp)| max_2x2(g, xp, yp));
        return (y, None);
    }
    let mut idx = vec![0u32; g.planes * ohw];
    let cols: Vec<(usize, usize)> = (0..g.ow).map(|ox| g.cols(ox)).collect();
    y.par_chunks_mut(ohw)
        .zip(idx.par_chunks_mut(ohw))
        .zip(x.par_chunks(hw))
        .for_each(|((yp, ip), xp)| {
            for oy in 0..g.oh {
                let (y0, y1) = g.rows(oy);
                let (yr, ir) = (&mut yp[oy * g.ow..][..g.ow], &mut ip[oy * g.ow..][..g.ow]);
                for ((out, at), &(x0, x1)) in yr.iter_mut().zip(ir.iter_mut()).zip(&cols) {
                    let mut best = y0 * g.w + x0;
                    let mut bv = xp[best];
                    if !bv.is_nan() {
                        'window: for iy in y0..y1 {
                            let row = iy * g.w;
                            for (i, &v) in (row + x0..).zip(&xp[row + x0..row + x1]) {
                                if v.is_nan() {
                                    (best, bv) = (i, v);
                                    break 'window;
                                }
                                if v > bv {
                                    (best, bv) = (i, v);
                                }
                            }
                        }
                    }
                    *out = bv;
                    *at = best as u32;
                }
            }
        });
    (y, Some(idx))
}

/// The common 2×2/2 pool, as row-pair maxima the compiler can vectorise. `f32::max` would
/// drop NaN, so the comparison keeps it like [`max_forward`] does.
fn max_2x2(g: &PoolGeom, x: &[f32], y: &mut [f32]) {
    let m = |a: f32, b: f32| if b > a || b.is_nan() { b } else { a };
    for oy in 0..g.oh {
        let r0 = &x[2 * oy * g.w..][..2 * g.ow];
        let r1 = &x[(2 * oy + 1) * g.w..][..2 * g.ow];
        for (ox, out) in y[oy * g.ow..][..g.ow].iter_mut().enumerate() {
            *out = m(m(m(r0[2 * ox], r0[2 * ox + 1]), r1[2 * ox]), r1[2 * ox + 1]);
        }
    }
}

multiversion! {
    /// The 2×2/2 backward without a search: the gradient goes to the first of the four
    /// pixels that equals the pooled output (the first NaN when the output is NaN), the same
    /// pixel [`max_forward`]'s search picks, in branch-free selects the compiler vectorises.
    fn max_2x2_backward(g: &PoolGeom, x: &[f32], y: &[f32], dy: &[f32], dx: &mut [f32]) {
        let same = |v: f32, m: f32| v == m || (v.is_nan() && m.is_nan());
        let w2 = 2 * g.ow;
        for oy in 0..g.oh {
            let (top, bottom) = dx[2 * oy * g.w..(2 * oy + 2) * g.w].split_at_mut(g.w);
            let (x0, x1) = (&x[2 * oy * g.w..][..w2], &x[(2 * oy + 1) * g.w..][..w2]);
            let (yr, dr) = (&y[oy * g.ow..][..g.ow], &dy[oy * g.ow..][..g.ow]);
            for ((((t, b), (u, v)), &m), &d) in top[..w2]
                .chunks_exact_mut(2)
                .zip(bottom[..w2].chunks_exact_mut(2))
                .zip(x0.chunks_exact(2).zip(x1.chunks_exact(2)))
                .zip(yr)
                .zip(dr)
            {
                let sa = same(u[0], m);
                let sb = !sa && same(u[1], m);
                let sc = !sa && !sb && same(v[0], m);
                let sd = !sa && !sb && !sc;
                t[0] = if sa { d } else { 0.0 };
                t[1] = if sb { d } else { 0.0 };
                b[0] = if sc { d } else { 0.0 };
                b[1] = if sd { d } else { 0.0 };
            }
        }
    }
}

/// The max-pool gradient: onto the first maximum of each window, the one [`max_forward`]
/// returned the index of (`idx`), or for the 2×2 pool the first of its four pixels that equals
/// the output.
pub(crate) fn max_backward(
    g: &PoolGeom,
    x: &[f32],
    y: &[f32],
    idx: Option<&[u32]>,
    dy: &[f32],
) -> Vec<f32> {
    let (hw, ohw) = (g.h * g.w, g.oh * g.ow);
    let mut dx = vec![0f32; g.planes * hw];
    if hw == 0 || ohw == 0 {
        return dx;
    }
    if is_2x2(g) {
        dx.par_chunks_mut(hw).enumerate().for_each(|(pl, dxp)| {
            let (xp, yp) = (&x[pl * hw..][..hw], &y[pl * ohw..][..ohw]);
            max_2x2_backward(g, xp, yp, &dy[pl * ohw..][..ohw], dxp);
        });
        return dx;
    }
    let recomputed;
    let idx = match idx {
        Some(idx) => idx,
        None => {
            recomputed = max_forward(g, x).1.unwrap_or_default();
            &recomputed
        }
    };
    dx.par_chunks_mut(hw)
        .zip(idx.par_chunks(ohw).zip(dy.par_chunks(ohw)))
        .for_each(|(dxp, (ip, dyp))| {
            for (&i, &d) in ip.iter().zip(dyp) {
                dxp[i as usize] += d;
            }
        });
    dx
}

/// The divisor of each output row (or column) position: with `count_include_pad` the window
/// size clipped to the padded image (always k in floor mode), otherwise the real pixels only.
fn divisors(
    count_include_pad: bool,
    k: usize,
    stride: usize,
    pad: usize,
    size: usize,
    out: usize,
) -> Vec<usize> {
    (0..out)
        .map(|o| {
            if count_include_pad {
                let start = (o * stride) as isize - pad as isize;
                let end = (start + k as isize).min((size + pad) as isize);
                (end - start) as usize
            } else {
                let (lo, hi) = window(o, k, stride, pad, size);
                hi - lo
            }
        })
        .collect()
}

/// `1 / divisor` per output pixel of a plane.
pub(crate) fn inverse_counts(g: &PoolGeom, count_include_pad: bool) -> Vec<f32> {
    let dy = divisors(count_include_pad, g.k, g.stride, g.pad, g.h, g.oh);
    let dx = divisors(count_include_pad, g.k, g.stride, g.pad, g.w, g.ow);
    let mut inv = Vec::with_capacity(g.oh * g.ow);
    for &a in &dy {
        for &b in &dx {
            inv.push(1.0 / (a * b).max(1) as f32);
        }
    }
    inv
}

pub(crate) fn avg_forward(g: &PoolGeom, x: &[f32], count_include_pad: bool) -> Vec<f32> {
    let (hw, ohw) = (g.h * g.w, g.oh * g.ow);
    let mut y = vec![0f32; g.planes * ohw];
    if ohw == 0 {
        return y;
    }
    let inv = inverse_counts(g, count_include_pad);
    y.par_chunks_mut(ohw).enumerate().for_each(|(pl, yp)| {
        let xp = &x[pl * hw..][..hw];
        for oy in 0..g.oh {
            let (y0, y1) = g.rows(oy);
            for ox in 0..g.ow {
                let (x0, x1) = g.cols(ox);
                let mut s = 0f32;
                for iy in y0..y1 {
                    s += xp[iy * g.w + x0..iy * g.w + x1].iter().sum::<f32>();
                }
                yp[oy * g.ow + ox] = s * inv[oy * g.ow + ox];
            }
        }
    });
    y
}

pub(crate) fn avg_backward(g: &PoolGeom, dy: &[f32], count_include_pad: bool) -> Vec<f32> {
    let (hw, ohw) = (g.h * g.w, g.oh * g.ow);
    let mut dx = vec![0f32; g.planes * hw];
    if hw == 0 || ohw == 0 {
        return dx;
    }
    let inv = inverse_counts(g, count_include_pad);
    dx.par_chunks_mut(hw).enumerate().for_each(|(pl, dxp)| {
        let dyp = &dy[pl * ohw..][..ohw];
        for oy in 0..g.oh {
            let (y0, y1) = g.rows(oy);
            for ox in 0..g.ow {
                let (x0, x1) = g.cols(ox);
                let v = dyp[oy * g.ow + ox] * inv[oy * g.ow + ox];
                for iy in y0..y1 {
                    for d in &mut dxp[iy * g.w + x0..iy * g.w + x1] {
                        *d += v;
                    }
                }
            }
        }
    });
    dx
}
