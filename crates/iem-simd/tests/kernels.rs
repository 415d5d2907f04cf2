//! Every kernel against the f64 reference on an edge-size grid, property tests, extreme
//! inputs, and bit-identical results for 1 and 2 threads. Run once per instruction set:
//! `IEM_SIMD=scalar|avx2|avx512 cargo test -p iem-simd` (`.ci/run` does).

use iem_simd::{Gemm, Isa, Par, elementwise as ew, math, panel, reference as rf, rows};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

fn randv(r: &mut ChaCha8Rng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| r.random_range(lo..hi)).collect()
}

fn f64s(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

/// 0, 1, lanes−1, lanes, lanes+1 for every lane count we compile, odd sizes, large.
fn sizes() -> Vec<usize> {
    let mut v = vec![0, 1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 65, 127, 513, 1025];
    v.sort();
    v.dedup();
    v
}

fn assert_close(op: &str, got: &[f32], want: &[f64], rtol: f64, atol: f64) {
    assert_eq!(got.len(), want.len(), "{op}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs();
        assert!(
            err <= atol + rtol * w.abs(),
            "{op}: entry {i}: got {g}, want {w} (err {err:e}) under {}",
            Isa::current()
        );
    }
}

#[test]
fn forced_isa_is_active() {
    // Fails when IEM_SIMD forces a path this machine does not have (or an unknown name).
    match std::env::var("IEM_SIMD") {
        Ok(v) if !v.trim().is_empty() => {
            let want = Isa::parse(&v).expect("IEM_SIMD names an instruction set");
            let got = Isa::try_current().unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(got, want);
        }
        _ => assert_eq!(Isa::current(), Isa::best()),
    }
}

#[test]
fn isa_parse_rejects_unknown() {
    assert!(Isa::parse("sse9").is_err());
    assert_eq!(Isa::parse("AVX2"), Ok(Isa::Avx2));
    assert!(Isa::available().contains(&Isa::Scalar));
}

#[test]
fn exp_error_bound() {
    let mut x: Vec<f32> = (0..200_001).map(|i| -87.3 + 176.0 * i as f32 / 200_000.0).collect();
    let mut r = rng(1);
    x.extend(randv(&mut r, 10_001, -20.0, 20.0));
    let mut out = vec![0.0; x.len()];
    ew::exp(&x, &mut out, Par::Seq);
    let mut worst = 0.0f64;
    for (&xi, &o) in x.iter().zip(&out) {
        let w = (xi as f64).exp();
        worst = worst.max(((o as f64) - w).abs() / w);
    }
    assert!(worst < math::EXP_MAX_REL_ERR, "exp max rel err {worst:e} under {}", Isa::current());
}

#[test]
fn exp_special_values() {
    let x = [f32::NEG_INFINITY, -1e4, -88.0, 0.0, 89.0, 1e4, f32::INFINITY, f32::NAN, 88.7];
    let mut out = [0.0f32; 9];
    ew::exp(&x, &mut out, Par::Seq);
    assert_eq!(&out[..4], &[0.0, 0.0, 0.0, 1.0]);
    assert_eq!(&out[4..7], &[f32::INFINITY; 3]);
    assert!(out[7].is_nan());
    assert!(out[8].is_finite() && ((out[8] as f64) / (88.7f32 as f64).exp() - 1.0).abs() < 1e-6);
}

/// `vexp` and `vexp_nonpos` of every element, under the current instruction set.
struct BothExp<'a> {
    x: &'a [f32],
    full: &'a mut [f32],
    nonpos: &'a mut [f32],
}

impl iem_simd::simd::Kernel for BothExp<'_> {
    type Output = ();
    fn run<S: iem_simd::simd::Simd>(self, s: S) {
        let (l, n) = (S::LANES, self.x.len());
        let mut i = 0;
        while i + l <= n {
            let v = s.load(&self.x[i..]);
            s.store(&mut self.full[i..], math::vexp(s, v));
            s.store(&mut self.nonpos[i..], math::vexp_nonpos(s, v));
            i += l;
        }
        if i < n {
            let v = s.load_partial(&self.x[i..], 0.0);
            s.store_partial(&mut self.full[i..], math::vexp(s, v));
            s.store_partial(&mut self.nonpos[i..], math::vexp_nonpos(s, v));
        }
    }
}

#[test]
fn exp_of_non_positive_inputs_has_the_bits_of_exp() {
    // The softmax family's shifted exponents go through `vexp_nonpos`: on x ≤ 0 (and NaN) it
    // must give exactly `vexp`'s bits.
    let mut x: Vec<f32> = (0..200_001).map(|i| -100.0 * i as f32 / 200_000.0).collect();
    let mut r = rng(21);
    x.extend(randv(&mut r, 20_001, -90.0, 0.0));
    x.extend((0..2_000).map(|_| -(10f32.powf(r.random_range(-45.0f32..38.0)))));
    let lo = -87.336_54f32;
    x.extend([0.0, -0.0, f32::NEG_INFINITY, f32::NAN, -f32::MIN_POSITIVE, -1e-45, f32::MIN]);
    x.extend([lo, f32::from_bits(lo.to_bits() + 1), f32::from_bits(lo.to_bits() - 1)]);
    let (mut full, mut nonpos) = (vec![0.0f32; x.len()], vec![0.0f32; x.len()]);
    iem_simd::simd::run(BothExp { x: &x, full: &mut full, nonpos: &mut nonpos });
    for ((xi, a), b) in x.iter().zip(&full).zip(&nonpos) {
        assert!(
            a.to_bits() == b.to_bits() || a.is_nan() && b.is_nan(),
            "exp({xi:e}): vexp {a:e}, vexp_nonpos {b:e} under {}",
            Isa::current()
        );
    }
}

