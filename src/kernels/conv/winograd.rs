//! Winograd F(2×2, 3×3) convolution (Lavin & Gray, "Fast Algorithms for Convolutional Neural
//! Networks", CVPR 2016) for the 3×3, stride-1, pad-1 dense convolutions that make up most of a
//! ResNet: each 2×2 output tile costs 16 multiplies per (input, output) channel pair instead of
//! 36, i.e. 2.25× fewer flops in the gemms.
//!
//! With `d` a 4×4 input tile and `g` a 3×3 kernel, `Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`. Summed over
//! input channels, the elementwise product becomes 16 independent gemms
//! `M_ξν [C_out × tiles] = U_ξν [C_out × C_in] · V_ξν [C_in × tiles]`, one per position (ξ, ν)
//! of the 4×4 transformed tile. The input gradient of such a convolution is again one (of the
//! output gradient with the kernel flipped and its channel axes swapped), so it goes through
//! here too; the weight gradient stays on im2col.

use rayon::prelude::*;

use super::geom::ConvGeom;
use crate::kernels::buf::{sgemm, with_scratch, Mat};
use crate::kernels::simd::multiversion;

/// Transformed-tile floats per chunk (V and M together) we aim for.
const CHUNK_FLOATS: usize = 1 << 20;

/// Whether `g` is a convolution this module computes, and one where it pays: below 16
/// channels the gemms are too thin to gain from fewer flops.
pub(super) fn applies(g: &ConvGeom) -> bool {
    g.kh == 3
        && g.kw == 3
        && g.stride == 1
        && g.pad == 1
        && g.groups == 1
        && g.c >= 16
        && g.o >= 16
        && g.h >= 2
        && g.w >= 2
}

/// `U = G g Gᵀ` for every (o, c), stored as 16 matrices `[o × c]`.
fn transform_weights(g: &ConvGeom, w: &[f32]) -> Vec<f32> {
    let (o, c) = (g.o, g.c);
    let mut u = vec![0f32; 16 * o * c];
    for oc in 0..o {
        for ic in 0..c {
            let k = &w[(oc * c + ic) * 9..][..9];
            // Rows: G · g (4×3).
            let mut t = [[0f32; 3]; 4];
            for col in 0..3 {
                let (g0, g1, g2) = (k[col], k[3 + col], k[6 + col]);
                t[0][col] = g0;
                t[1][col] = 0.5 * (g0 + g1 + g2);
                t[2][col] = 0.5 * (g0 - g1 + g2);
                t[3][col] = g2;
            }
            for (xi, row) in t.iter().enumerate() {
                let (g0, g1, g2) = (row[0], row[1], row[2]);
                let vals = [g0, 0.5 * (g0 + g1 + g2), 0.5 * (g0 - g1 + g2), g2];
                for (nu, v) in vals.into_iter().enumerate() {
                    u[(xi * 4 + nu) * o * c + oc * c + ic] = v;
                }
            }
        }
    }
    u
}

/// `w'[c][o] = flip(w[o][c])`: the kernel of the input-gradient convolution.
fn flip_transpose(g: &ConvGeom, w: &[f32]) -> Vec<f32> {
    let mut out = vec![0f32; w.len()];
    for oc in 0..g.o {
        for ic in 0..g.c {
            let src = &w[(oc * g.c + ic) * 9..][..9];
            let dst = &mut out[(ic * g.o + oc) * 9..][..9];
            for (d, s) in dst.iter_mut().zip(src.iter().rev()) {
                *d = *s;
            }
        }
    }
    out
}

/// Forward pass of a convolution for which [`applies`] holds.
pub(super) fn forward(g: &ConvGeom, x: &[f32], w: &[f32]) -> Vec<f32> {
    run(g, x, &transform_weights(g, w))
}

/// Input gradient of a convolution for which [`applies`] holds: the forward convolution of
/// `dy` with the flipped, channel-swapped kernel.
pub(super) fn input_grad(g: &ConvGeom, w: &[f32], dy: &[f32]) -> Vec<f32> {
    let t = ConvGeom {
        c: g.o,
        o: g.c,
        ..*g
    };
    run(&t, dy, &transform_weights(&t, &flip_transpose(g, w)))
}

