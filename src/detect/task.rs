//! Detection as a [`Task`] of the shared loop: the CenterNet-style student on a detection
//! dataset (`scenes:…` or `coco:…`), with the aspect head trained against a score store of the
//! scenes (`detect.aspect_mode = "image"`) or of their objects (`"object"`), evaluated by COCO
//! mAP on every test image.
//!
//! Images are letterboxed to `transform.size` (longer side scaled to it, zero padding bottom and
//! right); boxes go through the same scaling and, with `transform.augment = "flip"`, the same
//! flip. Detections are mapped back to the original image's pixels before they are scored, so
//! `test_map` is what pycocotools computes from `makd data export` and `--detections-out`.

use crate::data::crops::{Crops, Margin};
use crate::data::detection::{
    self, all_boxes, hflip, BoxAnn, DetectionDataset, DetectionImages, DetectionSpec, FirstImages,
};
use crate::data::loader::{sample_rng, spawn, BatchBuilder};
use crate::data::transform::{Augment, Transform};
use crate::data::{DatasetSource, Split};
use crate::detect::centernet::{CenterNet, CenterNetSpec, Outputs};
use crate::detect::cocoeval::{self, CocoMetrics, Detection, GtBox};
use crate::detect::heatmap::{decode, Targets as BoxTargets, MAX_OBJECTS};
use crate::detect::loss::{centernet_loss, AspectTargets, LossWeights};
use crate::error::{input, IoContext, Result};
use crate::files;
use crate::progress;
use crate::student::Pass;
use crate::train::config::{AspectMode, TrainConfig};
use crate::train::fit::{self, Evaluated, Task};
use crate::train::init::seeded_var_builder;
use crate::train::init::trainable_vars;
use crate::train::optim::Optimizer;
use crate::train::run_dir::{ModelInfo, RunDir};
use crate::train::targets::Targets;
use crate::train::trainer::{device, open_store, TargetCoverage};
use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;

/// Detections kept per image (COCO's maxDets).
pub const TOP_K: usize = 100;

/// Detection's fields of a `metrics.jsonl` line (mAP values are fractions in [0, 1]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DetectEpoch {
    pub train_heatmap: f64,
    pub train_size: f64,
    pub train_offset: f64,
    pub train_bce: Option<f64>,
    pub test_map: f64,
    pub test_map50: f64,
    pub test_map75: f64,
    pub test_ar100: f64,
}

/// `summary.json` of a detection run. mAP values are the last epoch's, fractions in [0, 1].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DetectSummary {
    pub task: String,
    pub arch: String,
    pub aspect_mode: AspectMode,
    pub num_classes: usize,
    pub num_aspects: usize,
    pub params: usize,
    pub epochs: usize,
    pub train_images: usize,
    pub test_images: usize,
    pub test_map: f64,
    pub test_map50: f64,
    pub test_map75: f64,
    pub test_ar100: f64,
    /// All twelve COCO numbers of the last evaluation.
    pub test_coco: CocoMetrics,
    pub best_test_map: f64,
    pub best_epoch: usize,
    pub seconds: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aspect_targets: Option<TargetCoverage>,
}

/// The detection spec a config's `data.dataset` names.
pub fn detection_spec(cfg: &TrainConfig) -> Result<&DetectionSpec> {
    match &cfg.data.dataset.source {
        DatasetSource::DetectionImages(spec) => Ok(spec),
        _ => Err(input(
            format!(
                "task = \"detect\" needs a detection dataset, data.dataset is {}",
                cfg.data.dataset
            ),
            "data.dataset",
            "use scenes:fashion-mnist (synthetic scenes of real images), scenes:DIR or coco:ANNOTATIONS.json[:IMAGE_DIR]",
        )),
    }
}

/// The train and test images of a detection config (the first `train_limit` / `test_limit`
/// images when set) and the full splits a store is made for.
pub struct DetDatasets {
    pub full_train: Arc<dyn DetectionDataset>,
    pub full_test: Arc<dyn DetectionDataset>,
    pub train: Arc<dyn DetectionDataset>,
    pub test: Arc<dyn DetectionDataset>,
}

