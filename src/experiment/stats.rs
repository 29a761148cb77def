//! Aggregation maths: paired and Welch t-tests with their intervals, the Holm–Bonferroni
//! adjustment over one report's comparisons, a percentile bootstrap, the plain-language verdict,
//! and a 2-D PCA for the embedding plot.
//!
//! Why paired: every variant runs the same seeds, and a seed fixes the initial weights and the
//! data order, so runs of one seed share part of their noise. The test on the per-seed differences removes that shared part; an unpaired test would
//! count it twice and call real gains noise. Where the seeds do not match (a variant with a run
//! missing, a seed only one side has) nothing pairs the runs, and Welch's unequal-variance test
//! is used: a control can be noisier than the method, so a pooled variance cannot be assumed.
//!
//! Why Holm: a report makes several comparisons (each variant against the baseline, MaKD against
//! both controls, ...); at 5% each, eight of them find a "gain" by chance one time in three.
//! Holm's step-down adjustment keeps the chance of any false "beyond noise" at 5% for the whole
//! report, and is never less powerful than Bonferroni. The 95% intervals are per comparison.
//!
//! With 3 seeds an interval is wide; that is the honest answer, and the sentence says so.
//!
//! The Student-t CDF is computed from the regularized incomplete beta function
//! (I_x(a, b) by its continued fraction, evaluated with the modified Lentz method), and its
//! quantile by bisection on the CDF: robust for any real df > 0, which Welch's df always is.

use crate::error::{input, Result};
use crate::experiment::results::{Comparison, TestMethod};
use rand::{Rng, SeedableRng};

/// A t-test of a difference of means: paired ([`paired`]) or Welch's ([`welch`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TTest {
    /// mean(a) − mean(b) (for paired samples, also the mean of the differences).
    pub diff: f64,
    /// Standard error of the difference: sqrt(s_a²/n_a + s_b²/n_b) for Welch, s_d/√n paired.
    pub se: f64,
    /// Welch–Satterthwaite degrees of freedom, or n − 1 paired.
    pub df: f64,
    /// diff / se; ±∞ when se = 0 and diff ≠ 0, 0 when both are 0.
    pub t: f64,
    /// Two-sided p-value.
    pub p_value: f64,
    /// 95% interval of the difference.
    pub ci95: [f64; 2],
}

/// Welch's t-test and 95% interval; `None` when either group has fewer than 2 values (no
/// variance estimate, so no interval exists; we never invent one).
///
/// When both groups have zero spread (every seed gave the same number), se = 0: the interval
/// collapses to [diff, diff], p is 1 if diff = 0 and 0 otherwise, and df falls back to
/// n_a + n_b − 2 (the Welch formula is 0/0 there).
pub fn welch(a: &[f64], b: &[f64]) -> Option<TTest> {
    let (na, nb) = (a.len(), b.len());
    if na < 2 || nb < 2 {
        return None;
    }
    let (ma, va) = mean_var(a);
    let (mb, vb) = mean_var(b);
    let diff = ma - mb;
    let (qa, qb) = (va / na as f64, vb / nb as f64);
    let se2 = qa + qb;
    if se2 <= 0.0 {
        return Some(collapsed(diff, (na + nb - 2) as f64));
    }
    let df = se2 * se2 / (qa * qa / (na - 1) as f64 + qb * qb / (nb - 1) as f64);
    Some(t_test(diff, se2.sqrt(), df))
}

/// The paired t-test of mean(a − b) from the per-pair differences `d` (a one-sample t-test of
/// `d` against 0, df = n − 1) and the 95% interval of the mean difference; `None` below 2 pairs.
/// Zero spread (every pair differs by the same amount) collapses as in [`welch`].
pub fn paired(d: &[f64]) -> Option<TTest> {
    let n = d.len();
    if n < 2 {
        return None;
    }
    let (diff, var) = mean_var(d);
    let df = (n - 1) as f64;
    if var <= 0.0 {
        return Some(collapsed(diff, df));
    }
    Some(t_test(diff, (var / n as f64).sqrt(), df))
}

fn t_test(diff: f64, se: f64, df: f64) -> TTest {
    let t = diff / se;
    let half = t_quantile(0.975, df) * se;
    TTest {
        diff,
        se,
        df,
        t,
        p_value: t_two_sided_p(t, df),
        ci95: [diff - half, diff + half],
    }
}

/// No spread: the interval is the point, p is 1 for no difference and 0 for any other.
fn collapsed(diff: f64, df: f64) -> TTest {
    let (t, p_value) = if diff == 0.0 {
        (0.0, 1.0)
    } else {
        (diff.signum() * f64::INFINITY, 0.0)
    };
    TTest {
        diff,
        se: 0.0,
        df,
        t,
        p_value,
        ci95: [diff, diff],
    }
}

