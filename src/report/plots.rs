//! The report's PNG plots, drawn with plotters into an RGB buffer and encoded here, so the same
//! bytes go to `plots/*.png` and into the HTML as data URIs.
//!
//! Text needs a font: plotters' `ab_glyph` backend has no system font lookup, so [`font_ready`]
//! loads a TrueType file (DejaVu Sans from the Debian package `fonts-dejavu-core`, or the file
//! named by `MAKD_FONT`) once and registers it. Without one every plot is still drawn, without
//! any text (no titles, ticks or legends); the report says so in place of the missing labels.

use crate::error::{Error, Result};
use crate::experiment::results::{Embedding, ExperimentResults};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

/// Where a font is looked for, in order, after `MAKD_FONT`.
const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", // Debian, Ubuntu (fonts-dejavu-core)
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",          // Fedora
    "/usr/share/fonts/TTF/DejaVuSans.ttf",             // Arch
    "/usr/local/share/fonts/DejaVuSans.ttf",
    "/Library/Fonts/Arial.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf", // macOS
];

const FAMILY: &str = "sans-serif";

/// Tableau 10: distinguishable, colour-blind-friendlier than the plotters defaults.
pub const PALETTE: [RGBColor; 10] = [
    RGBColor(0x4E, 0x79, 0xA7),
    RGBColor(0xF2, 0x8E, 0x2B),
    RGBColor(0xE1, 0x57, 0x59),
    RGBColor(0x76, 0xB7, 0xB2),
    RGBColor(0x59, 0xA1, 0x4F),
    RGBColor(0xED, 0xC9, 0x48),
    RGBColor(0xB0, 0x7A, 0xA1),
    RGBColor(0xFF, 0x9D, 0xA7),
    RGBColor(0x9C, 0x75, 0x5F),
    RGBColor(0xBA, 0xB0, 0xAC),
];
const TEACHER: RGBColor = RGBColor(0xF2, 0x8E, 0x2B);
const STUDENT: RGBColor = RGBColor(0x4E, 0x79, 0xA7);
const INK: RGBColor = RGBColor(0x33, 0x33, 0x33);

/// More classes than this and the embedding legend is left out (it would not fit).
const MAX_LEGEND_CLASSES: usize = 30;

/// Register a font for plot text once per process; the file it came from, or `None` when no
/// font was found (plots are then drawn without text).
pub fn font_ready() -> Option<&'static PathBuf> {
    static FONT: OnceLock<Option<PathBuf>> = OnceLock::new();
    FONT.get_or_init(|| {
        let from_env = std::env::var_os("MAKD_FONT").map(PathBuf::from);
        let candidates = from_env
            .into_iter()
            .chain(FONT_CANDIDATES.iter().map(PathBuf::from));
        for path in candidates {
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            // plotters keeps fonts for the whole process and wants 'static bytes: leaking
            // one font file once is exactly that lifetime.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font(FAMILY, FontStyle::Normal, bytes).is_ok() {
                return Some(path);
            }
        }
        None
    })
    .as_ref()
}

/// One rendered plot.
#[derive(Clone, Debug)]
pub struct Plot {
    /// File name under `plots/`, e.g. `accuracy.png`.
    pub file: &'static str,
    /// Section title in the report.
    pub title: &'static str,
    /// What the plot shows, one or two sentences (printed under it).
    pub caption: String,
    pub width: u32,
    pub height: u32,
    /// The encoded PNG.
    pub png: Vec<u8>,
}

type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;
type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// Render every plot the results have data for. `text` is false when no font is available.
pub fn render_all(r: &ExperimentResults, text: bool) -> Result<Vec<Plot>> {
    let mut out = Vec::new();
    let t = Text { on: text };
    if r.variants
        .iter()
        .any(|v| v.runs.iter().any(|run| !run.curve.is_empty()))
    {
        out.push(learning_curves(r, t)?);
    }
    if r.variants.iter().any(|v| v.top1.n > 0) {
        out.push(accuracy_bars(r, t)?);
    }
    if !r.questions.is_empty() && aspect_variants(r).next().is_some() {
        out.push(aspect_auc(r, t)?);
    }
    if !r.examples.is_empty() {
        out.push(examples(r, t)?);
    }
    if let Some(e) = &r.embedding {
        if !e.points.is_empty() {
            out.push(embedding(r, e, t)?);
        }
    }
    Ok(out)
}

