//! Times the GEMMs of one training step of the MNIST-size model (784→256→256→10, batch
//! 256), with argument `block` of one of its two row blocks (128 rows), or with argument `2d`
//! of the 2-D model (2→64→64→4, batch 256).
use iem_simd::{Gemm, Par};
use std::time::Instant;

fn time(f: &mut dyn FnMut()) -> f64 {
    f();
    let t = Instant::now();
    let mut it = 0;
    while t.elapsed().as_secs_f64() < 0.3 {
        f();
        it += 1;
    }
    t.elapsed().as_secs_f64() / it as f64
}

fn main() {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    let v = |n: usize| (0..n).map(|i| ((i * 37) % 101) as f32 / 101.0 - 0.5).collect::<Vec<f32>>();
    // (label, kind, m, k, n)
    let mnist = [
        ("fwd1 nt", 'n', 256, 784, 256),
        ("fwd2 nt", 'n', 256, 256, 256),
        ("fwd3 nt", 'n', 256, 256, 10),
        ("dW1 tn", 't', 256, 256, 784),
        ("dW2 tn", 't', 256, 256, 256),
        ("dW3 tn", 't', 10, 256, 256),
        ("dx3 nn", 'm', 256, 10, 256),
        ("dx2 nn", 'm', 256, 256, 256),
    ];
    let two_d = [
        ("fwd1 nt", 'n', 256, 2, 64),
        ("fwd2 nt", 'n', 256, 64, 64),
        ("fwd3 nt", 'n', 256, 64, 4),
        ("dW1 tn", 't', 64, 256, 2),
        ("dW2 tn", 't', 64, 256, 64),
        ("dW3 tn", 't', 4, 256, 64),
        ("dx3 nn", 'm', 256, 4, 64),
        ("dx2 nn", 'm', 256, 64, 64),
    ];
    // One of two row blocks of the MNIST-size step (what `row_blocks = 2` runs per block).
    let block = [
        ("fwd1 nt", 'n', 128, 784, 256),
        ("fwd2 nt", 'n', 128, 256, 256),
        ("fwd3 nt", 'n', 128, 256, 10),
        ("dW1 tn", 't', 256, 128, 784),
        ("dW2 tn", 't', 256, 128, 256),
        ("dW3 tn", 't', 10, 128, 256),
        ("dx3 nn", 'm', 128, 10, 256),
        ("dx2 nn", 'm', 128, 256, 256),
    ];
    let shapes = match std::env::args().nth(1).as_deref() {
        Some("2d") => two_d,
        Some("block") => block,
        _ => mnist,
    };

    let mut tot = [0.0; 2];
    for (label, kind, m, k, n) in shapes {
        let a = v(m * k);
        let b = v(k * n);
        let mut c = vec![0.0f32; m * n];
        let mut r = [0.0; 2];
        for (ti, par) in [Par::Seq, Par::Rayon(2)].into_iter().enumerate() {
            let g = match kind {
                'n' => Gemm::nt(m, k, n, &a, &b),
                't' => Gemm::tn(m, k, n, &a, &b),
                _ => Gemm::nn(m, k, n, &a, &b),
            };
            r[ti] = pool.install(|| time(&mut || g.run(&mut c, par)));
            tot[ti] += r[ti];
        }
        let fl = 2.0 * (m * k * n) as f64;
        println!(
            "{label:10} {m}x{k}x{n}: 1T {:.1} us ({:.0} GF/s), 2T {:.1} us ({:.0} GF/s)",
            r[0] * 1e6,
            fl / r[0] / 1e9,
            r[1] * 1e6,
            fl / r[1] / 1e9
        );
    }
    println!(
        "total: 1T {:.0} us, 2T {:.0} us -> {:.0} steps/s GEMM-only at 2T",
        tot[0] * 1e6,
        tot[1] * 1e6,
        1.0 / tot[1]
    );
}
