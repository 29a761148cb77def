//! `results.json`: every number an experiment produced, in one plain-data file.
//!
//! The report (`report.md`, `report.html`, `plots/*.png`) is rendered from this file alone, so a
//! reader can check any number in the report against it, and a report can be re-rendered later
//! without rerunning anything.
//!
//! Units, fixed for format version 1:
//! - accuracies (`test_top1`, `test_top5`, `diff`, `ci95` of a `test_top1` comparison) are in
//!   percent (0–100), so a difference reads as "points" like the paper's tables;
//! - aspect AUC and aspect agreement are fractions in \[0, 1\];
//! - every float is finite: JSON has no NaN, and serde_json would silently write `null` for one
//!   and then refuse to read the file back. [`ExperimentResults::non_finite_fields`] finds them.

use crate::error::{input, Result};
use crate::files;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Version of the `results.json` layout; bump on any incompatible change.
pub const FORMAT_VERSION: u32 = 1;

/// The whole experiment: what was run and every number it produced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentResults {
    /// Always [`FORMAT_VERSION`] when written by this version.
    pub format_version: u32,
    /// The experiment's name (its config's `name`, or the output folder's name).
    pub name: String,
    /// When the results were aggregated, RFC 3339 (UTC).
    pub created: String,
    /// The experiment config exactly as given (parsed TOML as JSON), so the file reproduces the run.
    pub config: serde_json::Value,
    /// A human description of the dataset (name, split sizes).
    pub dataset: String,
    /// Class names, indexed by label.
    pub classes: Vec<String>,
    /// The aspect questions, indexed like the student's aspect outputs.
    pub questions: Vec<QuestionInfo>,
    /// One entry per variant, in the config's order (the baseline first by convention).
    pub variants: Vec<VariantResult>,
    /// Pairwise comparisons on test top-1 (e.g. makd vs baseline, makd vs random-target).
    pub comparisons: Vec<Comparison>,
    /// A few test images with the teacher's and the student's answer to some questions.
    pub examples: Vec<ExampleResponse>,
    /// A 2-D projection of one run's penultimate features on test images, if recorded.
    pub embedding: Option<Embedding>,
    /// Plain-language caveats printed in the report (e.g. "a text-only 270M teacher is weak").
    pub notes: Vec<String>,
}

/// One aspect question as it appears in the report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuestionInfo {
    /// Stable short id (`q01`, …), used on plot axes.
    pub id: String,
    /// The full question text.
    pub text: String,
    /// visual, shape, part, environment, function, abstract, …
    pub kind: String,
}

/// One variant (baseline, makd, random-target, …) over all its seeds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantResult {
    pub name: String,
    /// What the variant does, in one line (shown in the report).
    pub description: String,
    /// One run per seed.
    pub runs: Vec<RunResult>,
    /// Final test top-1 (percent) over the runs.
    pub top1: Stat,
    /// Final test top-5 (percent) over the runs.
    pub top5: Stat,
    /// Mean over questions of the student-vs-teacher aspect AUC, over runs; `None` for variants
    /// without aspect outputs (baseline, kd).
    pub aspect_auc: Option<Stat>,
    /// Fraction of (image, question) pairs where student and teacher agree on yes/no, over runs.
    pub aspect_agreement: Option<Stat>,
    /// Per question (indexed like [`ExperimentResults::questions`]): mean over seeds of the
    /// student-vs-teacher AUC; `None` where it is undefined (the teacher says the same thing for
    /// every test image) or the variant has no aspects (then the vector may also be empty).
    pub per_question_auc: Vec<Option<f64>>,
}

/// One training run (one seed of one variant).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunResult {
    pub seed: u64,
    /// The run dir, relative to the experiment's output folder where possible.
    pub run_dir: String,
    /// Final test top-1, percent.
    pub test_top1: f64,
    /// Final test top-5, percent.
    pub test_top5: f64,
    pub aspect_auc: Option<f64>,
    pub aspect_agreement: Option<f64>,
    /// One point per evaluated epoch.
    pub curve: Vec<CurvePoint>,
    /// Wall-clock seconds of training and evaluation.
    pub seconds: f64,
}

/// One epoch of a learning curve.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CurvePoint {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Mean training loss over the epoch (the total loss the variant optimises).
    pub train_loss: f64,
    /// Test top-1 after the epoch, percent.
    pub test_top1: f64,
}

/// Summary of a sample of values (one per seed).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stat {
    pub mean: f64,
    /// Sample standard deviation (divisor n − 1); 0 when n < 2, where no spread is measurable
    /// (the report then prints no ±).
    pub std: f64,
    pub n: usize,
    pub min: f64,
    pub max: f64,
}