#[derive(Clone, Copy)]
struct Text {
    on: bool,
}

impl Text {
    fn style(self, size: f64) -> TextStyle<'static> {
        (FAMILY, size).into_font().color(&INK)
    }
}

fn variant_color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

fn class_color(i: usize, n: usize) -> RGBColor {
    if n <= PALETTE.len() {
        return PALETTE[i];
    }
    // Beyond ten classes: evenly spaced hues, alternating lightness so neighbours differ.
    let hsl = HSLColor(
        i as f64 / n as f64,
        0.65,
        if i.is_multiple_of(2) { 0.42 } else { 0.6 },
    );
    let (r, g, b) = hsl.rgb();
    RGBColor(r, g, b)
}

/// Draw into a white `w`×`h` canvas and encode it as PNG.
fn render(
    file: &'static str,
    w: u32,
    h: u32,
    draw: impl FnOnce(&Area<'_>) -> DrawResult,
) -> Result<Vec<u8>> {
    let fail = |what: String| Error::Io {
        path: format!("plots/{file}"),
        error: std::io::Error::other(what),
    };
    let mut buf = vec![255u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        draw(&root).map_err(|e| fail(format!("drawing failed: {e}")))?;
        root.present()
            .map_err(|e| fail(format!("drawing failed: {e}")))?;
    }
    let img = image::RgbImage::from_raw(w, h, buf)
        .ok_or_else(|| fail("plot buffer has the wrong size".into()))?;
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| fail(format!("PNG encoding failed: {e}")))?;
    Ok(png)
}

/// A legend in its own column: a swatch and a name per entry, top-aligned.
fn draw_legend(
    area: &Area<'_>,
    t: Text,
    entries: &[(String, RGBColor)],
    square: bool,
) -> DrawResult {
    if !t.on {
        return Ok(());
    }
    let style = t.style(15.0).pos(Pos::new(HPos::Left, VPos::Center));
    let (x0, y0) = (10, 50);
    for (i, (name, color)) in entries.iter().enumerate() {
        let y = y0 + 24 * i as i32;
        if square {
            area.draw(&Rectangle::new(
                [(x0, y - 6), (x0 + 14, y + 6)],
                color.filled(),
            ))?;
        } else {
            area.draw(&PathElement::new(
                vec![(x0, y), (x0 + 24, y)],
                color.stroke_width(3),
            ))?;
        }
        area.draw(&plotters::element::Text::new(
            name.clone(),
            (x0 + 32, y),
            style.clone(),
        ))?;
    }
    Ok(())
}

/// Pixel height a legend of `n` entries needs (see [`draw_legend`]'s layout).
fn legend_height(n: usize) -> u32 {
    50 + 24 * n as u32 + 20
}

/// Pixel width the legend column needs for these names.
fn legend_width(t: Text, names: impl Iterator<Item = String>) -> u32 {
    if !t.on {
        return 0;
    }
    let widest = names.map(|n| text_width(t, &n, 15.0)).max().unwrap_or(0);
    // ab_glyph's estimate sums unrounded advances while drawing rounds per glyph: leave slack.
    widest + widest / 10 + 70
}

fn text_width(t: Text, s: &str, size: f64) -> u32 {
    if !t.on {
        return 0;
    }
    // A throwaway 1×1 canvas just to measure; measuring never draws.
    let mut one = [0u8; 3];
    let area = BitMapBackend::with_buffer(&mut one, (1, 1)).into_drawing_area();
    area.estimate_text_size(s, &t.style(size))
        .map(|(w, _)| w)
        .unwrap_or(8 * s.len() as u32)
}

