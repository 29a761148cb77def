//! The report's tables as plain cells, built once so that `report.md` and `report.html` (and the
//! table printed at the end of a run) show the same text; each format only adds its syntax and
//! escaping.

use crate::experiment::results::{ExperimentResults, Stat};

/// One table's content: cells as they are shown, before any format's escaping.
pub(crate) struct Table {
    pub header: Vec<String>,
    /// Per column: right-aligned, as numbers are.
    pub numeric: Vec<bool>,
    pub rows: Vec<Vec<String>>,
}

/// "What was run": variant | what it does | seeds.
pub(crate) fn runs(r: &ExperimentResults) -> Table {
    let rows = r
        .variants
        .iter()
        .map(|v| {
            let seeds: Vec<String> = v.runs.iter().map(|run| run.seed.to_string()).collect();
            vec![v.name.clone(), v.description.clone(), seeds.join(", ")]
        })
        .collect();
    Table {
        header: strings(&["variant", "what it does", "seeds"]),
        numeric: vec![false; 3],
        rows,
    }
}

/// The main table: variant | top-1 | top-5 | aspect AUC | agreement | n.
pub(crate) fn results(r: &ExperimentResults) -> Table {
    let header = strings(&[
        "variant",
        "top-1 (%)",
        "top-5 (%)",
        "aspect AUC",
        "agreement",
        "n",
    ]);
    let rows = r
        .variants
        .iter()
        .map(|v| {
            vec![
                v.name.clone(),
                fmt_stat(&v.top1, 2),
                fmt_stat(&v.top5, 2),
                fmt_opt_stat(&v.aspect_auc, 3),
                fmt_opt_stat(&v.aspect_agreement, 3),
                v.runs.len().to_string(),
            ]
        })
        .collect();
    let mut numeric = vec![true; header.len()];
    numeric[0] = false;
    Table {
        header,
        numeric,
        rows,
    }
}

/// Each question with its AUC per variant that has any (none when the run had no aspect head);
/// `None` without questions. "—" marks an AUC that is undefined.
pub(crate) fn questions(r: &ExperimentResults) -> Option<Table> {
    if r.questions.is_empty() {
        return None;
    }
    let aspect_vs: Vec<_> = r
        .variants
        .iter()
        .filter(|v| v.per_question_auc.iter().any(|a| a.is_some()))
        .collect();
    let mut header = strings(&["id", "kind", "question"]);
    header.extend(aspect_vs.iter().map(|v| format!("AUC {}", v.name)));
    let mut numeric = vec![false; 3];
    numeric.resize(header.len(), true);
    let rows = r
        .questions
        .iter()
        .enumerate()
        .map(|(qi, q)| {
            let mut row = vec![q.id.clone(), q.kind.clone(), q.text.clone()];
            row.extend(aspect_vs.iter().map(|v| {
                v.per_question_auc
                    .get(qi)
                    .copied()
                    .flatten()
                    .map_or("—".to_string(), |a| format!("{a:.3}"))
            }));
            row
        })
        .collect();
    Some(Table {
        header,
        numeric,
        rows,
    })
}

fn strings(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

/// `mean ± std` with `decimals`; no ± for a single run, "—" for none.
pub(crate) fn fmt_stat(s: &Stat, decimals: usize) -> String {
    match s.n {
        0 => "—".to_string(),
        1 => format!("{:.*}", decimals, s.mean),
        _ => format!("{:.*} ± {:.*}", decimals, s.mean, decimals, s.std),
    }
}

pub(crate) fn fmt_opt_stat(s: &Option<Stat>, decimals: usize) -> String {
    s.as_ref()
        .map_or("—".to_string(), |s| fmt_stat(s, decimals))
}
