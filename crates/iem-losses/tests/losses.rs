//! The implicit-EM identity, every loss / distance / volume control against finite
//! differences, gradient descent against explicit EM, and degenerate inputs.

use iem_activations::check::{Tolerance, check_directional, check_vjp};
use iem_losses::LossError;
use iem_losses::distance::{
    Affine, DiagGaussian, FullGaussian, OffsetL2, ReluDistance, SqEuclidean,
};
use iem_losses::em;
use iem_losses::loss::{Reduction, cross_entropy, lse_loss, mse, soft_cross_entropy};
use iem_losses::volume;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn rng(s: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(s)
}
fn randv(r: &mut ChaCha8Rng, n: usize, lo: f64, hi: f64) -> Vec<f64> {
    (0..n).map(|_| r.random_range(lo..hi)).collect()
}

#[test]
fn identity_grad_equals_responsibilities() {
    let mut r = rng(1);
    for &k in &[1usize, 2, 7, 64, 1024] {
        for &scale in &[1.0, 30.0, 1e4] {
            let d = randv(&mut r, 5 * k, 0.0, scale);
            let out = lse_loss(&d, k, Reduction::Sum).unwrap();
            let worst =
                out.grad.iter().zip(&out.resp).map(|(g, r)| (g - r).abs()).fold(0.0, f64::max);
            assert!(worst <= 1e-12, "f64 identity off by {worst:e} at K={k}");
            // and against finite differences of the loss itself
            let f = |d: &[f64]| vec![lse_loss(d, k, Reduction::Sum).unwrap().value];
            if k <= 64 && scale < 1e4 {
                check_vjp(f, &d, &[1.0], &out.grad, Tolerance::default()).unwrap();
            }
            let d32: Vec<f32> = d.iter().map(|&v| v as f32).collect();
            let o32 = lse_loss(&d32, k, Reduction::Sum).unwrap();
            for (a, b) in o32.grad.iter().zip(&out.resp) {
                assert!((*a as f64 - b).abs() <= 1e-6, "f32 identity at K={k}: {a} vs {b}");
            }
        }
    }
    // Mean divides by N.
    let d = [1.0f64, 2.0, 3.0, 4.0];
    let m = lse_loss(&d, 2, Reduction::Mean).unwrap();
    let s = lse_loss(&d, 2, Reduction::Sum).unwrap();
    assert!((m.value * 2.0 - s.value).abs() < 1e-12);
    assert!(m.grad.iter().zip(&s.grad).all(|(a, b)| (a * 2.0 - b).abs() < 1e-15));
}

#[test]
fn degenerate_inputs_are_typed_errors() {
    let inf = f64::INFINITY;
    assert_eq!(
        lse_loss(&[inf, inf, 1.0, 2.0], 2, Reduction::Sum).unwrap_err(),
        LossError::AllInfinite { op: "lse_loss", row: 0 }
    );
    // one +inf distance is fine: that component gets zero responsibility
    let ok = lse_loss(&[inf, 1.0], 2, Reduction::Sum).unwrap();
    assert_eq!(ok.resp, vec![0.0, 1.0]);
    assert!(matches!(
        lse_loss(&[f64::NAN, 1.0], 2, Reduction::Sum),
        Err(LossError::NonFinite { .. })
    ));
    assert!(matches!(lse_loss::<f64>(&[], 2, Reduction::Mean), Err(LossError::EmptyBatch { .. })));
    assert!(matches!(
        cross_entropy(&[0.0, 1.0], &[2], 2, Reduction::Mean),
        Err(LossError::Label { label: 2, .. })
    ));
    assert!(matches!(volume::variance(&[1.0, 2.0], 2, 1e-6), Err(LossError::TooFewSamples { .. })));
    // a constant unit: variance stays finite through ε; decorrelation excludes and reports it
    let a = [1.0, 5.0, 1.0, -2.0, 1.0, 0.5];
    let v = volume::variance(&a, 2, 1e-6).unwrap();
    assert!(v.value.is_finite() && v.grad.iter().all(|g: &f64| g.is_finite()));
    let c = volume::decorrelation(&a, 2).unwrap();
    assert_eq!(c.excluded, vec![0]);
    assert!(c.value.is_finite() && c.grad.iter().all(|g: &f64| g.is_finite()));
    // a singular W_j
    let mut fg =
        FullGaussian::<f64>::from_gaussians(2, &[vec![0.0, 0.0]], &[vec![1.0, 0.0, 0.0, 1.0]])
            .unwrap();
    fg.w[3] = 0.0;
    assert_eq!(fg.forward(&[0.0, 0.0]).unwrap_err(), LossError::Singular { component: 0 });
    assert!(
        lse_loss(&[1.0, 2.0, 3.0], 2, Reduction::Sum)
            .unwrap_err()
            .to_string()
            .contains("whole number of rows")
    );
}

