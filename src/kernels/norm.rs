//! Batch normalisation over `[N, C, H·W]`, fused with the activation that follows it ([`Act`]):
//! in training mode forward and backward, in evaluation mode the running statistics' affine map.
//!
//! candle-nn's BatchNorm runs about ten tensor passes forward (transpose, contiguous copy, mean,
//! subtract, square, mean, divide, multiply, add, transpose back) and as many again through
//! autograd; here the forward is two reads for the statistics and one read + write for the
//! output, and the backward one read of (x, dy) for the two sums and one pass for dx.

use rayon::prelude::*;

use super::buf::SyncPtr;
use super::simd::multiversion;

/// The activation after a batch norm (or none), fused into its passes: ReLU (ResNets, MobileNet
/// V1, the small CNN), ReLU6 (MobileNet V2) and SiLU (EfficientNet). Unfused, each would be one
/// more pass over the activations forward, and several through autograd backward.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    None,
    Relu,
    Relu6,
    Silu,
}

impl Act {
    /// The activation of `z`.
    #[inline(always)]
    fn value(self, z: f32) -> f32 {
        match self {
            Act::None => z,
            Act::Relu => relu(z),
            Act::Relu6 => {
                let t = relu(z);
                if t < 6.0 {
                    t
                } else {
                    6.0
                }
            }
            Act::Silu => z / (1.0 + exp(-z)),
        }
    }

    /// `dy · act'(z)`. ReLU6 passes the gradient strictly inside (0, 6), as PyTorch's hardtanh.
    #[inline(always)]
    fn grad(self, z: f32, dy: f32) -> f32 {
        match self {
            Act::None => dy,
            Act::Relu => {
                if z > 0.0 {
                    dy
                } else {
                    0.0
                }
            }
            Act::Relu6 => {
                if z > 0.0 && z < 6.0 {
                    dy
                } else {
                    0.0
                }
            }
            Act::Silu => {
                let s = 1.0 / (1.0 + exp(-z));
                dy * s * (1.0 + z * (1.0 - s))
            }
        }
    }
}

/// `e^x` in plain f32 arithmetic, which the compiler vectorises inside our kernels' loops
/// (`f32::exp` is a libm call per element: a quarter of an EfficientNet training step went
/// there, through SiLU). Range reduction `x = k·ln 2 + r` with `|r| ≤ ln 2 / 2` (ln 2 split in
/// two so `k·ln 2` stays exact), then the Taylor series of `e^r` to degree 7, whose truncation
/// error is below 1e-8 there, times `2^k` built in the exponent bits. Within 2e-7 relative
/// of the exact value for `x` in `[-87, 88]` (clamped outside, where f32 under/overflows).
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4; // 0.693359375: few bits, so k · LN2_HI is exact
    const LN2_LO: f32 = -2.121_944_4e-4; // ln 2 − LN2_HI
                                         // 1.5 · 2^23: adding it rounds an f32 below 2^22 to an integer (no libm round or floor).
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let k = (x * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = x - k * LN2_HI - k * LN2_LO;
    let mut p = 1.0 / 5040.0;
    for c in [
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = p * r + c;
    }
    p * f32::from_bits(((k as i32 + 127) as u32) << 23)
}

#[inline(always)]
fn relu(z: f32) -> f32 {
    if z > 0.0 {
        z
    } else {
        0.0
    }
}

/// Run `body` with `act` as a compile-time choice, so each activation gets its own vectorised
/// loop instead of a branch per element.
macro_rules! with_act {
    ($act:expr, |$a:ident| $body:expr) => {
        match $act {
            Act::None => {
                let $a = Act::None;
                $body
            }
            Act::Relu => {
                let $a = Act::Relu;
                $body
            }
            Act::Relu6 => {
                let $a = Act::Relu6;
                $body
            }
            Act::Silu => {
                let $a = Act::Silu;
                $body
            }
        }
    };
}

/// Layout of a batch-norm input: `n` images of `c` planes of `hw` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct NormGeom {
    pub n: usize,
    pub c: usize,
    pub hw: usize,
}

impl NormGeom {
    /// Values per channel.
    fn m(&self) -> usize {
        self.n * self.hw
    }

    fn plane<'a>(&self, x: &'a [f32], n: usize, ch: usize) -> &'a [f32] {
        &x[(n * self.c + ch) * self.hw..][..self.hw]
    }
}

multiversion! {
    /// `Σ x` in 16 f32 lanes, added up in f64: vectorised, and exact enough for a plane's mean.
    pub(crate) fn plane_sum(x: &[f32]) -> f64 {
        let mut acc = [0f32; 16];
        let chunks = x.chunks_exact(16);
        let rest: f64 = chunks.remainder().iter().map(|&v| v as f64).sum();
        for c in chunks {
            for l in 0..16 {
                acc[l] += c[l];
            }
        }
        acc.iter().map(|&v| v as f64).sum::<f64>() + rest
    }
}

