//! Classification as a [`Task`] of the shared loop: CE on the class logits, + α·BCE on the aspect
//! logits against the teacher's P(yes), + the KD (or DKD) term against a teacher network's
//! logits; evaluated by top-1/top-5 on every test image.

use crate::data::loader::{batches, Batch};
use crate::data::transform::Transform;
use crate::data::Dataset;
use crate::error::input;
use crate::error::Result;
use crate::progress;
use crate::student::Pass;
use crate::student::{self, Student};
use crate::train::config::TrainConfig;
use crate::train::fit::{Evaluated, Task};
use crate::train::init::{seeded_var_builder, trainable_vars};
use crate::train::kd::{KdMethod, TeacherLogits};
use crate::train::loss;
use crate::train::metrics::topk_correct;
use crate::train::metrics::{AspectAccumulator, AspectMetrics};
use crate::train::targets::Targets;
use candle_core::{DType, Tensor};
use candle_core::{Device, D};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
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

/// Results of evaluating class logits (and, with targets, aspect logits) on a dataset.
#[derive(Clone, Debug, Default)]
pub struct EvalResult {
    pub images: usize,
    pub loss: f64,
    pub top1: f64,
    pub top5: f64,
    pub aspects: Option<AspectMetrics>,
    /// Per image: predicted class, when `keep_outputs` was asked.
    pub outputs: Option<Vec<Vec<f32>>>,
}

/// A student with its parameters, as built from a config.
pub struct Model {
    pub student: Box<dyn Student>,
    pub varmap: VarMap,
    pub num_classes: usize,
    pub num_aspects: usize,
    pub device: Device,
    /// What built `student`, so that [`Model::inference`] can build it again over other tensors.
    spec: student::StudentSpec,
    image_size: usize,
}

impl Model {
    pub fn build(
        cfg: &TrainConfig,
        num_classes: usize,
        num_aspects: usize,
        device: &Device,
    ) -> Result<Model> {
        if cfg.model.in_channels != cfg.transform.channels {
            return Err(input(
                format!(
                    "model.in_channels = {} but transform.channels = {}",
                    cfg.model.in_channels, cfg.transform.channels
                ),
                "config",
                "set both to 1 (gray) or both to 3 (RGB)",
            ));
        }
        let varmap = VarMap::new();
        let vb = seeded_var_builder(&varmap, cfg.train.seed, device);
        let student = student::build(
            &cfg.model,
            cfg.transform.size,
            num_classes + num_aspects,
            vb,
        )?;
        Ok(Model {
            student,
            varmap,
            num_classes,
            num_aspects,
            device: device.clone(),
            spec: cfg.model.clone(),
            image_size: cfg.transform.size,
        })
    }

    /// The student over detached views of the current parameters (same storage, nothing copied).
    /// Its forward records no gradient graph, so each activation is freed once the next layer has
    /// read it, as under `torch.no_grad()`; through `student` every activation of a batch stays
    /// alive until the logits are dropped (gigabytes at batch 256 and 224 px).
    pub fn inference(&self) -> Result<Box<dyn Student>> {
        let tensors: HashMap<String, Tensor> = self
            .varmap
            .data()
            .lock()
            .expect("varmap lock")
            .iter()
            .map(|(name, var)| (name.clone(), var.as_tensor().detach()))
            .collect();
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &self.device);
        student::build(
            &self.spec,
            self.image_size,
            self.num_classes + self.num_aspects,
            vb,
        )
    }

    /// Trainable parameters by name (BatchNorm running statistics excluded).
    pub fn trainable(&self) -> Vec<(String, candle_core::Var)> {
        trainable_vars(&self.varmap)
    }

    pub fn param_count(&self) -> usize {
        self.trainable()
            .iter()
            .map(|(_, v)| v.as_tensor().elem_count())
            .sum()
    }
}

