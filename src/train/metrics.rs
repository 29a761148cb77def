//! Evaluation metrics: top-k accuracy on the class logits and agreement of the aspect logits with
//! the teacher's P(yes).

use serde::{Deserialize, Serialize};

/// Number of rows of `logits` ([n, c] row-major) whose label is among the `k` largest entries.
/// A row is correct only if fewer than `k` other classes score at least as high as its label: a
/// tie counts against the label, so constant logits score chance or worse, never 100 % (unless
/// k = C). A NaN anywhere in the row makes it a miss (NaN compares false both ways, which would
/// otherwise let a broken model pass every row).
pub fn topk_correct(logits: &[f32], c: usize, labels: &[u32], k: usize) -> usize {
    labels
        .iter()
        .enumerate()
        .filter(|(i, &y)| {
            let row = &logits[i * c..(i + 1) * c];
            let y = y as usize;
            let v = row[y];
            if row.iter().any(|x| x.is_nan()) {
                return false;
            }
            let beaten_by = row
                .iter()
                .enumerate()
                .filter(|&(j, &x)| j != y && x >= v)
                .count();
            beaten_by < k
        })
        .count()
}

/// Area under the ROC curve of `scores` for the binary `positive` labels (Mann–Whitney U with
/// average ranks for ties). `None` when one class is absent.
pub fn auc(scores: &[f32], positive: &[bool]) -> Option<f64> {
    let n_pos = positive.iter().filter(|&&p| p).count();
    let n_neg = positive.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum_pos = 0.0;
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            if positive[k] {
                rank_sum_pos += avg_rank;
            }
        }
        i = j + 1;
    }
    let u = rank_sum_pos - (n_pos * (n_pos + 1)) as f64 / 2.0;
    Some(u / (n_pos * n_neg) as f64)
}

/// Aspect metrics of a student against a teacher over a set of images.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AspectMetrics {
    /// Mean soft BCE of the aspect logits against P(yes) over scored pairs.
    pub bce: f64,
    /// Mean over questions of the AUC of the student's aspect logit for teacher P(yes) > 0.5
    /// (questions where the teacher says only yes or only no are skipped).
    pub auc: Option<f64>,
    /// Fraction of scored pairs where student and teacher agree on yes (> 0.5) vs no.
    pub agreement: f64,
    /// Per-question AUC, in question order.
    pub per_question_auc: Vec<Option<f64>>,
    pub pairs: usize,
}

/// Collects aspect logits and teacher targets batch by batch.
pub struct AspectAccumulator {
    q: usize,
    logits: Vec<Vec<f32>>,
    targets: Vec<Vec<f32>>,
    bce_sum: f64,
    agree: usize,
    pairs: usize,
}

impl AspectAccumulator {
    pub fn new(q: usize) -> Self {
        AspectAccumulator {
            q,
            logits: vec![vec![]; q],
            targets: vec![vec![]; q],
            bce_sum: 0.0,
            agree: 0,
            pairs: 0,
        }
    }

    /// Add one image: its `q` aspect logits, teacher P(yes) and a mask (false = no teacher answer).
    pub fn push(&mut self, logits: &[f32], p_yes: &[f32], mask: &[bool]) {
        for j in 0..self.q {
            if !mask[j] {
                continue;
            }
            let (x, t) = (logits[j] as f64, p_yes[j] as f64);
            self.bce_sum += x.max(0.0) - x * t + (-x.abs()).exp().ln_1p();
            self.agree += usize::from((x > 0.0) == (t > 0.5));
            self.pairs += 1;
            self.logits[j].push(logits[j]);
            self.targets[j].push(p_yes[j]);
        }
    }

