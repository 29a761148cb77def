//! COCO bbox evaluation with pycocotools' `COCOeval` semantics: AP@[.50:.05:.95], AP50, AP75,
//! AP small/medium/large and AR at 1/10/100 detections.
//!
//! Ours because the reference is Python and no maintained Rust port exists; it follows
//! pycocotools rule for rule, including its quirks, so that numbers printed by makd and by the
//! tools everyone else uses agree. The fixtures under `tests/fixtures/coco/` (made by
//! `scripts/coco-fixtures.py` with pycocotools) pin that to 1e-4.
//!
//! The rules, per image and category:
//! - detections are ranked by score (stable, highest first) and only the best 100 count;
//! - IoU is on `[x, y, w, h]` boxes, except against a crowd box, where it is
//!   intersection / detection area (a detection anywhere inside a crowd region "matches" it);
//! - per IoU threshold, each detection in rank order takes the best still-free box at or above
//!   the threshold, preferring boxes that are not ignored; a crowd box is never used up;
//! - in an area range a box is ignored when it is crowd or its `area` is outside the range, a
//!   detection is ignored when it matched an ignored box, or matched nothing and its own w·h is
//!   outside the range. Ignored detections are neither true nor false positives.
//!
//! Then, per category, area range and detection limit, detections of all images are ranked by
//! score, precision is made monotone from the right and read at 101 recall points
//! (searchsorted-left, 0 past the last recall reached). A setting without ground truth is
//! undefined (-1) and left out of the means.

use crate::error::{self, Result};
use rayon::prelude::*;
use std::cmp::Ordering;
use std::collections::HashMap;
use std::path::Path;

/// A ground-truth box as in a COCO annotations file: `bbox` is `[x, y, w, h]` in pixels, `area`
/// the annotation's own (for a segment it is smaller than w·h; the area ranges go by it).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GtBox {
    pub image_id: u64,
    pub category_id: u64,
    pub bbox: [f64; 4],
    pub area: f64,
    pub iscrowd: bool,
}

/// COCO results JSON entry: serde field names image_id, category_id, bbox, score.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Detection {
    pub image_id: u64,
    pub category_id: u64,
    pub bbox: [f64; 4],
    pub score: f64,
}

/// `COCOeval.stats`, named: fractions in [0, 1], -1 where the setting has no ground truth.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CocoMetrics {
    pub map: f64,
    pub map50: f64,
    pub map75: f64,
    pub map_small: f64,
    pub map_medium: f64,
    pub map_large: f64,
    pub ar1: f64,
    pub ar10: f64,
    pub ar100: f64,
    pub ar_small: f64,
    pub ar_medium: f64,
    pub ar_large: f64,
}

const IOU_THRESHOLDS: usize = 10;
const RECALL_POINTS: usize = 101;
/// Ascending, as pycocotools sorts them; the last one is also the per-image cut.
const MAX_DETS: [usize; 3] = [1, 10, 100];
const MAX_DET: usize = MAX_DETS[2];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AreaRange {
    All,
    Small,
    Medium,
    Large,
}

impl AreaRange {
    const EVERY: [AreaRange; 4] = [Self::All, Self::Small, Self::Medium, Self::Large];

    fn bounds(self) -> (f64, f64) {
        match self {
            Self::All => (0.0, 1e10),
            Self::Small => (0.0, 32.0 * 32.0),
            Self::Medium => (32.0 * 32.0, 96.0 * 96.0),
            Self::Large => (96.0 * 96.0, 1e10),
        }
    }

    /// Both ends belong to the range (an area of exactly 32² is small and medium).
    fn excludes(self, area: f64) -> bool {
        let (lo, hi) = self.bounds();
        area < lo || area > hi
    }
}

/// `np.linspace(start, stop, n)` bit for bit: the thresholds are compared with IoUs and recalls
/// exactly, so 0.55 must be the same double pycocotools uses.
fn linspace<const N: usize>(start: f64, stop: f64) -> [f64; N] {
    let step = (stop - start) / (N - 1) as f64;
    let mut out = [0.0; N];
    for (i, v) in out.iter_mut().enumerate() {
        *v = i as f64 * step + start;
    }
    out[N - 1] = stop;
    out
}

