//! Model gradients against finite differences for every layer kind, determinism across
//! thread counts, typed failures, greedy and end-to-end training, probes, and checkpoint
//! robustness under thousands of corrupted inputs.

use iem_activations::check::{Tolerance, check_directional};
use iem_activations::{Activation, Temperature};
use iem_losses::volume::VolumeControl;
use iem_simd::Par;
use iem_tensor::Matrix;
use iem_train::checkpoint::{self, CheckpointError};
use iem_train::optim::{Method, OptimConfig};
use iem_train::train::{
    self, AlarmAction, Alarms, Aux, AuxKind, Convergence, Loss, Observer, Recorder, Stage,
    TrainConfig,
};
use iem_train::{Init, Layer, Model, TrainError, probe};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn flat(m: &Model) -> Vec<f64> {
    m.layers
        .iter()
        .flat_map(|l| {
            l.params().into_iter().flat_map(|p| p.iter().map(|&v| v as f64).collect::<Vec<_>>())
        })
        .collect()
}

fn set_flat(m: &mut Model, v: &[f64]) {
    let mut i = 0;
    for l in m.layers.iter_mut() {
        for p in l.params_mut() {
            for x in p.iter_mut() {
                *x = v[i] as f32;
                i += 1;
            }
        }
    }
}

fn loss_of(m: &Model, x: &Matrix, y: &[usize]) -> f64 {
    let out = m.predict(x, Par::Seq).unwrap();
    iem_losses::loss::cross_entropy(
        out.as_slice(),
        y,
        out.cols(),
        iem_losses::loss::Reduction::Mean,
    )
    .unwrap()
    .value
}

fn grad_of(m: &Model, x: &Matrix, y: &[usize]) -> Vec<f64> {
    let t = m.forward(x, Par::Seq).unwrap();
    let out = t.output();
    let o = iem_losses::loss::cross_entropy(
        out.as_slice(),
        y,
        out.cols(),
        iem_losses::loss::Reduction::Mean,
    )
    .unwrap();
    let g = Matrix::from_vec(out.rows(), out.cols(), o.grad).unwrap();
    let (grads, _) = m.backward_range(&t, 0, g, &[], Par::Seq).unwrap();
    grads.into_iter().flatten().flatten().map(|v| v as f64).collect()
}

fn models() -> Vec<Model> {
    let mut r = ChaCha8Rng::seed_from_u64(1);
    let mut mats = |a, b| Matrix::from_fn(a, b, |_, _| r.random_range(-1.0f32..1.0));
    let mut v = vec![
        Model::mlp(
            &[3, 6, 6, 3],
            &[
                Activation::Softmax { temperature: Temperature::Learned(0.8) },
                Activation::LayerNorm { eps: 1e-5 },
            ],
            Init::PytorchDefault,
            2,
        )
        .unwrap(),
        Model::mlp(
            &[3, 6, 6, 3],
            &[Activation::Solu, Activation::GroupedSoftmax { group: 3, tau: 0.7 }],
            Init::XavierUniform,
            3,
        )
        .unwrap(),
        Model::mlp(&[3, 6, 3], &[Activation::Entmax15], Init::Normal(0.8), 4).unwrap(),
    ];
    let (w, b) = (mats(5, 3), vec![0.1f32; 5]);
    let mu = mats(4, 5);
    let (w2, b2) = (mats(3, 4), vec![0.0f32; 3]);
    v.push(Model {
        layers: vec![
            Layer::Linear { w, b },
            Layer::Euclidean { mu, tau: 0.9 },
            Layer::Act { act: Activation::Nls, params: vec![], width: 4 },
            Layer::Linear { w: w2, b: b2 },
        ],
    });
    {
        use iem_losses::distance::{DiagGaussian, FullGaussian, OffsetL2, ReluDistance};
        use iem_train::Distance;
        let mut dg = DiagGaussian::new(4, 3, mats(4, 3).into_vec());
        dg.log_sigma = mats(4, 3).map(|v| 0.3 * v).into_vec();
        let fg = FullGaussian::<f32>::from_gaussians(
            3,
            &[vec![0.0; 3], vec![0.5, -0.5, 0.2]],
            &[
                vec![1.0, 0.2, 0.0, 0.2, 1.5, 0.1, 0.0, 0.1, 0.8],
                vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
            ],
        )
        .unwrap();
        let ol = OffsetL2 {
            alpha: mats(4, 3).map(|v| 1.0 + 0.3 * v).into_vec(),
            mu: mats(4, 3).into_vec(),
            k: 4,
            d: 3,
        };
        let rd = ReluDistance { w: mats(4, 3).into_vec(), b: vec![0.3f32; 4], k: 4, d: 3 };
        for (dist, k) in [
            (Distance::Diag(dg), 4),
            (Distance::Full(fg), 2),
            (Distance::OffsetL2(ol), 4),
            (Distance::Relu(rd), 4),
        ] {
            let (w3, b3) = (mats(3, k), vec![0.0f32; 3]);
            v.push(Model {
                layers: vec![
                    Layer::Distance(dist),
                    Layer::Act { act: Activation::Nls, params: vec![], width: k },
                    Layer::Linear { w: w3, b: b3 },
                ],
            });
        }
    }
    let (w, b) = (mats(4, 3), vec![0.0f32; 4]);
    v.push(Model {
        layers: vec![
            Layer::Linear { w, b },
            Layer::ProtoAttention { mu: mats(5, 4), v: mats(5, 3), tau: 0.6 },
        ],
    });
    v
}

