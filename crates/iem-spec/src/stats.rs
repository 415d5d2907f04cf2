//! Statistics for the report: mean with a 95% t-interval, and the paired t-test.

/// Mean, sample standard deviation and the half-width of the 95% confidence interval
/// (Student t, `n − 1` degrees of freedom); the half-width is `None` for `n < 2`.
pub fn mean_ci(v: &[f64]) -> (f64, f64, Option<f64>) {
    let n = v.len();
    if n == 0 {
        return (f64::NAN, f64::NAN, None);
    }
    let m = v.iter().sum::<f64>() / n as f64;
    if n < 2 {
        return (m, 0.0, None);
    }
    let sd = (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt();
    (m, sd, Some(t_quantile_975(n - 1) * sd / (n as f64).sqrt()))
}

/// The 97.5% quantile of Student's t with `df` degrees of freedom.
pub fn t_quantile_975(df: usize) -> f64 {
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::INFINITY,
        1..=30 => T[df - 1],
        31..=60 => 2.000,
        61..=120 => 1.980,
        _ => 1.960,
    }
}

/// Regularised incomplete beta `I_x(a, b)` (Numerical Recipes' continued fraction).
fn betai(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_beta = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b);
    let front = (ln_beta + a * x.ln() + b * (1.0 - x).ln()).exp();
    if x < (a + 1.0) / (a + b + 2.0) {
        front * betacf(a, b, x) / a
    } else {
        1.0 - front * betacf(b, a, 1.0 - x) / b
    }
}

fn betacf(a: f64, b: f64, x: f64) -> f64 {
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let tiny = 1e-300;
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < tiny {
        d = tiny;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..300 {
        let m = m as f64;
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 + aa * d;
        if d.abs() < tiny {
            d = tiny;
        }
        c = 1.0 + aa / c;
        if c.abs() < tiny {
            c = tiny;
        }
        d = 1.0 / d;
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 + aa * d;
        if d.abs() < tiny {
            d = tiny;
        }
        c = 1.0 + aa / c;
        if c.abs() < tiny {
            c = tiny;
        }
        d = 1.0 / d;
        let del = d * c;
        h *= del;
        if (del - 1.0).abs() < 1e-12 {
            break;
        }
    }
    h
}

fn ln_gamma(x: f64) -> f64 {
    // Lanczos approximation (g = 7, n = 9).
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
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + 7.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// Result of a paired test.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Paired {
    /// Mean of `a − b`.
    pub mean_diff: f64,
    /// t statistic.
    pub t: f64,
    /// Two-sided p-value.
    pub p: f64,
    /// Pairs.
    pub n: usize,
}

/// Two-sided paired t-test of `a` against `b` (paired by position, e.g. by seed). With zero
/// variance of the differences, `p` is 1 when they are all 0 and 0 otherwise.
pub fn paired_t(a: &[f64], b: &[f64]) -> Option<Paired> {
    let n = a.len().min(b.len());
    if n < 2 {
        return None;
    }
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let (m, sd, _) = mean_ci(&d);
    if sd == 0.0 {
        return Some(Paired {
            mean_diff: m,
            t: if m == 0.0 { 0.0 } else { f64::INFINITY },
            p: if m == 0.0 { 1.0 } else { 0.0 },
            n,
        });
    }
    let t = m / (sd / (n as f64).sqrt());
    let df = (n - 1) as f64;
    let p = betai(df / 2.0, 0.5, df / (df + t * t));
    Some(Paired { mean_diff: m, t, p, n })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // t = 2.228 at df = 10 has two-sided p = 0.05
        let df = 10.0;
        let t: f64 = 2.228;
        let p = betai(df / 2.0, 0.5, df / (df + t * t));
        assert!((p - 0.05).abs() < 1e-3, "p {p}");
        let (m, _, ci) = mean_ci(&[1.0, 2.0, 3.0]);
        assert_eq!(m, 2.0);
        assert!((ci.unwrap() - 4.303 * 1.0 / 3f64.sqrt()).abs() < 1e-9);
        let r = paired_t(&[1.0, 2.0, 3.0, 4.0], &[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!(r.p, 1.0);
        let r = paired_t(&[1.1, 2.3, 3.2, 4.4, 5.1], &[1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
        assert!(r.p < 0.05 && r.mean_diff > 0.0);
    }
}
