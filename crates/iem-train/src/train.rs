//! Trainers: end-to-end (approach 2), greedy layer-wise (approach 1), and fine-tuning.

use crate::layer::WorkWeights;
use crate::optim::{CHUNK, OptimConfig, Optimizer};
use crate::{Backward, Model, ParamGrads, Result, Trace, TrainError};
use iem_losses::loss::{Reduction, cross_entropy, lse_loss, mse, soft_cross_entropy};
use iem_losses::volume::{self, VolumeControl};
use iem_simd::Par;
use iem_simd::elementwise::{all_finite, sum_f64, sum_sq};
use iem_tensor::Matrix;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// The training objective on the model's output (mean over the batch).
#[derive(Clone, Debug, PartialEq)]
pub enum Loss {
    /// Cross-entropy against integer labels (one per sample of the full data set).
    CrossEntropy(Vec<usize>),
    /// Reconstruction MSE against targets (rows of the full data set), per sample.
    Mse(Matrix),
    /// The implicit-EM loss on the output read as distances (unsupervised).
    Lse,
    /// No objective on the output: only the auxiliary terms (greedy stages use this).
    Zero,
}

/// An auxiliary objective on one layer's output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuxKind {
    /// A volume control: on responsibilities (balance, usage entropy, mutual information,
    /// Sinkhorn — the output must be on the simplex), on activations (variance,
    /// decorrelation, log-det covariance, VICReg), or on the layer's weights
    /// (orthogonality; the layer must be linear). Reparameterisations (weight norm, learned
    /// temperature, log-det distances) are model choices, not penalties, and are rejected.
    Control {
        /// The control and its weight.
        control: VolumeControl,
    },
    /// Batch balance `weight · KL(r̄ ‖ uniform)` of `r = softmax(output)`: usage balance for
    /// any layer, whatever its activation (apply it to the pre-activations).
    SoftmaxBalance {
        /// Weight.
        weight: f64,
        /// Use `softmax(−output)` (the output is a distance) instead of `softmax(output)`.
        #[serde(default)]
        negate: bool,
    },
    /// A kept per-layer LSE objective `weight · mean LSE(d)` with `d` the layer's output
    /// (`negate`: `d = −output`, for scores).
    Lse {
        /// Weight.
        weight: f64,
        /// Read the output as scores.
        negate: bool,
        /// Sum the per-sample LSE over the batch instead of averaging it (the convention
        /// of arXiv 2601.06478).
        #[serde(default)]
        sum: bool,
    },
    /// A volume control on the responsibilities `r = softmax(−output)` (`negate`:
    /// `softmax(output)`), chained back to the layer output: usage balance, usage entropy,
    /// mutual information or Sinkhorn targets for a layer that outputs distances or scores.
    Responsibilities {
        /// The control (balance, usage entropy, mutual information or Sinkhorn).
        control: VolumeControl,
        /// Read the output as scores.
        #[serde(default)]
        negate: bool,
    },
    /// Sparsity `weight · mean_n Σ_j |a_nj|` (the L1 penalty of a standard sparse
    /// autoencoder).
    L1 {
        /// Weight.
        weight: f64,
    },
}

/// An auxiliary objective attached to layer `layer`'s output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Aux {
    /// Layer index.
    pub layer: usize,
    /// The objective.
    pub kind: AuxKind,
}

/// What a collapse alarm does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AlarmAction {
    /// Record a warning in the report.
    #[default]
    Warn,
    /// Stop with [`TrainError::Collapse`].
    Stop,
}

/// Collapse alarms, checked at the end of each epoch on layers whose output lies on the
/// simplex (softmax-family activations).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Alarms {
    /// Fire when one unit's mean responsibility exceeds this (e.g. 0.9).
    pub max_usage: Option<f64>,
    /// Fire when at least this many units have mean responsibility below 0.01.
    pub dead_units: Option<usize>,
    /// What to do.
    #[serde(default)]
    pub action: AlarmAction,
}

/// Training configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Passes over the data.
    pub epochs: usize,
    /// Mini-batch size; 0 means full batch.
    pub batch: usize,
    /// Seed of the shuffling stream.
    pub seed: u64,
    /// Draw every epoch's mini-batches from a fresh permutation of the data (the default).
    /// `false` keeps the data's order: batch `i` holds rows `i·batch..(i+1)·batch` in every
    /// epoch, as in training loops that iterate over fixed batches (those of
    /// `scripts/bench_peers.py` among them), and `seed` is not used.
    #[serde(default = "yes")]
    pub shuffle: bool,
    /// Optimiser.
    pub optim: OptimConfig,
    /// Collapse alarms.
    #[serde(default)]
    pub alarms: Alarms,
    /// Split each mini-batch into this many row blocks of equal size (the last may be
    /// smaller) whose forward and backward passes run concurrently, each block's gradients
    /// summed in block order (data parallelism inside one step). The numbers depend on this
    /// setting, never on the thread count; `1` (the default) sends the whole batch through
    /// each layer, with the kernels parallel inside. One block per core is the natural
    /// choice: one parallel region per step instead of one per kernel (on 2 cores, 2 blocks
    /// made an MNIST-size step about 1.3× faster; see the crate's `BENCHMARKS.md`). With
    /// more than one block the trainer also keeps the linear layers' weights transposed
    /// while it runs (the layout its GEMMs read fastest; on AVX-512, for widths that are
    /// multiples of 64, in the panels of `iem_simd::panel`) and writes them back into the
    /// model after every epoch for an observer that [wants the model](Observer::wants_model),
    /// and when the run ends, however it ends; all but the first trained layer also get `W`
    /// (or `W`'s panels) back after every step, for the input-gradient products that read it.
    ///
    /// Run on a worker of a rayon pool (inside `ThreadPool::install`) with `par` above one
    /// thread, other threads of the pool (one per further block, within `par`'s degree)
    /// stay awake for the whole run: they poll for the step's jobs instead of going to sleep
    /// between its parallel regions (waking them took 10–40 µs on a virtual machine, several
    /// times per step), and so spin while the run does serial work, observer callbacks
    /// included. Called from outside a pool, the run uses the pool's threads as any rayon
    /// code does.
    ///
    /// Steps with auxiliary objectives (greedy stages, volume controls) couple the rows of
    /// a batch and always run as one block.
    #[serde(default = "one")]
    pub row_blocks: usize,
    /// Parallelism of the kernels.
    #[serde(skip)]
    pub par: Par,
}

