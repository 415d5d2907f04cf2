//! # iem-train — the two approaches, as two ways of training
//!
//! A [`Model`] is a sequence of [`Layer`]s (linear maps, activations of `iem-activations`,
//! Euclidean distance layers, prototype attention) with a forward pass and a backward pass
//! through each layer's vector-Jacobian product. [`optim`] has SGD (momentum, weight decay),
//! Adam and AdamW with constant or cosine schedules and gradient clipping, on the
//! `iem-simd` update loops. [`train`] runs
//! - **end-to-end** training (approach 2: competitive activations, any loss, optional
//!   per-layer auxiliary volume controls),
//! - **greedy layer-wise** training (approach 1: each stage minimises the LSE of its own
//!   distances plus a volume control until a stated convergence criterion, then is frozen),
//! - greedy then end-to-end fine-tuning,
//!
//! and [`probe`] fits linear probes (ridge, multinomial logistic) on frozen features.
//! [`checkpoint`] saves models with a checked header, bounded decoding and atomic writes.
//!
//! Determinism: randomness comes only from `ChaCha8Rng` seeded by the config (it draws
//! each epoch's batch order; [`train::TrainConfig::shuffle`] `= false` takes the batches in
//! the data's order instead), and every kernel is bit-identical for any thread count, so a
//! run gives the same weights bit for bit with 1 or 2 threads (tested).
//!
//! Speed on several cores: with [`train::TrainConfig::row_blocks`] set to the core count,
//! each mini-batch is split into that many row blocks whose forward and backward passes
//! run concurrently (one parallel region per step instead of one per kernel; on 2 cores
//! about 1.3× faster on an MNIST-size MLP), and the trainer keeps the linear layers'
//! weights transposed while it runs (a further 6–9% there; see the crate's
//! `BENCHMARKS.md`). The block count is part of the configuration: it changes the order of
//! the gradient sums, never with the thread count.
//!
//! ```
//! use iem_activations::Activation;
//! use iem_tensor::Matrix;
//! use iem_train::{optim::OptimConfig, train::{self, Loss, TrainConfig}, Init, Model};
//! // A 3-layer competitive network: 2 → 16 (softmax in groups of 4) → 16 (SoLU) → 3.
//! let mut model = Model::mlp(&[2, 16, 16, 3], &[
//!     Activation::GroupedSoftmax { group: 4, tau: 1.0 },
//!     Activation::Solu,
//! ], Init::PytorchDefault, 7).unwrap();
//! let x = Matrix::from_fn(60, 2, |i, j| ((i * 7 + j * 3) % 11) as f32 / 5.0 - 1.0);
//! let y: Vec<usize> = (0..60).map(|i| i % 3).collect();
//! let cfg = TrainConfig { epochs: 3, batch: 20, seed: 1, optim: OptimConfig::adam(1e-2), ..TrainConfig::default() };
//! let report = train::end_to_end(&mut model, &x, &Loss::CrossEntropy(y), &[], &cfg, &mut ()).unwrap();
//! assert_eq!(report.steps, 9);
//! assert!(report.final_loss.is_finite());
//! ```
//!
//! Greedy layer-wise pretraining (approach 1), then end-to-end fine-tuning: each hidden
//! linear layer minimises the LSE of its own scores (`d = −z`) plus a usage-balance volume
//! control until its epoch loss changes by less than 0.1%, and is frozen before the next.
//!
//! ```
//! use iem_activations::Activation;
//! use iem_losses::volume::VolumeControl;
//! use iem_tensor::Matrix;
//! use iem_train::train::{self, Convergence, Loss, Stage, TrainConfig};
//! use iem_train::{optim::OptimConfig, Init, Model};
//! let sm = Activation::Softmax { temperature: Default::default() };
//! let mut model = Model::mlp(&[2, 16, 16, 3], &[sm.clone(), sm], Init::PytorchDefault, 7).unwrap();
//! let x = Matrix::from_fn(60, 2, |i, j| ((i * 7 + j * 3) % 11) as f32 / 5.0 - 1.0);
//! let y: Vec<usize> = (0..60).map(|i| i % 3).collect();
//! let cfg = TrainConfig { batch: 20, optim: OptimConfig::adam(1e-2), ..TrainConfig::default() };
//! let balance = VolumeControl::Balance { weight: 1.0 };
//! let stages = [
//!     Stage { layers: 0..1, negate: true, control: balance.clone() },   // linear 2 → 16
//!     Stage { layers: 2..3, negate: true, control: balance },           // linear 16 → 16
//! ];
//! let conv = Convergence { rel_tol: 1e-3, max_epochs: 30 };
//! let reports = train::greedy(&mut model, &x, &stages, conv, &cfg, &mut ()).unwrap();
//! assert_eq!(reports.len(), 2);
//! let fine = TrainConfig { epochs: 5, ..cfg };
//! train::end_to_end(&mut model, &x, &Loss::CrossEntropy(y), &[], &fine, &mut ()).unwrap();
//! ```
#![forbid(unsafe_code)]

