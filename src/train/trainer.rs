//! The training loop: epochs of CE + α·BCE, evaluation on every test image, checkpoints after
//! every epoch, and an exact resume from `checkpoints/last/`.

use crate::aspects::AspectSet;
use crate::data::loader::batches;
use crate::data::transform::Transform;
use crate::data::{self, Dataset, Split, Subset};
use crate::error::{input, IoContext, Result};
use crate::files;
use crate::progress;
use crate::scores::{ScoreStore, StoreSummary};
use crate::student::{self, Pass, Student};
use crate::train::checkpoint;
use crate::train::classify::{ClassEpoch, Classify};
use crate::train::config::TrainConfig;
use crate::train::fit;
use crate::train::init::seeded_var_builder;
use crate::train::kd::TeacherLogits;
use crate::train::loss;
use crate::train::metrics::{topk_correct, AspectAccumulator, AspectMetrics};
use crate::train::optim::Optimizer;
use crate::train::targets::Targets;
use candle_core::{Device, Tensor, D};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What `makd train` writes into a run dir; `--fresh` removes these and nothing else.
const RUN_DIR_ENTRIES: [&str; 5] = [
    "config.toml",
    "model.json",
    "metrics.jsonl",
    "summary.json",
    "checkpoints",
];

/// The files of a run dir (see ARCHITECTURE.md: run dir).
#[derive(Clone, Debug)]
pub struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        RunDir { root: root.into() }
    }
    pub fn config(&self) -> PathBuf {
        self.root.join("config.toml")
    }
    pub fn metrics(&self) -> PathBuf {
        self.root.join("metrics.jsonl")
    }
    pub fn summary(&self) -> PathBuf {
        self.root.join("summary.json")
    }
    pub fn checkpoint(&self, which: &str) -> PathBuf {
        self.root.join("checkpoints").join(which)
    }
    pub fn model_info(&self) -> PathBuf {
        self.root.join("model.json")
    }
    pub fn load_model_info(&self) -> Result<ModelInfo> {
        files::read_json(&self.model_info(), "model.json is written by makd train")
    }
    /// A run dir is a directory holding `config.toml` beside `model.json` or `checkpoints/`:
    /// what `makd train` leaves after its first moments.
    pub fn is_run_dir(&self) -> bool {
        self.config().is_file()
            && (self.model_info().is_file() || self.root.join("checkpoints").is_dir())
    }

    /// Whether `--fresh` may start over here: a missing path, an empty directory or a run dir.
    /// Anything else is refused and left as it is, so a mistyped `--run-dir` never deletes a
    /// user's files.
    pub fn check_fresh(&self) -> Result<()> {
        let root = &self.root;
        if !root.exists() {
            return Ok(());
        }
        let refuse = |what: &str| {
            input(
                format!("{what}: --fresh would delete files makd train did not write"),
                root.display().to_string(),
                "pass --fresh only with a run dir of makd train (config.toml with model.json or \
                 checkpoints/), or use a new or empty --run-dir",
            )
        };
        if !root.is_dir() {
            return Err(refuse("not a directory"));
        }
        let empty = std::fs::read_dir(root).at(root)?.next().is_none();
        if empty {
            return Ok(());
        }
        if !self.is_run_dir() {
            return Err(refuse(
                "not a run dir (no config.toml with model.json or checkpoints/)",
            ));
        }
        Ok(())
    }

    /// Remove the run's own files for `--fresh` (after [`Self::check_fresh`]); files a user put
    /// beside them stay.
    pub fn clear_for_fresh(&self) -> Result<()> {
        self.check_fresh()?;
        let root = &self.root;
        for name in RUN_DIR_ENTRIES {
            let p = root.join(name);
            if p.is_dir() {
                std::fs::remove_dir_all(&p).at(&p)?;
            } else if p.exists() {
                std::fs::remove_file(&p).at(&p)?;
            }
        }
        Ok(())
    }

    /// The resolved config saved by `makd train`.
    pub fn load_config(&self) -> Result<TrainConfig> {
        let path = self.config();
        if !path.exists() {
            return Err(input(
                "not a run dir (no config.toml)",
                self.root.display().to_string(),
                "pass the --run-dir of a makd train run",
            ));
        }
        TrainConfig::load(&path, &[])
    }
}

