//! Every metric on cases with known answers, permutation invariance, ill-defined inputs,
//! and the large-N paths.

use iem_metrics::{
    MetricError, activation, change, competition, gradient, hyperplane, regions, truth,
};
use iem_tensor::Matrix;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn rand_matrix(r: &mut ChaCha8Rng, n: usize, k: usize) -> Matrix {
    Matrix::from_fn(n, k, |_, _| r.random_range(-1.0f32..1.0))
}

fn permute_cols(m: &Matrix, p: &[usize]) -> Matrix {
    Matrix::from_fn(m.rows(), m.cols(), |i, j| m.get(i, p[j]))
}

#[test]
fn hyperplane_duplicates_and_loophole() {
    // unit 0 and 1 identical; unit 2 orthogonal; unit 3 parallel to 0 with another offset;
    // unit 4 the antiparallel twin of unit 0 (the same line).
    let w = Matrix::from_vec(5, 2, vec![1., 0., 1., 0., 0., 1., 2., 0., -3., 0.]).unwrap();
    let b = [0.5f32, 0.5, 0.0, -4.0, -1.5];
    let s = hyperplane::hyperplane_stats(&w, &b, 0.99, 1e-3).unwrap();
    // direction duplicates: pairs among {0,1,3,4}: 6
    assert_eq!(s.direction_duplicates, 6);
    // same cut: 0-1, 0-4, 1-4 (offset −0.5 each, 4 flipped); 3 is at x = 2
    assert_eq!(s.duplicates, 3);
    assert!((s.max_abs_cos - 1.0).abs() < 1e-12);
    assert_eq!(s.nn_abs_cos[2], 0.0);
    // orthogonal units are not duplicates
    let o = hyperplane::hyperplane_stats(&Matrix::eye(3), &[0.0; 3], 0.99, 1e-3).unwrap();
    assert_eq!((o.duplicates, o.direction_duplicates), (0, 0));
    assert_eq!(o.mean_abs_cos, 0.0);
    // Gram redundancy and its floor
    let (e, floor) = hyperplane::gram_redundancy(&Matrix::eye(3)).unwrap();
    assert!(e.abs() < 1e-12 && floor == 0.0);
    let (_, floor) = hyperplane::gram_redundancy(&Matrix::zeros(8, 2)).unwrap();
    assert_eq!(floor, 64.0 / 2.0 - 8.0);
    // zero weight rows are reported, not NaN
    let z = hyperplane::hyperplane_stats(&Matrix::zeros(2, 2), &[0.0, 1.0], 0.9, 1e-3).unwrap();
    assert_eq!(z.zero_units, vec![0, 1]);
}

#[test]
fn clipped_hausdorff_known() {
    let bx = hyperplane::Box2 { x0: -1.0, x1: 1.0, y0: -1.0, y1: 1.0 };
    // x = 0 and x = 0.5: vertical segments 0.5 apart
    let h = hyperplane::clipped_hausdorff([1.0, 0.0], 0.0, [1.0, 0.0], -0.5, bx).unwrap();
    assert!((h - 0.5).abs() < 1e-12);
    // the same line written twice
    assert!(
        hyperplane::clipped_hausdorff([1.0, 1.0], 0.2, [-2.0, -2.0], -0.4, bx).unwrap() < 1e-12
    );
    // a line missing the box
    assert!(hyperplane::clipped_hausdorff([1.0, 0.0], -5.0, [1.0, 0.0], 0.0, bx).is_none());
}

#[test]
fn ranks_and_redundancy() {
    for n in [1usize, 3, 10] {
        assert!((activation::effective_rank(&Matrix::eye(n)).unwrap() - n as f64).abs() < 1e-9);
        assert!((activation::stable_rank(&Matrix::eye(n)).unwrap() - n as f64).abs() < 1e-9);
    }
    let mut r = ChaCha8Rng::seed_from_u64(1);
    let a = rand_matrix(&mut r, 500, 4);
    let pr = activation::participation_ratio(&a).unwrap();
    assert!(pr > 3.5 && pr <= 4.0 + 1e-9, "independent uniform units: PR {pr}");
    let tc = activation::total_correlation(&a, 1e-12).unwrap();
    assert!(tc.abs() < 0.05, "independent units: TC {tc}");
    // duplicated unit: TC undefined (+inf) → typed error; correlation energy counts the pair
    let dup = Matrix::from_fn(500, 3, |i, j| a.get(i, if j == 2 { 0 } else { j }));
    assert!(matches!(
        activation::total_correlation(&dup, 1e-12),
        Err(MetricError::Undefined { .. })
    ));
    let ce = activation::correlation_energy(&dup, 1e-12).unwrap();
    assert!((ce.energy - 2.0).abs() < 0.05, "one duplicated pair gives ≈ 2: {}", ce.energy);
    // a constant unit is excluded and reported
    let c = Matrix::from_fn(50, 3, |i, j| if j == 1 { 2.0 } else { a.get(i, j) });
    let ce = activation::correlation_energy(&c, 1e-12).unwrap();
    assert_eq!(ce.constant_units, vec![1]);
    assert!(ce.energy.is_finite());
    let dead = activation::dead_units(
        &Matrix::from_fn(50, 3, |i, j| if j == 0 { -1.0 } else { a.get(i, j) }),
        1e-3,
    )
    .unwrap();
    assert_eq!(dead.never_active, vec![0]);
    assert_eq!(dead.low_variance, vec![0]);
    // fewer than two samples
    assert!(matches!(
        activation::correlation_energy(&Matrix::zeros(1, 3), 1e-12),
        Err(MetricError::TooFewSamples { .. })
    ));
    assert!(matches!(
        activation::effective_rank(&Matrix::zeros(4, 3)),
        Err(MetricError::Undefined { .. })
    ));
}

