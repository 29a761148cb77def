//! Direct convolution for the case where every output channel reads one input channel:
//! depthwise convolutions (`groups == C_in`, MobileNet / EfficientNet, any channel multiplier)
//! and convolutions of single-channel images (a gray stem). As a gemm these have a reduction
//! length of only kh·kw, so gemm would mostly pack.
//!
//! Everything is one primitive, a stride-s correlation of a zero-padded source plane with a
//! small kernel, computed 16 output columns at a time in registers. The source is first copied
//! into "phases": for stride s, phase `ph` holds the padded columns `ph, ph + s, ph + 2s, …`, so
//! every tap reads 16 consecutive floats whatever the stride, and padding needs no branches.
//! - forward: the input, padded by `pad`, correlated with the taps at the conv's stride;
//! - input gradient: the output gradient, dilated by the stride and padded by `k − 1 − pad`,
//!   correlated with the flipped taps at stride 1 (a transposed convolution);
//! - weight gradient: the same phases as the forward, with the output gradient as the "kernel":
//!   one accumulator row of 16 lanes per tap.

use rayon::prelude::*;

use super::geom::ConvGeom;
use crate::kernels::buf::with_scratch;
use crate::kernels::simd::multiversion;

/// Output columns computed together (one AVX-512 register).
const LANES: usize = 16;

/// A zero-padded source plane split into `s` column phases, each `rows × wph`.
#[derive(Clone, Copy, Debug)]
struct Phases {
    rows: usize,
    wph: usize,
    s: usize,
}

impl Phases {
    /// Phases big enough for an `oh × ow` output of a `kh × kw` kernel at stride `s`, with
    /// whole 16-column blocks.
    fn for_output(oh: usize, ow: usize, kh: usize, kw: usize, s: usize) -> Phases {
        Phases {
            rows: (oh - 1) * s + kh,
            wph: ow.div_ceil(LANES) * LANES + (kw - 1) / s + 1,
            s,
        }
    }

    fn len(&self) -> usize {
        self.s * self.rows * self.wph
    }
}

/// Fills `out` with the phases of the `sh × sw` plane `src` placed at (`off_r`, `off_c`) of a
/// zero canvas with its samples `dil` apart (dil > 1 inserts zeros: a transposed conv).
#[allow(clippy::too_many_arguments)]
fn build_phases(
    ph: &Phases,
    src: &[f32],
    sh: usize,
    sw: usize,
    dil: usize,
    off_r: isize,
    off_c: isize,
    out: &mut [f32],
) {
    out.fill(0.0);
    let width = (ph.s * ph.wph) as isize;
    // Source columns that land inside the canvas: off_c + j·dil in 0..width.
    let j0 = if off_c < 0 {
        ((-off_c) as usize).div_ceil(dil)
    } else {
        0
    };
    let j1 = if width > off_c {
        (((width - 1 - off_c) as usize) / dil + 1).min(sw)
    } else {
        0
    };
    if j0 >= j1 {
        return;
    }
    let c0 = (off_c + (j0 * dil) as isize) as usize;
    for i in 0..sh {
        let r = (i * dil) as isize + off_r;
        if r < 0 || r >= ph.rows as isize {
            continue;
        }
        let row = &src[i * sw + j0..i * sw + j1];
        let r = r as usize;
        if ph.s == 1 && dil == 1 {
            out[r * ph.wph + c0..][..row.len()].copy_from_slice(row);
            continue;
        }
        // Walk the canvas column as (column within phase, phase) without dividing.
        let (mut q, mut rem) = (c0 / ph.s, c0 % ph.s);
        for &v in row {
            out[rem * ph.rows * ph.wph + r * ph.wph + q] = v;
            rem += dil;
            while rem >= ph.s {
                rem -= ph.s;
                q += 1;
            }
        }
    }
}

multiversion! {
    /// `out (oh × ow) (+)= Σ taps[ky][kx] · canvas[oy·s + ky][ox·s + kx]` over the phases.
    fn correlate(ph: &Phases, src: &[f32], taps: &[f32], kh: usize, kw: usize, out: &mut [f32], oh: usize, ow: usize, accumulate: bool) {
        let (s, plane) = (ph.s, ph.rows * ph.wph);
        for oy in 0..oh {
            for cx in (0..ow).step_by(LANES) {
                let mut acc = [0f32; LANES];
                for ky in 0..kh {
                    let r = oy * s + ky;
                    for kx in 0..kw {
                        let t = taps[ky * kw + kx];
                        let base = &src[(kx % s) * plane + r * ph.wph + cx + kx / s..][..LANES];
                        for l in 0..LANES {
                            acc[l] += t * base[l];
                        }
                    }
                }
                let n = LANES.min(ow - cx);
                let dst = &mut out[oy * ow + cx..][..n];
                if accumulate {
                    for (d, a) in dst.iter_mut().zip(&acc) {
                        *d += a;
                    }
                } else {
                    dst.copy_from_slice(&acc[..n]);
                }
            }
        }
    }
}

