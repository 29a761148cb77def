//! The one training loop every task shares: epochs, shuffling, the learning-rate schedule, the
//! optimizer step, the divergence check, `metrics.jsonl`, checkpoints and the exact resume.
//!
//! A [`Task`] (classification in [`super::classify`], detection in [`crate::detect::task`])
//! supplies what differs: its batches, the loss of a batch, and its evaluation at the end of an
//! epoch. The loop owns everything a user relies on being the same for every task: a killed run
//! resumes to the result of an uninterrupted one, `best/` is the epoch with the task's best
//! score, and a run dir reads the same whatever it trained.

use crate::error::{input, IoContext, Result};
use crate::files;
use crate::progress;
use crate::student::Pass;
use crate::train::checkpoint::{self, State};
use crate::train::config::TrainConfig;
use crate::train::optim::Optimizer;
use crate::train::run_dir::{check_resumable, config_diff, ModelInfo, RunDir};
use candle_core::Tensor;
use candle_nn::VarMap;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What a task supplies to the shared loop.
pub trait Task {
    /// One training batch as the task's loader builds it.
    type Batch;
    /// The task's own numbers of one epoch (train-side sums and its evaluation), written into
    /// `metrics.jsonl` beside the loop's.
    type Epoch: Serialize + DeserializeOwned + Clone;

    /// Number of training samples (an epoch visits each once).
    fn train_len(&self) -> usize;
    /// The batches of one epoch, visiting `order` (training sample indices); `seed` seeds the
    /// augmentation.
    fn batches(
        &self,
        order: Vec<usize>,
        seed: u64,
    ) -> Result<Box<dyn Iterator<Item = Result<Self::Batch>>>>;
    /// Samples in a batch.
    fn batch_len(batch: &Self::Batch) -> usize;
    /// The loss of one batch (the task keeps its own running sums of the parts).
    fn loss(&mut self, batch: &Self::Batch, pass: Pass) -> Result<Tensor>;
    /// The task's part of the progress bar's message (after the loss).
    fn running(&self) -> String;
    /// Evaluate at the end of an epoch, hand over the epoch's numbers, and reset the sums.
    fn finish_epoch(&mut self) -> Result<Evaluated<Self::Epoch>>;
}

/// A task's end-of-epoch numbers: its metrics, the score `best/` is chosen by (higher is
/// better), and its part of the epoch's log line.
pub struct Evaluated<E> {
    pub metrics: E,
    pub score: f64,
    pub line: String,
}

/// One line of `metrics.jsonl`: the loop's fields and the task's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(bound(deserialize = "E: DeserializeOwned"))]
pub struct EpochRecord<E> {
    pub epoch: usize,
    pub lr: f64,
    /// The loss minimised (every term with its weight), averaged over the epoch's samples.
    pub train_loss: f64,
    #[serde(flatten)]
    pub task: E,
    pub seconds: f64,
    pub images_per_s: f64,
    /// Seconds of the epoch's training the step spent waiting for the loader's next batch (a
    /// share of `seconds` that more `data.workers` can win back). Absent in runs of older makd.
    #[serde(default)]
    pub loader_wait_s: f64,
}

/// Check a run dir for this run, start it afresh or find the checkpoint to resume from, and
/// write `config.toml` and `model.json`. `cfg` must have absolute paths (it is compared with,
/// and saved as, the run dir's config).
pub fn open_run(
    cfg: &TrainConfig,
    run_dir: &RunDir,
    fresh: bool,
    info: &ModelInfo,
) -> Result<Option<PathBuf>> {
    if fresh {
        run_dir.clear_for_fresh()?;
    }
    let resume_from = checkpoint::existing(&run_dir.checkpoint("last"));
    if resume_from.is_some() {
        let saved = run_dir.load_config()?;
        if &saved != cfg {
            return Err(input(
                format!(
                    "this run dir holds a run with a different config (differs in: {})",
                    config_diff(&saved.to_toml(), &cfg.to_toml()).join(", ")
                ),
                run_dir.root.display().to_string(),
                "pass --fresh to start over in it, or use another --run-dir",
            ));
        }
        check_resumable(&run_dir.load_model_info()?, info, &run_dir.root)?;
    }
    std::fs::create_dir_all(&run_dir.root).at(&run_dir.root)?;
    files::write_atomic(&run_dir.config(), cfg.to_toml().as_bytes())?;
    files::write_json_atomic(&run_dir.model_info(), info)?;
    Ok(resume_from)
}

/// Where a run stands after [`restore`]: its state and the epochs already recorded.
pub struct Progress<E> {
    pub state: State,
    pub history: Vec<EpochRecord<E>>,
}