/// Axis range covering `values`, padded by 8% (at least `min_pad`) on both sides.
fn padded(values: impl Iterator<Item = f64>, min_pad: f64) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08).max(min_pad);
    (lo - pad, hi + pad)
}

fn learning_curves(r: &ExperimentResults, t: Text) -> Result<Plot> {
    let names = r.variants.iter().map(|v| v.name.clone());
    let legend_w = legend_width(t, names);
    let (w, h) = (900 + legend_w, 560u32.max(legend_height(r.variants.len())));
    // Mean over the seeds that reached each epoch.
    let means: Vec<Vec<(f64, f64)>> = r
        .variants
        .iter()
        .map(|v| {
            let mut by_epoch: BTreeMap<usize, (f64, usize)> = BTreeMap::new();
            for p in v.runs.iter().flat_map(|run| &run.curve) {
                let e = by_epoch.entry(p.epoch).or_insert((0.0, 0));
                e.0 += p.test_top1;
                e.1 += 1;
            }
            by_epoch
                .into_iter()
                .map(|(ep, (s, n))| (ep as f64, s / n as f64))
                .collect()
        })
        .collect();
    let all = r
        .variants
        .iter()
        .flat_map(|v| &v.runs)
        .flat_map(|run| &run.curve);
    let max_epoch = all.clone().map(|p| p.epoch).max().unwrap_or(1).max(2) as f64;
    let min_epoch = all.clone().map(|p| p.epoch).min().unwrap_or(1) as f64;
    let (y0, y1) = padded(all.map(|p| p.test_top1), 0.5);
    let (y0, y1) = (y0.max(0.0), y1.min(100.0));
    let png = render("learning_curves.png", w, h, |root| {
        root.fill(&WHITE)?;
        let (plot, legend) = root.split_horizontally(w - legend_w);
        let mut b = ChartBuilder::on(&plot);
        b.margin(15);
        if t.on {
            b.caption(
                "Test top-1 by epoch (mean over seeds; thin lines: single seeds)",
                t.style(20.0),
            )
            .x_label_area_size(45)
            .y_label_area_size(60);
        }
        let mut chart = b.build_cartesian_2d(min_epoch.min(max_epoch - 1.0)..max_epoch, y0..y1)?;
        mesh(&mut chart, t, "epoch", "test top-1 (%)")?;
        for (vi, v) in r.variants.iter().enumerate() {
            let c = variant_color(vi);
            for run in &v.runs {
                chart.draw_series(LineSeries::new(
                    run.curve.iter().map(|p| (p.epoch as f64, p.test_top1)),
                    c.mix(0.3).stroke_width(1),
                ))?;
            }
            chart.draw_series(LineSeries::new(
                means[vi].iter().copied(),
                c.stroke_width(3),
            ))?;
            if means[vi].len() <= 40 {
                chart.draw_series(means[vi].iter().map(|&p| Circle::new(p, 3, c.filled())))?;
            }
        }
        let entries: Vec<_> = r
            .variants
            .iter()
            .enumerate()
            .map(|(i, v)| (v.name.clone(), variant_color(i)))
            .collect();
        draw_legend(&legend, t, &entries, false)
    })?;
    Ok(Plot {
        file: "learning_curves.png",
        title: "Learning curves",
        caption: "Test top-1 after each epoch; the thick line is the mean over seeds, thin \
                  lines are single seeds."
            .into(),
        width: w,
        height: h,
        png,
    })
}

/// A tick label without trailing zeros: epochs read "2", not "2.0".
fn tick(v: &f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.into()
    }
}

