//! [`crate::Runner::Volume`] (E4, E8): one distance layer `a = relu(W x + b)` (the
//! parameterisation of arXiv 2601.06478) trained without labels on `lse · LSE(a)` plus
//! volume controls, or the sparse-autoencoder baseline, with competition measured after
//! every epoch and collapse classified.
//!
//! Two kinds of collapse are kept apart: **winner-take-all** (one unit's usage
//! `max_j r̄_j` above 0.9) and **metric collapse** (every input's responsibilities
//! `r = softmax(−a)` nearly uniform: mean `H(r)/log K` above 0.98, typically because every
//! distance went to 0). A single dead-unit count cannot tell them apart.

use crate::run::{DataDirs, RunResult, adam_config, init_seed, load, row_norms};
use crate::{Control, RunSpec};
use iem_data::prep;
use iem_losses::distance::FullGaussian;
use iem_losses::volume::VolumeControl;
use iem_metrics::{activation as am, competition};
use iem_simd::Par;
use iem_tensor::Matrix;
use iem_train::train::{self, Aux, AuxKind, Loss, Observer};
use iem_train::{Distance, Init, Layer, Model, probe};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

fn s(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// A model, its objective, and the index of the layer whose output is the code `a`.
struct Setup {
    model: Model,
    loss: Loss,
    aux: Vec<Aux>,
    code: usize,
}

fn setup(spec: &RunSpec, x: &Matrix) -> Result<Setup, String> {
    let (k, d) = (spec.width, x.cols());
    if k < 2 {
        return Err("the volume runner needs K ≥ 2".into());
    }
    let mut rng = ChaCha8Rng::seed_from_u64(init_seed(spec));
    let relu = Layer::Act { params: Vec::new(), act: iem_activations::Activation::Relu, width: k };
    let (lse, sum, controls) = match &spec.control {
        Control::None => (1.0, false, Vec::new()),
        Control::Volume { lse, sum, controls, .. } => (*lse, *sum, controls.clone()),
        Control::Sae { l1, l1_mean_units } => {
            let (w1, b1) = Init::PytorchDefault.linear(k, d, &mut rng);
            let (w2, b2) = Init::PytorchDefault.linear(d, k, &mut rng);
            // Loss::Mse is per sample (summed over the D outputs); dividing by D gives the
            // per-element mean, so the L1 weight is scaled by D to keep its ratio (and
            // divided by K when the L1 is a mean over units too).
            let model = Model {
                layers: vec![Layer::Linear { w: w1, b: b1 }, relu, Layer::Linear { w: w2, b: b2 }],
            };
            let units = if *l1_mean_units { k as f64 } else { 1.0 };
            let aux = vec![Aux { layer: 1, kind: AuxKind::L1 { weight: l1 * d as f64 / units } }];
            return Ok(Setup { model, loss: Loss::Mse(x.clone()), aux, code: 1 });
        }
        other => return Err(format!("control {} is not for the volume runner", other.name())),
    };
    let has = |f: fn(&VolumeControl) -> bool| controls.iter().any(f);
    let (model, code) = if has(|c| matches!(c, VolumeControl::LogDet)) {
        // The exact answer: full-covariance Gaussian energies, started at K random samples
        // with identity covariances; their log-determinant term is the volume control.
        let n = x.rows();
        let means: Vec<Vec<f64>> = (0..k)
            .map(|_| x.row(rng.random_range(0..n)).iter().map(|&v| v as f64).collect())
            .collect();
        let eye: Vec<f64> = (0..d * d).map(|i| if i % (d + 1) == 0 { 1.0 } else { 0.0 }).collect();
        let full = FullGaussian::<f32>::from_gaussians(d, &means, &vec![eye; k]).map_err(s)?;
        (Model { layers: vec![Layer::Distance(Distance::Full(full))] }, 0)
    } else {
        let (w, b) = Init::PytorchDefault.linear(k, d, &mut rng);
        let first = if has(|c| matches!(c, VolumeControl::WeightNorm)) {
            Layer::WnLinear { g: row_norms(&w), v: w, b }
        } else {
            Layer::Linear { w, b }
        };
        (Model { layers: vec![first, relu] }, 1)
    };
    let mut aux = Vec::new();
    if lse != 0.0 {
        aux.push(Aux { layer: code, kind: AuxKind::Lse { weight: lse, negate: false, sum } });
    }
    for c in controls {
        match c {
            VolumeControl::None | VolumeControl::WeightNorm | VolumeControl::LogDet => {}
            VolumeControl::LearnedTemperature => {
                return Err(
                    "learned_temperature has no temperature to learn in a ReLU distance layer"
                        .into(),
                );
            }
            VolumeControl::Balance { .. }
            | VolumeControl::UsageEntropy { .. }
            | VolumeControl::MutualInformation { .. }
            | VolumeControl::Sinkhorn { .. } => aux.push(Aux {
                layer: code,
                kind: AuxKind::Responsibilities { control: c, negate: false },
            }),
            VolumeControl::Orthogonality { .. } => {
                if !matches!(model.layers[0], Layer::Linear { .. }) {
                    return Err("orthogonality needs a plain linear layer".into());
                }
                aux.push(Aux { layer: 0, kind: AuxKind::Control { control: c } });
            }
            _ => aux.push(Aux { layer: code, kind: AuxKind::Control { control: c } }),
        }
    }
    Ok(Setup { model, loss: Loss::Zero, aux, code })
}

/// Competition of a code `a`: responsibilities `softmax(−a)`.
struct Comp {
    usage_entropy: f64,
    resp_entropy_norm: f64,
    resp_entropy_nats: f64,
    max_resp: f64,
    winner_share: f64,
    dead: usize,
    mean_distance: f64,
}

fn comp(a: &Matrix) -> Result<Comp, String> {
    let (n, k) = a.shape();
    let mut r = Matrix::zeros(n, k);
    iem_simd::rows::softmax(a.as_slice(), k, -1.0, r.as_mut_slice(), Par::Seq);
    let c = competition::competition(&r).map_err(s)?;
    let max_resp =
        (0..n).map(|i| r.row(i).iter().copied().fold(0.0f32, f32::max) as f64).sum::<f64>()
            / n as f64;
    let dead = am::dead_units(a, 0.01).map_err(s)?.low_variance.len();
    Ok(Comp {
        usage_entropy: c.usage_entropy_norm,
        resp_entropy_norm: c.mean_entropy / (k as f64).ln(),
        resp_entropy_nats: c.mean_entropy,
        max_resp,
        winner_share: c.winner_share,
        dead,
        mean_distance: a.as_slice().iter().map(|&v| v as f64).sum::<f64>() / (n * k) as f64,
    })
}

fn collapse(c: &Comp) -> Option<&'static str> {
    if c.resp_entropy_norm > 0.98 {
        Some("metric")
    } else if c.winner_share > 0.9 {
        Some("winner_take_all")
    } else {
        None
    }
}

