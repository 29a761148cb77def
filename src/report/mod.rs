//! Reports: `results.json` → `report.md`, a self-contained `report.html` and `plots/*.png`.
//!
//! Everything is rendered from one [`ExperimentResults`] value, and that same value is written
//! as `results.json` beside the report, so every number a reader sees can be checked against the
//! file (a test parses the tables back and compares). Rendering again from a saved
//! `results.json` ([`ExperimentResults::read`]) gives the same report without rerunning anything.

mod html;
mod markdown;
pub mod plots;
mod tables;

use crate::error::{input, Result};
use crate::experiment::results::ExperimentResults;
use crate::files;
use std::path::{Path, PathBuf};

pub use markdown::markdown_table;

/// The files one [`write_report`] call wrote.
#[derive(Clone, Debug)]
pub struct ReportFiles {
    pub results_json: PathBuf,
    pub markdown: PathBuf,
    pub html: PathBuf,
    /// `plots/*.png`, in report order; a plot without data (no embedding recorded) is absent.
    pub plots: Vec<PathBuf>,
    /// The font the plots' text was drawn with; `None` when none was found and the plots carry
    /// no text (the report says so).
    pub font: Option<PathBuf>,
}

/// Every plot file name a report can hold; stale ones from an earlier report are removed.
const PLOT_FILES: &[&str] = &[
    "learning_curves.png",
    "accuracy.png",
    "aspect_auc.png",
    "examples.png",
    "embedding.png",
];

/// Write `results.json`, `report.md`, `report.html` and `plots/*.png` into `out_dir` (created if
/// missing). Each file is written atomically.
pub fn write_report(results: &ExperimentResults, out_dir: &Path) -> Result<ReportFiles> {
    let json_path = out_dir.join("results.json");
    check(results, &json_path)?;
    files::write_json_atomic(&json_path, results)?;

    let font = plots::font_ready().cloned();
    let rendered = plots::render_all(results, font.is_some())?;
    let plot_dir = out_dir.join("plots");
    let mut plot_paths = Vec::new();
    for p in &rendered {
        let path = plot_dir.join(p.file);
        files::write_atomic(&path, &p.png)?;
        plot_paths.push(path);
    }
    for stale in PLOT_FILES {
        if !rendered.iter().any(|p| p.file == *stale) {
            let path = plot_dir.join(stale);
            if path.exists() {
                std::fs::remove_file(&path).map_err(|e| crate::error::io(&path, e))?;
            }
        }
    }

    let md_path = out_dir.join("report.md");
    files::write_atomic(
        &md_path,
        markdown::render(results, &rendered, font.is_some()).as_bytes(),
    )?;
    let html_path = out_dir.join("report.html");
    files::write_atomic(
        &html_path,
        html::render(results, &rendered, font.is_some()).as_bytes(),
    )?;
    Ok(ReportFiles {
        results_json: json_path,
        markdown: md_path,
        html: html_path,
        plots: plot_paths,
        font,
    })
}

/// Refuse results that JSON cannot hold or whose parts disagree in shape, before writing
/// anything: a report drawn from them would silently show something else.
pub(crate) fn check(r: &ExperimentResults, at: &Path) -> Result<()> {
    let at = at.display().to_string();
    let bad = r.non_finite_fields();
    if !bad.is_empty() {
        let shown: Vec<_> = bad.iter().take(5).cloned().collect();
        let more = if bad.len() > 5 {
            format!(" and {} more", bad.len() - 5)
        } else {
            String::new()
        };
        return Err(input(
            format!(
                "{} non-finite numbers (NaN or infinity): {}{more}",
                bad.len(),
                shown.join(", ")
            ),
            at,
            "JSON cannot hold NaN or infinity; a diverged run should be reported as failed \
             rather than recorded as a number",
        ));
    }
    let q = r.questions.len();
    let mut problems = Vec::new();
    for v in &r.variants {
        if !v.per_question_auc.is_empty() && v.per_question_auc.len() != q {
            problems.push(format!(
                "variant {}: {} per-question AUCs for {q} questions",
                v.name,
                v.per_question_auc.len()
            ));
        }
    }
    for (i, e) in r.examples.iter().enumerate() {
        let n = e.questions.len();
        if e.teacher.len() != n || e.student.len() != n {
            problems.push(format!(
                "examples[{i}]: {n} questions but {} teacher and {} student values",
                e.teacher.len(),
                e.student.len()
            ));
        }
        if let Some(&qi) = e.questions.iter().find(|&&qi| qi >= q) {
            problems.push(format!(
                "examples[{i}]: question index {qi} ≥ {q} questions"
            ));
        }
    }
    if let Some(e) = &r.embedding {
        if e.labels.len() != e.points.len() {
            problems.push(format!(
                "embedding: {} points but {} labels",
                e.points.len(),
                e.labels.len()
            ));
        }
    }
    if !problems.is_empty() {
        return Err(input(
            format!("inconsistent results: {}", problems.join("; ")),
            at,
            "the experiment runner built mismatched parts; please report this as a bug",
        ));
    }
    Ok(())
}

/// Epoch counts of the runs as a phrase: "10" or "8 to 10" (runs may stop early).
pub(crate) fn epochs_phrase(r: &ExperimentResults) -> Option<String> {
    let last: Vec<usize> = r
        .variants
        .iter()
        .flat_map(|v| &v.runs)
        .filter_map(|run| run.curve.iter().map(|p| p.epoch).max())
        .collect();
    let (lo, hi) = (last.iter().min()?, last.iter().max()?);
    Some(if lo == hi {
        lo.to_string()
    } else {
        format!("{lo} to {hi}")
    })
}

/// The questions the examples show, each once, in first-appearance order.
pub(crate) fn example_questions(r: &ExperimentResults) -> Vec<usize> {
    let mut seen = Vec::new();
    for &qi in r.examples.iter().flat_map(|e| &e.questions) {
        if qi < r.questions.len() && !seen.contains(&qi) {
            seen.push(qi);
        }
    }
    seen
}

/// Under the verdicts: how to read them.
pub(crate) const VERDICT_NOTE: &str = "Each comparison is on test top-1. Runs of the same seed \
    are paired (paired t on the per-seed differences); where the seeds differ, Welch's t. \
    \"Beyond noise\" means the Holm-adjusted p is below 0.05, which holds the chance of any false \
    claim in this report at 5%; the 95% intervals are per comparison.";

/// Said in place of the plots' missing labels when no font was found.
pub(crate) const NO_FONT_NOTE: &str = "The plots have no text: no font was found. Install \
    fonts-dejavu-core (Debian/Ubuntu) or set MAKD_FONT to a .ttf file and render again.";

#[cfg(test)]
pub(crate) mod fixture;

#[cfg(test)]
mod tests;