/// Mesh with tick labels and axis names, or bare grid lines when there is no font.
fn mesh<X, Y>(
    chart: &mut ChartContext<'_, BitMapBackend<'_>, Cartesian2d<X, Y>>,
    t: Text,
    x_desc: &str,
    y_desc: &str,
) -> DrawResult
where
    X: Ranged<ValueType = f64> + plotters::coord::ranged1d::ValueFormatter<f64>,
    Y: Ranged<ValueType = f64> + plotters::coord::ranged1d::ValueFormatter<f64>,
{
    let mut m = chart.configure_mesh();
    m.light_line_style(RGBColor(0xEE, 0xEE, 0xEE))
        .bold_line_style(RGBColor(0xDD, 0xDD, 0xDD))
        .axis_style(INK);
    if t.on {
        m.x_desc(x_desc)
            .y_desc(y_desc)
            .x_label_formatter(&tick)
            .y_label_formatter(&tick)
            .label_style(t.style(14.0))
            .axis_desc_style(t.style(16.0));
    } else {
        m.x_labels(0).y_labels(0);
    }
    m.draw()?;
    Ok(())
}

fn accuracy_bars(r: &ExperimentResults, t: Text) -> Result<Plot> {
    let k = r.variants.len();
    let slot = r
        .variants
        .iter()
        .map(|v| text_width(t, &v.name, 15.0) + 30)
        .max()
        .unwrap_or(0)
        .max(110);
    let (w, h) = ((k as u32 * slot + 140).max(700), 560);
    let values = r.variants.iter().flat_map(|v| {
        let s = v.top1;
        let spread = if s.n > 0 {
            vec![s.mean - s.std, s.mean + s.std]
        } else {
            vec![]
        };
        spread
            .into_iter()
            .chain(v.runs.iter().map(|run| run.test_top1))
    });
    let (lo, hi) = padded(values, 0.5);
    // Bars start at the bottom of the axis; the axis is cut to show seed-level differences,
    // and says so.
    let (y0, y1) = (
        (lo - (hi - lo) * 0.3).max(0.0),
        (hi + (hi - lo) * 0.1).min(100.0),
    );
    let y_desc = if y0 > 0.0 {
        "test top-1 (%), axis does not start at 0"
    } else {
        "test top-1 (%)"
    };
    let png = render("accuracy.png", w, h, |root| {
        root.fill(&WHITE)?;
        let mut b = ChartBuilder::on(root);
        b.margin(15);
        if t.on {
            b.caption(
                "Test top-1 per variant: mean ± std, dots are seeds",
                t.style(20.0),
            )
            .x_label_area_size(40)
            .y_label_area_size(60);
        }
        let mut chart = b.build_cartesian_2d(-0.5..k as f64 - 0.5, y0..y1)?;
        {
            let mut m = chart.configure_mesh();
            m.disable_x_mesh()
                .x_labels(0)
                .light_line_style(RGBColor(0xEE, 0xEE, 0xEE))
                .bold_line_style(RGBColor(0xDD, 0xDD, 0xDD))
                .axis_style(INK);
            if t.on {
                m.y_desc(y_desc)
                    .y_label_formatter(&tick)
                    .label_style(t.style(14.0))
                    .axis_desc_style(t.style(16.0));
            } else {
                m.y_labels(0);
            }
            m.draw()?;
        }
        for (i, v) in r.variants.iter().enumerate() {
            if v.top1.n == 0 {
                continue;
            }
            let x = i as f64;
            let c = variant_color(i);
            let s = v.top1;
            chart.draw_series(std::iter::once(Rectangle::new(
                [(x - 0.3, y0), (x + 0.3, s.mean)],
                c.mix(0.75).filled(),
            )))?;
            if s.n >= 2 {
                let (a, b) = ((s.mean - s.std).max(y0), (s.mean + s.std).min(y1));
                let whisker = INK.stroke_width(2);
                chart.draw_series([
                    PathElement::new(vec![(x, a), (x, b)], whisker),
                    PathElement::new(vec![(x - 0.08, a), (x + 0.08, a)], whisker),
                    PathElement::new(vec![(x - 0.08, b), (x + 0.08, b)], whisker),
                ])?;
            }
            let n = v.runs.len();
            chart.draw_series(v.runs.iter().enumerate().map(|(j, run)| {
                // Spread the seed dots sideways so equal values stay visible.
                let dx = if n > 1 {
                    0.18 * (j as f64 / (n - 1) as f64 - 0.5)
                } else {
                    0.0
                };
                Circle::new((x + 0.12 + dx, run.test_top1), 4, INK.filled())
            }))?;
            if t.on {
                let (px, py) = chart.backend_coord(&(x, y0));
                root.draw(&plotters::element::Text::new(
                    v.name.clone(),
                    (px, py + 10),
                    t.style(15.0).pos(Pos::new(HPos::Center, VPos::Top)),
                ))?;
                let top = if s.n >= 2 { s.mean + s.std } else { s.mean };
                let (px, py) = chart.backend_coord(&(x - 0.12, top.min(y1)));
                root.draw(&plotters::element::Text::new(
                    format!("{:.2}", s.mean),
                    (px, py - 6),
                    t.style(14.0).pos(Pos::new(HPos::Center, VPos::Bottom)),
                ))?;
            }
        }
        Ok(())
    })?;
    Ok(Plot {
        file: "accuracy.png",
        title: "Accuracy per variant",
        caption: "Bars: mean test top-1 over seeds (value printed above); whiskers: ± one \
                  sample standard deviation; dots: individual seeds."
            .into(),
        width: w,
        height: h,
        png,
    })
}

