//! Sliding-window ops that train for any kernel, stride and padding: max-pool, average-pool and
//! depthwise convolution.
//!
//! Why they exist: candle 0.11's `max_pool2d`/`avg_pool2d` have a backward only when kernel ==
//! stride (a ResNet stem's 3×3/2 pad-1 max-pool cannot train), and candle runs a grouped
//! convolution as one convolution per group (a 960-channel depthwise conv = 960 conv calls
//! forward and again backward).
//!
//! How: the input is padded (with −∞ for max, 0 otherwise) and reshaped, at no cost, to
//! `[N, C, Hq, s, Wq, s]` for stride `s`. Then the input pixels a window offset `(di, dj)` sees
//! at every output position — rows `di + s·i`, columns `dj + s·j` — are the plain view
//! `[.., di/s .. di/s+Ho, di%s, dj/s .. dj/s+Wo, dj%s]`: four `narrow`s, no copy. The op folds
//! its k² views with `maximum`, `+` or `* w + `. Every piece (cat, reshape, narrow, maximum, add,
//! mul) has a backward in candle on every device, so no custom kernel is needed.
//! Ties in max-pool split the gradient between the tied inputs (PyTorch gives it all to the
//! first); both are valid subgradients and the sum is the same.

use candle_core::{bail, Result, Tensor};

/// All k×k window views of a padded input; see the module doc.
struct Windows {
    /// `[N, C, Hq, s, Wq, s]`
    view: Tensor,
    batch: usize,
    channels: usize,
    kernel: usize,
    stride: usize,
    out_h: usize,
    out_w: usize,
}

/// Output side of a window op (PyTorch's floor mode).
fn out_size(size: usize, kernel: usize, stride: usize, padding: usize) -> Result<usize> {
    if kernel == 0 || stride == 0 {
        bail!("window op: kernel ({kernel}) and stride ({stride}) must be positive")
    }
    if size + 2 * padding < kernel {
        bail!("window op: input side {size} + 2×padding {padding} is smaller than kernel {kernel}")
    }
    Ok((size + 2 * padding - kernel) / stride + 1)
}

/// Pad `x` along `dim` with `before`/`after` entries of `fill`.
fn pad(x: &Tensor, dim: usize, before: usize, after: usize, fill: f64) -> Result<Tensor> {
    if before == 0 && after == 0 {
        return Ok(x.clone());
    }
    let block = |n: usize| -> Result<Tensor> {
        let mut dims = x.dims().to_vec();
        dims[dim] = n;
        Tensor::full(fill, dims, x.device())?.to_dtype(x.dtype())
    };
    let mut parts = Vec::with_capacity(3);
    if before > 0 {
        parts.push(block(before)?);
    }
    parts.push(x.clone());
    if after > 0 {
        parts.push(block(after)?);
    }
    Tensor::cat(&parts, dim)
}

impl Windows {
    fn new(x: &Tensor, kernel: usize, stride: usize, padding: usize, fill: f64) -> Result<Self> {
        let (n, c, h, w) = x.dims4()?;
        let out_h = out_size(h, kernel, stride, padding)?;
        let out_w = out_size(w, kernel, stride, padding)?;
        // Hq·s must cover the padded input (so the reshape is exact) and the furthest view
        // (offset (k-1)/s plus Ho rows). The extra rows at the end are never read.
        let hq = (h + 2 * padding)
            .div_ceil(stride)
            .max((kernel - 1) / stride + out_h);
        let wq = (w + 2 * padding)
            .div_ceil(stride)
            .max((kernel - 1) / stride + out_w);
        let x = pad(x, 2, padding, hq * stride - h - padding, fill)?;
        let x = pad(&x, 3, padding, wq * stride - w - padding, fill)?;
        let view = x.reshape((n, c, hq, stride, wq, stride))?;
        Ok(Windows {
            view,
            batch: n,
            channels: c,
            kernel,
            stride,
            out_h,
            out_w,
        })
    }

    /// The inputs offset `(di, dj)` of every window sees: `[N, C, Ho, 1, Wo, 1]`.
    fn at(&self, di: usize, dj: usize) -> Result<Tensor> {
        let s = self.stride;
        self.view
            .narrow(2, di / s, self.out_h)?
            .narrow(3, di % s, 1)?
            .narrow(4, dj / s, self.out_w)?
            .narrow(5, dj % s, 1)
    }