fn run(g: &ConvGeom, x: &[f32], u: &[f32]) -> Vec<f32> {
    let (th, tw) = (g.h.div_ceil(2), g.w.div_ceil(2));
    let tiles = th * tw;
    let per_image = 16 * (g.c + g.o) * tiles;
    let threads = rayon::current_num_threads().max(1);
    let fit = (CHUNK_FLOATS / per_image).max(1);
    let rounds = g.n.div_ceil(threads * fit).max(1);
    let nb = g.n.div_ceil(threads * rounds).max(1);
    let parallel_gemm = g.n.div_ceil(nb) < threads;
    let (img_in, img_out) = (g.c * g.h * g.w, g.o * g.h * g.w);
    let mut y = vec![0f32; g.n * img_out];
    if y.is_empty() {
        return y;
    }
    y.par_chunks_mut(nb * img_out)
        .zip(x.par_chunks(nb * img_in))
        .for_each(|(yc, xc)| {
            let nbi = yc.len() / img_out;
            let t = nbi * tiles;
            with_scratch(16 * (g.c + g.o) * t, |buf| {
                let (v, m) = buf.split_at_mut(16 * g.c * t);
                for j in 0..nbi {
                    input_transform(g, &xc[j * img_in..][..img_in], v, t, j * tiles);
                }
                for pos in 0..16 {
                    let a = Mat::rows(u[pos * g.o * g.c..].as_ptr(), g.c);
                    let b = Mat::rows(v[pos * g.c * t..].as_ptr(), t);
                    let dst = &mut m[pos * g.o * t..][..g.o * t];
                    // SAFETY: U_pos is o×c, V_pos c×t, M_pos o×t, disjoint buffers.
                    unsafe {
                        sgemm(
                            g.o,
                            t,
                            g.c,
                            dst.as_mut_ptr(),
                            t,
                            false,
                            false,
                            a,
                            b,
                            parallel_gemm,
                        )
                    };
                }
                for j in 0..nbi {
                    output_transform(g, m, t, j * tiles, &mut yc[j * img_out..][..img_out]);
                }
            });
        });
    y
}

/// Tiles transformed together (one AVX-512 register of lanes).
const L: usize = 16;

multiversion! {
    /// `V[pos][c][off + q] = (Bᵀ d_q B)[pos]` for every 4×4 input tile `d_q` of one image,
    /// with tiles numbered row-major, `q = ty · tw + tx`.
    ///
    /// Per channel, the 16 taps of every tile are first laid out as 16 dense rows over `q`
    /// (`taps[i·4 + k][q] = d_q[i][k]`), so a group of 16 tiles is 16 aligned-free vector loads
    /// whichever tile rows it spans: a 7×7 map (4 tiles a row) fills every lane, where lanes
    /// along one tile row would use a quarter of them. Each padded image row is split once into
    /// even and odd columns; the taps of both tile rows it belongs to are copies out of that.
    fn input_transform(g: &ConvGeom, x: &[f32], v: &mut [f32], t: usize, off: usize) {
        let (h, w) = (g.h, g.w);
        let (th, tw) = (h.div_ceil(2), w.div_ceil(2));
        let tiles = th * tw;
        // Room past the last tile so the last group of L reads initialised floats.
        let stride = tiles + L;
        let mut taps = vec![0f32; 16 * stride];
        // Padded columns 2j (even) and 2j + 1 (odd) of one padded row, j = 0..=tw.
        let mut even = vec![0f32; tw + 1];
        let mut odd = vec![0f32; tw + 1];
        let plane_stride = g.c * t;
        let mut out = [[0f32; L]; 16];
        for c in 0..g.c {
            let plane = &x[c * h * w..][..h * w];
            // Padded row r is image row r − 1; rows past the image are zeros.
            for r in 0..2 * th + 2 {
                if r == 0 || r > h {
                    even.fill(0.0);
                    odd.fill(0.0);
                } else {
                    let src = &plane[(r - 1) * w..][..w];
                    // Padded column p holds image column p − 1: odd ones the even image
                    // columns, even ones (past the first) the odd image columns.
                    for (o, &val) in odd.iter_mut().zip(src.iter().step_by(2)) {
                        *o = val;
                    }
                    for (e, &val) in even[1..].iter_mut().zip(src.iter().skip(1).step_by(2)) {
                        *e = val;
                    }
                    // The padding slots (even[0], and the slot past the right edge) are never
                    // written here, so they stay zero.
                }
                // Row r is row i of tile row ty when r = 2ty + i.
                for i in [r % 2, r % 2 + 2] {
                    if i > r || (r - i) / 2 >= th {
                        continue;
                    }
                    let q = (r - i) / 2 * tw;
                    for (k, (src, shift)) in [(&even, 0), (&odd, 0), (&even, 1), (&odd, 1)]
                        .into_iter()
                        .enumerate()
                    {
                        taps[(i * 4 + k) * stride + q..][..tw].copy_from_slice(&src[shift..][..tw]);
                    }
                }
            }
            let base = c * t + off;
            for q0 in (0..tiles).step_by(L) {
                transform_lanes(&taps, stride, q0, &mut out);
                let n = L.min(tiles - q0);
                for (pos, o) in out.iter().enumerate() {
                    let at = pos * plane_stride + base + q0;
                    if off + q0 + L <= t {
                        // All L lanes: those past this image's tiles land on the next image's
                        // tiles of this channel, which are written after these. A fixed-size
                        // copy is a few vector stores, not a call to memcpy.
                        let dst: &mut [f32; L] = (&mut v[at..at + L]).try_into().unwrap();
                        *dst = *o;
                    } else {
                        v[at..at + n].copy_from_slice(&o[..n]);
                    }
                }
            }
        }
    }
}