/// Variants with at least one defined per-question AUC, with their palette index.
fn aspect_variants(
    r: &ExperimentResults,
) -> impl Iterator<Item = (usize, &crate::experiment::results::VariantResult)> {
    r.variants
        .iter()
        .enumerate()
        .filter(|(_, v)| v.per_question_auc.iter().any(|a| a.is_some()))
}

/// Question ids along the x axis of a chart whose x unit is one question; vertical when the
/// slots are too narrow for the widest id.
fn question_ticks<Y: Ranged<ValueType = f64>>(
    root: &Area<'_>,
    chart: &ChartContext<
        '_,
        BitMapBackend<'_>,
        Cartesian2d<plotters::coord::types::RangedCoordf64, Y>,
    >,
    t: Text,
    ids: &[&str],
    y_axis: f64,
) -> DrawResult {
    if !t.on || ids.is_empty() {
        return Ok(());
    }
    let slot =
        (chart.backend_coord(&(1.0, y_axis)).0 - chart.backend_coord(&(0.0, y_axis)).0).abs();
    let widest = ids
        .iter()
        .map(|s| text_width(t, s, 13.0))
        .max()
        .unwrap_or(0) as i32;
    let vertical = widest + 4 > slot;
    for (i, id) in ids.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(i as f64, y_axis));
        let style = if vertical {
            t.style(13.0)
                .transform(FontTransform::Rotate270)
                .pos(Pos::new(HPos::Right, VPos::Center))
        } else {
            t.style(13.0).pos(Pos::new(HPos::Center, VPos::Top))
        };
        root.draw(&plotters::element::Text::new(
            id.to_string(),
            (px, py + 6),
            style,
        ))?;
    }
    Ok(())
}

