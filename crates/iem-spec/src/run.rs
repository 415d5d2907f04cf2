//! The one runner: executes a resolved [`RunSpec`] and returns its metrics and artefacts.
//!
//! Seeds: the data of a run derive from `(experiment, dataset, seed)` and the initial
//! weights from `(experiment, dataset, width, seed)`, so every activation and control at the
//! same seed sees the same data and the same initial weights — the comparisons across seeds
//! are paired.

use crate::{Control, DataSpec, RealData, RunSpec, Runner};
use iem_activations::Activation;
use iem_data::{Dataset, synth};
use iem_losses::distance::{FullGaussian, SqEuclidean};
use iem_losses::loss::{Reduction, lse_loss};
use iem_losses::{em, volume::VolumeControl};
use iem_metrics::{activation as am, competition, hyperplane, regions};
use iem_simd::Par;
use iem_tensor::Matrix;
use iem_train::optim::{Method, OptimConfig};
use iem_train::train::{self, Aux, AuxKind, Loss, TrainConfig};
use iem_train::{Init, Layer, Model};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// What a run produces.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// Named scalar metrics.
    pub metrics: BTreeMap<String, f64>,
    /// Data for figures (weights, traces), runner-specific.
    pub artifacts: serde_json::Value,
    /// The trained model, when there is one (saved as the run's checkpoint).
    #[serde(skip)]
    pub model: Option<Model>,
}

/// A stable 64-bit hash of a string (FNV-1a), for seeds and config hashes.
pub fn hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Where the real data sets live (the only ambient input of a run: a path, never numbers).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DataDirs {
    /// MNIST directory (IDX files, optionally gzipped).
    pub mnist: Option<PathBuf>,
    /// Fashion-MNIST directory.
    pub fashion_mnist: Option<PathBuf>,
}

impl DataDirs {
    /// Whether the data set of `spec` can be loaded (no directory needed, or it is given).
    pub fn has(&self, spec: &RunSpec) -> bool {
        match spec.dataset.as_ref().and_then(|d| d.needs_dir()) {
            Some("mnist") => self.mnist.is_some(),
            Some(_) => self.fashion_mnist.is_some(),
            None => true,
        }
    }
}

/// Executes one run. Errors are returned as text: the caller records them beside the run.
pub fn execute(spec: &RunSpec, par: Par, dirs: &DataDirs) -> Result<RunResult, String> {
    match spec.runner {
        Runner::Identity => identity(spec),
        Runner::EmCompare => em_compare(spec),
        Runner::Autoencoder | Runner::Classifier => two_d(spec, par),
        Runner::Network => crate::network::run(spec, par, dirs),
        Runner::Volume => crate::volume::run(spec, par, dirs),
        Runner::Cost => crate::network::cost(spec),
    }
}

/// A train/test pair.
pub(crate) struct Split {
    pub train: Dataset,
    pub test: Dataset,
}

fn cached(dir: &Path, split: &str, name: &str) -> Result<Arc<Dataset>, String> {
    type Cache = Mutex<BTreeMap<(PathBuf, String), Arc<Dataset>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let key = (dir.to_path_buf(), split.to_string());
    let cache = CACHE.get_or_init(Default::default);
    if let Some(d) = cache.lock().map_err(|e| e.to_string())?.get(&key) {
        return Ok(d.clone());
    }
    let d = Arc::new(iem_data::idx::load_split(dir, split, name).map_err(|e| e.to_string())?);
    cache.lock().map_err(|e| e.to_string())?.insert(key, d.clone());
    Ok(d)
}

fn first(d: &Dataset, n: Option<usize>) -> Dataset {
    match n {
        Some(n) if n < d.x.rows() => {
            let idx: Vec<usize> = (0..n).collect();
            Dataset { x: d.x.select_rows(&idx), labels: d.labels[..n].to_vec(), ..d.clone() }
        }
        _ => d.clone(),
    }
}

