//! [`crate::Runner::Network`] (E2, E3, E5, E6, E7) and [`crate::Runner::Cost`] (E7).
//!
//! A network is `depth` competitive blocks of width K (a linear map then an activation, or
//! prototype attention) and a linear classifier head. The training budget is `epochs`
//! passes; its first half is "phase 1" and the model is measured at its end (a snapshot):
//!
//! - `e2e` (approach 2): cross-entropy on every layer for the whole budget; the snapshot is
//!   the model half-way.
//! - `greedy` (approach 1): phase 1 trains the blocks one at a time, each on the LSE of
//!   squared distances between its input and K prototypes (`d_j = ‖h − μ_j‖²/(2τ)`, soft
//!   k-means; τ = the input's mean per-coordinate variance), initialised at K random inputs
//!   and stopped by a relative-improvement criterion, then frozen. A block `act(Wh + b)`
//!   takes `W_j = μ_j/τ`, `b_j = −‖μ_j‖²/(2τ)`: its scores are then `−d_j` up to a term
//!   shared by all units, so its softmax is exactly the prototypes' responsibilities.
//!   Phase 2 trains only the head.
//! - `greedy_finetune`: phase 1 as `greedy`, then phase 2 fine-tunes everything end to end.
//!
//! Per block ℓ (suffix `_l{ℓ}`, on the test set): linear-probe accuracy (ridge, fit on the
//! training set), effective rank, correlation redundancy, dead units, responsibility
//! entropy and usage of `softmax(scores)`, winner share, mean gradient norm over training,
//! R² of a ridge map from the block's output back to its input and to the raw input, the
//! correlation of output and input norms; on 2-D data, arg-max cells and linear regions of
//! the blocks up to ℓ over a grid. Against the phase-1 snapshot: linear CKA, assignment ARI,
//! relative weight drift, and the snapshot's specialisation metrics (`_pre`).

use crate::run::{DataDirs, RunResult, accuracy, adam_config, init_seed, load, row_norms};
use crate::{Attention, Block, Control, DataSpec, Method, RunSpec, ValueWidth};
use iem_losses::volume::VolumeControl;
use iem_metrics::{activation as am, change, competition, hyperplane::Box2};
use iem_simd::Par;
use iem_tensor::Matrix;
use iem_train::train::{self, Convergence, Loss, Observer, Stage, StepInfo, TrainConfig};
use iem_train::{Cache, Init, Layer, Model, probe};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::ops::Range;

