//! Every activation against f64 finite differences (Jacobian, vjp, jvp, parameter
//! gradients), the f32 batched path against the f64 reference, the stated properties, kink
//! and tie conventions, extreme inputs, and snapshots of small Jacobians.

use iem_activations::check::{self, Tolerance};
use iem_activations::{Activation, Temperature};
use iem_tensor::{Matrix, Par};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

const WIDTHS: [usize; 5] = [1, 2, 7, 64, 1024];

/// Every activation at width `k`, with grouped ones at group sizes 1, 2 (when it divides)
/// and `k`.
fn all_at(k: usize) -> Vec<Activation> {
    let mut v = Activation::all(k);
    if k == 1 {
        // The triangle code at K = 1 is identically 0, sitting on its kink everywhere.
        v.retain(|a| *a != Activation::Triangle);
    }
    for m in [1, k] {
        v.push(Activation::GroupedSoftmax { group: m, tau: 0.8 });
        v.push(Activation::GroupedSolu { group: m });
        v.push(Activation::Lwta { block: m });
        v.push(Activation::Maxout { block: m });
    }
    v.push(Activation::Softmax { temperature: Temperature::Fixed(2.5) });
    v
}

fn params_f64(act: &Activation, k: usize, r: &mut ChaCha8Rng) -> Vec<f64> {
    match act {
        Activation::Softmax { temperature: Temperature::Learned(_) } => {
            vec![r.random_range(-0.5..0.5)]
        }
        Activation::LayerNorm { .. } => (0..2 * k).map(|_| r.random_range(-1.5..1.5)).collect(),
        _ => Vec::new(),
    }
}

/// A random input at least `gap` away from every kink and tie.
fn input_away_from_kinks(act: &Activation, p: &[f64], k: usize, r: &mut ChaCha8Rng) -> Vec<f64> {
    let scale = if matches!(act, Activation::Sparsemax | Activation::Entmax15) { 0.5 } else { 3.0 };
    let gap = 1e-3 / (k as f64).max(1.0).sqrt();
    for _ in 0..1000 {
        let z: Vec<f64> = (0..k).map(|_| r.random_range(-scale..scale)).collect();
        if act.kink_distance(&z, p) > gap {
            return z;
        }
    }
    panic!("no kink-free input found for {}", act.name());
}

fn tol_for(k: usize) -> Tolerance {
    Tolerance { rtol: 1e-6, atol: 1e-8 * (k as f64).sqrt().max(1.0), ..Tolerance::default() }
}

#[test]
fn finite_differences_every_activation() {
    let mut r = ChaCha8Rng::seed_from_u64(11);
    for &k in &WIDTHS {
        for act in all_at(k) {
            if act.validate(k).is_err() {
                continue;
            }
            let p = params_f64(&act, k, &mut r);
            let z = input_away_from_kinks(&act, &p, k, &mut r);
            let f = |z: &[f64]| act.forward_f64(&p, z).unwrap();
            let kout = act.output_width(k);
            let tol = tol_for(k);
            let name = format!("{} at K={k}", act.name());
            // Full Jacobian (skipped at K = 1024 for the O(K log K) ones: vjp/jvp cover them).
            if k <= 64
                || !matches!(
                    act,
                    Activation::Sparsemax | Activation::Entmax15 | Activation::TopK { .. }
                )
            {
                let j = act.jacobian(&p, &z).unwrap();
                check::check_jacobian(f, &z, &j, tol).unwrap_or_else(|e| panic!("{name}: {e}"));
            }
            let g: Vec<f64> = (0..kout).map(|_| r.random_range(-1.0..1.0)).collect();
            let (dz, dp) = act.vjp_f64(&p, &z, &g).unwrap();
            check::check_vjp(f, &z, &g, &dz, tol).unwrap_or_else(|e| panic!("{name} vjp: {e}"));
            let v: Vec<f64> = (0..k).map(|_| r.random_range(-1.0..1.0)).collect();
            let jv = act.jvp_f64(&p, &z, &v).unwrap();
            check::check_jvp(f, &z, &v, &jv, tol).unwrap_or_else(|e| panic!("{name} jvp: {e}"));
            if !p.is_empty() {
                let fp = |p: &[f64]| act.forward_f64(p, &z).unwrap();
                check::check_vjp(fp, &p, &g, &dp, tol)
                    .unwrap_or_else(|e| panic!("{name} parameter gradient: {e}"));
            }
        }
    }
}

