//! Training steps per second of the benchmark models, 2 threads, one JSON object per line,
//! for `scripts/bench_peers.py --train`:
//! `cargo run --release -p iem-train --example train_probe`
//!
//! Models: 2-D (2→64→64→4, batch 256), digits-size (64→256→256→10, batch 128) and
//! MNIST-size (784→256→256→10, batch 256), each with ReLU, softmax, SoLU, log-softmax and
//! grouped softmax (m = 8) after both hidden layers; cross-entropy; Adam (1e-3); random data
//! from a fixed seed, 8 batches taken in order every epoch as in the peers' loops.

use iem_activations::{Activation, Temperature};
use iem_simd::Par;
use iem_tensor::Matrix;
use iem_train::optim::OptimConfig;
use iem_train::train::{self, Loss, TrainConfig};
use iem_train::{Init, Model};
use std::time::Instant;

fn main() {
    // Row blocks per step (data parallelism inside a step; see `TrainConfig::row_blocks`):
    // one per thread unless `IEM_ROW_BLOCKS` says otherwise.
    let blocks: usize =
        std::env::var("IEM_ROW_BLOCKS").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
    // Timed windows per configuration (the best is reported); `bench_peers.py` asks for
    // one at a time to interleave them with the peers' windows.
    let windows: usize =
        std::env::var("IEM_PROBE_WINDOWS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    // The peers' loops in `bench_peers.py` take the same 8 batches in order every epoch; so
    // does our side unless `IEM_PROBE_SHUFFLE=1` (then each epoch draws a permutation and
    // gathers its rows, as `TrainConfig`'s default does).
    let shuffle = std::env::var("IEM_PROBE_SHUFFLE").is_ok_and(|v| v == "1");
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    let acts = [
        ("relu", Activation::Relu),
        ("softmax", Activation::Softmax { temperature: Temperature::Fixed(1.0) }),
        ("solu", Activation::Solu),
        ("log_softmax", Activation::LogSoftmax),
        ("grouped_softmax_m8", Activation::GroupedSoftmax { group: 8, tau: 1.0 }),
    ];
    // Optional filters for profiling: `train_probe [model] [activation]`.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let want = |i: usize, v: &str| args.get(i).is_none_or(|a| a == v);
    for (name, sizes, batch) in [
        ("2d", [2usize, 64, 64, 4], 256usize),
        ("digits", [64, 256, 256, 10], 128),
        ("mnist", [784, 256, 256, 10], 256),
    ] {
        let n = batch * 8;
        let x =
            Matrix::from_fn(n, sizes[0], |i, j| (((i * 131 + j * 17) % 97) as f32) / 97.0 - 0.5);
        let y: Vec<usize> = (0..n).map(|i| i % sizes[3]).collect();
        if !want(0, name) {
            continue;
        }
        for (an, act) in &acts {
            if !want(1, an) {
                continue;
            }
            let mut m =
                Model::mlp(&sizes, &[act.clone(), act.clone()], Init::PytorchDefault, 1).unwrap();
            let cfg = TrainConfig {
                epochs: 1,
                batch,
                seed: 1,
                shuffle,
                optim: OptimConfig::adam(1e-3),
                row_blocks: blocks,
                par: Par::Rayon(2),
                ..TrainConfig::default()
            };
            let loss = Loss::CrossEntropy(y.clone());
            // Warm up (and estimate the rate), then the best of `windows` windows of about
            // 0.5 s, each one run with one optimiser state (as the peers' loops keep theirs).
            let t = Instant::now();
            pool.install(|| train::end_to_end(&mut m, &x, &loss, &[], &cfg, &mut ()).unwrap());
            let per_epoch = t.elapsed().as_secs_f64();
            let epochs = ((0.5 / per_epoch) as usize).clamp(2, 100_000);
            let cfg = TrainConfig { epochs, ..cfg };
            let mut sps = 0.0f64;
            for _ in 0..windows {
                let t = Instant::now();
                let r = pool
                    .install(|| train::end_to_end(&mut m, &x, &loss, &[], &cfg, &mut ()))
                    .unwrap();
                sps = sps.max(r.steps as f64 / t.elapsed().as_secs_f64());
            }
            println!(
                "{{\"kind\":\"train\",\"model\":\"{name}\",\"activation\":\"{an}\",\"batch\":{batch},\"iem_steps_per_s\":{sps:.1}}}"
            );
        }
    }
}