#[test]
fn ln_error_bound() {
    let mut r = rng(2);
    let mut x: Vec<f32> = (0..100_000).map(|i| 1e-3 + 10.0 * i as f32 / 100_000.0).collect();
    x.extend((0..20_000).map(|_| 10f32.powf(r.random_range(-44.0f32..38.0))));
    x.extend([f32::MIN_POSITIVE, 1e-45, 3.0e38, 1.0]);
    let mut out = vec![0.0; x.len()];
    ew::ln(&x, &mut out, Par::Seq);
    let (mut abs, mut rel) = (0.0f64, 0.0f64);
    for (&xi, &o) in x.iter().zip(&out) {
        let w = (xi as f64).ln();
        let e = ((o as f64) - w).abs();
        abs = abs.max(e.min(e / w.abs().max(1.0)));
        if w.abs() >= 1e-3 {
            rel = rel.max(e / w.abs());
        }
    }
    assert!(abs < math::LN_MAX_ABS_ERR, "ln abs err {abs:e}");
    assert!(rel < math::LN_MAX_REL_ERR, "ln rel err {rel:e}");
    let sp = [0.0f32, -1.0, f32::INFINITY, f32::NAN];
    let mut o = [0.0f32; 4];
    ew::ln(&sp, &mut o, Par::Seq);
    assert_eq!(o[0], f32::NEG_INFINITY);
    assert!(o[1].is_nan());
    assert_eq!(o[2], f32::INFINITY);
    assert!(o[3].is_nan());
}

#[test]
fn softmax_family_against_reference() {
    let mut r = rng(3);
    for &cols in &sizes() {
        for &rows_n in &[1usize, 3] {
            if cols == 0 {
                continue;
            }
            let x = randv(&mut r, rows_n * cols, -6.0, 6.0);
            let g = randv(&mut r, rows_n * cols, -1.0, 1.0);
            let tau = 0.7;
            let mut s = vec![0.0; x.len()];
            rows::softmax(&x, cols, 1.0 / tau, &mut s, Par::Seq);
            let mut ls = vec![0.0; x.len()];
            rows::log_softmax(&x, cols, &mut ls, Par::Seq);
            let (mut a, mut s1) = (vec![0.0; x.len()], vec![0.0; x.len()]);
            rows::solu(&x, cols, &mut a, &mut s1, Par::Seq);
            let mut sb = vec![0.0; x.len()];
            rows::softmax_backward(&s, &g, cols, 1.0 / tau, &mut sb, Par::Seq);
            let mut lb = vec![0.0; x.len()];
            rows::log_softmax_backward(&ls, &g, cols, &mut lb, Par::Seq);
            let mut ab = vec![0.0; x.len()];
            rows::solu_backward(&x, &s1, &g, cols, &mut ab, Par::Seq);
            let mut lse = vec![0.0; rows_n];
            rows::lse_rows(&x, cols, &mut lse, Par::Seq);
            let tol = 2e-6 * (cols as f64).sqrt().max(1.0);
            for i in 0..rows_n {
                let rg = i * cols..(i + 1) * cols;
                let (xr, gr) = (f64s(&x[rg.clone()]), f64s(&g[rg.clone()]));
                let sr = rf::softmax(&xr, tau as f64);
                assert_close("softmax", &s[rg.clone()], &sr, tol, 1e-7);
                assert_close("log_softmax", &ls[rg.clone()], &rf::log_softmax(&xr), tol, tol);
                assert_close("solu", &a[rg.clone()], &rf::solu(&xr), tol, 1e-6);
                assert_close(
                    "softmax_backward",
                    &sb[rg.clone()],
                    &rf::softmax_backward(&sr, &gr, tau as f64),
                    tol,
                    1e-6,
                );
                assert_close(
                    "log_softmax_backward",
                    &lb[rg.clone()],
                    &rf::log_softmax_backward(&xr, &gr),
                    tol,
                    1e-6,
                );
                assert_close(
                    "solu_backward",
                    &ab[rg.clone()],
                    &rf::solu_backward(&xr, &gr),
                    tol,
                    1e-6,
                );
                assert_close("lse", &lse[i..i + 1], &[rf::lse(&xr)], tol, 1e-6);
            }
        }
    }
}

#[test]
fn reductions_against_reference() {
    let mut r = rng(4);
    for &cols in &sizes() {
        if cols == 0 {
            continue;
        }
        let x = randv(&mut r, 3 * cols, -5.0, 5.0);
        let (mut mx, mut sm) = (vec![0.0; 3], vec![0.0; 3]);
        rows::max_rows(&x, cols, &mut mx, Par::Seq);
        rows::sum_rows(&x, cols, &mut sm, Par::Seq);
        for i in 0..3 {
            let xr = f64s(&x[i * cols..(i + 1) * cols]);
            assert_eq!(mx[i] as f64, rf::max(&xr));
            let want: f64 = xr.iter().sum();
            assert_close("sum_rows", &sm[i..i + 1], &[want], 1e-6, 1e-5 * cols as f64);
        }
        let y = randv(&mut r, cols, -1.0, 1.0);
        let d = ew::dot(&x[..cols], &y);
        let want: f64 = x[..cols].iter().zip(&y).map(|(a, b)| *a as f64 * *b as f64).sum();
        assert!((d as f64 - want).abs() < 1e-5 * cols as f64);
    }
}

#[test]
fn softmax_properties() {
    let mut r = rng(5);
    for &cols in &[1usize, 2, 7, 64, 1024] {
        let x = randv(&mut r, 4 * cols, -30.0, 30.0);
        let mut s = vec![0.0; x.len()];
        rows::softmax(&x, cols, 1.0, &mut s, Par::Seq);
        for row in s.chunks(cols) {
            let sum: f64 = row.iter().map(|&v| v as f64).sum();
            assert!((sum - 1.0).abs() < 1e-5, "softmax row sums to {sum}");
        }
        // log-softmax == log(softmax) where softmax is not tiny
        let mut ls = vec![0.0; x.len()];
        rows::log_softmax(&x, cols, &mut ls, Par::Seq);
        for (l, p) in ls.iter().zip(&s) {
            if *p > 1e-30 {
                assert!((*l - p.ln()).abs() < 1e-4, "log_softmax {l} vs ln softmax {}", p.ln());
            }
        }
        // lse(v + c) = lse(v) + c
        let c = 3.25f32;
        let xc: Vec<f32> = x.iter().map(|v| v + c).collect();
        let (mut l1, mut l2) = (vec![0.0; 4], vec![0.0; 4]);
        rows::lse_rows(&x, cols, &mut l1, Par::Seq);
        rows::lse_rows(&xc, cols, &mut l2, Par::Seq);
        for (a, b) in l1.iter().zip(&l2) {
            assert!((a + c - b).abs() < 1e-4 * (1.0 + a.abs()));
        }
        // grouped softmax with one group == softmax
        let mut gs = vec![0.0; x.len()];
        rows::grouped_softmax(&x, cols, cols, 1.0, &mut gs, Par::Seq);
        assert_eq!(gs, s);
        // backward of softmax sums to zero per row
        let g = randv(&mut r, x.len(), -1.0, 1.0);
        let mut b = vec![0.0; x.len()];
        rows::softmax_backward(&s, &g, cols, 1.0, &mut b, Par::Seq);
        for row in b.chunks(cols) {
            let sum: f64 = row.iter().map(|&v| v as f64).sum();
            assert!(sum.abs() < 1e-5, "softmax vjp sums to {sum}");
        }
    }
}

