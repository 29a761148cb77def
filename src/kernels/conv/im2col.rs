//! Dense and grouped 2-D convolution through im2col + gemm, forward and backward: the general
//! path of [`super`].
//!
//! Per group `g`, with `col` the im2col matrix `[C_in/G · kh · kw, P]` of an image
//! (`P = OH · OW`) and `W_g` the weight as `[C_out/G, C_in/G · kh · kw]`:
//! - forward: `Y_g = W_g · col`
//! - weight gradient: `dW_g += dY_g · colᵀ`
//! - input gradient: `dcol = W_gᵀ · dY_g`, then col2im scatters `dcol` back onto `dX`.
//!
//! Images are processed in chunks whose im2col matrices sit side by side (`[K, nb · P]`), so the
//! small late layers (P = 16 at 4×4) still give gemm a long `n` dimension, while a chunk stays
//! within a few MiB (never the whole batch's im2col). Chunks run in parallel on rayon's pool,
//! each with a single-threaded gemm; gemm only parallelises itself when there are fewer chunks
//! than threads (batch 1).

use rayon::prelude::*;

use super::geom::ConvGeom;
use crate::kernels::buf::{sgemm, transpose, with_scratch, Mat, SyncPtr};

/// The output positions `lo..hi` (out of `out`) whose input coordinate `o·stride + k − pad` lies
/// inside `0..size`, for kernel offset `k`.
fn valid_range(k: usize, pad: usize, stride: usize, size: usize, out: usize) -> (usize, usize) {
    let lo = if pad > k {
        (pad - k).div_ceil(stride)
    } else {
        0
    };
    let hi = if size + pad > k {
        ((size - 1 + pad - k) / stride + 1).min(out)
    } else {
        0
    };
    (lo.min(hi), hi)
}

/// For stride-1 convolutions that keep the width (`ow == w`, the 3×3 pad-1 case), an im2col
/// row is the input plane shifted by `(ky − pad)·w + kx − pad` elements: one block copy per
/// tap instead of one small copy per output row (rows are only 4–32 floats in small layers),
/// then the few columns that wrapped around are zeroed.
#[derive(Clone, Copy, Debug)]
struct Shift {
    /// Offset from output index to input index.
    shift: isize,
    /// Output index range copied as a block.
    a: usize,
    b: usize,
    /// Output rows inside the image and, within them, the valid columns.
    oy0: usize,
    oy1: usize,
    ox0: usize,
    ox1: usize,
}

/// The per-tap shifts (row-major over ky, kx), or `None` if the fast path does not apply.
fn shifts(g: &ConvGeom) -> Option<Vec<Shift>> {
    if g.stride != 1 || g.ow != g.w {
        return None;
    }
    let (h, w, ow, pad) = (g.h, g.w, g.ow, g.pad);
    let hw = (h * w) as isize;
    let mut out = Vec::with_capacity(g.kh * g.kw);
    for ky in 0..g.kh {
        let (oy0, oy1) = valid_range(ky, pad, 1, h, g.oh);
        for kx in 0..g.kw {
            let (ox0, ox1) = valid_range(kx, pad, 1, w, ow);
            let shift = (ky as isize - pad as isize) * w as isize + kx as isize - pad as isize;
            let a = ((oy0 * ow) as isize).max(-shift).max(0) as usize;
            let b = ((oy1 * ow) as isize).min(hw - shift).max(a as isize) as usize;
            out.push(Shift {
                shift,
                a,
                b,
                oy0,
                oy1,
                ox0,
                ox1,
            });
        }
    }
    Some(out)
}

