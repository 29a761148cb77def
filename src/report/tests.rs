use super::*;
use crate::experiment::results::{ExperimentResults, Stat};

/// Parse "81.23 ± 0.45", "81.23" or "—" into (mean, std).
fn parse_stat(cell: &str) -> Option<(f64, Option<f64>)> {
    let cell = cell.trim();
    if cell == "—" {
        return None;
    }
    let mut parts = cell.split(" ± ");
    let mean = parts.next()?.parse().ok()?;
    let std = parts.next().map(|s| s.parse().unwrap());
    Some((mean, std))
}

/// Each shown number equals the results' value rounded to the shown decimals.
fn assert_shown(cell: &str, stat: Option<&Stat>, decimals: i32) {
    let tol = 0.5 * 10f64.powi(-decimals) + 1e-9;
    match (parse_stat(cell), stat) {
        (None, None) => {}
        (Some((mean, std)), Some(s)) => {
            assert!((mean - s.mean).abs() <= tol, "{cell} vs mean {}", s.mean);
            match std {
                Some(sd) => assert!((sd - s.std).abs() <= tol, "{cell} vs std {}", s.std),
                None => assert!(s.n < 2, "{cell}: std missing for n = {}", s.n),
            }
        }
        (a, b) => panic!("cell {cell:?} ({a:?}) vs results {b:?}"),
    }
}

/// Check rows of (variant, top-1, top-5, AUC, agreement, n) against the results.
fn assert_rows_match(rows: &[Vec<String>], r: &ExperimentResults) {
    assert_eq!(rows.len(), r.variants.len());
    for (row, v) in rows.iter().zip(&r.variants) {
        assert_eq!(row[0], v.name);
        assert_shown(&row[1], Some(&v.top1), 2);
        assert_shown(&row[2], Some(&v.top5), 2);
        assert_shown(&row[3], v.aspect_auc.as_ref(), 3);
        assert_shown(&row[4], v.aspect_agreement.as_ref(), 3);
        assert_eq!(row[5].parse::<usize>().unwrap(), v.runs.len());
    }
}

fn markdown_rows(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            l.trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

fn html_rows(html: &str) -> Vec<Vec<String>> {
    let start = html.find("<table id=\"results\">").unwrap();
    let end = start + html[start..].find("</table>").unwrap();
    html[start..end]
        .split("<tr>")
        .skip(2) // before the first row, the header
        .map(|row| {
            row.split("<td")
                .skip(1)
                .map(|c| {
                    let c = &c[c.find('>').unwrap() + 1..];
                    c[..c.find("</td>").unwrap()].to_string()
                })
                .collect()
        })
        .collect()
}

#[test]
fn fixture_stats_hand_checked() {
    // The fixture's baseline seeds 89.12, 89.41, 88.93: mean 89.153333, deviations
    // −0.033333, 0.256667, −0.223333; squares 0.001111 + 0.065878 + 0.049878 = 0.116867;
    // /2 = 0.058433 → std 0.241730.
    let r = fixture::results();
    let b = &r.variants[0].top1;
    assert!((b.mean - 89.153_333).abs() < 1e-5);
    assert!((b.std - 0.241_730).abs() < 1e-5);
    assert!(markdown_table(&r).contains("| baseline | 89.15 ± 0.24 |"));
}

#[test]
fn report_numbers_come_from_results_json() {
    let r = fixture::results();
    let dir = tempfile::tempdir().unwrap();
    let files = write_report(&r, dir.path()).unwrap();

    // The JSON on disk is the struct. serde_json (without its `float_roundtrip` feature) may
    // parse a float one ulp off, so compare the rendered report, not the bits.
    let back = ExperimentResults::read(&files.results_json).unwrap();
    assert_eq!(back.variants.len(), r.variants.len());
    assert_eq!(
        markdown::render(&back, &[], true),
        markdown::render(&r, &[], true)
    );
    assert!((back.variants[1].top1.mean - r.variants[1].top1.mean).abs() < 1e-12);

    let table = markdown_table(&back);
    assert_rows_match(&markdown_rows(&table), &back);
    let md = std::fs::read_to_string(&files.markdown).unwrap();
    assert!(md.contains(&table), "report.md holds the same table");
    let html = std::fs::read_to_string(&files.html).unwrap();
    assert_rows_match(&html_rows(&html), &back);

    for c in &back.comparisons {
        assert!(md.contains(&c.sentence), "{}", c.sentence);
        assert!(html.contains(&c.sentence), "{}", c.sentence);
        // The sentence carries the test and both p-values, as results.json has them.
        let p = format!(
            "p = {:.3}, Holm-adjusted p = {:.3} over 3",
            c.p_value.unwrap(),
            c.p_adjusted.unwrap()
        );
        assert!(c.sentence.contains(&p), "{} lacks {p}", c.sentence);
        assert!(
            c.sentence.contains("paired t over 3 seeds"),
            "{}",
            c.sentence
        );
    }
    // Every example question's full text is listed under the plot.
    for e in &back.examples {
        for &qi in &e.questions {
            assert!(md.contains(&format!("- **{}** ", back.questions[qi].id)));
        }
    }
    assert!(md.contains("- Epochs per run: 15"));
    assert!(md.contains("| makd | CE + 4.0 · BCE against the teacher's P(yes) | 0, 1, 2 |"));
}

#[test]
fn plots_are_written_decodable_and_not_blank() {
    let r = fixture::results();
    let dir = tempfile::tempdir().unwrap();
    let files = write_report(&r, dir.path()).unwrap();
    let names: Vec<_> = files
        .plots
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, PLOT_FILES);
    let html = std::fs::read_to_string(&files.html).unwrap();
    // Self-contained: one data URI per plot, nothing fetched from elsewhere.
    assert_eq!(html.matches("src=\"data:image/png;base64,").count(), 5);
    assert!(!html.contains("http://") && !html.contains("https://"));
    assert!(!html.contains("<script"));

    for path in &files.plots {
        let img = image::open(path).unwrap().to_rgb8();
        let (w, h) = img.dimensions();
        assert!(
            (700..=2400).contains(&w) && (400..=1200).contains(&h),
            "{path:?}: {w}×{h}"
        );
        let ink = img.pixels().filter(|p| p.0 != [255, 255, 255]).count();
        let frac = ink as f64 / (w * h) as f64;
        assert!(
            frac > 0.02 && frac < 0.8,
            "{path:?}: {frac:.3} of pixels drawn"
        );
    }
}