#[test]
fn negative_control_wrong_jacobian_fails() {
    let act = Activation::Softmax { temperature: Temperature::Fixed(1.0) };
    let z = [0.3, -0.2, 1.1];
    let f = |z: &[f64]| act.forward_f64(&[], z).unwrap();
    let mut j = act.jacobian(&[], &z).unwrap();
    j[5] += 1e-3; // row 1, column 2
    let e = check::check_jacobian(f, &z, &j, Tolerance::default()).unwrap_err();
    assert_eq!((e.row, e.col), (1, 2), "{e}");
    assert!(e.to_string().contains("row 1, column 2"));
    // A wrong vjp (SoLU's forgetting its off-diagonal term) fails too.
    let solu = Activation::Solu;
    let fs = |z: &[f64]| solu.forward_f64(&[], z).unwrap();
    let g = [1.0, -0.5, 0.25];
    let (dz, _) = solu.vjp_f64(&[], &z, &g).unwrap();
    let s =
        Activation::Softmax { temperature: Temperature::Fixed(1.0) }.forward_f64(&[], &z).unwrap();
    let wrong: Vec<f64> = (0..3).map(|i| g[i] * s[i]).collect();
    assert!(check::check_vjp(fs, &z, &g, &dz, Tolerance::default()).is_ok());
    assert!(check::check_vjp(fs, &z, &g, &wrong, Tolerance::default()).is_err());
    // And a wrong directional gradient.
    let q = |x: &[f64]| x.iter().map(|v| v * v).sum::<f64>();
    let x = [1.0, 2.0, -3.0];
    assert!(check::check_directional(q, &x, &[2.0, 4.0, -6.0], 4, 1, Tolerance::default()).is_ok());
    assert!(
        check::check_directional(q, &x, &[2.0, 4.0, -6.1], 4, 1, Tolerance::default()).is_err()
    );
}

fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

#[test]
fn f32_batch_matches_f64_reference() {
    let mut r = ChaCha8Rng::seed_from_u64(12);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    for &k in &WIDTHS {
        for act in all_at(k) {
            if act.validate(k).is_err() {
                continue;
            }
            let n = 5;
            let p64 = params_f64(&act, k, &mut r);
            let p32 = to_f32(&p64);
            let p64: Vec<f64> = p32.iter().map(|&v| v as f64).collect();
            let kout = act.output_width(k);
            let mut z = Vec::new();
            for _ in 0..n {
                z.extend(to_f32(&input_away_from_kinks(&act, &p64, k, &mut r)));
            }
            let g: Vec<f32> = (0..n * kout).map(|_| r.random_range(-1.0..1.0)).collect();
            let v: Vec<f32> = (0..n * k).map(|_| r.random_range(-1.0..1.0)).collect();
            let zm = Matrix::from_vec(n, k, z.clone()).unwrap();
            let gm = Matrix::from_vec(n, kout, g.clone()).unwrap();
            let vm = Matrix::from_vec(n, k, v.clone()).unwrap();
            let fwd = act.forward(&p32, &zm, Par::Seq).unwrap();
            let grads = act.vjp(&p32, &zm, &fwd, &gm, Par::Seq).unwrap();
            let jv = act.jvp(&p32, &zm, &fwd, &vm).unwrap();
            let tol = 2e-5 * (k as f64).sqrt().max(1.0);
            let mut dp_ref = vec![0.0f64; p64.len()];
            for i in 0..n {
                let zr: Vec<f64> = z[i * k..(i + 1) * k].iter().map(|&x| x as f64).collect();
                let gr: Vec<f64> = g[i * kout..(i + 1) * kout].iter().map(|&x| x as f64).collect();
                let vr: Vec<f64> = v[i * k..(i + 1) * k].iter().map(|&x| x as f64).collect();
                let out = act.forward_f64(&p64, &zr).unwrap();
                let (dz, dp) = act.vjp_f64(&p64, &zr, &gr).unwrap();
                let jvr = act.jvp_f64(&p64, &zr, &vr).unwrap();
                dp_ref.iter_mut().zip(&dp).for_each(|(a, b)| *a += b);
                for (what, got, want) in [
                    ("forward", fwd.out.row(i), &out),
                    ("vjp", grads.dz.row(i), &dz),
                    ("jvp", jv.row(i), &jvr),
                ] {
                    for (j, (&a, &b)) in got.iter().zip(want.iter()).enumerate() {
                        assert!(
                            (a as f64 - b).abs() <= tol * (1.0 + b.abs()),
                            "{} K={k} {what}[{i},{j}]: f32 {a} vs f64 {b}",
                            act.name()
                        );
                    }
                }
            }
            for (a, b) in grads.dparams.iter().zip(&dp_ref) {
                assert!(
                    (*a as f64 - b).abs() <= tol * n as f64 * (1.0 + b.abs()),
                    "{} K={k} dparams {a} vs {b}",
                    act.name()
                );
            }
            // Deterministic across thread counts.
            let (fwd2, grads2) = pool.install(|| {
                let f = act.forward(&p32, &zm, Par::Rayon(2)).unwrap();
                let g2 = act.vjp(&p32, &zm, &f, &gm, Par::Rayon(2)).unwrap();
                (f, g2)
            });
            assert_eq!(fwd, fwd2, "{} forward differs with 2 threads", act.name());
            assert_eq!(grads, grads2, "{} vjp differs with 2 threads", act.name());
        }
    }
}