#[test]
fn losses_pass_the_gradient_checker() {
    let mut r = rng(2);
    let (n, c) = (4, 5);
    let z = randv(&mut r, n * c, -3.0, 3.0);
    let labels = [0usize, 4, 2, 2];
    for red in [Reduction::Sum, Reduction::Mean] {
        let ce = cross_entropy(&z, &labels, c, red).unwrap();
        check_vjp(
            |z: &[f64]| vec![cross_entropy(z, &labels, c, red).unwrap().value],
            &z,
            &[1.0],
            &ce.grad,
            Tolerance::default(),
        )
        .unwrap();
        let q = volume::sinkhorn(&z, c, 0.5, 10).unwrap();
        let sce = soft_cross_entropy(&z, &q, c, red).unwrap();
        check_vjp(
            |z: &[f64]| vec![soft_cross_entropy(z, &q, c, red).unwrap().value],
            &z,
            &[1.0],
            &sce.grad,
            Tolerance::default(),
        )
        .unwrap();
        let t = randv(&mut r, n * c, -1.0, 1.0);
        let m = mse(&z, &t, c, red).unwrap();
        check_vjp(
            |z: &[f64]| vec![mse(z, &t, c, red).unwrap().value],
            &z,
            &[1.0],
            &m.grad,
            Tolerance::default(),
        )
        .unwrap();
    }
}

/// Checks a distance layer's input and parameter gradients against finite differences of
/// `⟨G, d(x)⟩`.
fn check_layer<L: Clone>(
    name: &str,
    layer: &L,
    x: &[f64],
    g: &[f64],
    fwd: impl Fn(&L, &[f64]) -> Vec<f64>,
    bwd: impl Fn(&L, &[f64], &[f64]) -> iem_losses::distance::Grads<f64>,
    params: impl Fn(&mut L) -> Vec<&mut Vec<f64>>,
) {
    let gr = bwd(layer, x, g);
    let f = |x: &[f64]| fwd(layer, x);
    check_vjp(f, x, g, &gr.d_x, Tolerance::default()).unwrap_or_else(|e| panic!("{name} ∂x: {e}"));
    let np = params(&mut layer.clone()).len();
    for p in 0..np {
        let p0 = params(&mut layer.clone())[p].clone();
        let fp = |v: &[f64]| {
            let mut l = layer.clone();
            *params(&mut l)[p] = v.to_vec();
            fwd(&l, x)
        };
        check_vjp(fp, &p0, g, &gr.d_params[p], Tolerance::default())
            .unwrap_or_else(|e| panic!("{name} parameter {p}: {e}"));
    }
}