#[test]
fn plots_without_a_font_still_draw() {
    let r = fixture::results();
    let plots = plots::render_all(&r, false).unwrap();
    assert_eq!(plots.len(), 5);
    for p in &plots {
        let img = image::load_from_memory(&p.png).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (p.width, p.height));
        assert!(img.pixels().any(|px| px.0 != [255, 255, 255]), "{}", p.file);
    }
    let md = markdown::render(&r, &plots, false);
    assert!(md.contains(NO_FONT_NOTE));
}

#[test]
fn stale_plots_are_removed_and_missing_parts_skipped() {
    let mut r = fixture::results();
    let dir = tempfile::tempdir().unwrap();
    write_report(&r, dir.path()).unwrap();
    r.embedding = None;
    r.examples.clear();
    let files = write_report(&r, dir.path()).unwrap();
    assert_eq!(files.plots.len(), 3);
    assert!(!dir.path().join("plots/embedding.png").exists());
    let md = std::fs::read_to_string(&files.markdown).unwrap();
    assert!(!md.contains("embedding.png") && !md.contains("Questions shown"));
}

#[test]
fn inconsistent_or_non_finite_results_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = fixture::results();
    r.variants[1].runs[2].curve[3].train_loss = f64::NAN;
    let err = write_report(&r, dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("variants[1].runs[2].curve[3].train_loss"),
        "{err}"
    );
    assert!(!dir.path().join("results.json").exists());

    let mut r = fixture::results();
    r.examples[0].student.pop();
    let err = write_report(&r, dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("examples[0]: 12 questions but 12 teacher and 11 student"),
        "{err}"
    );

    let mut r = fixture::results();
    r.examples[1].questions[0] = 50;
    let err = write_report(&r, dir.path()).unwrap_err().to_string();
    assert!(err.contains("question index 50"), "{err}");
}

#[test]
fn markdown_escapes_table_cells_and_html_escapes_text() {
    let mut r = fixture::results();
    r.variants[0].description = "CE | no <aspects>".into();
    let md = markdown::render(&r, &[], true);
    assert!(md.contains("| baseline | CE \\| no <aspects> |"));
    let html = html::render(&r, &[], true);
    assert!(html.contains("<td>CE | no &lt;aspects&gt;</td>"));
}

#[test]
fn report_markdown_snapshot() {
    let r = fixture::results();
    // Plots only contribute their captions to the text; render without drawing them.
    let plots: Vec<plots::Plot> = plots::render_all(&r, false)
        .unwrap()
        .into_iter()
        .map(|mut p| {
            p.png.clear();
            p
        })
        .collect();
    insta::assert_snapshot!(markdown::render(&r, &plots, true));
}

/// Writes the fixture's report (and a harder layout); set `$MAKD_REPORT_DIR` to keep it and look at
/// the plots by eye: `MAKD_REPORT_DIR=/tmp/rep cargo test --lib report::tests::write_fixture`.
#[test]
fn write_fixture_report_for_viewing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = std::env::var("MAKD_REPORT_DIR").unwrap_or_else(|_| tmp.path().display().to_string());
    let files = write_report(&fixture::results(), Path::new(&dir)).unwrap();
    assert_eq!(files.plots.len(), 5, "{files:?}");
    eprintln!("{files:?}");
    // A harder layout: long question ids, one aspect variant, eight variants, 15 classes.
    let mut r = fixture::results();
    for (i, q) in r.questions.iter_mut().enumerate() {
        q.id = format!("aspect_{i}");
    }
    r.variants.truncate(2);
    for k in 0..6 {
        let mut v = r.variants[0].clone();
        v.name = format!("shuffled-target-{k}");
        v.top1.mean += k as f64 * 0.2;
        r.variants.push(v);
    }
    r.classes.extend((0..5).map(|i| format!("extra class {i}")));
    let e = r.embedding.as_mut().unwrap();
    for (i, l) in e.labels.iter_mut().enumerate() {
        *l = i % 15;
    }
    let files = write_report(&r, &Path::new(&dir).join("hard")).unwrap();
    assert_eq!(files.plots.len(), 5, "{files:?}");
    // What a machine without any font gets.
    let nofont = Path::new(&dir).join("nofont");
    for p in plots::render_all(&fixture::results(), false).unwrap() {
        crate::files::write_atomic(&nofont.join(p.file), &p.png).unwrap();
    }
}