#[test]
fn zero_sum_flag_is_accurate_both_ways() {
    let mut r = ChaCha8Rng::seed_from_u64(13);
    let k = 8;
    for act in all_at(k) {
        if act.validate(k).is_err()
            || matches!(act, Activation::Maxout { .. }) && act.output_width(k) == k
        {
            continue;
        }
        let p = params_f64(&act, k, &mut r);
        let mut max_sum = 0.0f64;
        for _ in 0..20 {
            let z = input_away_from_kinks(&act, &p, k, &mut r);
            let g: Vec<f64> = (0..act.output_width(k)).map(|_| r.random_range(-1.0..1.0)).collect();
            let (dz, _) = act.vjp_f64(&p, &z, &g).unwrap();
            max_sum = max_sum.max(dz.iter().sum::<f64>().abs());
        }
        if act.zero_sum() {
            assert!(max_sum < 1e-12, "{} claims zero-sum but Σ dz = {max_sum:e}", act.name());
        } else {
            assert!(max_sum > 1e-3, "{} claims not zero-sum but Σ dz ≤ {max_sum:e}", act.name());
        }
    }
}

#[test]
fn properties() {
    let mut r = ChaCha8Rng::seed_from_u64(14);
    let sm = Activation::Softmax { temperature: Temperature::Fixed(1.0) };
    for &k in &WIDTHS {
        let z: Vec<f64> = (0..k).map(|_| r.random_range(-5.0..5.0)).collect();
        let s = sm.forward_f64(&[], &z).unwrap();
        assert!((s.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        let g: Vec<f64> = (0..k).map(|_| r.random_range(-1.0..1.0)).collect();
        assert!(sm.vjp_f64(&[], &z, &g).unwrap().0.iter().sum::<f64>().abs() < 1e-12);
        // log-softmax is shift-invariant
        let zc: Vec<f64> = z.iter().map(|v| v + 17.5).collect();
        let (a, b) = (
            Activation::LogSoftmax.forward_f64(&[], &z).unwrap(),
            Activation::LogSoftmax.forward_f64(&[], &zc).unwrap(),
        );
        assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-12));
        // grouped softmax with m = K equals softmax
        let gs = Activation::GroupedSoftmax { group: k, tau: 1.0 }.forward_f64(&[], &z).unwrap();
        assert!(gs.iter().zip(&s).all(|(x, y)| (x - y).abs() < 1e-15));
        // sparsemax lands on the simplex
        let sp = Activation::Sparsemax.forward_f64(&[], &z).unwrap();
        assert!((sp.iter().sum::<f64>() - 1.0).abs() < 1e-12 && sp.iter().all(|&v| v >= 0.0));
        let en = Activation::Entmax15.forward_f64(&[], &z).unwrap();
        assert!((en.iter().sum::<f64>() - 1.0).abs() < 1e-9 && en.iter().all(|&v| v >= 0.0));
    }
    // grouped softmax → LWTA as τ → 0 on untied inputs (LWTA's mask times... : the winner gets 1)
    let z = [0.3, 1.2, -0.4, 0.9, 2.0, 1.9];
    let hard = Activation::Lwta { block: 3 }.forward_f64(&[], &z).unwrap();
    let mut prev = f64::INFINITY;
    for tau in [1.0, 0.1, 0.01, 0.001] {
        let soft = Activation::GroupedSoftmax { group: 3, tau }.forward_f64(&[], &z).unwrap();
        let mask: Vec<f64> = hard.iter().map(|&h| if h != 0.0 { 1.0 } else { 0.0 }).collect();
        let d = soft.iter().zip(&mask).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(d <= prev, "distance to LWTA's winner mask must shrink as τ → 0");
        prev = d;
    }
    assert!(prev < 1e-20);
}