#[test]
fn distances_pass_the_gradient_checker() {
    let mut r = rng(3);
    let (n, k, d) = (6, 4, 3);
    let x = randv(&mut r, n * d, -2.0, 2.0);
    let g = randv(&mut r, n * k, -1.0, 1.0);
    let mut eu = SqEuclidean::new(k, d, randv(&mut r, k * d, -2.0, 2.0));
    eu.tau = 0.7;
    check_layer(
        "SqEuclidean",
        &eu,
        &x,
        &g,
        |l, x| l.forward(x).unwrap(),
        |l, x, g| l.backward(x, g).unwrap(),
        |l| l.params_mut(),
    );
    let mut dg = DiagGaussian::new(k, d, randv(&mut r, k * d, -2.0, 2.0));
    dg.log_sigma = randv(&mut r, k * d, -0.5, 0.5);
    dg.logits = randv(&mut r, k, -1.0, 1.0);
    check_layer(
        "DiagGaussian",
        &dg,
        &x,
        &g,
        |l, x| l.forward(x).unwrap(),
        |l, x, g| l.backward(x, g).unwrap(),
        |l| l.params_mut(),
    );
    let mut fg = FullGaussian::<f64>::from_gaussians(
        d,
        &[vec![0.0; 3], vec![1.0, -1.0, 0.5]],
        &[
            vec![2.0, 0.3, 0.1, 0.3, 1.0, 0.2, 0.1, 0.2, 0.5],
            vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
        ],
    )
    .unwrap();
    fg.logits = vec![0.3, -0.2];
    let g2 = randv(&mut r, n * 2, -1.0, 1.0);
    check_layer(
        "FullGaussian",
        &fg,
        &x,
        &g2,
        |l, x| l.forward(x).unwrap(),
        |l, x, g| l.backward(x, g).unwrap(),
        |l| l.params_mut(),
    );
    let af = Affine { w: randv(&mut r, k * d, -1.0, 1.0), b: randv(&mut r, k, -1.0, 1.0), k, d };
    check_layer(
        "Affine",
        &af,
        &x,
        &g,
        |l, x| l.forward(x).unwrap(),
        |l, x, g| l.backward(x, g).unwrap(),
        |l| vec![&mut l.w, &mut l.b],
    );
    let rd =
        ReluDistance { w: randv(&mut r, k * d, -1.0, 1.0), b: randv(&mut r, k, -1.0, 1.0), k, d };
    check_layer(
        "ReluDistance",
        &rd,
        &x,
        &g,
        |l, x| l.forward(x).unwrap(),
        |l, x, g| l.backward(x, g).unwrap(),
        |l| vec![&mut l.w, &mut l.b],
    );
    let ol = OffsetL2 {
        alpha: randv(&mut r, k * d, 0.5, 1.5),
        mu: randv(&mut r, k * d, -2.0, 2.0),
        k,
        d,
    };
    check_layer(
        "OffsetL2",
        &ol,
        &x,
        &g,
        |l, x| l.forward(x).unwrap(),
        |l, x, g| l.backward(x, g).unwrap(),
        |l| vec![&mut l.alpha, &mut l.mu],
    );
    // The one-GEMM f32 path agrees with the exact distances.
    let e32 = SqEuclidean::<f32> { mu: eu.mu.iter().map(|&v| v as f32).collect(), k, d, tau: 0.7 };
    let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    let fast = e32.forward_gemm(&x32, iem_simd::Par::Seq).unwrap();
    let exact = eu.forward(&x).unwrap();
    assert!(fast.iter().zip(&exact).all(|(a, b)| (*a as f64 - b).abs() < 1e-4 * (1.0 + b)));
}