/// The run's data: 2-D generators and digits split 75/25 by the data seed; MNIST and
/// Fashion-MNIST use their own train and test files.
pub(crate) fn load(spec: &RunSpec, dirs: &DataDirs) -> Result<Split, String> {
    let ds = spec.dataset.as_ref().ok_or("this runner needs a data set")?;
    let split = |d: Dataset| {
        let (train, test) = iem_data::prep::split(&d, 0.25, data_seed(spec) ^ 1);
        Split { train, test }
    };
    let idx = |dir: &Option<PathBuf>, flag: &str, name: &str, n: Option<usize>| {
        let dir = dir.as_ref().ok_or_else(|| {
            format!("{name} needs its data directory: pass {flag} DIR (IDX files)")
        })?;
        Ok::<Split, String>(Split {
            train: first(&*cached(dir, "train", name)?, n),
            test: (*cached(dir, "t10k", name)?).clone(),
        })
    };
    match ds {
        DataSpec::Synth(s) => Ok(split(synth::generate(s, data_seed(spec)))),
        DataSpec::Real(RealData::Digits) => {
            Ok(split(iem_data::digits::load().map_err(|e| e.to_string())?))
        }
        DataSpec::Real(RealData::Mnist { train }) => idx(&dirs.mnist, "--mnist", "mnist", *train),
        DataSpec::Real(RealData::FashionMnist { train }) => {
            idx(&dirs.fashion_mnist, "--fashion-mnist", "fashion_mnist", *train)
        }
    }
}

/// Adam at the spec's rate, epochs and batch, shuffled by the run's own stream.
pub(crate) fn adam_config(spec: &RunSpec, par: Par) -> TrainConfig {
    TrainConfig {
        epochs: spec.epochs,
        batch: spec.batch,
        seed: init_seed(spec) ^ 7,
        optim: OptimConfig::adam(spec.lr as f32),
        par,
        ..TrainConfig::default()
    }
}

/// The Euclidean norm of each row (the gains that make a weight-normalised layer equal `w`).
pub(crate) fn row_norms(w: &Matrix) -> Vec<f32> {
    (0..w.rows()).map(|j| w.row(j).iter().map(|v| v * v).sum::<f32>().sqrt()).collect()
}

/// Fraction of rows of `x` whose arg-max output (ties to the lowest index) is the label.
pub(crate) fn accuracy(
    model: &Model,
    x: &Matrix,
    labels: &[usize],
    par: Par,
) -> Result<f64, String> {
    let p = model.predict(x, par).map_err(|e| e.to_string())?;
    let hits = (0..p.rows())
        .filter(|&i| {
            let r = p.row(i);
            (0..r.len()).max_by(|&a, &b| r[a].total_cmp(&r[b]).then(b.cmp(&a))) == Some(labels[i])
        })
        .count();
    Ok(hits as f64 / p.rows().max(1) as f64)
}

pub(crate) fn data_seed(spec: &RunSpec) -> u64 {
    let ds = spec.dataset.as_ref().map_or("none".into(), |d| d.name());
    hash(&format!("{}/{}/data/{}", spec.experiment, ds, spec.seed))
}

pub(crate) fn init_seed(spec: &RunSpec) -> u64 {
    let ds = spec.dataset.as_ref().map_or("none".into(), |d| d.name());
    hash(&format!("{}/{}/K{}/init/{}", spec.experiment, ds, spec.width, spec.seed))
}

