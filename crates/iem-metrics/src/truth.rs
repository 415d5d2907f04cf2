//! Agreement with ground truth: matching, recovery, clustering accuracy, NMI, ARI.

use crate::{MetricError, Result, entropy};
use std::collections::BTreeMap;

/// Minimum-cost assignment (Hungarian algorithm, O(n² m)) for an `n × m` cost matrix
/// (row-major, `n ≤ m`): returns for each row its column. Rows > columns are handled by
/// transposing.
pub fn hungarian(cost: &[f64], n: usize, m: usize) -> Vec<usize> {
    if n == 0 {
        return Vec::new();
    }
    if n > m {
        let t: Vec<f64> = (0..m * n).map(|idx| cost[(idx % n) * m + idx / n]).collect();
        let col_of_t = hungarian(&t, m, n); // for each column of the original, its row
        let mut out = vec![usize::MAX; n];
        for (c, &r) in col_of_t.iter().enumerate() {
            out[r] = c;
        }
        return out;
    }
    // e-maxx formulation with 1-based potentials.
    let inf = f64::INFINITY;
    let (mut u, mut v) = (vec![0.0; n + 1], vec![0.0; m + 1]);
    let (mut p, mut way) = (vec![0usize; m + 1], vec![0usize; m + 1]);
    for i in 1..=n {
        p[0] = i;
        let mut j0 = 0;
        let mut minv = vec![inf; m + 1];
        let mut used = vec![false; m + 1];
        loop {
            used[j0] = true;
            let i0 = p[j0];
            let (mut delta, mut j1) = (inf, 0);
            for j in 1..=m {
                if !used[j] {
                    let cur = cost[(i0 - 1) * m + (j - 1)] - u[i0] - v[j];
                    if cur < minv[j] {
                        minv[j] = cur;
                        way[j] = j0;
                    }
                    if minv[j] < delta {
                        delta = minv[j];
                        j1 = j;
                    }
                }
            }
            for j in 0..=m {
                if used[j] {
                    u[p[j]] += delta;
                    v[j] -= delta;
                } else {
                    minv[j] -= delta;
                }
            }
            j0 = j1;
            if p[j0] == 0 {
                break;
            }
        }
        loop {
            let j1 = way[j0];
            p[j0] = p[j1];
            j0 = j1;
            if j0 == 0 {
                break;
            }
        }
    }
    let mut ans = vec![0usize; n];
    for j in 1..=m {
        if p[j] > 0 {
            ans[p[j] - 1] = j - 1;
        }
    }
    ans
}

/// Prototype recovery: mean Euclidean distance between each true centre and its
/// Hungarian-matched prototype (`centres: C × D`, `protos: K × D`, `K ≥ C`). 0 for exact
/// centres in any order.
pub fn prototype_recovery(centres: &[f64], protos: &[f64], d: usize) -> Result<f64> {
    let (c, k) = (centres.len() / d, protos.len() / d);
    if k < c {
        return Err(MetricError::Shape {
            metric: "prototype_recovery",
            detail: format!("{k} prototypes for {c} centres"),
        });
    }
    let cost: Vec<f64> = (0..c * k)
        .map(|idx| {
            let (i, j) = (idx / k, idx % k);
            (0..d).map(|t| (centres[i * d + t] - protos[j * d + t]).powi(2)).sum::<f64>().sqrt()
        })
        .collect();
    let asg = hungarian(&cost, c, k);
    Ok(asg.iter().enumerate().map(|(i, &j)| cost[i * k + j]).sum::<f64>() / c.max(1) as f64)
}

/// Joint counts and the two marginal counts of a pair of labelings.
type Contingency = (BTreeMap<(usize, usize), f64>, BTreeMap<usize, f64>, BTreeMap<usize, f64>);

fn contingency(a: &[usize], b: &[usize]) -> Contingency {
    let (mut t, mut ra, mut rb) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
    for (&x, &y) in a.iter().zip(b) {
        *t.entry((x, y)).or_insert(0.0) += 1.0;
        *ra.entry(x).or_insert(0.0) += 1.0;
        *rb.entry(y).or_insert(0.0) += 1.0;
    }
    (t, ra, rb)
}

/// Mutual information (nats) between two labelings.
pub fn mutual_info(a: &[usize], b: &[usize]) -> f64 {
    let n = a.len() as f64;
    if n == 0.0 {
        return 0.0;
    }
    let (t, ra, rb) = contingency(a, b);
    t.iter().map(|(&(x, y), &c)| c / n * ((c * n) / (ra[&x] * rb[&y])).ln()).sum()
}

/// Normalised mutual information `I / √(H(a) H(b))` (1 for identical partitions up to
/// relabelling; 0 when either labeling is constant, where it is conventionally defined so).
pub fn nmi(a: &[usize], b: &[usize]) -> f64 {
    let n = a.len() as f64;
    let (_, ra, rb) = contingency(a, b);
    let ha = entropy(&ra.values().map(|c| c / n).collect::<Vec<_>>());
    let hb = entropy(&rb.values().map(|c| c / n).collect::<Vec<_>>());
    if ha <= 0.0 || hb <= 0.0 {
        return if ha == hb { 1.0 } else { 0.0 };
    }
    mutual_info(a, b) / (ha * hb).sqrt()
}

/// Adjusted Rand index (Hubert & Arabie): 1 for identical partitions up to relabelling,
/// about 0 for independent ones.
pub fn ari(a: &[usize], b: &[usize]) -> f64 {
    let n = a.len() as f64;
    let c2 = |x: f64| x * (x - 1.0) / 2.0;
    let (t, ra, rb) = contingency(a, b);
    let sij: f64 = t.values().map(|&c| c2(c)).sum();
    let sa: f64 = ra.values().map(|&c| c2(c)).sum();
    let sb: f64 = rb.values().map(|&c| c2(c)).sum();
    let expected = sa * sb / c2(n);
    let max = 0.5 * (sa + sb);
    if (max - expected).abs() < 1e-15 {
        return 1.0; // both partitions trivial and equal
    }
    (sij - expected) / (max - expected)
}

/// Clustering accuracy: the fraction of samples correctly labelled after the best
/// one-to-one matching of clusters to classes (Hungarian on the contingency table).
pub fn clustering_accuracy(pred: &[usize], truth: &[usize]) -> f64 {
    let n = pred.len();
    if n == 0 {
        return 0.0;
    }
    let kp = pred.iter().max().map_or(0, |m| m + 1);
    let kt = truth.iter().max().map_or(0, |m| m + 1);
    let m = kp.max(kt);
    let mut cost = vec![0.0; m * m];
    for (&p, &t) in pred.iter().zip(truth) {
        cost[p * m + t] -= 1.0;
    }
    let asg = hungarian(&cost, m, m);
    -asg.iter().enumerate().map(|(i, &j)| cost[i * m + j]).sum::<f64>() / n as f64
}
