//! `report.html`: one self-contained file (plots as base64 data URIs, inline CSS, no scripts or
//! external assets), so it can be mailed or archived alone.

use super::plots::Plot;
use super::tables::{self, Table};
use super::{epochs_phrase, example_questions, NO_FONT_NOTE};
use crate::experiment::results::ExperimentResults;
use base64::Engine;
use std::fmt::Write;

const CSS: &str = "body{font-family:system-ui,-apple-system,'DejaVu Sans',sans-serif;\
max-width:1100px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}\
h1{font-size:1.7em}h2{margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}\
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:.3em .7em}\
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}\
img{max-width:100%;height:auto;border:1px solid #eee}figure{margin:1em 0}\
figcaption{color:#555;font-size:.95em}.verdict{margin:.3em 0}.beyond{color:#1a6b1a}\
.within{color:#8a5a00}pre{background:#f6f6f6;padding:1em;overflow-x:auto}\
.note{background:#fff8e0;padding:.5em 1em;border-left:4px solid #e0b000}";

/// Escape text for HTML element content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `<table{attrs}>` with a header row; numeric cells right-aligned by the `num` class.
fn table(t: &Table, attrs: &str) -> String {
    let ths: String = t
        .header
        .iter()
        .map(|h| format!("<th>{}</th>", esc(h)))
        .collect();
    let mut s = format!("<table{attrs}>\n<tr>{ths}</tr>\n");
    for row in &t.rows {
        let tds: String = row
            .iter()
            .zip(&t.numeric)
            .map(|(c, &numeric)| {
                let class = if numeric { " class=\"num\"" } else { "" };
                format!("<td{class}>{}</td>", esc(c))
            })
            .collect();
        let _ = writeln!(s, "<tr>{tds}</tr>");
    }
    s.push_str("</table>\n");
    s
}

pub(super) fn render(r: &ExperimentResults, plots: &[Plot], text_in_plots: bool) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>Experiment: {}</title>\n<style>{CSS}</style>\n</head>\n<body>\n",
        esc(&r.name)
    );
    let _ = writeln!(s, "<h1>Experiment: {}</h1>", esc(&r.name));
    let _ = writeln!(
        s,
        "<p>Created {}. Every number below is in <code>results.json</code> beside this \
         file.</p>",
        esc(&r.created)
    );

    let _ = writeln!(s, "<h2>What was run</h2>\n<ul>");
    let _ = writeln!(s, "<li>Dataset: {}</li>", esc(&r.dataset));
    let _ = writeln!(
        s,
        "<li>{} classes, {} aspect questions</li>",
        r.classes.len(),
        r.questions.len()
    );
    if let Some(e) = epochs_phrase(r) {
        let _ = writeln!(s, "<li>Epochs per run: {e}</li>");
    }
    let _ = writeln!(s, "</ul>");
    s.push_str(&table(&tables::runs(r), ""));

    let _ = writeln!(s, "<h2>Results</h2>");
    s.push_str(&table(&tables::results(r), " id=\"results\""));
    let _ = writeln!(
        s,
        "<p>Top-1 and top-5: test accuracy in percent, mean ± sample standard \
         deviation over seeds. Aspect AUC: mean over questions of the AUC of the student's \
         aspect outputs against the teacher's answers. Agreement: fraction of (image, question) \
         pairs where student and teacher give the same yes/no. n: seeds.</p>"
    );

    if !r.comparisons.is_empty() {
        let _ = writeln!(s, "<h2>Is the difference beyond noise?</h2>");
        for c in &r.comparisons {
            let class = if c.beyond_noise { "beyond" } else { "within" };
            let _ = writeln!(s, "<p class=\"verdict {class}\">{}</p>", esc(&c.sentence));
        }
        let _ = writeln!(s, "<p>{}</p>", esc(super::VERDICT_NOTE));
    }

    if !plots.is_empty() {
        let _ = writeln!(s, "<h2>Plots</h2>");
        if !text_in_plots {
            let _ = writeln!(s, "<p class=\"note\">{}</p>", esc(NO_FONT_NOTE));
        }
    }
    for p in plots {
        let b64 = base64::engine::general_purpose::STANDARD.encode(&p.png);
        let _ = writeln!(
            s,
            "<h3>{}</h3>\n<figure><img alt=\"{}\" width=\"{}\" height=\"{}\" \
             src=\"data:image/png;base64,{b64}\">\n<figcaption>{}</figcaption></figure>",
            esc(p.title),
            esc(p.title),
            p.width,
            p.height,
            esc(&p.caption)
        );
        if p.file == "examples.png" {
            let _ = writeln!(s, "<p>Questions shown:</p>\n<ul>");
            for qi in example_questions(r) {
                let q = &r.questions[qi];
                let _ = writeln!(
                    s,
                    "<li><b>{}</b> ({}) {}</li>",
                    esc(&q.id),
                    esc(&q.kind),
                    esc(&q.text)
                );
            }
            let _ = writeln!(s, "</ul>");
        }
    }

    if let Some(t) = tables::questions(r) {
        let _ = writeln!(s, "<h2>Questions</h2>");
        s.push_str(&table(&t, ""));
        // The AUC columns are the numeric ones; they may hold "—".
        if t.numeric.contains(&true) {
            let _ = writeln!(
                s,
                "<p>— : undefined (the teacher gave the same answer for every test image).</p>"
            );
        }
    }

    if !r.notes.is_empty() {
        let _ = writeln!(s, "<h2>Notes</h2>\n<ul>");
        for n in &r.notes {
            let _ = writeln!(s, "<li>{}</li>", esc(n));
        }
        let _ = writeln!(s, "</ul>");
    }

    let config = serde_json::to_string_pretty(&r.config).unwrap_or_default();
    let _ = writeln!(
        s,
        "<h2>Configuration</h2>\n<pre>{}</pre>\n</body>\n</html>",
        esc(&config)
    );
    s
}