fn one() -> usize {
    1
}

fn yes() -> bool {
    true
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 10,
            batch: 64,
            seed: 0,
            shuffle: true,
            optim: OptimConfig::adam(1e-3),
            alarms: Alarms::default(),
            row_blocks: 1,
            par: Par::Seq,
        }
    }
}

/// What an observer sees after every step.
#[derive(Clone, Debug, PartialEq)]
pub struct StepInfo {
    /// Step index (0-based, over the whole run).
    pub step: usize,
    /// Epoch.
    pub epoch: usize,
    /// Batch loss (objective plus auxiliary terms).
    pub loss: f64,
    /// Gradient norm of each trained layer's parameters.
    pub grad_norms: Vec<f64>,
    /// `(layer, max_n |Σ_j ∂L/∂z_nj|)` for each zero-sum (competitive) layer: the
    /// zero-sum residual, 0 to rounding when competition is exact. Empty when the observer
    /// does not want it ([`Observer::wants_zero_sum`]).
    pub zero_sum: Vec<(usize, f64)>,
}

/// Receives progress without the trainer knowing about terminals or files.
pub trait Observer {
    /// Called after every optimisation step.
    fn on_step(&mut self, _info: &StepInfo) {}
    /// Called after every epoch with the epoch's mean loss.
    fn on_epoch(&mut self, _epoch: usize, _mean_loss: f64) {}
    /// Called after every epoch (after [`Observer::on_epoch`]) with the model as it is
    /// then, for measurements over training.
    fn on_model(&mut self, _epoch: usize, _model: &Model) {}
    /// Whether [`Observer::on_model`] reads the model (default `true`). With row blocks
    /// the trainer works on its own transposed copy of the linear layers' weights; an
    /// observer that answers `false` spares it writing that copy back into the model after
    /// every epoch (it is written back when the run ends, however it ends).
    fn wants_model(&self) -> bool {
        true
    }
    /// Whether [`Observer::on_step`] reads [`StepInfo::zero_sum`] (default `true`); an
    /// observer that answers `false` spares the trainer a pass over each competitive
    /// layer's input gradient every step.
    fn wants_zero_sum(&self) -> bool {
        true
    }
}

impl Observer for () {
    fn wants_model(&self) -> bool {
        false
    }
    fn wants_zero_sum(&self) -> bool {
        false
    }
}

/// Collects every step into memory.
#[derive(Clone, Debug, Default)]
pub struct Recorder {
    /// Every step seen.
    pub steps: Vec<StepInfo>,
    /// Mean loss per epoch.
    pub epochs: Vec<f64>,
}

impl Observer for Recorder {
    fn on_step(&mut self, info: &StepInfo) {
        self.steps.push(info.clone());
    }
    fn on_epoch(&mut self, _e: usize, l: f64) {
        self.epochs.push(l);
    }
    fn wants_model(&self) -> bool {
        false
    }
}

/// The outcome of a run.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct TrainReport {
    /// Optimisation steps taken.
    pub steps: usize,
    /// Mean loss of the last epoch.
    pub final_loss: f64,
    /// Mean loss per epoch.
    pub epoch_loss: Vec<f64>,
    /// Alarms that fired with action `Warn`.
    pub warnings: Vec<String>,
}

/// The mini-batches of one epoch: consecutive slices of a permutation drawn from `rng`, or of
/// the data's own order when `!shuffle`.
fn batches(n: usize, batch: usize, shuffle: bool, rng: &mut ChaCha8Rng) -> Vec<Vec<usize>> {
    let mut idx: Vec<usize> = (0..n).collect();
    if shuffle {
        for i in (1..n).rev() {
            let j = rng.random_range(0..=i);
            idx.swap(i, j);
        }
    }
    let b = if batch == 0 { n.max(1) } else { batch };
    idx.chunks(b).map(|c| c.to_vec()).collect()
}

fn err_loss(e: impl std::fmt::Display) -> TrainError {
    TrainError::Loss(e.to_string())
}

/// Value and gradient of the main loss on the batch output.
fn main_loss(loss: &Loss, out: &Matrix, idx: &[usize], g: &mut Matrix) -> Result<f64> {
    let (v, grad) = loss_terms(loss, out, idx, Reduction::Mean)?;
    // Into `g`'s buffer, which the backward pass reuses every step.
    g.resize(out.rows(), out.cols());
    g.as_mut_slice().copy_from_slice(&grad);
    Ok(v)
}

/// Value and gradient (flat, row-major) of the main loss on the rows `idx` of the data,
/// whose model outputs are `out`, reduced by `red`.
fn loss_terms(loss: &Loss, out: &Matrix, idx: &[usize], red: Reduction) -> Result<(f64, Vec<f32>)> {
    let (n, c) = out.shape();
    Ok(match loss {
        Loss::CrossEntropy(labels) => {
            let y: Vec<usize> = idx.iter().map(|&i| labels[i]).collect();
            let o = cross_entropy(out.as_slice(), &y, c, red).map_err(err_loss)?;
            (o.value, o.grad)
        }
        Loss::Mse(t) => {
            let tb = t.select_rows(idx);
            let o = mse(out.as_slice(), tb.as_slice(), c, red).map_err(err_loss)?;
            (o.value, o.grad)
        }
        Loss::Lse => {
            let o = lse_loss(out.as_slice(), c, red).map_err(err_loss)?;
            (o.value, o.grad)
        }
        Loss::Zero => (0.0, vec![0.0; n * c]),
    })
}