pub fn open_datasets(cfg: &TrainConfig) -> Result<DetDatasets> {
    let spec = detection_spec(cfg)?;
    let full_train = crate::data::open_detection(spec, Split::Train)?;
    let full_test = crate::data::open_detection(spec, Split::Test)?;
    let first = |ds: &Arc<dyn DetectionDataset>, n: Option<usize>| -> Arc<dyn DetectionDataset> {
        match n {
            Some(n) if n < ds.len() => Arc::new(FirstImages::new(ds.clone(), n)),
            _ => ds.clone(),
        }
    };
    let train = first(&full_train, cfg.data.train_limit);
    let test = first(&full_test, cfg.data.test_limit);
    if train.categories() != test.categories() {
        return Err(input(
            "the train and test splits have different categories",
            cfg.data.dataset.to_string(),
            "both splits must list the same categories in the same order",
        ));
    }
    Ok(DetDatasets {
        full_train,
        full_test,
        train,
        test,
    })
}

/// The teacher's answers for the training images, in the layout of the aspect mode.
pub enum DetTargets {
    /// Rows indexed like the training images.
    Image(Targets),
    /// Rows of the objects' store, found by (image index, box index).
    Object {
        targets: Targets,
        rows: HashMap<(usize, usize), usize>,
    },
}

impl DetTargets {
    fn q(&self) -> usize {
        match self {
            DetTargets::Image(t) | DetTargets::Object { targets: t, .. } => t.q,
        }
    }

    fn mask(&self) -> &[f32] {
        match self {
            DetTargets::Image(t) | DetTargets::Object { targets: t, .. } => &t.mask.data,
        }
    }

    fn batch(
        &self,
        batch: &DetBatch,
        boxes: &BoxTargets,
        device: &Device,
    ) -> Result<AspectTargets> {
        Ok(match self {
            DetTargets::Image(t) => {
                let (p_yes, mask) = t.batch(&batch.indices, device)?;
                AspectTargets::Image { p_yes, mask }
            }
            DetTargets::Object { targets, rows } => {
                let (n, k, q) = (batch.indices.len(), boxes.k, targets.q);
                let mut p = vec![0f32; n * k * q];
                let mut m = vec![0f32; n * k * q];
                for (i, &image) in batch.indices.iter().enumerate() {
                    for (slot, &b) in boxes.slot_boxes[i].iter().enumerate() {
                        if let Some(&r) = rows.get(&(image, b)) {
                            let (pr, mr) = targets.row(r);
                            let at = (i * k + slot) * q;
                            p[at..at + q].copy_from_slice(pr);
                            m[at..at + q].copy_from_slice(mr);
                        }
                    }
                }
                AspectTargets::Object {
                    p_yes: Tensor::from_vec(p, (n, k, q), device)?,
                    mask: Tensor::from_vec(m, (n, k, q), device)?,
                }
            }
        })
    }
}