multiversion! {
    fn plane_sq_dev(x: &[f32], mean: f32) -> f64 {
        let mut acc = [0f32; 16];
        let chunks = x.chunks_exact(16);
        let rest: f64 = chunks.remainder().iter().map(|&v| ((v - mean) as f64).powi(2)).sum();
        for c in chunks {
            for l in 0..16 {
                let d = c[l] - mean;
                acc[l] += d * d;
            }
        }
        acc.iter().map(|&v| v as f64).sum::<f64>() + rest
    }
}

/// Per-channel batch mean and biased variance (two passes: the variance of deviations from the
/// mean, which stays accurate when |mean| ≫ std).
pub(crate) fn batch_stats(g: &NormGeom, x: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let m = g.m().max(1) as f64;
    (0..g.c)
        .into_par_iter()
        .map(|ch| {
            let mean = ((0..g.n).map(|n| plane_sum(g.plane(x, n, ch))).sum::<f64>() / m) as f32;
            let var = (0..g.n)
                .map(|n| plane_sq_dev(g.plane(x, n, ch), mean))
                .sum::<f64>()
                / m;
            (mean, var as f32)
        })
        .unzip()
}

/// Per-channel `y = x · scale + shift` (before the activation) as `(scale, shift)`.
pub(crate) fn affine_coefficients(
    mean: &[f32],
    invstd: &[f32],
    gamma: &[f32],
    beta: &[f32],
) -> Vec<(f32, f32)> {
    (0..mean.len())
        .map(|c| {
            let a = gamma[c] * invstd[c];
            (a, beta[c] - mean[c] * a)
        })
        .collect()
}

multiversion! {
    fn plane_affine(x: &[f32], a: f32, b: f32, act: Act, y: &mut [f32]) {
        with_act!(act, |act| {
            for (o, &v) in y.iter_mut().zip(x) {
                *o = act.value(v * a + b);
            }
        })
    }
}

/// `y = act(x · scale_c + shift_c)`.
pub(crate) fn apply(g: &NormGeom, x: &[f32], coef: &[(f32, f32)], act: Act) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    if g.hw == 0 {
        return y;
    }
    y.par_chunks_mut(g.hw)
        .zip(x.par_chunks(g.hw))
        .enumerate()
        .for_each(|(pl, (yp, xp))| {
            let (a, b) = coef[pl % g.c];
            plane_affine(xp, a, b, act, yp);
        });
    y
}

multiversion! {
    fn plane_eval_grad(x: &[f32], dy: &[f32], a: f32, b: f32, act: Act, dx: &mut [f32]) {
        with_act!(act, |act| {
            for ((o, &xv), &dv) in dx.iter_mut().zip(x).zip(dy) {
                *o = a * act.grad(xv * a + b, dv);
            }
        })
    }
}

/// The input gradient of [`apply`] with fixed coefficients (evaluation mode, running
/// statistics): `dx = scale_c · act'(z) · dy`.
pub(crate) fn apply_backward(
    g: &NormGeom,
    x: &[f32],
    dy: &[f32],
    coef: &[(f32, f32)],
    act: Act,
) -> Vec<f32> {
    let mut dx = vec![0f32; x.len()];
    if g.hw == 0 {
        return dx;
    }
    dx.par_chunks_mut(g.hw)
        .zip(x.par_chunks(g.hw).zip(dy.par_chunks(g.hw)))
        .enumerate()
        .for_each(|(pl, (dp, (xp, gp)))| {
            let (a, b) = coef[pl % g.c];
            plane_eval_grad(xp, gp, a, b, act, dp);
        });
    dx
}

multiversion! {
    /// Σ dy' and Σ dy'·(x − mean) over a plane, where dy' = dy · act'(z) is the gradient at the
    /// batch norm's output `z = x · a + b` (recomputed here rather than stored).
    fn plane_grad_sums(x: &[f32], dy: &[f32], mean: f32, a: f32, b: f32, act: Act) -> (f64, f64) {
        with_act!(act, |act| {
            let mut s1 = [0f32; 16];
            let mut s2 = [0f32; 16];
            let n = x.len() / 16 * 16;
            for (xc, dc) in x[..n].chunks_exact(16).zip(dy[..n].chunks_exact(16)) {
                for l in 0..16 {
                    let d = act.grad(xc[l] * a + b, dc[l]);
                    s1[l] += d;
                    s2[l] += d * (xc[l] - mean);
                }
            }
            let mut t1: f64 = s1.iter().map(|&v| v as f64).sum();
            let mut t2: f64 = s2.iter().map(|&v| v as f64).sum();
            for (&xv, &dv) in x[n..].iter().zip(&dy[n..]) {
                let d = act.grad(xv * a + b, dv);
                t1 += d as f64;
                t2 += (d * (xv - mean)) as f64;
            }
            (t1, t2)
        })
    }
}

