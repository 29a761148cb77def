//! `makd experiment` for detectors: baseline, MaKD and the two controls (random and shuffled
//! targets) over seeds, compared on COCO mAP with paired tests, into `results.json`,
//! `report.md` and a picture of predictions on a few test scenes.
//!
//! The same honesty rules as for classifiers: every run is a normal, resumable run dir; the
//! controls keep the store's shape and marginals without its link to the image, so a gain the
//! controls match is regularisation, not the teacher's knowledge.

use crate::data::detection::DetectionDataset;
use crate::detect::draw::{draw, Drawn};
use crate::detect::heatmap::decode;
use crate::detect::task::{self, DetectSummary};
use crate::error::{input, IoContext, Result};
use crate::experiment::config::ExperimentConfig;
use crate::experiment::results::{Comparison, Stat};
use crate::experiment::runner::compare_variants;
use crate::experiment::variant::Variant;
use crate::files;
use crate::progress;
use crate::scores::derive::{control_store, Control};
use crate::scores::ScoreStore;
use crate::train::config::TrainConfig;
use crate::train::fit::read_records;
use crate::train::run_dir::RunDir;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// `results.json` of a detection experiment. mAP values are fractions in [0, 1]; the
/// comparisons' differences are in AP points (percent), as detection papers print them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DetectResults {
    pub task: String,
    pub name: String,
    pub config: serde_json::Value,
    pub dataset: String,
    pub categories: Vec<String>,
    pub variants: Vec<DetectVariant>,
    pub comparisons: Vec<Comparison>,
    pub notes: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DetectVariant {
    pub name: String,
    pub description: String,
    pub map: Stat,
    pub map50: Stat,
    pub runs: Vec<DetectRunResult>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DetectRunResult {
    pub seed: u64,
    pub run_dir: String,
    pub test_map: f64,
    pub test_map50: f64,
    pub test_map75: f64,
    /// Per epoch: (epoch, train loss, test mAP).
    pub curve: Vec<(usize, f64, f64)>,
    pub seconds: f64,
}

/// Refuse what a detection experiment cannot run (KD needs a classifier's logits; aspect-count
/// sweeps are classification-only for now).
fn check_variants(cfg: &ExperimentConfig, variants: &[Variant]) -> Result<()> {
    for v in variants {
        if matches!(
            v,
            Variant::Kd | Variant::Dkd | Variant::MakdKd | Variant::MakdQ(_)
        ) {
            return Err(input(
                format!("variant {v} is not available for detection"),
                cfg.train_config.display().to_string(),
                "detection experiments run baseline, makd, random-target, shuffled-target and makd-alpha<A>",
            ));
        }
    }
    Ok(())
}

/// Run (or resume) every variant × seed under `out/runs/`, control stores under `out/stores/`.
pub fn run(
    cfg: &ExperimentConfig,
    config_json: serde_json::Value,
    out: &Path,
) -> Result<DetectResults> {
    let base = TrainConfig::load(&cfg.train_config, &cfg.set)?;
    let variants = cfg.all_variants();
    check_variants(cfg, &variants)?;
    let needs_store = variants.iter().any(|v| v.uses_aspects());
    let store = match (&base.aspects.scores, needs_store) {
        (Some(p), true) => Some(ScoreStore::open(p)?),
        (None, true) => return Err(input(
            "aspect variants need the teacher's score store",
            cfg.train_config.display().to_string(),
            "set aspects.scores in the training config (makd label --dataset scenes:… makes one)",
        )),
        _ => None,
    };
    let total = variants.len() * cfg.seeds.len();
    let mut done = 0;
    let mut results = Vec::new();
    for &v in &variants {
        let mut runs = Vec::new();
        for &seed in &cfg.seeds {
            done += 1;
            progress::log(format!("[{done}/{total}] {v}, seed {seed}"));
            let mut rc = base.clone();
            rc.train.seed = seed;
            match v {
                Variant::Baseline => rc.aspects.scores = None,
                Variant::Makd => {}
                Variant::MakdAlpha(a) => rc.aspects.alpha = a,
                Variant::RandomTarget | Variant::ShuffledTarget => {
                    let store = store
                        .as_ref()
                        .expect("checked: aspect variants have a store");
                    let dir = out.join("stores").join(format!("{v}-seed{seed}"));
                    if !dir.join("scores.safetensors").exists() {
                        let control = if v == Variant::RandomTarget {
                            Control::RandomTarget
                        } else {
                            Control::ShuffledTarget
                        };
                        control_store(store, control, seed)?.save(&dir)?;
                    }
                    rc.aspects.scores = Some(dir);
                }
                _ => unreachable!("refused by check_variants"),
            }
            let run_dir = RunDir::new(
                out.join("runs")
                    .join(v.to_string())
                    .join(format!("seed{seed}")),
            );
            let s = task::train(&rc, &run_dir, false)?;
            runs.push(run_result(seed, &run_dir, &s, out)?);
        }
        let stat =
            |f: &dyn Fn(&DetectRunResult) -> f64| Stat::of(&runs.iter().map(f).collect::<Vec<_>>());
        results.push(DetectVariant {
            name: v.to_string(),
            // The classification wording, with the detector's loss in place of CE.
            description: v.describe().replacen("CE", "CenterNet loss", 1),
            map: stat(&|r| r.test_map),
            map50: stat(&|r| r.test_map50),
            runs,
        });
    }
    let comparisons = comparisons(&variants, &results);
    let ds = task::open_datasets(&base)?;
    let mut notes = cfg.notes.clone();
    if let Some(s) = &store {
        let t = &s.manifest.teacher;
        notes.push(format!(
            "Teacher: {} `{}` ({} mode), aspect head in {} mode; store summary: {}.",
            t.backend,
            t.model,
            t.mode,
            base.detect.aspect_mode,
            s.summary()
        ));
    }
    notes.push(
        "mAP is COCO's AP@[.50:.05:.95] on the test scenes, computed by makd's evaluator (checked against pycocotools); differences are in AP points.".into(),
    );
    let r = DetectResults {
        task: "detect".into(),
        name: cfg.name.clone(),
        config: config_json,
        dataset: ds.test.describe(),
        categories: ds
            .test
            .categories()
            .iter()
            .map(|c| c.name.clone())
            .collect(),
        variants: results,
        comparisons,
        notes,
    };
    write_report(&r, &variants, out, ds.test.as_ref())?;
    Ok(r)
}

fn run_result(
    seed: u64,
    run_dir: &RunDir,
    s: &DetectSummary,
    out: &Path,
) -> Result<DetectRunResult> {
    let curve = read_records::<task::DetectEpoch>(&run_dir.metrics())?
        .iter()
        .map(|m| (m.epoch, m.train_loss, m.task.test_map))
        .collect();
    Ok(DetectRunResult {
        seed,
        run_dir: run_dir
            .root
            .strip_prefix(out)
            .unwrap_or(&run_dir.root)
            .display()
            .to_string(),
        test_map: s.test_map,
        test_map50: s.test_map50,
        test_map75: s.test_map75,
        curve,
        seconds: s.seconds,
    })
}

/// The standard comparisons on mAP, in AP points.
fn comparisons(variants: &[Variant], vs: &[DetectVariant]) -> Vec<Comparison> {
    let names: Vec<&str> = vs.iter().map(|v| v.name.as_str()).collect();
    let runs: Vec<Vec<(u64, f64)>> = vs
        .iter()
        .map(|v| {
            v.runs
                .iter()
                .map(|r| (r.seed, 100.0 * r.test_map))
                .collect()
        })
        .collect();
    compare_variants(variants, &names, &runs, "test_map", "AP points")
}

fn pct(s: &Stat) -> String {
    if s.n > 1 {
        format!("{:.1} ± {:.1}", 100.0 * s.mean, 100.0 * s.std)
    } else {
        format!("{:.1}", 100.0 * s.mean)
    }
}

/// The markdown table of the variants (mAP and AP50 in percent, mean ± std over seeds).
pub fn markdown_table(r: &DetectResults) -> String {
    let mut t = String::from(
        "| variant | what it trains | seeds | mAP (%) | AP50 (%) |\n|---|---|---|---|---|\n",
    );
    for v in &r.variants {
        t.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            v.name,
            v.description,
            v.map.n,
            pct(&v.map),
            pct(&v.map50)
        ));
    }
    t
}