/// E0a: `max |∂L/∂d − r|` over random distances of every scale, in f64 and f32.
fn identity(spec: &RunSpec) -> Result<RunResult, String> {
    let k = spec.width.max(1);
    let mut r = ChaCha8Rng::seed_from_u64(data_seed(spec) ^ k as u64);
    let (mut e64, mut e32) = (0.0f64, 0.0f64);
    for t in 0..200 {
        let scale = [1.0, 10.0, 100.0, 1e4][t % 4];
        let d: Vec<f64> = (0..k * 8).map(|_| r.random_range(0.0..scale)).collect();
        let o = lse_loss(&d, k, Reduction::Sum).map_err(|e| e.to_string())?;
        e64 = e64.max(o.grad.iter().zip(&o.resp).map(|(g, r)| (g - r).abs()).fold(0.0, f64::max));
        let d32: Vec<f32> = d.iter().map(|&v| v as f32).collect();
        let o32 = lse_loss(&d32, k, Reduction::Sum).map_err(|e| e.to_string())?;
        // against the f64 responsibilities of the same (rounded) distances
        let d64r: Vec<f64> = d32.iter().map(|&v| v as f64).collect();
        let ref64 = lse_loss(&d64r, k, Reduction::Sum).map_err(|e| e.to_string())?;
        e32 = e32.max(
            o32.grad
                .iter()
                .zip(&ref64.resp)
                .map(|(g, r)| (*g as f64 - r).abs())
                .fold(0.0, f64::max),
        );
    }
    let metrics =
        BTreeMap::from([("max_err_f64".to_string(), e64), ("max_err_f32".to_string(), e32)]);
    Ok(RunResult { metrics, artifacts: serde_json::Value::Null, model: None })
}

pub(crate) fn to_f64(m: &Matrix) -> Vec<f64> {
    m.as_slice().iter().map(|&v| v as f64).collect()
}

/// Minimum over relabellings of the largest distance between matched prototypes.
fn matched_distance(a: &[f64], b: &[f64], d: usize) -> f64 {
    let k = a.len() / d;
    let cost: Vec<f64> = (0..k * k)
        .map(|idx| {
            (0..d)
                .map(|c| (a[(idx / k) * d + c] - b[(idx % k) * d + c]).powi(2))
                .sum::<f64>()
                .sqrt()
        })
        .collect();
    let asg = iem_metrics::truth::hungarian(&cost, k, k);
    asg.iter().enumerate().map(|(i, &j)| cost[i * k + j]).fold(0.0, f64::max)
}