/// Measures the code on a fixed evaluation subset after every epoch.
struct Traces {
    eval: Matrix,
    code: usize,
    steps_per_epoch: usize,
    err: Option<String>,
    step: Vec<f64>,
    usage_entropy: Vec<f64>,
    resp_entropy: Vec<f64>,
    winner_share: Vec<f64>,
    dead: Vec<f64>,
    mean_distance: Vec<f64>,
    max_weight_norm: Vec<f64>,
    loss: Vec<f64>,
    first_collapse: Option<(f64, &'static str)>,
}

fn max_row_norm(m: &Model) -> f64 {
    m.layers[0]
        .effective_weights()
        .map(|w| {
            (0..w.rows())
                .map(|j| w.row(j).iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt())
                .fold(0.0, f64::max)
        })
        .unwrap_or(f64::NAN)
}

impl Observer for Traces {
    fn on_epoch(&mut self, _e: usize, l: f64) {
        self.loss.push(l);
    }
    fn on_model(&mut self, epoch: usize, model: &Model) {
        let r = model
            .forward_range(&self.eval, 0, self.code + 1, Par::Seq)
            .map_err(s)
            .and_then(|t| comp(t.output()));
        match r {
            Ok(c) => {
                let step = ((epoch + 1) * self.steps_per_epoch) as f64;
                self.step.push(step);
                self.usage_entropy.push(c.usage_entropy);
                self.resp_entropy.push(c.resp_entropy_norm);
                self.winner_share.push(c.winner_share);
                self.dead.push(c.dead as f64);
                self.mean_distance.push(c.mean_distance);
                self.max_weight_norm.push(max_row_norm(model));
                if self.first_collapse.is_none()
                    && let Some(kind) = collapse(&c)
                {
                    self.first_collapse = Some((step, kind));
                }
            }
            Err(e) => self.err = Some(e),
        }
    }
}

/// Executes a volume run.
pub(crate) fn run(spec: &RunSpec, par: Par, dirs: &DataDirs) -> Result<RunResult, String> {
    let data = load(spec, dirs)?;
    let x = &data.train.x;
    let Setup { mut model, loss, aux, code } = setup(spec, x)?;
    let cfg = adam_config(spec, par);
    let n_eval = x.rows().min(2000);
    let mut tr = Traces {
        eval: x.select_rows(&(0..n_eval).collect::<Vec<_>>()),
        code,
        steps_per_epoch: if spec.batch == 0 { 1 } else { x.rows().div_ceil(spec.batch) },
        err: None,
        step: Vec::new(),
        usage_entropy: Vec::new(),
        resp_entropy: Vec::new(),
        winner_share: Vec::new(),
        dead: Vec::new(),
        mean_distance: Vec::new(),
        max_weight_norm: Vec::new(),
        loss: Vec::new(),
        first_collapse: None,
    };
    let report = train::end_to_end(&mut model, x, &loss, &aux, &cfg, &mut tr).map_err(s)?;
    if let Some(e) = tr.err.take() {
        return Err(e);
    }
    // Final measurements on the test set, as the published code computes them.
    let codes = |m: &Matrix| -> Result<Matrix, String> {
        Ok(model.forward_range(m, 0, code + 1, par).map_err(s)?.output().clone())
    };
    let (a_test, a_train) = (codes(&data.test.x)?, codes(x)?);
    let c = comp(&a_test)?;
    let mut m = BTreeMap::new();
    m.insert("final_loss".into(), report.final_loss);
    m.insert("dead_units".into(), c.dead as f64);
    m.insert("resp_entropy_nats".into(), c.resp_entropy_nats);
    m.insert("resp_entropy".into(), c.resp_entropy_norm);
    m.insert("max_resp".into(), c.max_resp);
    m.insert("usage_entropy".into(), c.usage_entropy);
    m.insert("winner_share".into(), c.winner_share);
    m.insert("mean_distance".into(), c.mean_distance);
    m.insert("max_weight_norm".into(), max_row_norm(&model));
    let corr = am::correlation_energy(&a_test, 1e-12).map_err(s)?;
    if corr.constant_units.len() + 1 < a_test.cols() {
        m.insert("redundancy".into(), corr.energy);
    }
    let kind = collapse(&c);
    m.insert("collapse_metric".into(), (kind == Some("metric")) as u8 as f64);
    m.insert("collapse_wta".into(), (kind == Some("winner_take_all")) as u8 as f64);
    if let Some((step, _)) = tr.first_collapse {
        m.insert("first_collapse_step".into(), step);
    }
    // Linear probe: multinomial logistic regression on standardised codes.
    let (mean, sd) = prep::fit_standardizer(&a_train);
    let classes = data.train.classes.max(data.test.classes);
    let p = probe::logistic(
        &prep::apply_standardizer(&a_train, &mean, &sd),
        &data.train.labels,
        classes,
        300,
        init_seed(spec) ^ 3,
    )
    .map_err(s)?;
    m.insert(
        "probe_accuracy".into(),
        p.accuracy(&prep::apply_standardizer(&a_test, &mean, &sd), &data.test.labels),
    );
    m.retain(|_, v| v.is_finite());
    let artifacts = serde_json::json!({
        "step": tr.step, "usage_entropy": tr.usage_entropy, "resp_entropy": tr.resp_entropy,
        "winner_share": tr.winner_share, "dead": tr.dead, "mean_distance": tr.mean_distance,
        "max_weight_norm": tr.max_weight_norm, "loss": tr.loss,
        "first_collapse": tr.first_collapse.map(|(s, k)| serde_json::json!({"step": s, "kind": k})),
    });
    Ok(RunResult { metrics: m, artifacts, model: Some(model) })
}
