//! Aggregation maths: Welch's t interval, a percentile bootstrap, the plain-language verdict, and
//! a 2-D PCA for the embedding plot.
//!
//! Why Welch and not a pooled t: a control (random-target) can be noisier than the method, so
//! equal variances cannot be assumed. With 3 seeds per variant the interval is wide; that is the
//! honest answer, and the sentence says so when it includes 0.
//!
//! The Student-t CDF is computed from the regularized incomplete beta function
//! (I_x(a, b) by its continued fraction, evaluated with the modified Lentz method), and its
//! quantile by bisection on the CDF: robust for any real df > 0, which Welch's df always is.

use crate::error::{input, Result};
use crate::experiment::results::Comparison;
use rand::{Rng, SeedableRng};

/// Welch's unequal-variance t-test of mean(a) − mean(b).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WelchResult {
    /// mean(a) − mean(b).
    pub diff: f64,
    /// Standard error of the difference: sqrt(s_a²/n_a + s_b²/n_b).
    pub se: f64,
    /// Welch–Satterthwaite degrees of freedom.
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
pub fn welch(a: &[f64], b: &[f64]) -> Option<WelchResult> {
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
        let (t, p_value) = if diff == 0.0 {
            (0.0, 1.0)
        } else {
            (diff.signum() * f64::INFINITY, 0.0)
        };
        return Some(WelchResult {
            diff,
            se: 0.0,
            df: (na + nb - 2) as f64,
            t,
            p_value,
            ci95: [diff, diff],
        });
    }
    let se = se2.sqrt();
    let df = se2 * se2 / (qa * qa / (na - 1) as f64 + qb * qb / (nb - 1) as f64);
    let t = diff / se;
    let p_value = t_two_sided_p(t, df);
    let half = t_quantile(0.975, df) * se;
    Some(WelchResult {
        diff,
        se,
        df,
        t,
        p_value,
        ci95: [diff - half, diff + half],
    })
}

/// Percentile bootstrap 95% interval of mean(a) − mean(b): each iteration resamples both groups
/// with replacement. Seeded (ChaCha8), so the same inputs give the same interval.
/// `None` when either group is empty or `iters` is 0.
///
/// With 3 seeds a bootstrap understates the spread (it can only recombine the values it saw);
/// the report uses Welch, and this is here for larger seed counts and as a cross-check.
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

/// Compare `a` against `b` on test top-1 (percent): Welch interval and the verdict sentence.
pub fn compare(a_name: &str, a: &[f64], b_name: &str, b: &[f64]) -> Comparison {
    compare_on("test_top1", "points", a_name, a, b_name, b)
}

/// [`compare`] on any metric; `unit` names the difference's unit in the sentence ("points").
pub fn compare_on(
    metric: &str,
    unit: &str,
    a_name: &str,
    a: &[f64],
    b_name: &str,
    b: &[f64],
) -> Comparison {
    let (na, nb) = (a.len(), b.len());
    let mut c = Comparison {
        a: a_name.to_string(),
        b: b_name.to_string(),
        metric: metric.to_string(),
        diff: 0.0,
        ci95: None,
        method: "welch-t".to_string(),
        p_value: None,
        n_a: na,
        n_b: nb,
        beyond_noise: false,
        sentence: String::new(),
    };
    if na == 0 || nb == 0 {
        c.sentence = format!("{a_name} vs {b_name}: nothing to compare ({na} and {nb} runs).");
        return c;
    }
    c.diff = mean_var(a).0 - mean_var(b).0;
    let verb = if c.diff > 0.0 {
        "beats"
    } else if c.diff < 0.0 {
        "trails"
    } else {
        "ties with"
    };
    let seeds = if na == nb {
        format!("{na} seeds each")
    } else {
        format!("{na} and {nb} seeds")
    };
    match welch(a, b) {
        None => {
            c.sentence = format!(
                "{a_name} {verb} {b_name} by {:+.2} {unit} ({seeds}): too few seeds for an \
                 interval (need at least 2 per variant).",
                c.diff
            );
        }
        Some(w) => {
            let [lo, hi] = w.ci95;
            c.ci95 = Some(w.ci95);
            c.p_value = Some(w.p_value);
            c.beyond_noise = lo > 0.0 || hi < 0.0;
            let verdict = if c.beyond_noise {
                "beyond noise."
            } else {
                "within noise (the interval includes 0)."
            };
            c.sentence = format!(
                "{a_name} {verb} {b_name} by {:+.2} {unit} (95% CI {lo:+.2} to {hi:+.2}, \
                 Welch t, {seeds}): {verdict}",
                c.diff
            );
        }
    }
    c
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

    #[test]
    fn compare_sentences() {
        // makd 81,82,83 vs baseline 79,80,81: diff +2, se = sqrt(2/3), df 4 → CI 2 ± 2.2669578
        // = [−0.27, +4.27]: includes 0.
        let c = compare("makd", &[81.0, 82.0, 83.0], "baseline", &[79.0, 80.0, 81.0]);
        assert_eq!(
            c.sentence,
            "makd beats baseline by +2.00 points (95% CI -0.27 to +4.27, Welch t, 3 seeds \
             each): within noise (the interval includes 0)."
        );
        assert!(!c.beyond_noise);
        assert_eq!((c.n_a, c.n_b, c.metric.as_str()), (3, 3, "test_top1"));

        // Tighter seeds: 82.0, 82.1, 82.2 vs 80.0, 80.1, 80.2: var 0.01 each, se = 0.0816497,
        // half = 2.776445·0.0816497 = 0.2266958 → [+1.77, +2.23].
        let c = compare("makd", &[82.0, 82.1, 82.2], "baseline", &[80.0, 80.1, 80.2]);
        assert_eq!(
            c.sentence,
            "makd beats baseline by +2.00 points (95% CI +1.77 to +2.23, Welch t, 3 seeds \
             each): beyond noise."
        );
        assert!(c.beyond_noise);
        let [lo, hi] = c.ci95.unwrap();
        close(lo, 2.0 - 0.226_695_8, 1e-6);
        close(hi, 2.0 + 0.226_695_8, 1e-6);

        let c = compare(
            "random-target",
            &[78.0, 78.1],
            "baseline",
            &[80.0, 80.1, 80.2],
        );
        assert!(c
            .sentence
            .starts_with("random-target trails baseline by -2.05 points"));
        assert!(c.sentence.contains("2 and 3 seeds"));
        assert!(c.beyond_noise);

        let c = compare("makd", &[82.0], "baseline", &[80.0, 80.5]);
        assert_eq!(
            c.sentence,
            "makd beats baseline by +1.75 points (1 and 2 seeds): too few seeds for an \
             interval (need at least 2 per variant)."
        );
        assert_eq!((c.ci95, c.p_value, c.beyond_noise), (None, None, false));
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