/// `model.json`: what the outputs of the model mean (class names, then aspect questions), so
/// `eval` and `predict` need nothing but the run dir.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub arch: String,
    pub classes: Vec<String>,
    pub num_aspects: usize,
    /// Aspect questions in output order (ids and texts), when the aspect set was given.
    pub questions: Vec<crate::aspects::Question>,
    /// Fingerprints of the full train and test splits the run was trained on: a resume refuses
    /// a dataset whose images or labels changed (absent in run dirs of older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_fingerprint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_fingerprint: Option<String>,
}

impl ModelInfo {
    /// The model's outputs are named by `classes`; a dataset whose class list differs (a class
    /// added, removed or renamed, so that the sorted order shifts every label) would be scored
    /// against the wrong outputs.
    pub fn check_classes(&self, dataset_classes: &[String], run_dir: &Path) -> Result<()> {
        if self.classes == dataset_classes {
            return Ok(());
        }
        Err(input(
            format!(
                "the dataset's classes differ from those the run was trained on: {}",
                class_difference(&self.classes, dataset_classes)
            ),
            run_dir.join("model.json").display().to_string(),
            format!(
                "the model's outputs are model.json's classes {}, the dataset now has {}: restore \
                 the dataset the run was trained on, or train a new run on this one (another \
                 --run-dir)",
                show_list(&self.classes),
                show_list(dataset_classes)
            ),
        ))
    }

    /// Question ids in output order.
    pub fn question_ids(&self) -> Vec<String> {
        self.questions.iter().map(|q| q.id.clone()).collect()
    }
}

/// `[a, b, c]`, cut after 20 names.
fn show_list(names: &[String]) -> String {
    const SHOWN: usize = 20;
    let mut s = names
        .iter()
        .take(SHOWN)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        s.push_str(&format!(", … ({} in all)", names.len()));
    }
    format!("[{s}]")
}

/// What differs between two class lists, in words: names only in one of them, else the first
/// position where their order differs.
fn class_difference(model: &[String], dataset: &[String]) -> String {
    let only = |a: &[String], b: &[String]| -> Vec<String> {
        a.iter().filter(|x| !b.contains(x)).cloned().collect()
    };
    let (gone, new) = (only(model, dataset), only(dataset, model));
    let mut parts = Vec::new();
    if !new.is_empty() {
        parts.push(format!("new in the dataset {}", show_list(&new)));
    }
    if !gone.is_empty() {
        parts.push(format!("no longer in the dataset {}", show_list(&gone)));
    }
    if parts.is_empty() {
        let i = model
            .iter()
            .zip(dataset)
            .position(|(a, b)| a != b)
            .unwrap_or(model.len().min(dataset.len()));
        parts.push(format!(
            "the same names in another order (label {i} is {:?} in model.json, {:?} now)",
            model.get(i).map_or("", String::as_str),
            dataset.get(i).map_or("", String::as_str)
        ));
    }
    parts.join("; ")
}

/// One line of a classification run's `metrics.jsonl`.
pub type EpochMetrics = fit::EpochRecord<ClassEpoch>;

/// `summary.json`: the run's final numbers. `test_top1`/`test_top5` are the LAST epoch's (choosing the
/// best epoch on the test set would flatter the result); the best epoch is reported beside them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub arch: String,
    pub num_classes: usize,
    pub num_aspects: usize,
    pub params: usize,
    pub epochs: usize,
    pub train_images: usize,
    pub test_images: usize,
    pub test_top1: f64,
    pub test_top5: f64,
    pub best_test_top1: f64,
    pub best_epoch: usize,
    pub seconds: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_aspects: Option<AspectMetrics>,
    /// How complete the training store was, and how many training pairs had no target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aspect_targets: Option<TargetCoverage>,
}

/// The training store's counts (`missing`: the teacher could not answer; `never_scored`: no
/// labeling run reached the pair) and the masked pairs among the images trained on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TargetCoverage {
    #[serde(flatten)]
    pub store: StoreSummary,
    /// `[i, n]` (as written) when the store is one shard of a `--shard i/n` run.
    pub shard: Option<crate::scores::Shard>,
    /// (image, question) pairs of the training images.
    pub train_pairs: usize,
    /// Of those, pairs without a target (masked out of the BCE).
    pub masked_train_pairs: usize,
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
        })
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