/// Open `aspects.scores` for the aspect mode: a store of the scenes as images, or of their
/// objects (`crops:`), checked against the dataset it must describe.
fn open_targets(
    cfg: &TrainConfig,
    ds: &DetDatasets,
) -> Result<Option<(DetTargets, Vec<crate::aspects::Question>, TargetCoverage)>> {
    let Some(path) = &cfg.aspects.scores else {
        return Ok(None);
    };
    let at = path.display().to_string();
    let aspects = cfg.aspects.aspects.as_deref();
    let (store, set, targets) = match cfg.detect.aspect_mode {
        AspectMode::Image => {
            let full = DetectionImages::new(ds.full_train.clone())?;
            let (store, set) = open_store(path, aspects, &full).map_err(|e| {
                with_hint(e, "in image mode the store is labeled on the scenes: makd label --dataset <the same data.dataset>")
            })?;
            let used = DetectionImages::new(ds.train.clone())?;
            let t = Targets::from_store(&store, &used, &at)?;
            (store, set, DetTargets::Image(t))
        }
        AspectMode::Object => {
            let full = Crops::new(ds.full_train.clone(), Margin::NONE)?;
            let (store, set) = open_store(path, aspects, &full).map_err(|e| {
                with_hint(e, "in object mode the store is labeled on the objects: makd label --dataset crops:<data.dataset>")
            })?;
            let used = Crops::new(ds.train.clone(), Margin::NONE)?;
            let t = Targets::from_store(&store, &used, &at)?;
            let mut image_of_id = HashMap::new();
            for i in 0..ds.train.len() {
                image_of_id.insert(ds.train.image_id(i), i);
            }
            let mut rows = HashMap::new();
            for r in 0..crate::data::Dataset::len(&used) {
                let id = crate::data::Dataset::id(&used, r);
                let parsed = id.split_once('#').and_then(|(img, k)| {
                    Some((
                        *image_of_id.get(&img.parse::<u64>().ok()?)?,
                        k.parse().ok()?,
                    ))
                });
                match parsed {
                    Some(key) => rows.insert(key, r),
                    None => {
                        return Err(crate::error::Error::Internal {
                            what: format!("crop id {id:?} is not <image id>#<box>"),
                        })
                    }
                };
            }
            (store, set, DetTargets::Object { targets: t, rows })
        }
    };
    crate::train::trainer::check_complete(&store, cfg.aspects.allow_partial, &at)?;
    let questions = crate::train::trainer::store_questions(&store, set);
    let mask = targets.mask();
    let coverage = TargetCoverage {
        store: store.summary(),
        shard: store.manifest.shard,
        train_pairs: mask.len(),
        masked_train_pairs: mask.iter().filter(|&&m| m == 0.0).count(),
    };
    Ok(Some((targets, questions, coverage)))
}

fn with_hint(e: crate::error::Error, hint: &str) -> crate::error::Error {
    match e {
        crate::error::Error::Input { what, at, hint: h } => crate::error::Error::Input {
            what,
            at,
            hint: format!("{h}; {hint}"),
        },
        other => other,
    }
}

/// A detector with its parameters.
pub struct Detector {
    pub net: CenterNet,
    pub varmap: VarMap,
    pub device: Device,
}

impl Detector {
    pub fn build(cfg: &TrainConfig, num_classes: usize, q: usize, device: &Device) -> Result<Self> {
        let varmap = VarMap::new();
        let vb = seeded_var_builder(&varmap, cfg.train.seed, device);
        let spec = CenterNetSpec {
            backbone: cfg.model.clone(),
            neck_channels: cfg.detect.neck_channels,
            head_channels: cfg.detect.head_channels,
            aspect_mode: cfg.detect.aspect_mode,
        };
        let net = CenterNet::new(&spec, cfg.transform.size, num_classes, q, vb)?;
        Ok(Detector {
            net,
            varmap,
            device: device.clone(),
        })
    }

    /// One image through the detector as evaluation sees it (letterboxed to `transform.size`,
    /// normalised, eval mode): the outputs, and input pixels per original pixel.
    pub fn detect_one(
        &self,
        cfg: &TrainConfig,
        img: &crate::data::RawImage,
    ) -> Result<(Outputs, f32)> {
        let size = cfg.transform.size;
        let sample = detection::DetSample {
            image_id: 0,
            image: img.clone(),
            boxes: vec![],
        };
        let fitted = detection::fit(&sample, size);
        let mut tcfg = cfg.transform.clone();
        tcfg.augment = Augment::None;
        let x = Transform::new(tcfg)?.apply(&fitted.image, false, &mut sample_rng(0, 0));
        let xs = Tensor::from_vec(x, (1, cfg.transform.channels, size, size), &self.device)?;
        let out = self.net.forward(&xs, Pass::Eval)?;
        Ok((out, size as f32 / img.width.max(img.height) as f32))
    }

    pub fn param_count(&self) -> usize {
        trainable_vars(&self.varmap)
            .iter()
            .map(|(_, v)| v.as_tensor().elem_count())
            .sum()
    }
}

/// A batch of letterboxed images with their boxes in input pixels.
pub struct DetBatch {
    pub images: Vec<f32>,
    pub shape: [usize; 4],
    pub boxes: Vec<Vec<BoxAnn>>,
    /// Dataset indices, in batch order.
    pub indices: Vec<usize>,
    /// Input pixels per original pixel, per image (to map detections back).
    pub scales: Vec<f32>,
}