#[test]
fn extreme_inputs_stay_finite() {
    for &big in &[80.0f32, 1e4, 3e38] {
        for &cols in &[1usize, 5, 17, 64] {
            let x: Vec<f32> = (0..cols).map(|i| if i % 2 == 0 { big } else { -big }).collect();
            let mut s = vec![0.0; cols];
            rows::softmax(&x, cols, 1.0, &mut s, Par::Seq);
            let mut ls = vec![0.0; cols];
            rows::log_softmax(&x, cols, &mut ls, Par::Seq);
            let (mut a, mut s1) = (vec![0.0; cols], vec![0.0; cols]);
            rows::solu(&x, cols, &mut a, &mut s1, Par::Seq);
            let g = vec![1.0f32; cols];
            let mut b = vec![0.0; cols];
            rows::solu_backward(&x, &s1, &g, cols, &mut b, Par::Seq);
            for v in s.iter().chain(&ls).chain(&a).chain(&b) {
                assert!(!v.is_nan(), "NaN at ±{big}, cols {cols}");
            }
            for v in s.iter().chain(&a) {
                assert!(v.is_finite(), "overflow at ±{big}, cols {cols}");
            }
        }
    }
    // -inf entries: ignored by softmax; an all -inf row is uniform, lse -inf.
    let x = [
        f32::NEG_INFINITY,
        0.0,
        f32::NEG_INFINITY,
        f32::NEG_INFINITY,
        f32::NEG_INFINITY,
        f32::NEG_INFINITY,
    ];
    let mut s = [0.0f32; 6];
    rows::softmax(&x, 3, 1.0, &mut s, Par::Seq);
    assert_eq!(&s[..3], &[0.0, 1.0, 0.0]);
    assert_eq!(&s[3..], &[1.0 / 3.0; 3]);
    let mut l = [0.0f32; 2];
    rows::lse_rows(&x, 3, &mut l, Par::Seq);
    assert_eq!(l, [0.0, f32::NEG_INFINITY]);
    let mut ls = [0.0f32; 6];
    rows::log_softmax(&x, 3, &mut ls, Par::Seq);
    assert_eq!(ls[1], 0.0);
    assert_eq!(ls[0], f32::NEG_INFINITY);
    assert!(ls[3..].iter().all(|v| v.is_finite()));
}

/// `relu_in_place` gives `relu`'s bits, specials included (NaN → 0, ±0 → +0, ±Inf), at the
/// first, a middle and the last position of every size, and over parallel chunks.
#[test]
fn relu_in_place_is_relu() {
    let mut r = rng(61);
    let specials = [f32::NAN, -0.0, 0.0, f32::INFINITY, f32::NEG_INFINITY, -1e-40];
    let mut lens = sizes();
    lens.push(70_001); // more than one parallel chunk
    for &n in &lens {
        for (si, &sp) in specials.iter().enumerate() {
            let mut z = randv(&mut r, n, -3.0, 3.0);
            for pos in [0, n / 2, n.saturating_sub(1)] {
                if n > 0 {
                    z[(pos + si) % n] = sp;
                }
            }
            let mut want = vec![7.0; n];
            ew::relu(&z, &mut want, Par::Seq);
            for par in [Par::Seq, Par::Rayon(2)] {
                let mut got = z.clone();
                ew::relu_in_place(&mut got, par);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&want), "n = {n}, special {sp}, {par:?}");
            }
        }
    }
}