    fn offsets(&self) -> impl Iterator<Item = (usize, usize)> {
        let k = self.kernel;
        (0..k).flat_map(move |di| (0..k).map(move |dj| (di, dj)))
    }

    /// `[N, C, Ho, 1, Wo, 1]` → `[N, C, Ho, Wo]`.
    fn finish(&self, t: Tensor) -> Result<Tensor> {
        t.reshape((self.batch, self.channels, self.out_h, self.out_w))
    }
}

/// Whether candle's own average pool (whose backward needs kernel == stride, and whose
/// nearest-upsample backward needs the windows to tile the input exactly) can be used.
fn native_ok(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<bool> {
    let (_, _, h, w) = x.dims4()?;
    Ok(kernel == stride && padding == 0 && h % kernel == 0 && w % kernel == 0)
}

/// 2-D max-pool of `[N, C, H, W]`, PyTorch's `max_pool2d(x, kernel, stride, padding)` (floor
/// mode), differentiable for any kernel/stride/padding.
pub fn max_pool2d(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
    if 2 * padding > kernel {
        // A window made only of padding would output −∞.
        bail!("max_pool2d: padding {padding} must be at most half the kernel {kernel}")
    }
    // Never candle's own max-pool: besides needing kernel == stride, its backward in 0.11.1
    // multiplies the gradient by 1/k² (it scales by the window's mean of the argmax mask where
    // it meant to divide by the number of maxima).
    if kernel == stride {
        return max_pool_tiled(x, kernel, padding);
    }
    let win = Windows::new(x, kernel, stride, padding, f64::NEG_INFINITY)?;
    let mut acc: Option<Tensor> = None;
    for (di, dj) in win.offsets() {
        let v = win.at(di, dj)?;
        acc = Some(match acc {
            None => v,
            Some(a) => a.maximum(&v)?,
        });
    }
    match acc {
        Some(a) => win.finish(a),
        None => bail!("max_pool2d: empty kernel"),
    }
}

/// Non-overlapping windows (kernel == stride, the CNN's 2×2 pools): crop to whole windows,
/// view as `[N, C, Ho, k, Wo, k]` and reduce. About 4× cheaper backward than folding k² views,
/// because a reduce-max backward is one mask over the input where each view's backward pads
/// its gradient back to input size. Unlike the folded form, a tie gives every tied input the
/// full gradient; exact ties among positive activations are rare, and ties at a ReLU's zeros
/// are stopped by the ReLU's zero gradient below them.
fn max_pool_tiled(x: &Tensor, k: usize, padding: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (oh, ow) = (out_size(h, k, k, padding)?, out_size(w, k, k, padding)?);
    let x = pad(x, 2, padding, padding, f64::NEG_INFINITY)?;
    let x = pad(&x, 3, padding, padding, f64::NEG_INFINITY)?;
    let x = x.narrow(2, 0, oh * k)?.narrow(3, 0, ow * k)?;
    x.reshape((n, c, oh, k, ow, k))?
        .max_keepdim(5)?
        .max_keepdim(3)?
        .reshape((n, c, oh, ow))
}

/// 2-D average-pool, PyTorch's `avg_pool2d(x, kernel, stride, padding, count_include_pad)`
/// (floor mode): with `count_include_pad` every window divides by k², otherwise by the number of
/// real (non-padding) pixels it covers.
pub fn avg_pool2d(
    x: &Tensor,
    kernel: usize,
    stride: usize,
    padding: usize,
    count_include_pad: bool,
) -> Result<Tensor> {
    if 2 * padding > kernel {
        bail!("avg_pool2d: padding {padding} must be at most half the kernel {kernel}")
    }
    if native_ok(x, kernel, stride, padding)? {
        return x.avg_pool2d(kernel);
    }
    let (_, _, h, w) = x.dims4()?;
    let win = Windows::new(x, kernel, stride, padding, 0.0)?;
    let mut acc: Option<Tensor> = None;
    for (di, dj) in win.offsets() {
        let v = win.at(di, dj)?;
        acc = Some(match acc {
            None => v,
            Some(a) => (a + v)?,
        });
    }
    let sum = match acc {
        Some(a) => win.finish(a)?,
        None => bail!("avg_pool2d: empty kernel"),
    };
    if count_include_pad || padding == 0 {
        return sum.affine(1.0 / (kernel * kernel) as f64, 0.0);
    }
    // Real pixels under a window = (real rows it covers) × (real columns it covers).
    let covered = |i: usize, size: usize| -> usize {
        let start = (i * stride) as isize - padding as isize;
        let end = start + kernel as isize;
        (end.min(size as isize) - start.max(0)).max(0) as usize
    };
    let mut inv = Vec::with_capacity(win.out_h * win.out_w);
    for i in 0..win.out_h {
        for j in 0..win.out_w {
            inv.push(1.0 / (covered(i, h) * covered(j, w)) as f64);
        }
    }
    let inv =
        Tensor::from_vec(inv, (1, 1, win.out_h, win.out_w), x.device())?.to_dtype(x.dtype())?;
    sum.broadcast_mul(&inv)
}

/// Global average pool, torchvision's `AdaptiveAvgPool2d(1)`: `[N, C, H, W]` → `[N, C, 1, 1]`
/// (kept 4-D because squeeze-excitation multiplies it back onto the feature map).
pub fn adaptive_avg_pool_1x1(x: &Tensor) -> Result<Tensor> {
    x.mean_keepdim((2, 3))
}

/// Depthwise 2-D convolution (`groups == channels`, no bias): `x` `[N, C, H, W]`, `weight`
/// `[C, 1, k, k]` as PyTorch stores it; PyTorch's `conv2d(x, weight, stride, padding, groups=C)`.
pub fn depthwise_conv2d(
    x: &Tensor,
    weight: &Tensor,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    let (_, c, _, _) = x.dims4()?;
    let (wc, one, k, k2) = weight.dims4()?;
    if wc != c || one != 1 || k != k2 {
        bail!(
            "depthwise_conv2d: weight {:?} does not match input {:?} (want [{c}, 1, k, k])",
            weight.dims(),
            x.dims()
        )
    }
    let win = Windows::new(x, k, stride, padding, 0.0)?;
    // Taps as [k·k, C] so tap (di, dj) is one row, broadcast over [N, C, Ho, 1, Wo, 1].
    let taps = weight.reshape((c, k * k))?.t()?;
    let mut acc: Option<Tensor> = None;
    for (di, dj) in win.offsets() {
        let tap = taps.get(di * k + dj)?.reshape((1, c, 1, 1, 1, 1))?;
        let term = win.at(di, dj)?.broadcast_mul(&tap)?;
        acc = Some(match acc {
            None => term,
            Some(a) => (a + term)?,
        });
    }
    match acc {
        Some(a) => win.finish(a),
        None => bail!("depthwise_conv2d: empty kernel"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    type Dims = (usize, usize, usize, usize);
    /// A window's values (`None` = padding) with each one's tap index `di·k + dj`.
    type Window<'a> = &'a [(Option<f64>, usize)];

    /// Distinct values (no ties, so max-pool has one well-defined gradient).
    fn input(dims: Dims) -> Vec<f64> {
        let n = dims.0 * dims.1 * dims.2 * dims.3;
        (0..n)
            .map(|i| ((i * 7919 + 13) % 10007) as f64 / 1000.0 - 5.0)
            .collect()
    }

    /// Direct-loop reference: op over each window, `pad_value` outside the image.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        x: &[f64],
        (n, c, h, w): Dims,
        k: usize,
        s: usize,
        p: usize,
        op: &dyn Fn(usize, Window) -> f64,
    ) -> (Vec<f64>, usize, usize) {
        let oh = (h + 2 * p - k) / s + 1;
        let ow = (w + 2 * p - k) / s + 1;
        let mut out = Vec::new();
        for b in 0..n {
            for ch in 0..c {
                for i in 0..oh {
                    for j in 0..ow {
                        let mut vals = Vec::new();
                        for di in 0..k {
                            for dj in 0..k {
                                let r = (i * s + di) as isize - p as isize;
                                let q = (j * s + dj) as isize - p as isize;
                                let inside =
                                    r >= 0 && q >= 0 && (r as usize) < h && (q as usize) < w;
                                let v = inside
                                    .then(|| x[((b * c + ch) * h + r as usize) * w + q as usize]);
                                vals.push((v, di * k + dj));
                            }
                        }
                        out.push(op(ch, &vals));
                    }
                }
            }
        }
        (out, oh, ow)
    }

    fn close(a: &[f64], b: &[f64], tol: f64) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= tol, "element {i}: {x} vs {y}");
        }
    }

    fn tensor(x: &[f64], dims: Dims) -> Tensor {
        Tensor::from_vec(x.to_vec(), dims, &Device::Cpu).unwrap()
    }

    fn flat(t: &Tensor) -> Vec<f64> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    const SHAPES: [(Dims, usize, usize, usize); 7] = [
        // (shape, kernel, stride, padding)
        ((1, 3, 7, 9), 3, 2, 1), // ResNet stem pool on odd sides
        ((2, 3, 6, 6), 3, 2, 1),
        ((1, 3, 5, 5), 3, 1, 1),
        ((1, 2, 9, 7), 5, 2, 2),
        ((2, 1, 7, 7), 2, 2, 0), // kernel == stride on odd sides: never candle's own pool
        ((2, 2, 8, 6), 2, 2, 0), // candle's own avg-pool path
        ((1, 2, 5, 5), 2, 2, 1), // kernel == stride with padding
    ];

    #[test]
    fn max_pool_matches_direct_loop() {
        for (dims, k, s, p) in SHAPES {
            let x = input(dims);
            let max = |_: usize, v: Window| {
                v.iter()
                    .filter_map(|(v, _)| *v)
                    .fold(f64::NEG_INFINITY, f64::max)
            };
            let (want, oh, ow) = reference(&x, dims, k, s, p, &max);
            let got = max_pool2d(&tensor(&x, dims), k, s, p).unwrap();
            assert_eq!(got.dims(), &[dims.0, dims.1, oh, ow]);
            close(&flat(&got), &want, 0.0);
        }
    }

    #[test]
    fn avg_pool_matches_direct_loop_with_and_without_padding_in_the_count() {
        for (dims, k, s, p) in SHAPES {
            let x = input(dims);
            for include in [true, false] {
                let avg = |_: usize, v: Window| {
                    let real: Vec<f64> = v.iter().filter_map(|(v, _)| *v).collect();
                    let n = if include { v.len() } else { real.len() };
                    real.iter().sum::<f64>() / n as f64
                };
                let (want, oh, ow) = reference(&x, dims, k, s, p, &avg);
                let got = avg_pool2d(&tensor(&x, dims), k, s, p, include).unwrap();
                assert_eq!(got.dims(), &[dims.0, dims.1, oh, ow]);
                close(&flat(&got), &want, 1e-12);
            }
        }
    }

    #[test]
    fn avg_pool_count_on_a_corner_by_hand() {
        // 3×3 ones, kernel 3, stride 2, pad 1: the top-left window covers 2×2 real pixels.
        let x = Tensor::ones((1, 1, 3, 3), DType::F64, &Device::Cpu).unwrap();
        let excl = flat(&avg_pool2d(&x, 3, 2, 1, false).unwrap());
        assert_eq!(excl, vec![1.0; 4]);
        let incl = flat(&avg_pool2d(&x, 3, 2, 1, true).unwrap());
        assert_eq!(incl, vec![4.0 / 9.0; 4]);
    }

    fn weights(c: usize, k: usize) -> Vec<f64> {
        (0..c * k * k)
            .map(|i| ((i * 31 + 7) % 17) as f64 / 8.0 - 1.0)
            .collect()
    }

    #[test]
    fn depthwise_conv_matches_direct_loop() {
        for (dims, k, s, p) in SHAPES {
            let x = input(dims);
            let w = weights(dims.1, k);
            let conv = |ch: usize, v: Window| {
                v.iter()
                    .map(|(v, tap)| v.unwrap_or(0.0) * w[ch * k * k + tap])
                    .sum::<f64>()
            };
            let (want, oh, ow) = reference(&x, dims, k, s, p, &conv);
            let wt = Tensor::from_vec(w.clone(), (dims.1, 1, k, k), &Device::Cpu).unwrap();
            let got = depthwise_conv2d(&tensor(&x, dims), &wt, s, p).unwrap();
            assert_eq!(got.dims(), &[dims.0, dims.1, oh, ow]);
            close(&flat(&got), &want, 1e-12);
            // and candle's grouped conv agrees
            let grouped = tensor(&x, dims).conv2d(&wt, p, s, 1, dims.1).unwrap();
            close(&flat(&grouped), &want, 1e-9);
        }
    }

    #[test]
    fn global_average_pool_by_hand() {
        let x = Tensor::from_vec(
            vec![1.0f64, 2.0, 3.0, 6.0, 0.0, 0.0, 0.0, 4.0],
            (1, 2, 2, 2),
            &Device::Cpu,
        )
        .unwrap();
        let y = adaptive_avg_pool_1x1(&x).unwrap();
        assert_eq!(y.dims(), &[1, 2, 1, 1]);
        assert_eq!(flat(&y), vec![3.0, 1.0]);
    }

    /// d/dx of sum(f(x) · r) by backprop vs central differences, in f64.
    fn check_grad(dims: Dims, f: &dyn Fn(&Tensor) -> Tensor) {
        let x0 = input(dims);
        let xv = Var::from_tensor(&tensor(&x0, dims)).unwrap();
        let y = f(xv.as_tensor());
        let r: Vec<f64> = (0..y.elem_count())
            .map(|i| ((i * 37 + 11) % 23) as f64 / 11.0 - 1.0)
            .collect();
        let r = Tensor::from_vec(r, y.dims(), &Device::Cpu).unwrap();
        let loss =
            |t: &Tensor| -> f64 { (f(t) * &r).unwrap().sum_all().unwrap().to_scalar().unwrap() };
        let grads = (y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let g = flat(grads.get(xv.as_tensor()).unwrap());
        let eps = 1e-6;
        let mut nonzero = 0;
        for i in 0..x0.len() {
            let mut plus = x0.clone();
            plus[i] += eps;
            let mut minus = x0.clone();
            minus[i] -= eps;
            let fd = (loss(&tensor(&plus, dims)) - loss(&tensor(&minus, dims))) / (2.0 * eps);
            assert!(
                (fd - g[i]).abs() < 1e-6,
                "x[{i}]: backprop {} vs fd {fd}",
                g[i]
            );
            nonzero += usize::from(g[i] != 0.0);
        }
        assert!(nonzero > 0);
    }

    #[test]
    fn gradients_match_finite_differences() {
        for (dims, k, s, p) in SHAPES {
            check_grad(dims, &|x| max_pool2d(x, k, s, p).unwrap());
            check_grad(dims, &|x| avg_pool2d(x, k, s, p, false).unwrap());
            check_grad(dims, &|x| avg_pool2d(x, k, s, p, true).unwrap());
            let w = Tensor::from_vec(weights(dims.1, k), (dims.1, 1, k, k), &Device::Cpu).unwrap();
            check_grad(dims, &|x| depthwise_conv2d(x, &w, s, p).unwrap());
        }
        check_grad((2, 3, 3, 5), &|x| adaptive_avg_pool_1x1(x).unwrap());
    }

    #[test]
    fn depthwise_weight_gradient_matches_finite_differences() {
        let dims = (2, 3, 7, 6);
        let (k, s, p) = (3, 2, 1);
        let x = tensor(&input(dims), dims);
        let w0 = weights(dims.1, k);
        let wv =
            Var::from_tensor(&Tensor::from_vec(w0.clone(), (3, 1, k, k), &Device::Cpu).unwrap())
                .unwrap();
        let loss = |w: &Tensor| {
            depthwise_conv2d(&x, w, s, p)
                .unwrap()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
        };
        let grads = loss(wv.as_tensor()).backward().unwrap();
        let g = flat(grads.get(wv.as_tensor()).unwrap());
        let eps = 1e-6;
        for i in 0..w0.len() {
            let at = |d: f64| {
                let mut w = w0.clone();
                w[i] += d;
                let w = Tensor::from_vec(w, (3, 1, k, k), &Device::Cpu).unwrap();
                loss(&w).to_scalar::<f64>().unwrap()
            };
            let fd = (at(eps) - at(-eps)) / (2.0 * eps);
            assert!(
                (fd - g[i]).abs() < 1e-4 * fd.abs().max(1.0),
                "w[{i}]: {} vs {fd}",
                g[i]
            );
        }
    }

    #[test]
    fn rejects_windows_larger_than_the_padded_input() {
        let x = Tensor::zeros((1, 1, 2, 2), DType::F32, &Device::Cpu).unwrap();
        assert!(max_pool2d(&x, 5, 1, 1).is_err());
        assert!(max_pool2d(&x, 3, 1, 2).is_err());
    }
}