struct DetJob {
    ds: Arc<dyn DetectionDataset>,
    order: Vec<usize>,
    batch_size: usize,
    transform: Transform,
    flip: bool,
    seed: u64,
}

impl BatchBuilder for DetJob {
    type Batch = DetBatch;

    fn num_batches(&self) -> usize {
        self.order.len().div_ceil(self.batch_size)
    }

    fn build(&self, k: usize) -> Result<DetBatch> {
        let indices = self.order
            [k * self.batch_size..((k + 1) * self.batch_size).min(self.order.len())]
            .to_vec();
        let [c, h, w] = self.transform.output_shape();
        let size = self.transform.config().size;
        let mut b = DetBatch {
            images: Vec::with_capacity(indices.len() * c * h * w),
            shape: [indices.len(), c, h, w],
            boxes: Vec::with_capacity(indices.len()),
            indices: indices.clone(),
            scales: Vec::with_capacity(indices.len()),
        };
        for &i in &indices {
            let sample = self.ds.get(i)?;
            let longer = sample.image.width.max(sample.image.height) as f32;
            let mut s = detection::fit(&sample, size);
            let mut rng = sample_rng(self.seed, i);
            if self.flip && rng.random::<f32>() < 0.5 {
                s = hflip(&s);
            }
            b.images
                .extend(self.transform.apply(&s.image, false, &mut rng));
            b.boxes.push(s.boxes);
            b.scales.push(size as f32 / longer);
        }
        Ok(b)
    }
}

/// Batches of `order` of `ds`, letterboxed (and, for training with `flip`, flipped).
fn det_batches(
    cfg: &TrainConfig,
    ds: Arc<dyn DetectionDataset>,
    order: Vec<usize>,
    batch_size: usize,
    train: bool,
    seed: u64,
) -> Result<crate::data::loader::BatchIter<DetJob>> {
    let mut tcfg = cfg.transform.clone();
    let flip = train && tcfg.augment == Augment::Flip;
    tcfg.augment = Augment::None;
    let job = DetJob {
        ds,
        order,
        batch_size: batch_size.max(1),
        transform: Transform::new(tcfg)?,
        flip,
        seed,
    };
    Ok(spawn(Arc::new(job), cfg.data.workers, 4))
}

/// What evaluating a detector on a dataset gives.
pub struct DetEval {
    pub metrics: CocoMetrics,
    /// COCO results: boxes in the original images' pixels, COCO category ids.
    pub detections: Vec<Detection>,
}

/// Decode every image of `ds` and score the detections with COCO's mAP.
pub fn evaluate(
    det: &Detector,
    cfg: &TrainConfig,
    ds: Arc<dyn DetectionDataset>,
) -> Result<DetEval> {
    let n = ds.len();
    let cats: Vec<u64> = ds.categories().iter().map(|c| c.id).collect();
    let pb = progress::bar(n as u64, "eval", "images");
    let mut detections = Vec::new();
    for batch in det_batches(
        cfg,
        ds.clone(),
        (0..n).collect(),
        cfg.train.eval_batch_size,
        false,
        0,
    )? {
        let batch = batch?;
        let xs = Tensor::from_slice(&batch.images, &batch.shape, &det.device)?;
        let out = det.net.forward(&xs, Pass::Eval)?;
        let decoded = decode(&out.heatmap, &out.size, &out.offset, TOP_K)?;
        for ((boxes, &i), &scale) in decoded.iter().zip(&batch.indices).zip(&batch.scales) {
            let image_id = ds.image_id(i);
            for d in boxes {
                let [x, y, w, h] = d.bbox.map(|v| (v / scale) as f64);
                detections.push(Detection {
                    image_id,
                    category_id: cats[d.category],
                    bbox: [x, y, w, h],
                    score: d.score as f64,
                });
            }
        }
        pb.inc(batch.indices.len() as u64);
    }
    pb.finish_and_clear();
    let image_ids: Vec<u64> = (0..n).map(|i| ds.image_id(i)).collect();
    let gts: Vec<GtBox> = all_boxes(ds.as_ref())?
        .into_iter()
        .enumerate()
        .flat_map(|(i, boxes)| {
            let image_id = ds.image_id(i);
            let cats = &cats;
            boxes.into_iter().map(move |b| GtBox {
                image_id,
                category_id: cats[b.category],
                bbox: b.bbox.map(f64::from),
                area: b.area as f64,
                iscrowd: b.iscrowd,
            })
        })
        .collect();
    let metrics = cocoeval::evaluate(&image_ids, &cats, &gts, &detections);
    Ok(DetEval {
        metrics,
        detections,
    })
}