/// Evaluate on every image of `ds` (the last partial batch included). Class metrics use the first
/// C outputs only; aspect metrics need `targets`.
pub fn evaluate(
    model: &Model,
    ds: Arc<dyn Dataset>,
    transform: &Arc<Transform>,
    batch_size: usize,
    workers: usize,
    targets: Option<&Targets>,
    keep_outputs: bool,
) -> Result<EvalResult> {
    let (c, q) = (model.num_classes, model.num_aspects);
    let n = ds.len();
    let iter = batches(
        ds,
        (0..n).collect(),
        batch_size,
        transform.clone(),
        false,
        0,
        workers,
        2,
    );
    let pb = progress::bar(n as u64, "eval", "images");
    let (mut loss_sum, mut top1, mut top5) = (0.0, 0usize, 0usize);
    let mut acc = targets.map(|_| AspectAccumulator::new(q));
    let mut outputs = keep_outputs.then(Vec::new);
    let student = model.inference()?;
    for batch in iter {
        let batch = batch?;
        let xs = batch.images_tensor(&model.device)?;
        let logits = student.forward(&xs, Pass::Eval)?;
        let class_logits = logits.narrow(1, 0, c)?;
        let ys = batch.labels_tensor(&model.device)?;
        loss_sum += loss::cross_entropy(&class_logits, &ys, 0.0)?.to_scalar::<f32>()? as f64
            * batch.labels.len() as f64;
        let cl = class_logits.flatten_all()?.to_vec1::<f32>()?;
        top1 += topk_correct(&cl, c, &batch.labels, 1);
        top5 += topk_correct(&cl, c, &batch.labels, 5.min(c));
        let all = logits.to_vec2::<f32>()?;
        if let (Some(acc), Some(t)) = (acc.as_mut(), targets) {
            for (row, &i) in all.iter().zip(&batch.indices) {
                let (p, m) = t.row(i);
                let mask: Vec<bool> = m.iter().map(|&x| x > 0.0).collect();
                acc.push(&row[c..c + q], p, &mask);
            }
        }
        if let Some(out) = outputs.as_mut() {
            out.extend(all);
        }
        pb.inc(batch.labels.len() as u64);
    }
    pb.finish_and_clear();
    let denom = n.max(1) as f64;
    Ok(EvalResult {
        images: n,
        loss: loss_sum / denom,
        top1: 100.0 * top1 as f64 / denom,
        top5: 100.0 * top5 as f64 / denom,
        aspects: acc.map(|a| a.finish()),
        outputs,
    })
}

/// Penultimate features of every image of `ds` (embedding plots).
pub fn features(
    model: &Model,
    ds: Arc<dyn Dataset>,
    transform: &Arc<Transform>,
    batch_size: usize,
    workers: usize,
) -> Result<Vec<Vec<f32>>> {
    let n = ds.len();
    let mut out = Vec::with_capacity(n);
    let student = model.inference()?;
    for batch in batches(
        ds,
        (0..n).collect(),
        batch_size,
        transform.clone(),
        false,
        0,
        workers,
        2,
    ) {
        let batch = batch?;
        let xs = batch.images_tensor(&model.device)?;
        out.extend(student.features(&xs, Pass::Eval)?.to_vec2::<f32>()?);
    }
    Ok(out)
}

/// Softmax over the class logits of one output row, and sigmoid over its aspect logits.
pub fn split_outputs(row: &[f32], c: usize) -> Result<(Vec<f32>, Vec<f32>)> {
    let cls = Tensor::new(&row[..c], &Device::Cpu)?;
    let probs = candle_nn::ops::softmax(&cls, D::Minus1)?.to_vec1::<f32>()?;
    let aspects = row[c..].iter().map(|&x| 1.0 / (1.0 + (-x).exp())).collect();
    Ok((probs, aspects))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::student::{Arch, StudentSpec};

    #[test]
    fn inference_matches_the_student_and_records_no_gradient_graph() {
        let mut cfg = TrainConfig {
            model: StudentSpec {
                arch: Arch::Cnn,
                in_channels: 1,
                stem: Default::default(),
            },
            ..Default::default()
        };
        cfg.transform.size = 16;
        let model = Model::build(&cfg, 3, 2, &Device::Cpu).unwrap();
        let xs = Tensor::randn(0f32, 1.0, (2, 1, 16, 16), &Device::Cpu).unwrap();
        let tracked = model.student.forward(&xs, Pass::Eval).unwrap();
        let frozen = model.inference().unwrap().forward(&xs, Pass::Eval).unwrap();
        assert_eq!(
            tracked.to_vec2::<f32>().unwrap(),
            frozen.to_vec2::<f32>().unwrap()
        );
        // Through the student the convolution weights are in the graph; through `inference` no
        // op was recorded, so no activation was kept for a backward pass and no parameter is
        // reached.
        let vars = model.trainable();
        let through_student = tracked.sum_all().unwrap().backward().unwrap();
        assert!(vars.iter().any(|(_, v)| through_student.get(v).is_some()));
        let through_inference = frozen.sum_all().unwrap().backward().unwrap();
        assert!(vars.iter().all(|(_, v)| through_inference.get(v).is_none()));
    }
}