#[test]
fn volume_controls_pass_directional_checks() {
    let mut r = rng(4);
    let (n, k) = (9, 4);
    let a = randv(&mut r, n * k, -2.0, 2.0);
    let tol = Tolerance::default();
    let p = volume::variance(&a, k, 1e-3).unwrap();
    check_directional(
        |a: &[f64]| volume::variance(a, k, 1e-3).unwrap().value,
        &a,
        &p.grad,
        6,
        1,
        tol,
    )
    .unwrap();
    let p = volume::decorrelation(&a, k).unwrap();
    check_directional(
        |a: &[f64]| volume::decorrelation(a, k).unwrap().value,
        &a,
        &p.grad,
        6,
        2,
        tol,
    )
    .unwrap();
    let p = volume::logdet_cov(&a, k, 1e-3).unwrap();
    check_directional(
        |a: &[f64]| volume::logdet_cov(a, k, 1e-3).unwrap().value,
        &a,
        &p.grad,
        6,
        3,
        tol,
    )
    .unwrap();
    let p = volume::vicreg_std(&a, k, 3.0, 1e-4).unwrap();
    check_directional(
        |a: &[f64]| volume::vicreg_std(a, k, 3.0, 1e-4).unwrap().value,
        &a,
        &p.grad,
        6,
        4,
        tol,
    )
    .unwrap();
    // responsibilities (rows on the simplex) for the usage penalties
    let d = randv(&mut r, n * k, 0.0, 3.0);
    let resp = lse_loss(&d, k, Reduction::Sum).unwrap().resp;
    for (name, f) in [
        (
            "balance",
            volume::balance_kl::<f64>
                as fn(&[f64], usize) -> iem_losses::Result<volume::Penalty<f64>>,
        ),
        ("usage_entropy", volume::usage_entropy::<f64>),
        ("mutual_information", volume::mutual_information::<f64>),
    ] {
        let p = f(&resp, k).unwrap();
        check_directional(|x: &[f64]| f(x, k).unwrap().value, &resp, &p.grad, 6, 5, tol)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        // chained back to the distances: through r = softmax(−d)
        let gd = volume::chain_resp_to_d(&resp, &p.grad, k);
        let fd = |d: &[f64]| f(&lse_loss(d, k, Reduction::Sum).unwrap().resp, k).unwrap().value;
        check_directional(fd, &d, &gd, 6, 6, tol).unwrap_or_else(|e| panic!("{name} via d: {e}"));
    }
    let w = randv(&mut r, 3 * 5, -1.0, 1.0);
    let p = volume::orthogonality(&w, 3, 5).unwrap();
    check_directional(
        |w: &[f64]| volume::orthogonality(w, 3, 5).unwrap().value,
        &w,
        &p.grad,
        6,
        7,
        tol,
    )
    .unwrap();
    // weight norm backward
    let gamma = [1.5, 0.5, 2.0];
    let gw = randv(&mut r, 15, -1.0, 1.0);
    let (dv, dg) = volume::weight_norm_backward(&w, &gamma, &gw, 5);
    check_vjp(|v: &[f64]| volume::weight_norm(v, &gamma, 5), &w, &gw, &dv, tol).unwrap();
    check_vjp(|g: &[f64]| volume::weight_norm(&w, g, 5), &gamma, &gw, &dg, tol).unwrap();
    // Sinkhorn equalises column mass
    let q = volume::sinkhorn(&d, k, 0.3, 50).unwrap();
    for j in 0..k {
        let m: f64 = (0..n).map(|i| q[i * k + j]).sum();
        assert!((m - n as f64 / k as f64).abs() < 1e-3, "column {j} mass {m}");
    }
    // the balance penalty of uniform usage is 0, of one-hot usage log K
    let uni = vec![0.25; 8];
    assert!(volume::balance_kl(&uni, 4).unwrap().value.abs() < 1e-12);
    let hot = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0];
    assert!((volume::balance_kl(&hot, 4).unwrap().value - 4f64.ln()).abs() < 1e-12);
}

/// Three well-separated 2-D blobs, seeded.
fn blobs(seed: u64, per: usize) -> Vec<f64> {
    let mut r = rng(seed);
    let centres = [(-3.0, 0.0), (3.0, 0.5), (0.0, 4.0)];
    let mut x = Vec::new();
    for &(cx, cy) in &centres {
        for _ in 0..per {
            let (u, v): (f64, f64) = (r.random_range(-1.0..1.0), r.random_range(-1.0..1.0));
            x.push(cx + 0.6 * u);
            x.push(cy + 0.6 * v);
        }
    }
    x
}

#[test]
fn gradient_step_with_per_prototype_rate_is_an_em_step() {
    let x = blobs(5, 40);
    let d = 2;
    let tau = 0.8;
    let mu0 = vec![-1.0, 0.0, 1.0, 0.0, 0.0, 1.0];
    let mut mu = mu0.clone();
    let em_run = em::soft_kmeans(&x, d, &mu0, tau, 5).unwrap();
    let mut em_mu = mu0.clone();
    for step in 0..5 {
        // one explicit EM step
        em_mu = em::soft_kmeans(&x, d, &em_mu, tau, 1).unwrap().mu;
        // one gradient step on the summed LSE loss with rate τ/N_j
        let layer = SqEuclidean { mu: mu.clone(), k: 3, d, tau };
        let dist = layer.forward(&x).unwrap();
        let l = lse_loss(&dist, 3, Reduction::Sum).unwrap();
        let g = layer.backward(&x, &l.grad).unwrap();
        for j in 0..3 {
            let nj: f64 = (0..x.len() / d).map(|i| l.resp[i * 3 + j]).sum();
            for c in 0..d {
                mu[j * d + c] -= tau / nj * g.d_params[0][j * d + c];
            }
        }
        let diff = mu.iter().zip(&em_mu).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(diff < 1e-12, "step {step}: GD and EM differ by {diff:e}");
    }
    assert!((em_run.mu.iter().zip(&em_mu).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max)) < 1e-12);
    // EM's objective never decreases
    assert!(em_run.trace.windows(2).all(|w| w[1] >= w[0] - 1e-9));
}