/// Value and gradient (with respect to the layer output `a`) of an auxiliary objective on
/// a batch, exactly as the trainers add it to the loss. Objectives on weights
/// (orthogonality) are rejected: they need the layer.
pub fn aux_objective(kind: &AuxKind, a: &Matrix) -> Result<(f64, Option<Matrix>)> {
    let (v, g, _) = aux_term(kind, a, None)?;
    Ok((v, g))
}

/// Value and gradient (w.r.t. the layer output) of an auxiliary objective; weight
/// gradients for orthogonality are returned separately.
fn aux_term(
    kind: &AuxKind,
    a: &Matrix,
    weights: Option<&Matrix>,
) -> Result<(f64, Option<Matrix>, Option<Vec<f32>>)> {
    let (n, k) = a.shape();
    let wrap = |g: Vec<f32>, s: f64| {
        Matrix::from_vec(n, k, g.into_iter().map(|v| v * s as f32).collect()).map_err(err_loss)
    };
    match kind {
        AuxKind::SoftmaxBalance { weight, negate } => {
            let mut r = vec![0.0f32; n * k];
            let sign = if *negate { -1.0 } else { 1.0 };
            iem_simd::rows::softmax(a.as_slice(), k, sign, &mut r, Par::Seq);
            let p = volume::balance_kl(&r, k).map_err(err_loss)?;
            // r = softmax(sign·a) = softmax(−d) with d = −sign·a: ∂/∂a = −sign ∂/∂d.
            let gd = volume::chain_resp_to_d(&r, &p.grad, k);
            Ok((weight * p.value, Some(wrap(gd, -(sign as f64) * weight)?), None))
        }
        AuxKind::Lse { weight, negate, sum } => {
            let d: Vec<f32> = if *negate {
                a.as_slice().iter().map(|v| -v).collect()
            } else {
                a.as_slice().to_vec()
            };
            let red = if *sum { Reduction::Sum } else { Reduction::Mean };
            let o = lse_loss(&d, k, red).map_err(err_loss)?;
            let s = if *negate { -weight } else { *weight };
            Ok((weight * o.value, Some(wrap(o.grad, s)?), None))
        }
        AuxKind::L1 { weight } => {
            let g: Vec<f32> =
                a.as_slice().iter().map(|v| v.signum() * (v.abs() > 0.0) as u8 as f32).collect();
            let value = a.as_slice().iter().map(|v| v.abs() as f64).sum::<f64>() / n.max(1) as f64;
            Ok((weight * value, Some(wrap(g, weight / n.max(1) as f64)?), None))
        }
        AuxKind::Responsibilities { control, negate } => {
            let mut r = vec![0.0f32; n * k];
            let sign = if *negate { 1.0 } else { -1.0 };
            iem_simd::rows::softmax(a.as_slice(), k, sign, &mut r, Par::Seq);
            let (w, p) = match *control {
                VolumeControl::Balance { weight } => (weight, volume::balance_kl(&r, k)),
                VolumeControl::UsageEntropy { weight } => (weight, volume::usage_entropy(&r, k)),
                VolumeControl::MutualInformation { weight } => {
                    (weight, volume::mutual_information(&r, k))
                }
                VolumeControl::Sinkhorn { weight, eps, iters } => {
                    // Targets q from Sinkhorn on the responsibilities, held constant; the
                    // loss is the soft cross-entropy of r = softmax(sign·a) against q.
                    let q = volume::sinkhorn(&r, k, eps, iters).map_err(err_loss)?;
                    let logits: Vec<f32> = a.as_slice().iter().map(|v| sign * v).collect();
                    let o =
                        soft_cross_entropy(&logits, &q, k, Reduction::Mean).map_err(err_loss)?;
                    return Ok((weight * o.value, Some(wrap(o.grad, sign as f64 * weight)?), None));
                }
                ref other => {
                    return Err(TrainError::Config(format!(
                        "{other:?} is not a control on responsibilities (balance, usage_entropy, mutual_information, sinkhorn)"
                    )));
                }
            };
            let p = p.map_err(err_loss)?;
            // r = softmax(−d) with d = −sign·a: ∂/∂a = −sign ∂/∂d.
            let gd = volume::chain_resp_to_d(&r, &p.grad, k);
            Ok((w * p.value, Some(wrap(gd, -(sign as f64) * w)?), None))
        }
        AuxKind::Control { control } => {
            let r = a.as_slice();
            let (w, p) = match *control {
                VolumeControl::Balance { weight } => (weight, volume::balance_kl(r, k)),
                VolumeControl::UsageEntropy { weight } => (weight, volume::usage_entropy(r, k)),
                VolumeControl::MutualInformation { weight } => {
                    (weight, volume::mutual_information(r, k))
                }
                VolumeControl::Variance { weight, eps } => (weight, volume::variance(r, k, eps)),
                VolumeControl::Decorrelation { weight } => (weight, volume::decorrelation(r, k)),
                VolumeControl::LogDetCov { weight, eps } => (weight, volume::logdet_cov(r, k, eps)),
                VolumeControl::VicregStd { weight, gamma } => {
                    (weight, volume::vicreg_std(r, k, gamma, 1e-4))
                }
                VolumeControl::Sinkhorn { weight, eps, iters } => {
                    let q = volume::sinkhorn(r, k, eps, iters).map_err(err_loss)?;
                    let o = soft_cross_entropy(r, &q, k, Reduction::Mean).map_err(err_loss)?;
                    return Ok((weight * o.value, Some(wrap(o.grad, weight)?), None));
                }
                VolumeControl::Orthogonality { weight } => {
                    let w = weights.ok_or_else(|| {
                        TrainError::Config("orthogonality needs a linear layer".into())
                    })?;
                    let p = volume::orthogonality(w.as_slice(), w.rows(), w.cols())
                        .map_err(err_loss)?;
                    let g = p.grad.iter().map(|v| v * weight as f32).collect();
                    return Ok((weight * p.value, None, Some(g)));
                }
                VolumeControl::None => return Ok((0.0, None, None)),
                VolumeControl::WeightNorm
                | VolumeControl::LearnedTemperature
                | VolumeControl::LogDet => {
                    return Err(TrainError::Config(format!(
                        "{control:?} is a model choice (reparameterisation or distance), not an auxiliary penalty"
                    )));
                }
            };
            let p = p.map_err(err_loss)?;
            Ok((w * p.value, Some(wrap(p.grad, w)?), None))
        }
    }
}