/// The in-place softmax family gives the out-of-place kernels' bits: odd widths, every
/// small group width and a large one, a negative temperature, rows of all −∞, rows with
/// +∞ or NaN, and more rows than one parallel block, on 1 or 2 threads.
#[test]
fn softmax_family_in_place_matches() {
    let mut r = rng(62);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for cols in [1usize, 3, 7, 8, 16, 17, 32, 33, 64, 256] {
        for rows_n in [1usize, 5, 300] {
            let mut x = randv(&mut r, rows_n * cols, -6.0, 6.0);
            if rows_n >= 5 {
                x[cols..2 * cols].fill(f32::NEG_INFINITY);
                x[2 * cols + cols / 2] = f32::INFINITY;
                x[3 * cols] = f32::NAN;
                x[4 * cols + cols - 1] = f32::NEG_INFINITY;
            }
            for par in [Par::Seq, Par::Rayon(2)] {
                let mut want = vec![0.0; x.len()];
                for c in [1.0f32, 0.37, -0.8] {
                    rows::softmax(&x, cols, c, &mut want, Par::Seq);
                    let mut got = x.clone();
                    rows::softmax_in_place(&mut got, cols, c, par);
                    assert_eq!(bits(&got), bits(&want), "softmax {rows_n}x{cols} c={c} {par:?}");
                }
                rows::log_softmax(&x, cols, &mut want, Par::Seq);
                let mut got = x.clone();
                rows::log_softmax_in_place(&mut got, cols, par);
                assert_eq!(bits(&got), bits(&want), "log_softmax {rows_n}x{cols} {par:?}");
                for group in (1..=cols).filter(|g| cols.is_multiple_of(*g)) {
                    rows::grouped_softmax(&x, cols, group, 0.7, &mut want, Par::Seq);
                    let mut got = x.clone();
                    rows::grouped_softmax_in_place(&mut got, cols, group, 0.7, par);
                    assert_eq!(
                        bits(&got),
                        bits(&want),
                        "grouped softmax {rows_n}x{cols} group {group} {par:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn elementwise_against_reference() {
    let mut r = rng(6);
    for &n in &sizes() {
        let z = randv(&mut r, n, -3.0, 3.0);
        let g = randv(&mut r, n, -1.0, 1.0);
        let mut o = vec![0.0; n];
        ew::relu(&z, &mut o, Par::Seq);
        assert!(o.iter().zip(&z).all(|(o, z)| *o == z.max(0.0)));
        ew::relu_backward(&z, &g, &mut o, Par::Seq);
        assert!(o.iter().zip(&z).zip(&g).all(|((o, z), g)| *o == if *z > 0.0 { *g } else { 0.0 }));
        ew::abs(&z, &mut o, Par::Seq);
        assert!(o.iter().zip(&z).all(|(o, z)| *o == z.abs()));
        ew::abs_backward(&z, &g, &mut o, Par::Seq);
        assert!(o.iter().zip(&z).zip(&g).all(|((o, z), g)| *o == g * z.signum()));
        let mut y = g.clone();
        ew::axpy(0.5, &z, &mut y, Par::Seq);
        assert_close(
            "axpy",
            &y,
            &z.iter().zip(&g).map(|(a, b)| 0.5 * *a as f64 + *b as f64).collect::<Vec<_>>(),
            1e-6,
            1e-6,
        );
        ew::scale(2.0, &mut y, Par::Seq);
        // Adam against a scalar f64 loop
        let (mut p, mut m, mut v) = (z.clone(), vec![0.1f32; n], vec![0.2f32; n]);
        let h = ew::AdamStep {
            lr: 1e-2,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            bias_correction1: 0.19,
            bias_correction2: 0.002,
            l2: 0.01,
            decoupled: 0.1,
        };
        ew::adam_update(h, &mut p, &g, &mut m, &mut v);
        for i in 0..n {
            let gi = g[i] as f64 + 0.01 * z[i] as f64;
            let mi = 0.9 * 0.1 + 0.1 * gi;
            let vi = 0.999 * 0.2 + 0.001 * gi * gi;
            let pi = z[i] as f64 * (1.0 - 1e-3) - 1e-2 * (mi / 0.19) / ((vi / 0.002).sqrt() + 1e-8);
            assert!((p[i] as f64 - pi).abs() < 1e-5, "adam p[{i}] {} vs {pi}", p[i]);
            assert!((m[i] as f64 - mi).abs() < 1e-6 && (v[i] as f64 - vi).abs() < 1e-6);
        }
        let (mut p, mut b) = (z.clone(), vec![0.5f32; n]);
        ew::sgd_update(0.1, 0.9, 0.01, &mut p, &g, &mut b);
        for i in 0..n {
            let gi = g[i] as f64 + 0.01 * z[i] as f64;
            let bi = 0.9 * 0.5 + gi;
            assert!((p[i] as f64 - (z[i] as f64 - 0.1 * bi)).abs() < 1e-6);
        }
    }
}

fn check_gemm(m: usize, k: usize, n: usize, ta: bool, tb: bool, beta: f32, bias: bool, seed: u64) {
    let mut r = rng(seed);
    let a = randv(&mut r, m * k, -1.0, 1.0);
    let b = randv(&mut r, k * n, -1.0, 1.0);
    let bv = randv(&mut r, n, -1.0, 1.0);
    let c0 = randv(&mut r, m * n, -1.0, 1.0);
    let mut g =
        Gemm { m, n, k, a: &a, trans_a: ta, b: &b, trans_b: tb, alpha: 0.75, beta, bias: None };
    if bias {
        g.bias = Some(&bv);
    }
    let mut c = c0.clone();
    g.run(&mut c, Par::Seq);
    let mut want = f64s(&c0);
    iem_simd::gemm::gemm_reference(&g, &mut want);
    let tol = 1e-6 * (k as f64).sqrt() * 4.0;
    assert_close(
        &format!("gemm {m}x{k}x{n} ta={ta} tb={tb} beta={beta} bias={bias}"),
        &c,
        &want,
        tol,
        tol,
    );
    // 2 threads: bit-identical
    let mut c2 = c0.clone();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    pool.install(|| g.run(&mut c2, Par::Rayon(2)));
    assert_eq!(c, c2, "gemm {m}x{k}x{n}: 1 vs 2 threads differ");
}

#[test]
fn gemm_edge_grid() {
    let dims = [1usize, 2, 3, 7, 13, 16, 17, 33, 48, 65];
    let mut seed = 0;
    for &m in &dims {
        for &k in &[0usize, 1, 5, 17] {
            for &n in &dims {
                for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                    seed += 1;
                    check_gemm(m, k, n, ta, tb, 0.0, seed % 2 == 0, seed);
                }
            }
        }
    }
}

#[test]
fn gemm_packed_shapes() {
    // Shapes past the small path: several KC blocks, partial MR/NR tiles, every layout.
    for (i, &(m, k, n)) in [
        (37usize, 300usize, 70usize),
        (129, 520, 97),
        (256, 784, 64),
        (5, 1030, 33),
        (300, 64, 300),
        // One row tile, run as two column halves: a row block's forward and input-gradient
        // products, odd widths, two depth blocks.
        (128, 784, 256),
        (100, 300, 131),
        (64, 1030, 257),
    ]
    .iter()
    .enumerate()
    {
        for (ta, tb) in [(false, false), (true, false), (false, true)] {
            check_gemm(m, k, n, ta, tb, 1.0, i % 2 == 0, 100 + i as u64);
            check_gemm(m, k, n, ta, tb, 0.0, true, 200 + i as u64);
        }
    }
}

#[test]
fn transpose_against_the_index_rule() {
    let mut r = rng(47);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    let dims = [0usize, 1, 2, 15, 16, 17, 31, 33, 48, 257];
    for &rows in &dims {
        for &cols in &dims {
            let a = randv(&mut r, rows * cols, -3.0, 3.0);
            let mut want = vec![0.0f32; rows * cols];
            for i in 0..rows {
                for j in 0..cols {
                    want[j * rows + i] = a[i * cols + j];
                }
            }
            let mut got = vec![f32::NAN; rows * cols];
            iem_simd::gemm::transpose(&a, rows, cols, &mut got, Par::Seq);
            assert_eq!(got, want, "{rows}×{cols} under {}", Isa::current());
            let mut got2 = vec![f32::NAN; rows * cols];
            pool.install(|| iem_simd::gemm::transpose(&a, rows, cols, &mut got2, Par::Rayon(2)));
            assert_eq!(got2, want, "{rows}×{cols}, 2 threads");
        }
    }
    // Larger than one task's chunk, so that the split over threads is exercised.
    let (rows, cols) = (300, 785);
    let a = randv(&mut r, rows * cols, -3.0, 3.0);
    let mut got = vec![0.0f32; rows * cols];
    pool.install(|| iem_simd::gemm::transpose(&a, rows, cols, &mut got, Par::Rayon(2)));
    for i in 0..rows {
        for j in 0..cols {
            assert_eq!(got[j * rows + i], a[i * cols + j], "({i}, {j})");
        }
    }
}

#[test]
fn gemm_beta_zero_ignores_nan() {
    let a = [1.0f32; 6];
    let b = [1.0f32; 6];
    let mut c = [f32::NAN; 4];
    Gemm::nn(2, 3, 2, &a, &b).run(&mut c, Par::Seq);
    assert_eq!(c, [3.0; 4]);
    // The same on a shape past the small path (on AVX-512 the `gemm` crate, which then
    // overwrites C without reading it), for every layout.
    let mut r = rng(12);
    let (m, k, n) = (150, 300, 200);
    let a = randv(&mut r, m * k, -1.0, 1.0);
    let b = randv(&mut r, k * n, -1.0, 1.0);
    for (ta, tb) in [(false, false), (true, false), (false, true)] {
        let g = match (ta, tb) {
            (false, false) => Gemm::nn(m, k, n, &a, &b),
            (true, false) => Gemm::tn(m, k, n, &a, &b),
            _ => Gemm::nt(m, k, n, &a, &b),
        };
        let mut from_nan = vec![f32::NAN; m * n];
        let mut from_zero = vec![0.0f32; m * n];
        g.run(&mut from_nan, Par::Seq);
        g.run(&mut from_zero, Par::Seq);
        assert!(from_nan.iter().all(|v| v.is_finite()), "ta {ta} tb {tb}: NaN leaked");
        assert!(from_nan == from_zero, "ta {ta} tb {tb}: result depends on C's old values");
    }
}

#[test]
fn adam_update_any_thread_count_same_result() {
    let mut r = rng(13);
    let n = 100_003; // several parallel chunks and a partial vector at the end
    let p0 = randv(&mut r, n, -1.0, 1.0);
    let g = randv(&mut r, n, -1.0, 1.0);
    let m0 = randv(&mut r, n, -0.1, 0.1);
    let v0 = randv(&mut r, n, 0.0, 0.1);
    let h = ew::AdamStep {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        bias_correction1: 0.1,
        bias_correction2: 0.001,
        l2: 1e-4,
        decoupled: 0.0,
    };
    let run = |par: Par| {
        let (mut p, mut m, mut v) = (p0.clone(), m0.clone(), v0.clone());
        ew::adam_update_par(h, &mut p, &g, &mut m, &mut v, par);
        (p, m, v)
    };
    let seq = {
        let (mut p, mut m, mut v) = (p0.clone(), m0.clone(), v0.clone());
        ew::adam_update(h, &mut p, &g, &mut m, &mut v);
        (p, m, v)
    };
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    assert!(run(Par::Seq) == seq);
    assert!(pool.install(|| run(Par::Rayon(2))) == seq, "2 threads differ from 1");
    assert!(seq.0 != p0, "the update changed nothing");
}

#[test]
fn sq_distances_against_reference() {
    let mut r = rng(7);
    for &(n, d, k) in &[(1usize, 1usize, 1usize), (9, 2, 5), (33, 17, 7), (64, 64, 31)] {
        let x = randv(&mut r, n * d, -2.0, 2.0);
        let mu = randv(&mut r, k * d, -2.0, 2.0);
        let mut out = vec![0.0; n * k];
        iem_simd::distance::sq_distances(&x, &mu, n, d, k, &mut out, Par::Seq);
        for i in 0..n {
            for j in 0..k {
                let w =
                    rf::sq_distance(&f64s(&x[i * d..(i + 1) * d]), &f64s(&mu[j * d..(j + 1) * d]));
                assert!((out[i * k + j] as f64 - w).abs() < 1e-5 * (1.0 + w), "dist {i},{j}");
                assert!(out[i * k + j] >= 0.0);
            }
        }
    }
    // identical point: exactly clamped at zero, never negative
    let x = [1000.1f32, -999.7];
    let mut o = [1.0f32];
    iem_simd::distance::sq_distances(&x, &x, 1, 2, 1, &mut o, Par::Seq);
    assert!(o[0] >= 0.0);
}

#[test]
fn threads_bit_identical() {
    let mut r = rng(8);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    for &cols in &[7usize, 512, 1024] {
        let rows_n = 300;
        let x = randv(&mut r, rows_n * cols, -8.0, 8.0);
        let g = randv(&mut r, rows_n * cols, -1.0, 1.0);
        let run = |par: Par| {
            let mut s = vec![0.0; x.len()];
            let mut l = vec![0.0; x.len()];
            let (mut a, mut s1) = (vec![0.0; x.len()], vec![0.0; x.len()]);
            let mut b = vec![0.0; x.len()];
            let mut e = vec![0.0; x.len()];
            rows::softmax(&x, cols, 1.0, &mut s, par);
            rows::log_softmax(&x, cols, &mut l, par);
            rows::solu(&x, cols, &mut a, &mut s1, par);
            rows::solu_backward(&x, &s1, &g, cols, &mut b, par);
            ew::exp(&x, &mut e, par);
            (s, l, a, b, e)
        };
        let one = run(Par::Seq);
        let two = pool.install(|| run(Par::Rayon(2)));
        assert!(one == two, "1 vs 2 threads differ at cols {cols}");
    }
}

#[test]
fn grouped_nls_and_temperature_against_reference() {
    let mut r = rng(9);
    for &group in &[1usize, 2, 3, 4, 8, 16, 17, 32] {
        for &groups in &[1usize, 3, 5] {
            let cols = group * groups;
            let rows_n = 3;
            let x = randv(&mut r, rows_n * cols, -6.0, 6.0);
            let g = randv(&mut r, rows_n * cols, -1.0, 1.0);
            let tau = 0.6;
            let mut s = vec![0.0; x.len()];
            rows::grouped_softmax(&x, cols, group, 1.0 / tau, &mut s, Par::Seq);
            let mut b = vec![0.0; x.len()];
            rows::grouped_softmax_backward(&s, &g, cols, group, 1.0 / tau, &mut b, Par::Seq);
            let (mut a, mut s1) = (vec![0.0; x.len()], vec![0.0; x.len()]);
            rows::grouped_solu(&x, cols, group, &mut a, &mut s1, Par::Seq);
            let mut ab = vec![0.0; x.len()];
            rows::grouped_solu_backward(&x, &s1, &g, cols, group, &mut ab, Par::Seq);
            for (blk, rg) in (0..x.len()).step_by(group).map(|i| (i, i..i + group)) {
                let _ = blk;
                let (xr, gr) = (f64s(&x[rg.clone()]), f64s(&g[rg.clone()]));
                let sr = rf::softmax(&xr, tau as f64);
                assert_close("grouped_softmax", &s[rg.clone()], &sr, 3e-6, 1e-7);
                assert_close(
                    "grouped_softmax_backward",
                    &b[rg.clone()],
                    &rf::softmax_backward(&sr, &gr, tau as f64),
                    3e-6,
                    1e-6,
                );
                assert_close("grouped_solu", &a[rg.clone()], &rf::solu(&xr), 3e-6, 1e-6);
                assert_close(
                    "grouped_solu_backward",
                    &ab[rg.clone()],
                    &rf::solu_backward(&xr, &gr),
                    3e-6,
                    1e-6,
                );
            }
        }
    }
    for &cols in &sizes() {
        if cols == 0 {
            continue;
        }
        let d = randv(&mut r, 2 * cols, 0.0, 8.0);
        let g = randv(&mut r, 2 * cols, -1.0, 1.0);
        let mut a = vec![0.0; d.len()];
        rows::nls(&d, cols, &mut a, Par::Seq);
        let mut b = vec![0.0; d.len()];
        rows::nls_backward(&a, &g, cols, &mut b, Par::Seq);
        let z = randv(&mut r, 2 * cols, -5.0, 5.0);
        let tau = 0.8f32;
        let mut s = vec![0.0; z.len()];
        rows::softmax(&z, cols, 1.0 / tau, &mut s, Par::Seq);
        let tg = rows::temperature_grad(&z, &s, &g, cols, tau);
        let mut want_tg = 0.0;
        for i in 0..2 {
            let rg = i * cols..(i + 1) * cols;
            let (dr, gr) = (f64s(&d[rg.clone()]), f64s(&g[rg.clone()]));
            let neg: Vec<f64> = dr.iter().map(|v| -v).collect();
            let want: Vec<f64> = rf::log_softmax(&neg).iter().map(|v| -v).collect();
            let tol = 2e-6 * (cols as f64).sqrt();
            assert_close("nls", &a[rg.clone()], &want, tol, tol);
            let rr = rf::softmax(&neg, 1.0);
            let sg: f64 = gr.iter().sum();
            let wb: Vec<f64> = gr.iter().zip(&rr).map(|(g, r)| g - r * sg).collect();
            assert_close("nls_backward", &b[rg.clone()], &wb, tol, tol);
            let zr = f64s(&z[rg.clone()]);
            let sr = rf::softmax(&zr, tau as f64);
            let zbar: f64 = zr.iter().zip(&sr).map(|(a, b)| a * b).sum();
            want_tg -= (0..cols).map(|j| gr[j] * sr[j] * (zr[j] - zbar)).sum::<f64>() / tau as f64;
        }
        assert!(
            (tg as f64 - want_tg).abs() < 1e-5 * (1.0 + want_tg.abs()) * (cols as f64).sqrt(),
            "temperature_grad {tg} vs {want_tg}"
        );
    }
}

#[test]
fn grouped_softmax_special_rows() {
    // an all −inf group is uniform; a NaN propagates to its group only
    let x = [f32::NEG_INFINITY, f32::NEG_INFINITY, 0.0, 1.0, f32::NAN, 0.0];
    let mut s = [0.0f32; 6];
    rows::grouped_softmax(&x, 6, 2, 1.0, &mut s, Par::Seq);
    assert_eq!(&s[..2], &[0.5, 0.5]);
    assert!((s[2] + s[3] - 1.0).abs() < 1e-6 && s[3] > s[2]);
    assert!(s[4].is_nan() && s[5].is_nan());
}

/// Softmax of negated distances (a negative inverse temperature) over rows whose spread far
/// exceeds exp's range: shifted by the row minimum, nothing overflows.
#[test]
fn softmax_of_distances_with_a_wide_spread() {
    let mut r = rng(31);
    for &cols in &sizes() {
        if cols == 0 {
            continue;
        }
        for &c in &[-1.0f32, -0.37] {
            let x = randv(&mut r, 2 * cols, 0.0, 300.0);
            let mut s = vec![0.0; x.len()];
            rows::softmax(&x, cols, c, &mut s, Par::Seq);
            for i in 0..2 {
                let rg = i * cols..(i + 1) * cols;
                let sr = rf::softmax(&f64s(&x[rg.clone()]), 1.0 / c as f64);
                assert!(s[rg.clone()].iter().all(|v| v.is_finite()), "cols {cols}, c {c}");
                assert_close(
                    "softmax(-d)",
                    &s[rg],
                    &sr,
                    2e-6 * (cols as f64).sqrt().max(1.0),
                    1e-7,
                );
            }
        }
    }
}

#[test]
fn col_sums_bit_identical_to_the_row_loop() {
    let mut r = rng(43);
    for rows in [0usize, 1, 2, 7, 33] {
        for cols in sizes().into_iter().filter(|&c| c > 0 && c <= 300) {
            let x = randv(&mut r, rows * cols, -3.0, 3.0);
            let mut want = vec![0.0f32; cols];
            for row in x.chunks_exact(cols) {
                for (a, b) in want.iter_mut().zip(row) {
                    *a += b;
                }
            }
            let mut got = vec![f32::NAN; cols];
            ew::col_sums(&x, cols, &mut got);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{rows}×{cols}");
        }
    }
    ew::col_sums(&[], 0, &mut []);
}

#[test]
fn all_finite_and_sum_sq_against_scalar() {
    let mut r = rng(41);
    for n in sizes() {
        let x = randv(&mut r, n, -3.0, 3.0);
        assert!(ew::all_finite(&x), "n = {n}");
        let want: f64 = x.iter().map(|v| (*v as f64).powi(2)).sum();
        let got = ew::sum_sq(&x);
        assert!((got - want).abs() <= 1e-12 * want.max(1.0), "sum_sq n = {n}: {got} vs {want}");
        let want: f64 = x.iter().map(|&v| v as f64).sum();
        let got = ew::sum_f64(&x);
        assert!((got - want).abs() <= 1e-12 * n.max(1) as f64, "sum_f64 n = {n}: {got} vs {want}");
        // The same bits as the portable 8-lane loop, whatever the instruction set, on values
        // spread over 2^±30 (so that f64 sums round and any change of order shows).
        let x: Vec<f32> =
            x.iter().enumerate().map(|(i, v)| v * 2f32.powi((i * 7 % 61) as i32 - 30)).collect();
        let lanes = |f: fn(f64) -> f64| {
            let mut a = [0.0f64; 8];
            let mut it = x.chunks_exact(8);
            for c in &mut it {
                for (a, v) in a.iter_mut().zip(c) {
                    *a += f(*v as f64);
                }
            }
            let tail: f64 = it.remainder().iter().map(|v| f(*v as f64)).sum();
            ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7])) + tail
        };
        assert_eq!(ew::sum_sq(&x).to_bits(), lanes(|v| v * v).to_bits(), "sum_sq n = {n}");
        assert_eq!(ew::sum_f64(&x).to_bits(), lanes(|v| v).to_bits(), "sum_f64 n = {n}");
        // Every position and every kind of non-finite value is seen.
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            for pos in [0, n / 2, n.saturating_sub(1)] {
                if n == 0 {
                    continue;
                }
                let mut y = x.clone();
                y[pos] = bad;
                assert!(!ew::all_finite(&y), "n = {n}, {bad} at {pos}");
            }
        }
    }
    // The largest finite value and subnormals are finite.
    assert!(ew::all_finite(&[f32::MAX, -f32::MAX, f32::MIN_POSITIVE / 2.0, -0.0]));
    assert!(ew::all_finite(&[]));
}

