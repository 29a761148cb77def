//! Classification as a [`Task`] of the shared loop: CE on the class logits, + α·BCE on the aspect
//! logits against the teacher's P(yes), + the KD (or DKD) term against a teacher network's
//! logits; evaluated by top-1/top-5 on every test image.

use crate::data::loader::{batches, Batch};
use crate::data::transform::Transform;
use crate::data::Dataset;
use crate::error::Result;
use crate::student::Pass;
use crate::train::config::TrainConfig;
use crate::train::fit::{Evaluated, Task};
use crate::train::kd::{KdMethod, TeacherLogits};
use crate::train::loss;
use crate::train::metrics::topk_correct;
use crate::train::targets::Targets;
use crate::train::trainer::{evaluate, EvalResult, Model};
use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Classification's fields of a `metrics.jsonl` line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassEpoch {
    pub train_ce: f64,
    pub train_bce: Option<f64>,
    /// The KD (or DKD) term before its weight, when `kd.logits` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_kd: Option<f64>,
    pub train_top1: f64,
    pub test_loss: f64,
    pub test_top1: f64,
    pub test_top5: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_aspect_bce: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_aspect_auc: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_aspect_agreement: Option<f64>,
}

/// The classification task over a built model, its data and its targets.
pub struct Classify<'a> {
    pub cfg: &'a TrainConfig,
    pub model: &'a Model,
    pub train: Arc<dyn Dataset>,
    pub test: Arc<dyn Dataset>,
    pub transform: Arc<Transform>,
    pub targets: Option<&'a Targets>,
    pub test_targets: Option<&'a Targets>,
    pub teacher_logits: Option<&'a TeacherLogits>,
    /// The last end-of-epoch evaluation (for `summary.json`).
    pub last_eval: EvalResult,
    sums: Sums,
}

#[derive(Default)]
struct Sums {
    ce: f64,
    bce: f64,
    kd: f64,
    correct: usize,
    seen: usize,
}

impl<'a> Classify<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: &'a TrainConfig,
        model: &'a Model,
        train: Arc<dyn Dataset>,
        test: Arc<dyn Dataset>,
        transform: Arc<Transform>,
        targets: Option<&'a Targets>,
        test_targets: Option<&'a Targets>,
        teacher_logits: Option<&'a TeacherLogits>,
    ) -> Classify<'a> {
        Classify {
            cfg,
            model,
            train,
            test,
            transform,
            targets,
            test_targets,
            teacher_logits,
            last_eval: EvalResult::default(),
            sums: Sums::default(),
        }
    }

    /// Evaluate on every test image.
    pub fn evaluate(&self) -> Result<EvalResult> {
        evaluate(
            self.model,
            self.test.clone(),
            &self.transform,
            self.cfg.train.eval_batch_size,
            self.cfg.data.workers,
            self.test_targets,
            false,
        )
    }
}

impl Task for Classify<'_> {
    type Batch = Batch;
    type Epoch = ClassEpoch;

    fn train_len(&self) -> usize {
        self.train.len()
    }

    fn batches(
        &self,
        order: Vec<usize>,
        seed: u64,
    ) -> Result<Box<dyn Iterator<Item = Result<Batch>>>> {
        Ok(Box::new(batches(
            self.train.clone(),
            order,
            self.cfg.train.batch_size,
            self.transform.clone(),
            true,
            seed,
            self.cfg.data.workers,
            4,
        )))
    }

    fn batch_len(batch: &Batch) -> usize {
        batch.labels.len()
    }

    fn loss(&mut self, batch: &Batch, pass: Pass) -> Result<Tensor> {
        let (c, q) = (self.model.num_classes, self.model.num_aspects);
        let dev = &self.model.device;
        let xs = batch.images_tensor(dev)?;
        let ys = batch.labels_tensor(dev)?;
        let logits = self.model.student.forward(&xs, pass)?;
        let class_logits = logits.narrow(1, 0, c)?;
        let ce = loss::cross_entropy(&class_logits, &ys, self.cfg.train.label_smoothing)?;
        let n = batch.labels.len() as f64;
        let mut total = ce.clone();
        if let Some(t) = self.teacher_logits {
            let tl = t.batch(&batch.indices, dev)?;
            let k = &self.cfg.kd;
            let term = match k.method {
                KdMethod::Kd => loss::kd_kl(&class_logits, &tl, k.temperature)?,
                KdMethod::Dkd => loss::dkd(
                    &class_logits,
                    &tl,
                    &ys,
                    k.dkd_alpha,
                    k.dkd_beta,
                    k.temperature,
                )?,
            };
            self.sums.kd += term.to_scalar::<f32>()? as f64 * n;
            total = (total + (term * k.weight)?)?;
        }
        if let Some(t) = self.targets {
            let (p_yes, mask) = t.batch(&batch.indices, dev)?;
            let bce = loss::soft_bce_with_logits(&logits.narrow(1, c, q)?, &p_yes, &mask)?;
            self.sums.bce += bce.to_scalar::<f32>()? as f64 * n;
            total = (total + (bce * self.cfg.aspects.alpha)?)?;
        }
        self.sums.ce += ce.to_scalar::<f32>()? as f64 * n;
        let cl = class_logits
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        self.sums.correct += topk_correct(&cl, c, &batch.labels, 1);
        self.sums.seen += batch.labels.len();
        Ok(total)
    }

    fn running(&self) -> String {
        format!(
            "acc {:.1}%",
            100.0 * self.sums.correct as f64 / self.sums.seen.max(1) as f64
        )
    }

    fn finish_epoch(&mut self) -> Result<Evaluated<ClassEpoch>> {
        let eval = self.evaluate()?;
        let s = std::mem::take(&mut self.sums);
        let seen = s.seen as f64;
        let metrics = ClassEpoch {
            train_ce: s.ce / seen,
            train_bce: self.targets.map(|_| s.bce / seen),
            train_kd: self.teacher_logits.map(|_| s.kd / seen),
            train_top1: 100.0 * s.correct as f64 / seen,
            test_loss: eval.loss,
            test_top1: eval.top1,
            test_top5: eval.top5,
            test_aspect_bce: eval.aspects.as_ref().map(|a| a.bce),
            test_aspect_auc: eval.aspects.as_ref().and_then(|a| a.auc),
            test_aspect_agreement: eval.aspects.as_ref().map(|a| a.agreement),
        };
        let line = format!(
            "train {:.2}%  test top-1 {:.2}% top-5 {:.2}%",
            metrics.train_top1, metrics.test_top1, metrics.test_top5
        );
        let score = eval.top1;
        self.last_eval = eval;
        Ok(Evaluated {
            metrics,
            score,
            line,
        })
    }
}