/// E0b: gradient descent on the LSE loss against explicit EM, on 2-D blobs.
fn em_compare(spec: &RunSpec) -> Result<RunResult, String> {
    let Some(DataSpec::Synth(s)) = &spec.dataset else {
        return Err("em_compare needs a 2-D data set".into());
    };
    let data = synth::generate(s, data_seed(spec));
    let x = to_f64(&data.x);
    let d = 2;
    let n = x.len() / d;
    let k = spec.width.max(1);
    let tau = 0.5;
    let iters = spec.epochs.max(10);
    // Start: k distinct samples chosen by the seed.
    let mut r = ChaCha8Rng::seed_from_u64(init_seed(spec));
    let mut mu0 = Vec::with_capacity(k * d);
    let mut chosen = Vec::new();
    while chosen.len() < k {
        let i = r.random_range(0..n);
        if !chosen.contains(&i) {
            chosen.push(i);
            mu0.extend_from_slice(&x[i * d..(i + 1) * d]);
        }
    }
    // (a) one gradient step with rate τ/N_j equals one EM step.
    let (mut mu_gd, mut mu_em) = (mu0.clone(), mu0.clone());
    let mut step_gap = 0.0f64;
    for _ in 0..20 {
        mu_em = em::soft_kmeans(&x, d, &mu_em, tau, 1).map_err(|e| e.to_string())?.mu;
        let layer = SqEuclidean { mu: mu_gd.clone(), k, d, tau };
        let l = lse_loss(&layer.forward(&x).map_err(|e| e.to_string())?, k, Reduction::Sum)
            .map_err(|e| e.to_string())?;
        let g = layer.backward(&x, &l.grad).map_err(|e| e.to_string())?;
        for j in 0..k {
            let nj: f64 = (0..n).map(|i| l.resp[i * k + j]).sum();
            for c in 0..d {
                mu_gd[j * d + c] -= tau / nj.max(1e-300) * g.d_params[0][j * d + c];
            }
        }
        step_gap =
            step_gap.max(mu_gd.iter().zip(&mu_em).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max));
    }
    // (b) ordinary gradient descent (mean loss, rate 0.5) against EM to convergence.
    let em_fit = em::soft_kmeans(&x, d, &mu0, tau, iters).map_err(|e| e.to_string())?;
    let mut mu = mu0.clone();
    let mut gd_trace = Vec::new();
    let mut gd_path = vec![mu.clone()];
    let gd_steps = iters * 10;
    for t in 0..gd_steps {
        let layer = SqEuclidean { mu: mu.clone(), k, d, tau };
        let l = lse_loss(&layer.forward(&x).map_err(|e| e.to_string())?, k, Reduction::Mean)
            .map_err(|e| e.to_string())?;
        if t % 10 == 0 {
            gd_trace.push(-l.value * n as f64);
        }
        let g = layer.backward(&x, &l.grad).map_err(|e| e.to_string())?;
        for (m, gg) in mu.iter_mut().zip(&g.d_params[0]) {
            *m -= 0.5 * gg;
        }
        if t % (gd_steps / 50).max(1) == 0 {
            gd_path.push(mu.clone());
        }
    }
    let fixed_gap = matched_distance(&mu, &em_fit.mu, d);
    let mut em_path = vec![mu0.clone()];
    let mut m = mu0.clone();
    for _ in 0..iters.min(50) {
        m = em::soft_kmeans(&x, d, &m, tau, 1).map_err(|e| e.to_string())?.mu;
        em_path.push(m.clone());
    }
    // (c) the full-covariance Gaussian layer trained by gradient descent against full EM.
    let init = em::FullGmm {
        means: (0..k).map(|j| mu0[j * d..(j + 1) * d].to_vec()).collect(),
        covs: vec![vec![1.0, 0.0, 0.0, 1.0]; k],
        weights: vec![1.0 / k as f64; k],
    };
    let (em_full, em_full_trace) =
        em::full_gmm(&x, d, &init, iters, 1e-6).map_err(|e| e.to_string())?;
    let mut layer = FullGaussian::<f64>::from_gaussians(d, &init.means, &init.covs)
        .map_err(|e| e.to_string())?;
    let (mut m1, mut v1): (Vec<Vec<f64>>, Vec<Vec<f64>>) = (
        layer.params().iter().map(|p| vec![0.0; p.len()]).collect(),
        layer.params().iter().map(|p| vec![0.0; p.len()]).collect(),
    );
    let lr = 0.02;
    let mut full_trace = Vec::new();
    for t in 1..=gd_steps {
        let e = layer.forward(&x).map_err(|e| e.to_string())?;
        let l = lse_loss(&e, k, Reduction::Mean).map_err(|e| e.to_string())?;
        if t % 10 == 1 {
            full_trace.push(
                -l.value * n as f64
                    - n as f64 * (d as f64 / 2.0) * (2.0 * std::f64::consts::PI).ln(),
            );
        }
        let g = layer.backward(&x, &l.grad).map_err(|e| e.to_string())?;
        let (b1, b2) = (0.9f64, 0.999f64);
        for (pi, p) in layer.params_mut().into_iter().enumerate() {
            for (i, v) in p.iter_mut().enumerate() {
                let gi = g.d_params[pi][i];
                m1[pi][i] = b1 * m1[pi][i] + (1.0 - b1) * gi;
                v1[pi][i] = b2 * v1[pi][i] + (1.0 - b2) * gi * gi;
                let mh = m1[pi][i] / (1.0 - b1.powi(t as i32));
                let vh = v1[pi][i] / (1.0 - b2.powi(t as i32));
                *v -= lr * mh / (vh.sqrt() + 1e-10);
            }
        }
    }
    let e = layer.forward(&x).map_err(|e| e.to_string())?;
    let gd_full_ll = -lse_loss(&e, k, Reduction::Sum).map_err(|e| e.to_string())?.value
        - n as f64 * (d as f64 / 2.0) * (2.0 * std::f64::consts::PI).ln();
    let em_full_ll = em_full.loglik(&x, d).map_err(|e| e.to_string())?;
    let recovery = data.centres.as_ref().map(|c| {
        iem_metrics::truth::prototype_recovery(&to_f64(c), &em_fit.mu, d).unwrap_or(f64::NAN)
    });
    let mut metrics = BTreeMap::from([
        ("em_step_gap".to_string(), step_gap),
        ("fixed_point_gap".to_string(), fixed_gap),
        ("full_cov_ll_gap_per_sample".to_string(), (gd_full_ll - em_full_ll) / n as f64),
        ("em_full_ll_per_sample".to_string(), em_full_ll / n as f64),
    ]);
    if let Some(r) = recovery {
        metrics.insert("em_centre_recovery".into(), r);
    }
    let artifacts = serde_json::json!({
        "x": x, "centres": data.centres.as_ref().map(to_f64), "gd_path": gd_path, "em_path": em_path,
        "em_trace": em_fit.trace, "gd_trace": gd_trace, "em_full_trace": em_full_trace, "gd_full_trace": full_trace,
    });
    Ok(RunResult { metrics, artifacts, model: None })
}