#[test]
fn add_sum_sq_is_axpy_then_sum_sq() {
    let mut r = rng(61);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for n in sizes().into_iter().chain([32 * 1024 + 5]) {
        // Values over 2^±30, so that any change in the order of the f64 sums shows.
        let spread = |v: Vec<f32>| -> Vec<f32> {
            v.iter().enumerate().map(|(i, x)| x * 2f32.powi((i * 7 % 61) as i32 - 30)).collect()
        };
        let x = spread(randv(&mut r, n, -3.0, 3.0));
        let y0 = spread(randv(&mut r, n, -3.0, 3.0));
        let mut want = y0.clone();
        ew::axpy(1.0, &x, &mut want, Par::Seq);
        let want_ss = ew::sum_sq(&want);
        let mut got = y0.clone();
        let got_ss = ew::add_sum_sq(&x, &mut got);
        assert_eq!(bits(&got), bits(&want), "sums, n = {n} under {}", Isa::current());
        assert_eq!(got_ss.to_bits(), want_ss.to_bits(), "sum of squares, n = {n}");
        if n > 0 {
            let mut y = y0.clone();
            let mut xi = x.clone();
            xi[n - 1] = f32::INFINITY;
            assert!(ew::add_sum_sq(&xi, &mut y).is_infinite(), "n = {n}");
        }
    }
}