fn s(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Mean per-coordinate variance of `h` (1 when it is zero).
fn mean_var(h: &Matrix) -> f32 {
    let (n, d) = h.shape();
    if n < 2 || d == 0 {
        return 1.0;
    }
    let m = h.col_means_f64();
    let mut v = 0.0;
    for i in 0..n {
        for (c, &x) in h.row(i).iter().enumerate() {
            v += (x as f64 - m[c]).powi(2);
        }
    }
    let v = v / ((n - 1) * d) as f64;
    if v > 1e-12 { v as f32 } else { 1.0 }
}

/// `k` distinct rows of `h` chosen by `rng` (with repetition when `h` has fewer rows).
fn sample_rows(h: &Matrix, k: usize, rng: &mut ChaCha8Rng) -> Matrix {
    let n = h.rows();
    let mut idx: Vec<usize> = Vec::with_capacity(k);
    while idx.len() < k {
        let i = rng.random_range(0..n);
        if !idx.contains(&i) || idx.len() >= n {
            idx.push(i);
        }
    }
    h.select_rows(&idx)
}

struct Net {
    model: Model,
    blocks: Vec<Range<usize>>,
    head: usize,
}

fn build(spec: &RunSpec, block: &Block, x: &Matrix, classes: usize) -> Result<Net, String> {
    let k = spec.width;
    if k == 0 {
        return Err("the network runner needs a width K > 0".into());
    }
    let mut rng = ChaCha8Rng::seed_from_u64(init_seed(spec));
    let mut model = Model { layers: Vec::new() };
    let mut blocks = Vec::new();
    let mut h = x.clone();
    for _ in 0..spec.depth.max(1) {
        let start = model.layers.len();
        let din = h.cols();
        match block {
            Block::Act(a) => {
                a.validate(k).map_err(s)?;
                let (w, b) = Init::PytorchDefault.linear(k, din, &mut rng);
                model.layers.push(if spec.control == Control::WeightNorm {
                    Layer::WnLinear { g: row_norms(&w), v: w, b }
                } else {
                    Layer::Linear { w, b }
                });
                model.layers.push(Layer::Act {
                    params: a.init_params(k),
                    act: a.clone(),
                    width: k,
                });
            }
            Block::Attention(Attention::ProtoAttention { tau, values }) => {
                // Prototypes start at K random inputs of the block; τ is in units of the
                // input's mean per-coordinate variance.
                let mu = sample_rows(&h, k, &mut rng);
                let width = match values {
                    ValueWidth::Width => k,
                    ValueWidth::Classes => classes,
                };
                let (v, _) = Init::PytorchDefault.linear(k, width, &mut rng);
                let tau = (*tau as f32) * mean_var(&h);
                model.layers.push(Layer::ProtoAttention { mu, v, tau });
            }
        }
        blocks.push(start..model.layers.len());
        h = model
            .forward_range(&h, start, model.layers.len(), Par::Seq)
            .map_err(s)?
            .output()
            .clone();
    }
    let (w, b) = Init::PytorchDefault.linear(classes, h.cols(), &mut rng);
    let head = model.layers.len();
    model.layers.push(Layer::Linear { w, b });
    model.check().map_err(s)?;
    Ok(Net { model, blocks, head })
}

/// Keeps the model at the end of epoch `at`, and the gradient norms of every step.
struct Snap {
    at: usize,
    model: Option<Model>,
    grad_norms: Vec<Vec<f64>>,
}

impl Observer for Snap {
    fn on_step(&mut self, info: &StepInfo) {
        self.grad_norms.push(info.grad_norms.clone());
    }
    fn on_model(&mut self, epoch: usize, model: &Model) {
        if epoch == self.at {
            self.model = Some(model.clone());
        }
    }
}

/// Phase 1 of approach 1: each block in turn, as prototypes under the LSE loss.
fn pretrain(
    net: &mut Net,
    x: &Matrix,
    spec: &RunSpec,
    cfg: &TrainConfig,
    epochs: usize,
) -> Result<Vec<f64>, String> {
    let control = match spec.control {
        Control::Balance { lambda } => VolumeControl::Balance { weight: lambda },
        _ => VolumeControl::None,
    };
    let per_stage = (epochs / net.blocks.len()).max(1);
    let mut stage_losses = Vec::new();
    let mut rng = ChaCha8Rng::seed_from_u64(init_seed(spec) ^ 0x5eed);
    for (bi, b) in net.blocks.clone().into_iter().enumerate() {
        let h = net.model.forward_range(x, 0, b.start, cfg.par).map_err(s)?.output().clone();
        let tau = match &net.model.layers[b.start] {
            Layer::ProtoAttention { tau, .. } => *tau,
            _ => mean_var(&h),
        };
        let mut tmp = Model {
            layers: vec![Layer::Euclidean { mu: sample_rows(&h, spec.width, &mut rng), tau }],
        };
        let st = Stage { layers: 0..1, negate: false, control: control.clone() };
        let conv = Convergence { rel_tol: 1e-4, max_epochs: per_stage };
        let c = TrainConfig { seed: cfg.seed ^ (bi as u64 + 1), ..cfg.clone() };
        let r = train::greedy(&mut tmp, &h, &[st], conv, &c, &mut ()).map_err(s)?;
        stage_losses.push(r[0].final_loss);
        let Layer::Euclidean { mu, .. } = &tmp.layers[0] else {
            return Err("greedy stage lost its prototype layer".into());
        };
        let (w, bias) = linear_from_prototypes(mu, tau);
        match &mut net.model.layers[b.start] {
            Layer::Linear { w: lw, b: lb } => {
                *lw = w;
                *lb = bias;
            }
            Layer::WnLinear { v, g, b: lb } => {
                *g = row_norms(&w);
                *v = w;
                *lb = bias;
            }
            Layer::ProtoAttention { mu: m, .. } => *m = mu.clone(),
            other => return Err(format!("block starts with {}, not a linear map", other.name())),
        }
    }
    Ok(stage_losses)
}

/// The linear map whose scores are `−‖h − μ_j‖²/(2τ)` up to a term shared by all units:
/// `W_j = μ_j/τ`, `b_j = −‖μ_j‖²/(2τ)`.
fn linear_from_prototypes(mu: &Matrix, tau: f32) -> (Matrix, Vec<f32>) {
    let w = Matrix::from_fn(mu.rows(), mu.cols(), |j, c| mu.get(j, c) / tau);
    let b = (0..mu.rows())
        .map(|j| -mu.row(j).iter().map(|v| v * v).sum::<f32>() / (2.0 * tau))
        .collect();
    (w, b)
}

/// What a block produces on a batch: its input, output and responsibilities
/// `softmax(scores)` (the attention's own `r` for prototype attention).
struct BlockOut {
    input: Matrix,
    out: Matrix,
    resp: Matrix,
    scores: Option<Matrix>,
}

fn block_outputs(net: &Net, model: &Model, x: &Matrix, par: Par) -> Result<Vec<BlockOut>, String> {
    let t = model.forward(x, par).map_err(s)?;
    let mut v = Vec::new();
    for b in &net.blocks {
        let (resp, scores) = match &t.caches[b.start] {
            Cache::Resp(r) => (r.clone(), None),
            _ => {
                let z = &t.values[b.start + 1];
                let mut r = Matrix::zeros(z.rows(), z.cols());
                iem_simd::rows::softmax(z.as_slice(), z.cols(), 1.0, r.as_mut_slice(), Par::Seq);
                (r, Some(z.clone()))
            }
        };
        v.push(BlockOut {
            input: t.values[b.start].clone(),
            out: t.values[b.end].clone(),
            resp,
            scores,
        });
    }
    Ok(v)
}

fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma).powi(2);
        sbb += (y - mb).powi(2);
    }
    if saa <= 0.0 || sbb <= 0.0 { 0.0 } else { sab / (saa * sbb).sqrt() }
}