pub mod checkpoint;
mod layer;
pub mod optim;
pub mod probe;
pub mod train;

use layer::WorkWeights;
pub use layer::{Cache, Distance, Layer};

use iem_activations::Activation;
use iem_simd::Par;
use iem_tensor::Matrix;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Everything that can go wrong while building or training a model.
#[derive(Clone, Debug, PartialEq)]
pub enum TrainError {
    /// An input's shape does not fit a layer.
    Shape {
        /// Layer index.
        layer: usize,
        /// What is wrong.
        detail: String,
    },
    /// An invalid configuration.
    Config(String),
    /// NaN or ±∞ appeared during training.
    NonFinite {
        /// Optimisation step (0-based).
        step: usize,
        /// Layer index (`None` for the loss itself).
        layer: Option<usize>,
        /// Which quantity: "loss", "activation", "gradient", "weight".
        quantity: &'static str,
    },
    /// A collapse alarm configured to stop training fired.
    Collapse {
        /// Step.
        step: usize,
        /// Layer.
        layer: usize,
        /// What was seen.
        detail: String,
    },
    /// A loss or metric failed.
    Loss(String),
    /// Reading or writing a checkpoint failed.
    Checkpoint(checkpoint::CheckpointError),
}

impl fmt::Display for TrainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrainError::Shape { layer, detail } => write!(f, "layer {layer}: {detail}"),
            TrainError::Config(s) => write!(f, "invalid configuration: {s}"),
            TrainError::NonFinite { step, layer: Some(l), quantity } => {
                write!(f, "step {step}: non-finite {quantity} in layer {l}")
            }
            TrainError::NonFinite { step, layer: None, quantity } => {
                write!(f, "step {step}: non-finite {quantity}")
            }
            TrainError::Collapse { step, layer, detail } => {
                write!(f, "step {step}: layer {layer} collapsed: {detail}")
            }
            TrainError::Loss(s) => write!(f, "loss: {s}"),
            TrainError::Checkpoint(e) => write!(f, "checkpoint: {e}"),
        }
    }
}

impl std::error::Error for TrainError {}

/// Result alias.
pub type Result<T> = std::result::Result<T, TrainError>;

/// Named, seeded initialisations.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Init {
    /// PyTorch's default for `nn.Linear`: weights and biases `U(±1/√fan_in)`.
    #[default]
    PytorchDefault,
    /// Xavier/Glorot uniform `U(±√(6/(fan_in + fan_out)))`, zero bias.
    XavierUniform,
    /// `N(0, σ²)` weights (Box–Muller from the seeded stream), zero bias.
    Normal(f32),
}