/// Highest score first; ties keep their order (a stable sort on `-score`, as pycocotools'
/// mergesort). NaN ranks last, where numpy puts it.
fn by_score_desc(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (false, false) => b.partial_cmp(&a).unwrap_or(Ordering::Equal),
        (a_nan, b_nan) => a_nan.cmp(&b_nan),
    }
}

/// pycocotools' `bbIou`: the crowd rule divides by the detection's area alone.
fn iou(det: &[f64; 4], gt: &[f64; 4], crowd: bool) -> f64 {
    let w = (det[0] + det[2]).min(gt[0] + gt[2]) - det[0].max(gt[0]);
    if w <= 0.0 {
        return 0.0;
    }
    let h = (det[1] + det[3]).min(gt[1] + gt[3]) - det[1].max(gt[1]);
    if h <= 0.0 {
        return 0.0;
    }
    let inter = w * h;
    let det_area = det[2] * det[3];
    let union = if crowd {
        det_area
    } else {
        det_area + gt[2] * gt[3] - inter
    };
    inter / union
}

/// One image and category: its boxes in input order, its detections ranked and cut to
/// [`MAX_DET`], and their IoUs (row = detection).
struct Cell<'a> {
    gts: Vec<&'a GtBox>,
    dets: Vec<&'a Detection>,
    ious: Vec<f64>,
}

impl<'a> Cell<'a> {
    fn new(gts: Vec<&'a GtBox>, mut dets: Vec<&'a Detection>) -> Self {
        dets.sort_by(|a, b| by_score_desc(a.score, b.score));
        // pycocotools' cut. It changes no number (a lower-ranked detection never takes a box
        // from a higher one, and accumulation reads the first 100 only), but it bounds the IoU
        // matrix of an image flooded with detections.
        dets.truncate(MAX_DET);
        let ious = dets
            .iter()
            .flat_map(|d| gts.iter().map(|g| iou(&d.bbox, &g.bbox, g.iscrowd)))
            .collect();
        Cell { gts, dets, ious }
    }
}

/// What one detection became at each IoU threshold.
#[derive(Clone, Copy, Default)]
struct Outcome {
    matched: [bool; IOU_THRESHOLDS],
    ignored: [bool; IOU_THRESHOLDS],
}

/// A cell seen in one area range (pycocotools' `evaluateImg`).
struct CellEval {
    scores: Vec<f64>,
    outcomes: Vec<Outcome>,
    /// Boxes that count towards recall.
    n_gt: usize,
}

fn evaluate_cell(cell: &Cell, area: AreaRange, iou_thresholds: &[f64; IOU_THRESHOLDS]) -> CellEval {
    let n_gts = cell.gts.len();
    let ignore: Vec<bool> = cell
        .gts
        .iter()
        .map(|g| g.iscrowd || area.excludes(g.area))
        .collect();
    // Ignored boxes last, so a detection tries the boxes that count first and stops at the
    // ignored ones once it has one that counts.
    let mut order: Vec<usize> = (0..n_gts).collect();
    order.sort_by_key(|&j| ignore[j]);
    let mut outcomes = vec![Outcome::default(); cell.dets.len()];
    for (t, &threshold) in iou_thresholds.iter().enumerate() {
        let mut taken = vec![false; n_gts];
        for (d, outcome) in outcomes.iter_mut().enumerate() {
            let ious = &cell.ious[d * n_gts..(d + 1) * n_gts];
            // An IoU of exactly 1 must still match at a threshold of 1.
            let mut best = threshold.min(1.0 - 1e-10);
            let mut found: Option<usize> = None;
            for &j in &order {
                if taken[j] && !cell.gts[j].iscrowd {
                    continue;
                }
                if found.is_some_and(|m| !ignore[m]) && ignore[j] {
                    break;
                }
                // Written as pycocotools' test so that a NaN IoU (a zero-area detection in a
                // crowd) behaves as there.
                if ious[j] < best {
                    continue;
                }
                best = ious[j];
                found = Some(j);
            }
            if let Some(m) = found {
                outcome.matched[t] = true;
                outcome.ignored[t] = ignore[m];
                taken[m] = true;
            }
        }
    }
    for (det, outcome) in cell.dets.iter().zip(&mut outcomes) {
        if area.excludes(det.bbox[2] * det.bbox[3]) {
            for t in 0..IOU_THRESHOLDS {
                outcome.ignored[t] |= !outcome.matched[t];
            }
        }
    }
    CellEval {
        scores: cell.dets.iter().map(|d| d.score).collect(),
        outcomes,
        n_gt: ignore.iter().filter(|&&i| !i).count(),
    }
}

