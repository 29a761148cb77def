//! Direct convolution for the case where every output channel reads one input channel:
//! depthwise convolutions (`groups == C_in`, MobileNet / EfficientNet, any channel multiplier)
//! and convolutions of single-channel images (a gray stem). As a gemm these have a reduction
//! length of only kh·kw, so gemm would mostly pack; the direct loops below run along image rows,
//! which the compiler vectorises, and parallelise over planes.

use rayon::prelude::*;

use super::conv::{valid_range, ConvGeom};
use super::simd::multiversion;

/// Output channel `oc` reads input channel `oc / (o / groups)` of group `oc / og`; with
/// `cg == 1` that is channel `oc / og`.
fn input_channel(g: &ConvGeom, oc: usize) -> usize {
    oc / g.og()
}

pub(crate) fn forward(g: &ConvGeom, x: &[f32], w: &[f32]) -> Vec<f32> {
    let p = g.p();
    let mut y = vec![0f32; g.n * g.o * p];
    if p == 0 {
        return y;
    }
    let k = g.kh * g.kw;
    y.par_chunks_mut(p).enumerate().for_each(|(plane, yp)| {
        let (n, oc) = (plane / g.o, plane % g.o);
        let ic = input_channel(g, oc);
        let xp = &x[(n * g.c + ic) * g.h * g.w..][..g.h * g.w];
        plane_forward(g, xp, &w[oc * k..][..k], yp);
    });
    y
}

multiversion! {
    /// `y += conv(x, taps)` for one plane.
    fn plane_forward(g: &ConvGeom, x: &[f32], taps: &[f32], y: &mut [f32]) {
        let (w, ow, s, pad) = (g.w, g.ow, g.stride, g.pad);
        for oy in 0..g.oh {
            let yrow = &mut y[oy * ow..][..ow];
            for ky in 0..g.kh {
                let iy = (oy * s + ky) as isize - pad as isize;
                if iy < 0 || iy >= g.h as isize {
                    continue;
                }
                let xrow = &x[iy as usize * w..][..w];
                for kx in 0..g.kw {
                    let t = taps[ky * g.kw + kx];
                    let (ox0, ox1) = valid_range(kx, pad, s, w, ow);
                    if ox0 >= ox1 {
                        continue;
                    }
                    let ix0 = ox0 * s + kx - pad;
                    if s == 1 {
                        for (yv, xv) in yrow[ox0..ox1].iter_mut().zip(&xrow[ix0..]) {
                            *yv += t * xv;
                        }
                    } else {
                        for (yv, xv) in yrow[ox0..ox1].iter_mut().zip(xrow[ix0..].iter().step_by(s)) {
                            *yv += t * xv;
                        }
                    }
                }
            }
        }
    }
}

pub(crate) fn backward(
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
        if hw > 0 {
            dx.par_chunks_mut(hw).enumerate().for_each(|(plane, dxp)| {
                let (n, ic) = (plane / g.c, plane % g.c);
                for oc in ic * og..(ic + 1) * og {
                    let dyp = &dy[(n * g.o + oc) * p..][..p];
                    plane_input_grad(g, dyp, &w[oc * k..][..k], dxp);
                }
            });
        }
        dx
    });
    let dw = need_dw.then(|| {
        let mut dw = vec![0f32; g.o * k];
        dw.par_chunks_mut(k).enumerate().for_each(|(oc, dwo)| {
            let ic = input_channel(g, oc);
            // Per-tap row accumulators: summing whole rows keeps the loop vectorised and
            // leaves one horizontal sum per tap at the end.
            let mut rows = vec![0f32; k * g.ow];
            for n in 0..g.n {
                let dyp = &dy[(n * g.o + oc) * p..][..p];
                let xp = &x[(n * g.c + ic) * hw..][..hw];
                plane_weight_grad(g, xp, dyp, &mut rows);
            }
            for (t, d) in dwo.iter_mut().enumerate() {
                *d = rows[t * g.ow..][..g.ow]
                    .iter()
                    .map(|&v| v as f64)
                    .sum::<f64>() as f32;
            }
        });
        dw
    });
    (dx, dw)
}

multiversion! {
    /// `dx += convᵀ(dy, taps)` for one plane.
    fn plane_input_grad(g: &ConvGeom, dy: &[f32], taps: &[f32], dx: &mut [f32]) {
        let (w, ow, s, pad) = (g.w, g.ow, g.stride, g.pad);
        for oy in 0..g.oh {
            let dyrow = &dy[oy * ow..][..ow];
            for ky in 0..g.kh {
                let iy = (oy * s + ky) as isize - pad as isize;
                if iy < 0 || iy >= g.h as isize {
                    continue;
                }
                let dxrow = &mut dx[iy as usize * w..][..w];
                for kx in 0..g.kw {
                    let t = taps[ky * g.kw + kx];
                    let (ox0, ox1) = valid_range(kx, pad, s, w, ow);
                    if ox0 >= ox1 {
                        continue;
                    }
                    let ix0 = ox0 * s + kx - pad;
                    if s == 1 {
                        for (d, v) in dxrow[ix0..].iter_mut().zip(&dyrow[ox0..ox1]) {
                            *d += t * v;
                        }
                    } else {
                        for (d, v) in dxrow[ix0..].iter_mut().step_by(s).zip(&dyrow[ox0..ox1]) {
                            *d += t * v;
                        }
                    }
                }
            }
        }
    }
}

multiversion! {
    /// `rows[tap][ox] += dy[oy][ox] · x[oy·s + ky − pad][ox·s + kx − pad]` summed over `oy`.
    fn plane_weight_grad(g: &ConvGeom, x: &[f32], dy: &[f32], rows: &mut [f32]) {
        let (w, ow, s, pad) = (g.w, g.ow, g.stride, g.pad);
        for oy in 0..g.oh {
            let dyrow = &dy[oy * ow..][..ow];
            for ky in 0..g.kh {
                let iy = (oy * s + ky) as isize - pad as isize;
                if iy < 0 || iy >= g.h as isize {
                    continue;
                }
                let xrow = &x[iy as usize * w..][..w];
                for kx in 0..g.kw {
                    let (ox0, ox1) = valid_range(kx, pad, s, w, ow);
                    if ox0 >= ox1 {
                        continue;
                    }
                    let ix0 = ox0 * s + kx - pad;
                    let acc = &mut rows[(ky * g.kw + kx) * ow..][..ow];
                    if s == 1 {
                        for ((a, d), xv) in acc[ox0..ox1].iter_mut().zip(&dyrow[ox0..ox1]).zip(&xrow[ix0..]) {
                            *a += d * xv;
                        }
                    } else {
                        for ((a, d), xv) in acc[ox0..ox1]
                            .iter_mut()
                            .zip(&dyrow[ox0..ox1])
                            .zip(xrow[ix0..].iter().step_by(s))
                        {
                            *a += d * xv;
                        }
                    }
                }
            }
        }
    }
}
