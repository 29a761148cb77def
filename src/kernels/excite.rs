//! Squeeze-excitation (EfficientNet's SE block) over `[N, C, H·W]`:
//! `y = x · σ(W2 · SiLU(W1 · mean_hw(x) + b1) + b2)`, one gate per image and channel.
//!
//! Through candle ops this is a mean, two small matmuls, two activations and a broadcast
//! multiply, whose backward makes about ten passes over the activations (the broadcast's
//! product and sum, the mean's broadcast back, and a zero-filled gradient plus an add for each
//! of them). Here the forward reads `x` twice (the mean, then the product) and the backward
//! reads `(x, dy)` once for the gate gradients and writes `dx` in one more pass; the matmuls
//! between are `[N, C] × [C, S]`, a few hundred thousand multiply-adds.

use rayon::prelude::*;

use super::simd::multiversion;

/// `n` images of `c` planes of `hw` values, squeezed to `s` channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SeGeom {
    pub n: usize,
    pub c: usize,
    pub hw: usize,
    pub s: usize,
}

impl SeGeom {
    /// Floats of the flat parameter vector: `w1 [s × c]`, `b1 [s]`, `w2 [c × s]`, `b2 [c]`.
    pub(crate) fn params_len(&self) -> usize {
        2 * self.s * self.c + self.s + self.c
    }
}

/// Views of the flat parameter vector.
struct Params<'a> {
    w1: &'a [f32],
    b1: &'a [f32],
    w2: &'a [f32],
    b2: &'a [f32],
}

fn split<'a>(g: &SeGeom, p: &'a [f32]) -> Params<'a> {
    let (w1, rest) = p.split_at(g.s * g.c);
    let (b1, rest) = rest.split_at(g.s);
    let (w2, b2) = rest.split_at(g.c * g.s);
    Params { w1, b1, w2, b2 }
}

fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + super::norm::exp(-z))
}

/// What the forward computes besides `y`, and the backward needs: per image, the channel means
/// `[n × c]`, fc1's pre-activation and SiLU output `[n × s]`, and the gates `[n × c]`.
pub(crate) struct Squeezed {
    mean: Vec<f32>,
    pre: Vec<f32>,
    hidden: Vec<f32>,
    pub gate: Vec<f32>,
}

/// The gates of every image: the channel means of `x`, then the two small layers.
pub(crate) fn squeeze(g: &SeGeom, x: &[f32], params: &[f32]) -> Squeezed {
    let p = split(g, params);
    let hw = g.hw.max(1);
    let mean: Vec<f32> = x
        .par_chunks(hw)
        .map(|plane| (super::norm::plane_sum(plane) / hw as f64) as f32)
        .collect();
    let mut pre = vec![0f32; g.n * g.s];
    let mut hidden = vec![0f32; g.n * g.s];
    let mut gate = vec![0f32; g.n * g.c];
    for img in 0..g.n {
        let m = &mean[img * g.c..][..g.c];
        for j in 0..g.s {
            let z = p.b1[j] + dot(&p.w1[j * g.c..][..g.c], m);
            pre[img * g.s + j] = z;
            hidden[img * g.s + j] = z * sigmoid(z);
        }
        let h = &hidden[img * g.s..][..g.s];
        for ch in 0..g.c {
            gate[img * g.c + ch] = sigmoid(p.b2[ch] + dot(&p.w2[ch * g.s..][..g.s], h));
        }
    }
    Squeezed {
        mean,
        pre,
        hidden,
        gate,
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

multiversion! {
    fn plane_scale(x: &[f32], k: f32, y: &mut [f32]) {
        for (o, &v) in y.iter_mut().zip(x) {
            *o = v * k;
        }
    }
}

/// `y = x · gate`, per plane.
pub(crate) fn excite(g: &SeGeom, x: &[f32], gate: &[f32]) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    let hw = g.hw.max(1);
    y.par_chunks_mut(hw)
        .zip(x.par_chunks(hw))
        .zip(gate.par_iter())
        .for_each(|((yp, xp), &k)| plane_scale(xp, k, yp));
    y
}

multiversion! {
    /// `Σ x · dy`, in [`super::norm::plane_sum`]'s shape.
    fn plane_dot(x: &[f32], dy: &[f32]) -> f64 {
        let mut acc = [0f32; 16];
        let (xs, ds) = (x.chunks_exact(16), dy.chunks_exact(16));
        let rest: f64 = xs.remainder().iter().zip(ds.remainder()).map(|(&a, &b)| (a * b) as f64).sum();
        for (xc, dc) in xs.zip(ds) {
            for l in 0..16 {
                acc[l] += xc[l] * dc[l];
            }
        }
        acc.iter().map(|&v| v as f64).sum::<f64>() + rest
    }
}

multiversion! {
    fn plane_input_grad(dy: &[f32], k: f32, add: f32, dx: &mut [f32]) {
        for (o, &d) in dx.iter_mut().zip(dy) {
            *o = d * k + add;
        }
    }
}

/// `(dx, dparams)` for the forward that [`squeeze`] and [`excite`] computed.
pub(crate) fn backward(
    g: &SeGeom,
    x: &[f32],
    params: &[f32],
    sq: &Squeezed,
    dy: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    let p = split(g, params);
    let hw = g.hw.max(1);
    // d loss / d gate, then through the sigmoid: d pre2.
    let dpre2: Vec<f32> = x
        .par_chunks(hw)
        .zip(dy.par_chunks(hw))
        .zip(sq.gate.par_iter())
        .map(|((xp, dp), &k)| plane_dot(xp, dp) as f32 * k * (1.0 - k))
        .collect();
    let mut dparams = vec![0f32; g.params_len()];
    let (dw1, rest) = dparams.split_at_mut(g.s * g.c);
    let (db1, rest) = rest.split_at_mut(g.s);
    let (dw2, db2) = rest.split_at_mut(g.c * g.s);
    let mut dmean = vec![0f32; g.n * g.c];
    let mut dpre1 = vec![0f32; g.s];
    for img in 0..g.n {
        let d2 = &dpre2[img * g.c..][..g.c];
        let h = &sq.hidden[img * g.s..][..g.s];
        for ch in 0..g.c {
            db2[ch] += d2[ch];
            for (dw, &hj) in dw2[ch * g.s..][..g.s].iter_mut().zip(h) {
                *dw += d2[ch] * hj;
            }
        }
        for (j, d1) in dpre1.iter_mut().enumerate() {
            let dh: f32 = (0..g.c).map(|ch| d2[ch] * p.w2[ch * g.s + j]).sum();
            let z = sq.pre[img * g.s + j];
            let sz = sigmoid(z);
            *d1 = dh * sz * (1.0 + z * (1.0 - sz));
        }
        let m = &sq.mean[img * g.c..][..g.c];
        let dm = &mut dmean[img * g.c..][..g.c];
        for (j, &d1) in dpre1.iter().enumerate() {
            db1[j] += d1;
            for ((dw, &mc), (dmc, &w)) in dw1[j * g.c..][..g.c]
                .iter_mut()
                .zip(m)
                .zip(dm.iter_mut().zip(&p.w1[j * g.c..][..g.c]))
            {
                *dw += d1 * mc;
                *dmc += d1 * w;
            }
        }
    }
    let mut dx = vec![0f32; x.len()];
    dx.par_chunks_mut(hw)
        .zip(dy.par_chunks(hw))
        .zip(sq.gate.par_iter().zip(dmean.par_iter()))
        .for_each(|((dxp, dp), (&k, &dm))| plane_input_grad(dp, k, dm / hw as f32, dxp));
    (dx, dparams)
}