fn aspect_auc(r: &ExperimentResults, t: Text) -> Result<Plot> {
    let vs: Vec<_> = aspect_variants(r).collect();
    let q = r.questions.len();
    let legend_w = legend_width(t, vs.iter().map(|(_, v)| v.name.clone()));
    let per_q = (vs.len() as u32 * 9 + 8).max(22);
    let (w, h) = (
        (q as u32 * per_q + 120).max(800) + legend_w,
        520u32.max(legend_height(vs.len())),
    );
    let ids: Vec<&str> = r.questions.iter().map(|x| x.id.as_str()).collect();
    let png = render("aspect_auc.png", w, h, |root| {
        root.fill(&WHITE)?;
        let (plot, legend) = root.split_horizontally(w - legend_w);
        let mut b = ChartBuilder::on(&plot);
        b.margin(15);
        if t.on {
            let widest = ids
                .iter()
                .map(|s| text_width(t, s, 13.0))
                .max()
                .unwrap_or(0);
            b.caption(
                "Per-question AUC of the student's aspect outputs against the teacher (0.5 = chance)",
                t.style(20.0),
            )
            .x_label_area_size(widest.max(20) + 20)
            .y_label_area_size(60);
        }
        let mut chart = b.build_cartesian_2d(-0.6..q as f64 - 0.4, 0.0..1.0)?;
        {
            let mut m = chart.configure_mesh();
            m.disable_x_mesh()
                .x_labels(0)
                .light_line_style(RGBColor(0xEE, 0xEE, 0xEE))
                .bold_line_style(RGBColor(0xDD, 0xDD, 0xDD))
                .axis_style(INK);
            if t.on {
                m.y_desc("AUC")
                    .label_style(t.style(14.0))
                    .axis_desc_style(t.style(16.0));
            } else {
                m.y_labels(0);
            }
            m.draw()?;
        }
        let nv = vs.len() as f64;
        let bw = 0.8 / nv;
        for (j, (vi, v)) in vs.iter().enumerate() {
            let c = variant_color(*vi);
            chart.draw_series(v.per_question_auc.iter().enumerate().filter_map(|(qi, a)| {
                let a = (*a)?;
                let x0 = qi as f64 - 0.4 + j as f64 * bw;
                Some(Rectangle::new([(x0, 0.0), (x0 + bw * 0.9, a)], c.filled()))
            }))?;
        }
        chart.draw_series(DashedLineSeries::new(
            [(-0.6, 0.5), (q as f64 - 0.4, 0.5)],
            6,
            4,
            INK.stroke_width(1),
        ))?;
        question_ticks(root, &chart, t, &ids, 0.0)?;
        let entries: Vec<_> = vs
            .iter()
            .map(|(i, v)| (v.name.clone(), variant_color(*i)))
            .collect();
        draw_legend(&legend, t, &entries, true)
    })?;
    Ok(Plot {
        file: "aspect_auc.png",
        title: "Per-question aspect AUC",
        caption: "For each question, how well the student's aspect output ranks test images \
                  the way the teacher's answer does (mean over seeds; the dashed line is chance). \
                  No bar: undefined, the teacher gave every test image the same answer. \
                  Question texts are listed below."
            .into(),
        width: w,
        height: h,
        png,
    })
}

