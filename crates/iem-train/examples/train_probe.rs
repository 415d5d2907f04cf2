//! Training steps per second of the benchmark models, 2 threads, one JSON object per line,
//! for `scripts/bench_peers.py --train`:
//! `cargo run --release -p iem-train --example train_probe`
//!
//! Models: 2-D (2→64→64→4, batch 256), digits-size (64→256→256→10, batch 128) and
//! MNIST-size (784→256→256→10, batch 256), each with ReLU, softmax, SoLU, log-softmax and
//! grouped softmax (m = 8) after both hidden layers; cross-entropy; Adam (1e-3); random data
//! from a fixed seed.

use iem_activations::{Activation, Temperature};
use iem_simd::Par;
use iem_tensor::Matrix;
use iem_train::optim::OptimConfig;
use iem_train::train::{self, Loss, TrainConfig};
use iem_train::{Init, Model};
use std::time::Instant;

fn main() {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    let acts = [
        ("relu", Activation::Relu),
        ("softmax", Activation::Softmax { temperature: Temperature::Fixed(1.0) }),
        ("solu", Activation::Solu),
        ("log_softmax", Activation::LogSoftmax),
        ("grouped_softmax_m8", Activation::GroupedSoftmax { group: 8, tau: 1.0 }),
    ];
    for (name, sizes, batch) in [
        ("2d", [2usize, 64, 64, 4], 256usize),
        ("digits", [64, 256, 256, 10], 128),
        ("mnist", [784, 256, 256, 10], 256),
    ] {
        let n = batch * 8;
        let x =
            Matrix::from_fn(n, sizes[0], |i, j| (((i * 131 + j * 17) % 97) as f32) / 97.0 - 0.5);
        let y: Vec<usize> = (0..n).map(|i| i % sizes[3]).collect();
        for (an, act) in &acts {
            let mut m =
                Model::mlp(&sizes, &[act.clone(), act.clone()], Init::PytorchDefault, 1).unwrap();
            let cfg = TrainConfig {
                epochs: 1,
                batch,
                seed: 1,
                optim: OptimConfig::adam(1e-3),
                par: Par::Rayon(2),
                ..TrainConfig::default()
            };
            let loss = Loss::CrossEntropy(y.clone());
            // warm up, then time whole epochs (8 steps each) for at least 1.5 s
            pool.install(|| train::end_to_end(&mut m, &x, &loss, &[], &cfg, &mut ()).unwrap());
            let t = Instant::now();
            let mut steps = 0;
            while t.elapsed().as_secs_f64() < 1.5 {
                pool.install(|| train::end_to_end(&mut m, &x, &loss, &[], &cfg, &mut ()).unwrap());
                steps += 8;
            }
            let sps = steps as f64 / t.elapsed().as_secs_f64();
            println!(
                "{{\"kind\":\"train\",\"model\":\"{name}\",\"activation\":\"{an}\",\"batch\":{batch},\"iem_steps_per_s\":{sps:.1}}}"
            );
        }
    }
}