/// Holm–Bonferroni adjusted p-values, in the input's order: sort ascending, multiply the k-th
/// smallest (k from 0) by m − k, carry the running maximum so the order is kept, cap at 1.
pub fn holm(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&i, &j| p[i].total_cmp(&p[j]));
    let mut adjusted = vec![0.0; m];
    let mut running = 0.0f64;
    for (k, &i) in order.iter().enumerate() {
        running = running.max(((m - k) as f64 * p[i]).min(1.0));
        adjusted[i] = running;
    }
    adjusted
}

/// Percentile bootstrap 95% interval of mean(a) − mean(b): each iteration resamples both groups
/// with replacement. Seeded (ChaCha8), so the same inputs give the same interval.
/// `None` when either group is empty or `iters` is 0.
///
/// With 3 seeds a bootstrap understates the spread (it can only recombine the values it saw);
/// the report uses a t interval, and this is here for larger seed counts and as a cross-check.
pub fn bootstrap_diff_ci(a: &[f64], b: &[f64], iters: usize, seed: u64) -> Option<[f64; 2]> {
    if a.is_empty() || b.is_empty() || iters == 0 {
        return None;
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let resample_mean = |x: &[f64], rng: &mut rand_chacha::ChaCha8Rng| {
        let s: f64 = (0..x.len()).map(|_| x[rng.random_range(0..x.len())]).sum();
        s / x.len() as f64
    };
    let mut diffs: Vec<f64> = (0..iters)
        .map(|_| resample_mean(a, &mut rng) - resample_mean(b, &mut rng))
        .collect();
    diffs.sort_by(f64::total_cmp);
    Some([
        quantile_sorted(&diffs, 0.025),
        quantile_sorted(&diffs, 0.975),
    ])
}

/// One side of a comparison: a variant's name and its runs as (seed, value).
#[derive(Clone, Copy, Debug)]
pub struct Side<'a> {
    pub name: &'a str,
    pub runs: &'a [(u64, f64)],
}

/// Compare `a` against `b` on test top-1 (percent), as a family of one comparison.
pub fn compare(a_name: &str, a: &[(u64, f64)], b_name: &str, b: &[(u64, f64)]) -> Comparison {
    let pair = (
        Side {
            name: a_name,
            runs: a,
        },
        Side {
            name: b_name,
            runs: b,
        },
    );
    compare_all("test_top1", "points", &[pair]).remove(0)
}

/// Compare each (a, b) on `metric` (`unit` names the difference's unit in the sentence,
/// "points"): a paired t-test where both sides ran the same seeds, Welch's otherwise, the
/// p-values Holm-adjusted over the comparisons that have one, and the verdict sentence.
pub fn compare_all(metric: &str, unit: &str, pairs: &[(Side, Side)]) -> Vec<Comparison> {
    let tests: Vec<(TestMethod, Option<TTest>)> = pairs
        .iter()
        .map(|(a, b)| test_pair(a.runs, b.runs))
        .collect();
    let p: Vec<f64> = tests
        .iter()
        .filter_map(|(_, t)| t.map(|t| t.p_value))
        .collect();
    let mut adjusted = holm(&p).into_iter();
    let m = p.len();
    pairs
        .iter()
        .zip(tests)
        .map(|((a, b), (method, test))| {
            let values = |s: &Side| s.runs.iter().map(|r| r.1).collect::<Vec<f64>>();
            let (xa, xb) = (values(a), values(b));
            let (na, nb) = (xa.len(), xb.len());
            let mut c = Comparison {
                a: a.name.to_string(),
                b: b.name.to_string(),
                metric: metric.to_string(),
                diff: 0.0,
                ci95: None,
                method,
                p_value: None,
                p_adjusted: None,
                adjusted_over: 0,
                n_a: na,
                n_b: nb,
                beyond_noise: false,
                sentence: String::new(),
            };
            if na == 0 || nb == 0 {
                c.sentence = format!(
                    "{} vs {}: nothing to compare ({na} and {nb} runs).",
                    a.name, b.name
                );
                return c;
            }
            c.diff = mean_var(&xa).0 - mean_var(&xb).0;
            let verb = if c.diff > 0.0 {
                "beats"
            } else if c.diff < 0.0 {
                "trails"
            } else {
                "ties with"
            };
            let head = format!("{} {verb} {} by {:+.2} {unit}", a.name, b.name, c.diff);
            let seeds = if na == nb {
                format!("{na} seed{} each", if na == 1 { "" } else { "s" })
            } else {
                format!("{na} and {nb} seeds")
            };
            let Some(t) = test else {
                c.sentence = format!(
                    "{head} ({seeds}): too few seeds for an interval (need at least 2 per variant)."
                );
                return c;
            };
            let p_adj = adjusted.next().expect("one adjusted p per test");
            let [lo, hi] = t.ci95;
            c.ci95 = Some(t.ci95);
            c.p_value = Some(t.p_value);
            c.p_adjusted = Some(p_adj);
            c.adjusted_over = m;
            c.beyond_noise = p_adj < 0.05;
            let test_words = match method {
                TestMethod::PairedT => format!("paired t over {na} seeds"),
                TestMethod::WelchT => format!("Welch t, {seeds}"),
            };
            let adjustment = if m == 1 {
                "a single comparison, nothing to adjust".to_string()
            } else {
                format!("Holm-adjusted {} over {m} comparisons", p_phrase(p_adj))
            };
            let verdict = if c.beyond_noise {
                "beyond noise.".to_string()
            } else if lo > 0.0 || hi < 0.0 {
                format!(
                    "within noise once corrected for {m} comparisons (the interval alone excludes 0)."
                )
            } else {
                "within noise (the interval includes 0).".to_string()
            };
            c.sentence = format!(
                "{head} (95% CI {lo:+.2} to {hi:+.2}; {test_words}, {}, {adjustment}): {verdict}",
                p_phrase(t.p_value)
            );
            c
        })
        .collect()
}