#[test]
fn adam_update_finite_is_adam_update_then_all_finite() {
    let mut r = rng(67);
    for n in sizes() {
        for eps in [1e-8f32, 0.0] {
            let h = ew::AdamStep {
                lr: 1e-3,
                beta1: 0.9,
                beta2: 0.999,
                eps,
                bias_correction1: 0.1,
                bias_correction2: 0.001,
                l2: 1e-4,
                decoupled: 0.0,
            };
            let p0 = randv(&mut r, n, -1.0, 1.0);
            let g0 = randv(&mut r, n, -1.0, 1.0);
            let m0 = randv(&mut r, n, -0.1, 0.1);
            let v0 = randv(&mut r, n, 0.01, 0.1);
            // Clean data, then a non-finite gradient, parameter or state at the first, a
            // middle and the last position (the last one in a partial vector).
            let mut cases = vec![(g0.clone(), p0.clone(), v0.clone())];
            for pos in [0, n / 2, n.saturating_sub(1)] {
                if n == 0 {
                    break;
                }
                for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                    let mut g = g0.clone();
                    g[pos] = bad;
                    cases.push((g, p0.clone(), v0.clone()));
                    let mut p = p0.clone();
                    p[pos] = bad;
                    cases.push((g0.clone(), p, v0.clone()));
                }
                let mut v = v0.clone();
                v[pos] = f32::INFINITY;
                cases.push((g0.clone(), p0.clone(), v));
            }
            for (g, p, v) in cases {
                let (mut pw, mut mw, mut vw) = (p.clone(), m0.clone(), v.clone());
                ew::adam_update(h, &mut pw, &g, &mut mw, &mut vw);
                let (mut pg, mut mg, mut vg) = (p.clone(), m0.clone(), v.clone());
                let finite = ew::adam_update_finite(h, &mut pg, &g, &mut mg, &mut vg);
                let same =
                    |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(same(&pg, &pw) && same(&mg, &mw) && same(&vg, &vw), "n = {n}");
                assert_eq!(finite, ew::all_finite(&pw), "n = {n}, eps = {eps}");
            }
        }
    }
}