/// Writes group `gi` of one image `x` (`[c, h, w]`) as im2col rows into `col` (leading
/// dimension `ld`), columns `off..off + P`.
fn im2col(g: &ConvGeom, x: &[f32], gi: usize, col: &mut [f32], ld: usize, off: usize) {
    let (h, w, ow, s, pad) = (g.h, g.w, g.ow, g.stride, g.pad);
    let p = g.p();
    let cg = g.cg();
    if let Some(shifts) = shifts(g) {
        for ci in 0..cg {
            let plane = &x[(gi * cg + ci) * h * w..][..h * w];
            for (r, sh) in shifts.iter().enumerate() {
                let row = &mut col[(ci * g.kh * g.kw + r) * ld + off..][..p];
                row[..sh.a].fill(0.0);
                row[sh.b..].fill(0.0);
                let src = (sh.a as isize + sh.shift) as usize;
                row[sh.a..sh.b].copy_from_slice(&plane[src..src + (sh.b - sh.a)]);
                // The block copy wrapped these columns around from the neighbouring row.
                for oy in sh.oy0..sh.oy1 {
                    row[oy * ow..oy * ow + sh.ox0].fill(0.0);
                    row[oy * ow + sh.ox1..(oy + 1) * ow].fill(0.0);
                }
            }
        }
        return;
    }
    for ci in 0..cg {
        let plane = &x[(gi * cg + ci) * h * w..][..h * w];
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let r = (ci * g.kh + ky) * g.kw + kx;
                let row = &mut col[r * ld + off..][..p];
                let (ox0, ox1) = valid_range(kx, pad, s, w, ow);
                for oy in 0..g.oh {
                    let dst = &mut row[oy * ow..][..ow];
                    let iy = (oy * s + ky) as isize - pad as isize;
                    if iy < 0 || iy >= h as isize {
                        dst.fill(0.0);
                        continue;
                    }
                    dst[..ox0].fill(0.0);
                    dst[ox1..].fill(0.0);
                    let src = &plane[iy as usize * w..][..w];
                    if s == 1 {
                        let ix0 = ox0 + kx - pad;
                        dst[ox0..ox1].copy_from_slice(&src[ix0..ix0 + (ox1 - ox0)]);
                    } else {
                        for (ox, d) in dst.iter_mut().enumerate().take(ox1).skip(ox0) {
                            *d = src[ox * s + kx - pad];
                        }
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: adds columns `off..off + P` of `col` onto group `gi` of `dx`.
fn col2im(g: &ConvGeom, col: &mut [f32], ld: usize, off: usize, dx: &mut [f32], gi: usize) {
    let (h, w, ow, s, pad) = (g.h, g.w, g.ow, g.stride, g.pad);
    let p = g.p();
    let cg = g.cg();
    if let Some(shifts) = shifts(g) {
        for ci in 0..cg {
            let plane = &mut dx[(gi * cg + ci) * h * w..][..h * w];
            for (r, sh) in shifts.iter().enumerate() {
                let row = &mut col[(ci * g.kh * g.kw + r) * ld + off..][..p];
                // Columns that fall outside the image must not wrap into the next row.
                for oy in sh.oy0..sh.oy1 {
                    row[oy * ow..oy * ow + sh.ox0].fill(0.0);
                    row[oy * ow + sh.ox1..(oy + 1) * ow].fill(0.0);
                }
                let dst = (sh.a as isize + sh.shift) as usize;
                for (d, v) in plane[dst..dst + (sh.b - sh.a)]
                    .iter_mut()
                    .zip(&row[sh.a..sh.b])
                {
                    *d += v;
                }
            }
        }
        return;
    }
    for ci in 0..cg {
        let plane = &mut dx[(gi * cg + ci) * h * w..][..h * w];
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let r = (ci * g.kh + ky) * g.kw + kx;
                let row = &col[r * ld + off..][..p];
                let (ox0, ox1) = valid_range(kx, pad, s, w, ow);
                for oy in 0..g.oh {
                    let iy = (oy * s + ky) as isize - pad as isize;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    let src = &row[oy * ow..][..ow];
                    let dst = &mut plane[iy as usize * w..][..w];
                    if s == 1 {
                        let ix0 = ox0 + kx - pad;
                        for (d, v) in dst[ix0..ix0 + (ox1 - ox0)].iter_mut().zip(&src[ox0..ox1]) {
                            *d += v;
                        }
                    } else {
                        for (ox, v) in src.iter().enumerate().take(ox1).skip(ox0) {
                            dst[ox * s + kx - pad] += v;
                        }
                    }
                }
            }
        }
    }
}

/// Floats of im2col matrix per chunk we aim for: 4 MiB of `col` keeps a chunk's working set
/// within the shared L3 while giving gemm thousands of columns. Measured on ResNet-18 layer
/// shapes at 32 px: 1 Mi floats beats 256 Ki (small layers starve gemm) and 4 Mi (cache).
const CHUNK_FLOATS: usize = 1 << 20;

/// Images per chunk: as many as fit the budget, in a number of chunks that is a multiple of
/// the thread count so no thread idles at the end (32 images in chunks of 12 would leave one
/// thread a third of the work).
fn images_per_chunk(g: &ConvGeom) -> usize {
    let per_image = (g.kg() + g.og()) * g.p();
    let fit = (CHUNK_FLOATS / per_image.max(1)).max(1);
    let threads = rayon::current_num_threads().max(1);
    let rounds = g.n.div_ceil(threads * fit).max(1);
    g.n.div_ceil(threads * rounds).max(1)
}

/// Forward pass of a convolution on contiguous f32 data; returns `[n, o, oh, ow]`.
pub(super) fn forward(g: &ConvGeom, x: &[f32], w: &[f32]) -> Vec<f32> {
    let mut y = vec![0f32; g.n * g.o * g.p()];
    if y.is_empty() {
        return y;
    }
    let nb = images_per_chunk(g);
    let parallel_gemm = g.n.div_ceil(nb) < rayon::current_num_threads();
    let (img_in, img_out) = (g.c * g.h * g.w, g.o * g.p());
    y.par_chunks_mut(nb * img_out)
        .zip(x.par_chunks(nb * img_in))
        .for_each(|(yc, xc)| forward_chunk(g, xc, w, yc, yc.len() / img_out, parallel_gemm));
    y
}

fn forward_chunk(g: &ConvGeom, x: &[f32], w: &[f32], y: &mut [f32], nb: usize, par: bool) {
    let (p, kg, og, cg) = (g.p(), g.kg(), g.og(), g.cg());
    let ld = nb * p;
    let direct = g.pointwise() && nb == 1;
    let col_len = if direct { 0 } else { kg * ld };
    let tmp_len = if nb > 1 { og * ld } else { 0 };
    let img_in = g.c * g.h * g.w;
    with_scratch(col_len + tmp_len, |scratch| {
        let (col, tmp) = scratch.split_at_mut(col_len);
        for gi in 0..g.groups {
            let b = if direct {
                Mat::rows(x[gi * cg * p..].as_ptr(), p)
            } else {
                for j in 0..nb {
                    im2col(g, &x[j * img_in..], gi, col, ld, j * p);
                }
                Mat::rows(col.as_ptr(), ld)
            };
            let a = Mat::rows(w[gi * og * kg..].as_ptr(), kg);
            if nb == 1 {
                let dst = &mut y[gi * og * p..][..og * p];
                // SAFETY: `a` is og×kg, `b` kg×p, `dst` og×p, all in bounds and disjoint.
                unsafe { sgemm(og, p, kg, dst.as_mut_ptr(), p, false, false, a, b, par) };
            } else {
                // SAFETY: as above with p replaced by the chunk's ld columns.
                unsafe { sgemm(og, ld, kg, tmp.as_mut_ptr(), ld, false, false, a, b, par) };
                for j in 0..nb {
                    for oc in 0..og {
                        let dst = &mut y[(j * g.o + gi * og + oc) * p..][..p];
                        dst.copy_from_slice(&tmp[oc * ld + j * p..][..p]);
                    }
                }
            }
        }
    });
}

/// Gradients of a convolution with respect to its input (`[n, c, h, w]`) and weight, each only
/// when asked for.
pub(super) fn backward(
    g: &ConvGeom,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    need_dx: bool,
    need_dw: bool,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let img_in = g.c * g.h * g.w;
    let mut dx = if need_dx {
        vec![0f32; g.n * img_in]
    } else {
        Vec::new()
    };
    let w_len = g.o * g.kg();
    if g.n == 0 || g.p() == 0 {
        return (need_dx.then_some(dx), need_dw.then(|| vec![0f32; w_len]));
    }
    let nb = images_per_chunk(g);
    let starts: Vec<usize> = (0..g.n).step_by(nb).collect();
    let parallel_gemm = starts.len() < rayon::current_num_threads();
    let dx_ptr = SyncPtr(dx.as_mut_ptr());
    let img_out = g.o * g.p();
    let dw = starts
        .par_iter()
        .fold(
            || {
                if need_dw {
                    vec![0f32; w_len]
                } else {
                    Vec::new()
                }
            },
            |mut acc, &n0| {
                let nbi = nb.min(g.n - n0);
                // SAFETY: chunks cover disjoint image ranges of `dx`, which outlives the loop.
                let dxc = need_dx.then(|| unsafe { dx_ptr.slice(n0 * img_in, nbi * img_in) });
                let dwc = need_dw.then_some(acc.as_mut_slice());
                backward_chunk(
                    g,
                    &x[n0 * img_in..][..nbi * img_in],
                    w,
                    &dy[n0 * img_out..][..nbi * img_out],
                    dxc,
                    dwc,
                    nbi,
                    parallel_gemm,
                );
                acc
            },
        )
        .reduce(Vec::new, |mut a, b| {
            if a.is_empty() {
                return b;
            }
            for (u, v) in a.iter_mut().zip(&b) {
                *u += v;
            }
            a
        });
    let dw = need_dw.then(|| {
        // Per group, the accumulator holds dW_g column-major ([kg × og]).
        let (og, kg) = (g.og(), g.kg());
        let mut out = vec![0f32; w_len];
        for gi in 0..g.groups {
            let src = &dw[gi * og * kg..][..og * kg];
            transpose(src, kg, og, &mut out[gi * og * kg..][..og * kg]);
        }
        out
    });
    (need_dx.then_some(dx), dw)
}

#[allow(clippy::too_many_arguments)]
fn backward_chunk(
    g: &ConvGeom,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    mut dx: Option<&mut [f32]>,
    dw: Option<&mut [f32]>,
    nb: usize,
    par: bool,
) {
    let (p, kg, og, cg) = (g.p(), g.kg(), g.og(), g.cg());
    let ld = nb * p;
    let direct = g.pointwise() && nb == 1;
    let col_len = if direct { 0 } else { kg * ld };
    let dyt_len = if nb > 1 { og * ld } else { 0 };
    let img_in = g.c * g.h * g.w;
    let mut dw = dw;
    with_scratch(col_len + dyt_len, |scratch| {
        let (col, dyt_buf) = scratch.split_at_mut(col_len);
        for gi in 0..g.groups {
            let dyt = if nb == 1 {
                Mat::rows(dy[gi * og * p..].as_ptr(), p)
            } else {
                for j in 0..nb {
                    for oc in 0..og {
                        dyt_buf[oc * ld + j * p..][..p]
                            .copy_from_slice(&dy[(j * g.o + gi * og + oc) * p..][..p]);
                    }
                }
                Mat::rows(dyt_buf.as_ptr(), ld)
            };
            if let Some(dw) = dw.as_deref_mut() {
                let colt = if direct {
                    Mat::transposed(x[gi * cg * p..].as_ptr(), p)
                } else {
                    for j in 0..nb {
                        im2col(g, &x[j * img_in..], gi, col, ld, j * p);
                    }
                    Mat::transposed(col.as_ptr(), ld)
                };
                // Accumulated column-major (see `sgemm`), transposed once at the end.
                let dst = &mut dw[gi * og * kg..][..og * kg];
                // SAFETY: dyt is og×ld, colᵀ ld×kg, dst og×kg; dst is the fold's own buffer.
                unsafe { sgemm(og, kg, ld, dst.as_mut_ptr(), og, true, true, dyt, colt, par) };
            }
            if let Some(dx) = dx.as_deref_mut() {
                let wt = Mat::transposed(w[gi * og * kg..].as_ptr(), kg);
                if direct {
                    // 1×1: dcol is the input gradient itself (kg == cg).
                    let dst = &mut dx[gi * cg * p..][..cg * p];
                    // SAFETY: Wᵀ is kg×og, dyt og×p, dst kg×p.
                    unsafe { sgemm(kg, p, og, dst.as_mut_ptr(), p, false, false, wt, dyt, par) };
                } else {
                    // SAFETY: Wᵀ is kg×og, dyt og×ld, col kg×ld (no longer needed as im2col).
                    unsafe { sgemm(kg, ld, og, col.as_mut_ptr(), ld, false, false, wt, dyt, par) };
                    for j in 0..nb {
                        col2im(g, &mut *col, ld, j * p, &mut dx[j * img_in..], gi);
                    }
                }
            }
        }
    });
}