#[test]
fn ordinary_gradient_descent_reaches_em_fixed_point() {
    let x = blobs(6, 30);
    let d = 2;
    let tau = 0.5;
    let mu0 = vec![-2.0, 1.0, 2.0, 1.0, 0.5, 3.0];
    let em_fit = em::soft_kmeans(&x, d, &mu0, tau, 300).unwrap();
    let mut mu = mu0.clone();
    let n = x.len() / d;
    for _ in 0..3000 {
        let layer = SqEuclidean { mu: mu.clone(), k: 3, d, tau };
        let l = lse_loss(&layer.forward(&x).unwrap(), 3, Reduction::Mean).unwrap();
        let g = layer.backward(&x, &l.grad).unwrap();
        for (m, gg) in mu.iter_mut().zip(&g.d_params[0]) {
            *m -= 0.5 * gg;
        }
    }
    // match up to relabelling
    let mut best = f64::INFINITY;
    for perm in [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]] {
        let dist = (0..3)
            .map(|j| {
                (0..d)
                    .map(|c| (mu[j * d + c] - em_fit.mu[perm[j] * d + c]).powi(2))
                    .sum::<f64>()
                    .sqrt()
            })
            .fold(0.0, f64::max);
        best = best.min(dist);
    }
    assert!(best < 1e-4, "GD and EM fixed points differ by {best:e} (n = {n})");
}

#[test]
fn full_covariance_lse_equals_em_loglik() {
    let x = blobs(7, 50);
    let d = 2;
    let init = em::FullGmm {
        means: vec![vec![-2.0, 0.0], vec![2.0, 0.0], vec![0.0, 3.0]],
        covs: vec![vec![1.0, 0.0, 0.0, 1.0]; 3],
        weights: vec![1.0 / 3.0; 3],
    };
    let (fit, trace) = em::full_gmm(&x, d, &init, 50, 1e-6).unwrap();
    assert!(trace.windows(2).all(|w| w[1] >= w[0] - 1e-8), "EM log-likelihood must not decrease");
    let mut layer = FullGaussian::<f64>::from_gaussians(d, &fit.means, &fit.covs).unwrap();
    layer.logits = fit.weights.iter().map(|w| w.ln()).collect();
    let e = layer.forward(&x).unwrap();
    let lse = lse_loss(&e, 3, Reduction::Sum).unwrap();
    let n = (x.len() / d) as f64;
    let nll = -fit.loglik(&x, d).unwrap();
    let diff = (lse.value - (nll - n * (d as f64 / 2.0) * (2.0 * std::f64::consts::PI).ln())).abs();
    assert!(diff < 1e-8 * nll.abs(), "LSE {} vs NLL − (D/2)log2π·N: diff {diff:e}", lse.value);
    // the diagonal case: the same identity through DiagGaussian
    let dinit = DiagGaussian::new(3, d, vec![-2.0, 0.0, 2.0, 0.0, 0.0, 3.0]);
    let (dfit, dtrace) = em::diag_gmm(&x, &dinit, 50, 1e-6).unwrap();
    assert!(dtrace.windows(2).all(|w| w[1] >= w[0] - 1e-8));
    let de = lse_loss(&dfit.forward(&x).unwrap(), 3, Reduction::Sum).unwrap();
    let dll = em::diag_loglik(&x, &dfit).unwrap();
    assert!(
        (de.value + dll + n * (d as f64 / 2.0) * (2.0 * std::f64::consts::PI).ln()).abs()
            < 1e-8 * dll.abs()
    );
}