impl Stat {
    /// Summarise `values`. An empty slice gives all zeros with `n = 0` rather than NaN, which
    /// JSON cannot hold; the report prints "—" for it.
    pub fn of(values: &[f64]) -> Stat {
        let n = values.len();
        if n == 0 {
            return Stat {
                mean: 0.0,
                std: 0.0,
                n: 0,
                min: 0.0,
                max: 0.0,
            };
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let std = if n < 2 {
            0.0
        } else {
            // Two-pass form: subtracting the mean first avoids the cancellation of Σx² − n·mean².
            let ss: f64 = values.iter().map(|v| (v - mean) * (v - mean)).sum();
            (ss / (n - 1) as f64).sqrt()
        };
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Stat {
            mean,
            std,
            n,
            min,
            max,
        }
    }
}

/// A difference of means between two variants on one metric, with its 95% interval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Comparison {
    /// The variant whose gain is measured (e.g. `makd`).
    pub a: String,
    /// The reference (e.g. `baseline` or `random-target`).
    pub b: String,
    /// The metric compared: `test_top1`.
    pub metric: String,
    /// mean(a) − mean(b), in the metric's unit (points for accuracies).
    pub diff: f64,
    /// 95% interval of the difference (paired: of the mean per-seed difference); `None` when
    /// either side has fewer than 2 seeds (a single run has no measurable noise, so no honest
    /// interval exists). Not adjusted for the number of comparisons.
    pub ci95: Option<[f64; 2]>,
    /// The test behind the interval and the p-value: `paired-t` when both variants ran the same
    /// seeds (differences taken seed by seed), `welch-t` otherwise.
    pub method: TestMethod,
    /// Two-sided p-value of that test, for this comparison alone; `None` with the interval.
    pub p_value: Option<f64>,
    /// `p_value` after the Holm–Bonferroni adjustment over the report's comparisons that have a
    /// p-value; `None` with the interval. Absent in files written before it existed.
    #[serde(default)]
    pub p_adjusted: Option<f64>,
    /// How many comparisons the adjustment was over (0 without a p-value).
    #[serde(default)]
    pub adjusted_over: usize,
    /// Seeds on each side.
    pub n_a: usize,
    pub n_b: usize,
    /// True when the Holm-adjusted p-value is below 0.05 (the interval then excludes 0 too).
    pub beyond_noise: bool,
    /// The verdict in one plain sentence, as printed in the report.
    pub sentence: String,
}

/// The test a [`Comparison`] used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TestMethod {
    /// Student's t on the per-seed differences (df = n − 1).
    PairedT,
    /// Welch's unequal-variance t on the two samples.
    WelchT,
}

/// One test image: the teacher's P(yes) and the student's sigmoid for some questions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExampleResponse {
    /// The dataset's id of the image.
    pub image_id: String,
    /// Its class name.
    pub label: String,
    /// Indices into [`ExperimentResults::questions`], in display order.
    pub questions: Vec<usize>,
    /// Teacher P(yes), one per entry of `questions`.
    pub teacher: Vec<f32>,
    /// Student sigmoid(aspect logit), one per entry of `questions`.
    pub student: Vec<f32>,
}

/// A 2-D projection of penultimate features.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Embedding {
    /// `pca`.
    pub method: String,
    pub points: Vec<[f32; 2]>,
    /// Class index per point.
    pub labels: Vec<usize>,
    /// The variant (and seed) whose features these are, e.g. `makd (seed 0)`.
    pub variant: String,
}

impl ExperimentResults {
    /// Read a `results.json`, refusing other format versions.
    pub fn read(path: &Path) -> Result<ExperimentResults> {
        let hint = "pass the results.json that `makd experiment` wrote";
        let r: ExperimentResults = files::read_json(path, hint)?;
        if r.format_version != FORMAT_VERSION {
            return Err(input(
                format!(
                    "results format version {} is not supported (this makd reads {FORMAT_VERSION})",
                    r.format_version
                ),
                format!("{}: format_version", path.display()),
                "rerun the experiment with this makd version",
            ));
        }
        Ok(r)
    }