#[test]
fn regions_reach_the_arrangement_bound() {
    // 4 lines in general position, all crossings well inside the box
    let w = Matrix::from_vec(4, 2, vec![1.0, 0.1, 0.1, 1.0, 1.0, 1.3, 1.0, -0.7]).unwrap();
    let b = [0.1f32, -0.2, 0.3, -0.15];
    let bx = hyperplane::Box2 { x0: -3.0, x1: 3.0, y0: -3.0, y1: 3.0 };
    let got = regions::linear_regions(&w, &b, bx, 600).unwrap();
    assert_eq!(got, regions::arrangement_bound(4));
    assert_eq!(regions::arrangement_bound(4), 11);
    // a softmax layer over the same units has at most K cells
    let cells = regions::argmax_cells(&w, &b, bx, 200).unwrap();
    assert!((2..=4).contains(&cells));
}

#[test]
fn competition_known() {
    // uniform responsibilities: usage entropy log K, MI 0, no winner
    let u = Matrix::filled(10, 4, 0.25);
    let c = competition::competition(&u).unwrap();
    assert!((c.usage_entropy - 4f64.ln()).abs() < 1e-9 && c.mutual_information.abs() < 1e-9);
    assert!(
        (c.usage_entropy_norm - 1.0).abs() < 1e-9 && (c.effective_components - 4.0).abs() < 1e-6
    );
    // hard, balanced assignments: MI = log K, Switch balance 1
    let h = Matrix::from_fn(8, 4, |i, j| if i % 4 == j { 1.0 } else { 0.0 });
    let c = competition::competition(&h).unwrap();
    assert!((c.mutual_information - 4f64.ln()).abs() < 1e-9);
    assert!((c.switch_balance - 1.0).abs() < 1e-9 && c.importance_cv2.abs() < 1e-12);
    // winner-take-all: winner share 1, three dead units
    let w = Matrix::from_fn(8, 4, |_, j| if j == 2 { 1.0 } else { 0.0 });
    let c = competition::competition(&w).unwrap();
    assert_eq!(c.winner_share, 1.0);
    assert_eq!(c.dead, vec![0, 1, 3]);
    // class specialisation: units that track the label carry log(classes) nats
    let labels: Vec<usize> = (0..8).map(|i| i % 4).collect();
    assert!((competition::class_specialisation(&h, &labels).unwrap() - 4f64.ln()).abs() < 1e-9);
}

#[test]
fn cka_invariances() {
    let mut r = ChaCha8Rng::seed_from_u64(2);
    let x = rand_matrix(&mut r, 200, 5);
    // an orthogonal Q from a QR of a random matrix
    let q = rand_matrix(&mut r, 5, 5).to_dmatrix().qr().q();
    let xq = Matrix::from_dmatrix(&(x.to_dmatrix() * q));
    assert!((change::linear_cka(&x, &xq).unwrap() - 1.0).abs() < 1e-6);
    let scaled = x.map(|v| 3.5 * v);
    assert!((change::linear_cka(&x, &scaled).unwrap() - 1.0).abs() < 1e-9);
    assert!(
        (change::rbf_cka(&x, &scaled).unwrap() - 1.0).abs() < 1e-9,
        "median bandwidth makes RBF CKA scale-invariant"
    );
    assert!((change::svcca(&x, &xq, 0.99).unwrap() - 1.0).abs() < 1e-6);
    let y = rand_matrix(&mut r, 200, 5);
    assert!(change::linear_cka(&x, &y).unwrap() < 0.3);
}

