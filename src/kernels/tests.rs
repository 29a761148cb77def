//! Every kernel against the direct-loop f64 definitions in [`super::reference`]: forward values,
//! and gradients against central finite differences of the reference, over odd shapes.

use candle_core::{DType, Device, Module, ModuleT, Tensor, Var};
use candle_nn::{BatchNormConfig, Conv2dConfig, VarBuilder, VarMap};

use super::reference::{self as refr, fd_grad, fd_grad_sampled, uniform, T4};
use super::*;

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// Asserts `|got − want| ≤ tol · (1 + |want|)` element-wise.
#[track_caller]
fn assert_close(what: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs();
        assert!(
            err <= tol * (1.0 + w.abs()),
            "{what}[{i}]: got {g}, want {w} (error {err:e})"
        );
    }
}

/// [`assert_close`] at the `(index, value)` pairs of `want`.
#[track_caller]
fn assert_close_at(what: &str, got: &[f32], want: &[(usize, f64)], tol: f64) {
    for &(i, w) in want {
        let err = (got[i] as f64 - w).abs();
        assert!(
            err <= tol * (1.0 + w.abs()),
            "{what}[{i}]: got {}, want {w} (error {err:e})",
            got[i]
        );
    }
}

fn var(v: Vec<f32>, dims: &[usize]) -> Var {
    Var::from_vec(v, dims, &Device::Cpu).unwrap()
}

/// Gradients of `Σ y · r` with respect to each of `vars`.
fn grads_of(y: &Tensor, r: &[f32], vars: &[&Var]) -> Vec<Vec<f32>> {
    let r = Tensor::from_slice(r, y.dims(), &Device::Cpu).unwrap();
    let g = (y * r).unwrap().sum_all().unwrap().backward().unwrap();
    vars.iter()
        .map(|v| values(g.get(v.as_tensor()).expect("no gradient")))
        .collect()
}

#[derive(Clone, Copy, Debug)]
struct ConvCase {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    k: usize,
    s: usize,
    p: usize,
    g: usize,
}

#[allow(clippy::too_many_arguments)]
const fn case(
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    k: usize,
    s: usize,
    p: usize,
    g: usize,
) -> ConvCase {
    ConvCase {
        n,
        c,
        h,
        w,
        o,
        k,
        s,
        p,
        g,
    }
}

fn check_conv(cc: ConvCase, seed: u64) {
    let ConvCase {
        n,
        c,
        h,
        w,
        o,
        k,
        s,
        p,
        g,
    } = cc;
    let xd = [n, c, h, w];
    let wd = [o, c / g, k, k];
    let xv = uniform(xd.iter().product(), seed);
    let wv = uniform(wd.iter().product(), seed + 1);
    let x = var(xv.clone(), &xd);
    let wt = var(wv.clone(), &wd);
    let y = conv2d(x.as_tensor(), wt.as_tensor(), None, s, p, g).unwrap();
    let (x64, w64) = (f64s(&xv), f64s(&wv));
    let want = refr::conv2d(
        &T4::new(xd, x64.clone()),
        &T4::new(wd, w64.clone()),
        s,
        p,
        g,
    );
    assert_eq!(y.dims(), want.d, "{cc:?}: output shape");
    assert_close(&format!("{cc:?} y"), &values(&y), &want.v, 1e-5);

    let r = uniform(y.elem_count(), seed + 2);
    let r64 = f64s(&r);
    let grads = grads_of(&y, &r, &[&x, &wt]);
    let loss_x = |xs: &[f64]| {
        let y = refr::conv2d(
            &T4::new(xd, xs.to_vec()),
            &T4::new(wd, w64.clone()),
            s,
            p,
            g,
        );
        refr::dot(&y.v, &r64)
    };
    let loss_w = |ws: &[f64]| {
        let y = refr::conv2d(
            &T4::new(xd, x64.clone()),
            &T4::new(wd, ws.to_vec()),
            s,
            p,
            g,
        );
        refr::dot(&y.v, &r64)
    };
    assert_close_at(
        &format!("{cc:?} dx"),
        &grads[0],
        &fd_grad_sampled(loss_x, &x64, 1e-3, 120),
        1e-4,
    );
    assert_close_at(
        &format!("{cc:?} dw"),
        &grads[1],
        &fd_grad_sampled(loss_w, &w64, 1e-3, 120),
        1e-4,
    );
}

