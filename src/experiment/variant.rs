//! The experiment's variants: what each run changes in the base training config.
//!
//! A variant's name is what the user writes in `experiment.toml`, the run dir
//! (`runs/<variant>/seed<k>`) and `results.json`; inside, it is this enum, parsed once when the
//! config loads. Every name parses back to the variant that printed it, and a name that is not the
//! canonical spelling (`makd-q05`, `makd-alpha4.0`) is refused, so one variant has one run dir.

use crate::error::{input, Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Variant {
    /// CE only (Q = 0).
    Baseline,
    /// CE + α·BCE against the teacher's P(yes).
    Makd,
    /// Control: uniform random P(yes) on the teacher's pairs.
    RandomTarget,
    /// Control: the teacher's rows permuted across images.
    ShuffledTarget,
    /// CE + Hinton KD against a teacher network's logits.
    Kd,
    /// CE + decoupled KD against a teacher network's logits.
    Dkd,
    /// MaKD and KD together.
    MakdKd,
    /// MaKD with the first Q questions of the aspect set.
    MakdQ(usize),
    /// MaKD with aspect weight α.
    MakdAlpha(f64),
}

/// The names a user can write, for hints and `--help`.
pub const VARIANT_NAMES: &str =
    "baseline, makd, random-target, shuffled-target, kd, dkd, makd+kd, \
     makd-q<N> (the first N questions), makd-alpha<A> (α = A)";

impl Variant {
    /// Needs a network's logits (and so the experiment's `[kd]` section).
    pub fn uses_kd_teacher(self) -> bool {
        matches!(self, Variant::Kd | Variant::Dkd | Variant::MakdKd)
    }

    /// Trains an aspect head against a score store (the teacher's, a control, or part of one).
    pub fn uses_aspects(self) -> bool {
        !matches!(self, Variant::Baseline | Variant::Kd | Variant::Dkd)
    }

    /// What the variant changes in the base training config, in one line for the report.
    pub fn describe(self) -> String {
        match self {
            Variant::Baseline => "CE only (Q = 0)".into(),
            Variant::Makd => "CE + α·BCE against the teacher's P(yes)".into(),
            Variant::RandomTarget => {
                "control: CE + α·BCE against uniform random P(yes), same shape".into()
            }
            Variant::ShuffledTarget => {
                "control: the teacher's rows permuted across images (same marginals, no image link)"
                    .into()
            }
            Variant::Kd => "CE + KD (Hinton) against a teacher network's logits".into(),
            Variant::Dkd => "CE + decoupled KD against a teacher network's logits".into(),
            Variant::MakdKd => "MaKD and KD together".into(),
            Variant::MakdQ(q) => format!("MaKD with the first {q} questions"),
            Variant::MakdAlpha(a) => format!("MaKD with α = {a}"),
        }
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Variant::Baseline => f.write_str("baseline"),
            Variant::Makd => f.write_str("makd"),
            Variant::RandomTarget => f.write_str("random-target"),
            Variant::ShuffledTarget => f.write_str("shuffled-target"),
            Variant::Kd => f.write_str("kd"),
            Variant::Dkd => f.write_str("dkd"),
            Variant::MakdKd => f.write_str("makd+kd"),
            Variant::MakdQ(q) => write!(f, "makd-q{q}"),
            // f64's Display is the shortest form that reads back as the same number (4 → "4").
            Variant::MakdAlpha(a) => write!(f, "makd-alpha{a}"),
        }
    }
}

impl FromStr for Variant {
    type Err = Error;

    fn from_str(s: &str) -> Result<Variant> {
        let unknown = || {
            input(
                format!("unknown variant {s:?}"),
                "variants",
                format!("variants are {VARIANT_NAMES}"),
            )
        };
        let v = match s {
            "baseline" => Variant::Baseline,
            "makd" => Variant::Makd,
            "random-target" => Variant::RandomTarget,
            "shuffled-target" => Variant::ShuffledTarget,
            "kd" => Variant::Kd,
            "dkd" => Variant::Dkd,
            "makd+kd" => Variant::MakdKd,
            _ => {
                if let Some(q) = s.strip_prefix("makd-q") {
                    match q.parse::<usize>() {
                        Ok(q) if q >= 1 => Variant::MakdQ(q),
                        _ => {
                            return Err(input(
                                format!("variant {s:?}: the question count must be an integer ≥ 1"),
                                "variants",
                                "e.g. makd-q10 (or aspect_counts = [10])",
                            ))
                        }
                    }
                } else if let Some(a) = s.strip_prefix("makd-alpha") {
                    match a.parse::<f64>() {
                        Ok(a) if a.is_finite() && a >= 0.0 => Variant::MakdAlpha(a),
                        _ => {
                            return Err(input(
                                format!("variant {s:?}: α must be a finite number ≥ 0"),
                                "variants",
                                "e.g. makd-alpha1 (or alphas = [1.0])",
                            ))
                        }
                    }
                } else {
                    return Err(unknown());
                }
            }
        };
        let canonical = v.to_string();
        if canonical != s {
            return Err(input(
                format!("variant {s:?} is spelled {canonical:?}"),
                "variants",
                format!("write {canonical:?}: it names the run dir runs/{canonical}/"),
            ));
        }
        Ok(v)
    }
}