#[test]
fn kink_and_tie_conventions() {
    let z = [0.0, 1.0, 1.0, -1.0];
    let g = [1.0, 1.0, 1.0, 1.0];
    assert_eq!(Activation::Relu.vjp_f64(&[], &z, &g).unwrap().0, vec![0.0, 1.0, 1.0, 0.0]);
    assert_eq!(Activation::Abs.vjp_f64(&[], &z, &g).unwrap().0, vec![0.0, 1.0, 1.0, -1.0]);
    // ties to the lowest index
    assert_eq!(
        Activation::Lwta { block: 4 }.forward_f64(&[], &z).unwrap(),
        vec![0.0, 1.0, 0.0, 0.0]
    );
    assert_eq!(
        Activation::Maxout { block: 4 }.vjp_f64(&[], &z, &[1.0]).unwrap().0,
        vec![0.0, 1.0, 0.0, 0.0]
    );
    assert_eq!(
        Activation::TopK { k: 2 }.forward_f64(&[], &[2.0, 1.0, 1.0, 1.0]).unwrap(),
        vec![2.0, 1.0, 0.0, 0.0]
    );
    // sparsemax support is {a > 0}: a unit exactly at the threshold gets no gradient
    let sp = Activation::Sparsemax;
    let a = sp.forward_f64(&[], &[1.0, 0.0, -1.0]).unwrap();
    assert_eq!(a, vec![1.0, 0.0, 0.0]);
    assert_eq!(
        sp.vjp_f64(&[], &[1.0, 0.0, -1.0], &[1.0, 2.0, 3.0]).unwrap().0,
        vec![0.0, 0.0, 0.0]
    );
    // triangle: the unit at the mean is at its kink and gets derivative 0
    let t = Activation::Triangle;
    let d = [0.0, 1.0, 2.0];
    assert_eq!(t.forward_f64(&[], &d).unwrap(), vec![1.0, 0.0, 0.0]);
    let (dz, _) = t.vjp_f64(&[], &d, &[1.0, 1.0, 1.0]).unwrap();
    assert_eq!(dz, vec![1.0 / 3.0 - 1.0, 1.0 / 3.0, 1.0 / 3.0]);
    // an all −inf softmax row is uniform
    let u = Activation::Softmax { temperature: Temperature::Fixed(1.0) }
        .forward_f64(&[], &[f64::NEG_INFINITY; 4])
        .unwrap();
    assert_eq!(u, vec![0.25; 4]);
}

#[test]
fn extreme_inputs_stay_finite() {
    for &big in &[80.0f32, 1e4] {
        for &k in &[2usize, 7, 64] {
            let z: Vec<f32> = (0..2 * k)
                .map(|i| if i % 3 == 0 { big } else { -big * (i % 5) as f32 / 5.0 })
                .collect();
            let zm = Matrix::from_vec(2, k, z).unwrap();
            for act in Activation::all(k) {
                let p = act.init_params(k);
                let fwd = act.forward(&p, &zm, Par::Seq).unwrap();
                let g = Matrix::filled(2, act.output_width(k), 0.5);
                let gr = act.vjp(&p, &zm, &fwd, &g, Par::Seq).unwrap();
                let jv = act.jvp(&p, &zm, &fwd, &zm.map(|_| 1.0)).unwrap();
                for (what, m) in [("forward", &fwd.out), ("vjp", &gr.dz), ("jvp", &jv)] {
                    assert!(
                        m.check_finite(what).is_ok(),
                        "{} at ±{big}, K={k}: {what} not finite",
                        act.name()
                    );
                }
                assert!(
                    gr.dparams.iter().all(|v| v.is_finite()),
                    "{} dparams at ±{big}",
                    act.name()
                );
            }
        }
    }
}