/// Is the activation's output on the simplex (responsibilities)?
fn simplex(a: &Activation) -> bool {
    matches!(a, Activation::Softmax { .. } | Activation::Sparsemax | Activation::Entmax15)
}

/// E1: a 2 → K → {2 | classes} network on 2-D data, then its hidden layer's redundancy.
fn two_d(spec: &RunSpec, par: Par) -> Result<RunResult, String> {
    let Some(DataSpec::Synth(s)) = &spec.dataset else {
        return Err("this runner needs a 2-D data set".into());
    };
    let act = spec
        .activation
        .as_ref()
        .and_then(|b| b.act())
        .cloned()
        .ok_or("this runner needs an activation")?;
    let k = spec.width;
    let data = synth::generate(s, data_seed(spec));
    let classifier = spec.runner == Runner::Classifier;
    let (train_set, test_set) = if classifier {
        iem_data::prep::split(&data, 0.25, data_seed(spec) ^ 1)
    } else {
        (data.clone(), data.clone())
    };
    let x = &train_set.x;
    let out = if classifier { data.classes } else { 2 };
    let mut rng = ChaCha8Rng::seed_from_u64(init_seed(spec));
    let (w1, b1) = Init::PytorchDefault.linear(k, 2, &mut rng);
    let (w2, b2) = Init::PytorchDefault.linear(out, k, &mut rng);
    let first = if spec.control == Control::WeightNorm {
        Layer::WnLinear { g: row_norms(&w1), v: w1, b: b1 }
    } else {
        Layer::Linear { w: w1, b: b1 }
    };
    act.validate(k).map_err(|e| e.to_string())?;
    let mut model = Model {
        layers: vec![
            first,
            Layer::Act { params: act.init_params(k), act: act.clone(), width: k },
            Layer::Linear { w: w2, b: b2 },
        ],
    };
    let mut optim = OptimConfig::adam(spec.lr as f32);
    let mut aux = Vec::new();
    match spec.control {
        Control::WeightDecay { lambda } => {
            optim.method =
                Method::AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: lambda as f32 }
        }
        Control::Balance { lambda } => aux.push(Aux {
            layer: 0,
            kind: AuxKind::SoftmaxBalance { weight: lambda, negate: false },
        }),
        Control::Orthogonality { lambda } => aux.push(Aux {
            layer: 0,
            kind: AuxKind::Control { control: VolumeControl::Orthogonality { weight: lambda } },
        }),
        Control::None | Control::WeightNorm => {}
        Control::Volume { .. } | Control::Sae { .. } => {
            return Err(format!("control {} belongs to the volume runner", spec.control.name()));
        }
    }
    let cfg = TrainConfig { optim, ..adam_config(spec, par) };
    let loss = if classifier {
        Loss::CrossEntropy(train_set.labels.clone())
    } else {
        Loss::Mse(x.clone())
    };
    let report =
        train::end_to_end(&mut model, x, &loss, &aux, &cfg, &mut ()).map_err(|e| e.to_string())?;
    // Measurements on the whole data set.
    let trace = model.forward(&data.x, par).map_err(|e| e.to_string())?;
    let a = &trace.values[2];
    let w = model.layers[0].effective_weights().expect("first layer is linear");
    let b = model.layers[0].bias().expect("first layer has a bias").to_vec();
    let bx = hyperplane::Box2::of(&data.x, 0.0);
    let hs = hyperplane::hyperplane_stats(&w, &b, 0.99, 0.1).map_err(|e| e.to_string())?;
    let (gram, floor) = hyperplane::gram_redundancy(&w).map_err(|e| e.to_string())?;
    let mut m = BTreeMap::new();
    m.insert("final_loss".into(), report.final_loss);
    m.insert("duplicates".into(), hs.duplicates as f64);
    m.insert("direction_duplicates".into(), hs.direction_duplicates as f64);
    m.insert("mean_abs_cos".into(), hs.mean_abs_cos);
    m.insert("mean_nn_abs_cos".into(), hs.nn_abs_cos.iter().sum::<f64>() / k as f64);
    m.insert("gram_excess".into(), gram - floor);
    m.insert("effective_rank".into(), am::effective_rank(a).unwrap_or(0.0));
    let dead = am::dead_units(a, 1e-4).map_err(|e| e.to_string())?;
    m.insert("dead_units".into(), dead.low_variance.len() as f64);
    m.insert(
        "correlation_energy_per_pair".into(),
        am::correlation_energy(a, 1e-8)
            .map(|c| c.energy / (k * k.saturating_sub(1)).max(1) as f64)
            .unwrap_or(0.0),
    );
    m.insert(
        "regions".into(),
        regions::linear_regions(&w, &b, bx, 200).map_err(|e| e.to_string())? as f64,
    );
    m.insert("region_bound".into(), regions::arrangement_bound(k) as f64);
    m.insert(
        "argmax_cells".into(),
        regions::argmax_cells(&w, &b, bx, 200).map_err(|e| e.to_string())? as f64,
    );
    if simplex(&act) {
        let c = competition::competition(a).map_err(|e| e.to_string())?;
        m.insert("winner_share".into(), c.winner_share);
        m.insert("usage_entropy_norm".into(), c.usage_entropy_norm);
    }
    if classifier {
        m.insert("test_accuracy".into(), accuracy(&model, &test_set.x, &test_set.labels, par)?);
    } else {
        let pred = model.predict(&data.x, par).map_err(|e| e.to_string())?;
        let mse = pred
            .as_slice()
            .iter()
            .zip(data.x.as_slice())
            .map(|(p, t)| ((p - t) as f64).powi(2))
            .sum::<f64>()
            / data.x.rows() as f64;
        m.insert("recon_mse".into(), mse);
    }
    let artifacts = serde_json::json!({
        "w": to_f64(&w), "b": b, "box": [bx.x0, bx.x1, bx.y0, bx.y1],
        "x": if spec.seed == 0 { serde_json::json!(to_f64(&data.x)) } else { serde_json::Value::Null },
        "labels": if spec.seed == 0 { serde_json::json!(data.labels) } else { serde_json::Value::Null },
    });
    Ok(RunResult { metrics: m, artifacts, model: Some(model) })
}