multiversion! {
    /// `dx = a·dy' + k·x + k0`, the batch-norm input gradient with the channel sums folded into
    /// `k` and `k0`.
    fn plane_input_grad(x: &[f32], dy: &[f32], a: f32, b: f32, k: f32, k0: f32, act: Act, dx: &mut [f32]) {
        with_act!(act, |act| {
            for ((o, &xv), &dv) in dx.iter_mut().zip(x).zip(dy) {
                *o = a * act.grad(xv * a + b, dv) + k * xv + k0;
            }
        })
    }
}

/// Gradients `(dx, dgamma, dbeta)` of `y = act((x − mean) · invstd · gamma + beta)` with
/// mean and invstd the batch statistics of `x` (so they depend on `x` too).
pub(crate) fn backward(
    g: &NormGeom,
    x: &[f32],
    dy: &[f32],
    mean: &[f32],
    invstd: &[f32],
    coef: &[(f32, f32)],
    act: Act,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let m = g.m().max(1) as f64;
    let mut dx = vec![0f32; x.len()];
    let dx_ptr = SyncPtr(dx.as_mut_ptr());
    let (dgamma, dbeta): (Vec<f32>, Vec<f32>) = (0..g.c)
        .into_par_iter()
        .map(|ch| {
            let (a, b) = coef[ch];
            let (mu, is) = (mean[ch], invstd[ch]);
            let (mut sum_dy, mut sum_dy_xc) = (0f64, 0f64);
            for n in 0..g.n {
                let (s1, s2) =
                    plane_grad_sums(g.plane(x, n, ch), g.plane(dy, n, ch), mu, a, b, act);
                sum_dy += s1;
                sum_dy_xc += s2;
            }
            // dx = a·(dy' − mean(dy') − (x − μ)·invstd²·mean(dy'·(x − μ)))
            let mdy = sum_dy / m;
            let mdyxc = sum_dy_xc / m;
            let is2 = (is as f64) * (is as f64);
            let k = -(a as f64) * is2 * mdyxc;
            let k0 = -(a as f64) * mdy - k * mu as f64;
            for n in 0..g.n {
                // SAFETY: each channel task writes only its own planes of `dx`.
                let dxp = unsafe { dx_ptr.slice((n * g.c + ch) * g.hw, g.hw) };
                plane_input_grad(
                    g.plane(x, n, ch),
                    g.plane(dy, n, ch),
                    a,
                    b,
                    k as f32,
                    k0 as f32,
                    act,
                    dxp,
                );
            }
            ((sum_dy_xc * is as f64) as f32, sum_dy as f32)
        })
        .unzip();
    (dx, dgamma, dbeta)
}

multiversion! {
    fn add_relu_chunk(a: &[f32], b: &[f32], y: &mut [f32]) {
        for ((o, &u), &v) in y.iter_mut().zip(a).zip(b) {
            let t = u + v;
            *o = if t > 0.0 { t } else { 0.0 };
        }
    }
}

multiversion! {
    fn relu_grad_chunk(y: &[f32], dy: &[f32], dx: &mut [f32]) {
        for ((o, &u), &d) in dx.iter_mut().zip(y).zip(dy) {
            *o = if u > 0.0 { d } else { 0.0 };
        }
    }
}

/// Elements per parallel task of the elementwise kernels.
const ELEMWISE_CHUNK: usize = 1 << 15;

/// `max(a + b, 0)`.
pub(crate) fn add_relu(a: &[f32], b: &[f32]) -> Vec<f32> {
    let mut y = vec![0f32; a.len()];
    y.par_chunks_mut(ELEMWISE_CHUNK)
        .zip(
            a.par_chunks(ELEMWISE_CHUNK)
                .zip(b.par_chunks(ELEMWISE_CHUNK)),
        )
        .for_each(|(yc, (ac, bc))| add_relu_chunk(ac, bc, yc));
    y
}

/// `dy` where the ReLU output `y` is positive, else 0.
pub(crate) fn relu_grad(y: &[f32], dy: &[f32]) -> Vec<f32> {
    let mut dx = vec![0f32; y.len()];
    dx.par_chunks_mut(ELEMWISE_CHUNK)
        .zip(
            y.par_chunks(ELEMWISE_CHUNK)
                .zip(dy.par_chunks(ELEMWISE_CHUNK)),
        )
        .for_each(|(dc, (yc, gc))| relu_grad_chunk(yc, gc, dc));
    dx
}
