//! The detector's loss: CenterNet's penalty-reduced focal loss on the class heatmap, L1 on the
//! size and offset read at each object's centre, plus α · the aspect BCE (paper, Sec. 3, applied
//! to the detector as the issue describes):
//!
//! `total = focal + size_weight · L1(size) + offset_weight · L1(offset) + aspect_weight · BCE`.

use candle_core::{DType, Result, Tensor};

use crate::detect::centernet::Outputs;
use crate::detect::heatmap::TargetTensors;
use crate::train::loss::soft_bce_with_logits;

/// The weights of the parts; the defaults are CenterNet's (0.1 on size, 1 on offset) and the
/// paper's α = 4 on the aspects.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossWeights {
    pub size: f64,
    pub offset: f64,
    pub aspect: f64,
}

impl Default for LossWeights {
    fn default() -> Self {
        LossWeights {
            size: 0.1,
            offset: 1.0,
            aspect: 4.0,
        }
    }
}

/// The teacher's answers the aspect head trains on, in the layout of the model's aspect mode.
#[derive(Clone, Debug)]
pub enum AspectTargets {
    /// Per image: `p_yes` and `mask` `[N, Q]`.
    Image { p_yes: Tensor, mask: Tensor },
    /// Per object slot (slot order of [`crate::detect::heatmap::Targets::slot_boxes`]):
    /// `p_yes` and `mask` `[N, K, Q]`; empty slots are masked out whatever `mask` says.
    Object { p_yes: Tensor, mask: Tensor },
}

/// The loss and its parts. `total` is the tensor to differentiate; the parts are unweighted
/// scalars for logging.
#[derive(Clone, Debug)]
pub struct LossParts {
    pub total: Tensor,
    pub heatmap: f32,
    pub size: f32,
    pub offset: f32,
    pub aspects: Option<f32>,
}

/// `log σ(x)` in the stable form `−(max(−x, 0) + log(1 + e^−|x|))`.
fn log_sigmoid(x: &Tensor) -> Result<Tensor> {
    let softplus_neg_abs = (x.abs()?.neg()?.exp()? + 1.0)?.log()?;
    (x.neg()?.relu()? + softplus_neg_abs)?.neg()
}

/// CenterNet's penalty-reduced focal loss (α = 2, β = 4) of heatmap `logits` against the
/// Gaussian targets `gt` (both `[N, C, h, w]`): at centres (gt = 1) `−(1 − p)² log p`,
/// elsewhere `−(1 − gt)⁴ p² log(1 − p)`, summed and divided by max(1, number of centres).
/// Computed from log-sigmoids so that confident logits neither overflow nor give log 0.
pub fn focal_loss(logits: &Tensor, gt: &Tensor) -> Result<Tensor> {
    let log_p = log_sigmoid(logits)?;
    let log_not_p = log_sigmoid(&logits.neg()?)?;
    let p = log_p.exp()?;
    let not_p = log_not_p.exp()?;
    let pos = gt.ge(1.0)?.to_dtype(logits.dtype())?;
    let neg = (1.0 - &pos)?;
    let num_pos = pos.sum_all()?.to_scalar::<f32>()?.max(1.0);
    let pos_loss = (log_p * not_p.sqr()?)?.mul(&pos)?;
    let penalty = (1.0 - gt)?.sqr()?.sqr()?;
    let neg_loss = ((log_not_p * p.sqr()?)? * penalty)?.mul(&neg)?;
    (pos_loss + neg_loss)?.sum_all()?.neg()? / num_pos as f64
}

/// Values of `map` `[N, D, h, w]` at the flat cells `indices` `[N, K]`: `[N, K, D]`. The
/// backward scatters into exactly those cells.
pub fn gather_at(map: &Tensor, indices: &Tensor) -> Result<Tensor> {
    let (n, d, h, w) = map.dims4()?;
    let k = indices.dim(1)?;
    let idx = indices
        .to_dtype(DType::U32)?
        .unsqueeze(1)?
        .broadcast_as((n, d, k))?
        .contiguous()?;
    map.reshape((n, d, h * w))?.gather(&idx, 2)?.transpose(1, 2)
}