/// The trainable parameters of `varmap` by name, sorted (BatchNorm running statistics excluded).
pub fn trainable_vars(varmap: &VarMap) -> Vec<(String, candle_core::Var)> {
    let data = varmap.data().lock().expect("varmap lock");
    let mut v: Vec<_> = data
        .iter()
        .filter(|(n, _)| !student::is_running_stat(n))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// The device training runs on: the first CUDA GPU when built with `cuda` and one is present.
pub fn device() -> Result<Device> {
    #[cfg(feature = "cuda")]
    {
        Ok(Device::cuda_if_available(0)?)
    }
    #[cfg(not(feature = "cuda"))]
    {
        Ok(Device::Cpu)
    }
}

/// The train and test datasets of a config (subsets when limits are set) and the full splits
/// (a score store or a logits file is made for, and fingerprinted on, a full split).
pub struct Datasets {
    pub full_train: Arc<dyn Dataset>,
    pub full_test: Arc<dyn Dataset>,
    pub train: Arc<dyn Dataset>,
    pub test: Arc<dyn Dataset>,
}

impl Datasets {
    /// The full split.
    pub fn full(&self, split: Split) -> &Arc<dyn Dataset> {
        match split {
            Split::Train => &self.full_train,
            Split::Test => &self.full_test,
        }
    }

    /// The images a run uses of the split (its `train_limit` / `test_limit` subset).
    pub fn used(&self, split: Split) -> &Arc<dyn Dataset> {
        match split {
            Split::Train => &self.train,
            Split::Test => &self.test,
        }
    }
}

/// The seed of the `data.test_limit` subset. Not the training seed: runs with different seeds
/// are compared on their test accuracy, so they must be evaluated on the same test images.
const TEST_SUBSET_SEED: u64 = 0;

pub fn open_datasets(cfg: &TrainConfig) -> Result<Datasets> {
    let full_train = data::open(&cfg.data.dataset, Split::Train)?;
    let full_test = data::open(&cfg.data.dataset, Split::Test)?;
    let train: Arc<dyn Dataset> = match cfg.data.train_limit {
        Some(n) if n < full_train.len() => {
            Arc::new(Subset::stratified(full_train.clone(), n, cfg.train.seed))
        }
        _ => full_train.clone(),
    };
    let test: Arc<dyn Dataset> = match cfg.data.test_limit {
        Some(n) if n < full_test.len() => {
            Arc::new(Subset::stratified(full_test.clone(), n, TEST_SUBSET_SEED))
        }
        _ => full_test.clone(),
    };
    if train.classes() != test.classes() {
        return Err(input(
            "train and test splits have different class lists",
            cfg.data.dataset.to_string(),
            "every class needs images in both splits",
        ));
    }
    Ok(Datasets {
        full_train,
        full_test,
        train,
        test,
    })
}

/// The questions a store answers: the aspect set's (with their texts) when given, else the
/// store's question ids alone.
pub fn store_questions(
    store: &ScoreStore,
    set: Option<AspectSet>,
) -> Vec<crate::aspects::Question> {
    match set {
        Some(set) => set.questions,
        None => store
            .manifest
            .question_ids
            .iter()
            .map(|id| crate::aspects::Question {
                id: id.clone(),
                text: String::new(),
                kind: String::new(),
            })
            .collect(),
    }
}

/// Open a score store and check it against the dataset it must describe and the aspect set.
pub fn open_store(
    path: &Path,
    aspects: Option<&Path>,
    ds: &dyn Dataset,
) -> Result<(ScoreStore, Option<AspectSet>)> {
    let store = ScoreStore::open(path)?;
    let set = match aspects {
        Some(p) => {
            let set = AspectSet::load(p)?;
            if set.classes != ds.classes() {
                return Err(input(
                    "the aspect set's classes differ from the dataset's",
                    p.display().to_string(),
                    "use the aspects.json made for this dataset",
                ));
            }
            Some(set)
        }
        None => None,
    };
    let hash = set
        .as_ref()
        .map(|s| s.hash.clone())
        .unwrap_or_else(|| store.manifest.aspect_hash.clone());
    store.check(&ds.fingerprint(), &hash)?;
    Ok((store, set))
}

/// Aspect targets for the images `ds` of the full split `full` from the store at `path`, whose
/// questions must be `question_ids` (the model's aspect outputs, in order): a store of other
/// questions would be scored against the wrong outputs, or past their end.
pub fn open_targets(
    path: &Path,
    aspects: Option<&Path>,
    full: &dyn Dataset,
    ds: &dyn Dataset,
    question_ids: &[String],
) -> Result<Targets> {
    let at = path.display().to_string();
    let (store, _) = open_store(path, aspects, full)?;
    let store_ids = &store.manifest.question_ids;
    if store_ids != question_ids {
        return Err(input(
            format!(
                "the score store answers {} questions {}, the model has {} aspect outputs {}",
                store_ids.len(),
                show_list(store_ids),
                question_ids.len(),
                show_list(question_ids)
            ),
            at,
            "use a store labeled with the aspect set the run was trained with (aspects.aspects)",
        ));
    }
    Targets::from_store(&store, ds, &at)
}

/// A store with pairs no labeling run reached (a `--limit` run, an interrupted one, one shard
/// of several) is refused unless `aspects.allow_partial` is set.
pub(crate) fn check_complete(store: &ScoreStore, allow_partial: bool, at: &str) -> Result<()> {
    let s = store.summary();
    let shard = store.manifest.shard.filter(|s| s.count() > 1);
    if allow_partial || (s.never_scored == 0 && shard.is_none()) {
        return Ok(());
    }
    let (what, how) = match shard {
        Some(shard) => (
            format!(
                "the score store is shard {shard} of a sharded labeling run ({} of {} pairs never scored)",
                s.never_scored,
                s.images * s.questions
            ),
            "merge all shards into one store with `makd label merge SHARD_DIR… --out DIR` and \
             point aspects.scores at it"
                .to_string(),
        ),
        None => (
            format!(
                "the score store is not fully labeled: {} of {} pairs were never scored",
                s.never_scored,
                s.images * s.questions
            ),
            "finish labeling: run the same `makd label` command again without --limit (it \
             resumes where it stopped)"
                .to_string(),
        ),
    };
    Err(input(
        what,
        at,
        format!("{how}; or set aspects.allow_partial = true to train with those pairs masked out"),
    ))
}

/// Train (or resume) the run in `run_dir`.
pub fn train(cfg: &TrainConfig, run_dir: &RunDir, fresh: bool) -> Result<Summary> {
    // Compared with, and saved as, the run dir's config.toml: paths absolute.
    if cfg.task != crate::train::config::TaskKind::Classify {
        return Err(input(
            "this config trains a detector; the classification trainer cannot run it",
            "task",
            "run it with makd train (it picks the detection trainer from task = \"detect\")",
        ));
    }
    let cfg = &cfg.with_absolute_paths(&std::env::current_dir().at(".")?)?;
    if fresh {
        // Before the slow opening of datasets and stores; the files go only once they all check.
        run_dir.check_fresh()?;
    }
    let dev = device()?;
    let ds = open_datasets(cfg)?;
    let c = ds.train.classes().len();
    let at_scores = |p: &Path| p.display().to_string();
    let mut questions = Vec::new();
    let mut coverage = None;
    let targets = match &cfg.aspects.scores {
        Some(p) => {
            let (store, set) =
                open_store(p, cfg.aspects.aspects.as_deref(), ds.full_train.as_ref())?;
            check_complete(&store, cfg.aspects.allow_partial, &at_scores(p))?;
            coverage = Some(TargetCoverage {
                store: store.summary(),
                shard: store.manifest.shard,
                train_pairs: 0,
                masked_train_pairs: 0,
            });
            questions = store_questions(&store, set);
            Some(Targets::from_store(
                &store,
                ds.train.as_ref(),
                &at_scores(p),
            )?)
        }
        None => None,
    };
    if let (Some(cov), Some(t)) = (coverage.as_mut(), &targets) {
        cov.train_pairs = t.mask.data.len();
        cov.masked_train_pairs = t.mask.data.iter().filter(|&&m| m == 0.0).count();
        if cov.store.never_scored > 0 {
            progress::log(format!(
                "aspects.allow_partial: training with {} of {} training pairs masked ({} never scored, {} missing in the store)",
                cov.masked_train_pairs, cov.train_pairs, cov.store.never_scored, cov.store.missing
            ));
        }
    }
    let question_ids: Vec<String> = questions.iter().map(|q| q.id.clone()).collect();
    let test_targets = match &cfg.aspects.test_scores {
        Some(p) => Some(open_targets(
            p,
            cfg.aspects.aspects.as_deref(),
            ds.full_test.as_ref(),
            ds.test.as_ref(),
            &question_ids,
        )?),
        None => None,
    };
    let q = targets.as_ref().map_or(0, |t| t.q);
    let teacher_logits = match &cfg.kd.logits {
        Some(p) => Some(TeacherLogits::load(
            p,
            ds.full_train.as_ref(),
            ds.train.as_ref(),
        )?),
        None => None,
    };
    if let Some(t) = &teacher_logits {
        if t.c != c {
            return Err(input(
                format!("teacher logits have {} classes, the dataset {c}", t.c),
                "kd.logits",
                "use logits of a teacher trained on this dataset",
            ));
        }
    }

    // Fresh start or resume.
    let info = ModelInfo {
        arch: cfg.model.arch.to_string(),
        classes: ds.train.classes().to_vec(),
        num_aspects: q,
        questions,
        train_fingerprint: Some(ds.full_train.fingerprint()),
        test_fingerprint: Some(ds.full_test.fingerprint()),
    };
    let resume_from = fit::open_run(cfg, run_dir, fresh, &info, check_resumable)?;
    let mut model = Model::build(cfg, c, q, &dev)?;
    let mut opt = Optimizer::new(cfg.optim.clone(), model.trainable());
    let mut run = fit::restore(
        resume_from.as_deref(),
        run_dir,
        &mut model.varmap,
        &mut opt,
        &dev,
        cfg.train.epochs,
    )?;
    let params = model.param_count();
    progress::log(format!(
        "training {} ({params} parameters, {c} classes + {q} aspects) on {} train / {} test images",
        cfg.model.arch,
        ds.train.len(),
        ds.test.len()
    ));

    let transform = Arc::new(Transform::new(cfg.transform.clone())?);
    let mut task = Classify::new(
        cfg,
        &model,
        ds.train.clone(),
        ds.test.clone(),
        transform,
        targets.as_ref(),
        test_targets.as_ref(),
        teacher_logits.as_ref(),
    );
    fit::fit(&mut task, cfg, run_dir, &model.varmap, &mut opt, &mut run)?;
    if task.last_eval.images == 0 {
        // Nothing left to train (a finished run resumed): report its final evaluation.
        task.last_eval = task.evaluate()?;
    }
    let last_eval = task.last_eval;
    let state = run.state;
    let summary = Summary {
        arch: cfg.model.arch.to_string(),
        num_classes: c,
        num_aspects: q,
        params,
        epochs: cfg.train.epochs,
        train_images: ds.train.len(),
        test_images: ds.test.len(),
        test_top1: last_eval.top1,
        test_top5: last_eval.top5,
        best_test_top1: state.best_score,
        best_epoch: state.best_epoch,
        seconds: state.seconds,
        test_aspects: last_eval.aspects,
        aspect_targets: coverage,
    };
    files::write_json_atomic(&run_dir.summary(), &summary)?;
    Ok(summary)
}

/// A resume continues the saved run only on the data it was trained on: the same classes in
/// the same order, the same images and labels, the same questions.
pub(crate) fn check_resumable(saved: &ModelInfo, now: &ModelInfo, root: &Path) -> Result<()> {
    saved.check_classes(&now.classes, root)?;
    let changed = |split: &str, a: &Option<String>, b: &Option<String>| {
        match (a, b) {
        (Some(a), Some(b)) if a != b => Err(input(
            format!(
                "the {split} split changed since the run started (dataset fingerprint {} in model.json, {} now: images or labels were added, removed or moved)",
                &a[..a.len().min(12)],
                &b[..b.len().min(12)]
            ),
            root.join("model.json").display().to_string(),
            "restore the dataset the run was trained on, or start over with --fresh (or another --run-dir)",
        )),
        _ => Ok(()),
    }
    };
    changed("train", &saved.train_fingerprint, &now.train_fingerprint)?;
    changed("test", &saved.test_fingerprint, &now.test_fingerprint)?;
    if saved.question_ids() != now.question_ids() {
        return Err(input(
            format!(
                "the aspect questions changed since the run started ({} in model.json, {} now)",
                show_list(&saved.question_ids()),
                show_list(&now.question_ids())
            ),
            root.join("model.json").display().to_string(),
            "use the score store the run was trained with, or start over with --fresh",
        ));
    }
    Ok(())
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
    for batch in iter {
        let batch = batch?;
        let xs = batch.images_tensor(&model.device)?;
        let logits = model.student.forward(&xs, Pass::Eval)?;
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
        out.extend(model.student.features(&xs, Pass::Eval)?.to_vec2::<f32>()?);
    }
    Ok(out)
}

/// Load a finished run's model (weights of `checkpoints/<which>`) with its config and output layout.
pub fn load_run(run_dir: &RunDir, which: &str) -> Result<(TrainConfig, ModelInfo, Model)> {
    let cfg = run_dir.load_config()?;
    let info = run_dir.load_model_info()?;
    let dir = checkpoint::existing(&run_dir.checkpoint(which)).ok_or_else(|| {
        input(
            format!("no {which} checkpoint"),
            run_dir.root.display().to_string(),
            "train first (makd train), or pass --checkpoint last",
        )
    })?;
    let mut model = Model::build(&cfg, info.classes.len(), info.num_aspects, &device()?)?;
    checkpoint::load_model(&dir, &mut model.varmap)?;
    Ok((cfg, info, model))
}

/// The dotted keys whose values differ between two TOML documents, with both values
/// (`train.epochs: 3 in the run dir, 5 now`).
pub(crate) fn config_diff(a: &str, b: &str) -> Vec<String> {
    fn walk(prefix: &str, a: Option<&toml::Value>, b: Option<&toml::Value>, out: &mut Vec<String>) {
        match (a, b) {
            (Some(toml::Value::Table(x)), Some(toml::Value::Table(y))) => {
                let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, x.get(k), y.get(k), out);
                }
            }
            (x, y) if x != y => {
                let show = |v: Option<&toml::Value>| v.map_or("(unset)".into(), |v| v.to_string());
                out.push(format!(
                    "{prefix}: {} in the run dir, {} now",
                    show(x),
                    show(y)
                ))
            }
            _ => {}
        }
    }
    let parse = |s: &str| s.parse::<toml::Value>().ok();
    let mut out = Vec::new();
    walk("", parse(a).as_ref(), parse(b).as_ref(), &mut out);
    out
}