impl Init {
    /// A `out × in` weight matrix and an `out` bias from `rng`.
    pub fn linear(self, out: usize, inp: usize, rng: &mut ChaCha8Rng) -> (Matrix, Vec<f32>) {
        match self {
            Init::PytorchDefault => {
                let a = 1.0 / (inp.max(1) as f32).sqrt();
                let w = Matrix::from_fn(out, inp, |_, _| rng.random_range(-a..a));
                let b = (0..out).map(|_| rng.random_range(-a..a)).collect();
                (w, b)
            }
            Init::XavierUniform => {
                let a = (6.0 / (inp + out).max(1) as f32).sqrt();
                (Matrix::from_fn(out, inp, |_, _| rng.random_range(-a..a)), vec![0.0; out])
            }
            Init::Normal(s) => (Matrix::from_fn(out, inp, |_, _| s * normal(rng)), vec![0.0; out]),
        }
    }
}

/// A standard normal sample (Box–Muller).
pub fn normal(rng: &mut ChaCha8Rng) -> f32 {
    let u1: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
    let u2: f64 = rng.random_range(0.0..1.0);
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

/// A sequence of layers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// The layers, applied in order.
    pub layers: Vec<Layer>,
}

/// The intermediate results of a forward pass.
#[derive(Clone, Debug, Default)]
pub struct Trace {
    /// `inputs[l]` is the input of layer `l`; the last entry is the model's output.
    pub values: Vec<Matrix>,
    /// Per-layer caches.
    pub caches: Vec<Cache>,
}

impl Trace {
    /// The model's output.
    pub fn output(&self) -> &Matrix {
        self.values.last().expect("a trace holds at least the input")
    }
}

/// Gradients of every parameter tensor, per layer.
pub type ParamGrads = Vec<Vec<Vec<f32>>>;