fn norms(m: &Matrix) -> Vec<f64> {
    (0..m.rows())
        .map(|i| m.row(i).iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt())
        .collect()
}

fn specialisation(m: &mut BTreeMap<String, f64>, suffix: &str, o: &BlockOut) -> Result<(), String> {
    let k = o.resp.cols();
    let c = competition::competition(&o.resp).map_err(s)?;
    let lk = (k as f64).ln().max(1e-12);
    m.insert(format!("resp_entropy{suffix}"), c.mean_entropy / lk);
    m.insert(format!("usage_entropy{suffix}"), c.usage_entropy_norm);
    m.insert(format!("winner_share{suffix}"), c.winner_share);
    m.insert(format!("unused{suffix}"), c.dead.len() as f64);
    Ok(())
}

/// Arg-max cells and linear regions of the blocks up to each depth, over a grid of the
/// data's box (2-D inputs only).
fn grid_partition(
    net: &Net,
    model: &Model,
    x: &Matrix,
    par: Par,
) -> Result<Vec<(usize, usize)>, String> {
    let bx = Box2::of(x, 0.1);
    let g = 120;
    let pts = Matrix::from_fn(g * g, 2, |i, c| {
        let (ix, iy) = (i % g, i / g);
        if c == 0 {
            (bx.x0 + (bx.x1 - bx.x0) * (ix as f64 + 0.5) / g as f64) as f32
        } else {
            (bx.y0 + (bx.y1 - bx.y0) * (iy as f64 + 0.5) / g as f64) as f32
        }
    });
    let outs = block_outputs(net, model, &pts, par)?;
    let mix = |h: u64, v: u64| (h ^ v).wrapping_mul(0x0100_0000_01b3).rotate_left(17);
    let (mut cell_h, mut reg_h) =
        (vec![0xcbf2_9ce4_8422_2325u64; g * g], vec![0x9e37_79b9_7f4a_7c15u64; g * g]);
    let mut out = Vec::new();
    for o in &outs {
        for i in 0..g * g {
            let r = o.resp.row(i);
            let am = (0..r.len()).fold(0, |b, j| if r[j] > r[b] { j } else { b });
            cell_h[i] = mix(cell_h[i], am as u64 + 1);
            if let Some(z) = &o.scores {
                for (j, &v) in z.row(i).iter().enumerate() {
                    reg_h[i] = mix(reg_h[i], ((v > 0.0) as u64) << (j % 63) | (j as u64) << 8);
                }
            }
        }
        let distinct = |v: &[u64]| {
            let mut w = v.to_vec();
            w.sort_unstable();
            w.dedup();
            w.len()
        };
        out.push((distinct(&cell_h), if o.scores.is_some() { distinct(&reg_h) } else { 0 }));
    }
    Ok(out)
}