/// Softmax over the class logits of one output row, and sigmoid over its aspect logits.
pub fn split_outputs(row: &[f32], c: usize) -> Result<(Vec<f32>, Vec<f32>)> {
    let cls = Tensor::new(&row[..c], &Device::Cpu)?;
    let probs = candle_nn::ops::softmax(&cls, D::Minus1)?.to_vec1::<f32>()?;
    let aspects = row[c..].iter().map(|&x| 1.0 / (1.0 + (-x).exp())).collect();
    Ok((probs, aspects))
}

/// A classification run's `metrics.jsonl` (none yet: empty).
pub fn read_metrics(path: &Path) -> Result<Vec<EpochMetrics>> {
    fit::read_records(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_imagefolder(root: &Path, per_class: usize) {
        for split in ["train", "test"] {
            for class in ["a", "b", "c"] {
                let dir = root.join(split).join(class);
                std::fs::create_dir_all(&dir).unwrap();
                for i in 0..per_class {
                    image::GrayImage::from_pixel(4, 4, image::Luma([i as u8]))
                        .save(dir.join(format!("{i:02}.png")))
                        .unwrap();
                }
            }
        }
    }

    /// Seeds are compared on their test accuracy: `data.test_limit` must pick the same test
    /// images whatever `train.seed` is, while `data.train_limit` follows the seed.
    #[test]
    fn the_test_subset_does_not_depend_on_the_seed() {
        let dir = tempfile::tempdir().unwrap();
        tiny_imagefolder(dir.path(), 20);
        let ids = |seed: u64| {
            let cfg = TrainConfig::from_sets(&[
                format!("data.dataset=\"imagefolder:{}\"", dir.path().display()),
                "data.train_limit=9".into(),
                "data.test_limit=9".into(),
                format!("train.seed={seed}"),
            ])
            .unwrap();
            let d = open_datasets(&cfg).unwrap();
            let of = |ds: &Arc<dyn Dataset>| -> Vec<String> {
                (0..ds.len()).map(|i| ds.id(i).to_string()).collect()
            };
            (of(&d.train), of(&d.test))
        };
        let ((train0, test0), (train1, test1)) = (ids(0), ids(1));
        assert_eq!(test0.len(), 9);
        assert_eq!(test0, test1, "the test subset changed with the seed");
        assert_ne!(train0, train1, "the training subset should follow the seed");
    }

    #[test]
    fn class_differences_in_words() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let d = class_difference(&v(&["b", "c"]), &v(&["a", "b", "c"]));
        assert_eq!(d, "new in the dataset [a]");
        let d = class_difference(&v(&["b", "c"]), &v(&["a", "b"]));
        assert_eq!(d, "new in the dataset [a]; no longer in the dataset [c]");
        let d = class_difference(&v(&["x", "y"]), &v(&["y", "x"]));
        assert!(d.contains("another order") && d.contains("label 0"), "{d}");
        let many: Vec<String> = (0..30).map(|i| format!("c{i:02}")).collect();
        assert!(show_list(&many).ends_with(", … (30 in all)]"));
    }
}