    pub fn finish(&self) -> AspectMetrics {
        let per_question_auc: Vec<Option<f64>> = (0..self.q)
            .map(|j| {
                let pos: Vec<bool> = self.targets[j].iter().map(|&t| t > 0.5).collect();
                auc(&self.logits[j], &pos)
            })
            .collect();
        let defined: Vec<f64> = per_question_auc.iter().flatten().copied().collect();
        let denom = self.pairs.max(1) as f64;
        AspectMetrics {
            bce: self.bce_sum / denom,
            auc: (!defined.is_empty()).then(|| defined.iter().sum::<f64>() / defined.len() as f64),
            agreement: self.agree as f64 / denom,
            per_question_auc,
            pairs: self.pairs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topk_by_hand() {
        let logits = [
            0.1, 0.5, 0.4, /**/ 0.9, 0.05, 0.05, /**/ 0.2, 0.3, 0.5,
        ];
        let labels = [2, 0, 0];
        assert_eq!(topk_correct(&logits, 3, &labels, 1), 1);
        assert_eq!(topk_correct(&logits, 3, &labels, 2), 2);
        assert_eq!(topk_correct(&logits, 3, &labels, 3), 3);
    }

    /// A model that outputs the same value for every class knows nothing: chance at best.
    #[test]
    fn constant_logits_are_not_correct() {
        let c = 10;
        let logits = vec![0.25f32; 4 * c];
        let labels = [0, 3, 7, 9];
        assert_eq!(topk_correct(&logits, c, &labels, 1), 0);
        assert_eq!(topk_correct(&logits, c, &labels, 5), 0);
        // Top-C holds every class: always correct, which is also its chance level.
        assert_eq!(topk_correct(&logits, c, &labels, c), 4);
        // A tie with one other class at the top: a miss for top-1, a hit for top-2.
        let row = [1.0, 3.0, 3.0, 0.0];
        assert_eq!(topk_correct(&row, 4, &[1], 1), 0);
        assert_eq!(topk_correct(&row, 4, &[1], 2), 1);
    }

    #[test]
    fn nan_logits_are_never_correct() {
        let c = 3;
        let nan = f32::NAN;
        // All NaN; NaN at the label only; NaN elsewhere in a row whose label is the largest.
        let logits = [
            nan, nan, nan, /**/ 0.1, nan, 0.2, /**/ 5.0, nan, 1.0,
        ];
        let labels = [0, 1, 0];
        for k in 1..=3 {
            assert_eq!(topk_correct(&logits, c, &labels, k), 0, "k = {k}");
        }
    }

    #[test]
    fn auc_by_hand() {
        // Positives scored 0.8, 0.4; negatives 0.5, 0.1: pairs (.8>.5 .8>.1 .4<.5 .4>.1) -> 3/4.
        assert_eq!(
            auc(&[0.8, 0.4, 0.5, 0.1], &[true, true, false, false]),
            Some(0.75)
        );
        // A tie between a positive and a negative counts one half.
        assert_eq!(auc(&[0.5, 0.5], &[true, false]), Some(0.5));
        assert_eq!(auc(&[0.1, 0.2], &[true, true]), None);
    }

    #[test]
    fn aspect_accumulator_by_hand() {
        let mut acc = AspectAccumulator::new(2);
        acc.push(&[2.0, 0.0], &[0.9, 0.2], &[true, true]);
        acc.push(&[-1.0, 5.0], &[0.1, 0.7], &[true, false]);
        let m = acc.finish();
        assert_eq!(m.pairs, 3);
        // Agreement: (2>0, .9>.5) yes; (0>0 false, .2>.5 false) yes; (-1, .1) yes -> 1.0.
        assert_eq!(m.agreement, 1.0);
        assert_eq!(m.per_question_auc, vec![Some(1.0), None]);
        let bce = |x: f64, t: f64| x.max(0.0) - x * t + (-x.abs()).exp().ln_1p();
        let want = (bce(2.0, 0.9) + bce(0.0, 0.2) + bce(-1.0, 0.1)) / 3.0;
        assert!((m.bce - want).abs() < 1e-6, "{} vs {want}", m.bce);
    }
}