/// The detection task over a built detector, its data and its targets.
pub struct Detect<'a> {
    cfg: &'a TrainConfig,
    det: &'a Detector,
    train: Arc<dyn DetectionDataset>,
    test: Arc<dyn DetectionDataset>,
    targets: Option<&'a DetTargets>,
    weights: LossWeights,
    pub last: Option<DetEval>,
    sums: Sums,
}

#[derive(Default)]
struct Sums {
    heatmap: f64,
    size: f64,
    offset: f64,
    bce: f64,
    seen: usize,
}

impl Task for Detect<'_> {
    type Batch = DetBatch;
    type Epoch = DetectEpoch;

    fn train_len(&self) -> usize {
        self.train.len()
    }

    fn batches(
        &self,
        order: Vec<usize>,
        seed: u64,
    ) -> Result<Box<dyn Iterator<Item = Result<DetBatch>>>> {
        Ok(Box::new(det_batches(
            self.cfg,
            self.train.clone(),
            order,
            self.cfg.train.batch_size,
            true,
            seed,
        )?))
    }

    fn batch_len(batch: &DetBatch) -> usize {
        batch.indices.len()
    }

    fn loss(&mut self, batch: &DetBatch, pass: Pass) -> Result<Tensor> {
        let dev = &self.det.device;
        let xs = Tensor::from_slice(&batch.images, &batch.shape, dev)?;
        let out: Outputs = self.det.net.forward(&xs, pass)?;
        let boxes = BoxTargets::build(
            &batch.boxes,
            self.det.net.num_classes(),
            self.cfg.transform.size,
            MAX_OBJECTS,
        );
        let aspects = match self.targets {
            Some(t) => Some(t.batch(batch, &boxes, dev)?),
            None => None,
        };
        let parts = centernet_loss(
            &out,
            &boxes.to_tensors(dev)?,
            aspects.as_ref(),
            &self.weights,
        )?;
        let n = batch.indices.len() as f64;
        self.sums.heatmap += parts.heatmap as f64 * n;
        self.sums.size += parts.size as f64 * n;
        self.sums.offset += parts.offset as f64 * n;
        self.sums.bce += parts.aspects.unwrap_or(0.0) as f64 * n;
        self.sums.seen += batch.indices.len();
        Ok(parts.total)
    }

    fn running(&self) -> String {
        format!(
            "heatmap {:.3}",
            self.sums.heatmap / self.sums.seen.max(1) as f64
        )
    }

    fn finish_epoch(&mut self) -> Result<Evaluated<DetectEpoch>> {
        let eval = evaluate(self.det, self.cfg, self.test.clone())?;
        let s = std::mem::take(&mut self.sums);
        let seen = s.seen.max(1) as f64;
        let m = &eval.metrics;
        let metrics = DetectEpoch {
            train_heatmap: s.heatmap / seen,
            train_size: s.size / seen,
            train_offset: s.offset / seen,
            train_bce: self.targets.map(|_| s.bce / seen),
            test_map: m.map,
            test_map50: m.map50,
            test_map75: m.map75,
            test_ar100: m.ar100,
        };
        let line = format!(
            "test mAP {:.3}  AP50 {:.3}  AP75 {:.3}",
            m.map, m.map50, m.map75
        );
        let score = m.map;
        self.last = Some(eval);
        Ok(Evaluated {
            metrics,
            score,
            line,
        })
    }
}

