//! Timing probe used by `scripts/bench_peers.py`: forward + vjp of every activation at
//! 256×512 and 4096×1024 on 2 threads, one JSON object per line.
//! `cargo run --release -p iem-activations --example act_probe`
use iem_activations::Activation;
use iem_tensor::{Matrix, Par};

use iem_simd::timing::median_seconds as time;

fn main() {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    for &(n, k) in &[(256usize, 512usize), (4096, 1024)] {
        let z = Matrix::from_fn(n, k, |i, j| (((i * 7919 + j * 31) % 101) as f32) * 0.06 - 3.0);
        let mut acts = Activation::all(k);
        acts.push(Activation::GroupedSoftmax { group: 8, tau: 1.0 });
        for act in acts {
            let p = act.init_params(k);
            let g = Matrix::filled(n, act.output_width(k), 0.5);
            // Buffers reused across steps, as in a training loop.
            let mut f = act.forward(&p, &z, Par::Seq).unwrap();
            let mut gr = act.vjp(&p, &z, &f, &g, Par::Seq).unwrap();
            let t = pool.install(|| {
                time(
                    || {
                        act.forward_into(&p, &z, &mut f, Par::Rayon(2)).unwrap();
                        act.vjp_into(&p, &z, &f, &g, &mut gr, Par::Rayon(2)).unwrap();
                        std::hint::black_box(&gr);
                    },
                    0.3,
                )
            });
            println!(
                "{{\"kind\":\"activation\",\"name\":\"{}\",\"rows\":{n},\"cols\":{k},\"iem_2t\":{t:e}}}",
                act.name()
            );
        }
    }
}