#[test]
fn model_gradients_pass_the_checker() {
    let mut r = ChaCha8Rng::seed_from_u64(5);
    let x = Matrix::from_fn(7, 3, |_, _| r.random_range(-1.5f32..1.5));
    let y: Vec<usize> = (0..7).map(|i| i % 3).collect();
    // f32 forward passes: step 1e-3 with Richardson, tolerances set by f32 rounding.
    let tol = Tolerance { step: 1e-2, rtol: 2e-3, atol: 1e-5, richardson: true };
    for (mi, m) in models().into_iter().enumerate() {
        let p0 = flat(&m);
        let g = grad_of(&m, &x, &y);
        let f = |p: &[f64]| {
            let mut mm = m.clone();
            set_flat(&mut mm, p);
            loss_of(&mm, &x, &y)
        };
        check_directional(f, &p0, &g, 8, mi as u64, tol)
            .unwrap_or_else(|e| panic!("model {mi}: {e}"));
    }
}

fn toy(n: usize, seed: u64) -> (Matrix, Vec<usize>) {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    let y: Vec<usize> = (0..n).map(|i| i % 3).collect();
    let x = Matrix::from_fn(n, 2, |i, j| {
        let c = [(0.0, 2.0), (2.0, -1.0), (-2.0, -1.0)][y[i]];
        (if j == 0 { c.0 } else { c.1 }) + r.random_range(-0.6f32..0.6)
    });
    (x, y)
}

#[test]
fn same_weights_bit_for_bit_with_1_or_2_threads() {
    let (x, y) = toy(300, 7);
    let run = |par: Par| {
        let mut m = Model::mlp(
            &[2, 64, 64, 3],
            &[Activation::Softmax { temperature: Temperature::Learned(1.0) }, Activation::Solu],
            Init::PytorchDefault,
            11,
        )
        .unwrap();
        let cfg = TrainConfig {
            epochs: 3,
            batch: 64,
            seed: 5,
            optim: OptimConfig::adam(1e-2),
            par,
            ..TrainConfig::default()
        };
        train::end_to_end(
            &mut m,
            &x,
            &Loss::CrossEntropy(y.clone()),
            &[Aux {
                layer: 1,
                kind: AuxKind::Control { control: VolumeControl::Balance { weight: 0.1 } },
            }],
            &cfg,
            &mut (),
        )
        .unwrap();
        m
    };
    let one =
        rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(|| run(Par::Seq));
    let two = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap()
        .install(|| run(Par::Rayon(2)));
    assert_eq!(one, two);
}

#[test]
fn end_to_end_learns_and_observes() {
    let (x, y) = toy(240, 8);
    let mut m = Model::mlp(
        &[2, 16, 3],
        &[Activation::GroupedSoftmax { group: 4, tau: 1.0 }],
        Init::PytorchDefault,
        3,
    )
    .unwrap();
    let m0 = m.clone();
    let cfg = TrainConfig {
        epochs: 40,
        batch: 32,
        seed: 1,
        optim: OptimConfig::adam(2e-2),
        ..TrainConfig::default()
    };
    let mut rec = Recorder::default();
    let rep =
        train::end_to_end(&mut m, &x, &Loss::CrossEntropy(y.clone()), &[], &cfg, &mut rec).unwrap();
    assert_eq!(rep.steps, 40 * 8);
    // An observer that does not want the zero-sum residuals gets none, and the run is the
    // same bit for bit.
    struct Quiet(usize);
    impl Observer for Quiet {
        fn on_step(&mut self, info: &train::StepInfo) {
            assert!(info.zero_sum.is_empty());
            assert_eq!(info.grad_norms.len(), 3);
            self.0 += 1;
        }
        fn wants_zero_sum(&self) -> bool {
            false
        }
    }
    let (mut quiet, mut q) = (m0, Quiet(0));
    train::end_to_end(&mut quiet, &x, &Loss::CrossEntropy(y.clone()), &[], &cfg, &mut q).unwrap();
    assert_eq!((q.0, flat(&quiet)), (40 * 8, flat(&m)));
    assert!(
        rep.final_loss < rep.epoch_loss[0] * 0.5,
        "loss {:?}",
        (rep.epoch_loss[0], rep.final_loss)
    );
    // the grouped-softmax layer (index 1) is zero-sum: its residual is rounding only
    assert!(rec.steps.iter().all(|s| s.zero_sum.len() == 1));
    assert!(rec.steps.iter().all(|s| s.zero_sum.iter().all(|&(l, r)| l == 1 && r < 1e-5)));
    let out = m.predict(&x, Par::Seq).unwrap();
    let acc = (0..240)
        .filter(|&i| {
            let r = out.row(i);
            let p = (0..3).max_by(|&a, &b| r[a].total_cmp(&r[b])).unwrap();
            p == y[i]
        })
        .count();
    assert!(acc > 220, "accuracy {acc}/240");
}