/// Errors on the first layer output of `t` (after layer `from + i`) holding NaN or Inf.
fn check_finite_values(step: usize, from: usize, t: &Trace) -> Result<()> {
    for (i, v) in t.values.iter().enumerate().skip(1) {
        if !all_finite(v.as_slice()) {
            return Err(TrainError::NonFinite {
                step,
                layer: Some(from + i - 1),
                quantity: "activation",
            });
        }
    }
    Ok(())
}

/// The buffers of one row block of a step, reused every step.
struct Block {
    trace: Trace,
    g: Matrix,
    spare: [Matrix; 2],
    grads: ParamGrads,
    zs: Vec<(usize, f64)>,
    /// The block's summed (not averaged) loss.
    value: f64,
    /// Scratch of its weight gradients in panels.
    pack: Vec<f32>,
}

impl Default for Block {
    fn default() -> Self {
        Block {
            trace: Trace { values: vec![Matrix::zeros(0, 0)], caches: Vec::new() },
            g: Matrix::zeros(0, 0),
            spare: [Matrix::zeros(0, 0), Matrix::zeros(0, 0)],
            grads: ParamGrads::new(),
            zs: Vec::new(),
            value: 0.0,
            pack: Vec::new(),
        }
    }
}

/// What every row block of a step shares.
struct BlockCtx<'a> {
    model: &'a Model,
    /// Working weights of the linear layers of `range` (see [`working_weights`]).
    wt: &'a [Option<WorkWeights>],
    base: &'a Matrix,
    range: Range<usize>,
    loss: &'a Loss,
    zero_sum: &'a [bool],
}

impl BlockCtx<'_> {
    /// Forward and backward pass of the rows `rows` of a batch of `batch` rows: the loss
    /// summed over the block, and gradients of the batch mean (scaled by `1/batch`).
    fn run(
        &self,
        blk: &mut Block,
        rows: &[usize],
        batch: usize,
        step: usize,
        par: Par,
    ) -> Result<()> {
        let Block { trace, g, spare, grads, zs, value, pack } = blk;
        self.base.select_rows_into(rows, &mut trace.values[0]);
        self.model.forward_trace(
            trace,
            self.range.start,
            self.range.end,
            self.wt,
            par,
            Some(step),
        )?;
        check_finite_values(step, self.range.start, trace)?;
        *value = block_loss(self.loss, trace.output(), rows, batch, g)?;
        zs.clear();
        let bufs = Backward { g, spare, grads, pack };
        let wt = self.wt;
        self.model.backward_trace(trace, self.range.start, bufs, &[], wt, par, false, |i, dx| {
            if self.zero_sum[i] {
                zs.push((self.range.start + i, zero_sum_residual(dx)));
            }
        })
    }
}

/// The working weights ([`WorkWeights`]: `Wᵀ`, row-major or in panels) of each linear
/// layer of `range` (`None` for other layers): with row blocks the trainer keeps linear
/// layers' weights this way for the whole run — the forward products `X·Wᵀ` then run as
/// `X·(Wᵀ)`, whose large-shape GEMM copies the weights instead of transposing them in every
/// block (the transposition was a tenth of the MNIST-size step; `BENCHMARKS.md`), or reads
/// the panels in place; the weight gradients and the optimiser's state take the same
/// layout. [`write_back_weights`] writes them back into the model.
fn working_weights(model: &Model, range: Range<usize>, par: Par) -> Vec<Option<WorkWeights>> {
    model.layers[range]
        .iter()
        .enumerate()
        .map(|(i, l)| match l {
            crate::Layer::Linear { w, .. } => Some(WorkWeights::new(w, i > 0, par)),
            _ => None,
        })
        .collect()
}

/// `W` from the working weights of [`working_weights`] into the model, for every linear
/// layer of `range`.
fn write_back_weights(
    model: &mut Model,
    range: Range<usize>,
    wt: &[Option<WorkWeights>],
    par: Par,
) {
    for (layer, t) in model.layers[range].iter_mut().zip(wt) {
        if let (crate::Layer::Linear { w, .. }, Some(t)) = (layer, t) {
            t.write_back(w, par);
        }
    }
}

/// After every step: what the next backward pass reads for the input gradients — `W`'s
/// panels where a layer keeps them, else `W` in the model — from the working weights of
/// every linear layer of `range` but the first, whose input gradient is never computed
/// (see [`Model::backward_trace`]).
fn refresh_for_backward(
    model: &mut Model,
    range: Range<usize>,
    wt: &mut [Option<WorkWeights>],
    par: Par,
) {
    for (layer, t) in model.layers[range].iter_mut().zip(wt).skip(1) {
        if let (crate::Layer::Linear { w, .. }, Some(t)) = (layer, t) {
            if t.wp.is_some() { t.refresh(par) } else { t.write_back(w, par) }
        }
    }
}