/// Mean absolute error of `pred` `[N, 2, h, w]` read at the slots against `target` `[N, K, 2]`,
/// over the filled slots (`mask` `[N, K]`) and both coordinates, as CenterNet's `RegL1Loss`.
pub fn masked_l1(
    pred: &Tensor,
    indices: &Tensor,
    mask: &Tensor,
    target: &Tensor,
) -> Result<Tensor> {
    let got = gather_at(pred, indices)?;
    let d = got.dim(2)?;
    let m = mask.unsqueeze(2)?.broadcast_as(got.shape())?;
    let count = (mask.sum_all()?.to_scalar::<f32>()? * d as f32).max(1.0);
    (got - target)?.abs()?.mul(&m)?.sum_all()? / count as f64
}

/// The whole loss of one batch.
pub fn centernet_loss(
    out: &Outputs,
    targets: &TargetTensors,
    aspects: Option<&AspectTargets>,
    weights: &LossWeights,
) -> Result<LossParts> {
    let heatmap = focal_loss(&out.heatmap, &targets.heatmap)?;
    let size = masked_l1(&out.size, &targets.indices, &targets.mask, &targets.size)?;
    let offset = masked_l1(
        &out.offset,
        &targets.indices,
        &targets.mask,
        &targets.offset,
    )?;
    let mut total = ((&heatmap + (&size * weights.size)?)? + (&offset * weights.offset)?)?;
    let aspect = match (aspects, &out.aspects) {
        (None, _) => None,
        (Some(_), None) => {
            candle_core::bail!("aspect targets given but the model has no aspect head")
        }
        (Some(AspectTargets::Image { p_yes, mask }), Some(logits)) => {
            if logits.rank() != 2 {
                candle_core::bail!("image aspect targets for an object-mode aspect head");
            }
            Some(soft_bce_with_logits(logits, p_yes, mask)?)
        }
        (Some(AspectTargets::Object { p_yes, mask }), Some(logits)) => {
            if logits.rank() != 4 {
                candle_core::bail!("object aspect targets for an image-mode aspect head");
            }
            let at_objects = gather_at(logits, &targets.indices)?;
            let mask = mask.broadcast_mul(&targets.mask.unsqueeze(2)?)?;
            Some(soft_bce_with_logits(&at_objects, p_yes, &mask)?)
        }
    };
    if let Some(a) = &aspect {
        total = (total + (a * weights.aspect)?)?;
    }
    let scalar = |t: &Tensor| t.to_scalar::<f32>();
    Ok(LossParts {
        heatmap: scalar(&heatmap)?,
        size: scalar(&size)?,
        offset: scalar(&offset)?,
        aspects: aspect.as_ref().map(scalar).transpose()?,
        total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::detection::BoxAnn;
    use crate::detect::centernet::{AspectMode, CenterNet};
    use crate::detect::heatmap::{decode, iou, Targets};
    use crate::student::{Arch, Pass};
    use crate::train::optim::{OptimConfig, OptimKind, Optimizer};
    use candle_core::{Device, Var};

    fn scalar(t: Tensor) -> f32 {
        t.to_scalar::<f32>().unwrap()
    }

    #[test]
    fn focal_loss_by_hand() {
        // Three cells: a centre (gt 1) at p = 1/2, a Gaussian cell (gt 1/2) at p = 3/4, a
        // background cell (gt 0) at p = 1/4; one centre, so the sum is divided by 1.
        //   centre:      −(1 − 1/2)² ln(1/2)           = 0.25 · ln 2
        //   gt = 1/2:    −(1/2)⁴ · (3/4)² · ln(1/4)     = 0.0625 · 0.5625 · 2 ln 2
        //   background:  −1 · (1/4)² · ln(3/4)          = −0.0625 · ln 0.75
        let logits = Tensor::new(&[0.0f32, 3f32.ln(), -(3f32.ln())], &Device::Cpu)
            .unwrap()
            .reshape((1, 1, 1, 3))
            .unwrap();
        let gt = Tensor::new(&[1.0f32, 0.5, 0.0], &Device::Cpu)
            .unwrap()
            .reshape((1, 1, 1, 3))
            .unwrap();
        let ln2 = 2f32.ln();
        let want = 0.25 * ln2 + 0.0625 * 0.5625 * 2.0 * ln2 - 0.0625 * 0.75f32.ln();
        let got = scalar(focal_loss(&logits, &gt).unwrap());
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        // two centres halve it... of a doubled sum: the normaliser counts centres
        let two = Tensor::cat(&[&logits, &logits], 3).unwrap();
        let gt2 = Tensor::cat(&[&gt, &gt], 3).unwrap();
        assert!((scalar(focal_loss(&two, &gt2).unwrap()) - want).abs() < 1e-6);
        // no centre at all: divided by 1, not 0
        let bg = Tensor::zeros((1, 1, 1, 3), DType::F32, &Device::Cpu).unwrap();
        assert!(scalar(focal_loss(&logits, &bg).unwrap()).is_finite());
        // huge logits stay finite (a naive log(sigmoid) would give −inf)
        let big = Tensor::new(&[-200.0f32, 200.0, 200.0], &Device::Cpu)
            .unwrap()
            .reshape((1, 1, 1, 3))
            .unwrap();
        let l = scalar(focal_loss(&big, &gt).unwrap());
        assert!(l.is_finite() && l > 100.0, "{l}");
    }

    #[test]
    fn gather_gradient_lands_only_on_indexed_cells() {
        let pred = Var::from_tensor(
            &Tensor::arange(0f32, 2.0 * 16.0, &Device::Cpu)
                .unwrap()
                .reshape((1, 2, 4, 4))
                .unwrap(),
        )
        .unwrap();
        // slots: cells 5 and 10 filled, the third slot (index 3) empty
        let indices = Tensor::new(&[[5u32, 10, 3]], &Device::Cpu).unwrap();
        let mask = Tensor::new(&[[1f32, 1.0, 0.0]], &Device::Cpu).unwrap();
        let target = Tensor::zeros((1, 3, 2), DType::F32, &Device::Cpu).unwrap();
        let l = masked_l1(pred.as_tensor(), &indices, &mask, &target).unwrap();
        // |5| + |21| + |10| + |26| over 4 entries
        assert!((scalar(l.clone()) - (5.0 + 21.0 + 10.0 + 26.0) / 4.0).abs() < 1e-5);
        let g = l.backward().unwrap();
        let g: Vec<f32> = g
            .get(pred.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        for (i, v) in g.iter().enumerate() {
            let cell = i % 16;
            if cell == 5 || cell == 10 {
                assert_eq!(*v, 0.25, "cell {i}");
            } else {
                assert_eq!(*v, 0.0, "cell {i}");
            }
        }
    }

    /// Images 32×32 with one or two white squares on black: class 0 a 6-px square, class 1 a
    /// 12-px square (class by size), at deterministic pseudo-random places.
    fn squares(n: usize) -> (Tensor, Vec<Vec<BoxAnn>>) {
        let side = 32usize;
        let mut pixels = vec![0f32; n * side * side];
        let mut boxes = Vec::new();
        let mut seed = 12345u64;
        let mut next = |m: usize| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) as usize) % m
        };
        for i in 0..n {
            let mut img_boxes: Vec<BoxAnn> = Vec::new();
            let count = 1 + i % 2;
            while img_boxes.len() < count {
                let category = next(2);
                let s = if category == 0 { 6 } else { 12 };
                let (x, y) = (next(side - s + 1), next(side - s + 1));
                let b = [x as f32, y as f32, s as f32, s as f32];
                // a 2-px gap, so that two squares never merge into one white blob
                let grown = [b[0] - 2.0, b[1] - 2.0, b[2] + 4.0, b[3] + 4.0];
                if img_boxes.iter().any(|o| iou(&o.bbox, &grown) > 0.0) {
                    continue;
                }
                for yy in y..y + s {
                    for xx in x..x + s {
                        pixels[i * side * side + yy * side + xx] = 1.0;
                    }
                }
                img_boxes.push(BoxAnn {
                    bbox: b,
                    category,
                    area: (s * s) as f32,
                    iscrowd: false,
                });
            }
            boxes.push(img_boxes);
        }
        let xs = Tensor::from_vec(pixels, (n, 1, side, side), &Device::Cpu).unwrap();
        (xs, boxes)
    }

    #[test]
    fn centernet_cnn_learns_squares() {
        let (varmap, net) =
            crate::detect::centernet::tests::build(Arch::Cnn, AspectMode::Image, 32, 2, 0);
        let (xs, boxes) = squares(8);
        let targets = Targets::build(&boxes, 2, 32, 8)
            .to_tensors(&Device::Cpu)
            .unwrap();
        let params = crate::detect::centernet::tests::trainable(&varmap);
        let cfg = OptimConfig {
            kind: OptimKind::Adamw,
            lr: 2e-3,
            weight_decay: 0.0,
            ..OptimConfig::default()
        };
        let mut opt = Optimizer::new(cfg, params);
        let weights = LossWeights::default();
        let mut first = None;
        let mut last = 0.0;
        for step in 0..200u64 {
            let out = net.forward(&xs, Pass::Train { seed: step }).unwrap();
            let parts = centernet_loss(&out, &targets, None, &weights).unwrap();
            let total = scalar(parts.total.clone());
            first.get_or_insert(total);
            last = total;
            let grads = parts.total.backward().unwrap();
            opt.step(&grads).unwrap();
        }
        let first = first.unwrap();
        assert!(last < first / 10.0, "loss {first} → {last}");
        let out = net.forward(&xs, Pass::Eval).unwrap();
        let dets = decode(&out.heatmap, &out.size, &out.offset, 100).unwrap();
        for (gt, found) in boxes.iter().zip(&dets) {
            for g in gt {
                let best = found
                    .iter()
                    .filter(|d| d.category == g.category)
                    .take(3)
                    .map(|d| iou(&d.bbox, &g.bbox))
                    .fold(0.0f32, f32::max);
                assert!(best > 0.5, "{g:?}: best IoU {best} in {:?}", &found[..4]);
            }
            // the top detections are the objects
            assert!(
                found[..gt.len()].iter().all(|d| d.score > 0.3),
                "{:?}",
                &found[..3]
            );
        }
    }

    #[test]
    fn both_aspect_modes_give_finite_loss_and_gradients() {
        let (xs, boxes) = squares(3);
        let t = Targets::build(&boxes, 2, 32, 4);
        let targets = t.to_tensors(&Device::Cpu).unwrap();
        let q = 3;
        let dev = Device::Cpu;
        for mode in [AspectMode::Image, AspectMode::Object] {
            let (varmap, net) =
                crate::detect::centernet::tests::build(Arch::Resnet18, mode, 32, 2, q);
            let out = net.forward(&xs, Pass::Train { seed: 1 }).unwrap();
            let aspects = match mode {
                AspectMode::Image => AspectTargets::Image {
                    p_yes: Tensor::full(0.8f32, (3, q), &dev).unwrap(),
                    mask: Tensor::ones((3, q), DType::F32, &dev).unwrap(),
                },
                AspectMode::Object => AspectTargets::Object {
                    p_yes: Tensor::full(0.3f32, (3, t.k, q), &dev).unwrap(),
                    mask: Tensor::ones((3, t.k, q), DType::F32, &dev).unwrap(),
                },
            };
            let parts =
                centernet_loss(&out, &targets, Some(&aspects), &LossWeights::default()).unwrap();
            let a = parts.aspects.unwrap();
            assert!(a.is_finite() && a > 0.0, "{mode}: {a}");
            let total = scalar(parts.total.clone());
            let want = parts.heatmap + 0.1 * parts.size + parts.offset + 4.0 * a;
            assert!(
                (total - want).abs() < 1e-4 * want.abs(),
                "{total} vs {want}"
            );
            let grads = parts.total.backward().unwrap();
            let data = varmap.data().lock().unwrap();
            let aspect_weight = match mode {
                AspectMode::Image => "aspect.weight",
                AspectMode::Object => "aspect.2.weight",
            };
            let g: Vec<f32> = grads
                .get(data[aspect_weight].as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            assert!(g.iter().all(|v| v.is_finite()) && g.iter().any(|&v| v != 0.0));
            let g: Vec<f32> = grads
                .get(data["backbone.conv1.weight"].as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            assert!(g.iter().all(|v| v.is_finite()) && g.iter().any(|&v| v != 0.0));
            // the wrong layout for the mode is an error, not a silent broadcast
            let wrong = match mode {
                AspectMode::Image => AspectTargets::Object {
                    p_yes: Tensor::zeros((3, t.k, q), DType::F32, &dev).unwrap(),
                    mask: Tensor::ones((3, t.k, q), DType::F32, &dev).unwrap(),
                },
                AspectMode::Object => AspectTargets::Image {
                    p_yes: Tensor::zeros((3, q), DType::F32, &dev).unwrap(),
                    mask: Tensor::ones((3, q), DType::F32, &dev).unwrap(),
                },
            };
            assert!(centernet_loss(&out, &targets, Some(&wrong), &LossWeights::default()).is_err());
        }
        let _ = CenterNet::STRIDE;
    }
}