impl Model {
    /// An MLP `sizes[0] → sizes[1] → … → sizes[L]` with `acts[l]` after hidden linear layer
    /// `l` (`acts.len() = L − 1`; the last linear layer has no activation).
    pub fn mlp(sizes: &[usize], acts: &[Activation], init: Init, seed: u64) -> Result<Model> {
        if sizes.len() < 2 || acts.len() + 2 != sizes.len() {
            return Err(TrainError::Config(format!(
                "mlp: {} sizes need {} activations, got {}",
                sizes.len(),
                sizes.len().saturating_sub(2),
                acts.len()
            )));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut layers = Vec::new();
        for l in 0..sizes.len() - 1 {
            let (w, b) = init.linear(sizes[l + 1], sizes[l], &mut rng);
            layers.push(Layer::Linear { w, b });
            if l < acts.len() {
                let act = acts[l].clone();
                act.validate(sizes[l + 1]).map_err(|e| TrainError::Config(e.to_string()))?;
                let params = act.init_params(sizes[l + 1]);
                layers.push(Layer::Act { act, params, width: sizes[l + 1] });
            }
        }
        let m = Model { layers };
        m.check()?;
        Ok(m)
    }

    /// Checks that consecutive layers' widths fit.
    pub fn check(&self) -> Result<()> {
        for (l, pair) in self.layers.windows(2).enumerate() {
            let out = pair[0].output_width(pair[0].input_width());
            if out != pair[1].input_width() {
                return Err(TrainError::Shape {
                    layer: l + 1,
                    detail: format!(
                        "{} outputs {out} but {} expects {}",
                        pair[0].name(),
                        pair[1].name(),
                        pair[1].input_width()
                    ),
                });
            }
        }
        Ok(())
    }

    /// Number of scalar parameters.
    pub fn num_params(&self) -> usize {
        self.layers.iter().flat_map(|l| l.params()).map(|p| p.len()).sum()
    }

    /// Forward pass through layers `from..to`, keeping every intermediate value.
    pub fn forward_range(&self, x: &Matrix, from: usize, to: usize, par: Par) -> Result<Trace> {
        self.forward_owned(x.clone(), from, to, par)
    }

    /// [`Model::forward_range`] that keeps `x` itself as the trace's first value (no copy).
    pub(crate) fn forward_owned(
        &self,
        x: Matrix,
        from: usize,
        to: usize,
        par: Par,
    ) -> Result<Trace> {
        let mut t = Trace { values: vec![x], caches: Vec::new() };
        self.forward_trace(&mut t, from, to, &[], par, None)?;
        Ok(t)
    }

    /// Forward pass through layers `from..to` from `t.values[0]`, reusing the buffers the
    /// trace already holds (a training loop keeps one trace for the whole run). `wt[i]`,
    /// when present, holds the working weights of linear layer `from + i` (see
    /// [`Layer::forward_into_t`]); `wt` may be empty.
    ///
    /// `fuse = Some(step)` (training, when nothing reads a linear layer's own output): a
    /// linear layer followed by an activation with an in-place form
    /// ([`Activation::in_place`], e.g. ReLU) writes its output straight into the
    /// activation's slot, which the activation then overwrites; the linear layer's slot is
    /// left `0 × 0` and [`Layer::backward_into`] takes the activation's gradient from its
    /// output. One buffer less per such pair, same values. Because the activation may hide a
    /// NaN (ReLU maps it to 0), the linear output is checked first, and a non-finite one is
    /// reported as `check_finite_values` would: the first non-finite output in layer order,
    /// at step `step`.
    pub(crate) fn forward_trace(
        &self,
        t: &mut Trace,
        from: usize,
        to: usize,
        wt: &[Option<WorkWeights>],
        par: Par,
        fuse: Option<usize>,
    ) -> Result<()> {
        let n = to.saturating_sub(from);
        t.values.resize_with(n + 1, || Matrix::zeros(0, 0));
        t.caches.resize_with(n, Cache::default);
        let mut i = 0;
        while i < n {
            let l = from + i;
            let w = wt.get(i).and_then(Option::as_ref);
            let in_place_act = match self.layers.get(l + 1) {
                Some(Layer::Act { act, params, .. }) if i + 1 < n && params.is_empty() => {
                    Some(act).filter(|a| a.in_place())
                }
                _ => None,
            };
            if let (Some(step), Some(act), Layer::Linear { .. }) =
                (fuse, in_place_act, &self.layers[l])
            {
                let (done, rest) = t.values.split_at_mut(i + 1);
                let (skipped, rest) = rest.split_at_mut(1);
                let zy = &mut rest[0];
                self.layers[l].forward_into_t(l, &done[i], zy, &mut t.caches[i], w, par)?;
                if !iem_simd::elementwise::all_finite(zy.as_slice()) {
                    let first = done[1..]
                        .iter()
                        .position(|v| !iem_simd::elementwise::all_finite(v.as_slice()));
                    let layer = first.map_or(l, |j| from + j);
                    return Err(TrainError::NonFinite {
                        step,
                        layer: Some(layer),
                        quantity: "activation",
                    });
                }
                skipped[0].resize(0, 0);
                act.forward_in_place(zy, par)
                    .map_err(|e| TrainError::Config(format!("layer {}: {e}", l + 1)))?;
                if !matches!(t.caches[i + 1], Cache::Act(_)) {
                    t.caches[i + 1] = Cache::Act(iem_activations::Forward {
                        out: Matrix::zeros(0, 0),
                        aux: Matrix::zeros(0, 0),
                    });
                }
                i += 2;
                continue;
            }
            let (done, rest) = t.values.split_at_mut(i + 1);
            self.layers[l].forward_into_t(l, &done[i], &mut rest[0], &mut t.caches[i], w, par)?;
            i += 1;
        }
        Ok(())
    }

    /// Forward pass through every layer.
    pub fn forward(&self, x: &Matrix, par: Par) -> Result<Trace> {
        self.forward_range(x, 0, self.layers.len(), par)
    }

    /// The output only.
    pub fn predict(&self, x: &Matrix, par: Par) -> Result<Matrix> {
        let (mut h, mut next, mut cache) = (x.clone(), Matrix::zeros(0, 0), Cache::None);
        for (l, layer) in self.layers.iter().enumerate() {
            layer.forward_into(l, &h, &mut next, &mut cache, par)?;
            std::mem::swap(&mut h, &mut next);
        }
        Ok(h)
    }

    /// Backward pass of a trace of layers `from..from + trace.caches.len()`, from the output
    /// gradient `g`, with optional extra gradients added to layer outputs (`extra[l]` is
    /// added to `∂L/∂(output of layer from + l)`). Returns parameter gradients per layer and
    /// the input gradient of each layer (for diagnostics).
    pub fn backward_range(
        &self,
        trace: &Trace,
        from: usize,
        g: Matrix,
        extra: &[(usize, Matrix)],
        par: Par,
    ) -> Result<(ParamGrads, Vec<Matrix>)> {
        let n = trace.caches.len();
        let mut input_grads = vec![Matrix::zeros(0, 0); n];
        let (mut g, mut spare, mut grads) =
            (g, [Matrix::zeros(0, 0), Matrix::zeros(0, 0)], ParamGrads::new());
        let bufs =
            Backward { g: &mut g, spare: &mut spare, grads: &mut grads, pack: &mut Vec::new() };
        self.backward_trace(trace, from, bufs, extra, &[], par, true, |i, dx| {
            input_grads[i] = dx.clone();
        })?;
        Ok((grads, input_grads))
    }

    /// The backward pass into reusable buffers: `bufs.g` holds `∂L/∂output` on entry,
    /// `bufs.spare` is overwritten, `bufs.grads` receives the parameter gradients,
    /// and `on_dx(i, dx)` sees each layer's input gradient as it is computed. `first_dx`:
    /// compute the first layer's input gradient (training skips it when that layer is
    /// linear: its input is data or a frozen layer's output). `wt` as for
    /// [`Model::forward_trace`]: a linear layer given working weights also returns its
    /// weight gradient in their layout, while its input gradient `G·W` still reads `W`, or
    /// `W`'s panels when the working weights keep them (the product runs faster
    /// untransposed): the caller keeps them current for every layer whose input gradient it
    /// asks for.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn backward_trace(
        &self,
        trace: &Trace,
        from: usize,
        bufs: Backward<'_>,
        extra: &[(usize, Matrix)],
        wt: &[Option<WorkWeights>],
        par: Par,
        first_dx: bool,
        mut on_dx: impl FnMut(usize, &Matrix),
    ) -> Result<()> {
        let Backward { g, spare: [s0, s1], grads, pack } = bufs;
        let n = trace.caches.len();
        grads.resize_with(n, Vec::new);
        // The output gradient stays in `g`; the layers' input gradients alternate between
        // the two spares, so every buffer keeps its shape from step to step (one that shrank
        // to the output's width and grew back would be zero-filled every step). A linear
        // layer whose input gradient is skipped gets an empty matrix for the same reason.
        let mut skipped = Matrix::zeros(0, 0);
        for (k, i) in (0..n).rev().enumerate() {
            let (cur, next): (&mut Matrix, &mut Matrix) = match k {
                0 => (&mut *g, &mut *s0),
                _ if k % 2 == 1 => (&mut *s0, &mut *s1),
                _ => (&mut *s1, &mut *s0),
            };
            let l = from + i;
            for (el, e) in extra {
                if *el == l {
                    cur.axpy(1.0, e)
                        .map_err(|e| TrainError::Shape { layer: l, detail: e.to_string() })?;
                }
            }
            let (x, y) = (&trace.values[i], &trace.values[i + 1]);
            let need_dx = first_dx || i > 0;
            let linear = matches!(self.layers[l], Layer::Linear { .. });
            let dx = if need_dx || !linear { next } else { &mut skipped };
            self.layers[l].backward_into(
                l,
                x,
                y,
                &trace.caches[i],
                cur,
                dx,
                &mut grads[i],
                need_dx,
                wt.get(i).and_then(Option::as_ref),
                pack,
                par,
            )?;
            on_dx(i, dx);
        }
        Ok(())
    }
}