/// One step split into `n_blocks` row blocks (run concurrently when `par` allows), their
/// parameter gradients summed in block order into the first block's (which the optimiser
/// then reads: each block writes the same buffers every step) and their per-layer norms
/// into `norms`, the zero-sum residuals (max over rows) into `zs`. Returns the batch-mean
/// loss.
#[allow(clippy::too_many_arguments)]
fn blocked_step(
    ctx: &BlockCtx<'_>,
    idx: &[usize],
    n_blocks: usize,
    step: usize,
    par: Par,
    blocks: &mut Vec<Block>,
    norms: &mut Vec<f64>,
    zs: &mut Vec<(usize, f64)>,
) -> Result<f64> {
    use rayon::prelude::*;
    let rows_per = idx.len().div_ceil(n_blocks);
    let parts: Vec<&[usize]> = idx.chunks(rows_per).collect();
    blocks.resize_with(blocks.len().max(parts.len()), Block::default);
    let blocks = &mut blocks[..parts.len()];
    let batch = idx.len();
    let results: Vec<Result<()>> = if par.degree() > 1 && rayon::current_thread_index().is_some() {
        // Block 0 here, the others as jobs for the pool; this thread then polls (running any
        // pending job: a column half of another block's product) until they are done rather
        // than sleeping in a join, whose wake-up took tens of µs on a virtual machine.
        let mut results: Vec<Result<()>> = parts.iter().map(|_| Ok(())).collect();
        let done = AtomicUsize::new(0);
        let (b0, others) = blocks.split_first_mut().expect("a batch has at least one row");
        let (r0, rs) = results.split_first_mut().expect("one result per block");
        rayon::in_place_scope(|s| {
            for ((b, rows), r) in others.iter_mut().zip(&parts[1..]).zip(rs.iter_mut()) {
                let done = &done;
                s.spawn(move |_| {
                    // Counted even if the block panics: the wait below must end (the scope
                    // then resumes the panic).
                    let _count = OnDrop(|| {
                        done.fetch_add(1, Ordering::Release);
                    });
                    *r = ctx.run(b, rows, batch, step, par);
                });
            }
            *r0 = ctx.run(b0, parts[0], batch, step, par);
            poll_until(|| done.load(Ordering::Acquire) == parts.len() - 1);
        });
        results
    } else if par.degree() > 1 {
        blocks
            .par_iter_mut()
            .zip(parts.par_iter())
            .map(|(b, rows)| ctx.run(b, rows, batch, step, par))
            .collect()
    } else {
        blocks.iter_mut().zip(&parts).map(|(b, rows)| ctx.run(b, rows, batch, step, par)).collect()
    };
    // The first failing block in row order names the error.
    results.into_iter().collect::<Result<Vec<()>>>()?;
    let (first, rest) = blocks.split_first_mut().expect("a batch has at least one row");
    let others: Vec<&ParamGrads> = rest.iter().map(|b| &b.grads).collect();
    *norms = sum_blocks(&mut first.grads, &others, par);
    let total: f64 = blocks.iter().map(|b| b.value).sum();
    zs.clear();
    zs.extend(blocks[0].zs.iter().rev().map(|&(l, _)| {
        (
            l,
            blocks
                .iter()
                .map(|b| b.zs.iter().find(|z| z.0 == l).map_or(0.0, |z| z.1))
                .fold(0.0, f64::max),
        )
    }));
    let mean = total / batch as f64;
    if !mean.is_finite() {
        return Err(TrainError::NonFinite { step, layer: None, quantity: "loss" });
    }
    Ok(mean)
}

/// Runs its closure when dropped, also while unwinding (a wait for the signal it sends must
/// end even if the work before it panics).
struct OnDrop<F: FnMut()>(F);

impl<F: FnMut()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

/// Runs pending jobs of the current rayon pool, or spins, until `ready()`: a wait that
/// never puts the thread to sleep.
fn poll_until(ready: impl Fn() -> bool) {
    while !ready() {
        if rayon::yield_now() != Some(rayon::Yield::Executed) {
            std::hint::spin_loop();
        }
    }
}

/// Runs `lead` on this thread (a worker of a rayon pool) while up to `degree − 1` other
/// workers of the pool poll for jobs ([`poll_until`]) until `lead` returns: the trainer's
/// parallel regions then start on threads that are awake. A worker that goes idle in rayon
/// sleeps after a few dozen rounds of looking for work, and waking it took 10–40 µs here,
/// several times per step. The helpers spin while `lead` runs serial code (observer
/// callbacks included). A helper that finds itself on `lead`'s thread (its job taken
/// back by this thread while it waited) returns at once.
fn with_pollers<R>(degree: usize, lead: impl FnOnce() -> R) -> R {
    let stop = AtomicBool::new(false);
    let me = rayon::current_thread_index();
    let helpers = degree.min(rayon::current_num_threads()).saturating_sub(1);
    rayon::in_place_scope(|s| {
        for _ in 0..helpers {
            let stop = &stop;
            s.spawn(move |_| {
                if rayon::current_thread_index() != me {
                    poll_until(|| stop.load(Ordering::Acquire));
                }
            });
        }
        // Raised however `lead` ends, a panic included (the scope then waits for the
        // helpers and resumes it).
        let _stop = OnDrop(|| stop.store(true, Ordering::Release));
        lead()
    })
}

