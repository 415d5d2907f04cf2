//! Criterion benchmarks of iem-simd: GEMM at the shapes (ours vs nalgebra's
//! product), and the softmax family forward + backward. Seeded inputs.
//! `cargo bench -p iem-simd` ; compare with PyTorch via `python3 scripts/bench_peers.py`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use iem_simd::{Gemm, Par, rows};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| r.random_range(-1.0f32..1.0)).collect()
}

const SHAPES: [(usize, usize, usize); 6] = [
    (256, 2, 64),
    (256, 64, 64),
    (256, 784, 256),
    (1024, 784, 512),
    (4096, 512, 512),
    (1024, 1024, 1024),
];

fn gemm(c: &mut Criterion) {
    let pool2 = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    let mut g = c.benchmark_group("gemm");
    g.sample_size(10);
    for &(m, k, n) in &SHAPES {
        let a = data(m * k, 1);
        let b = data(k * n, 2);
        let mut out = vec![0.0f32; m * n];
        g.throughput(Throughput::Elements((2 * m * k * n) as u64));
        let id = format!("{m}x{k}x{n}");
        g.bench_function(BenchmarkId::new("iem_1t", &id), |bch| {
            bch.iter(|| Gemm::nn(m, k, n, &a, &b).run(&mut out, Par::Seq))
        });
        g.bench_function(BenchmarkId::new("iem_2t", &id), |bch| {
            pool2.install(|| bch.iter(|| Gemm::nn(m, k, n, &a, &b).run(&mut out, Par::Rayon(2))))
        });
        let na = nalgebra::DMatrix::<f32>::from_row_slice(m, k, &a);
        let nb = nalgebra::DMatrix::<f32>::from_row_slice(k, n, &b);
        let mut nc = nalgebra::DMatrix::<f32>::zeros(m, n);
        g.bench_function(BenchmarkId::new("nalgebra_1t", &id), |bch| {
            bch.iter(|| nc.gemm(1.0, &na, &nb, 0.0))
        });
    }
    g.finish();
}

fn softmax_family(c: &mut Criterion) {
    let pool2 = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    let mut g = c.benchmark_group("softmax_fwd_bwd");
    for &(rws, cols) in &[(256usize, 512usize), (4096, 1024)] {
        let x = data(rws * cols, 3);
        let gr = data(rws * cols, 4);
        let (mut s, mut a, mut o) = (vec![0.0; x.len()], vec![0.0; x.len()], vec![0.0; x.len()]);
        let id = format!("{rws}x{cols}");
        g.throughput(Throughput::Elements(x.len() as u64));
        let par = Par::Rayon(2);
        g.bench_function(BenchmarkId::new("softmax", &id), |b| {
            pool2.install(|| {
                b.iter(|| {
                    rows::softmax(&x, cols, 1.0, &mut s, par);
                    rows::softmax_backward(&s, &gr, cols, 1.0, &mut o, par);
                })
            })
        });
        g.bench_function(BenchmarkId::new("log_softmax", &id), |b| {
            pool2.install(|| {
                b.iter(|| {
                    rows::log_softmax(&x, cols, &mut s, par);
                    rows::log_softmax_backward(&s, &gr, cols, &mut o, par);
                })
            })
        });
        g.bench_function(BenchmarkId::new("solu", &id), |b| {
            pool2.install(|| {
                b.iter(|| {
                    rows::solu(&x, cols, &mut a, &mut s, par);
                    rows::solu_backward(&x, &s, &gr, cols, &mut o, par);
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, gemm, softmax_family);
criterion_main!(benches);