/// Precision at the recall points and the recall reached, per IoU threshold, for one category,
/// area range and detection limit; `None` where there is no ground truth to find.
struct Curve {
    precision: [[f64; RECALL_POINTS]; IOU_THRESHOLDS],
    recall: [f64; IOU_THRESHOLDS],
}

/// pycocotools' `accumulate` for one category, area range and detection limit: `evals` are
/// the category's non-empty cells in image order.
fn accumulate(
    evals: &[CellEval],
    max_det: usize,
    recall_points: &[f64; RECALL_POINTS],
) -> Option<Curve> {
    if evals.is_empty() {
        return None;
    }
    let n_gt: usize = evals.iter().map(|e| e.n_gt).sum();
    if n_gt == 0 {
        return None;
    }
    let mut ranked: Vec<(f64, &Outcome)> = evals
        .iter()
        .flat_map(|e| e.scores.iter().copied().zip(&e.outcomes).take(max_det))
        .collect();
    ranked.sort_by(|a, b| by_score_desc(a.0, b.0));

    let mut curve = Curve {
        precision: [[0.0; RECALL_POINTS]; IOU_THRESHOLDS],
        recall: [0.0; IOU_THRESHOLDS],
    };
    let n_det = ranked.len();
    let mut recall = vec![0.0; n_det];
    let mut precision = vec![0.0; n_det];
    for t in 0..IOU_THRESHOLDS {
        // Ignored detections keep their place in the ranking; they just add to neither count.
        let (mut tp, mut fp) = (0u64, 0u64);
        for (i, (_, outcome)) in ranked.iter().enumerate() {
            if !outcome.ignored[t] {
                if outcome.matched[t] {
                    tp += 1;
                } else {
                    fp += 1;
                }
            }
            recall[i] = tp as f64 / n_gt as f64;
            precision[i] = tp as f64 / (fp as f64 + tp as f64 + f64::EPSILON);
        }
        curve.recall[t] = recall.last().copied().unwrap_or(0.0);
        for i in (1..n_det).rev() {
            if precision[i] > precision[i - 1] {
                precision[i - 1] = precision[i];
            }
        }
        // Recall points past the last recall reached keep precision 0.
        let mut i = 0;
        for (r, &point) in recall_points.iter().enumerate() {
            while i < n_det && recall[i] < point {
                i += 1;
            }
            if i == n_det {
                break;
            }
            curve.precision[t][r] = precision[i];
        }
    }
    Some(curve)
}