    /// Paths (`variants[1].runs[0].test_top1`) of every NaN or infinite number, which JSON
    /// cannot hold. Empty when the results can be written and read back unchanged.
    pub fn non_finite_fields(&self) -> Vec<String> {
        let mut bad = Vec::new();
        let mut check = |path: String, v: f64| {
            if !v.is_finite() {
                bad.push(path);
            }
        };
        let stat = |check: &mut dyn FnMut(String, f64), p: &str, s: &Stat| {
            for (field, v) in [
                ("mean", s.mean),
                ("std", s.std),
                ("min", s.min),
                ("max", s.max),
            ] {
                check(format!("{p}.{field}"), v);
            }
        };
        for (vi, v) in self.variants.iter().enumerate() {
            let p = format!("variants[{vi}]");
            stat(&mut check, &format!("{p}.top1"), &v.top1);
            stat(&mut check, &format!("{p}.top5"), &v.top5);
            if let Some(s) = &v.aspect_auc {
                stat(&mut check, &format!("{p}.aspect_auc"), s);
            }
            if let Some(s) = &v.aspect_agreement {
                stat(&mut check, &format!("{p}.aspect_agreement"), s);
            }
            for (qi, a) in v.per_question_auc.iter().enumerate() {
                if let Some(a) = a {
                    check(format!("{p}.per_question_auc[{qi}]"), *a);
                }
            }
            for (ri, r) in v.runs.iter().enumerate() {
                let p = format!("{p}.runs[{ri}]");
                check(format!("{p}.test_top1"), r.test_top1);
                check(format!("{p}.test_top5"), r.test_top5);
                check(format!("{p}.seconds"), r.seconds);
                if let Some(a) = r.aspect_auc {
                    check(format!("{p}.aspect_auc"), a);
                }
                if let Some(a) = r.aspect_agreement {
                    check(format!("{p}.aspect_agreement"), a);
                }
                for (ci, c) in r.curve.iter().enumerate() {
                    check(format!("{p}.curve[{ci}].train_loss"), c.train_loss);
                    check(format!("{p}.curve[{ci}].test_top1"), c.test_top1);
                }
            }
        }
        for (ci, c) in self.comparisons.iter().enumerate() {
            let p = format!("comparisons[{ci}]");
            check(format!("{p}.diff"), c.diff);
            if let Some([lo, hi]) = c.ci95 {
                check(format!("{p}.ci95[0]"), lo);
                check(format!("{p}.ci95[1]"), hi);
            }
            if let Some(pv) = c.p_value {
                check(format!("{p}.p_value"), pv);
            }
            if let Some(pv) = c.p_adjusted {
                check(format!("{p}.p_adjusted"), pv);
            }
        }
        for (ei, e) in self.examples.iter().enumerate() {
            for (j, v) in e.teacher.iter().enumerate() {
                check(format!("examples[{ei}].teacher[{j}]"), *v as f64);
            }
            for (j, v) in e.student.iter().enumerate() {
                check(format!("examples[{ei}].student[{j}]"), *v as f64);
            }
        }
        if let Some(e) = &self.embedding {
            for (i, p) in e.points.iter().enumerate() {
                check(format!("embedding.points[{i}][0]"), p[0] as f64);
                check(format!("embedding.points[{i}][1]"), p[1] as f64);
            }
        }
        bad
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_of_hand_computed_sample() {
        // 1, 2, 4: mean 7/3 = 2.333…; squared deviations 16/9 + 1/9 + 25/9 = 42/9;
        // sample variance (42/9)/2 = 7/3; std = sqrt(7/3) = 1.5275252…
        let s = Stat::of(&[1.0, 2.0, 4.0]);
        assert_eq!(s.n, 3);
        assert!((s.mean - 7.0 / 3.0).abs() < 1e-12);
        assert!((s.std - 1.527_525_231_651_947).abs() < 1e-12);
        assert_eq!((s.min, s.max), (1.0, 4.0));
    }

    #[test]
    fn stat_of_short_samples_has_no_nan() {
        let one = Stat::of(&[80.5]);
        assert_eq!(
            (one.mean, one.std, one.n, one.min, one.max),
            (80.5, 0.0, 1, 80.5, 80.5)
        );
        let none = Stat::of(&[]);
        assert_eq!(none.n, 0);
        assert!(none.mean == 0.0 && none.std == 0.0);
    }

    #[test]
    fn comparisons_written_before_the_paired_test_still_read() {
        // A comparison as format version 1 wrote it before `p_adjusted`: Welch, no adjustment.
        let old = serde_json::json!({
            "a": "makd", "b": "baseline", "metric": "test_top1", "diff": 2.0,
            "ci95": [-0.27, 4.27], "method": "welch-t", "p_value": 0.07, "n_a": 3, "n_b": 3,
            "beyond_noise": false, "sentence": "…"
        });
        let c: Comparison = serde_json::from_value(old).unwrap();
        assert_eq!(c.method, TestMethod::WelchT);
        assert_eq!((c.p_adjusted, c.adjusted_over), (None, 0));
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["method"], "welch-t");
        let paired: TestMethod = serde_json::from_value("paired-t".into()).unwrap();
        assert_eq!(paired, TestMethod::PairedT);
    }

    #[test]
    fn non_finite_fields_are_named() {
        let mut r = ExperimentResults {
            format_version: FORMAT_VERSION,
            name: "x".into(),
            created: String::new(),
            config: serde_json::Value::Null,
            dataset: String::new(),
            classes: vec![],
            questions: vec![],
            variants: vec![VariantResult {
                name: "baseline".into(),
                description: String::new(),
                runs: vec![RunResult {
                    seed: 0,
                    run_dir: String::new(),
                    test_top1: 50.0,
                    test_top5: 90.0,
                    aspect_auc: None,
                    aspect_agreement: None,
                    curve: vec![CurvePoint {
                        epoch: 1,
                        train_loss: f64::NAN,
                        test_top1: 50.0,
                    }],
                    seconds: 1.0,
                }],
                top1: Stat::of(&[50.0]),
                top5: Stat::of(&[90.0]),
                aspect_auc: None,
                aspect_agreement: None,
                per_question_auc: vec![],
            }],
            comparisons: vec![],
            examples: vec![],
            embedding: None,
            notes: vec![],
        };
        assert_eq!(
            r.non_finite_fields(),
            vec!["variants[0].runs[0].curve[0].train_loss".to_string()]
        );
        r.variants[0].runs[0].curve[0].train_loss = 2.3;
        assert!(r.non_finite_fields().is_empty());
        let json = serde_json::to_string(&r).unwrap();
        let back: ExperimentResults = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
    }
}
