//! The detection side of `makd train`, `makd eval` and `makd predict` (a run dir whose config
//! says `task = "detect"`).

use anyhow::Result;
use makd::data::Split;
use makd::detect::cocoeval;
use makd::detect::draw::{draw, Drawn};
use makd::detect::heatmap::decode;
use makd::detect::task::{self, TOP_K};
use makd::error::input;
use makd::train::config::{AspectMode, TrainConfig};
use makd::train::run_dir::RunDir;
use std::path::{Path, PathBuf};

pub fn train(cfg: &TrainConfig, run_dir: &RunDir, fresh: bool, json: bool) -> Result<()> {
    let s = task::train(cfg, run_dir, fresh)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        println!(
            "{}: test mAP {:.3}  AP50 {:.3}  AP75 {:.3}  AR100 {:.3}  (best mAP {:.3} at epoch {}; {} epochs, {:.0} s)",
            run_dir.root.display(),
            s.test_map,
            s.test_map50,
            s.test_map75,
            s.test_ar100,
            s.best_test_map,
            s.best_epoch,
            s.epochs,
            s.seconds
        );
    }
    Ok(())
}

/// `makd eval` of a detection run: COCO mAP on a split, and optionally the COCO results JSON.
pub fn eval(
    run_dir: &RunDir,
    checkpoint: &str,
    split: Split,
    detections_out: Option<&Path>,
    json: bool,
) -> Result<()> {
    let (cfg, info, det) = task::load_run(run_dir, checkpoint)?;
    let ds = task::open_datasets(&cfg)?;
    let names: Vec<String> = ds
        .train
        .categories()
        .iter()
        .map(|c| c.name.clone())
        .collect();
    info.check_classes(&names, &run_dir.root)?;
    let used = match split {
        Split::Train => ds.train.clone(),
        Split::Test => ds.test.clone(),
    };
    let r = task::evaluate(&det, &cfg, used.clone())?;
    if let Some(path) = detections_out {
        cocoeval::write_results(path, &r.detections)?;
        eprintln!(
            "wrote {} detections on {} {split} images to {}",
            r.detections.len(),
            used.len(),
            path.display()
        );
    }
    let m = &r.metrics;
    if json {
        let v = serde_json::json!({
            "split": split, "images": used.len(), "checkpoint": checkpoint,
            "coco": m, "detections_out": detections_out,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "{split}: {} images: mAP {:.3}  AP50 {:.3}  AP75 {:.3}  AP S/M/L {:.3}/{:.3}/{:.3}  AR100 {:.3}",
            used.len(),
            m.map,
            m.map50,
            m.map75,
            m.map_small,
            m.map_medium,
            m.map_large,
            m.ar100
        );
    }
    Ok(())
}

/// `makd predict` of a detection run: boxes, categories and aspect answers per image file,
/// and with `draw` a picture of them.
pub fn predict(
    run_dir: &RunDir,
    checkpoint: &str,
    images: &[PathBuf],
    min_score: f32,
    draw_to: Option<&Path>,
    json: bool,
) -> Result<()> {
    let (cfg, info, det) = task::load_run(run_dir, checkpoint)?;
    if let (Some(_), true) = (draw_to, images.len() > 1) {
        if draw_to.is_some_and(|p| p.extension().is_some()) {
            return Err(input(
                "--draw names one file but several images were given",
                draw_to.unwrap().display().to_string(),
                "pass a directory to --draw (each picture is written as DIR/<image name>.png), or one image",
            )
            .into());
        }
    }
    for path in images {
        let img = makd::data::imagefolder::decode_file(path)?;
        let (out, scale) = det.detect_one(&cfg, &img)?;
        let decoded = decode(&out.heatmap, &out.size, &out.offset, TOP_K)?;
        let image_aspects: Option<Vec<f32>> = match (&out.aspects, cfg.detect.aspect_mode) {
            (Some(a), AspectMode::Image) => Some(makd::detect::task::sigmoid_all(
                &a.squeeze(0)?.to_vec1::<f32>()?,
            )),
            _ => None,
        };
        let object_map = match (&out.aspects, cfg.detect.aspect_mode) {
            (Some(a), AspectMode::Object) => Some(a.squeeze(0)?.to_vec3::<f32>()?),
            _ => None,
        };
        let mut found = Vec::new();
        for d in decoded[0].iter().filter(|d| d.score >= min_score) {
            let aspects = object_map.as_ref().map(|maps| {
                let s = makd::detect::centernet::CenterNet::STRIDE as f32;
                let (h, w) = (maps[0].len(), maps[0][0].len());
                let cx = (((d.bbox[0] + d.bbox[2] / 2.0) / s) as usize).min(w - 1);
                let cy = (((d.bbox[1] + d.bbox[3] / 2.0) / s) as usize).min(h - 1);
                makd::detect::task::sigmoid_all(&maps.iter().map(|m| m[cy][cx]).collect::<Vec<_>>())
            });
            found.push((d.bbox.map(|v| v / scale), d.category, d.score, aspects));
        }
        let question = |j: usize| {
            info.questions.get(j).map_or(format!("aspect {j}"), |q| {
                if q.text.is_empty() {
                    q.id.clone()
                } else {
                    q.text.clone()
                }
            })
        };
        let top_answers = |p: &[f32], n: usize| -> Vec<(String, f32)> {
            let mut order: Vec<usize> = (0..p.len()).collect();
            order.sort_by(|&a, &b| (p[b] - 0.5).abs().total_cmp(&(p[a] - 0.5).abs()));
            order
                .into_iter()
                .take(n)
                .map(|j| (question(j), p[j]))
                .collect()
        };
        if json {
            let dets: Vec<_> = found
                .iter()
                .map(|(b, c, s, a)| {
                    serde_json::json!({"category": info.classes[*c], "score": s, "bbox": b,
                        "aspects": a.as_ref().map(|a| a.iter().enumerate().map(|(j, p)| serde_json::json!({"question": question(j), "p_yes": p})).collect::<Vec<_>>())})
                })
                .collect();
            let asp = image_aspects.as_ref().map(|a| {
                a.iter()
                    .enumerate()
                    .map(|(j, p)| serde_json::json!({"question": question(j), "p_yes": p}))
                    .collect::<Vec<_>>()
            });
            println!(
                "{}",
                serde_json::json!({"image": path, "detections": dets, "aspects": asp})
            );
        } else {
            println!("{}: {} objects", path.display(), found.len());
            for (b, c, s, a) in &found {
                println!(
                    "  {:>5.2}  {:<14} [{:.1}, {:.1}, {:.1}, {:.1}]",
                    s, info.classes[*c], b[0], b[1], b[2], b[3]
                );
                for (q, p) in a.as_deref().map(|a| top_answers(a, 3)).unwrap_or_default() {
                    println!(
                        "         {} {p:.2}  {q}",
                        if p > 0.5 { "yes" } else { "no " }
                    );
                }
            }
            for (q, p) in image_aspects
                .as_deref()
                .map(|a| top_answers(a, 5))
                .unwrap_or_default()
            {
                println!(
                    "  scene: {} {p:.2}  {q}",
                    if p > 0.5 { "yes" } else { "no " }
                );
            }
        }
        if let Some(to) = draw_to {
            let file = if images.len() == 1 && to.extension().is_some() {
                to.to_path_buf()
            } else {
                std::fs::create_dir_all(to).map_err(|e| {
                    input(
                        e.to_string(),
                        to.display().to_string(),
                        "--draw needs a writable directory",
                    )
                })?;
                let stem = path
                    .file_stem()
                    .map_or("image".into(), |s| s.to_string_lossy().into_owned());
                to.join(format!("{stem}.png"))
            };
            let boxes: Vec<Drawn> = found
                .iter()
                .map(|(b, c, s, a)| Drawn {
                    bbox: *b,
                    category: *c,
                    label: format!("{} {:.2}", info.classes[*c], s),
                    notes: a
                        .as_deref()
                        .map(|a| top_answers(a, 2))
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(q, p)| format!("{} {q}", if p > 0.5 { "yes" } else { "no" }))
                        .collect(),
                    ground_truth: false,
                })
                .collect();
            let scale = (512 / img.width.max(img.height)).clamp(1, 8);
            draw(&img, &boxes, scale)?.save(&file).map_err(|e| {
                input(
                    e.to_string(),
                    file.display().to_string(),
                    "--draw writes a PNG",
                )
            })?;
            eprintln!("drew {} objects into {}", boxes.len(), file.display());
        }
    }
    Ok(())
}