/// COCO bbox metrics of `dets` against `gts` over the given images and categories (as
/// pycocotools' `params.imgIds` / `params.catIds`; boxes and detections elsewhere are left out).
/// A category without ground truth counts in no mean.
pub fn evaluate(
    image_ids: &[u64],
    category_ids: &[u64],
    gts: &[GtBox],
    dets: &[Detection],
) -> CocoMetrics {
    let iou_thresholds = linspace::<IOU_THRESHOLDS>(0.5, 0.95);
    let recall_points = linspace::<RECALL_POINTS>(0.0, 1.0);

    // pycocotools evaluates sorted, unique ids; the image order decides score ties across images.
    let index = |ids: &[u64]| -> HashMap<u64, usize> {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        ids.into_iter().enumerate().map(|(i, id)| (id, i)).collect()
    };
    let images = index(image_ids);
    let categories = index(category_ids);

    type Members<'a> = (Vec<&'a GtBox>, Vec<&'a Detection>);
    let mut cells: HashMap<(usize, usize), Members> = HashMap::new();
    for g in gts {
        if let (Some(&k), Some(&i)) = (categories.get(&g.category_id), images.get(&g.image_id)) {
            cells.entry((k, i)).or_default().0.push(g);
        }
    }
    for d in dets {
        if let (Some(&k), Some(&i)) = (categories.get(&d.category_id), images.get(&d.image_id)) {
            cells.entry((k, i)).or_default().1.push(d);
        }
    }
    let mut by_category: Vec<Vec<(usize, Members)>> =
        (0..categories.len()).map(|_| Vec::new()).collect();
    for ((k, i), members) in cells {
        by_category[k].push((i, members));
    }

    // curves[k][area][max_det]
    let curves: Vec<Vec<Vec<Option<Curve>>>> = by_category
        .into_par_iter()
        .map(|mut members| {
            members.sort_by_key(|(i, _)| *i);
            let cells: Vec<Cell> = members
                .into_iter()
                .map(|(_, (g, d))| Cell::new(g, d))
                .collect();
            AreaRange::EVERY
                .iter()
                .map(|&area| {
                    let evals: Vec<CellEval> = cells
                        .iter()
                        .map(|c| evaluate_cell(c, area, &iou_thresholds))
                        .collect();
                    MAX_DETS
                        .iter()
                        .map(|&m| accumulate(&evals, m, &recall_points))
                        .collect()
                })
                .collect()
        })
        .collect();

    let area_index = |a: AreaRange| AreaRange::EVERY.iter().position(|&x| x == a).unwrap();
    let defined = |area: AreaRange, max_det: usize| {
        let (a, m) = (
            area_index(area),
            MAX_DETS.iter().position(|&x| x == max_det).unwrap(),
        );
        curves.iter().filter_map(move |c| c[a][m].as_ref())
    };
    let mean = |(sum, n): (f64, usize)| if n == 0 { -1.0 } else { sum / n as f64 };
    // AP: the mean precision over recall points, thresholds and categories.
    let ap = |threshold: Option<usize>, area: AreaRange| {
        mean(defined(area, MAX_DET).fold((0.0, 0), |(sum, n), c| {
            let rows = match threshold {
                Some(t) => &c.precision[t..=t],
                None => &c.precision[..],
            };
            let s: f64 = rows.iter().flatten().sum();
            (sum + s, n + rows.len() * RECALL_POINTS)
        }))
    };
    // AR: the mean over thresholds and categories of the recall reached.
    let ar = |area: AreaRange, max_det: usize| {
        mean(defined(area, max_det).fold((0.0, 0), |(sum, n), c| {
            (sum + c.recall.iter().sum::<f64>(), n + IOU_THRESHOLDS)
        }))
    };
    // Indices of 0.5 and 0.75 in the thresholds.
    let (t50, t75) = (0, 5);
    CocoMetrics {
        map: ap(None, AreaRange::All),
        map50: ap(Some(t50), AreaRange::All),
        map75: ap(Some(t75), AreaRange::All),
        map_small: ap(None, AreaRange::Small),
        map_medium: ap(None, AreaRange::Medium),
        map_large: ap(None, AreaRange::Large),
        ar1: ar(AreaRange::All, MAX_DETS[0]),
        ar10: ar(AreaRange::All, MAX_DETS[1]),
        ar100: ar(AreaRange::All, MAX_DETS[2]),
        ar_small: ar(AreaRange::Small, MAX_DET),
        ar_medium: ar(AreaRange::Medium, MAX_DET),
        ar_large: ar(AreaRange::Large, MAX_DET),
    }
}

const RESULTS_HINT: &str =
    "a COCO results file is a JSON list of {\"image_id\", \"category_id\", \"bbox\": [x, y, w, h], \"score\"}";