/// Executes a network run.
pub(crate) fn run(spec: &RunSpec, par: Par, dirs: &DataDirs) -> Result<RunResult, String> {
    let block = spec.activation.clone().ok_or("the network runner needs a block")?;
    let data = load(spec, dirs)?;
    let (x, y) = (&data.train.x, &data.train.labels);
    let classes = data.train.classes.max(data.test.classes);
    let mut net = build(spec, &block, x, classes)?;
    let method = spec.method.unwrap_or(Method::E2e);
    let phase1 = (spec.epochs / 2).max(1);
    let phase2 = spec.epochs.saturating_sub(phase1).max(1);
    let cfg = adam_config(spec, par);
    let ce = Loss::CrossEntropy(y.clone());
    let mut snap = Snap { at: phase1 - 1, model: None, grad_norms: Vec::new() };
    let mut stage_losses = Vec::new();
    let report = match method {
        Method::E2e => {
            train::end_to_end(&mut net.model, x, &ce, &[], &cfg, &mut snap).map_err(s)?
        }
        Method::Greedy | Method::GreedyFinetune => {
            stage_losses = pretrain(&mut net, x, spec, &cfg, phase1)?;
            snap.model = Some(net.model.clone());
            snap.at = usize::MAX;
            let c = TrainConfig { epochs: phase2, ..cfg.clone() };
            if method == Method::Greedy {
                let r = net.head..net.head + 1;
                train::train_range(&mut net.model, x, r, &ce, &[], &c, &mut snap).map_err(s)?
            } else {
                train::end_to_end(&mut net.model, x, &ce, &[], &c, &mut snap).map_err(s)?
            }
        }
    };
    let model = &net.model;
    let pre = snap.model.clone().unwrap_or_else(|| model.clone());
    let test = &data.test;
    let mut m = BTreeMap::new();
    m.insert("test_accuracy".into(), accuracy(model, &test.x, &test.labels, par)?);
    m.insert("train_accuracy".into(), accuracy(model, x, y, par)?);
    m.insert("final_loss".into(), report.final_loss);
    m.insert("params".into(), model.num_params() as f64);
    let outs = block_outputs(&net, model, &test.x, par)?;
    let outs_pre = block_outputs(&net, &pre, &test.x, par)?;
    let train_outs = block_outputs(&net, model, x, par)?;
    let train_pre = block_outputs(&net, &pre, x, par)?;
    for (l, o) in outs.iter().enumerate() {
        let sfx = format!("_l{}", l + 1);
        let k = o.out.cols();
        let p = probe::ridge(&train_outs[l].out, y, classes, 1e-2).map_err(s)?;
        m.insert(format!("probe_acc{sfx}"), p.accuracy(&o.out, &test.labels));
        let pp = probe::ridge(&train_pre[l].out, y, classes, 1e-2).map_err(s)?;
        m.insert(format!("probe_acc_pre{sfx}"), pp.accuracy(&outs_pre[l].out, &test.labels));
        m.insert(format!("effective_rank{sfx}"), am::effective_rank(&o.out).unwrap_or(0.0));
        m.insert(
            format!("redundancy{sfx}"),
            am::correlation_energy(&o.out, 1e-8)
                .map(|c| c.energy / (k * k.saturating_sub(1)).max(1) as f64)
                .unwrap_or(0.0),
        );
        m.insert(
            format!("dead{sfx}"),
            am::dead_units(&o.out, 1e-4).map_err(s)?.low_variance.len() as f64,
        );
        specialisation(&mut m, &sfx, o)?;
        specialisation(&mut m, &format!("_pre{sfx}"), &outs_pre[l])?;
        let gi = net.blocks[l].start;
        let gn: Vec<f64> = snap.grad_norms.iter().filter_map(|g| g.get(gi).copied()).collect();
        if !gn.is_empty() && snap.grad_norms.iter().all(|g| g.len() > net.head) {
            m.insert(format!("grad_norm{sfx}"), gn.iter().sum::<f64>() / gn.len() as f64);
        }
        if let Ok(r2) = probe::ridge_r2(&o.out, &o.input, 1e-3) {
            m.insert(format!("input_r2{sfx}"), r2);
        }
        if let Ok(r2) = probe::ridge_r2(&o.out, &test.x, 1e-3) {
            m.insert(format!("raw_r2{sfx}"), r2);
        }
        m.insert(format!("magnitude{sfx}"), pearson(&norms(&o.out), &norms(&o.input)));
        m.insert(
            format!("cka{sfx}"),
            change::linear_cka(&outs_pre[l].out, &o.out).unwrap_or(f64::NAN),
        );
        m.insert(
            format!("ari{sfx}"),
            change::assignment_ari(&outs_pre[l].resp, &o.resp).map_err(s)?,
        );
        let (a, b) = (&pre.layers[gi].params()[0], &model.layers[gi].params()[0]);
        let dn: f64 =
            a.iter().zip(b.iter()).map(|(p, q)| ((q - p) as f64).powi(2)).sum::<f64>().sqrt();
        let an: f64 = a.iter().map(|p| (*p as f64).powi(2)).sum::<f64>().sqrt();
        m.insert(format!("drift{sfx}"), dn / an.max(1e-12));
    }
    if matches!(spec.dataset, Some(DataSpec::Synth(_))) && x.cols() == 2 {
        for (l, (cells, regions)) in grid_partition(&net, model, x, par)?.into_iter().enumerate() {
            m.insert(format!("cells_l{}", l + 1), cells as f64);
            if regions > 0 {
                m.insert(format!("regions_l{}", l + 1), regions as f64);
            }
        }
    }
    m.retain(|_, v| v.is_finite());
    let artifacts = serde_json::json!({
        "epoch_loss": report.epoch_loss, "stage_losses": stage_losses,
    });
    Ok(RunResult { metrics: m, artifacts, model: Some(net.model) })
}