#[test]
fn failures_are_typed() {
    let (x, y) = toy(30, 9);
    let mut m = Model::mlp(&[2, 4, 3], &[Activation::Relu], Init::PytorchDefault, 1).unwrap();
    // exploding learning rate: a non-finite value is reported with its step and place
    let cfg = TrainConfig {
        epochs: 200,
        batch: 10,
        seed: 1,
        optim: OptimConfig::sgd(1e30, 0.0),
        ..TrainConfig::default()
    };
    match train::end_to_end(&mut m, &x, &Loss::CrossEntropy(y.clone()), &[], &cfg, &mut ()) {
        Err(TrainError::NonFinite { step, quantity, .. }) => {
            assert!(step < 200 * 3 && !quantity.is_empty())
        }
        other => panic!("expected a NonFinite error, got {other:?}"),
    }
    let mut bad = x.clone();
    bad.set(3, 1, f32::NAN);
    assert!(matches!(
        train::end_to_end(
            &mut m,
            &bad,
            &Loss::CrossEntropy(y.clone()),
            &[],
            &TrainConfig::default(),
            &mut ()
        ),
        Err(TrainError::NonFinite { quantity: "input", .. })
    ));
    assert!(matches!(
        train::end_to_end(
            &mut m,
            &x,
            &Loss::CrossEntropy(vec![0; 3]),
            &[],
            &TrainConfig::default(),
            &mut ()
        ),
        Err(TrainError::Config(_))
    ));
    assert!(
        Model::mlp(
            &[2, 4, 3],
            &[Activation::GroupedSoftmax { group: 3, tau: 1.0 }],
            Init::PytorchDefault,
            1
        )
        .is_err()
    );
    // a collapse alarm that stops
    let mut wta = Model::mlp(
        &[2, 4, 3],
        &[Activation::Softmax { temperature: Temperature::Fixed(0.01) }],
        Init::Normal(5.0),
        2,
    )
    .unwrap();
    let cfg = TrainConfig {
        epochs: 1,
        batch: 10,
        alarms: Alarms { max_usage: Some(0.3), dead_units: None, action: AlarmAction::Stop },
        ..TrainConfig::default()
    };
    assert!(matches!(
        train::end_to_end(&mut wta, &x, &Loss::CrossEntropy(y), &[], &cfg, &mut ()),
        Err(TrainError::Collapse { .. })
    ));
}

#[test]
fn greedy_then_fine_tune_and_probes() {
    let (x, y) = toy(150, 10);
    let mut r = ChaCha8Rng::seed_from_u64(3);
    let mu = Matrix::from_fn(6, 2, |_, _| r.random_range(-2.0f32..2.0));
    let (w, b) = Init::PytorchDefault.linear(3, 6, &mut r);
    let mut m = Model {
        layers: vec![
            Layer::Euclidean { mu, tau: 0.5 },
            Layer::Act { act: Activation::Nls, params: vec![], width: 6 },
            Layer::Linear { w, b },
        ],
    };
    let cfg = TrainConfig { batch: 0, optim: OptimConfig::adam(5e-2), ..TrainConfig::default() };
    let stages =
        [Stage { layers: 0..1, negate: false, control: VolumeControl::Balance { weight: 0.5 } }];
    let rep = train::greedy(
        &mut m,
        &x,
        &stages,
        Convergence { rel_tol: 1e-4, max_epochs: 300 },
        &cfg,
        &mut (),
    )
    .unwrap();
    assert!(rep[0].epochs >= 2 && rep[0].final_loss.is_finite());
    let before = m.clone();
    // fine-tune the read-out and everything else, keeping the layer-0 objective
    let ft = TrainConfig {
        epochs: 30,
        batch: 30,
        optim: OptimConfig::adam(1e-2),
        ..TrainConfig::default()
    };
    train::end_to_end(
        &mut m,
        &x,
        &Loss::CrossEntropy(y.clone()),
        &[Aux { layer: 0, kind: AuxKind::Lse { weight: 0.1, negate: false, sum: false } }],
        &ft,
        &mut (),
    )
    .unwrap();
    assert_ne!(before, m);
    // probes on the frozen layer-1 features
    let feats = m.forward_range(&x, 0, 2, Par::Seq).unwrap().output().clone();
    let p = probe::ridge(&feats, &y, 3, 1e-3).unwrap();
    assert!(p.accuracy(&feats, &y) > 0.9);
    let lg = probe::logistic(&feats, &y, 3, 200, 1).unwrap();
    assert!(lg.accuracy(&feats, &y) > 0.9);
    assert!(probe::ridge_r2(&x, &x, 1e-6).unwrap() > 0.999);
}

