//! Losses of the method, in numerically stable forms, each tested against hand-computed values.
//!
//! Total MaKD loss (paper, Sec. 3): `CE(class_logits, label) + α · BCE_with_logits(aspect_logits, P(yes))`
//! with α = 4.0 and mean reduction. Classic KD (Hinton) and DKD are here too so variants can combine them.

use candle_core::{DType, Result, Tensor, D};
use candle_nn::ops::log_softmax;

/// Mean cross-entropy of `logits` [B, C] against integer `labels` [B] (u32), with optional label
/// smoothing ε: the target is (1-ε)·onehot + ε/C, as in PyTorch.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor, label_smoothing: f64) -> Result<Tensor> {
    let (b, c) = logits.dims2()?;
    let logp = log_softmax(logits, D::Minus1)?;
    let picked = logp
        .gather(&labels.to_dtype(DType::U32)?.unsqueeze(1)?, 1)?
        .squeeze(1)?;
    let nll = picked.neg()?.mean_all()?;
    if label_smoothing == 0.0 {
        return Ok(nll);
    }
    // Uniform part: -mean over batch of (1/C)·Σ_c log p_c.
    let uniform = (logp.sum_all()?.neg()? / (b * c) as f64)?;
    (nll * (1.0 - label_smoothing))? + (uniform * label_smoothing)?
}

/// Elementwise BCE-with-logits in the stable form `max(x,0) − x·t + log(1 + e^−|x|)`.
/// (candle-nn's version takes sigmoid then log and overflows for large logits.)
pub fn bce_with_logits_elementwise(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let softplus_neg_abs = (logits.abs()?.neg()?.exp()? + 1.0)?.log()?;
    (logits.relu()? - (logits * targets)?)? + softplus_neg_abs
}

/// Mean soft-target BCE-with-logits over the entries where `mask` is 1 (missing teacher answers
/// have mask 0 and contribute nothing). With every entry masked out the loss is 0.
pub fn soft_bce_with_logits(logits: &Tensor, targets: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let l = bce_with_logits_elementwise(logits, targets)?;
    let total = (l * mask)?.sum_all()?;
    let count = mask.sum_all()?.to_scalar::<f32>()?;
    if count == 0.0 {
        return total.zeros_like();
    }
    total / count as f64
}

/// Hinton KD: `T² · KL(softmax(teacher/T) ‖ softmax(student/T))`, averaged over the batch.
pub fn kd_kl(student_logits: &Tensor, teacher_logits: &Tensor, temperature: f64) -> Result<Tensor> {
    let b = student_logits.dim(0)? as f64;
    let ls = log_softmax(&(student_logits / temperature)?, D::Minus1)?;
    let lt = log_softmax(&(teacher_logits / temperature)?, D::Minus1)?;
    let pt = lt.exp()?;
    let kl = (pt * (lt - ls)?)?.sum_all()?;
    kl * (temperature * temperature / b)
}