#[test]
fn conv_dense_matches_reference_and_finite_differences() {
    let cases = [
        case(1, 3, 7, 5, 5, 3, 1, 1, 1), // batch 1 (gemm parallelises itself), H ≠ W odd
        case(2, 5, 9, 6, 3, 3, 2, 1, 1), // stride 2, channels not a multiple of 8
        case(2, 4, 8, 7, 6, 5, 1, 2, 1), // 5×5, padding 2
        case(3, 3, 11, 9, 4, 7, 2, 3, 1), // 7×7/2 stem
        case(1, 3, 4, 4, 2, 3, 1, 0, 1), // no padding
        case(2, 3, 6, 5, 2, 3, 2, 2, 1), // padding wider than the stride covers
        case(5, 6, 5, 5, 4, 1, 1, 0, 1), // 1×1 pointwise, chunks of several images
        case(5, 6, 6, 5, 8, 1, 2, 0, 1), // 1×1 stride-2 projection shortcut
        case(7, 9, 5, 6, 11, 3, 1, 1, 1), // several images per chunk and a short last chunk
        case(3, 16, 7, 6, 17, 3, 1, 1, 1), // Winograd: odd height clips the last tile row
        case(2, 17, 4, 5, 16, 3, 1, 1, 1), // Winograd: odd width
        // Winograd with enough tiles that whole lanes of 16 tiles are copied at once, past the
        // end of a tile row into the next ones: the small CNN's 28 px, a row of 19 tiles (a
        // full lane and a short one) and a narrow tall image (one lane spans five rows).
        case(3, 16, 28, 28, 16, 3, 1, 1, 1),
        case(2, 16, 9, 37, 17, 3, 1, 1, 1),
        case(2, 16, 33, 5, 16, 3, 1, 1, 1),
    ];
    for (i, cc) in cases.into_iter().enumerate() {
        check_conv(cc, 10 * i as u64);
    }
}

#[test]
fn conv_grouped_and_depthwise_match_reference_and_finite_differences() {
    let cases = [
        case(2, 4, 6, 7, 6, 3, 1, 1, 2), // 2 groups
        case(5, 6, 5, 4, 9, 3, 2, 1, 3), // 3 groups, stride 2, multi-image chunks
        case(2, 6, 7, 6, 6, 3, 1, 1, 6), // depthwise
        case(2, 5, 9, 8, 5, 3, 2, 1, 5), // depthwise stride 2
        case(2, 4, 7, 7, 8, 5, 2, 2, 4), // depthwise 5×5, channel multiplier 2
        case(1, 3, 5, 6, 3, 7, 1, 3, 3), // depthwise 7×7 on a small image
        case(2, 1, 6, 5, 4, 3, 1, 0, 1), // single-channel input takes the direct path
        case(3, 1, 9, 7, 5, 3, 2, 1, 1), // single-channel input, stride 2
    ];
    for (i, cc) in cases.into_iter().enumerate() {
        check_conv(cc, 100 + 10 * i as u64);
    }
}

#[test]
fn conv_hand_computed() {
    // y = x[i, j] − x[i+1, j+1] on 1..9 is −4 everywhere.
    let x = Tensor::from_vec(
        (1..=9).map(|v| v as f32).collect(),
        (1, 1, 3, 3),
        &Device::Cpu,
    );
    let w = Tensor::from_vec(vec![1f32, 0., 0., -1.], (1, 1, 2, 2), &Device::Cpu).unwrap();
    let y = conv2d(&x.unwrap(), &w, None, 1, 0, 1).unwrap();
    assert_eq!(values(&y), [-4.0; 4]);
    // Two input channels take the gemm path; bias adds per output channel.
    let x = Tensor::from_vec(
        vec![1f32, 2., 3., 4., 10., 20., 30., 40.],
        (1, 2, 2, 2),
        &Device::Cpu,
    )
    .unwrap();
    let w = Tensor::from_vec(vec![1f32, 0.5, -1., 2.], (2, 2, 1, 1), &Device::Cpu).unwrap();
    let b = Tensor::from_vec(vec![100f32, 0.], 2, &Device::Cpu).unwrap();
    let y = conv2d(&x, &w, Some(&b), 1, 0, 1).unwrap();
    assert_eq!(values(&y), [106., 112., 118., 124., 19., 38., 57., 76.]);
}

#[test]
fn conv_matches_candle_forward_and_autograd() {
    for (s, p, k) in [(1, 1, 3), (2, 1, 3), (1, 0, 1), (2, 3, 7), (1, 2, 5)] {
        let (xd, wd) = ([4, 16, 12, 10], [24, 16, k, k]);
        let x = var(uniform(xd.iter().product(), 7), &xd);
        let w = var(uniform(wd.iter().product(), 8), &wd);
        let ours = conv2d(x.as_tensor(), w.as_tensor(), None, s, p, 1).unwrap();
        let theirs = x.as_tensor().conv2d(w.as_tensor(), p, s, 1, 1).unwrap();
        let r = uniform(ours.elem_count(), 9);
        let want = f64s(&values(&theirs));
        assert_close("y vs candle", &values(&ours), &want, 1e-4);
        let g_ours = grads_of(&ours, &r, &[&x, &w]);
        let g_theirs = grads_of(&theirs, &r, &[&x, &w]);
        assert_close("dx vs candle", &g_ours[0], &f64s(&g_theirs[0]), 1e-4);
        assert_close("dw vs candle", &g_ours[1], &f64s(&g_theirs[1]), 1e-4);
    }
}