/// `panel::matmul` and `panel::matmul_tn` against f64 products on odd sizes (partial 6-row
/// tiles, depths 1 to past the crate's depth blocks), with and without bias; 1 vs 2 threads
/// bit-identical; pack / unpack exact inverses that follow `panel::index`.
fn check_panels(n: usize, k: usize, u: usize, seed: u64) {
    let mut r = rng(seed);
    let a = randv(&mut r, n * k, -1.0, 1.0);
    let w = randv(&mut r, u * k, -1.0, 1.0); // W, u × k
    let g = randv(&mut r, n * u, -1.0, 1.0);
    let bias = randv(&mut r, u, -1.0, 1.0);
    let what = format!("{n}×{k}×{u} under {}", Isa::current());
    let mut wt = vec![f32::NAN; u * k];
    panel::pack_transposed(&w, u, k, &mut wt, Par::Seq);
    for (c, row) in w.chunks(k.max(1)).enumerate().take(u) {
        for (rr, &v) in row.iter().enumerate() {
            assert_eq!(wt[panel::index(k, rr, c)].to_bits(), v.to_bits(), "pack {what}");
        }
    }
    let mut back = vec![f32::NAN; u * k];
    panel::unpack_transposed(&wt, k, u, &mut back, Par::Seq);
    assert_eq!(back, w, "unpack {what}");
    if panel::fits(k) {
        // Panels of W (u × k) from the panels of Wᵀ, and back.
        let mut wp = vec![f32::NAN; u * k];
        panel::transpose_panels(&wt, k, u, &mut wp, Par::Seq);
        for (c, row) in w.chunks(k).enumerate() {
            for (rr, &v) in row.iter().enumerate() {
                assert_eq!(wp[panel::index(u, c, rr)].to_bits(), v.to_bits(), "panels of W {what}");
            }
        }
        let mut again = vec![f32::NAN; u * k];
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        pool.install(|| panel::transpose_panels(&wp, u, k, &mut again, Par::Rayon(2)));
        assert_eq!(bits(&again), bits(&wt), "transpose_panels twice {what}");
    }
    let tol = 1e-6 * (k.max(n) as f64).sqrt() * 4.0;
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    for with_bias in [false, true] {
        let b = with_bias.then_some(&bias[..]);
        // Garbage in C: it is overwritten.
        let mut c = vec![f32::NAN; n * u];
        panel::matmul(&a, n, k, &wt, u, b, &mut c, Par::Seq);
        let mut want = vec![0.0f64; n * u];
        for i in 0..n {
            for j in 0..u {
                let dot: f64 = (0..k).map(|p| a[i * k + p] as f64 * w[j * k + p] as f64).sum();
                want[i * u + j] = dot + if with_bias { bias[j] as f64 } else { 0.0 };
            }
        }
        assert_close(&format!("panel::matmul bias={with_bias} {what}"), &c, &want, tol, tol);
        let mut c2 = vec![f32::NAN; n * u];
        pool.install(|| panel::matmul(&a, n, k, &wt, u, b, &mut c2, Par::Rayon(2)));
        assert_eq!(bits(&c), bits(&c2), "panel::matmul 1 vs 2 threads {what}");
    }
    let mut d = vec![f32::NAN; k * u];
    let mut scratch = Vec::new();
    panel::matmul_tn(&a, n, k, &g, u, &mut d, &mut scratch, Par::Seq);
    let mut got = vec![0.0f32; k * u]; // D row-major, to compare
    let mut want = vec![0.0f64; k * u];
    for rr in 0..k {
        for j in 0..u {
            got[rr * u + j] = d[panel::index(k, rr, j)];
            want[rr * u + j] = (0..n).map(|b| a[b * k + rr] as f64 * g[b * u + j] as f64).sum();
        }
    }
    assert_close(&format!("panel::matmul_tn {what}"), &got, &want, tol, tol);
    let mut d2 = vec![f32::NAN; k * u];
    pool.install(|| panel::matmul_tn(&a, n, k, &g, u, &mut d2, &mut scratch, Par::Rayon(2)));
    assert_eq!(bits(&d), bits(&d2), "panel::matmul_tn 1 vs 2 threads {what}");
}