#[test]
fn checkpoints_roundtrip_and_reject_garbage() {
    let m = models().remove(3);
    let bytes = checkpoint::encode(&m, 42).unwrap();
    assert_eq!(checkpoint::decode::<Model>(&bytes, Some(42)).unwrap(), m);
    assert!(matches!(
        checkpoint::decode::<Model>(&bytes, Some(43)),
        Err(CheckpointError::ConfigMismatch { .. })
    ));
    assert!(matches!(
        checkpoint::decode::<Model>(b"PK\x03\x04 a zip file", None),
        Err(CheckpointError::Foreign)
    ));
    assert!(matches!(
        checkpoint::decode::<Model>(&bytes[..bytes.len() - 1], None),
        Err(CheckpointError::Truncated { .. })
    ));
    let mut v2 = bytes.clone();
    v2[8] = 2;
    assert!(matches!(checkpoint::decode::<Model>(&v2, None), Err(CheckpointError::Version(2))));
    // a forged huge length field
    let mut big = bytes.clone();
    big[20..28].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(checkpoint::decode::<Model>(&big, None), Err(CheckpointError::TooLarge(_))));
    // thousands of random and mutated inputs: always an error, never a panic
    let mut r = ChaCha8Rng::seed_from_u64(99);
    for i in 0..5000 {
        let input: Vec<u8> = if i % 2 == 0 {
            let n = r.random_range(0..200usize);
            (0..n).map(|_| r.random_range(0..=255u8)).collect()
        } else {
            let mut b = bytes.clone();
            for _ in 0..r.random_range(1..4usize) {
                let at = r.random_range(0..b.len());
                b[at] = r.random_range(0..=255u8);
            }
            if r.random_bool(0.3) {
                b.truncate(r.random_range(0..b.len()));
            }
            b
        };
        if input == bytes {
            continue;
        }
        assert!(checkpoint::decode::<Model>(&input, None).is_err(), "input {i} decoded");
    }
    // a payload whose checksum is valid but whose content is garbage (forged): bounded decode
    let mut forged = bytes[..36].to_vec();
    let payload: Vec<u8> = vec![0xff; 64];
    forged[20..28].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    let sum = checkpoint::checksum(&forged[8..28], &payload);
    forged[28..36].copy_from_slice(&sum.to_le_bytes());
    forged.extend_from_slice(&payload);
    assert!(matches!(checkpoint::decode::<Model>(&forged, None), Err(CheckpointError::Decode(_))));
    // atomic save and load
    let dir = std::env::temp_dir().join(format!("iem-ckpt-{}", std::process::id()));
    let path = dir.join("model.ckpt");
    checkpoint::save(&path, &m, 7).unwrap();
    assert_eq!(checkpoint::load::<Model>(&path, Some(7)).unwrap(), m);
    assert!(matches!(
        checkpoint::load::<Model>(&dir.join("missing.ckpt"), None),
        Err(CheckpointError::Io(_))
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn auxiliary_objectives_pass_the_checker() {
    let mut r = ChaCha8Rng::seed_from_u64(11);
    // Entries kept away from 0 so the L1 kink is not crossed by the finite differences.
    let a0: Vec<f64> = (0..9 * 5)
        .map(|_| {
            let v: f64 = r.random_range(0.2..1.5);
            if r.random_range(0.0..1.0) < 0.5 { -v } else { v }
        })
        .collect();
    let kinds = [
        AuxKind::Lse { weight: 0.7, negate: false, sum: true },
        AuxKind::Lse { weight: 0.7, negate: true, sum: false },
        AuxKind::L1 { weight: 0.3 },
        AuxKind::SoftmaxBalance { weight: 1.3, negate: true },
        AuxKind::Responsibilities {
            control: VolumeControl::Balance { weight: 1.3 },
            negate: false,
        },
        AuxKind::Responsibilities { control: VolumeControl::Balance { weight: 0.9 }, negate: true },
        AuxKind::Responsibilities {
            control: VolumeControl::UsageEntropy { weight: 0.8 },
            negate: false,
        },
        AuxKind::Responsibilities {
            control: VolumeControl::MutualInformation { weight: 0.6 },
            negate: true,
        },
    ];
    let tol = Tolerance { step: 1e-2, rtol: 2e-3, atol: 1e-5, richardson: true };
    for (i, kind) in kinds.iter().enumerate() {
        let m = |p: &[f64]| Matrix::from_fn(9, 5, |r, c| p[r * 5 + c] as f32);
        let (_, g) = train::aux_objective(kind, &m(&a0)).unwrap();
        let g: Vec<f64> = g.unwrap().as_slice().iter().map(|&v| v as f64).collect();
        let f = |p: &[f64]| train::aux_objective(kind, &m(p)).unwrap().0;
        check_directional(f, &a0, &g, 8, i as u64, tol).unwrap_or_else(|e| panic!("{kind:?}: {e}"));
    }
    // The sum convention is the mean times the batch size.
    let a = Matrix::from_fn(9, 5, |r, c| a0[r * 5 + c] as f32);
    let s = train::aux_objective(&AuxKind::Lse { weight: 1.0, negate: false, sum: true }, &a)
        .unwrap()
        .0;
    let m = train::aux_objective(&AuxKind::Lse { weight: 1.0, negate: false, sum: false }, &a)
        .unwrap()
        .0;
    assert!((s - 9.0 * m).abs() < 1e-9 * s.abs().max(1.0), "{s} vs {m}");
    // Controls that are not about responsibilities are refused with a message.
    let e = train::aux_objective(
        &AuxKind::Responsibilities {
            control: VolumeControl::Decorrelation { weight: 1.0 },
            negate: false,
        },
        &a,
    )
    .unwrap_err();
    assert!(e.to_string().contains("not a control on responsibilities"), "{e}");
}

/// One full-batch SGD step (lr 1) of `m` with `blocks` row blocks: the weight change is
/// minus the gradient. Also returns what the observer saw.
fn one_sgd_step(
    m: &Model,
    x: &Matrix,
    loss: &Loss,
    blocks: usize,
    par: Par,
) -> (Vec<f64>, train::StepInfo) {
    let mut mm = m.clone();
    let cfg = TrainConfig {
        epochs: 1,
        batch: 0,
        optim: OptimConfig::sgd(1.0, 0.0),
        row_blocks: blocks,
        par,
        ..TrainConfig::default()
    };
    let mut rec = Recorder::default();
    train::end_to_end(&mut mm, x, loss, &[], &cfg, &mut rec).unwrap();
    let step: Vec<f64> = flat(m).iter().zip(flat(&mm)).map(|(a, b)| a - b).collect();
    (step, rec.steps.remove(0))
}

#[test]
fn row_blocks_give_the_batch_gradient_for_every_layer_kind() {
    let mut r = ChaCha8Rng::seed_from_u64(6);
    let x = Matrix::from_fn(7, 3, |_, _| r.random_range(-1.5f32..1.5));
    let y: Vec<usize> = (0..7).map(|i| i % 3).collect();
    let ce = Loss::CrossEntropy(y.clone());
    // Plus linear + ReLU pairs, which the trainer computes in place (the finite-difference
    // checker above would straddle ReLU's kinks).
    let relu =
        Model::mlp(&[3, 6, 5, 3], &[Activation::Relu, Activation::Relu], Init::PytorchDefault, 5)
            .unwrap();
    // Hidden widths that are multiples of 64: on AVX-512 those layers' working weights,
    // gradients and optimiser state are kept in the panels of `iem_simd::panel`.
    let wide = Model::mlp(
        &[3, 64, 128, 3],
        &[Activation::Relu, Activation::Softmax { temperature: Temperature::Fixed(1.0) }],
        Init::PytorchDefault,
        8,
    )
    .unwrap();
    for (mi, m) in models().into_iter().chain([relu, wide]).enumerate() {
        let g = grad_of(&m, &x, &y);
        let (whole, info1) = one_sgd_step(&m, &x, &ce, 1, Par::Seq);
        // 7 rows in blocks of 3, 3 and 1; and more blocks than rows (one row each).
        for blocks in [3, 2, 50] {
            let (step, info) = one_sgd_step(&m, &x, &ce, blocks, Par::Seq);
            for (i, ((s, w), gi)) in step.iter().zip(&whole).zip(&g).enumerate() {
                // f32 parameters: the step equals the gradient to the parameter's rounding.
                let tol = 1e-5 * (1.0 + gi.abs()) + 2e-7 * flat(&m)[i].abs();
                assert!(
                    (s - gi).abs() <= tol,
                    "model {mi}, blocks {blocks}, param {i}: {s} vs {gi}"
                );
                assert!((s - w).abs() <= tol, "model {mi}, blocks {blocks}, param {i}: {s} vs {w}");
            }
            assert!((info.loss - info1.loss).abs() <= 1e-6 * info1.loss.abs(), "model {mi}");
            assert_eq!(info.grad_norms.len(), info1.grad_norms.len());
            for (a, b) in info.grad_norms.iter().zip(&info1.grad_norms) {
                assert!((a - b).abs() <= 1e-5 * (1.0 + b), "model {mi}: norms {a} vs {b}");
            }
            assert_eq!(info.zero_sum.len(), info1.zero_sum.len(), "model {mi}");
            for (a, b) in info.zero_sum.iter().zip(&info1.zero_sum) {
                assert_eq!(a.0, b.0);
                assert!((a.1 - b.1).abs() <= 1e-6, "model {mi}: residual {a:?} vs {b:?}");
            }
        }
    }
    // The other row-separable objectives, on a model whose output suits them.
    let m = Model::mlp(&[3, 5, 4], &[Activation::Solu], Init::PytorchDefault, 9).unwrap();
    let t = Matrix::from_fn(7, 4, |i, j| ((i * 3 + j) % 5) as f32 * 0.2);
    for loss in [Loss::Mse(t), Loss::Lse] {
        let (whole, _) = one_sgd_step(&m, &x, &loss, 1, Par::Seq);
        let (step, _) = one_sgd_step(&m, &x, &loss, 3, Par::Seq);
        for (s, w) in step.iter().zip(&whole) {
            assert!((s - w).abs() <= 1e-5 * (1.0 + w.abs()), "{loss:?}: {s} vs {w}");
        }
    }
}

#[test]
fn row_blocks_are_deterministic_and_checked() {
    let (x, y) = toy(300, 3);
    let run = |par: Par, blocks: usize, aux: bool| {
        let mut m = Model::mlp(
            &[2, 32, 32, 3],
            &[Activation::Softmax { temperature: Temperature::Learned(1.0) }, Activation::Relu],
            Init::PytorchDefault,
            4,
        )
        .unwrap();
        let cfg = TrainConfig {
            epochs: 2,
            batch: 64,
            seed: 2,
            optim: OptimConfig::adam(1e-2),
            row_blocks: blocks,
            par,
            ..TrainConfig::default()
        };
        let aux = if aux {
            vec![Aux {
                layer: 1,
                kind: AuxKind::Control { control: VolumeControl::Balance { weight: 0.1 } },
            }]
        } else {
            vec![]
        };
        train::end_to_end(&mut m, &x, &Loss::CrossEntropy(y.clone()), &aux, &cfg, &mut ())
            .map(|_| m)
    };
    let pool = |n| rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap();
    // Same blocks, 1 or 2 threads: the same weights bit for bit.
    let one = pool(1).install(|| run(Par::Seq, 2, false)).unwrap();
    let two = pool(2).install(|| run(Par::Rayon(2), 2, false)).unwrap();
    assert_eq!(one, two);
    let four = pool(2).install(|| run(Par::Rayon(2), 4, false)).unwrap();
    assert_ne!(one, four, "the block count is part of the configuration");
    // Auxiliary objectives couple a batch's rows: those steps run as one block.
    let whole = pool(2).install(|| run(Par::Rayon(2), 1, true)).unwrap();
    let blocked = pool(2).install(|| run(Par::Rayon(2), 2, true)).unwrap();
    assert_eq!(whole, blocked);
    assert!(matches!(run(Par::Seq, 0, false), Err(TrainError::Config(_))));
    // A non-finite activation inside a block names its step and layer.
    let mut m = Model::mlp(&[2, 4, 3], &[Activation::Relu], Init::PytorchDefault, 1).unwrap();
    if let Layer::Linear { w, .. } = &mut m.layers[0] {
        w.set(1, 0, f32::INFINITY);
    }
    let cfg = TrainConfig { row_blocks: 2, ..TrainConfig::default() };
    match train::end_to_end(&mut m, &x, &Loss::CrossEntropy(y.clone()), &[], &cfg, &mut ()) {
        Err(TrainError::NonFinite { step: 0, layer: Some(0), quantity: "activation" }) => {}
        other => panic!("expected a non-finite activation at step 0, layer 0, got {other:?}"),
    }
    // Weights made non-finite by the update (here the largest finite learning rate on
    // inputs of magnitude 1e3, so that lr · gradient overflows) are named with their layer
    // (the check runs inside the update's chunks), on 1 or 2 threads alike — also for
    // layers 64 and 128 wide, whose working weights are kept in panels on AVX-512 (the
    // model then gets the failed update back from the panels).
    let x = Matrix::from_vec(x.rows(), x.cols(), x.as_slice().iter().map(|v| v * 1e3).collect())
        .unwrap();
    let cases: [(&[usize], &[Activation], usize); 3] = [
        (&[2, 4, 3], &[Activation::Relu], 1),
        (&[2, 4, 3], &[Activation::Relu], 2),
        (&[2, 64, 128, 3], &[Activation::Relu, Activation::LogSoftmax], 1),
    ];
    for (widths, acts, threads) in cases {
        let par = if threads == 1 { Par::Seq } else { Par::Rayon(2) };
        let mut m = Model::mlp(widths, acts, Init::PytorchDefault, 1).unwrap();
        let cfg = TrainConfig {
            epochs: 1,
            optim: OptimConfig::sgd(f32::MAX, 0.0),
            row_blocks: 2,
            par,
            ..TrainConfig::default()
        };
        let r = pool(threads).install(|| {
            train::end_to_end(&mut m, &x, &Loss::CrossEntropy(y.clone()), &[], &cfg, &mut ())
        });
        match r {
            Err(TrainError::NonFinite { layer: Some(_), quantity: "weight", .. }) => {}
            other => panic!("expected a non-finite weight, got {other:?}"),
        }
        // The model holds the update that failed (the trainer's working copy was written
        // back), as without row blocks.
        assert!(flat(&m).iter().any(|v| !v.is_finite()));
    }
}

/// Linear layers whose width is a multiple of 64 keep their working weights in panels
/// (`iem_simd::panel`) on AVX-512: 1 or 2 threads still give the same bits over several
/// Adam epochs (their non-finite weights: `row_blocks_are_deterministic_and_checked`).
#[test]
fn row_blocks_with_panel_wide_layers_keep_the_bits() {
    let (x, y) = toy(300, 8);
    let model = || {
        Model::mlp(
            &[2, 64, 128, 3],
            &[Activation::Relu, Activation::LogSoftmax],
            Init::PytorchDefault,
            3,
        )
        .unwrap()
    };
    let run = |par: Par| {
        let mut m = model();
        let cfg = TrainConfig {
            epochs: 3,
            batch: 64,
            seed: 4,
            optim: OptimConfig::adam(1e-2),
            row_blocks: 2,
            par,
            ..TrainConfig::default()
        };
        train::end_to_end(&mut m, &x, &Loss::CrossEntropy(y.clone()), &[], &cfg, &mut ()).unwrap();
        m
    };
    let pool = |n| rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap();
    let one = pool(1).install(|| run(Par::Seq));
    assert_eq!(pool(2).install(|| run(Par::Rayon(2))), one);
    assert_ne!(one, model(), "the run trained");
}

/// With row blocks on a pool's worker, the pool's other threads poll for the step's work
/// for the whole run: the weights do not depend on how many threads the pool has, how many
/// of them the run may use, or how many blocks there are per thread, nor on whether the
/// run was started on a worker at all; and a panic in the run (here an observer's) reaches
/// the caller instead of leaving a helper polling forever.
#[test]
fn row_blocks_with_polling_helpers_keep_the_bits_and_let_panics_out() {
    let (x, y) = toy(300, 7);
    let run = |par: Par, blocks: usize| {
        let mut m = Model::mlp(
            &[2, 24, 24, 3],
            &[Activation::Relu, Activation::LogSoftmax],
            Init::PytorchDefault,
            6,
        )
        .unwrap();
        let cfg = TrainConfig {
            epochs: 3,
            batch: 50,
            seed: 5,
            optim: OptimConfig::adam(1e-2),
            row_blocks: blocks,
            par,
            ..TrainConfig::default()
        };
        train::end_to_end(&mut m, &x, &Loss::CrossEntropy(y.clone()), &[], &cfg, &mut ()).unwrap();
        flat(&m)
    };
    let pool = |n| rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap();
    for blocks in [2, 3] {
        let want = run(Par::Seq, blocks);
        assert_eq!(pool(2).install(|| run(Par::Rayon(2), blocks)), want, "{blocks} blocks");
        assert_eq!(pool(3).install(|| run(Par::Rayon(2), blocks)), want, "{blocks} blocks");
        assert_eq!(pool(2).install(|| run(Par::Rayon(4), blocks)), want, "{blocks} blocks");
        // Not on a worker: no helpers, the plain parallel path.
        assert_eq!(run(Par::Rayon(2), blocks), want, "{blocks} blocks");
    }
    struct Bomb;
    impl Observer for Bomb {
        fn on_step(&mut self, info: &train::StepInfo) {
            assert!(info.step < 5, "observer gives up at step {}", info.step);
        }
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let (xc, yc) = (x.clone(), y.clone());
    std::thread::spawn(move || {
        let r = std::panic::catch_unwind(move || {
            pool(2).install(|| {
                let mut m =
                    Model::mlp(&[2, 8, 3], &[Activation::Relu], Init::PytorchDefault, 1).unwrap();
                let cfg = TrainConfig {
                    epochs: 5,
                    batch: 30,
                    row_blocks: 2,
                    par: Par::Rayon(2),
                    ..TrainConfig::default()
                };
                let _ =
                    train::end_to_end(&mut m, &xc, &Loss::CrossEntropy(yc), &[], &cfg, &mut Bomb);
            })
        });
        let _ = tx.send(r.is_err());
    });
    let panicked = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("a panic inside a run with polling helpers must end the run, not hang it");
    assert!(panicked, "the observer's panic reaches the caller");
}

#[test]
fn row_blocks_backpropagate_through_the_current_weights() {
    // With row blocks the input gradients read `W` (or, for inputs 64 or more wide on
    // AVX-512, its panels), which the trainer refreshes from its working copy after every
    // step (all but the first layer's, whose input gradient is never needed). Several steps
    // within one epoch, with an observer that never asks for the model: a stale `W` would
    // give wrong gradients from the second step on.
    let (x, y) = toy(200, 7);
    let acts = [
        Activation::Relu,
        Activation::Softmax { temperature: Temperature::Fixed(1.0) },
        Activation::Solu,
    ];
    // Narrow layers, and layers whose widths fit panels (64 → 128 → 64 → 3: working weights
    // in panels, and the input gradients of the last three read `W`'s panels).
    for (widths, tol) in [([2, 16, 16, 16, 3], 1e-6), ([2, 64, 128, 64, 3], 1e-6)] {
        let mlp = || Model::mlp(&widths, &acts, Init::PytorchDefault, 8).unwrap();
        let cfg = |blocks| TrainConfig {
            epochs: 1,
            batch: 20,
            seed: 3,
            optim: OptimConfig::sgd(0.5, 0.0),
            row_blocks: blocks,
            ..TrainConfig::default()
        };
        let ce = Loss::CrossEntropy(y.clone());
        let (mut whole, mut blocked) = (mlp(), mlp());
        train::end_to_end(&mut whole, &x, &ce, &[], &cfg(1), &mut ()).unwrap();
        train::end_to_end(&mut blocked, &x, &ce, &[], &cfg(2), &mut ()).unwrap();
        for (i, (a, b)) in flat(&blocked).iter().zip(flat(&whole)).enumerate() {
            assert!(
                (a - b).abs() <= tol * (1.0 + b.abs()),
                "{widths:?}: parameter {i}: {a} vs {b}"
            );
        }
    }
}

#[test]
fn a_non_finite_gradient_names_its_step_and_layer() {
    // Finite activations and loss, but a weight gradient that overflows: tiny first-layer
    // weights keep `W₁x` (≈ 1e-30) and the logits (≈ 1e8) finite, while the huge second layer
    // sends ≈ 1e36 back, and `Σₙ gₙ xₙᵀ` over inputs of magnitude 1e4 exceeds f32::MAX.
    let (x, y) = toy(300, 4);
    let x = Matrix::from_vec(x.rows(), x.cols(), x.as_slice().iter().map(|v| v * 1e4).collect())
        .unwrap();
    let mut m = Model::mlp(&[2, 4, 3], &[Activation::Relu], Init::PytorchDefault, 2).unwrap();
    if let Layer::Linear { w, b } = &mut m.layers[0] {
        for i in 0..4 {
            w.set(i, 0, if i % 2 == 0 { 1e-34 } else { -1e-34 });
            w.set(i, 1, if i < 2 { 1e-34 } else { -1e-34 });
        }
        b.iter_mut().for_each(|v| *v = 0.0);
    }
    if let Layer::Linear { w, b } = &mut m.layers[2] {
        for o in 0..3 {
            for i in 0..4 {
                w.set(o, i, if (o + i) % 3 == 0 { 1e38 } else { -1e38 });
            }
        }
        b.iter_mut().for_each(|v| *v = 0.0);
    }
    let ce = Loss::CrossEntropy(y);
    for (blocks, par) in [(1, Par::Seq), (2, Par::Seq), (2, Par::Rayon(2))] {
        let mut mm = m.clone();
        let cfg = TrainConfig {
            epochs: 1,
            batch: 0,
            optim: OptimConfig::adam(1e-3),
            row_blocks: blocks,
            par,
            ..TrainConfig::default()
        };
        let pool = rayon::ThreadPoolBuilder::new().num_threads(par.degree()).build().unwrap();
        match pool.install(|| train::end_to_end(&mut mm, &x, &ce, &[], &cfg, &mut ())) {
            Err(TrainError::NonFinite { step: 0, layer: Some(0), quantity: "gradient" }) => {}
            other => panic!("{blocks} blocks: expected a non-finite gradient, got {other:?}"),
        }
        // The check runs before the update: the model is as it was.
        assert_eq!(mm, m, "{blocks} blocks");
    }
}

#[test]
fn unshuffled_batches_take_the_data_in_order() {
    // With `shuffle: false` an epoch of batch 100 over 200 rows is one step on rows 0..100 and
    // one on rows 100..200, whatever the seed: the same weights, bit for bit, as two
    // full-batch steps on the halves (plain SGD keeps no state between the calls).
    let (x, y) = toy(200, 9);
    let m0 = Model::mlp(&[2, 8, 3], &[Activation::Relu], Init::PytorchDefault, 4).unwrap();
    let cfg = |batch, seed| TrainConfig {
        epochs: 1,
        batch,
        seed,
        shuffle: false,
        optim: OptimConfig::sgd(0.1, 0.0),
        ..TrainConfig::default()
    };
    let run = |seed| {
        let mut m = m0.clone();
        train::end_to_end(
            &mut m,
            &x,
            &Loss::CrossEntropy(y.clone()),
            &[],
            &cfg(100, seed),
            &mut (),
        )
        .unwrap();
        m
    };
    let mut halves = m0.clone();
    for h in 0..2 {
        let rows: Vec<usize> = (h * 100..(h + 1) * 100).collect();
        let ce = Loss::CrossEntropy(rows.iter().map(|&i| y[i]).collect());
        train::end_to_end(&mut halves, &x.select_rows(&rows), &ce, &[], &cfg(0, 5), &mut ())
            .unwrap();
    }
    assert_eq!(run(1), halves);
    assert_eq!(run(2), halves, "the seed only drives the shuffle");
    // Shuffled (the default), the seed matters.
    let shuffled = |seed| {
        let mut m = m0.clone();
        let c = TrainConfig { shuffle: true, ..cfg(100, seed) };
        train::end_to_end(&mut m, &x, &Loss::CrossEntropy(y.clone()), &[], &c, &mut ()).unwrap();
        m
    };
    assert_ne!(shuffled(1), shuffled(2));
    assert_ne!(shuffled(1), halves);
}

/// Keeps the model seen after every epoch.
#[derive(Default)]
struct Models(Vec<Model>);

impl Observer for Models {
    fn on_model(&mut self, _epoch: usize, model: &Model) {
        self.0.push(model.clone());
    }
}

#[test]
fn row_blocks_keep_the_model_current() {
    // With row blocks the trainer updates its own transposed copy of the linear layers'
    // weights (with Adam's state in that layout); the model must hold every update: after
    // each epoch for an observer that reads it, at the end of the run whatever the observer.
    let (x, y) = toy(200, 5);
    let mlp = || {
        Model::mlp(
            &[2, 24, 24, 3],
            &[Activation::Softmax { temperature: Temperature::Fixed(1.0) }, Activation::Relu],
            Init::PytorchDefault,
            3,
        )
        .unwrap()
    };
    let cfg = |blocks| TrainConfig {
        epochs: 3,
        batch: 50,
        seed: 1,
        optim: OptimConfig::adam(1e-2),
        row_blocks: blocks,
        ..TrainConfig::default()
    };
    let ce = Loss::CrossEntropy(y.clone());
    let (mut whole, mut blocked, mut quiet) = (mlp(), mlp(), mlp());
    train::end_to_end(&mut whole, &x, &ce, &[], &cfg(1), &mut ()).unwrap();
    let mut seen = Models::default();
    train::end_to_end(&mut blocked, &x, &ce, &[], &cfg(2), &mut seen).unwrap();
    train::end_to_end(&mut quiet, &x, &ce, &[], &cfg(2), &mut ()).unwrap();
    assert_eq!(blocked, quiet, "the write-back does not depend on the observer");
    assert_eq!(seen.0.len(), 3);
    assert_eq!(seen.0[2], blocked, "the last epoch's model is the final one");
    assert_ne!(seen.0[0], seen.0[1], "each epoch's model is current");
    // Adam over 12 steps: blocked and whole-batch runs differ only by rounding.
    let init = flat(&mlp());
    for ((a, b), i) in flat(&blocked).iter().zip(flat(&whole)).zip(&init) {
        assert!((a - b).abs() <= 1e-3 * (1.0 + b.abs()), "{a} vs {b}");
        assert!(a != i || b == *i, "a parameter the whole-batch run moved stayed put");
    }
}

#[test]
fn invalid_optimiser_settings_are_config_errors() {
    let (x, y) = toy(40, 3);
    let adam = OptimConfig::adam(1e-3);
    let with = |method| OptimConfig { method, ..adam };
    let cases: Vec<(OptimConfig, &str)> = vec![
        (OptimConfig::adam(f32::NAN), "lr"),
        (OptimConfig::adam(-1e-3), "lr"),
        (OptimConfig::sgd(f32::INFINITY, 0.0), "lr"),
        (OptimConfig::sgd(0.1, -0.9), "momentum"),
        (with(Method::Sgd { momentum: 0.9, weight_decay: f32::NAN }), "weight_decay"),
        (with(Method::Adam { beta1: 1.0, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }), "beta1"),
        (with(Method::AdamW { beta1: 0.9, beta2: -0.1, eps: 1e-8, weight_decay: 0.0 }), "beta2"),
        (with(Method::Adam { beta1: 0.9, beta2: 0.999, eps: f32::NAN, weight_decay: 0.0 }), "eps"),
        (
            with(Method::AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: -1.0 }),
            "weight_decay",
        ),
        (OptimConfig { clip_norm: Some(0.0), ..adam }, "clip_norm"),
        (OptimConfig { clip_norm: Some(f32::INFINITY), ..adam }, "clip_norm"),
    ];
    for (optim, field) in cases {
        let mut m = Model::mlp(&[2, 4, 3], &[Activation::Relu], Init::PytorchDefault, 1).unwrap();
        let before = m.clone();
        let cfg = TrainConfig { epochs: 1, optim, ..TrainConfig::default() };
        match train::end_to_end(&mut m, &x, &Loss::CrossEntropy(y.clone()), &[], &cfg, &mut ()) {
            Err(TrainError::Config(msg)) => assert!(msg.contains(field), "{field}: {msg}"),
            other => panic!("{optim:?}: expected a Config error naming {field}, got {other:?}"),
        }
        assert_eq!(m, before, "a rejected configuration must not touch the model");
    }
    // The accepted edges: lr 0, momentum 0, β = 0, ε = 0, and PyTorch's defaults.
    for optim in [
        OptimConfig::adam(0.0),
        OptimConfig::sgd(0.1, 0.0),
        with(Method::Adam { beta1: 0.0, beta2: 0.0, eps: 0.0, weight_decay: 0.0 }),
        OptimConfig { clip_norm: Some(1.0), ..adam },
    ] {
        assert_eq!(optim.validate(), Ok(()), "{optim:?}");
    }
}