#[test]
fn bad_configs_and_shapes_are_errors() {
    assert!(Activation::GroupedSoftmax { group: 3, tau: 1.0 }.validate(8).is_err());
    assert!(Activation::TopK { k: 9 }.validate(8).is_err());
    assert!(Activation::Softmax { temperature: Temperature::Fixed(0.0) }.validate(8).is_err());
    assert!(Activation::Relu.validate(0).is_err());
    let z = Matrix::zeros(2, 6);
    let e = Activation::Maxout { block: 4 }.forward(&[], &z, Par::Seq).unwrap_err();
    assert!(e.to_string().contains("group size 4 must divide the width 6"), "{e}");
    let e = Activation::LayerNorm { eps: 1e-5 }.forward(&[], &z, Par::Seq).unwrap_err();
    assert!(e.to_string().contains("expected 12 parameters, got 0"), "{e}");
    let fwd = Activation::Relu.forward(&[], &z, Par::Seq).unwrap();
    assert!(Activation::Relu.vjp(&[], &z, &fwd, &Matrix::zeros(3, 6), Par::Seq).is_err());
    // specs reject unknown fields
    let bad =
        serde_json::from_str::<Activation>(r#"{"kind":"grouped_softmax","group":2,"taux":1.0}"#);
    assert!(bad.unwrap_err().to_string().contains("taux"));
    let ok: Activation = serde_json::from_str(r#"{"kind":"grouped_softmax","group":2}"#).unwrap();
    assert_eq!(ok, Activation::GroupedSoftmax { group: 2, tau: 1.0 });
}

fn fmt_jacobian(act: &Activation, z: &[f64]) -> String {
    let k = z.len();
    let p: Vec<f64> = act.init_params(k).iter().map(|&v| v as f64).collect();
    let j = act.jacobian(&p, z).unwrap();
    let mut s = format!("{} (zero-sum: {})\n", act.name(), act.zero_sum());
    for r in 0..act.output_width(k) {
        let row: Vec<String> = (0..k)
            .map(|c| {
                let v = (j[r * k + c] * 1e4).round() / 1e4;
                format!("{:>8.4}", if v == 0.0 { 0.0 } else { v })
            })
            .collect();
        s.push_str(&row.join(" "));
        s.push('\n');
    }
    s
}

#[test]
fn jacobian_snapshots() {
    let z = [0.6, -0.3, 1.4, 0.1];
    let mut all = String::new();
    for act in Activation::all(4) {
        all.push_str(&fmt_jacobian(&act, &z));
        all.push('\n');
    }
    insta::assert_snapshot!("jacobians_at_fixed_input", all);
}

/// The in-place forms give the two-buffer path's bits (specials included: NaN, ±0, ±Inf in
/// the input), on 1 or 2 threads; activations without them say so with a config error.
#[test]
fn in_place_forms_match_the_two_buffer_path() {
    assert!(Activation::Relu.in_place() && Activation::LogSoftmax.in_place());
    let mut r = ChaCha8Rng::seed_from_u64(71);
    let bits = |m: &Matrix| m.as_slice().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    let specials = [f32::NAN, -0.0, 0.0, f32::INFINITY, f32::NEG_INFINITY];
    for k in WIDTHS {
        for act in all_at(k) {
            let n = 5;
            let mut z = Matrix::from_fn(n, k, |_, _| r.random_range(-3.0f32..3.0));
            for (i, &sp) in specials.iter().enumerate() {
                let (row, col) = (i % n, (i * 7) % k);
                z.set(row, col, sp);
            }
            let g = Matrix::from_fn(n, act.output_width(k), |_, _| r.random_range(-1.0f32..1.0));
            if !act.in_place() {
                let e = act.forward_in_place(&mut z.clone(), Par::Seq).unwrap_err();
                assert!(e.to_string().contains("no in-place form"), "{e}");
                let e = act.vjp_from_output(&z, &g, &mut Matrix::zeros(0, 0), Par::Seq);
                assert!(e.unwrap_err().to_string().contains("no in-place form"));
                continue;
            }
            let p = vec![0.0f32; act.num_params(k)];
            let (mut out, mut aux) = (Matrix::zeros(0, 0), Matrix::zeros(0, 0));
            act.forward_parts(&p, &z, &mut out, &mut aux, Par::Seq).unwrap();
            let (mut dz, mut dp) = (Matrix::zeros(0, 0), Vec::new());
            act.vjp_parts(&p, &z, &out, &aux, &g, &mut dz, &mut dp, Par::Seq).unwrap();
            for par in [Par::Seq, Par::Rayon(2)] {
                let mut zy = z.clone();
                act.forward_in_place(&mut zy, par).unwrap();
                assert_eq!(bits(&zy), bits(&out), "{} forward at width {k}", act.name());
                let mut d = Matrix::filled(1, 1, 9.0);
                act.vjp_from_output(&zy, &g, &mut d, par).unwrap();
                assert_eq!(bits(&d), bits(&dz), "{} vjp at width {k}", act.name());
            }
            let e = act.vjp_from_output(&out, &Matrix::zeros(n + 1, k), &mut dz, Par::Seq);
            assert!(e.is_err(), "a gradient of the wrong shape is an error");
        }
    }
}