#[test]
fn panel_products_against_reference() {
    for (i, &(n, k, u)) in [
        (1usize, 1usize, 64usize),
        (5, 3, 64),
        (7, 17, 128),
        (13, 65, 192),
        (0, 9, 64),
        (3, 0, 64),
        // A row block of the MNIST-size model (two tasks of 126 rows, partial last tile),
        // and a first layer: depth 784, 127 + 4 features.
        (128, 256, 256),
        (131, 784, 128),
        (9, 128, 192),
    ]
    .iter()
    .enumerate()
    {
        check_panels(n, k, u, 300 + i as u64);
    }
}

#[test]
fn panel_rejects_widths_that_do_not_fit() {
    assert!(panel::fits(64) && panel::fits(256));
    assert!(!panel::fits(0) && !panel::fits(10) && !panel::fits(100));
    let r = std::panic::catch_unwind(|| {
        let mut c = vec![0.0; 10];
        panel::matmul(&[1.0], 1, 1, &[0.0; 10], 10, None, &mut c, Par::Seq);
    });
    let msg = r.expect_err("u = 10 must panic");
    let msg = msg.downcast_ref::<String>().expect("a formatted message");
    assert!(msg.contains("10 columns is not a positive multiple of 64"), "{msg}");
}

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

/// Adam with streaming stores for the parameters gives `adam_update_finite`'s bits and
/// answer on every length and every start offset within a cache line (the first partial
/// vector up to the streaming stores' alignment, the body, the tail), with a non-finite
/// result in each part.
#[test]
fn adam_with_streaming_stores_has_the_bits_of_adam() {
    let mut r = rng(14);
    let h = ew::AdamStep {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        bias_correction1: 0.1,
        bias_correction2: 0.001,
        l2: 1e-4,
        decoupled: 0.01,
    };
    let big = 300;
    let p0 = randv(&mut r, big + 16, -1.0, 1.0);
    let g0 = randv(&mut r, big + 16, -1.0, 1.0);
    let m0 = randv(&mut r, big + 16, -0.1, 0.1);
    let v0 = randv(&mut r, big + 16, 0.0, 0.1);
    for off in 0..16 {
        for n in [0, 1, 5, 15, 16, 17, 33, 100, big] {
            for bad in [None, Some(0), Some(n / 2), Some(n.saturating_sub(1))] {
                let mut g = g0.clone();
                if let Some(b) = bad.filter(|&b| b < n) {
                    g[off + b] = f32::INFINITY;
                }
                let run = |stream: bool| {
                    let (mut p, mut m, mut v) = (p0.clone(), m0.clone(), v0.clone());
                    let s = off..off + n;
                    let f = if stream {
                        ew::adam_update_finite_stream(
                            h,
                            &mut p[s.clone()],
                            &g[s.clone()],
                            &mut m[s.clone()],
                            &mut v[s.clone()],
                        )
                    } else {
                        ew::adam_update_finite(
                            h,
                            &mut p[s.clone()],
                            &g[s.clone()],
                            &mut m[s.clone()],
                            &mut v[s],
                        )
                    };
                    (f, bits(&p), bits(&m), bits(&v))
                };
                let (want, got) = (run(false), run(true));
                assert_eq!(got, want, "offset {off}, n {n}, bad {bad:?} under {}", Isa::current());
                assert_eq!(want.0, bad.is_none_or(|b| b >= n), "offset {off}, n {n}, bad {bad:?}");
            }
        }
    }
}
