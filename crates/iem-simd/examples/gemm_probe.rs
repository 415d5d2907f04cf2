//! Timing probe used by `scripts/bench_peers.py` (one JSON object per line on stdout):
//! GEMM at the benchmark shapes on 1 and 2 threads, softmax-family forward+backward on 2
//! threads, and this machine's single-core FMA peak.
//! `cargo run --release -p iem-simd --example gemm_probe`
use iem_simd::{Gemm, Par, rows};

use iem_simd::timing::median_seconds as time;

fn main() {
    let peak = iem_simd::simd::fma_peak_gflops(100_000_000);
    println!("{{\"kind\":\"peak\",\"isa\":\"{}\",\"gflops\":{peak:.2}}}", iem_simd::Isa::current());
    let shapes = [
        (256, 2, 64),
        (256, 64, 64),
        (256, 784, 256),
        (1024, 784, 512),
        (4096, 512, 512),
        (1024, 1024, 1024),
    ];
    let pool2 = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    for &(m, k, n) in &shapes {
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7919) % 13) as f32 * 0.1 - 0.6).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 104_729) % 11) as f32 * 0.1 - 0.5).collect();
        let mut c = vec![0.0f32; m * n];
        let t1 = time(|| Gemm::nn(m, k, n, &a, &b).run(&mut c, Par::Seq), 0.5);
        let t2 =
            pool2.install(|| time(|| Gemm::nn(m, k, n, &a, &b).run(&mut c, Par::Rayon(2)), 0.5));
        let na = nalgebra::DMatrix::<f32>::from_row_slice(m, k, &a);
        let nb = nalgebra::DMatrix::<f32>::from_row_slice(k, n, &b);
        let mut nc = nalgebra::DMatrix::<f32>::zeros(m, n);
        let tn = time(|| nc.gemm(1.0, &na, &nb, 0.0), 0.5);
        println!(
            "{{\"kind\":\"gemm\",\"m\":{m},\"k\":{k},\"n\":{n},\"iem_1t\":{t1:e},\"iem_2t\":{t2:e},\"nalgebra_1t\":{tn:e}}}"
        );
    }
    for &(r, cols) in &[(256usize, 512usize), (4096, 1024)] {
        let x: Vec<f32> = (0..r * cols).map(|i| ((i * 7919) % 101) as f32 * 0.05 - 2.5).collect();
        let g: Vec<f32> = (0..r * cols).map(|i| ((i * 31) % 17) as f32 * 0.1 - 0.8).collect();
        let (mut s, mut a, mut o) = (vec![0.0; x.len()], vec![0.0; x.len()], vec![0.0; x.len()]);
        let p = Par::Rayon(2);
        let ts = pool2.install(|| {
            time(
                || {
                    rows::softmax(&x, cols, 1.0, &mut s, p);
                    rows::softmax_backward(&s, &g, cols, 1.0, &mut o, p);
                },
                0.3,
            )
        });
        let tl = pool2.install(|| {
            time(
                || {
                    rows::log_softmax(&x, cols, &mut s, p);
                    rows::log_softmax_backward(&s, &g, cols, &mut o, p);
                },
                0.3,
            )
        });
        let tsolu = pool2.install(|| {
            time(
                || {
                    rows::solu(&x, cols, &mut a, &mut s, p);
                    rows::solu_backward(&x, &s, &g, cols, &mut o, p);
                },
                0.3,
            )
        });
        for (name, t) in [("softmax", ts), ("log_softmax", tl), ("solu", tsolu)] {
            println!(
                "{{\"kind\":\"act\",\"name\":\"{name}\",\"rows\":{r},\"cols\":{cols},\"iem_2t\":{t:e}}}"
            );
        }
    }
}