/// `results.json`, `report.md` and `plots/predictions.png` (the first variant with aspects, or
/// the first variant, seed of the first run, on the first test scenes).
fn write_report(
    r: &DetectResults,
    variants: &[Variant],
    out: &Path,
    test: &dyn DetectionDataset,
) -> Result<()> {
    files::write_json_atomic(&out.join("results.json"), r)?;
    let shown = variants
        .iter()
        .position(|&v| v == Variant::Makd)
        .unwrap_or(0);
    let run = &r.variants[shown].runs[0];
    let picture = predictions_picture(&RunDir::new(out.join(&run.run_dir)), test, 6)?;
    let plots = out.join("plots");
    std::fs::create_dir_all(&plots).at(&plots)?;
    let png = plots.join("predictions.png");
    picture.save(&png).map_err(|e| {
        input(
            e.to_string(),
            png.display().to_string(),
            "the report's folder must be writable",
        )
    })?;
    let mut md = format!("# {}: detection\n\n{}\n\n", r.name, r.dataset);
    md.push_str(&markdown_table(r));
    md.push_str("\n## Comparisons\n\n");
    for c in &r.comparisons {
        md.push_str(&format!("- {}\n", c.sentence));
    }
    md.push_str(&format!(
        "\n## Predictions\n\n![predictions](plots/predictions.png)\n\nTest scenes with the ground truth (thin) and the `{}` student's detections scoring ≥ 0.3 (thick), seed {}.\n",
        r.variants[shown].name, run.seed
    ));
    md.push_str("\n## Notes\n\n");
    for n in &r.notes {
        md.push_str(&format!("- {n}\n"));
    }
    files::write_atomic(&out.join("report.md"), md.as_bytes())
}