/// Paired when both sides ran exactly the same seeds, each once: the differences are then taken
/// seed by seed. Otherwise Welch on the two samples.
fn test_pair(a: &[(u64, f64)], b: &[(u64, f64)]) -> (TestMethod, Option<TTest>) {
    let sorted = |x: &[(u64, f64)]| {
        let mut x = x.to_vec();
        x.sort_by_key(|r| r.0);
        x
    };
    let (a, b) = (sorted(a), sorted(b));
    let unique = |x: &[(u64, f64)]| x.windows(2).all(|w| w[0].0 != w[1].0);
    let same_seeds = a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| x.0 == y.0) && unique(&a);
    if same_seeds {
        let d: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x.1 - y.1).collect();
        (TestMethod::PairedT, paired(&d))
    } else {
        let values = |x: &[(u64, f64)]| x.iter().map(|r| r.1).collect::<Vec<f64>>();
        (TestMethod::WelchT, welch(&values(&a), &values(&b)))
    }
}

/// "p = 0.012", or "p < 0.001" where three decimals would print a misleading 0.
fn p_phrase(p: f64) -> String {
    if p < 0.001 {
        "p < 0.001".to_string()
    } else {
        format!("p = {p:.3}")
    }
}

/// Project `rows` (one feature vector per point) on their top two principal components.
///
/// Centers the data, then finds the leading eigenvectors of the covariance by power iteration,
/// the second deflated against the first. The covariance is never formed: C·v = Xᵀ(X·v)/(n−1)
/// costs O(n·d) per step instead of O(n·d²) up front. Each component's sign is fixed so that its
/// largest-magnitude entry is positive, so the same data always gives the same picture.
/// Fewer than 2 feature dimensions (or no variance left) give zeros in the missing coordinate.
pub fn pca_2d(rows: &[Vec<f32>]) -> Result<Vec<[f32; 2]>> {
    let n = rows.len();
    if n == 0 {
        return Ok(Vec::new());
    }
    let d = rows[0].len();
    if let Some((i, r)) = rows.iter().enumerate().find(|(_, r)| r.len() != d) {
        return Err(input(
            format!("feature row {i} has {} values, row 0 has {d}", r.len()),
            "embedding features",
            "every point must come from the same layer of the same model",
        ));
    }
    let mut mean = vec![0.0f64; d];
    for r in rows {
        for (m, &x) in mean.iter_mut().zip(r) {
            *m += x as f64;
        }
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    let x: Vec<f64> = rows
        .iter()
        .flat_map(|r| r.iter().zip(&mean).map(|(&v, m)| v as f64 - m))
        .collect();

    let cov_times = |v: &[f64]| -> Vec<f64> {
        let mut out = vec![0.0; d];
        for row in x.chunks_exact(d) {
            let proj: f64 = row.iter().zip(v).map(|(a, b)| a * b).sum();
            for (o, a) in out.iter_mut().zip(row) {
                *o += proj * a;
            }
        }
        out
    };

    let mut comps: Vec<Vec<f64>> = Vec::new();
    for k in 0..2.min(d) {
        // A fixed pseudo-random start: a constant vector could be orthogonal to the answer.
        let mut v: Vec<f64> = (0..d)
            .map(|i| {
                let h = splitmix64((k * 1_000_003 + i) as u64);
                (h >> 11) as f64 / (1u64 << 53) as f64 - 0.5
            })
            .collect();
        let mut ok = orthonormalize(&mut v, &comps);
        for _ in 0..1000 {
            if !ok {
                break;
            }
            let mut w = cov_times(&v);
            // Deflation: remove the directions already found, so the iteration converges to the
            // next eigenvector instead of the first one again.
            ok = orthonormalize(&mut w, &comps);
            let delta: f64 = w.iter().zip(&v).map(|(a, b)| (a - b).abs()).sum();
            v = w;
            if delta < 1e-10 {
                break;
            }
        }
        if !ok {
            break;
        }
        let (imax, _) = v.iter().enumerate().fold((0, 0.0f64), |best, (i, &c)| {
            if c.abs() > best.1 {
                (i, c.abs())
            } else {
                best
            }
        });
        if v[imax] < 0.0 {
            v.iter_mut().for_each(|c| *c = -*c);
        }
        comps.push(v);
    }

    Ok(x.chunks_exact(d.max(1))
        .map(|row| {
            let mut p = [0.0f32; 2];
            for (k, c) in comps.iter().enumerate() {
                p[k] = row.iter().zip(c).map(|(a, b)| a * b).sum::<f64>() as f32;
            }
            p
        })
        .chain(std::iter::repeat_n([0.0f32; 2], if d == 0 { n } else { 0 }))
        .collect())
}

/// Remove from `v` its projections on the orthonormal `basis`, then scale it to unit length.
/// False when nothing is left (no variance outside the basis).
fn orthonormalize(v: &mut [f64], basis: &[Vec<f64>]) -> bool {
    for b in basis {
        let dot: f64 = v.iter().zip(b).map(|(x, y)| x * y).sum();
        v.iter_mut().zip(b).for_each(|(x, y)| *x -= dot * y);
    }
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm <= 1e-150 || !norm.is_finite() {
        return false;
    }
    v.iter_mut().for_each(|x| *x /= norm);
    true
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Mean and sample variance (divisor n − 1; 0 for a single value).
fn mean_var(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let m = x.iter().sum::<f64>() / n;
    if x.len() < 2 {
        return (m, 0.0);
    }
    let ss: f64 = x.iter().map(|v| (v - m) * (v - m)).sum();
    (m, ss / (n - 1.0))
}

/// Linear interpolation between order statistics (the "type 7" quantile of R and numpy).
fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    let h = (sorted.len() - 1) as f64 * q;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

/// Two-sided p-value of a t statistic: P(|T| ≥ |t|) = I_{df/(df+t²)}(df/2, 1/2).
pub fn t_two_sided_p(t: f64, df: f64) -> f64 {
    if t.is_infinite() {
        return 0.0;
    }
    reg_inc_beta(df / 2.0, 0.5, df / (df + t * t))
}

/// Student-t CDF with `df` degrees of freedom (any real df > 0).
pub fn t_cdf(t: f64, df: f64) -> f64 {
    let tail = 0.5 * t_two_sided_p(t, df);
    if t >= 0.0 {
        1.0 - tail
    } else {
        tail
    }
}

/// Student-t quantile: the t with `t_cdf(t, df) = p`, by bisection (p in (0, 1)).
pub fn t_quantile(p: f64, df: f64) -> f64 {
    if p == 0.5 {
        return 0.0;
    }
    if p < 0.5 {
        return -t_quantile(1.0 - p, df);
    }
    if p >= 1.0 {
        return f64::INFINITY;
    }
    let mut hi = 1.0;
    while t_cdf(hi, df) < p && hi < 1e300 {
        hi *= 2.0;
    }
    let mut lo = 0.0;
    // The CDF is monotone, so bisection cannot fail; 200 halvings reach f64 resolution.
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if t_cdf(mid, df) < p {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo <= 1e-13 * hi {
            break;
        }
    }
    0.5 * (lo + hi)
}

/// ln Γ(x) for x > 0 by the Lanczos approximation (g = 7, 9 terms; ~15 significant digits),
/// with the reflection formula below 0.5.
fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + G + 0.5;
    for (i, &c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// Regularized incomplete beta I_x(a, b).
fn reg_inc_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    let front = ln_front.exp();
    // The continued fraction converges fast only for x < (a+1)/(a+b+2); beyond it use the
    // symmetry I_x(a, b) = 1 − I_{1−x}(b, a).
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_cf(a, b, x) / a
    } else {
        1.0 - front * beta_cf(b, a, 1.0 - x) / b
    }
}

/// The continued fraction of I_x(a, b), evaluated by the modified Lentz method.
fn beta_cf(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    const EPS: f64 = 1e-15;
    let guard = |v: f64| if v.abs() < TINY { TINY } else { v };
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 / guard(1.0 - qab * x / qap);
    let mut h = d;
    for m in 1..=500 {
        let m = m as f64;
        let m2 = 2.0 * m;
        // Even step: d_{2m} = m(b−m)x / ((a+2m−1)(a+2m)).
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 / guard(1.0 + aa * d);
        c = guard(1.0 + aa / c);
        h *= d * c;
        // Odd step: d_{2m+1} = −(a+m)(a+b+m)x / ((a+2m)(a+2m+1)).
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 / guard(1.0 + aa * d);
        c = guard(1.0 + aa / c);
        let del = d * c;
        h *= del;
        if (del - 1.0).abs() < EPS {
            break;
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) {
        assert!((a - b).abs() <= tol, "{a} vs {b} (tol {tol})");
    }

    #[test]
    fn t_quantiles_match_tables() {
        // Two-sided 95% critical values from any t table.
        close(t_quantile(0.975, 2.0), 4.302_653, 1e-6);
        close(t_quantile(0.975, 4.0), 2.776_445, 1e-6);
        close(t_quantile(0.975, 10.0), 2.228_139, 1e-6);
        close(t_quantile(0.025, 10.0), -2.228_139, 1e-6);
        // df = 1 is Cauchy: quantile tan(π(p − 1/2)); p = 0.975 → 12.706205.
        close(t_quantile(0.975, 1.0), 12.706_205, 1e-5);
    }

    #[test]
    fn t_cdf_matches_closed_forms() {
        // df = 1: F(t) = 1/2 + atan(t)/π, so F(1) = 3/4.
        close(t_cdf(1.0, 1.0), 0.75, 1e-12);
        // df = 2: F(t) = 1/2 + t / (2·sqrt(2 + t²)); F(1) = 1/2 + 1/(2√3) = 0.7886751346.
        close(t_cdf(1.0, 2.0), 0.788_675_134_594_813, 1e-12);
        close(t_cdf(-1.0, 2.0), 1.0 - 0.788_675_134_594_813, 1e-12);
        // Two-sided p for t = 2, df = 5 (table value 0.101939).
        close(t_two_sided_p(2.0, 5.0), 0.101_939, 1e-6);
        close(t_two_sided_p(0.0, 7.3), 1.0, 1e-12);
    }

    #[test]
    fn ln_gamma_matches_factorials() {
        // Γ(5) = 24, Γ(1/2) = √π, Γ(10.5) = 1133278.3889487856.
        close(ln_gamma(5.0), 24f64.ln(), 1e-12);
        close(ln_gamma(0.5), std::f64::consts::PI.sqrt().ln(), 1e-12);
        close(ln_gamma(10.5), 1_133_278.388_948_785_6f64.ln(), 1e-11);
    }

    #[test]
    fn welch_equal_variances_hand_computed() {
        // a = 1,2,3 (mean 2, var 1); b = 3,4,5 (mean 4, var 1).
        // se = sqrt(1/3 + 1/3) = 0.8164966; df = (2/3)² / (2·(1/3)²/2) = 4; t = −2/se = −√6.
        // df = 4 closed form F(t) = 1/2 + (3/8)·u·(1 − t²/(12(1 + t²/4))), u = t/sqrt(1 + t²/4)
        // gives p = 2(1 − F(√6)) = 0.0704840; CI = −2 ± 2.776445·0.8164966 = −2 ± 2.2669578.
        let w = welch(&[1.0, 2.0, 3.0], &[3.0, 4.0, 5.0]).unwrap();
        close(w.diff, -2.0, 1e-12);
        close(w.se, (2.0f64 / 3.0).sqrt(), 1e-12);
        close(w.df, 4.0, 1e-12);
        close(w.t, -(6f64.sqrt()), 1e-12);
        close(w.p_value, 0.070_484_0, 1e-6);
        close(w.ci95[0], -4.266_957_8, 1e-6);
        close(w.ci95[1], 0.266_957_8, 1e-6);
    }

    #[test]
    fn welch_unequal_variances_hand_computed() {
        // a = 1,2,3 (mean 2, var 1); b = 4,6,8 (mean 6, var 4).
        // se² = 1/3 + 4/3 = 5/3; df = (5/3)² / ((1/3)²/2 + (4/3)²/2) = (25/9)/(17/18) = 50/17.
        let w = welch(&[1.0, 2.0, 3.0], &[4.0, 6.0, 8.0]).unwrap();
        close(w.se, (5.0f64 / 3.0).sqrt(), 1e-12);
        close(w.df, 50.0 / 17.0, 1e-12);
        close(w.t, -4.0 / (5.0f64 / 3.0).sqrt(), 1e-12);
        // Between the df = 2 and df = 3 critical values, and centred on the difference.
        let half = (w.ci95[1] - w.ci95[0]) / 2.0;
        close((w.ci95[0] + w.ci95[1]) / 2.0, -4.0, 1e-12);
        assert!(half / w.se > 3.182_446 && half / w.se < 4.302_653);
        close(t_cdf(half / w.se, w.df), 0.975, 1e-10);
    }

    #[test]
    fn welch_two_seeds_df_two() {
        // a = 1,3; b = 4,6: var 2 each, se = √2, df = 2, t = −3/√2.
        // df = 2: p = 1 − |t|/sqrt(2 + t²) = 1 − 3/√13 = 0.1679497; CI = −3 ± 4.302653·√2.
        let w = welch(&[1.0, 3.0], &[4.0, 6.0]).unwrap();
        close(w.df, 2.0, 1e-12);
        close(w.p_value, 1.0 - 3.0 / 13f64.sqrt(), 1e-10);
        close(w.ci95[0], -3.0 - 6.084_870_2, 1e-6);
        close(w.ci95[1], -3.0 + 6.084_870_2, 1e-6);
    }

    #[test]
    fn welch_degenerate_cases() {
        assert!(welch(&[1.0], &[2.0, 3.0]).is_none());
        assert!(welch(&[1.0, 2.0], &[]).is_none());
        // Zero spread on both sides: the interval collapses, nothing is NaN.
        let w = welch(&[5.0, 5.0, 5.0], &[3.0, 3.0]).unwrap();
        assert_eq!(
            (w.diff, w.se, w.df, w.p_value, w.ci95),
            (2.0, 0.0, 3.0, 0.0, [2.0, 2.0])
        );
        let same = welch(&[5.0, 5.0], &[5.0, 5.0]).unwrap();
        assert_eq!((same.t, same.p_value), (0.0, 1.0));
    }

    #[test]
    fn bootstrap_is_seeded_and_bounded() {
        let a = [1.0, 2.0, 3.0];
        let b = [3.0, 4.0, 5.0];
        let ci = bootstrap_diff_ci(&a, &b, 2000, 7).unwrap();
        assert_eq!(ci, bootstrap_diff_ci(&a, &b, 2000, 7).unwrap());
        // Resampled means lie in [1, 3] and [3, 5], so every difference lies in [−4, 0]; the
        // distribution is symmetric about −2, so the interval brackets it.
        assert!(ci[0] >= -4.0 && ci[1] <= 0.0, "{ci:?}");
        assert!(ci[0] < -2.5 && ci[1] > -1.5, "{ci:?}");
        assert_eq!(
            bootstrap_diff_ci(&[5.0; 3], &[3.0; 3], 100, 1),
            Some([2.0, 2.0])
        );
        assert_eq!(bootstrap_diff_ci(&[], &b, 100, 1), None);
    }

    #[test]
    fn quantile_interpolates() {
        // Sorted 0..=10: q = 0.025 → h = 0.25 → 0.25; q = 0.975 → 9.75.
        let s: Vec<f64> = (0..=10).map(f64::from).collect();
        close(quantile_sorted(&s, 0.025), 0.25, 1e-12);
        close(quantile_sorted(&s, 0.975), 9.75, 1e-12);
    }

    /// (seed, value) runs with seeds 0, 1, 2, …
    fn runs(xs: &[f64]) -> Vec<(u64, f64)> {
        xs.iter().enumerate().map(|(i, &x)| (i as u64, x)).collect()
    }

    #[test]
    fn paired_t_hand_computed() {
        // a = 11, 22, 33 and b = 10, 20, 30 on seeds 0, 1, 2: per-seed d = 1, 2, 3, mean 2, s_d = 1,
        // se = 1/√3 = 0.5773503, t = 2√3 = 3.4641016, df = 2.
        // df = 2 closed form: p = 1 − |t|/sqrt(2 + t²) = 1 − 3.4641016/√14 = 0.0741799;
        // CI = 2 ± 4.3026527·0.5773503 = 2 ± 2.4841377.
        let t = paired(&[1.0, 2.0, 3.0]).unwrap();
        close(t.diff, 2.0, 1e-12);
        close(t.se, 1.0 / 3f64.sqrt(), 1e-12);
        close(t.df, 2.0, 0.0);
        close(t.t, 2.0 * 3f64.sqrt(), 1e-12);
        close(t.p_value, 1.0 - 2.0 * 3f64.sqrt() / 14f64.sqrt(), 1e-10);
        close(t.p_value, 0.074_179_9, 1e-7);
        close(t.ci95[0], 2.0 - 2.484_137_7, 1e-6);
        close(t.ci95[1], 2.0 + 2.484_137_7, 1e-6);
        assert!(paired(&[1.0]).is_none());
        // Every seed gains the same: no spread, the interval is the point.
        let flat = paired(&[0.5, 0.5]).unwrap();
        assert_eq!((flat.p_value, flat.ci95, flat.df), (0.0, [0.5, 0.5], 1.0));

        // The same runs through compare: paired by seed. Unpaired, the seeds' shared level
        // (10, 20, 30) would swamp the difference: Welch's se² = 121/3 + 100/3, p > 0.8.
        let c = compare(
            "a",
            &runs(&[11.0, 22.0, 33.0]),
            "b",
            &runs(&[10.0, 20.0, 30.0]),
        );
        assert_eq!(c.method, TestMethod::PairedT);
        close(c.p_value.unwrap(), 0.074_179_9, 1e-7);
        let [lo, hi] = c.ci95.unwrap();
        close(lo, -0.484_137_7, 1e-6);
        close(hi, 4.484_137_7, 1e-6);
        assert!(
            welch(&[11.0, 22.0, 33.0], &[10.0, 20.0, 30.0])
                .unwrap()
                .p_value
                > 0.8
        );
    }

    #[test]
    fn runs_pair_by_seed_value_not_position() {
        // b lists the same seeds in another order; paired by position the differences would be
        // 33 − 10, 11 − 20, 22 − 30.
        let a = [(2, 33.0), (0, 11.0), (1, 22.0)];
        let b = [(0, 10.0), (1, 20.0), (2, 30.0)];
        let c = compare("a", &a, "b", &b);
        assert_eq!(c.method, TestMethod::PairedT);
        close(c.p_value.unwrap(), 0.074_179_9, 1e-7);
        // Seeds that do not match: nothing pairs the runs, Welch on the two samples.
        let c = compare("a", &[(0, 11.0), (1, 22.0), (3, 33.0)], "b", &b);
        assert_eq!(c.method, TestMethod::WelchT);
        close(
            c.p_value.unwrap(),
            welch(&[11.0, 22.0, 33.0], &[10.0, 20.0, 30.0])
                .unwrap()
                .p_value,
            1e-15,
        );
        assert!(
            c.sentence.contains("Welch t, 3 seeds each"),
            "{}",
            c.sentence
        );
        let c = compare("a", &runs(&[1.0, 2.0]), "b", &runs(&[1.0, 2.0, 4.0]));
        assert_eq!(c.method, TestMethod::WelchT);
        assert!(
            c.sentence.contains("Welch t, 2 and 3 seeds"),
            "{}",
            c.sentence
        );
    }

    #[test]
    fn holm_known_example() {
        // p = 0.01, 0.04, 0.03, 0.005 (m = 4). Sorted: 0.005·4 = 0.02, 0.01·3 = 0.03,
        // 0.03·2 = 0.06, 0.04·1 = 0.04 → raised to the running max 0.06. In input order:
        // 0.03, 0.06, 0.06, 0.02 (R: p.adjust(c(.01, .04, .03, .005), "holm")).
        let adj = holm(&[0.01, 0.04, 0.03, 0.005]);
        for (got, want) in adj.iter().zip([0.03, 0.06, 0.06, 0.02]) {
            close(*got, want, 1e-15);
        }
        // Capped at 1; ties share a value; one p is left as it is; none gives none.
        assert_eq!(holm(&[0.5, 0.6]), vec![1.0, 1.0]);
        assert_eq!(holm(&[0.02, 0.02]), vec![0.04, 0.04]);
        assert_eq!(holm(&[0.3]), vec![0.3]);
        assert!(holm(&[]).is_empty());
    }

    #[test]
    fn a_family_is_adjusted_together() {
        // d = 1.8, 2.8, 3.8: t = 2.8√3 = 4.8497423, p = 1 − t/sqrt(2 + t²) = 0.0399843;
        // d = 1, 2, 3: p = 0.0741799 (above). Holm over m = 2: 0.0399843·2 = 0.0799687, then
        // max(0.0741799·1, 0.0799687) = 0.0799687 for both. The 1-seed pair has no p and is not
        // counted in m.
        let base = runs(&[10.0, 20.0, 30.0]);
        let tight = runs(&[11.8, 22.8, 33.8]);
        let loose = runs(&[11.0, 22.0, 33.0]);
        let one = runs(&[12.0]);
        let side = |name, runs| Side { name, runs };
        let cs = compare_all(
            "test_top1",
            "points",
            &[
                (side("tight", &tight), side("base", &base)),
                (side("one", &one), side("base", &base)),
                (side("loose", &loose), side("base", &base)),
            ],
        );
        close(cs[0].p_value.unwrap(), 0.039_984_3, 1e-7);
        close(cs[0].p_adjusted.unwrap(), 0.079_968_7, 1e-7);
        close(cs[2].p_adjusted.unwrap(), 0.079_968_7, 1e-7);
        assert_eq!((cs[0].adjusted_over, cs[2].adjusted_over), (2, 2));
        assert_eq!((cs[1].p_adjusted, cs[1].adjusted_over), (None, 0));
        // The tight interval excludes 0 (2.8 ± 2.4841377 = [+0.32, +5.28]), yet after the
        // correction the gain is not claimed.
        assert!(!cs[0].beyond_noise);
        assert_eq!(
            cs[0].sentence,
            "tight beats base by +2.80 points (95% CI +0.32 to +5.28; paired t over 3 seeds, \
             p = 0.040, Holm-adjusted p = 0.080 over 2 comparisons): within noise once corrected \
             for 2 comparisons (the interval alone excludes 0)."
        );
        // Alone, the same comparison is beyond noise.
        let c = compare("tight", &tight, "base", &base);
        assert!(c.beyond_noise);
        assert_eq!((c.p_adjusted, c.adjusted_over), (c.p_value, 1));
    }

    #[test]
    fn compare_sentences() {
        let c = compare(
            "makd",
            &runs(&[11.0, 22.0, 33.0]),
            "baseline",
            &runs(&[10.0, 20.0, 30.0]),
        );
        assert_eq!(
            c.sentence,
            "makd beats baseline by +2.00 points (95% CI -0.48 to +4.48; paired t over 3 seeds, \
             p = 0.074, a single comparison, nothing to adjust): within noise (the interval \
             includes 0)."
        );
        assert!(!c.beyond_noise);
        assert_eq!((c.n_a, c.n_b, c.metric.as_str()), (3, 3, "test_top1"));

        // makd 82.0, 82.1, 82.2 vs 80.0, 80.1, 80.2 (Welch: the seeds differ): var 0.01 each,
        // se = 0.0816497, df = 4, half = 2.776445·0.0816497 = 0.2266958 → [+1.77, +2.23];
        // t = 2/0.0816497 = 24.49490, p < 0.001.
        let c = compare(
            "makd",
            &[(0, 82.0), (1, 82.1), (2, 82.2)],
            "baseline",
            &[(3, 80.0), (4, 80.1), (5, 80.2)],
        );
        assert_eq!(
            c.sentence,
            "makd beats baseline by +2.00 points (95% CI +1.77 to +2.23; Welch t, 3 seeds each, \
             p < 0.001, a single comparison, nothing to adjust): beyond noise."
        );
        assert!(c.beyond_noise);
        let [lo, hi] = c.ci95.unwrap();
        close(lo, 2.0 - 0.226_695_8, 1e-6);
        close(hi, 2.0 + 0.226_695_8, 1e-6);

        let c = compare(
            "random-target",
            &runs(&[78.0, 78.1]),
            "baseline",
            &runs(&[80.0, 80.1, 80.2]),
        );
        assert!(c
            .sentence
            .starts_with("random-target trails baseline by -2.05 points"));
        assert!(c.sentence.contains("2 and 3 seeds"));
        assert!(c.beyond_noise);

        let c = compare("makd", &runs(&[82.0]), "baseline", &runs(&[80.0, 80.5]));
        assert_eq!(
            c.sentence,
            "makd beats baseline by +1.75 points (1 and 2 seeds): too few seeds for an \
             interval (need at least 2 per variant)."
        );
        assert_eq!((c.ci95, c.p_value, c.beyond_noise), (None, None, false));
        let c = compare("makd", &[], "baseline", &runs(&[80.0]));
        assert_eq!(
            c.sentence,
            "makd vs baseline: nothing to compare (0 and 1 runs)."
        );
    }

    #[test]
    fn pca_recovers_known_axes() {
        // Points = m + t·u1 + s·u2 in 3-D with u1 = (0.6, 0.8, 0), u2 = (−0.8, 0.6, 0),
        // t ∈ {−3, −1, 1, 3} crossed with s ∈ {−1, 1} (8 points; sample variances 40/7 and
        // 8/7): t and s are uncorrelated and t spreads more, so PC1 = u1 and PC2 = ±u2.
        // Sign convention: the largest-magnitude entry is positive, so PC1 = u1 (0.8 > 0) and
        // PC2 = −u2 (|−0.8| flips): the projections are exactly (t, −s).
        let m = [10.0f32, -5.0, 2.0];
        let mut rows = Vec::new();
        let mut expected = Vec::new();
        for t in [-3.0f32, -1.0, 1.0, 3.0] {
            for s in [-1.0f32, 1.0] {
                rows.push(vec![
                    m[0] + 0.6 * t - 0.8 * s,
                    m[1] + 0.8 * t + 0.6 * s,
                    m[2],
                ]);
                expected.push([t, -s]);
            }
        }
        let p = pca_2d(&rows).unwrap();
        for (got, want) in p.iter().zip(&expected) {
            assert!((got[0] - want[0]).abs() < 1e-4 && (got[1] - want[1]).abs() < 1e-4);
        }
        // Same data, same answer.
        assert_eq!(p, pca_2d(&rows).unwrap());
    }

    #[test]
    fn pca_edge_cases() {
        assert!(pca_2d(&[]).unwrap().is_empty());
        // One dimension: the second coordinate is 0; the first is the centred value.
        let p = pca_2d(&[vec![1.0], vec![3.0]]).unwrap();
        assert_eq!(p, vec![[-1.0, 0.0], [1.0, 0.0]]);
        // No variance at all: every point at the origin.
        assert_eq!(
            pca_2d(&vec![vec![2.0, 2.0]; 3]).unwrap(),
            vec![[0.0, 0.0]; 3]
        );
        assert!(pca_2d(&[vec![1.0, 2.0], vec![1.0]]).is_err());
    }
}
