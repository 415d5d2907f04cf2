//! Timing for the benchmark probes (`examples/`): the median of five timed batches, each at
//! least a fifth of `min_secs` long, after one warm-up call. Not used by any kernel.

use std::time::Instant;

/// Median seconds per call of `f`.
pub fn median_seconds<F: FnMut()>(mut f: F, min_secs: f64) -> f64 {
    f();
    let mut iters = 1usize;
    loop {
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        if t.elapsed().as_secs_f64() > min_secs / 5.0 {
            break;
        }
        iters *= 2;
    }
    let mut v: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            t.elapsed().as_secs_f64() / iters as f64
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[2]
}