#[test]
fn conv_accepts_strided_views_and_skips_the_input_gradient_of_constants() {
    let xd = [2, 3, 5, 6];
    let xv = uniform(30 * 6, 3);
    let w = var(uniform(4 * 3 * 9, 4), &[4, 3, 3, 3]);
    // A transposed view of a [2, 3, 6, 5] tensor.
    let xt = Tensor::from_vec(xv, (2, 3, 6, 5), &Device::Cpu)
        .unwrap()
        .transpose(2, 3)
        .unwrap();
    assert_eq!(xt.dims(), xd);
    let y = conv2d(&xt, w.as_tensor(), None, 1, 1, 1).unwrap();
    let want = xt
        .contiguous()
        .unwrap()
        .conv2d(w.as_tensor(), 1, 1, 1, 1)
        .unwrap();
    assert_close("strided", &values(&y), &f64s(&values(&want)), 1e-4);
    let g = y.sum_all().unwrap().backward().unwrap();
    assert!(g.get(&xt).is_none());
    assert!(g.get(w.as_tensor()).is_some());
}

#[test]
fn conv_rejects_mismatched_shapes() {
    let x = Tensor::zeros((1, 4, 5, 5), DType::F32, &Device::Cpu).unwrap();
    let w = Tensor::zeros((6, 3, 3, 3), DType::F32, &Device::Cpu).unwrap();
    let err = conv2d(&x, &w, None, 1, 1, 1).unwrap_err().to_string();
    assert!(err.contains("groups = 1"), "{err}");
    let w = Tensor::zeros((6, 2, 9, 9), DType::F32, &Device::Cpu).unwrap();
    let err = conv2d(&x, &w, None, 1, 1, 2).unwrap_err().to_string();
    assert!(err.contains("does not fit"), "{err}");
}

#[test]
fn conv_layer_has_candle_names_shapes_and_output() {
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let cfg = Conv2dConfig {
        padding: 1,
        stride: 2,
        groups: 1,
        ..Default::default()
    };
    let ours = conv2d_layer(3, 8, 3, cfg, vb.pp("a")).unwrap();
    conv2d_no_bias_layer(8, 4, 1, Conv2dConfig::default(), vb.pp("b")).unwrap();
    let mut names: Vec<(String, Vec<usize>)> = vm
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.dims().to_vec()))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            ("a.bias".to_string(), vec![8]),
            ("a.weight".to_string(), vec![8, 3, 3, 3]),
            ("b.weight".to_string(), vec![4, 8, 1, 1]),
        ]
    );
    let theirs = candle_nn::Conv2d::new(ours.weight().clone(), ours.bias().cloned(), cfg);
    let x = Tensor::from_vec(uniform(2 * 3 * 9 * 7, 5), (2, 3, 9, 7), &Device::Cpu).unwrap();
    let want = f64s(&values(&theirs.forward(&x).unwrap()));
    assert_close("layer", &values(&ours.forward(&x).unwrap()), &want, 1e-5);
}

// ---------------------------------------------------------------------------------------------
// Pooling

/// Distinct values (a permutation of a grid) so every window has one clear maximum and finite
/// differences never cross a tie.
fn distinct(len: usize, seed: u64) -> Vec<f32> {
    let step = 7919 + 2 * seed as usize;
    (0..len)
        .map(|i| ((i * step) % len) as f32 / len as f32 - 0.5)
        .collect()
}

fn check_pool(dims: [usize; 4], k: usize, s: usize, p: usize, kind: PoolKind, seed: u64) {
    let len = dims.iter().product();
    let xv = distinct(len, seed);
    let x = var(xv.clone(), &dims);
    let run = |t: &Tensor| match kind {
        PoolKind::Max => max_pool2d(t, k, s, p),
        PoolKind::Avg { count_include_pad } => avg_pool2d(t, k, s, p, count_include_pad),
    };
    let reference = |v: &[f64]| {
        let t = T4::new(dims, v.to_vec());
        match kind {
            PoolKind::Max => refr::max_pool(&t, k, s, p),
            PoolKind::Avg { count_include_pad } => refr::avg_pool(&t, k, s, p, count_include_pad),
        }
    };
    let what = format!("{dims:?} k{k} s{s} p{p} {kind:?}");
    let y = run(x.as_tensor()).unwrap();
    let x64 = f64s(&xv);
    let want = reference(&x64);
    assert_eq!(y.dims(), want.d, "{what}");
    assert_close(&what, &values(&y), &want.v, 1e-6);
    let r = uniform(y.elem_count(), seed + 1);
    let r64 = f64s(&r);
    let dx = grads_of(&y, &r, &[&x]).remove(0);
    let fd = fd_grad(|v| refr::dot(&reference(v).v, &r64), &x64, 1e-5);
    assert_close(&format!("{what} dx"), &dx, &fd, 1e-5);

    // The candle-ops fallback (used off the CPU) agrees in value and gradient.
    let geom = PoolGeom::new(&dims, k, s, p, "test").unwrap();
    let yf = pool_fallback(x.as_tensor(), &geom, kind).unwrap();
    assert_close(&format!("{what} fallback"), &values(&yf), &want.v, 1e-6);
    let dxf = grads_of(&yf, &r, &[&x]).remove(0);
    assert_close(&format!("{what} fallback dx"), &dxf, &f64s(&dx), 1e-6);
}