/// Train (or resume) the detection run in `run_dir`.
pub fn train(cfg: &TrainConfig, run_dir: &RunDir, fresh: bool) -> Result<DetectSummary> {
    let cfg = &cfg.with_absolute_paths(&std::env::current_dir().at(".")?)?;
    if fresh {
        run_dir.check_fresh()?;
    }
    let dev = device()?;
    let ds = open_datasets(cfg)?;
    let c = ds.train.categories().len();
    let opened = open_targets(cfg, &ds)?;
    let (targets, questions, coverage) = match opened {
        Some((t, qs, cov)) => (Some(t), qs, Some(cov)),
        None => (None, Vec::new(), None),
    };
    let q = targets.as_ref().map_or(0, DetTargets::q);
    if cfg.aspects.test_scores.is_some() {
        return Err(input(
            "aspects.test_scores is not used by detection runs",
            "aspects.test_scores",
            "remove it: detection runs are scored by COCO mAP",
        ));
    }
    let info = ModelInfo {
        arch: cfg.model.arch.to_string(),
        classes: ds
            .train
            .categories()
            .iter()
            .map(|c| c.name.clone())
            .collect(),
        num_aspects: q,
        questions,
        train_fingerprint: Some(ds.full_train.fingerprint()),
        test_fingerprint: Some(ds.full_test.fingerprint()),
    };
    let resume_from = fit::open_run(cfg, run_dir, fresh, &info)?;
    let mut det = Detector::build(cfg, c, q, &dev)?;
    let mut opt = Optimizer::new(cfg.optim.clone(), trainable_vars(&det.varmap));
    let mut run = fit::restore(
        resume_from.as_deref(),
        run_dir,
        &mut det.varmap,
        &mut opt,
        &dev,
        cfg.train.epochs,
    )?;
    let params = det.param_count();
    progress::log(format!(
        "training a {} detector ({params} parameters, {c} classes + {q} aspects, {} mode) on {} train / {} test images",
        cfg.model.arch,
        cfg.detect.aspect_mode,
        ds.train.len(),
        ds.test.len()
    ));
    let mut task = Detect {
        cfg,
        det: &det,
        train: ds.train.clone(),
        test: ds.test.clone(),
        targets: targets.as_ref(),
        weights: LossWeights {
            aspect: cfg.aspects.alpha,
            ..LossWeights::default()
        },
        last: None,
        sums: Sums::default(),
    };
    fit::fit(&mut task, cfg, run_dir, &det.varmap, &mut opt, &mut run)?;
    let last = match task.last.take() {
        Some(e) => e,
        // Nothing left to train (a finished run resumed): report its final evaluation.
        None => evaluate(&det, cfg, ds.test.clone())?,
    };
    let m = last.metrics;
    let summary = DetectSummary {
        task: "detect".into(),
        arch: cfg.model.arch.to_string(),
        aspect_mode: cfg.detect.aspect_mode,
        num_classes: c,
        num_aspects: q,
        params,
        epochs: cfg.train.epochs,
        train_images: ds.train.len(),
        test_images: ds.test.len(),
        test_map: m.map,
        test_map50: m.map50,
        test_map75: m.map75,
        test_ar100: m.ar100,
        test_coco: m,
        best_test_map: run.state.best_score,
        best_epoch: run.state.best_epoch,
        seconds: run.state.seconds,
        aspect_targets: coverage,
    };
    files::write_json_atomic(&run_dir.summary(), &summary)?;
    Ok(summary)
}

/// A finished detection run's detector (weights of `checkpoints/<which>`) with its config.
pub fn load_run(run_dir: &RunDir, which: &str) -> Result<(TrainConfig, ModelInfo, Detector)> {
    let cfg = run_dir.load_config()?;
    let info = run_dir.load_model_info()?;
    let dir = run_dir.weights(which)?;
    let mut det = Detector::build(&cfg, info.classes.len(), info.num_aspects, &device()?)?;
    crate::train::checkpoint::load_model(&dir, &mut det.varmap)?;
    Ok((cfg, info, det))
}

/// σ of every logit.
pub fn sigmoid_all(logits: &[f32]) -> Vec<f32> {
    logits.iter().map(|&x| 1.0 / (1.0 + (-x).exp())).collect()
}
