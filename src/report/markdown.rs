//! `report.md`: the report as Markdown, plots linked relatively (`plots/*.png`).

use super::plots::Plot;
use super::tables::{self, Table};
use super::{epochs_phrase, example_questions, NO_FONT_NOTE};
use crate::experiment::results::ExperimentResults;
use std::fmt::Write;

/// The main table (variant | top-1 | top-5 | aspect AUC | agreement | n) as Markdown, also
/// printed to stdout at the end of `makd experiment` and `makd demo`.
pub fn markdown_table(r: &ExperimentResults) -> String {
    table(&tables::results(r))
}

fn table(t: &Table) -> String {
    let line = |cells: &[String]| {
        let cells: Vec<String> = cells.iter().map(|c| cell(c)).collect();
        format!("| {} |\n", cells.join(" | "))
    };
    let mut s = line(&t.header);
    s.push('|');
    for &numeric in &t.numeric {
        s.push_str(if numeric { "---:|" } else { "---|" });
    }
    s.push('\n');
    for row in &t.rows {
        s.push_str(&line(row));
    }
    s
}

/// A table cell: pipes would end the cell and newlines the row.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

pub(super) fn render(r: &ExperimentResults, plots: &[Plot], text_in_plots: bool) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Experiment: {}\n", r.name);
    let _ = writeln!(
        s,
        "Created {}. Every number below is in `results.json` beside this file.\n",
        r.created
    );

    let _ = writeln!(s, "## What was run\n");
    let _ = writeln!(s, "- Dataset: {}", r.dataset);
    let _ = writeln!(
        s,
        "- {} classes, {} aspect questions",
        r.classes.len(),
        r.questions.len()
    );
    if let Some(e) = epochs_phrase(r) {
        let _ = writeln!(s, "- Epochs per run: {e}");
    }
    s.push('\n');
    s.push_str(&table(&tables::runs(r)));

    let _ = writeln!(s, "\n## Results\n");
    s.push_str(&markdown_table(r));
    let _ = writeln!(
        s,
        "\nTop-1 and top-5: test accuracy in percent, mean ± sample standard deviation over \
         seeds. Aspect AUC: mean over questions of the AUC of the student's aspect outputs \
         against the teacher's answers. Agreement: fraction of (image, question) pairs where \
         student and teacher give the same yes/no. n: seeds."
    );

    if !r.comparisons.is_empty() {
        let _ = writeln!(s, "\n## Is the difference beyond noise?\n");
        for c in &r.comparisons {
            let _ = writeln!(s, "- {}", c.sentence);
        }
        let _ = writeln!(s, "\n{}", super::VERDICT_NOTE);
    }

    if !plots.is_empty() {
        let _ = writeln!(s, "\n## Plots");
        if !text_in_plots {
            let _ = writeln!(s, "\n{NO_FONT_NOTE}");
        }
    }
    for p in plots {
        let _ = writeln!(s, "\n### {}\n", p.title);
        let _ = writeln!(s, "![{}](plots/{})\n", p.title, p.file);
        let _ = writeln!(s, "{}", p.caption);
        if p.file == "examples.png" {
            let _ = writeln!(s, "\nQuestions shown:\n");
            for qi in example_questions(r) {
                let q = &r.questions[qi];
                let _ = writeln!(s, "- **{}** ({}) {}", q.id, q.kind, q.text);
            }
        }
    }

    if let Some(t) = tables::questions(r) {
        let _ = writeln!(s, "\n## Questions\n");
        s.push_str(&table(&t));
        // The AUC columns are the numeric ones; they may hold "—".
        if t.numeric.contains(&true) {
            let _ = writeln!(
                s,
                "\n— : undefined (the teacher gave the same answer for every test image)."
            );
        }
    }

    if !r.notes.is_empty() {
        let _ = writeln!(s, "\n## Notes\n");
        for n in &r.notes {
            let _ = writeln!(s, "- {n}");
        }
    }

    let config = serde_json::to_string_pretty(&r.config).unwrap_or_default();
    let _ = writeln!(s, "\n## Configuration\n\n```json\n{config}\n```");
    s
}