/// Decoupled KD (Zhao et al., CVPR 2022): `α·TCKD + β·NCKD` at temperature T, batch mean, × T².
/// TCKD is the binary KL over (target, non-target) mass; NCKD the KL among non-target classes.
pub fn dkd(
    student_logits: &Tensor,
    teacher_logits: &Tensor,
    labels: &Tensor,
    alpha: f64,
    beta: f64,
    temperature: f64,
) -> Result<Tensor> {
    let (b, c) = student_logits.dims2()?;
    let dev = student_logits.device();
    let onehot = labels
        .to_dtype(DType::U32)?
        .unsqueeze(1)?
        .broadcast_eq(&Tensor::arange(0u32, c as u32, dev)?.unsqueeze(0)?)?
        .to_dtype(student_logits.dtype())?;
    let other = (1.0 - &onehot)?;
    let ps = candle_nn::ops::softmax(&(student_logits / temperature)?, D::Minus1)?;
    let pt = candle_nn::ops::softmax(&(teacher_logits / temperature)?, D::Minus1)?;
    let eps = 1e-12;
    // Binary (target vs rest) distributions.
    let bs_t = (&ps * &onehot)?.sum(1)?;
    let bt_t = (&pt * &onehot)?.sum(1)?;
    let bs_o = (1.0 - &bs_t)?;
    let bt_o = (1.0 - &bt_t)?;
    let kl2 =
        |p: &Tensor, q: &Tensor| -> Result<Tensor> { p * ((p + eps)?.log()? - (q + eps)?.log()?)? };
    let tckd = (kl2(&bt_t, &bs_t)? + kl2(&bt_o, &bs_o)?)?.sum_all()?;
    // Non-target distributions: mask the target logit with a large negative value before softmax.
    let big = (&onehot * 1000.0)?;
    let ls_nt = log_softmax(&((student_logits / temperature)? - &big)?, D::Minus1)?;
    let lt_nt = log_softmax(&((teacher_logits / temperature)? - &big)?, D::Minus1)?;
    let nckd = (lt_nt.exp()? * (lt_nt - ls_nt)?)?
        .broadcast_mul(&other)?
        .sum_all()?;
    let t2 = temperature * temperature / b as f64;
    (tckd * (alpha * t2))? + (nckd * (beta * t2))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn t(v: &[f32], shape: (usize, usize)) -> Tensor {
        Tensor::from_slice(v, shape, &Device::Cpu).unwrap()
    }
    fn scalar(x: Tensor) -> f32 {
        x.to_scalar::<f32>().unwrap()
    }

    #[test]
    fn cross_entropy_by_hand() {
        // Row 0: logits [0, ln 3] -> p = [1/4, 3/4]; label 1 -> -ln 0.75.
        // Row 1: logits [0, 0] -> p = [1/2, 1/2]; label 0 -> ln 2.
        let logits = t(&[0.0, 3f32.ln(), 0.0, 0.0], (2, 2));
        let labels = Tensor::new(&[1u32, 0], &Device::Cpu).unwrap();
        let want = (-(0.75f32.ln()) + 2f32.ln()) / 2.0;
        assert!((scalar(cross_entropy(&logits, &labels, 0.0).unwrap()) - want).abs() < 1e-6);
        // Smoothing 0.1 with C = 2: target (0.05, 0.95) for row 0 and (0.95, 0.05) for row 1.
        let r0 = -(0.05 * 0.25f32.ln() + 0.95 * 0.75f32.ln());
        let r1 = -(0.95 * 0.5f32.ln() + 0.05 * 0.5f32.ln());
        let got = scalar(cross_entropy(&logits, &labels, 0.1).unwrap());
        assert!((got - (r0 + r1) / 2.0).abs() < 1e-6, "{got}");
    }

    #[test]
    fn bce_matches_naive_form_and_survives_large_logits() {
        let logits = t(&[0.0, 2.0, -3.0, 100.0, -100.0, 0.5], (2, 3));
        let targets = t(&[0.5, 1.0, 0.25, 0.7363, 0.0, 0.0], (2, 3));
        let got = bce_with_logits_elementwise(&logits, &targets)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let naive = |x: f64, y: f64| {
            let s = 1.0 / (1.0 + (-x).exp());
            -(y * s.ln() + (1.0 - y) * (1.0 - s).ln())
        };
        // Large logits: the naive form is inf; by hand: x=100,t=.7363 -> 100 - 73.63 = 26.37; x=-100,t=0 -> ~0.
        let want = [
            naive(0.0, 0.5),
            naive(2.0, 1.0),
            naive(-3.0, 0.25),
            26.37,
            0.0,
            naive(0.5, 0.0),
        ];
        for (g, w) in got.iter().zip(want) {
            assert!((*g as f64 - w).abs() < 1e-4, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn masked_bce_averages_only_kept_entries() {
        let logits = t(&[0.0, 0.0, 5.0, -5.0], (2, 2));
        let targets = t(&[1.0, 0.0, 0.3, 0.9], (2, 2));
        let mask = t(&[1.0, 1.0, 0.0, 0.0], (2, 2));
        let got = scalar(soft_bce_with_logits(&logits, &targets, &mask).unwrap());
        assert!((got - 2f32.ln()).abs() < 1e-6, "{got}");
        let none = t(&[0.0; 4], (2, 2));
        assert_eq!(
            scalar(soft_bce_with_logits(&logits, &targets, &none).unwrap()),
            0.0
        );
    }

    #[test]
    fn kd_by_hand() {
        // T = 2: student logits [0, 0] -> q = [.5, .5]; teacher [0, 2 ln 3] -> p = [1/4, 3/4].
        // KL = .25 ln(.25/.5) + .75 ln(.75/.5); × T² = 4; batch of 1.
        let s = t(&[0.0, 0.0], (1, 2));
        let te = t(&[0.0, 2.0 * 3f32.ln()], (1, 2));
        let want = 4.0 * (0.25 * 0.5f32.ln() + 0.75 * 1.5f32.ln());
        assert!((scalar(kd_kl(&s, &te, 2.0).unwrap()) - want).abs() < 1e-6);
        assert!(scalar(kd_kl(&te, &te, 4.0).unwrap()).abs() < 1e-6);
    }

    #[test]
    fn dkd_by_hand() {
        // T = 1, one sample, 3 classes, label 0.
        // Student logits 0 -> q = (1/3, 1/3, 1/3). Teacher logits (ln 2, 0, 0) -> p = (1/2, 1/4, 1/4).
        // TCKD: binary p = (1/2, 1/2), q = (1/3, 2/3): .5 ln(.5/(1/3)) + .5 ln(.5/(2/3)).
        // NCKD: among non-targets both are (1/2, 1/2): 0.
        let s = t(&[0.0, 0.0, 0.0], (1, 3));
        let te = t(&[2f32.ln(), 0.0, 0.0], (1, 3));
        let y = Tensor::new(&[0u32], &Device::Cpu).unwrap();
        let tckd = 0.5 * 1.5f32.ln() + 0.5 * 0.75f32.ln();
        let got = scalar(dkd(&s, &te, &y, 1.0, 8.0, 1.0).unwrap());
        assert!((got - tckd).abs() < 1e-5, "{got} vs {tckd}");
        // Teacher (0, ln 3, 0): non-target p = (3/4, 1/4), q = (1/2, 1/2):
        // NCKD = .75 ln 1.5 + .25 ln .5. Binary p = (1/5, 4/5), q = (1/3, 2/3).
        let te = t(&[0.0, 3f32.ln(), 0.0], (1, 3));
        let nckd = 0.75 * 1.5f32.ln() + 0.25 * 0.5f32.ln();
        let tckd = 0.2 * (0.2f32 * 3.0).ln() + 0.8 * (0.8f32 * 1.5).ln();
        let got = scalar(dkd(&s, &te, &y, 1.0, 8.0, 1.0).unwrap());
        assert!((got - (tckd + 8.0 * nckd)).abs() < 1e-5, "{got}");
    }
}
