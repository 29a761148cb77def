//! The training loop: epochs of CE + α·BCE, evaluation on every test image, checkpoints after
//! every epoch, and an exact resume from `checkpoints/last/`.

use crate::aspects::AspectSet;
use crate::data::transform::Transform;
use crate::data::{self, Dataset, Split, Subset};
use crate::error::{input, IoContext, Result};
use crate::files;
use crate::progress;
use crate::scores::{ScoreStore, StoreSummary};
use crate::train::checkpoint;
use crate::train::classify::{ClassEpoch, Classify, Model};
use crate::train::config::TrainConfig;
use crate::train::fit;
use crate::train::kd::TeacherLogits;
use crate::train::metrics::AspectMetrics;
use crate::train::optim::Optimizer;
use crate::train::run_dir::{show_list, ModelInfo, RunDir};
use crate::train::targets::Targets;
use candle_core::Device;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;

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
    let resume_from = fit::open_run(cfg, run_dir, fresh, &info)?;
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

/// Load a finished run's model (weights of `checkpoints/<which>`) with its config and output layout.
pub fn load_run(run_dir: &RunDir, which: &str) -> Result<(TrainConfig, ModelInfo, Model)> {
    let cfg = run_dir.load_config()?;
    let info = run_dir.load_model_info()?;
    let dir = run_dir.weights(which)?;
    let mut model = Model::build(&cfg, info.classes.len(), info.num_aspects, &device()?)?;
    checkpoint::load_model(&dir, &mut model.varmap)?;
    Ok((cfg, info, model))
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
}
