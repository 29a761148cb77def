//! Slow, obviously-correct f64 versions of every kernel (the definitions as nested loops), and a
//! finite-difference gradient, for the tests.

/// A `[n, c, h, w]` tensor in f64.
#[derive(Clone, Debug)]
pub struct T4 {
    pub d: [usize; 4],
    pub v: Vec<f64>,
}

impl T4 {
    pub fn new(d: [usize; 4], v: Vec<f64>) -> Self {
        assert_eq!(d.iter().product::<usize>(), v.len());
        T4 { d, v }
    }

    fn idx(&self, a: usize, b: usize, c: usize, e: usize) -> usize {
        ((a * self.d[1] + b) * self.d[2] + c) * self.d[3] + e
    }

    /// The value at `(a, b, y, x)` with `y`, `x` possibly outside the image (then `pad`).
    fn at(&self, a: usize, b: usize, y: isize, x: isize, pad: f64) -> f64 {
        if y < 0 || x < 0 || y >= self.d[2] as isize || x >= self.d[3] as isize {
            return pad;
        }
        self.v[self.idx(a, b, y as usize, x as usize)]
    }
}

/// Cross-correlation as PyTorch defines `conv2d` (no bias).
pub fn conv2d(x: &T4, w: &T4, stride: usize, pad: usize, groups: usize) -> T4 {
    let [n, c, h, wd] = x.d;
    let [o, cg, kh, kw] = w.d;
    assert_eq!(cg * groups, c);
    let og = o / groups;
    let oh = (h + 2 * pad - kh) / stride + 1;
    let ow = (wd + 2 * pad - kw) / stride + 1;
    let mut y = T4::new([n, o, oh, ow], vec![0.0; n * o * oh * ow]);
    for b in 0..n {
        for oc in 0..o {
            let gi = oc / og;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut s = 0.0;
                    for ci in 0..cg {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * stride + ky) as isize - pad as isize;
                                let ix = (ox * stride + kx) as isize - pad as isize;
                                s +=
                                    x.at(b, gi * cg + ci, iy, ix, 0.0) * w.v[w.idx(oc, ci, ky, kx)];
                            }
                        }
                    }
                    let i = y.idx(b, oc, oy, ox);
                    y.v[i] = s;
                }
            }
        }
    }
    y
}

/// The pixels of output `(oy, ox)`'s window, padding included as `None`.
fn window(
    x: &T4,
    (b, ch, oy, ox): (usize, usize, usize, usize),
    k: usize,
    s: usize,
    p: usize,
) -> Vec<Option<f64>> {
    let mut out = Vec::new();
    for ky in 0..k {
        for kx in 0..k {
            let iy = (oy * s + ky) as isize - p as isize;
            let ix = (ox * s + kx) as isize - p as isize;
            let inside = iy >= 0 && ix >= 0 && iy < x.d[2] as isize && ix < x.d[3] as isize;
            out.push(inside.then(|| x.at(b, ch, iy, ix, 0.0)));
        }
    }
    out
}

fn pool(x: &T4, k: usize, s: usize, p: usize, f: impl Fn(&[Option<f64>]) -> f64) -> T4 {
    let [n, c, h, w] = x.d;
    let (oh, ow) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
    let mut v = Vec::with_capacity(n * c * oh * ow);
    for b in 0..n {
        for ch in 0..c {
            for oy in 0..oh {
                for ox in 0..ow {
                    v.push(f(&window(x, (b, ch, oy, ox), k, s, p)));
                }
            }
        }
    }
    T4::new([n, c, oh, ow], v)
}

pub fn max_pool(x: &T4, k: usize, s: usize, p: usize) -> T4 {
    pool(x, k, s, p, |win| {
        win.iter()
            .flatten()
            .fold(f64::NEG_INFINITY, |a, &b| a.max(b))
    })
}

/// Floor-mode average pool; with `count_include_pad` the divisor is always k² (a floor-mode
/// window never reaches past the padding).
pub fn avg_pool(x: &T4, k: usize, s: usize, p: usize, count_include_pad: bool) -> T4 {
    pool(x, k, s, p, |win| {
        let sum: f64 = win.iter().flatten().sum();
        let count = if count_include_pad {
            win.len()
        } else {
            win.iter().flatten().count()
        };
        sum / count as f64
    })
}

/// Training-mode batch norm over (N, H, W) per channel, biased variance, optional ReLU.
pub fn batch_norm(x: &T4, gamma: &[f64], beta: &[f64], eps: f64, act: super::Act) -> T4 {
    let [n, c, h, w] = x.d;
    let m = (n * h * w) as f64;
    let mut y = x.clone();
    for ch in 0..c {
        let vals: Vec<usize> = (0..n)
            .flat_map(|b| (0..h * w).map(move |i| (b * c + ch) * h * w + i))
            .collect();
        let mean = vals.iter().map(|&i| x.v[i]).sum::<f64>() / m;
        let var = vals.iter().map(|&i| (x.v[i] - mean).powi(2)).sum::<f64>() / m;
        for &i in &vals {
            let t = (x.v[i] - mean) / (var + eps).sqrt() * gamma[ch] + beta[ch];
            y.v[i] = match act {
                super::Act::None => t,
                super::Act::Relu => t.max(0.0),
                super::Act::Relu6 => t.clamp(0.0, 6.0),
                super::Act::Silu => t / (1.0 + (-t).exp()),
            };
        }
    }
    y
}

/// Central-difference gradient of `f` at `at`.
pub fn fd_grad(f: impl Fn(&[f64]) -> f64, at: &[f64], h: f64) -> Vec<f64> {
    let mut x = at.to_vec();
    (0..x.len())
        .map(|i| {
            let x0 = x[i];
            x[i] = x0 + h;
            let up = f(&x);
            x[i] = x0 - h;
            let down = f(&x);
            x[i] = x0;
            (up - down) / (2.0 * h)
        })
        .collect()
}

/// Central differences at up to `max` indices spread evenly over `at` (first and last
/// included), for tensors too large to difference entirely in a fast test.
pub fn fd_grad_sampled(
    f: impl Fn(&[f64]) -> f64,
    at: &[f64],
    h: f64,
    max: usize,
) -> Vec<(usize, f64)> {
    let step = at.len().div_ceil(max.max(1)).max(1);
    let mut idx: Vec<usize> = (0..at.len()).step_by(step).collect();
    if !at.is_empty() && idx.last() != Some(&(at.len() - 1)) {
        idx.push(at.len() - 1);
    }
    let mut x = at.to_vec();
    idx.into_iter()
        .map(|i| {
            let x0 = x[i];
            x[i] = x0 + h;
            let up = f(&x);
            x[i] = x0 - h;
            let down = f(&x);
            x[i] = x0;
            (i, (up - down) / (2.0 * h))
        })
        .collect()
}

/// Deterministic values in [-1, 1) (a 64-bit LCG), so failures reproduce.
pub fn uniform(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f64 / (1u64 << 24) as f64 * 2.0 - 1.0) as f32
        })
        .collect()
}

/// `Σ y · r`, the scalar whose gradients the tests compare.
pub fn dot(y: &[f64], r: &[f64]) -> f64 {
    y.iter().zip(r).map(|(a, b)| a * b).sum()
}