#[test]
fn pools_match_reference_and_finite_differences() {
    let shapes = [
        ([2, 3, 7, 5], 3, 2, 1), // ResNet stem pool, odd H ≠ W
        ([1, 2, 8, 8], 2, 2, 0), // the common 2×2/2
        ([2, 1, 7, 9], 2, 2, 0), // 2×2/2 flooring odd sizes
        ([1, 3, 6, 5], 3, 1, 1), // overlapping stride 1
        ([2, 2, 9, 6], 5, 2, 2), // kernel 5, padding 2
        ([1, 1, 4, 5], 3, 3, 0), // kernel == stride, not dividing
    ];
    for (i, (dims, k, s, p)) in shapes.into_iter().enumerate() {
        for kind in [
            PoolKind::Max,
            PoolKind::Avg {
                count_include_pad: true,
            },
            PoolKind::Avg {
                count_include_pad: false,
            },
        ] {
            check_pool(dims, k, s, p, kind, i as u64);
        }
    }
}

#[test]
fn pools_hand_computed() {
    let x = Tensor::from_vec(vec![1f32, 2., 3., 4.], (1, 1, 2, 2), &Device::Cpu).unwrap();
    // 3×3/1 pad 1 on a 2×2 image: every window covers all four pixels.
    let y = avg_pool2d(&x, 3, 1, 1, false).unwrap();
    assert_eq!(values(&y), [2.5; 4]);
    let y = avg_pool2d(&x, 3, 1, 1, true).unwrap();
    assert_close("include pad", &values(&y), &[10.0 / 9.0; 4], 1e-7);
    // Ties send the gradient to the first maximum of each window, as PyTorch does.
    let x = Var::from_vec(vec![0f32; 9], (1, 1, 3, 3), &Device::Cpu).unwrap();
    let y = max_pool2d(x.as_tensor(), 2, 1, 0).unwrap();
    let g = y.sum_all().unwrap().backward().unwrap();
    assert_eq!(
        values(g.get(x.as_tensor()).unwrap()),
        [1., 1., 0., 1., 1., 0., 0., 0., 0.]
    );
    // The 2×2/2 fast path keeps that rule: ties go to the top-left, a NaN wins its window.
    let x = Var::from_vec(
        vec![2f32, 2., 1., 5., 0., 3., f32::NAN, 3.],
        (1, 1, 2, 4),
        &Device::Cpu,
    )
    .unwrap();
    let y = max_pool2d(x.as_tensor(), 2, 2, 0).unwrap();
    let yv = values(&y);
    assert_eq!(yv[0], 3.0);
    assert!(yv[1].is_nan());
    let g = (y * Tensor::new(&[[[[10f32, 20.]]]], &Device::Cpu).unwrap())
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert_eq!(
        values(g.get(x.as_tensor()).unwrap()),
        [0., 0., 0., 0., 0., 10., 20., 0.]
    );
    // The general path (the ResNet stem's 3×3/2, padding 1) records where each window's first
    // maximum was: ties go to the first in row-major order, and a NaN wins over a larger value
    // before it.
    #[rustfmt::skip]
    let x = Var::from_vec(
        vec![1f32, 7., 0., 0.,
             7., 2., 0., 0.,
             0., 9., 5., f32::NAN,
             0., 0., 9., 9.],
        (1, 1, 4, 4),
        &Device::Cpu,
    )
    .unwrap();
    let y = max_pool2d(x.as_tensor(), 3, 2, 1).unwrap();
    let yv = values(&y);
    assert_eq!(yv[..3], [7., 7., 9.]);
    assert!(yv[3].is_nan());
    let g = (y * Tensor::new(&[[[[10f32, 20.], [30., 40.]]]], &Device::Cpu).unwrap())
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let mut want = [0f32; 16];
    (want[1], want[9], want[11]) = (30., 30., 40.);
    assert_eq!(values(g.get(x.as_tensor()).unwrap()), want);
}