/// `dst += o` for each gradient set `o` of `others`, in order, and the norm of each layer's
/// summed gradient — one parallel region over fixed chunks of every tensor, each chunk's
/// squares summed while it is in cache. Each element's sum runs in block order (`axpy`
/// with α = 1 rounds as `x + y`); a layer's norm is the square root of its chunks' sums of
/// squares added in chunk order.
fn sum_blocks(dst: &mut ParamGrads, others: &[&ParamGrads], par: Par) -> Vec<f64> {
    use rayon::prelude::*;
    let mut jobs = Vec::new();
    for (l, dl) in dst.iter_mut().enumerate() {
        for (p, d) in dl.iter_mut().enumerate() {
            for (ci, dc) in d.chunks_mut(CHUNK).enumerate() {
                let o = ci * CHUNK;
                let srcs: Vec<&[f32]> = others.iter().map(|g| &g[l][p][o..o + dc.len()]).collect();
                jobs.push((l, dc, srcs));
            }
        }
    }
    let run = |(l, dc, srcs): (usize, &mut [f32], Vec<&[f32]>)| {
        let Some((last, first)) = srcs.split_last() else { return (l, sum_sq(dc)) };
        for s in first {
            iem_simd::elementwise::axpy(1.0, s, dc, Par::Seq);
        }
        // The last sum and its squares in one pass.
        (l, iem_simd::elementwise::add_sum_sq(last, dc))
    };
    let total: usize = jobs.iter().map(|j| j.1.len()).sum();
    let parts: Vec<(usize, f64)> = if par.degree() > 1 && total > CHUNK {
        jobs.into_par_iter().map(run).collect()
    } else {
        jobs.into_iter().map(run).collect()
    };
    let mut norms = vec![0.0f64; dst.len()];
    for (l, v) in parts {
        norms[l] += v;
    }
    norms.into_iter().map(f64::sqrt).collect()
}

/// [`main_loss`] of a block of a batch of `batch` rows: the loss summed over the block,
/// and its gradient scaled by `1/batch` into `g`, subnormals flushed (as the losses' own
/// mean does). `g` keeps its buffer: the block's backward pass reuses it every step.
fn block_loss(
    loss: &Loss,
    out: &Matrix,
    idx: &[usize],
    batch: usize,
    g: &mut Matrix,
) -> Result<f64> {
    let (n, c) = out.shape();
    let (v, grad) = loss_terms(loss, out, idx, Reduction::Sum)?;
    let scale = (1.0 / batch as f64) as f32;
    g.resize(n, c);
    for (d, &x) in g.as_mut_slice().iter_mut().zip(&grad) {
        let x = x * scale;
        *d = if x.abs() < f32::MIN_POSITIVE { 0.0 } else { x };
    }
    Ok(v)
}

fn check_finite_grads(step: usize, from: usize, grads: &ParamGrads) -> Result<()> {
    for (i, g) in grads.iter().enumerate() {
        if !g.iter().all(|p| all_finite(p)) {
            return Err(TrainError::NonFinite {
                step,
                layer: Some(from + i),
                quantity: "gradient",
            });
        }
    }
    Ok(())
}

fn check_finite_weights(step: usize, model: &Model, layers: Range<usize>) -> Result<()> {
    for l in layers {
        if !model.layers[l].params().iter().all(|p| all_finite(p)) {
            return Err(TrainError::NonFinite { step, layer: Some(l), quantity: "weight" });
        }
    }
    Ok(())
}

/// `max_n |Σ_j g_nj|`: the zero-sum residual of a competitive layer's input gradient.
fn zero_sum_residual(g: &Matrix) -> f64 {
    let k = g.cols().max(1);
    g.as_slice().chunks(k).map(|r| sum_f64(r).abs()).fold(0.0, f64::max)
}

/// Checks the alarms on every simplex-valued layer of a full forward pass.
fn alarms(
    model: &Model,
    x: &Matrix,
    cfg: &TrainConfig,
    step: usize,
    report: &mut TrainReport,
) -> Result<()> {
    if cfg.alarms.max_usage.is_none() && cfg.alarms.dead_units.is_none() {
        return Ok(());
    }
    let t = model.forward(x, cfg.par)?;
    for (l, layer) in model.layers.iter().enumerate() {
        let simplex = matches!(layer, crate::Layer::Act { act, .. } if matches!(act,
            iem_activations::Activation::Softmax { .. } | iem_activations::Activation::Sparsemax | iem_activations::Activation::Entmax15));
        if !simplex {
            continue;
        }
        let usage = t.values[l + 1].col_means_f64();
        let max = usage.iter().copied().fold(0.0, f64::max);
        let dead = usage.iter().filter(|&&u| u < 0.01).count();
        let mut msg = None;
        if let Some(m) = cfg.alarms.max_usage
            && max > m
        {
            msg = Some(format!("winner-take-all: max usage {max:.3} > {m}"));
        }
        if let Some(d) = cfg.alarms.dead_units
            && dead >= d
        {
            msg = Some(format!("{dead} dead units (usage < 0.01)"));
        }
        if let Some(detail) = msg {
            match cfg.alarms.action {
                AlarmAction::Stop => return Err(TrainError::Collapse { step, layer: l, detail }),
                AlarmAction::Warn => {
                    report.warnings.push(format!("step {step}, layer {l}: {detail}"))
                }
            }
        }
    }
    Ok(())
}

/// End-to-end training (approach 2) of the whole model on `loss`, with auxiliary
/// objectives on layer outputs.
pub fn end_to_end(
    model: &mut Model,
    x: &Matrix,
    loss: &Loss,
    aux: &[Aux],
    cfg: &TrainConfig,
    obs: &mut dyn Observer,
) -> Result<TrainReport> {
    let to = model.layers.len();
    train_range(model, x, 0..to, loss, aux, cfg, obs)
}

/// Trains layers `range` (the others frozen) on `loss` applied to the output of the last
/// layer of `range`. Layers before the range are computed once per batch, frozen.
pub fn train_range(
    model: &mut Model,
    x: &Matrix,
    range: Range<usize>,
    loss: &Loss,
    aux: &[Aux],
    cfg: &TrainConfig,
    obs: &mut dyn Observer,
) -> Result<TrainReport> {
    Ok(train_until(model, x, range, loss, aux, cfg, obs, None)?.0)
}