/// Load the checkpoint `from` (weights, optimizer, state) and the epochs it covers.
pub fn restore<E: DeserializeOwned>(
    from: Option<&Path>,
    run_dir: &RunDir,
    varmap: &mut VarMap,
    opt: &mut Optimizer,
    device: &candle_core::Device,
    epochs: usize,
) -> Result<Progress<E>> {
    let Some(dir) = from else {
        return Ok(Progress {
            state: State::default(),
            history: Vec::new(),
        });
    };
    let state = checkpoint::load_model(dir, varmap)?;
    checkpoint::load_optimizer(dir, opt, state.step, device)?;
    let history = read_records(&run_dir.metrics())?
        .into_iter()
        .filter(|m: &EpochRecord<E>| m.epoch <= state.epoch)
        .collect();
    progress::log(format!(
        "resuming {} after epoch {}/{}",
        run_dir.root.display(),
        state.epoch,
        epochs
    ));
    Ok(Progress { state, history })
}

/// Train the remaining epochs of `cfg.train.epochs`, checkpointing after each.
pub fn fit<T: Task>(
    task: &mut T,
    cfg: &TrainConfig,
    run_dir: &RunDir,
    varmap: &VarMap,
    opt: &mut Optimizer,
    run: &mut Progress<T::Epoch>,
) -> Result<()> {
    let n_train = task.train_len();
    let steps_per_epoch = n_train.div_ceil(cfg.train.batch_size);
    let (last_dir, best_dir) = (run_dir.checkpoint("last"), run_dir.checkpoint("best"));
    for epoch in run.state.epoch..cfg.train.epochs {
        let t0 = Instant::now();
        let mut order: Vec<usize> = (0..n_train).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(mix(
            cfg.train.seed,
            epoch as u64,
        )));
        let mut iter = task.batches(order, mix(cfg.train.seed ^ 0xA5A5, epoch as u64))?;
        let pb = progress::bar(
            steps_per_epoch as u64,
            &format!("epoch {}/{}", epoch + 1, cfg.train.epochs),
            "steps",
        );
        let (mut sum_loss, mut seen) = (0.0, 0usize);
        let mut lr = opt.lr();
        let mut loader_wait = 0.0;
        for i in 0.. {
            let asked = Instant::now();
            let Some(batch) = iter.next() else { break };
            loader_wait += asked.elapsed().as_secs_f64();
            let batch = batch?;
            lr = cfg.schedule.lr_at(
                cfg.optim.lr,
                epoch as f64 + i as f64 / steps_per_epoch as f64,
                cfg.train.epochs,
            );
            opt.set_lr(lr);
            // Dropout masks from (seed, step): the same after a resume.
            let pass = Pass::Train {
                seed: mix(cfg.train.seed ^ 0xD0D0, opt.steps()),
            };
            let total = task.loss(&batch, pass)?;
            let loss_v = total.to_scalar::<f32>()?;
            if !loss_v.is_finite() {
                return Err(input(
                    format!("the loss became {loss_v} at epoch {} step {i}", epoch + 1),
                    run_dir.root.display().to_string(),
                    "lower optim.lr; the last good checkpoint is in checkpoints/last",
                ));
            }
            let grads = total.backward()?;
            opt.step(&grads)?;
            let n = T::batch_len(&batch);
            sum_loss += loss_v as f64 * n as f64;
            seen += n;
            pb.set_message(format!(
                "loss {:.4} {}",
                sum_loss / seen as f64,
                task.running()
            ));
            pb.inc(1);
        }
        pb.finish_and_clear();
        let train_secs = t0.elapsed().as_secs_f64();
        let eval = task.finish_epoch()?;
        let secs = t0.elapsed().as_secs_f64();
        let state = &mut run.state;
        state.epoch = epoch + 1;
        state.step = opt.steps();
        state.seconds += secs;
        let m = EpochRecord {
            epoch: epoch + 1,
            lr,
            train_loss: sum_loss / seen as f64,
            task: eval.metrics,
            seconds: secs,
            images_per_s: seen as f64 / train_secs,
            loader_wait_s: loader_wait,
        };
        progress::log(format!(
            "epoch {}/{}  loss {:.4}  {}  lr {lr:.2e}  {:.0} img/s  {secs:.1} s (loader wait {:.0} %)",
            m.epoch,
            cfg.train.epochs,
            m.train_loss,
            eval.line,
            m.images_per_s,
            100.0 * loader_wait / train_secs.max(1e-9)
        ));
        run.history.push(m);
        let improved = eval.score > state.best_score || state.best_epoch == 0;
        if improved {
            state.best_score = eval.score;
            state.best_epoch = epoch + 1;
        }
        write_records(&run_dir.metrics(), &run.history)?;
        checkpoint::save_epoch(&last_dir, &best_dir, varmap, opt, state, improved)?;
    }
    Ok(())
}

