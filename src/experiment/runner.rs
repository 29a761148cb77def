//! Runs an experiment: every variant × seed as a normal run dir (so each is resumable and
//! inspectable), then aggregates them into [`ExperimentResults`] and writes the report.
//!
//! The controls are what make the answer honest: `random-target` trains against uniform random
//! P(yes) of the same shape, `shuffled-target` against the teacher's rows permuted across images
//! (same marginals, no link to the image). A gain of `makd` over the baseline that the controls
//! match is regularisation, not the teacher's knowledge.

use crate::aspects::AspectSet;
use crate::data::transform::Transform;
use crate::data::{self, Dataset, Split, Subset};
use crate::error::{input, Result};
use crate::experiment::config::ExperimentConfig;
use crate::experiment::results::*;
use crate::experiment::stats;
use crate::experiment::variant::Variant;
use crate::progress;
use crate::scores::derive::{control_store, first_questions, Control};
use crate::scores::ScoreStore;
use crate::train::classify;
use crate::train::config::TrainConfig;
use crate::train::kd::{KdMethod, TeacherLogits};
use crate::train::run_dir::RunDir;
use crate::train::targets::Targets;
use crate::train::trainer::{self, read_metrics, Summary};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Run (or resume) the experiment: every variant × seed as a run dir under `out/runs/`, control
/// stores under `out/stores/`. Returns every number; `report::write_report` turns them
/// into `results.json`, `report.md`, `report.html` and `plots/` (the caller's step, so the
/// report depends on the experiment and not the other way round).
pub fn run(
    cfg: &ExperimentConfig,
    config_json: serde_json::Value,
    out: &Path,
) -> Result<ExperimentResults> {
    let base = TrainConfig::load(&cfg.train_config, &cfg.set)?;
    let variants = cfg.all_variants();
    let needs_aspects = variants.iter().any(|v| v.uses_aspects());
    if needs_aspects && base.aspects.scores.is_none() {
        return Err(input(
            "aspect variants need the teacher's score store",
            cfg.train_config.display().to_string(),
            "set aspects.scores in the training config (makd label makes one)",
        ));
    }
    let full_train = data::open(&base.data.dataset, Split::Train)?;
    let teacher_store = match &base.aspects.scores {
        Some(p) => Some(trainer::open_store(
            p,
            base.aspects.aspects.as_deref(),
            full_train.as_ref(),
        )?),
        None => None,
    };
    let aspect_set: Option<AspectSet> = teacher_store.as_ref().and_then(|(_, s)| s.clone());
    // Only a KD variant pays for a teacher network (validation refuses a [kd] no variant uses).
    let kd_logits = match &cfg.kd {
        Some(k) if cfg.needs_kd_teacher() => Some(teacher_logits(k, &base, cfg.seeds[0], out)?),
        _ => None,
    };

    let mut results_variants = Vec::new();
    let total = variants.len() * cfg.seeds.len();
    let mut done = 0;
    for &v in &variants {
        let mut runs = Vec::new();
        let mut per_q: Vec<Vec<f64>> = Vec::new();
        for &seed in &cfg.seeds {
            done += 1;
            progress::log(format!("[{done}/{total}] {v}, seed {seed}"));
            let mut rc = base.clone();
            rc.train.seed = seed;
            apply_variant(
                v,
                seed,
                &mut rc,
                teacher_store.as_ref().map(|(s, _)| s),
                aspect_set.as_ref(),
                kd_logits.as_deref(),
                cfg,
                out,
            )?;
            let run_dir = RunDir::new(
                out.join("runs")
                    .join(v.to_string())
                    .join(format!("seed{seed}")),
            );
            let summary = trainer::train(&rc, &run_dir, false)?;
            if let Some(a) = &summary.test_aspects {
                for (j, auc) in a.per_question_auc.iter().enumerate() {
                    if per_q.len() <= j {
                        per_q.resize(j + 1, vec![]);
                    }
                    if let Some(x) = auc {
                        per_q[j].push(*x);
                    }
                }
            }
            runs.push(run_result(seed, &run_dir, &summary)?);
        }
        let stat_of = |f: &dyn Fn(&RunResult) -> Option<f64>| -> Option<Stat> {
            let xs: Vec<f64> = runs.iter().filter_map(f).collect();
            (!xs.is_empty()).then(|| Stat::of(&xs))
        };
        results_variants.push(VariantResult {
            name: v.to_string(),
            description: v.describe(),
            top1: Stat::of(&runs.iter().map(|r| r.test_top1).collect::<Vec<_>>()),
            top5: Stat::of(&runs.iter().map(|r| r.test_top5).collect::<Vec<_>>()),
            aspect_auc: stat_of(&|r| r.aspect_auc),
            aspect_agreement: stat_of(&|r| r.aspect_agreement),
            per_question_auc: per_q
                .iter()
                .map(|xs| (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64))
                .collect(),
            runs,
        });
    }

    // Sweeps over fewer questions score only the first Q: the rest are absent, not zero.
    let q_all = teacher_store.as_ref().map_or(0, |(s, _)| s.num_questions());
    for v in results_variants
        .iter_mut()
        .filter(|v| !v.per_question_auc.is_empty())
    {
        v.per_question_auc.resize(q_all, None);
    }
    let comparisons = comparisons(&variants, &results_variants);
    let (examples, embedding) = pictures(cfg, &base, &variants, &results_variants)?;
    let classes = full_train.classes().to_vec();
    let questions = match &aspect_set {
        Some(s) => s
            .questions
            .iter()
            .map(|q| QuestionInfo {
                id: q.id.clone(),
                text: q.text.clone(),
                kind: q.kind.clone(),
            })
            .collect(),
        None => teacher_store
            .as_ref()
            .map(|(s, _)| {
                s.manifest
                    .question_ids
                    .iter()
                    .map(|id| QuestionInfo {
                        id: id.clone(),
                        text: String::new(),
                        kind: String::new(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
    };
    let mut notes = cfg.notes.clone();
    if let Some((s, _)) = &teacher_store {
        let t = &s.manifest.teacher;
        notes.push(format!(
            "Teacher: {} `{}` ({} mode); store summary: {}.",
            t.backend,
            t.model,
            t.mode,
            s.summary()
        ));
        let q = s.num_questions();
        let informative = (0..q)
            .filter(|&j| {
                let (mut yes, mut no) = (false, false);
                for i in 0..s.num_images() {
                    let p = s.p_yes_row(i)[j];
                    yes |= p > 0.5;
                    no |= p <= 0.5;
                }
                yes && no
            })
            .count();
        notes.push(format!(
            "{informative} of {q} questions get both yes and no answers from the teacher across the training images; \
             a question answered the same way for every image carries no information about the class."
        ));
    }
    let results = ExperimentResults {
        format_version: FORMAT_VERSION,
        name: cfg.name.clone(),
        created: utc_now(),
        config: config_json,
        dataset: full_train.describe(),
        classes,
        questions,
        variants: results_variants,
        comparisons,
        examples,
        embedding,
        notes,
    };
    Ok(results)
}

/// Change the base config into `variant` for `seed`, writing any derived store it needs.
#[allow(clippy::too_many_arguments)]
fn apply_variant(
    variant: Variant,
    seed: u64,
    rc: &mut TrainConfig,
    store: Option<&ScoreStore>,
    set: Option<&AspectSet>,
    kd_logits: Option<&Path>,
    cfg: &ExperimentConfig,
    out: &Path,
) -> Result<()> {
    let stores = out.join("stores");
    let kd = cfg.kd.as_ref();
    let use_kd = |rc: &mut TrainConfig, method: KdMethod| {
        let k = kd.expect("validated: kd variants have [kd]");
        rc.kd.logits = kd_logits.map(Path::to_path_buf);
        rc.kd.method = method;
        rc.kd.temperature = k.temperature;
        rc.kd.weight = k.weight;
        rc.kd.dkd_alpha = k.dkd_alpha;
        rc.kd.dkd_beta = k.dkd_beta;
    };
    let no_aspects = |rc: &mut TrainConfig| {
        rc.aspects.scores = None;
        rc.aspects.test_scores = None;
    };
    match variant {
        Variant::Baseline => no_aspects(rc),
        Variant::Makd => {}
        Variant::RandomTarget | Variant::ShuffledTarget => {
            let store = store.expect("validated: aspect variants have a store");
            let dir = stores.join(format!("{variant}-seed{seed}"));
            if !dir.join("scores.safetensors").exists() {
                let control = match variant {
                    Variant::RandomTarget => Control::RandomTarget,
                    _ => Control::ShuffledTarget,
                };
                control_store(store, control, seed)?.save(&dir)?;
            }
            rc.aspects.scores = Some(dir);
        }
        Variant::Kd => {
            no_aspects(rc);
            use_kd(rc, KdMethod::Kd);
        }
        Variant::Dkd => {
            no_aspects(rc);
            use_kd(rc, KdMethod::Dkd);
        }
        Variant::MakdKd => use_kd(rc, KdMethod::Kd),
        Variant::MakdAlpha(alpha) => rc.aspects.alpha = alpha,
        Variant::MakdQ(q) => {
            let store = store.expect("validated: aspect variants have a store");
            let set = set.ok_or_else(|| {
                input(
                    "aspect-count sweeps need the aspect set",
                    "aspects.aspects",
                    "set aspects.aspects in the training config",
                )
            })?;
            if q > set.len() {
                return Err(input(
                    format!("aspect count {q} > the set's {} questions", set.len()),
                    "aspect_counts",
                    "use smaller counts",
                ));
            }
            let sub = set.truncated(q)?;
            let aspects_path = out.join("aspects").join(format!("q{q}.json"));
            sub.save(&aspects_path)?;
            let dir = stores.join(format!("q{q}"));
            if !dir.join("scores.safetensors").exists() {
                first_questions(store, q, &sub.hash)?.save(&dir)?;
            }
            if let Some(test) = &rc.aspects.test_scores {
                let test_dir = stores.join(format!("q{q}-test"));
                if !test_dir.join("scores.safetensors").exists() {
                    first_questions(&ScoreStore::open(test)?, q, &sub.hash)?.save(&test_dir)?;
                }
                rc.aspects.test_scores = Some(test_dir);
            }
            rc.aspects.scores = Some(dir);
            rc.aspects.aspects = Some(aspects_path);
        }
    }
    Ok(())
}

/// Train (or reuse) the KD teacher network and cache its logits on the full training split.
fn teacher_logits(
    k: &crate::experiment::config::KdTeacher,
    base: &TrainConfig,
    seed: u64,
    out: &Path,
) -> Result<PathBuf> {
    let run_dir = match (&k.run_dir, &k.config) {
        (Some(r), _) => RunDir::new(r),
        (None, Some(c)) => {
            let mut tc = TrainConfig::load(c, &k.set)?;
            tc.train.seed = seed;
            let rd = RunDir::new(out.join("runs").join("kd-teacher"));
            progress::log("training the KD teacher network");
            trainer::train(&tc, &rd, false)?;
            rd
        }
        (None, None) => unreachable!("validated"),
    };
    let path = out.join("kd-teacher-logits.safetensors");
    if !path.exists() {
        let (tcfg, info, model) = trainer::load_run(&run_dir, "last")?;
        let full = data::open(&base.data.dataset, Split::Train)?;
        if info.classes != full.classes() {
            return Err(input(
                "the KD teacher was trained on other classes",
                run_dir.root.display().to_string(),
                "train it on the same dataset",
            ));
        }
        let transform = Arc::new(Transform::new(tcfg.transform.clone())?);
        progress::log("computing the KD teacher's logits on the training split");
        let r = classify::evaluate(
            &model,
            full.clone(),
            &transform,
            tcfg.train.eval_batch_size,
            tcfg.data.workers,
            None,
            true,
        )?;
        let c = info.classes.len();
        let logits: Vec<Vec<f32>> = r
            .outputs
            .unwrap_or_default()
            .iter()
            .map(|row| row[..c].to_vec())
            .collect();
        TeacherLogits::save(&path, full.as_ref(), &logits)?;
    }
    Ok(path)
}

fn run_result(seed: u64, run_dir: &RunDir, s: &Summary) -> Result<RunResult> {
    let curve = read_metrics(&run_dir.metrics())?
        .iter()
        .filter(|m| m.train_loss.is_finite())
        .map(|m| CurvePoint {
            epoch: m.epoch,
            train_loss: m.train_loss,
            test_top1: m.task.test_top1,
        })
        .collect();
    Ok(RunResult {
        seed,
        run_dir: run_dir.root.display().to_string(),
        test_top1: s.test_top1,
        test_top5: s.test_top5,
        aspect_auc: s.test_aspects.as_ref().and_then(|a| a.auc),
        aspect_agreement: s.test_aspects.as_ref().map(|a| a.agreement),
        curve,
        seconds: s.seconds,
    })
}

/// Each variant against the baseline, MaKD against its controls and MaKD+KD against KD, on test
/// top-1: one family, Holm-adjusted together.
fn comparisons(variants: &[Variant], vs: &[VariantResult]) -> Vec<Comparison> {
    let names: Vec<&str> = vs.iter().map(|v| v.name.as_str()).collect();
    let runs: Vec<Vec<(u64, f64)>> = vs
        .iter()
        .map(|v| v.runs.iter().map(|r| (r.seed, r.test_top1)).collect())
        .collect();
    compare_variants(variants, &names, &runs, "test_top1", "points")
}

/// The report's comparisons on one metric: every variant against the baseline, MaKD against
/// each control, MaKD+KD against KD (those that ran). `runs[i]` are variant i's (seed, value).
pub fn compare_variants(
    variants: &[Variant],
    names: &[&str],
    runs: &[Vec<(u64, f64)>],
    metric: &str,
    unit: &str,
) -> Vec<Comparison> {
    let side = |v: Variant| {
        let i = variants.iter().position(|&x| x == v)?;
        Some(stats::Side {
            name: names[i],
            runs: &runs[i],
        })
    };
    let mut wanted: Vec<(Variant, Variant)> = variants
        .iter()
        .filter(|&&v| v != Variant::Baseline)
        .map(|&v| (v, Variant::Baseline))
        .collect();
    wanted.extend([
        (Variant::Makd, Variant::RandomTarget),
        (Variant::Makd, Variant::ShuffledTarget),
        (Variant::MakdKd, Variant::Kd),
    ]);
    let pairs: Vec<_> = wanted
        .into_iter()
        .filter_map(|(a, b)| Some((side(a)?, side(b)?)))
        .collect();
    stats::compare_all(metric, unit, &pairs)
}

/// Per-image answers (teacher vs student) and the embedding of the first seed's MaKD student (or the
/// first variant when there is no MaKD run).
fn pictures(
    cfg: &ExperimentConfig,
    base: &TrainConfig,
    variants: &[Variant],
    vs: &[VariantResult],
) -> Result<(Vec<ExampleResponse>, Option<Embedding>)> {
    let shown = variants
        .iter()
        .position(|&v| v == Variant::Makd)
        .unwrap_or(0);
    let Some(v) = vs.get(shown) else {
        return Ok((vec![], None));
    };
    let Some(run) = v.runs.first() else {
        return Ok((vec![], None));
    };
    let (tcfg, info, model) = trainer::load_run(&RunDir::new(&run.run_dir), "last")?;
    let transform = Arc::new(Transform::new(tcfg.transform.clone())?);
    let full_test = data::open(&tcfg.data.dataset, Split::Test)?;
    let mut examples = Vec::new();
    if let (Some(test_scores), true) = (
        &base.aspects.test_scores,
        info.num_aspects > 0 && cfg.examples > 0,
    ) {
        let picks = Arc::new(Subset::stratified(full_test.clone(), cfg.examples, 0));
        let (store, _) = trainer::open_store(test_scores, None, full_test.as_ref())?;
        let targets =
            Targets::from_store(&store, picks.as_ref(), &test_scores.display().to_string())?;
        let r = classify::evaluate(&model, picks.clone(), &transform, 64, 1, None, true)?;
        let c = info.classes.len();
        let shown: Vec<usize> = (0..info.num_aspects.min(16)).collect();
        for (i, row) in r.outputs.unwrap_or_default().iter().enumerate() {
            let (_, student) = classify::split_outputs(row, c)?;
            let (p, _) = targets.row(i);
            examples.push(ExampleResponse {
                image_id: picks.id(i).to_string(),
                label: info.classes[picks.label(i)].clone(),
                questions: shown.clone(),
                teacher: shown.iter().map(|&j| p[j]).collect(),
                student: shown.iter().map(|&j| student[j]).collect(),
            });
        }
    }
    let embedding = if cfg.embedding_points > 0 {
        let picks: Arc<dyn Dataset> =
            Arc::new(Subset::stratified(full_test, cfg.embedding_points, 1));
        let feats = classify::features(&model, picks.clone(), &transform, 128, tcfg.data.workers)?;
        let points = stats::pca_2d(&feats)?;
        Some(Embedding {
            method: "pca".into(),
            points,
            labels: (0..picks.len()).map(|i| picks.label(i)).collect(),
            variant: format!("{} (seed {})", v.name, run.seed),
        })
    } else {
        None
    };
    Ok((examples, embedding))
}

/// Current UTC time as `YYYY-MM-DDTHH:MM:SSZ` (civil-from-days, no time-zone database needed).
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formatting() {
        let s = utc_now();
        assert_eq!(s.len(), 20);
        assert!(s.starts_with("20") && s.ends_with('Z'), "{s}");
    }
}
