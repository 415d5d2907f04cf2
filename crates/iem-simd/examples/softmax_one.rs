//! Profiling target: softmax forward+backward at 4096×1024, single thread.
use iem_simd::{Par, rows};
fn main() {
    let (r, c) = (4096, 1024);
    let x: Vec<f32> = (0..r * c).map(|i| ((i * 7919) % 101) as f32 * 0.05 - 2.5).collect();
    let g: Vec<f32> = (0..r * c).map(|i| ((i * 31) % 17) as f32 * 0.1 - 0.8).collect();
    let (mut s, mut o) = (vec![0.0; x.len()], vec![0.0; x.len()]);
    let t = std::time::Instant::now();
    for _ in 0..20 {
        rows::softmax(&x, c, 1.0, &mut s, Par::Seq);
        rows::softmax_backward(&s, &g, c, 1.0, &mut o, Par::Seq);
    }
    println!("{:.1} us per fwd+bwd", t.elapsed().as_secs_f64() / 20.0 * 1e6);
}
