//! Yes/No extraction: from a model's top-k next-token candidates to P(yes).
//!
//! Servers return the top-k candidates for the first answer token as (token text, logprob).
//! Tokenizers spell the same word many ways (`Yes`, ` yes`, `▁Yes`, `ĠYES`, `Yes.`), so every
//! candidate is normalised first (leading space, `Ġ` and `▁` stripped, trailing punctuation
//! stripped, case-folded) and compared with the normalised Yes and No variants. The log-probability
//! mass of each side is the log-sum-exp over its matching candidates, and
//! `P(yes) = sigmoid(l_yes − l_no)`: the probability of Yes *given* the answer is Yes or No, so mass
//! the model puts on other tokens does not pull the target towards 0.
//!
//! When only one side is among the returned candidates, the absent side's probability is at most
//! the smallest probability returned (it would otherwise have made the top-k) and at most the mass
//! the server did not return (1 − Σ returned). The smaller bound stands in for it and the pair is
//! marked [`Status::Floored`]. With the first bound alone, a server that returns a single
//! candidate would give exactly 0.5 (the bound *is* that candidate); with both, a lone Yes at
//! p = 0.9 gives 0.9. When neither side is returned the pair is [`Score::missing`]: no target,
//! never a silent 0.5.

use crate::teacher::{Score, Status};

/// Default Yes spellings, after normalisation.
pub const DEFAULT_YES: &[&str] = &["yes"];
/// Default No spellings, after normalisation.
pub const DEFAULT_NO: &[&str] = &["no"];

/// The default variants as owned strings (what [`crate::teacher::TeacherInfo`] records).
pub fn default_variants() -> (Vec<String>, Vec<String>) {
    (
        DEFAULT_YES.iter().map(|s| s.to_string()).collect(),
        DEFAULT_NO.iter().map(|s| s.to_string()).collect(),
    )
}

/// Both spelling lists must be non-empty (every teacher's options are checked with this).
pub fn check_variants(yes: &[String], no: &[String]) -> crate::error::Result<()> {
    if yes.is_empty() || no.is_empty() {
        return Err(crate::error::input(
            "the Yes and No token lists must not be empty",
            "--yes-token / --no-token",
            "the defaults are `yes` and `no`",
        ));
    }
    Ok(())
}

/// Canonical form of a token spelling: leading whitespace and the word-start markers of byte-level
/// BPE (`Ġ`) and SentencePiece (`▁`) removed, trailing punctuation and whitespace removed,
/// lower-cased.
pub fn normalize_token(token: &str) -> String {
    let t = token.trim_start_matches(|c: char| c.is_whitespace() || c == 'Ġ' || c == '▁');
    let t = t.trim_end_matches(|c: char| {
        c.is_whitespace() || matches!(c, '.' | ',' | '!' | ';' | ':' | '"' | '\'' | ')')
    });
    t.to_lowercase()
}

/// log(Σ exp(x)) without overflow; `None` for an empty input.
fn logsumexp(xs: &[f64]) -> Option<f64> {
    let max = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if xs.is_empty() {
        return None;
    }
    if max == f64::NEG_INFINITY {
        return Some(f64::NEG_INFINITY);
    }
    Some(max + xs.iter().map(|x| (x - max).exp()).sum::<f64>().ln())
}

/// Logistic function in the form that never overflows `exp`.
fn sigmoid(d: f64) -> f64 {
    if d >= 0.0 {
        1.0 / (1.0 + (-d).exp())
    } else {
        let e = d.exp();
        e / (1.0 + e)
    }
}