#[test]
fn pools_reject_padding_over_half_the_kernel() {
    let x = Tensor::zeros((1, 1, 5, 5), DType::F32, &Device::Cpu).unwrap();
    let err = max_pool2d(&x, 3, 1, 2).unwrap_err().to_string();
    assert!(err.contains("at most half the kernel"), "{err}");
    assert!(avg_pool2d(&x, 2, 2, 2, true).is_err());
}

#[test]
fn vectorisable_exp_is_within_2e_7_of_the_exact_value() {
    let mut worst = 0f64;
    for i in 0..175_000 {
        let x = (-87.0 + i as f64 * 1e-3) as f32;
        let want = (x as f64).exp();
        let err = ((norm::exp(x) as f64 - want) / want).abs();
        worst = worst.max(err);
    }
    assert!(worst < 2e-7, "worst relative error {worst:e}");
    assert_eq!(norm::exp(0.0), 1.0);
    assert!(norm::exp(f32::NAN).is_nan());
    assert!(norm::exp(-1e4) >= 0.0 && norm::exp(-1e4) < 1e-37);
    assert!(norm::exp(1e4).is_finite());
}

// ---------------------------------------------------------------------------------------------
// Squeeze-excitation

/// The one-node squeeze-excitation matches the candle-ops composition (mean, matmuls, SiLU,
/// sigmoid, broadcast multiply) in value and in the gradients of the input and all four
/// parameters, on odd plane sizes and more than one image.
#[test]
fn squeeze_excitation_matches_candle_ops() {
    for (i, (n, c, h, w, sq)) in [(2, 6, 5, 3, 2), (3, 16, 7, 7, 4), (1, 4, 1, 1, 1)]
        .into_iter()
        .enumerate()
    {
        let seed = 700 + 10 * i as u64;
        let x = var(uniform(n * c * h * w, seed), &[n, c, h, w]);
        let w1 = var(uniform(sq * c, seed + 1), &[sq, c]);
        let b1 = var(uniform(sq, seed + 2), &[sq]);
        let w2 = var(uniform(c * sq, seed + 3), &[c, sq]);
        let b2 = var(uniform(c, seed + 4), &[c]);
        let t = |v: &Var| v.as_tensor().clone();
        let (xt, w1t, b1t, w2t, b2t) = (t(&x), t(&w1), t(&b1), t(&w2), t(&b2));
        let p = SqueezeWeights {
            w1: &w1t,
            b1: &b1t,
            w2: &w2t,
            b2: &b2t,
        };
        let y = squeeze_excitation(&xt, p).unwrap();
        let y0 = squeeze_excitation_fallback(&xt, p).unwrap();
        let what = format!("[{n}, {c}, {h}, {w}] squeeze {sq}");
        assert_close(&what, &values(&y), &f64s(&values(&y0)), 1e-6);
        let r = uniform(y.elem_count(), seed + 5);
        let vars = [&x, &w1, &b1, &w2, &b2];
        for (k, (g, g0)) in grads_of(&y, &r, &vars)
            .iter()
            .zip(grads_of(&y0, &r, &vars))
            .enumerate()
        {
            assert_close(&format!("{what} grad {k}"), g, &f64s(&g0), 1e-5);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Batch norm

/// The fused conv → batch norm → activation node runs the same kernels as the two unfused
/// ops: the same output and batch statistics, and the same gradients for the input, the conv
/// weight, gamma and beta, bit for bit; an input that needs no gradient gets none.
#[test]
fn conv_batch_norm_fused_equals_unfused() {
    // (n, c, h, w, o, k, stride, pad, groups, act)
    let cases = [
        (2, 16, 9, 7, 16, 3, 1, 1, 1, Act::Relu), // Winograd
        (3, 5, 8, 8, 6, 3, 2, 1, 1, Act::None),   // strided im2col
        (2, 8, 5, 6, 12, 1, 1, 0, 1, Act::Relu6), // 1×1
        (2, 6, 7, 7, 6, 3, 1, 1, 6, Act::Silu),   // depthwise
    ];
    for (i, (n, c, h, w, o, k, s, p, groups, act)) in cases.into_iter().enumerate() {
        let seed = 500 + 10 * i as u64;
        let x = var(uniform(n * c * h * w, seed), &[n, c, h, w]);
        let wt = var(
            uniform(o * (c / groups) * k * k, seed + 1),
            &[o, c / groups, k, k],
        );
        let gamma = var(uniform(o, seed + 2).iter().map(|v| 1.0 + v).collect(), &[o]);
        let beta = var(uniform(o, seed + 3), &[o]);
        let parts = ConvParts {
            weight: wt.as_tensor(),
            stride: s,
            padding: p,
            groups,
        };
        let (gt, bt) = (gamma.as_tensor(), beta.as_tensor());
        let (y, mean, var_b) =
            conv_batch_norm_act_train(x.as_tensor(), parts, gt, bt, 1e-5, act).unwrap();
        let z = conv2d(x.as_tensor(), wt.as_tensor(), None, s, p, groups).unwrap();
        let (y0, mean0, var0) = batch_norm_act_train(&z, gt, bt, 1e-5, act).unwrap();
        let what = format!("case {i} {act:?}");
        assert_eq!(values(&y), values(&y0), "{what} y");
        assert_eq!(values(&mean), values(&mean0), "{what} mean");
        assert_eq!(values(&var_b), values(&var0), "{what} var");
        let r = uniform(y.elem_count(), seed + 4);
        let vars = [&x, &wt, &gamma, &beta];
        assert_eq!(
            grads_of(&y, &r, &vars),
            grads_of(&y0, &r, &vars),
            "{what} grads"
        );

        // The network's input image: no gradient is computed for it.
        let image = x.as_tensor().detach();
        let (y, _, _) = conv_batch_norm_act_train(&image, parts, gt, bt, 1e-5, act).unwrap();
        let rt = Tensor::from_slice(&r, y.dims(), &Device::Cpu).unwrap();
        let g = (y * rt).unwrap().sum_all().unwrap().backward().unwrap();
        assert!(g.get(&image).is_none(), "{what}: the image got a gradient");
        assert!(
            g.get(wt.as_tensor()).is_some(),
            "{what}: no weight gradient"
        );
    }
}

/// `BatchNorm::forward_conv_act_t` in training mode moves the running statistics exactly as
/// the unfused conv then `forward_act_t` does, and in evaluation mode uses them.
#[test]
fn batch_norm_forward_conv_act_updates_running_stats_like_unfused() {
    let dev = Device::Cpu;
    let build = || {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
        let conv = conv2d_no_bias_layer(
            4,
            8,
            3,
            Conv2dConfig {
                padding: 1,
                ..Default::default()
            },
            vb.pp("c"),
        )
        .unwrap();
        let bn = batch_norm_layer(8, BatchNormConfig::default(), vb.pp("bn")).unwrap();
        (vm, conv, bn)
    };
    let (_vm, conv, bn) = build();
    let (_vm2, _, bn2) = build();
    let x = Tensor::from_vec(uniform(2 * 4 * 6 * 6, 9), (2, 4, 6, 6), &dev).unwrap();
    for _ in 0..2 {
        let y = bn.forward_conv_act_t(&conv, &x, true, Act::Relu).unwrap();
        let y2 = bn2
            .forward_act_t(&conv.forward(&x).unwrap(), true, Act::Relu)
            .unwrap();
        assert_eq!(values(&y), values(&y2));
    }
    assert_eq!(values(bn.running_mean()), values(bn2.running_mean()));
    assert_eq!(values(bn.running_var()), values(bn2.running_var()));
    assert_ne!(values(bn.running_mean()), vec![0.0; 8], "the stats moved");
    let ye = bn.forward_conv_act_t(&conv, &x, false, Act::Relu).unwrap();
    let ye2 = bn2
        .forward_act_t(&conv.forward(&x).unwrap(), false, Act::Relu)
        .unwrap();
    assert_eq!(values(&ye), values(&ye2));
}

/// `gain` scales gamma, so that ReLU6's upper clip is reached.
fn check_batch_norm(dims: [usize; 4], act: Act, offset: f32, gain: f32, seed: u64) {
    let eps = 1e-5;
    let c = dims[1];
    let xv: Vec<f32> = uniform(dims.iter().product(), seed)
        .into_iter()
        .map(|v| v + offset)
        .collect();
    let gv: Vec<f32> = uniform(c, seed + 1)
        .into_iter()
        .map(|v| (1.0 + v) * gain)
        .collect();
    let bv = uniform(c, seed + 2);
    let (x, gamma, beta) = (
        var(xv.clone(), &dims),
        var(gv.clone(), &[c]),
        var(bv.clone(), &[c]),
    );
    let (y, mean, varc) =
        batch_norm_act_train(x.as_tensor(), gamma.as_tensor(), beta.as_tensor(), eps, act).unwrap();
    if act == Act::None {
        let (y0, _, _) =
            batch_norm_train(x.as_tensor(), gamma.as_tensor(), beta.as_tensor(), eps).unwrap();
        assert_eq!(values(&y0), values(&y));
    }
    let (x64, g64, b64) = (f64s(&xv), f64s(&gv), f64s(&bv));
    let what = format!("{dims:?} {act:?} offset={offset} gain={gain}");
    let want = refr::batch_norm(&T4::new(dims, x64.clone()), &g64, &b64, eps, act);
    assert_close(&what, &values(&y), &want.v, 1e-4);
    let hw = dims[2] * dims[3];
    let m = (dims[0] * hw) as f64;
    let ch_vals =
        |ch: usize| (0..dims[0]).flat_map(move |n| (0..hw).map(move |i| (n * c + ch) * hw + i));
    let want_mean: Vec<f64> = (0..c)
        .map(|ch| ch_vals(ch).map(|i| x64[i]).sum::<f64>() / m)
        .collect();
    let want_var: Vec<f64> = (0..c)
        .map(|ch| {
            ch_vals(ch)
                .map(|i| (x64[i] - want_mean[ch]).powi(2))
                .sum::<f64>()
                / m
        })
        .collect();
    assert_close(&format!("{what} mean"), &values(&mean), &want_mean, 1e-6);
    assert_close(&format!("{what} var"), &values(&varc), &want_var, 1e-5);

    let r = uniform(y.elem_count(), seed + 3);
    let r64 = f64s(&r);
    let grads = grads_of(&y, &r, &[&x, &gamma, &beta]);
    let h = 1e-5;
    let fd_x = fd_grad(
        |v| {
            refr::dot(
                &refr::batch_norm(&T4::new(dims, v.to_vec()), &g64, &b64, eps, act).v,
                &r64,
            )
        },
        &x64,
        h,
    );
    let fd_g = fd_grad(
        |v| {
            refr::dot(
                &refr::batch_norm(&T4::new(dims, x64.clone()), v, &b64, eps, act).v,
                &r64,
            )
        },
        &g64,
        h,
    );
    let fd_b = fd_grad(
        |v| {
            refr::dot(
                &refr::batch_norm(&T4::new(dims, x64.clone()), &g64, v, eps, act).v,
                &r64,
            )
        },
        &b64,
        h,
    );
    assert_close(&format!("{what} dx"), &grads[0], &fd_x, 2e-3);
    assert_close(&format!("{what} dgamma"), &grads[1], &fd_g, 1e-3);
    assert_close(&format!("{what} dbeta"), &grads[2], &fd_b, 1e-4);

    // The candle-ops fallback agrees in value and gradients (less closely with a large offset:
    // its f32 mean is summed in f32).
    let ftol = if offset.abs() > 1.0 { 1e-2 } else { 1e-4 };
    let (yf, _, _) =
        batch_norm_fallback(x.as_tensor(), gamma.as_tensor(), beta.as_tensor(), eps, act).unwrap();
    assert_close(&format!("{what} fallback"), &values(&yf), &want.v, ftol);
    let gf = grads_of(&yf, &r, &[&x, &gamma, &beta]);
    for (a, b) in grads.iter().zip(&gf) {
        assert_close(
            &format!("{what} fallback grads"),
            b,
            &f64s(a),
            ftol.max(2e-3),
        );
    }
}

#[test]
fn batch_norm_matches_reference_and_finite_differences() {
    check_batch_norm([3, 5, 4, 7], Act::None, 0.0, 1.0, 1);
    check_batch_norm([1, 3, 5, 5], Act::Relu, 0.0, 1.0, 2);
    check_batch_norm([4, 2, 3, 1], Act::Relu, 0.2, 1.0, 3);
    // |mean| ≫ std: the two-pass variance stays accurate where E[x²] − E[x]² would not.
    check_batch_norm([2, 3, 6, 6], Act::None, 300.0, 1.0, 4);
    check_batch_norm([2, 4, 5, 6], Act::Silu, 0.0, 2.0, 5);
    check_batch_norm([3, 3, 4, 5], Act::Silu, 0.3, 1.0, 6);
}

#[test]
fn batch_norm_relu6_clips_at_both_ends_forward_and_backward() {
    // gamma ≈ 8–16 puts a good share of the outputs above 6 as well as below 0.
    check_batch_norm([2, 3, 5, 6], Act::Relu6, 0.0, 8.0, 7);
    let dims = [2, 3, 5, 6];
    let x = var(uniform(180, 8), &dims);
    let gamma = var(vec![8.0; 3], &[3]);
    let beta = var(vec![1.0; 3], &[3]);
    let (y, _, _) = batch_norm_act_train(
        x.as_tensor(),
        gamma.as_tensor(),
        beta.as_tensor(),
        1e-5,
        Act::Relu6,
    )
    .unwrap();
    let y = values(&y);
    assert!(y.contains(&6.0) && y.contains(&0.0));
    assert!(y.iter().any(|&v| v > 0.0 && v < 6.0));
}

#[test]
fn eval_batch_norm_fuses_every_activation() {
    // Eval mode: the running statistics' affine map then the activation, as candle ops compute
    // it (the fallback path every other device takes).
    let vm = VarMap::new();
    let bn = batch_norm_layer(
        3,
        BatchNormConfig::default(),
        VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu),
    )
    .unwrap();
    for step in 0..3 {
        let x = Tensor::from_vec(
            uniform(2 * 3 * 4 * 4, 50 + step),
            (2, 3, 4, 4),
            &Device::Cpu,
        )
        .unwrap()
        .affine(6.0, 1.0)
        .unwrap();
        bn.forward_t(&x, true).unwrap();
    }
    let xv: Vec<f32> = uniform(2 * 3 * 4 * 4, 60)
        .into_iter()
        .map(|v| v * 12.0 + 2.0)
        .collect();
    let x = var(xv, &[2, 3, 4, 4]);
    let scale = (bn.running_var() + 1e-5)
        .unwrap()
        .sqrt()
        .unwrap()
        .recip()
        .unwrap()
        .mul(bn.weight())
        .unwrap();
    let shift = (bn.bias() - bn.running_mean().mul(&scale).unwrap()).unwrap();
    let affine = x
        .as_tensor()
        .broadcast_mul(&scale.reshape((1, 3, 1, 1)).unwrap())
        .unwrap()
        .broadcast_add(&shift.reshape((1, 3, 1, 1)).unwrap())
        .unwrap();
    let r = uniform(96, 61);
    for act in [Act::None, Act::Relu, Act::Relu6, Act::Silu] {
        let ours = bn.forward_act_t(x.as_tensor(), false, act).unwrap();
        let theirs = act.apply(&affine).unwrap();
        let what = format!("eval {act:?}");
        assert_close(&what, &values(&ours), &f64s(&values(&theirs)), 1e-5);
        // The input gradient (a saliency map or a receptive-field probe backpropagates
        // through an eval-mode network).
        let g_ours = grads_of(&ours, &r, &[&x]);
        let g_theirs = grads_of(&theirs, &r, &[&x]);
        assert_close(&format!("{what} dx"), &g_ours[0], &f64s(&g_theirs[0]), 1e-5);
    }
}

#[test]
fn batch_norm_layer_matches_candle_in_train_and_eval() {
    let cfg = BatchNormConfig::default();
    let (vm_ours, vm_theirs) = (VarMap::new(), VarMap::new());
    let ours = batch_norm_layer(
        4,
        cfg,
        VarBuilder::from_varmap(&vm_ours, DType::F32, &Device::Cpu),
    )
    .unwrap();
    let theirs = candle_nn::batch_norm(
        4,
        cfg,
        VarBuilder::from_varmap(&vm_theirs, DType::F32, &Device::Cpu),
    )
    .unwrap();
    let mut names: Vec<String> = vm_ours.data().lock().unwrap().keys().cloned().collect();
    names.sort();
    assert_eq!(names, ["bias", "running_mean", "running_var", "weight"]);
    for step in 0..3 {
        let x = Tensor::from_vec(
            uniform(3 * 4 * 5 * 2, 20 + step),
            (3, 4, 5, 2),
            &Device::Cpu,
        )
        .unwrap()
        .affine(2.0, 1.0)
        .unwrap();
        let a = values(&ours.forward_t(&x, true).unwrap());
        let b = f64s(&values(&theirs.forward_t(&x, true).unwrap()));
        assert_close("train y", &a, &b, 1e-4);
    }
    let want_rm = f64s(&values(theirs.running_mean()));
    let want_rv = f64s(&values(theirs.running_var()));
    assert_close("running mean", &values(ours.running_mean()), &want_rm, 1e-5);
    assert_close("running var", &values(ours.running_var()), &want_rv, 1e-5);
    let x = Tensor::from_vec(uniform(2 * 4 * 3 * 3, 30), (2, 4, 3, 3), &Device::Cpu).unwrap();
    let a = values(&ours.forward_t(&x, false).unwrap());
    let b = f64s(&values(&theirs.forward_t(&x, false).unwrap()));
    assert_close("eval y", &a, &b, 1e-5);
}

#[test]
fn add_relu_matches_candle_forward_and_gradients() {
    let dims = [3, 4, 5, 7];
    let a = var(uniform(420, 40), &dims);
    let b = var(uniform(420, 41), &dims);
    let r = uniform(420, 42);
    let ours = add_relu(a.as_tensor(), b.as_tensor()).unwrap();
    let theirs = (a.as_tensor() + b.as_tensor()).unwrap().relu().unwrap();
    assert_eq!(values(&ours), values(&theirs));
    let g_ours = grads_of(&ours, &r, &[&a, &b]);
    let g_theirs = grads_of(&theirs, &r, &[&a, &b]);
    assert_eq!(g_ours, g_theirs);
    // Where a + b > 0 the gradient passes to both inputs, elsewhere to neither.
    let (av, bv) = (values(a.as_tensor()), values(b.as_tensor()));
    for i in 0..420 {
        let want = if av[i] + bv[i] > 0.0 { r[i] } else { 0.0 };
        assert_eq!(g_ours[0][i], want);
        assert_eq!(g_ours[1][i], want);
    }
    assert!(add_relu(
        a.as_tensor(),
        &Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap()
    )
    .is_err());
}