#[test]
fn truth_known() {
    let a = [0usize, 0, 1, 1, 2, 2];
    let relabelled = [2usize, 2, 0, 0, 1, 1];
    assert!((truth::ari(&a, &relabelled) - 1.0).abs() < 1e-12);
    assert!((truth::nmi(&a, &relabelled) - 1.0).abs() < 1e-12);
    assert!((truth::clustering_accuracy(&relabelled, &a) - 1.0).abs() < 1e-12);
    let centres = [0.0, 0.0, 5.0, 5.0, -3.0, 2.0];
    let protos = [-3.0, 2.0, 0.0, 0.0, 9.0, 9.0, 5.0, 5.0]; // shuffled, plus a spare
    assert!(truth::prototype_recovery(&centres, &protos, 2).unwrap().abs() < 1e-12);
    // Hungarian on a classic example
    let cost = [4.0, 1.0, 3.0, 2.0, 0.0, 5.0, 3.0, 2.0, 2.0];
    assert_eq!(truth::hungarian(&cost, 3, 3), vec![1, 0, 2]);
    // assignment ARI of a relabelled responsibility map is 1
    let r1 = Matrix::from_fn(6, 3, |i, j| if a[i] == j { 0.9 } else { 0.05 });
    let r2 = permute_cols(&r1, &[2, 0, 1]);
    assert!((change::assignment_ari(&r1, &r2).unwrap() - 1.0).abs() < 1e-12);
}

#[test]
fn relabelling_units_changes_no_metric() {
    let mut r = ChaCha8Rng::seed_from_u64(3);
    let a = Matrix::from_fn(300, 6, |_, _| r.random_range(0.0f32..1.0));
    let p = [3usize, 0, 5, 1, 4, 2];
    let ap = permute_cols(&a, &p);
    let close = |x: f64, y: f64| (x - y).abs() < 1e-9 * (1.0 + x.abs());
    assert!(close(
        activation::effective_rank(&a).unwrap(),
        activation::effective_rank(&ap).unwrap()
    ));
    assert!(close(
        activation::participation_ratio(&a).unwrap(),
        activation::participation_ratio(&ap).unwrap()
    ));
    assert!(close(
        activation::correlation_energy(&a, 1e-12).unwrap().energy,
        activation::correlation_energy(&ap, 1e-12).unwrap().energy
    ));
    assert!(close(
        activation::total_correlation(&a, 1e-12).unwrap(),
        activation::total_correlation(&ap, 1e-12).unwrap()
    ));
    assert!(close(change::linear_cka(&a, &ap).unwrap(), 1.0));
    let norm = |m: &Matrix| {
        Matrix::from_fn(m.rows(), m.cols(), |i, j| m.get(i, j) / m.row(i).iter().sum::<f32>())
    };
    let (c1, c2) = (
        competition::competition(&norm(&a)).unwrap(),
        competition::competition(&norm(&ap)).unwrap(),
    );
    assert!(
        close(c1.mutual_information, c2.mutual_information)
            && close(c1.winner_share, c2.winner_share)
    );
    let w = Matrix::from_fn(6, 2, |i, j| a.get(i, j) - 0.5);
    let b: Vec<f32> = (0..6).map(|i| a.get(i, 3) - 0.5).collect();
    let wp = Matrix::from_fn(6, 2, |i, j| w.get(p[i], j));
    let bp: Vec<f32> = (0..6).map(|i| b[p[i]]).collect();
    let (h1, h2) = (
        hyperplane::hyperplane_stats(&w, &b, 0.99, 0.01).unwrap(),
        hyperplane::hyperplane_stats(&wp, &bp, 0.99, 0.01).unwrap(),
    );
    assert!(close(h1.mean_abs_cos, h2.mean_abs_cos) && h1.duplicates == h2.duplicates);
}

#[test]
fn gradient_diagnostics() {
    assert_eq!(gradient::zero_sum_residual(&[0.5, -0.5, 1.0, -0.25], 2), 0.75);
    assert_eq!(gradient::identity_residual(&[0.2, 0.8], &[0.2, 0.8]), 0.0);
}

#[test]
fn large_n_stays_in_memory() {
    // N = 10,000: linear CKA through D×D Grams, RBF CKA streamed (no N×N matrix).
    let mut r = ChaCha8Rng::seed_from_u64(4);
    let n = 10_000;
    let x = rand_matrix(&mut r, n, 2);
    let y = Matrix::from_fn(n, 2, |i, j| x.get(i, 1 - j) * 2.0);
    assert!((change::linear_cka(&x, &y).unwrap() - 1.0).abs() < 1e-6);
    assert!((change::rbf_cka(&x, &y).unwrap() - 1.0).abs() < 1e-6);
    let big = rand_matrix(&mut r, n, 32);
    assert!(activation::effective_rank(&big).unwrap() > 30.0);
    assert!(activation::correlation_energy(&big, 1e-12).unwrap().energy < 1.0);
    let resp = Matrix::from_fn(n, 32, |_, _| 1.0 / 32.0);
    assert!(competition::competition(&resp).unwrap().mutual_information.abs() < 1e-9);
}