/// P(yes) from the top-k candidates of the first answer token.
///
/// `cands` are (token text, logprob) as the server returned them; `yes` / `no` are the accepted
/// spellings (normalised here too, so `"Yes"` and `"yes"` are the same variant). Candidates with a
/// non-finite logprob carry no information and are ignored.
pub fn score_from_candidates(cands: &[(String, f32)], yes: &[String], no: &[String]) -> Score {
    let yes: Vec<String> = yes.iter().map(|s| normalize_token(s)).collect();
    let no: Vec<String> = no.iter().map(|s| normalize_token(s)).collect();
    let mut ly = Vec::new();
    let mut ln = Vec::new();
    let mut smallest = f64::INFINITY;
    let mut returned = 0.0f64;
    for (tok, lp) in cands {
        if !lp.is_finite() {
            continue;
        }
        let lp = *lp as f64;
        smallest = smallest.min(lp);
        returned += lp.exp();
        let norm = normalize_token(tok);
        if yes.contains(&norm) {
            ly.push(lp);
        } else if no.contains(&norm) {
            ln.push(lp);
        }
    }
    // Rounded logprobs can sum past 1: the unreturned mass is then ~0, kept finite at ε.
    let bound = smallest.min((1.0 - returned).max(f64::EPSILON).ln());
    let (l_yes, l_no, status) = match (logsumexp(&ly), logsumexp(&ln)) {
        (Some(y), Some(n)) => (y, n, Status::Ok),
        (Some(y), None) => (y, bound, Status::Floored),
        (None, Some(n)) => (bound, n, Status::Floored),
        (None, None) => return Score::missing(),
    };
    Score {
        p_yes: sigmoid(l_yes - l_no) as f32,
        logit_yes: l_yes as f32,
        logit_no: l_no as f32,
        status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(pairs: &[(&str, f32)]) -> Vec<(String, f32)> {
        pairs.iter().map(|(t, l)| (t.to_string(), *l)).collect()
    }

    fn defaults() -> (Vec<String>, Vec<String>) {
        default_variants()
    }

    #[test]
    fn normalises_spellings() {
        for s in [
            "Yes", " yes", "YES", "▁Yes", "ĠYes", "Yes.", " Yes,", "\nyes",
        ] {
            assert_eq!(normalize_token(s), "yes", "{s:?}");
        }
        assert_eq!(normalize_token("No"), "no");
        assert_eq!(normalize_token("Not"), "not");
        assert_eq!(normalize_token("▁"), "");
    }

    #[test]
    fn both_sides_present() {
        // P(yes) = sigmoid(-0.2 - (-1.8)) = sigmoid(1.6) = 0.832018385…
        let (y, n) = defaults();
        let s = score_from_candidates(&c(&[("Yes", -0.2), ("No", -1.8), ("The", -3.0)]), &y, &n);
        assert_eq!(s.status, Status::Ok);
        assert!((s.p_yes - 0.832_018_4).abs() < 1e-6, "{}", s.p_yes);
        assert_eq!(s.logit_yes, -0.2);
        assert_eq!(s.logit_no, -1.8);
    }

    #[test]
    fn variants_are_summed_with_logsumexp() {
        // Yes mass: ln(e^-1 + e^-2) = -0.686738…; No mass: ln(e^-1.5 + e^-3) = -1.298587…
        // P(yes) = sigmoid(0.611848…) = 0.648362…
        let (y, n) = defaults();
        let cands = c(&[
            ("Yes", -1.0),
            ("▁yes", -2.0),
            (" No", -1.5),
            ("NO.", -3.0),
            ("Maybe", -0.5),
        ]);
        let s = score_from_candidates(&cands, &y, &n);
        assert_eq!(s.status, Status::Ok);
        assert!((s.logit_yes as f64 - (-0.686_738_6)).abs() < 1e-6);
        assert!((s.logit_no as f64 - (-1.298_586_7)).abs() < 1e-6);
        assert!((s.p_yes - 0.648_362_3).abs() < 1e-6, "{}", s.p_yes);
    }

    #[test]
    fn one_side_absent_is_bounded_by_the_smallest_candidate_or_the_unreturned_mass() {
        let (y, n) = defaults();
        let l = |p: f32| p.ln();
        // No absent; returned 0.7 + 0.2 + 0.08 = 0.98, so No ≤ min(0.08, 0.02) = 0.02:
        // P(yes) = 0.7 / (0.7 + 0.02) = 0.972222…
        let s = score_from_candidates(
            &c(&[("Yes", l(0.7)), ("A", l(0.2)), ("B", l(0.08))]),
            &y,
            &n,
        );
        assert_eq!(s.status, Status::Floored);
        assert!((s.logit_no - l(0.02)).abs() < 1e-5, "{}", s.logit_no);
        assert!((s.p_yes - 0.972_222_2).abs() < 1e-5, "{}", s.p_yes);
        // Yes absent; returned 0.5 + 0.01, so Yes ≤ min(0.01, 0.49) = 0.01 (the smallest bound):
        // P(yes) = 0.01 / (0.01 + 0.5) = 0.019608…
        let s = score_from_candidates(&c(&[("no", l(0.5)), ("x", l(0.01))]), &y, &n);
        assert_eq!(s.status, Status::Floored);
        assert!((s.logit_yes - l(0.01)).abs() < 1e-6);
        assert!((s.p_yes - 0.019_607_8).abs() < 1e-5, "{}", s.p_yes);
    }

    #[test]
    fn a_single_returned_candidate_is_never_exactly_half() {
        // The smallest returned candidate is the one Yes itself; the bound from the unreturned
        // mass (0.1) decides: P(yes) = 0.9 / (0.9 + 0.1) = 0.9.
        let (y, n) = defaults();
        let s = score_from_candidates(&c(&[("Yes", 0.9f32.ln())]), &y, &n);
        assert_eq!(s.status, Status::Floored);
        assert!((s.p_yes - 0.9).abs() < 1e-5, "{}", s.p_yes);
        let s = score_from_candidates(&c(&[(" No", 0.6f32.ln())]), &y, &n);
        assert!((s.p_yes - 0.4).abs() < 1e-5, "{}", s.p_yes);
        // All the mass on Yes (rounded logprob 0): the absent No has none, P(yes) ≈ 1, finite.
        let s = score_from_candidates(&c(&[("Yes", 0.0)]), &y, &n);
        assert_eq!(s.p_yes, 1.0);
        assert!(s.logit_no.is_finite());
    }

    #[test]
    fn neither_side_is_missing_never_half() {
        let (y, n) = defaults();
        let s = score_from_candidates(&c(&[("The", -0.1), ("A", -2.0)]), &y, &n);
        assert_eq!(s.status, Status::Missing);
        assert!(s.p_yes.is_nan());
        let s = score_from_candidates(&[], &y, &n);
        assert_eq!(s.status, Status::Missing);
    }

    #[test]
    fn extreme_logprobs_do_not_overflow() {
        let (y, n) = defaults();
        let s = score_from_candidates(&c(&[("Yes", 0.0), ("No", -2000.0)]), &y, &n);
        assert_eq!(s.p_yes, 1.0);
        let s = score_from_candidates(&c(&[("Yes", -2000.0), ("No", 0.0)]), &y, &n);
        assert_eq!(s.p_yes, 0.0);
        // Non-finite logprobs (some servers send -inf or -9999 for impossible tokens) are ignored.
        let s = score_from_candidates(
            &c(&[("Yes", f32::NEG_INFINITY), ("No", -0.5), ("z", -1.0)]),
            &y,
            &n,
        );
        assert_eq!(s.status, Status::Floored);
        // Bound: min(-1.0, ln(1 - 0.606531 - 0.367879)) = ln(0.025590) = -3.665556.
        assert!((s.logit_yes - (-3.665_556)).abs() < 1e-4, "{}", s.logit_yes);
    }

    #[test]
    fn custom_variants() {
        let y = vec!["Yes".to_string(), "Oui".to_string()];
        let n = vec!["No".to_string(), "Non".to_string()];
        // ln(e^-1 + e^-1) = -1 + ln 2 = -0.306853; No: -1.0 → sigmoid(0.693147) = 2/3
        let s = score_from_candidates(&c(&[("oui", -1.0), ("Yes", -1.0), ("Non", -1.0)]), &y, &n);
        assert!((s.p_yes - 2.0 / 3.0).abs() < 1e-6);
    }
}