/// [`train_range`] that also stops early once an epoch's loss improves by less than
/// `conv.rel_tol` of its magnitude (`cfg.epochs` is then the maximum); one optimiser state
/// throughout. Returns the report and whether the criterion was met.
#[allow(clippy::too_many_arguments)]
fn train_until(
    model: &mut Model,
    x: &Matrix,
    range: Range<usize>,
    loss: &Loss,
    aux: &[Aux],
    cfg: &TrainConfig,
    obs: &mut dyn Observer,
    conv: Option<f64>,
) -> Result<(TrainReport, bool)> {
    model.check()?;
    let n = x.rows();
    if n == 0 {
        return Err(TrainError::Config("the training set is empty".into()));
    }
    match loss {
        Loss::CrossEntropy(y) if y.len() != n => {
            return Err(TrainError::Config(format!("{} labels for {n} samples", y.len())));
        }
        Loss::Mse(t) if t.rows() != n => {
            return Err(TrainError::Config(format!("{} targets for {n} samples", t.rows())));
        }
        _ => {}
    }
    for a in aux {
        if !range.contains(&a.layer) {
            return Err(TrainError::Config(format!(
                "auxiliary objective on layer {} outside the trained layers {range:?}",
                a.layer
            )));
        }
    }
    if !all_finite(x.as_slice()) {
        return Err(TrainError::NonFinite { step: 0, layer: None, quantity: "input" });
    }
    if cfg.row_blocks == 0 {
        return Err(TrainError::Config("row_blocks must be at least 1".into()));
    }
    cfg.optim.validate().map_err(|e| TrainError::Config(format!("optimiser: {e}")))?;
    let steps_per_epoch = if cfg.batch == 0 { 1 } else { n.div_ceil(cfg.batch) };
    let mut opt = Optimizer::new(cfg.optim, model, cfg.epochs * steps_per_epoch);
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut report = TrainReport::default();
    let frozen_input = if range.start > 0 {
        Some(model.forward_range(x, 0, range.start, cfg.par)?.output().clone())
    } else {
        None
    };
    let base = frozen_input.as_ref().unwrap_or(x);
    // Buffers reused by every step: the trace (batch, layer outputs, caches), the output
    // gradient and the two input-gradient buffers, and the parameter gradients.
    let mut trace = Trace { values: vec![Matrix::zeros(0, 0)], caches: Vec::new() };
    let mut g = Matrix::zeros(0, 0);
    let (mut spare, mut grads) = ([Matrix::zeros(0, 0), Matrix::zeros(0, 0)], Vec::new());
    let mut pack = Vec::new();
    let zero_sum: Vec<bool> =
        range.clone().map(|l| obs.wants_zero_sum() && model.layers[l].zero_sum()).collect();
    // Buffers of each row block when `row_blocks > 1`, and the transposed weights of the
    // linear layers that the blocks (and the optimiser) then work on.
    let mut blocks: Vec<Block> = Vec::new();
    let blocked = cfg.row_blocks > 1 && aux.is_empty();
    let mut wt = if blocked { working_weights(model, range.clone(), cfg.par) } else { Vec::new() };
    let mut step = 0;
    let mut converged = false;
    let mut prev = f64::INFINITY;
    let mut run = || -> Result<()> {
        for epoch in 0..cfg.epochs {
            let mut total = 0.0;
            let bs = batches(n, cfg.batch, cfg.shuffle, &mut rng);
            let nb = bs.len();
            for idx in bs {
                let mut zs = Vec::new();
                let mut grad_norms: Vec<f64> = Vec::new();
                let value = if blocked {
                    let ctx = BlockCtx {
                        model,
                        wt: &wt,
                        base,
                        range: range.clone(),
                        loss,
                        zero_sum: &zero_sum,
                    };
                    blocked_step(
                        &ctx,
                        &idx,
                        cfg.row_blocks.min(idx.len()),
                        step,
                        cfg.par,
                        &mut blocks,
                        &mut grad_norms,
                        &mut zs,
                    )?
                } else {
                    base.select_rows_into(&idx, &mut trace.values[0]);
                    // An auxiliary objective may read any layer's output: no fused pairs.
                    let fuse = aux.is_empty().then_some(step);
                    model.forward_trace(&mut trace, range.start, range.end, &[], cfg.par, fuse)?;
                    check_finite_values(step, range.start, &trace)?;
                    let mut value = main_loss(loss, trace.output(), &idx, &mut g)?;
                    let mut extra = Vec::new();
                    let mut weight_extra: Vec<(usize, Vec<f32>)> = Vec::new();
                    for a in aux {
                        let w = match &model.layers[a.layer] {
                            crate::Layer::Linear { w, .. } => Some(w),
                            _ => None,
                        };
                        let (v, ga, gw) =
                            aux_term(&a.kind, &trace.values[a.layer - range.start + 1], w)?;
                        value += v;
                        if let Some(ga) = ga {
                            extra.push((a.layer, ga));
                        }
                        if let Some(gw) = gw {
                            weight_extra.push((a.layer, gw));
                        }
                    }
                    if !value.is_finite() {
                        return Err(TrainError::NonFinite { step, layer: None, quantity: "loss" });
                    }
                    let bufs = Backward {
                        g: &mut g,
                        spare: &mut spare,
                        grads: &mut grads,
                        pack: &mut pack,
                    };
                    model.backward_trace(
                        &trace,
                        range.start,
                        bufs,
                        &extra,
                        &[],
                        cfg.par,
                        false,
                        |i, dx| {
                            if zero_sum[i] {
                                zs.push((range.start + i, zero_sum_residual(dx)));
                            }
                        },
                    )?;
                    zs.reverse();
                    for (l, gw) in weight_extra {
                        grads[l - range.start][0].iter_mut().zip(gw).for_each(|(a, b)| *a += b);
                    }
                    // One pass computes the norms; a non-finite norm means a non-finite
                    // gradient, which a second pass then locates.
                    grad_norms = grads
                        .iter()
                        .map(|g| g.iter().map(|p| sum_sq(p)).sum::<f64>().sqrt())
                        .collect();
                    value
                };
                // With row blocks the summed gradients are in the first block's buffers.
                let grads = match blocks.first_mut() {
                    Some(b) if blocked => &mut b.grads,
                    _ => &mut grads,
                };
                if grad_norms.iter().any(|v| !v.is_finite()) {
                    check_finite_grads(step, range.start, grads)?;
                }
                let norm = grad_norms.iter().map(|v| v * v).sum::<f64>().sqrt() as f32;
                let finite = opt.apply(model, range.clone(), grads, norm, &mut wt, cfg.par);
                if blocked && finite {
                    refresh_for_backward(model, range.clone(), &mut wt, cfg.par);
                }
                if !finite {
                    write_back_weights(model, range.clone(), &wt, cfg.par);
                    check_finite_weights(step, model, range.clone())?;
                }
                obs.on_step(&StepInfo { step, epoch, loss: value, grad_norms, zero_sum: zs });
                total += value;
                step += 1;
            }
            let mean = total / nb as f64;
            report.epoch_loss.push(mean);
            if obs.wants_model()
                || cfg.alarms.max_usage.is_some()
                || cfg.alarms.dead_units.is_some()
            {
                write_back_weights(model, range.clone(), &wt, cfg.par);
            }
            obs.on_epoch(epoch, mean);
            alarms(model, x, cfg, step, &mut report)?;
            obs.on_model(epoch, model);
            if let Some(tol) = conv {
                if (prev - mean).abs() <= tol * mean.abs().max(1e-12) {
                    converged = true;
                    break;
                }
                prev = mean;
            }
        }
        Ok(())
    };
    // Whatever ends the run, the model holds every update made. With row blocks on a pool's
    // worker, as many of the pool's other threads as there are other blocks stay awake for
    // the run (see `with_pollers`); the rest of a larger pool sleeps and wakes as usual.
    let outcome = if blocked && cfg.par.degree() > 1 && rayon::current_thread_index().is_some() {
        with_pollers(cfg.par.degree().min(cfg.row_blocks), run)
    } else {
        run()
    };
    write_back_weights(model, range.clone(), &wt, cfg.par);
    outcome?;
    report.steps = step;
    report.final_loss = report.epoch_loss.last().copied().unwrap_or(f64::NAN);
    Ok((report, converged))
}