multiversion! {
    /// `acc[tap][lane] += dy[oy][ox] · canvas[oy·s + ky][ox·s + kx]`, lanes over ox blocks.
    fn weight_grad(ph: &Phases, src: &[f32], dy: &[f32], kh: usize, kw: usize, oh: usize, ow: usize, acc: &mut [[f32; LANES]]) {
        let (s, plane) = (ph.s, ph.rows * ph.wph);
        for oy in 0..oh {
            for cx in (0..ow).step_by(LANES) {
                let mut d = [0f32; LANES];
                let n = LANES.min(ow - cx);
                d[..n].copy_from_slice(&dy[oy * ow + cx..][..n]);
                for ky in 0..kh {
                    let r = oy * s + ky;
                    for kx in 0..kw {
                        let base = &src[(kx % s) * plane + r * ph.wph + cx + kx / s..][..LANES];
                        let a = &mut acc[ky * kw + kx];
                        for l in 0..LANES {
                            a[l] += d[l] * base[l];
                        }
                    }
                }
            }
        }
    }
}

/// The forward phases of one input plane: padded by `pad`, at the conv's stride.
fn input_phases(g: &ConvGeom) -> Phases {
    Phases::for_output(g.oh, g.ow, g.kh, g.kw, g.stride)
}

pub(super) fn forward(g: &ConvGeom, x: &[f32], w: &[f32]) -> Vec<f32> {
    let (p, hw, k, og) = (g.p(), g.h * g.w, g.kh * g.kw, g.og());
    let mut y = vec![0f32; g.n * g.o * p];
    if p == 0 {
        return y;
    }
    let ph = input_phases(g);
    let pad = g.pad as isize;
    // One task per input plane: its phases serve all `og` output channels that read it.
    y.par_chunks_mut(og * p)
        .enumerate()
        .for_each(|(plane, ys)| {
            let (n, ic) = (plane / g.c, plane % g.c);
            with_scratch(ph.len(), |buf| {
                build_phases(
                    &ph,
                    &x[(n * g.c + ic) * hw..][..hw],
                    g.h,
                    g.w,
                    1,
                    pad,
                    pad,
                    buf,
                );
                for (j, yp) in ys.chunks_exact_mut(p).enumerate() {
                    let oc = ic * og + j;
                    correlate(
                        &ph,
                        buf,
                        &w[oc * k..][..k],
                        g.kh,
                        g.kw,
                        yp,
                        g.oh,
                        g.ow,
                        false,
                    );
                }
            });
        });
    y
}

pub(super) fn backward(
    g: &ConvGeom,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    need_dx: bool,
    need_dw: bool,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let (p, hw, k, og) = (g.p(), g.h * g.w, g.kh * g.kw, g.og());
    let dx = need_dx.then(|| {
        let mut dx = vec![0f32; g.n * g.c * hw];
        if hw == 0 || p == 0 {
            return dx;
        }
        let ph = Phases::for_output(g.h, g.w, g.kh, g.kw, 1);
        let off = (g.kh - 1) as isize - g.pad as isize;
        let offc = (g.kw - 1) as isize - g.pad as isize;
        dx.par_chunks_mut(hw).enumerate().for_each(|(plane, dxp)| {
            let (n, ic) = (plane / g.c, plane % g.c);
            let mut flipped = vec![0f32; k];
            with_scratch(ph.len(), |buf| {
                for (j, oc) in (ic * og..(ic + 1) * og).enumerate() {
                    let dyp = &dy[(n * g.o + oc) * p..][..p];
                    build_phases(&ph, dyp, g.oh, g.ow, g.stride, off, offc, buf);
                    for (f, &t) in flipped.iter_mut().zip(w[oc * k..][..k].iter().rev()) {
                        *f = t;
                    }
                    correlate(&ph, buf, &flipped, g.kh, g.kw, dxp, g.h, g.w, j > 0);
                }
            });
        });
        dx
    });
    let dw = need_dw.then(|| {
        let mut dw = vec![0f32; g.o * k];
        if p == 0 {
            return dw;
        }
        let ph = input_phases(g);
        let pad = g.pad as isize;
        dw.par_chunks_mut(k).enumerate().for_each(|(oc, dwo)| {
            let ic = oc / og;
            let mut acc = vec![[0f32; LANES]; k];
            with_scratch(ph.len(), |buf| {
                for n in 0..g.n {
                    let xp = &x[(n * g.c + ic) * hw..][..hw];
                    build_phases(&ph, xp, g.h, g.w, 1, pad, pad, buf);
                    let dyp = &dy[(n * g.o + oc) * p..][..p];
                    weight_grad(&ph, buf, dyp, g.kh, g.kw, g.oh, g.ow, &mut acc);
                }
            });
            for (d, a) in dwo.iter_mut().zip(&acc) {
                *d = a.iter().map(|&v| v as f64).sum::<f64>() as f32;
            }
        });
        dw
    });
    (dx, dw)
}