impl TryFrom<String> for Variant {
    type Error = Error;
    fn try_from(s: String) -> Result<Variant> {
        s.parse()
    }
}

impl From<Variant> for String {
    fn from(v: Variant) -> String {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let all = [
            ("baseline", Variant::Baseline),
            ("makd", Variant::Makd),
            ("random-target", Variant::RandomTarget),
            ("shuffled-target", Variant::ShuffledTarget),
            ("kd", Variant::Kd),
            ("dkd", Variant::Dkd),
            ("makd+kd", Variant::MakdKd),
            ("makd-q5", Variant::MakdQ(5)),
            ("makd-q50", Variant::MakdQ(50)),
            ("makd-alpha4", Variant::MakdAlpha(4.0)),
            ("makd-alpha0.5", Variant::MakdAlpha(0.5)),
            ("makd-alpha0", Variant::MakdAlpha(0.0)),
        ];
        for (name, v) in all {
            assert_eq!(name.parse::<Variant>().unwrap(), v, "{name}");
            assert_eq!(v.to_string(), name);
            // serde carries the same strings (results.json, the config echoed into it).
            assert_eq!(serde_json::to_value(v).unwrap(), name);
            assert_eq!(
                serde_json::from_value::<Variant>(name.into()).unwrap(),
                v,
                "{name}"
            );
        }
        // The sweeps' own formatting (format!("{q}"), format!("{alpha}")) is the canonical one.
        for a in [1.0, 4.0, 8.0, 0.25, 2.5] {
            let v = Variant::MakdAlpha(a);
            assert_eq!(v.to_string().parse::<Variant>().unwrap(), v);
        }
    }

    #[test]
    fn makd_is_not_a_kd_variant() {
        // The old check was `name.contains("kd")`, true for "makd" and every MaKD sweep.
        for v in [
            Variant::Makd,
            Variant::MakdQ(5),
            Variant::MakdAlpha(1.0),
            Variant::RandomTarget,
            Variant::ShuffledTarget,
            Variant::Baseline,
        ] {
            assert!(!v.uses_kd_teacher(), "{v}");
        }
        for v in [Variant::Kd, Variant::Dkd, Variant::MakdKd] {
            assert!(v.uses_kd_teacher(), "{v}");
        }
        assert!(!Variant::Baseline.uses_aspects() && !Variant::Kd.uses_aspects());
        assert!(Variant::MakdKd.uses_aspects() && Variant::ShuffledTarget.uses_aspects());
    }

    #[test]
    fn bad_names_are_input_errors_with_the_list() {
        let err = "makd-kd".parse::<Variant>().unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let msg = err.report();
        assert!(msg.contains("unknown variant \"makd-kd\""), "{msg}");
        assert!(
            msg.contains(&format!("hint: variants are {VARIANT_NAMES}")),
            "{msg}"
        );
        for bad in [
            "makd-q0",
            "makd-q",
            "makd-qx",
            "makd-alpha-1",
            "makd-alphanan",
            "makd-alphainf",
        ] {
            assert_eq!(bad.parse::<Variant>().unwrap_err().exit_code(), 2, "{bad}");
        }
        // One variant, one run dir: non-canonical spellings are refused with the canonical one.
        let msg = "makd-alpha4.0".parse::<Variant>().unwrap_err().report();
        assert!(msg.contains("write \"makd-alpha4\""), "{msg}");
        assert!("makd-q05".parse::<Variant>().is_err());
        assert!(serde_json::from_value::<Variant>("Baseline".into()).is_err());
    }
}