/// One greedy stage: train `layers` (the earlier ones frozen) to minimise the LSE of the
/// distances read at the output of `layers.end − 1` (`negate`: the output is a score,
/// `d = −output`) plus a volume control, until converged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    /// The layers trained in this stage.
    pub layers: Range<usize>,
    /// Read the stage output as scores rather than distances.
    pub negate: bool,
    /// The volume control (applied to the stage output).
    pub control: VolumeControl,
}

/// When a greedy stage stops.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Convergence {
    /// Stop when the epoch loss improves by less than this fraction of its magnitude.
    pub rel_tol: f64,
    /// ... or after this many epochs.
    pub max_epochs: usize,
}

/// One stage's outcome.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageReport {
    /// Epochs run.
    pub epochs: usize,
    /// Whether `rel_tol` was met before `max_epochs`.
    pub converged: bool,
    /// Final epoch loss.
    pub final_loss: f64,
}

/// Greedy layer-wise training (approach 1): each stage in order, each until convergence,
/// then frozen.
pub fn greedy(
    model: &mut Model,
    x: &Matrix,
    stages: &[Stage],
    conv: Convergence,
    cfg: &TrainConfig,
    obs: &mut dyn Observer,
) -> Result<Vec<StageReport>> {
    let mut out = Vec::new();
    for (si, st) in stages.iter().enumerate() {
        if st.layers.is_empty() || st.layers.end > model.layers.len() {
            return Err(TrainError::Config(format!(
                "stage {si}: layers {:?} out of range",
                st.layers
            )));
        }
        let last = st.layers.end - 1;
        let mut aux = vec![Aux {
            layer: last,
            kind: AuxKind::Lse { weight: 1.0, negate: st.negate, sum: false },
        }];
        match st.control {
            VolumeControl::None => {}
            // Usage balance acts on the stage's responsibilities r = softmax(−d).
            VolumeControl::Balance { weight } => aux.push(Aux {
                layer: last,
                kind: AuxKind::SoftmaxBalance { weight, negate: !st.negate },
            }),
            VolumeControl::UsageEntropy { .. }
            | VolumeControl::MutualInformation { .. }
            | VolumeControl::Sinkhorn { .. } => aux.push(Aux {
                layer: last,
                kind: AuxKind::Responsibilities { control: st.control.clone(), negate: st.negate },
            }),
            _ => aux
                .push(Aux { layer: last, kind: AuxKind::Control { control: st.control.clone() } }),
        }
        // One optimiser state per stage (its schedule spans `max_epochs`).
        let c = TrainConfig {
            epochs: conv.max_epochs,
            seed: cfg.seed.wrapping_add((si * 1_000_003) as u64),
            ..cfg.clone()
        };
        let (r, converged) = train_until(
            model,
            x,
            st.layers.clone(),
            &Loss::Zero,
            &aux,
            &c,
            obs,
            Some(conv.rel_tol),
        )?;
        out.push(StageReport { epochs: r.epoch_loss.len(), converged, final_loss: r.final_loss });
    }
    Ok(out)
}