/// Read a COCO results file (`[{image_id, category_id, bbox, score}, …]`; other fields, such as
/// a segmentation, are allowed and dropped).
pub fn read_results(path: &Path) -> Result<Vec<Detection>> {
    let dets: Vec<Detection> = crate::files::read_json(path, RESULTS_HINT)?;
    if let Some((k, d)) = dets
        .iter()
        .enumerate()
        .find(|(_, d)| d.bbox[2] < 0.0 || d.bbox[3] < 0.0)
    {
        return Err(error::input(
            format!(
                "detection {k} has a negative width or height: bbox {:?}",
                d.bbox
            ),
            path.display().to_string(),
            "bbox is [x, y, width, height] (COCO), not [x1, y1, x2, y2]",
        ));
    }
    Ok(dets)
}

/// Write detections as a COCO results file, atomically (one line: a test set's results run
/// to hundreds of thousands of entries).
pub fn write_results(path: &Path, dets: &[Detection]) -> Result<()> {
    crate::files::write_atomic_with(path, |w| {
        serde_json::to_writer(&mut *w, dets)?;
        std::io::Write::write_all(w, b"\n")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn gt(image_id: u64, category_id: u64, bbox: [f64; 4]) -> GtBox {
        GtBox {
            image_id,
            category_id,
            bbox,
            area: bbox[2] * bbox[3],
            iscrowd: false,
        }
    }

    fn det(image_id: u64, category_id: u64, bbox: [f64; 4], score: f64) -> Detection {
        Detection {
            image_id,
            category_id,
            bbox,
            score,
        }
    }

    fn stats(m: &CocoMetrics) -> [f64; 12] {
        [
            m.map,
            m.map50,
            m.map75,
            m.map_small,
            m.map_medium,
            m.map_large,
            m.ar1,
            m.ar10,
            m.ar100,
            m.ar_small,
            m.ar_medium,
            m.ar_large,
        ]
    }

    /// Precision is tp / (tp + fp + eps), so a perfect score is 1 - 1e-16, as in pycocotools.
    #[track_caller]
    fn assert_close<const N: usize>(actual: [f64; N], expected: [f64; N]) {
        let off = actual
            .iter()
            .zip(&expected)
            .any(|(a, e)| (a - e).abs() > 1e-12);
        assert!(!off, "got {actual:?}, expected {expected:?}");
    }

    #[derive(serde::Deserialize)]
    struct Id {
        id: u64,
    }

    #[derive(serde::Deserialize)]
    struct Annotation {
        image_id: u64,
        category_id: u64,
        bbox: [f64; 4],
        area: f64,
        iscrowd: u8,
    }

    #[derive(serde::Deserialize)]
    struct Fixture {
        images: Vec<Id>,
        categories: Vec<Id>,
        annotations: Vec<Annotation>,
        detections: Vec<Detection>,
        stats: [f64; 12],
    }

    /// Every fixture pycocotools scored, with ours beside it.
    fn fixtures() -> Vec<(String, [f64; 12], [f64; 12])> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/coco");
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        paths.sort();
        paths
            .into_iter()
            .map(|path| {
                let f: Fixture = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
                let gts: Vec<GtBox> = f
                    .annotations
                    .iter()
                    .map(|a| GtBox {
                        image_id: a.image_id,
                        category_id: a.category_id,
                        bbox: a.bbox,
                        area: a.area,
                        iscrowd: a.iscrowd != 0,
                    })
                    .collect();
                let images: Vec<u64> = f.images.iter().map(|i| i.id).collect();
                let categories: Vec<u64> = f.categories.iter().map(|c| c.id).collect();
                let ours = stats(&evaluate(&images, &categories, &gts, &f.detections));
                let name = path.file_stem().unwrap().to_string_lossy().into_owned();
                (name, f.stats, ours)
            })
            .collect()
    }

    #[test]
    fn every_fixture_matches_pycocotools() {
        let cases = fixtures();
        let names: Vec<&str> = cases.iter().map(|(n, _, _)| n.as_str()).collect();
        for expected in [
            "perfect",
            "empty",
            "shuffled_scores",
            "duplicates",
            "crowd",
            "category_without_gt",
            "area_ranges",
            "many_dets",
            "jitter",
        ] {
            assert!(
                names.contains(&expected),
                "fixture {expected} missing: {names:?}"
            );
        }
        let mut worst = (0.0f64, String::new());
        let mut failures = Vec::new();
        for (name, reference, ours) in &cases {
            for (i, (r, o)) in reference.iter().zip(ours).enumerate() {
                let dev = (r - o).abs();
                if dev > worst.0 {
                    worst = (dev, format!("{name} stat {i}"));
                }
                if dev > 1e-4 {
                    failures.push(format!("{name} stat {i}: pycocotools {r}, ours {o}"));
                }
            }
        }
        eprintln!(
            "worst deviation from pycocotools: {:e} ({})",
            worst.0, worst.1
        );
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn one_perfect_detection_scores_one_and_the_other_sizes_are_undefined() {
        let g = gt(1, 1, [10.0, 10.0, 50.0, 40.0]);
        let m = evaluate(
            &[1],
            &[1],
            &[g],
            &[det(1, 1, [10.0, 10.0, 50.0, 40.0], 0.9)],
        );
        // 2000 px² is medium: small and large have no ground truth.
        assert_close(
            stats(&m),
            [
                1.0, 1.0, 1.0, -1.0, 1.0, -1.0, 1.0, 1.0, 1.0, -1.0, 1.0, -1.0,
            ],
        );
    }

    #[test]
    fn a_detection_at_iou_062_counts_at_three_of_ten_thresholds() {
        // Intersection 6200, union 10000: a hit at 0.50, 0.55 and 0.60, a miss from 0.65 on.
        let g = gt(1, 1, [0.0, 0.0, 100.0, 100.0]);
        let m = evaluate(&[1], &[1], &[g], &[det(1, 1, [0.0, 0.0, 62.0, 100.0], 0.5)]);
        assert_close([m.map50, m.map75, m.map, m.ar100], [1.0, 0.0, 0.3, 0.3]);
        // The box (10000 px²) is large; the detection (6200 px²) is medium but matched, so it counts.
        assert_close([m.map_large, m.map_small, m.map_medium], [0.3, -1.0, -1.0]);
    }

    #[test]
    fn detections_inside_a_crowd_are_ignored_not_false_positives() {
        let crowd = GtBox {
            iscrowd: true,
            ..gt(1, 1, [0.0, 0.0, 100.0, 100.0])
        };
        let object = gt(1, 1, [200.0, 200.0, 50.0, 50.0]);
        let dets = [
            // IoU with the crowd by union would be 0.04; by the detection's area it is 1.
            det(1, 1, [10.0, 10.0, 20.0, 20.0], 0.9),
            // A second one inside the same crowd: the crowd is never used up.
            det(1, 1, [50.0, 50.0, 20.0, 20.0], 0.85),
            det(1, 1, [200.0, 200.0, 50.0, 50.0], 0.8),
        ];
        let m = evaluate(&[1], &[1], &[crowd, object], &dets);
        assert_close([m.map, m.ar100], [1.0, 1.0]);
        // Only the best-scored detection counts at maxDets 1, and it is ignored: nothing found.
        assert_eq!(m.ar1, 0.0);
    }

    #[test]
    fn a_box_is_sized_by_its_annotated_area_a_detection_by_its_box() {
        // A 40×40 box annotated with a segment's 900 px²: small, though its w·h is medium.
        let g = GtBox {
            area: 900.0,
            ..gt(1, 1, [10.0, 10.0, 40.0, 40.0])
        };
        let gts = [g];
        let dets = [
            det(1, 1, [10.0, 10.0, 40.0, 40.0], 0.9),
            // A medium-sized false positive: ignored in the small range, not counted against it.
            det(1, 1, [300.0, 300.0, 40.0, 40.0], 0.95),
        ];
        let m = evaluate(&[1], &[1], &gts, &dets[..1]);
        assert_close([m.map_small, m.map_medium, m.ar_small], [1.0, -1.0, 1.0]);
        let m = evaluate(&[1], &[1], &gts, &dets);
        assert_close([m.map_small, m.map], [1.0, 0.5]);
    }

    #[test]
    fn a_category_without_ground_truth_is_left_out_of_the_mean() {
        let gts = [gt(1, 1, [10.0, 10.0, 50.0, 40.0])];
        let dets = [
            det(1, 1, [10.0, 10.0, 50.0, 40.0], 0.5),
            det(1, 2, [10.0, 10.0, 50.0, 40.0], 0.9),
        ];
        assert_close([evaluate(&[1], &[1, 2], &gts, &dets).map], [1.0]);
        // Nothing to find anywhere: every number is undefined.
        assert_eq!(stats(&evaluate(&[1], &[2], &gts, &dets)), [-1.0; 12]);
    }

    #[test]
    fn only_the_given_images_and_categories_are_evaluated() {
        let gts = [
            gt(1, 1, [0.0, 0.0, 50.0, 50.0]),
            gt(2, 1, [0.0, 0.0, 50.0, 50.0]),
        ];
        let dets = [
            det(1, 1, [0.0, 0.0, 50.0, 50.0], 0.5),
            det(2, 1, [300.0, 300.0, 50.0, 50.0], 0.9),
            det(1, 3, [0.0, 0.0, 50.0, 50.0], 0.9),
        ];
        assert_close([evaluate(&[1], &[1], &gts, &dets).map], [1.0]);
        // With image 2, its false positive ranks first and its box is never found: precision
        // 1/2 at the 51 recall points up to 1/2, 0 at the 50 beyond.
        assert_close(
            [evaluate(&[1, 2], &[1], &gts, &dets).map50],
            [51.0 * 0.5 / 101.0],
        );
    }

    #[test]
    fn thresholds_are_numpys_doubles() {
        // Printed by numpy for pycocotools' `iouThrs` and `recThrs`.
        let t = linspace::<IOU_THRESHOLDS>(0.5, 0.95);
        #[allow(clippy::excessive_precision)]
        let numpy = [
            0.5,
            0.55,
            0.6,
            0.65,
            0.7,
            0.75,
            0.8,
            0.85,
            0.8999999999999999,
            0.95,
        ];
        assert_eq!(t, numpy);
        let r = linspace::<RECALL_POINTS>(0.0, 1.0);
        assert_eq!((r[7], r[30], r[58], r[100]), (0.07, 0.3, 0.58, 1.0));
        // Not 0.57: a recall of exactly 0.57 falls short of this recall point.
        assert_eq!(r[57], 0.5700000000000001);
    }

    #[test]
    fn results_round_trip_through_json() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/results.json");
        let dets = vec![
            det(42, 3, [1.5, 2.25, 30.125, 0.1], 0.987654321),
            det(7, 1, [0.0, 0.0, 1e-3, 640.0], 1.0 / 3.0),
        ];
        write_results(&path, &dets).unwrap();
        assert_eq!(read_results(&path).unwrap(), dets);
        let raw: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(raw[0]["image_id"], 42);
        assert_eq!(raw[0]["bbox"][1], 2.25);
        write_results(&path, &[]).unwrap();
        assert_eq!(read_results(&path).unwrap(), vec![]);
    }

    #[test]
    fn a_malformed_results_file_is_an_input_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("truncated.json", "[{\"image_id\": 1, \"category_id\": 1,"),
            ("object.json", "{\"image_id\": 1}"),
            (
                "no_score.json",
                "[{\"image_id\": 1, \"category_id\": 1, \"bbox\": [0, 0, 1, 1]}]",
            ),
            (
                "short_bbox.json",
                "[{\"image_id\": 1, \"category_id\": 1, \"bbox\": [0, 0, 1], \"score\": 1}]",
            ),
            (
                "negative.json",
                "[{\"image_id\": 1, \"category_id\": 1, \"bbox\": [5, 5, -2, 3], \"score\": 1}]",
            ),
        ];
        for (name, text) in cases {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            let err = read_results(&path).unwrap_err();
            assert!(matches!(err, error::Error::Input { .. }), "{name}: {err:?}");
            assert!(err.to_string().contains(name), "{name}: {err}");
            assert_eq!(err.exit_code(), 2);
        }
        let missing = read_results(&dir.path().join("absent.json")).unwrap_err();
        assert!(missing.to_string().contains("absent.json"), "{missing}");
        assert_eq!(missing.exit_code(), 2);
    }
}