fn examples(r: &ExperimentResults, t: Text) -> Result<Plot> {
    let ex = &r.examples;
    let max_q = ex
        .iter()
        .map(|e| e.questions.len())
        .max()
        .unwrap_or(1)
        .max(1);
    let legend_w = legend_width(
        t,
        ["teacher P(yes)".to_string(), "student sigmoid".to_string()].into_iter(),
    );
    let panel_h = 250u32;
    let (w, h) = (
        (max_q as u32 * 44 + 120).max(700) + legend_w,
        panel_h * ex.len() as u32 + 20,
    );
    let png = render("examples.png", w, h, |root| {
        root.fill(&WHITE)?;
        let (plots, legend) = root.split_horizontally(w - legend_w);
        let panels = plots.margin(10, 10, 0, 0).split_evenly((ex.len(), 1));
        for (e, panel) in ex.iter().zip(&panels) {
            let nq = e.questions.len().max(1);
            let ids: Vec<&str> = e
                .questions
                .iter()
                .map(|&qi| r.questions.get(qi).map(|q| q.id.as_str()).unwrap_or("?"))
                .collect();
            let mut b = ChartBuilder::on(panel);
            b.margin(6);
            if t.on {
                b.caption(
                    format!("image {} (class: {})", e.image_id, e.label),
                    t.style(17.0),
                )
                .x_label_area_size(28)
                .y_label_area_size(60);
            }
            let mut chart = b.build_cartesian_2d(-0.6..nq as f64 - 0.4, 0.0..1.0)?;
            {
                let mut m = chart.configure_mesh();
                m.disable_x_mesh()
                    .x_labels(0)
                    .y_labels(3)
                    .light_line_style(RGBColor(0xEE, 0xEE, 0xEE))
                    .bold_line_style(RGBColor(0xDD, 0xDD, 0xDD))
                    .axis_style(INK);
                if t.on {
                    m.y_desc("P(yes)")
                        .label_style(t.style(13.0))
                        .axis_desc_style(t.style(14.0));
                } else {
                    m.y_labels(0);
                }
                m.draw()?;
            }
            let bars = |vals: &[f32], off: f64, c: RGBColor| {
                vals.iter()
                    .enumerate()
                    .map(move |(i, &p)| {
                        let x0 = i as f64 + off;
                        Rectangle::new(
                            [(x0, 0.0), (x0 + 0.36, p.clamp(0.0, 1.0) as f64)],
                            c.filled(),
                        )
                    })
                    .collect::<Vec<_>>()
            };
            chart.draw_series(bars(&e.teacher, -0.38, TEACHER))?;
            chart.draw_series(bars(&e.student, 0.02, STUDENT))?;
            question_ticks(root, &chart, t, &ids, 0.0)?;
        }
        draw_legend(
            &legend,
            t,
            &[
                ("teacher P(yes)".to_string(), TEACHER),
                ("student sigmoid".to_string(), STUDENT),
            ],
            true,
        )
    })?;
    Ok(Plot {
        file: "examples.png",
        title: "Per-image aspect responses",
        caption: "For a few test images: the teacher's P(yes) (orange) next to the student's \
                  sigmoid of its aspect logit (blue), per question."
            .into(),
        width: w,
        height: h,
        png,
    })
}

fn embedding(r: &ExperimentResults, e: &Embedding, t: Text) -> Result<Plot> {
    let nc = r
        .classes
        .len()
        .max(e.labels.iter().copied().max().map_or(0, |m| m + 1));
    let show_legend = nc <= MAX_LEGEND_CLASSES;
    let class_name = |i: usize| {
        r.classes
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("class {i}"))
    };
    let legend_w = if show_legend {
        legend_width(t, (0..nc).map(class_name))
    } else {
        0
    };
    let (w, h) = (760 + legend_w, 640u32.max(legend_height(nc)));
    let (x0, x1) = padded(e.points.iter().map(|p| p[0] as f64), 1e-3);
    let (y0, y1) = padded(e.points.iter().map(|p| p[1] as f64), 1e-3);
    let png = render("embedding.png", w, h, |root| {
        root.fill(&WHITE)?;
        let (plot, legend) = root.split_horizontally(w - legend_w);
        let mut b = ChartBuilder::on(&plot);
        b.margin(15);
        if t.on {
            b.caption(
                format!("PCA of penultimate features: {}", e.variant),
                t.style(20.0),
            )
            .x_label_area_size(45)
            .y_label_area_size(60);
        }
        let mut chart = b.build_cartesian_2d(x0..x1, y0..y1)?;
        mesh(&mut chart, t, "PC 1", "PC 2")?;
        chart.draw_series(e.points.iter().zip(&e.labels).map(|(p, &l)| {
            Circle::new(
                (p[0] as f64, p[1] as f64),
                3,
                class_color(l, nc).mix(0.8).filled(),
            )
        }))?;
        if show_legend {
            let entries: Vec<_> = (0..nc)
                .map(|i| (class_name(i), class_color(i, nc)))
                .collect();
            draw_legend(&legend, t, &entries, true)?;
        }
        Ok(())
    })?;
    let mut caption = format!(
        "{} test images projected on the top two principal components of the penultimate \
         features of {}, coloured by true class.",
        e.points.len(),
        e.variant
    );
    if !show_legend {
        caption.push_str(&format!(" No legend: {nc} classes are too many to label."));
    }
    Ok(Plot {
        file: "embedding.png",
        title: "Embedding of penultimate features",
        caption,
        width: w,
        height: h,
        png,
    })
}