/// The loop's seed mixer: (seed, epoch) and (seed, step) pairs give unrelated streams.
pub(crate) fn mix(a: u64, b: u64) -> u64 {
    a.wrapping_mul(0x9E3779B97F4A7C15) ^ b.wrapping_add(0x632BE59BD9B4E019).rotate_left(17)
}

/// Read `metrics.jsonl` (none yet: empty).
pub fn read_records<E: DeserializeOwned>(path: &Path) -> Result<Vec<EpochRecord<E>>> {
    if !path.exists() {
        return Ok(vec![]);
    }
    let text = std::fs::read_to_string(path).at(path)?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| {
                input(
                    format!("bad metrics line: {e}"),
                    format!("{}:{}", path.display(), i + 1),
                    "metrics.jsonl is written by makd train (is this a run of another task?)",
                )
            })
        })
        .collect()
}

fn write_records<E: Serialize>(path: &Path, history: &[EpochRecord<E>]) -> Result<()> {
    let mut text = String::new();
    for m in history {
        text.push_str(&serde_json::to_string(m).expect("metrics serialize"));
        text.push('\n');
    }
    files::write_atomic(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::optim::OptimConfig;
    use candle_core::{DType, Device, Var};
    use std::time::Duration;

    /// Fits y = 2 from batches that each take `delay` to arrive.
    struct SlowBatches {
        w: Var,
        delay: Duration,
        seen: usize,
    }

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct Nothing {}

    impl Task for SlowBatches {
        type Batch = usize;
        type Epoch = Nothing;
        fn train_len(&self) -> usize {
            8
        }
        fn batches(
            &self,
            order: Vec<usize>,
            _seed: u64,
        ) -> Result<Box<dyn Iterator<Item = Result<usize>>>> {
            let delay = self.delay;
            Ok(Box::new(
                order
                    .chunks(4)
                    .map(|c| c.len())
                    .collect::<Vec<_>>()
                    .into_iter()
                    .map(move |n| {
                        std::thread::sleep(delay);
                        Ok(n)
                    }),
            ))
        }
        fn batch_len(batch: &usize) -> usize {
            *batch
        }
        fn loss(&mut self, _batch: &usize, _pass: Pass) -> Result<Tensor> {
            self.seen += 1;
            Ok((self.w.as_tensor() - 2.0)?.sqr()?.sum_all()?)
        }
        fn running(&self) -> String {
            String::new()
        }
        fn finish_epoch(&mut self) -> Result<Evaluated<Nothing>> {
            Ok(Evaluated {
                metrics: Nothing {},
                score: 0.0,
                line: String::new(),
            })
        }
    }

    fn run(delay: Duration) -> Vec<EpochRecord<Nothing>> {
        let dir = tempfile::tempdir().unwrap();
        let run_dir = RunDir::new(dir.path());
        let mut cfg = TrainConfig::default();
        cfg.train.epochs = 2;
        cfg.train.batch_size = 4;
        let varmap = VarMap::new();
        varmap
            .get(
                1,
                "w",
                candle_nn::Init::Const(0.0),
                DType::F32,
                &Device::Cpu,
            )
            .unwrap();
        let w = varmap.data().lock().unwrap()["w"].clone();
        let mut opt = Optimizer::new(OptimConfig::default(), vec![("w".into(), w.clone())]);
        let mut task = SlowBatches { w, delay, seen: 0 };
        let mut progress = Progress {
            state: State::default(),
            history: Vec::new(),
        };
        std::fs::create_dir_all(&run_dir.root).unwrap();
        fit(&mut task, &cfg, &run_dir, &varmap, &mut opt, &mut progress).unwrap();
        assert_eq!(task.seen, 4, "2 epochs of 2 batches");
        read_records(&run_dir.metrics()).unwrap()
    }

    #[test]
    fn loader_wait_counts_the_time_batches_take_to_arrive() {
        let slow = run(Duration::from_millis(60));
        assert_eq!(slow.len(), 2);
        for m in &slow {
            // two batches of 60 ms each
            assert!(m.loader_wait_s >= 0.12, "{}", m.loader_wait_s);
            assert!(
                m.loader_wait_s <= m.seconds,
                "{} > {}",
                m.loader_wait_s,
                m.seconds
            );
        }
        let fast = run(Duration::ZERO);
        assert!(
            fast.iter().all(|m| m.loader_wait_s < 0.05),
            "{:?}",
            fast[0].loader_wait_s
        );
    }

    #[test]
    fn records_of_older_runs_read_without_loader_wait() {
        let line = r#"{"epoch":1,"lr":0.1,"train_loss":0.5,"seconds":2.0,"images_per_s":10.0}"#;
        let m: EpochRecord<Nothing> = serde_json::from_str(line).unwrap();
        assert_eq!(m.loader_wait_s, 0.0);
    }
}
