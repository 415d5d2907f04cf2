//! Forward + vjp of every activation at 256×512 and 4096×1024 on 2 threads.
//! `cargo bench -p iem-activations`; the PyTorch comparison is `scripts/bench_peers.py`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use iem_activations::Activation;
use iem_tensor::{Matrix, Par};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn bench(c: &mut Criterion) {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    let mut r = ChaCha8Rng::seed_from_u64(1);
    let mut g = c.benchmark_group("activation_fwd_vjp");
    g.sample_size(10);
    for &(n, k) in &[(256usize, 512usize), (4096, 1024)] {
        let z = Matrix::from_fn(n, k, |_, _| r.random_range(-3.0f32..3.0));
        g.throughput(Throughput::Elements((n * k) as u64));
        for act in Activation::all(k) {
            let p = act.init_params(k);
            let gr = Matrix::filled(n, act.output_width(k), 0.5);
            let mut f = act.forward(&p, &z, Par::Seq).unwrap();
            let mut grads = act.vjp(&p, &z, &f, &gr, Par::Seq).unwrap();
            g.bench_function(BenchmarkId::new(act.name(), format!("{n}x{k}")), |b| {
                pool.install(|| {
                    b.iter(|| {
                        act.forward_into(&p, &z, &mut f, Par::Rayon(2)).unwrap();
                        act.vjp_into(&p, &z, &f, &gr, &mut grads, Par::Rayon(2)).unwrap();
                    })
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