/// A strip of the first `n` test scenes with ground truth and a run's detections.
pub fn predictions_picture(
    run_dir: &RunDir,
    test: &dyn DetectionDataset,
    n: usize,
) -> Result<image::RgbImage> {
    let (cfg, info, det) = task::load_run(run_dir, "last")?;
    let n = n.min(test.len());
    let scale = 4;
    let mut tiles = Vec::new();
    for i in 0..n {
        let sample = test.get(i)?;
        let (out, back) = det.detect_one(&cfg, &sample.image)?;
        let mut boxes: Vec<Drawn> = sample
            .boxes
            .iter()
            .map(|b| Drawn {
                bbox: b.bbox,
                category: b.category,
                label: String::new(),
                notes: vec![],
                ground_truth: true,
            })
            .collect();
        for d in decode(&out.heatmap, &out.size, &out.offset, task::TOP_K)?[0]
            .iter()
            .filter(|d| d.score >= 0.3)
        {
            boxes.push(Drawn {
                bbox: d.bbox.map(|v| v / back),
                category: d.category,
                label: format!("{} {:.2}", info.classes[d.category], d.score),
                notes: vec![],
                ground_truth: false,
            });
        }
        tiles.push(draw(&sample.image, &boxes, scale)?);
    }
    let (tw, th) = tiles.first().map_or((1, 1), |t| t.dimensions());
    let gap = 4;
    let mut strip = image::RgbImage::from_pixel(
        (tw + gap) * tiles.len().max(1) as u32,
        th,
        image::Rgb([255, 255, 255]),
    );
    for (k, t) in tiles.iter().enumerate() {
        image::imageops::replace(&mut strip, t, ((tw + gap) * k as u32) as i64, 0);
    }
    Ok(strip)
}
