//! Times the GEMMs of one training step of the MNIST-size model (784→256→256→10, batch
//! 256), with argument `block` of one of its two row blocks (128 rows, weights transposed as
//! the trainer keeps them with row blocks), or with argument `2d` of the 2-D model
//! (2→64→64→4, batch 256); an optional second argument keeps only the GEMMs whose label
//! starts with it (`step_gemms block fwd3`).
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

/// `(label, kind, m, k, n)` of each GEMM of one step of a 3-layer MLP `sizes` on `batch`
/// rows (kind `'n'`: `nt`, `'t'`: `tn`, `'m'`: `nn`); `transposed`: with the weights stored
/// `in × out` (forward `nn`, weight gradient `Xᵀ·G`, input gradient `nt`). The first
/// layer's input gradient is never computed.
fn step_shapes(
    sizes: [usize; 4],
    batch: usize,
    transposed: bool,
) -> Vec<(String, char, usize, usize, usize)> {
    let mut v = Vec::new();
    for l in 0..3 {
        let (i, o) = (sizes[l], sizes[l + 1]);
        let (fwd, dx) = if transposed { ('m', 'n') } else { ('n', 'm') };
        v.push((format!("fwd{}", l + 1), fwd, batch, i, o));
        let dw = if transposed { (i, batch, o) } else { (o, batch, i) };
        v.push((format!("dW{}", l + 1), 't', dw.0, dw.1, dw.2));
        if l > 0 {
            v.push((format!("dx{}", l + 1), dx, batch, o, i));
        }
    }
    v
}

fn main() {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    let v = |n: usize| (0..n).map(|i| ((i * 37) % 101) as f32 / 101.0 - 0.5).collect::<Vec<f32>>();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let shapes = match args.first().map(String::as_str) {
        Some("2d") => step_shapes([2, 64, 64, 4], 256, false),
        Some("block") => step_shapes([784, 256, 256, 10], 128, true),
        _ => step_shapes([784, 256, 256, 10], 256, false),
    };

    // Optional second argument: time only the GEMMs whose label starts with it (`dW`, `fwd3`).
    let only = args.get(1).cloned().unwrap_or_default();
    let mut tot = [0.0; 2];
    for (label, kind, m, k, n) in shapes.into_iter().filter(|s| s.0.starts_with(&only)) {
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
            "{label:5} {:2} {m}x{k}x{n}: 1T {:.1} us ({:.0} GF/s), 2T {:.1} us ({:.0} GF/s)",
            match kind {
                'n' => "nt",
                't' => "tn",
                _ => "nn",
            },
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