/// E7's cost: microseconds per sample of one block's forward and backward pass (D = 64
/// inputs, batch 256, output width 64 for attention's values), single-threaded, median of
/// five timed batches.
pub(crate) fn cost(spec: &RunSpec) -> Result<RunResult, String> {
    let block = spec.activation.clone().ok_or("the cost runner needs a block")?;
    let (d, n, k) = (64, 256, spec.width.max(1));
    let mut rng = ChaCha8Rng::seed_from_u64(init_seed(spec));
    let x = Matrix::from_fn(n, d, |_, _| rng.random_range(-1.0f32..1.0));
    let layers = match &block {
        Block::Act(a) => {
            a.validate(k).map_err(s)?;
            let (w, b) = Init::PytorchDefault.linear(k, d, &mut rng);
            vec![
                Layer::Linear { w, b },
                Layer::Act { params: a.init_params(k), act: a.clone(), width: k },
            ]
        }
        Block::Attention(Attention::ProtoAttention { tau, .. }) => {
            let (mu, _) = Init::PytorchDefault.linear(k, d, &mut rng);
            let (v, _) = Init::PytorchDefault.linear(k, d, &mut rng);
            vec![Layer::ProtoAttention { mu, v, tau: *tau as f32 }]
        }
    };
    let model = Model { layers };
    model.check().map_err(s)?;
    let mut fail = None;
    let secs = iem_simd::timing::median_seconds(
        || {
            let r = model.forward(&x, Par::Seq).and_then(|t| {
                let g = Matrix::from_fn(n, t.output().cols(), |_, _| 1.0 / n as f32);
                model.backward_range(&t, 0, g, &[], Par::Seq)
            });
            if let Err(e) = r {
                fail = Some(e.to_string());
            }
        },
        0.05,
    );
    if let Some(e) = fail {
        return Err(e);
    }
    let metrics = BTreeMap::from([("us_per_sample".to_string(), secs * 1e6 / n as f64)]);
    Ok(RunResult { metrics, artifacts: serde_json::Value::Null, model: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The converted linear block's softmax equals the prototypes' responsibilities.
    #[test]
    fn converted_block_reproduces_the_responsibilities() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let (k, d, n, tau) = (5, 7, 11, 0.7f32);
        let mu = Matrix::from_fn(k, d, |_, _| rng.random_range(-1.0f32..1.0));
        let x = Matrix::from_fn(n, d, |_, _| rng.random_range(-1.0f32..1.0));
        let dist = Layer::Euclidean { mu: mu.clone(), tau }.forward(0, &x, Par::Seq).unwrap().0;
        let (w, b) = linear_from_prototypes(&mu, tau);
        let z = Layer::Linear { w, b }.forward(0, &x, Par::Seq).unwrap().0;
        let (mut r1, mut r2) = (vec![0.0f32; n * k], vec![0.0f32; n * k]);
        iem_simd::rows::softmax(dist.as_slice(), k, -1.0, &mut r1, Par::Seq);
        iem_simd::rows::softmax(z.as_slice(), k, 1.0, &mut r2, Par::Seq);
        for (a, c) in r1.iter().zip(&r2) {
            assert!((a - c).abs() < 1e-5, "{a} vs {c}");
        }
    }
}
