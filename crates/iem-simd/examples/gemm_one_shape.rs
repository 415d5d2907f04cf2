//! Profiling target: one GEMM shape in a loop, `gemm_one_shape M K N [nn|nt|tn] [iters]`.
use iem_simd::{Gemm, Par};
fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let p = |i: usize, d: usize| a.get(i).and_then(|v| v.parse().ok()).unwrap_or(d);
    let (m, k, n) = (p(0, 256), p(1, 2), p(2, 64));
    let kind = a.get(3).map(String::as_str).unwrap_or("nt");
    let iters = p(4, 100_000);
    let va: Vec<f32> = (0..m * k).map(|i| ((i * 37) % 101) as f32 / 101.0 - 0.5).collect();
    let vb: Vec<f32> = (0..k * n).map(|i| ((i * 31) % 97) as f32 / 97.0 - 0.5).collect();
    let mut c = vec![0.0f32; m * n];
    let g = match kind {
        "nn" => Gemm::nn(m, k, n, &va, &vb),
        "tn" => Gemm::tn(m, k, n, &va, &vb),
        _ => Gemm::nt(m, k, n, &va, &vb),
    };
    let t = std::time::Instant::now();
    for _ in 0..iters {
        g.run(&mut c, Par::Seq);
    }
    println!("{:.2} us per call", t.elapsed().as_secs_f64() / iters as f64 * 1e6);
}