/// The buffers of [`Model::backward_trace`].
pub(crate) struct Backward<'a> {
    /// `∂L/∂output` (plus any extra gradient of the last layer's output afterwards).
    pub g: &'a mut Matrix,
    /// The layers' input gradients, alternately (scratch for the caller).
    pub spare: &'a mut [Matrix; 2],
    /// Parameter gradients per layer.
    pub grads: &'a mut ParamGrads,
    /// Scratch for a weight gradient in panels ([`layer::WorkWeights`]).
    pub pack: &'a mut Vec<f32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A training trace with fused pairs (linear + an activation with an in-place form)
    /// gives the unfused trace's output, parameter gradients and input gradients bit for
    /// bit (on a batch holding exact zeros), and leaves the fused linear layers' slots empty.
    #[test]
    fn fused_pairs_change_no_bit() {
        use iem_activations::Temperature;
        let grouped = Activation::GroupedSoftmax { group: 3, tau: 0.8 };
        let softmax = Activation::Softmax { temperature: Temperature::Fixed(0.7) };
        for acts in [
            [Activation::Relu, Activation::Relu],
            [softmax, Activation::LogSoftmax],
            [grouped, Activation::Relu],
        ] {
            assert!(acts.iter().all(Activation::in_place));
            let m = Model::mlp(&[5, 9, 6, 3], &acts, Init::PytorchDefault, 3).unwrap();
            let mut rng = ChaCha8Rng::seed_from_u64(5);
            let x = Matrix::from_fn(6, 5, |i, j| {
                if (i + j) % 4 == 0 { 0.0 } else { rng.random_range(-2.0f32..2.0) }
            });
            let g = Matrix::from_fn(6, 3, |_, _| rng.random_range(-1.0f32..1.0));
            let n = m.layers.len();
            let run = |fuse: Option<usize>| {
                let mut t = Trace { values: vec![x.clone()], caches: Vec::new() };
                m.forward_trace(&mut t, 0, n, &[], Par::Seq, fuse).unwrap();
                let (mut gg, mut spare, mut grads) =
                    (g.clone(), [Matrix::zeros(0, 0), Matrix::zeros(0, 0)], ParamGrads::new());
                let mut dxs = vec![Vec::new(); n];
                let bufs = Backward {
                    g: &mut gg,
                    spare: &mut spare,
                    grads: &mut grads,
                    pack: &mut Vec::new(),
                };
                m.backward_trace(&t, 0, bufs, &[], &[], Par::Seq, false, |i, dx| {
                    dxs[i] = dx.as_slice().iter().map(|v| v.to_bits()).collect();
                })
                .unwrap();
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                let grads: Vec<Vec<u32>> = grads.iter().flatten().map(|p| bits(p)).collect();
                let shapes: Vec<(usize, usize)> = t.values.iter().map(Matrix::shape).collect();
                (bits(t.output().as_slice()), grads, dxs, shapes)
            };
            let (out0, grads0, dx0, shapes0) = run(None);
            let (out1, grads1, dx1, shapes1) = run(Some(0));
            let name = acts[0].name();
            assert_eq!(out0, out1, "{name}");
            assert_eq!(grads0, grads1, "{name}");
            assert_eq!(dx0, dx1, "{name}");
            // Slots 1 and 3 (the linear outputs feeding the activations) are empty when fused.
            assert_eq!(shapes0[1], (6, 9));
            assert_eq!((shapes1[1], shapes1[3]), ((0, 0), (0, 0)), "{name}");
            assert_eq!(shapes1[2], (6, 9));
        }
    }

    /// A non-finite linear output that the fused ReLU would hide (NaN → 0) is still
    /// reported at the linear layer.
    #[test]
    fn fused_relu_pairs_still_report_a_nan() {
        let mut m = Model::mlp(&[2, 4, 3], &[Activation::Relu], Init::PytorchDefault, 1).unwrap();
        if let Layer::Linear { w, .. } = &mut m.layers[0] {
            w.set(2, 1, f32::NAN);
        }
        let x = Matrix::from_fn(3, 2, |i, j| (i + j) as f32 - 1.5);
        let mut t = Trace { values: vec![x], caches: Vec::new() };
        match m.forward_trace(&mut t, 0, 3, &[], Par::Seq, Some(7)) {
            Err(TrainError::NonFinite { step: 7, layer: Some(0), quantity: "activation" }) => {}
            other => panic!("expected a non-finite activation at layer 0, got {other:?}"),
        }
    }
}