/// `out[pos][l] = (Bᵀ d B)[pos]` for the 16 tiles `q0..q0 + L` of [`input_transform`]'s taps.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
fn transform_lanes(taps: &[f32], stride: usize, q0: usize, out: &mut [[f32; L]; 16]) {
    let tap = |i: usize, k: usize| -> &[f32; L] {
        taps[(i * 4 + k) * stride + q0..][..L].try_into().unwrap()
    };
    for k in 0..4 {
        let (d0, d1, d2, d3) = (tap(0, k), tap(1, k), tap(2, k), tap(3, k));
        // Bᵀ d on rows, column k: d0 − d2, d1 + d2, d2 − d1, d1 − d3.
        for l in 0..L {
            out[k][l] = d0[l] - d2[l];
            out[4 + k][l] = d1[l] + d2[l];
            out[8 + k][l] = d2[l] - d1[l];
            out[12 + k][l] = d1[l] - d3[l];
        }
    }
    // (Bᵀ d) B on columns, in place per row i: c0 − c2, c1 + c2, c2 − c1, c1 − c3.
    for i in 0..4 {
        for l in 0..L {
            let (c0, c1, c2, c3) = (
                out[4 * i][l],
                out[4 * i + 1][l],
                out[4 * i + 2][l],
                out[4 * i + 3][l],
            );
            out[4 * i][l] = c0 - c2;
            out[4 * i + 1][l] = c1 + c2;
            out[4 * i + 2][l] = c2 - c1;
            out[4 * i + 3][l] = c1 - c3;
        }
    }
}

multiversion! {
    /// `y[o][2ty.., 2tx..] = (Aᵀ m A)` for every tile of one image, clipped at odd edges: 16
    /// tiles at a time over the dense tile numbering of [`input_transform`] into four dense
    /// rows (one per output pixel of a tile), which are then interleaved into the image rows.
    #[allow(clippy::needless_range_loop)]
    fn output_transform(g: &ConvGeom, m: &[f32], t: usize, off: usize, y: &mut [f32]) {
        let (h, w) = (g.h, g.w);
        let (th, tw) = (h.div_ceil(2), w.div_ceil(2));
        let tiles = th * tw;
        let stride = tiles + L;
        let plane_stride = g.o * t;
        let mut px = vec![0f32; 4 * stride];
        // Lanes past the image's last tile hold the next image's values (or stale ones at the
        // chunk's end): they are transformed but never stored.
        let mut mm = [[0f32; L]; 16];
        let mut out = [[0f32; L]; 4];
        for o in 0..g.o {
            let base = o * t + off;
            for q0 in (0..tiles).step_by(L) {
                let n = L.min(tiles - q0);
                for (pos, row) in mm.iter_mut().enumerate() {
                    let at = pos * plane_stride + base + q0;
                    if off + q0 + L <= t {
                        let src: &[f32; L] = (&m[at..at + L]).try_into().unwrap();
                        *row = *src;
                    } else {
                        row[..n].copy_from_slice(&m[at..at + n]);
                    }
                }
                untransform_lanes(&mm, &mut out);
                for (p, vals) in out.iter().enumerate() {
                    let dst: &mut [f32; L] = (&mut px[p * stride + q0..][..L]).try_into().unwrap();
                    *dst = *vals;
                }
            }
            let yp = &mut y[o * h * w..][..h * w];
            for ty in 0..th {
                for i in 0..2 {
                    let yy = 2 * ty + i;
                    if yy >= h {
                        continue;
                    }
                    let row = &mut yp[yy * w..][..w];
                    let left = &px[2 * i * stride + ty * tw..][..tw];
                    let right = &px[(2 * i + 1) * stride + ty * tw..][..tw];
                    for ((pair, &a), &b) in row.chunks_exact_mut(2).zip(left).zip(right) {
                        pair[0] = a;
                        pair[1] = b;
                    }
                    if w % 2 == 1 {
                        row[w - 1] = left[tw - 1];
                    }
                }
            }
        }
    }
}

/// `out[2i + k] = (Aᵀ m A)[i][k]` per lane: rows m0 + m1 + m2 and m1 − m2 − m3, then the
/// same on columns.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
fn untransform_lanes(mm: &[[f32; L]; 16], out: &mut [[f32; L]; 4]) {
    for l in 0..L {
        let mut r = [[0f32; 4]; 2];
        for k in 0..4 {
            r[0][k] = mm[k][l] + mm[4 + k][l] + mm[8 + k][l];
            r[1][k] = mm[4 + k][l] - mm[8 + k][l] - mm[12 + k][l];
        }
        for i in 0..2 {
            out[2 * i][l] = r[i][0] + r[i][1] + r[i][2];
            out[2 * i + 1][l] = r[i][1] - r[i][2] - r[i][3];
        }
    }
}
