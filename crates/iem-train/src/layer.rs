//! Layers: a forward pass that keeps what its backward pass needs, and a backward pass that
//! returns the input gradient and the parameter gradients.

use crate::{Result, TrainError};
use iem_activations::{Activation, Forward};
use iem_simd::{Gemm, Par, panel};
use iem_tensor::Matrix;
use serde::{Deserialize, Serialize};

/// The trainer's working copy of a linear layer's weights with row blocks
/// (`TrainConfig::row_blocks`): `Wᵀ` (`in × out`), its gradient and the optimiser's state
/// in the same layout (the update is elementwise). Row-major, or — when `out` is a multiple
/// of 64 and the AVX-512 kernels run — in the 64-column panels of [`iem_simd::panel`], the
/// `gemm` crate's micro-kernel's own layout, which its forward and weight-gradient
/// products then read and write without the crate's per-call packing (`BENCHMARKS.md`).
/// A layer whose input gradient the trainer needs and whose `in` fits panels also keeps
/// `W` in panels (`wp`, refreshed after every update) for the product `G·W`.
#[derive(Clone, Debug)]
pub(crate) struct WorkWeights {
    /// `Wᵀ`'s elements: shape `in × out`, in panel order when `panels`.
    pub t: Matrix,
    pub panels: bool,
    /// `W` (`out × in`) in panels, for the input gradient.
    pub wp: Option<Matrix>,
}

impl WorkWeights {
    /// From `W` (`out × in`): panels when `out` fits them and the fast kernels run; `W`'s
    /// panels too when `input_grad` and `in` fits.
    pub fn new(w: &Matrix, input_grad: bool, par: Par) -> WorkWeights {
        let (o, i) = w.shape();
        let mut t = Matrix::zeros(0, 0);
        let panels = panel::fast() && panel::fits(o);
        if panels {
            t.resize(i, o);
            panel::pack_transposed(w.as_slice(), o, i, t.as_mut_slice(), par);
        } else {
            w.transpose_into(&mut t, par);
        }
        let wp = (input_grad && panel::fast() && panel::fits(i)).then(|| Matrix::zeros(o, i));
        let mut ww = WorkWeights { t, panels, wp };
        ww.refresh(par);
        ww
    }

    /// Recomputes `wp` (if kept) from the working copy after an update.
    pub fn refresh(&mut self, par: Par) {
        let (i, o) = self.t.shape();
        if let Some(wp) = &mut self.wp {
            if self.panels {
                panel::transpose_panels(self.t.as_slice(), i, o, wp.as_mut_slice(), par);
            } else {
                // Row-major Wᵀ (in × out) is the u × k input of `pack_transposed`.
                panel::pack_transposed(self.t.as_slice(), i, o, wp.as_mut_slice(), par);
            }
        }
    }

    /// Writes `W` (`out × in`) back into `w`.
    pub fn write_back(&self, w: &mut Matrix, par: Par) {
        let (i, o) = self.t.shape();
        if self.panels {
            w.resize(o, i);
            panel::unpack_transposed(self.t.as_slice(), i, o, w.as_mut_slice(), par);
        } else {
            self.t.transpose_into(w, par);
        }
    }
}

/// One layer of a [`crate::Model`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Layer {
    /// `y = x Wᵀ + b`, `W: out × in`.
    Linear {
        /// Weights, `out × in`.
        w: Matrix,
        /// Bias, `out`.
        b: Vec<f32>,
    },
    /// Weight-normalised linear map `y = x Wᵀ + b` with `w_j = γ_j v_j / ‖v_j‖` (Salimans &
    /// Kingma 2016): the norm of each unit is the learned `γ_j`, not free to grow.
    WnLinear {
        /// Directions, `out × in`.
        v: Matrix,
        /// Gains, `out`.
        g: Vec<f32>,
        /// Bias, `out`.
        b: Vec<f32>,
    },
    /// An activation of `iem-activations` with its own parameters (τ, LayerNorm γ/β).
    Act {
        /// The activation (stored as its JSON spec inside binary checkpoints, because its
        /// spec form is an internally tagged enum, which bincode cannot decode).
        #[serde(with = "act_as_json")]
        act: Activation,
        /// Its parameters.
        params: Vec<f32>,
        /// Input width.
        width: usize,
    },
    /// Squared Euclidean distances to prototypes, `d_j = ‖x − μ_j‖²/(2τ)` (`N × K`).
    Euclidean {
        /// Prototypes, `K × D`.
        mu: Matrix,
        /// Temperature.
        tau: f32,
    },
    /// Any distance layer of `iem-losses` (diagonal or full-covariance Gaussian with its
    /// log-determinant term, affine score, ReLU distance, OffsetL2), outputting `N × K`
    /// distances.
    Distance(Distance),
    /// Prototype attention: `r = softmax(−‖x − μ_j‖²/(2τ))`, output `Σ_j r_j v_j`. Cost
    /// O(K (D + D_out)) per sample: competition among learned prototypes.
    ProtoAttention {
        /// Prototypes, `K × D`.
        mu: Matrix,
        /// Values, `K × D_out`.
        v: Matrix,
        /// Temperature.
        tau: f32,
    },
}

/// The distance layers of `iem-losses`, in f32.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Distance {
    /// Diagonal Gaussian energies.
    Diag(iem_losses::distance::DiagGaussian<f32>),
    /// Full-covariance Gaussian energies.
    Full(iem_losses::distance::FullGaussian<f32>),
    /// `−(w·x + b)`.
    Affine(iem_losses::distance::Affine<f32>),
    /// `relu(w·x + b)`.
    Relu(iem_losses::distance::ReluDistance<f32>),
    /// `‖α ⊙ (x − μ)‖`.
    OffsetL2(iem_losses::distance::OffsetL2<f32>),
}

impl Distance {
    fn dims(&self) -> (usize, usize) {
        match self {
            Distance::Diag(l) => (l.k, l.d),
            Distance::Full(l) => (l.k, l.d),
            Distance::Affine(l) => (l.k, l.d),
            Distance::Relu(l) => (l.k, l.d),
            Distance::OffsetL2(l) => (l.k, l.d),
        }
    }
    fn params(&self) -> Vec<&[f32]> {
        match self {
            Distance::Diag(l) => l.params(),
            Distance::Full(l) => l.params(),
            Distance::Affine(l) => l.params(),
            Distance::Relu(l) => l.params(),
            Distance::OffsetL2(l) => l.params(),
        }
    }
    fn params_mut(&mut self) -> Vec<&mut [f32]> {
        let v = match self {
            Distance::Diag(l) => l.params_mut(),
            Distance::Full(l) => l.params_mut(),
            Distance::Affine(l) => l.params_mut(),
            Distance::Relu(l) => l.params_mut(),
            Distance::OffsetL2(l) => l.params_mut(),
        };
        v.into_iter().map(|p| p.as_mut_slice()).collect()
    }
    fn forward(&self, x: &[f32]) -> iem_losses::Result<Vec<f32>> {
        match self {
            Distance::Diag(l) => l.forward(x),
            Distance::Full(l) => l.forward(x),
            Distance::Affine(l) => l.forward(x),
            Distance::Relu(l) => l.forward(x),
            Distance::OffsetL2(l) => l.forward(x),
        }
    }
    fn backward(
        &self,
        x: &[f32],
        g: &[f32],
    ) -> iem_losses::Result<iem_losses::distance::Grads<f32>> {
        match self {
            Distance::Diag(l) => l.backward(x, g),
            Distance::Full(l) => l.backward(x, g),
            Distance::Affine(l) => l.backward(x, g),
            Distance::Relu(l) => l.backward(x, g),
            Distance::OffsetL2(l) => l.backward(x, g),
        }
    }
}

/// What a layer's forward pass keeps for its backward pass.
#[derive(Clone, Debug, Default)]
pub enum Cache {
    /// Nothing beyond the input.
    #[default]
    None,
    /// An activation's forward state. In a [`crate::Trace`] the output lives in the trace's
    /// values and `out` is empty; [`Layer::forward`] fills both.
    Act(Forward),
    /// Prototype attention's responsibilities.
    Resp(Matrix),
}

impl Layer {
    /// Output width given the input width.
    pub fn output_width(&self, input: usize) -> usize {
        match self {
            Layer::Linear { w, .. } => w.rows(),
            Layer::WnLinear { v, .. } => v.rows(),
            Layer::Act { act, .. } => act.output_width(input),
            Layer::Euclidean { mu, .. } => mu.rows(),
            Layer::Distance(d) => d.dims().0,
            Layer::ProtoAttention { v, .. } => v.cols(),
        }
    }

    /// Input width the layer expects.
    pub fn input_width(&self) -> usize {
        match self {
            Layer::Linear { w, .. } => w.cols(),
            Layer::WnLinear { v, .. } => v.cols(),
            Layer::Act { width, .. } => *width,
            Layer::Euclidean { mu, .. } | Layer::ProtoAttention { mu, .. } => mu.cols(),
            Layer::Distance(d) => d.dims().1,
        }
    }

    /// A short name for messages and reports.
    pub fn name(&self) -> String {
        match self {
            Layer::Linear { w, .. } => format!("linear {}→{}", w.cols(), w.rows()),
            Layer::WnLinear { v, .. } => {
                format!("weight-normalised linear {}→{}", v.cols(), v.rows())
            }
            Layer::Act { act, .. } => act.name(),
            Layer::Euclidean { mu, .. } => format!("euclidean K={}", mu.rows()),
            Layer::Distance(d) => format!("distance K={}", d.dims().0),
            Layer::ProtoAttention { mu, v, .. } => {
                format!("proto_attention K={} →{}", mu.rows(), v.cols())
            }
        }
    }

    /// The weight matrix a linear layer applies (`γ v/‖v‖` for a weight-normalised one);
    /// `None` for other layers.
    pub fn effective_weights(&self) -> Option<Matrix> {
        match self {
            Layer::Linear { w, .. } => Some(w.clone()),
            Layer::WnLinear { v, g, .. } => {
                let w = iem_losses::volume::weight_norm(v.as_slice(), g, v.cols());
                Some(Matrix::from_vec(v.rows(), v.cols(), w).expect("same shape as v"))
            }
            _ => None,
        }
    }

    /// The bias of a linear layer.
    pub fn bias(&self) -> Option<&[f32]> {
        match self {
            Layer::Linear { b, .. } | Layer::WnLinear { b, .. } => Some(b),
            _ => None,
        }
    }

    /// Whether the layer's input gradient is zero-sum (a competitive activation).
    pub fn zero_sum(&self) -> bool {
        matches!(self, Layer::Act { act, .. } if act.zero_sum())
    }

    /// Parameter tensors, in a fixed order.
    pub fn params(&self) -> Vec<&[f32]> {
        match self {
            Layer::Linear { w, b } => vec![w.as_slice(), b],
            Layer::WnLinear { v, g, b } => vec![v.as_slice(), g, b],
            Layer::Act { params, .. } => {
                if params.is_empty() {
                    vec![]
                } else {
                    vec![params.as_slice()]
                }
            }
            Layer::Euclidean { mu, .. } => vec![mu.as_slice()],
            Layer::Distance(d) => d.params(),
            Layer::ProtoAttention { mu, v, .. } => vec![mu.as_slice(), v.as_slice()],
        }
    }

    /// Mutable parameter tensors, in the order of [`Layer::params`].
    pub fn params_mut(&mut self) -> Vec<&mut [f32]> {
        match self {
            Layer::Linear { w, b } => vec![w.as_mut_slice(), b.as_mut_slice()],
            Layer::WnLinear { v, g, b } => {
                vec![v.as_mut_slice(), g.as_mut_slice(), b.as_mut_slice()]
            }
            Layer::Act { params, .. } => {
                if params.is_empty() {
                    vec![]
                } else {
                    vec![params.as_mut_slice()]
                }
            }
            Layer::Euclidean { mu, .. } => vec![mu.as_mut_slice()],
            Layer::Distance(d) => d.params_mut(),
            Layer::ProtoAttention { mu, v, .. } => vec![mu.as_mut_slice(), v.as_mut_slice()],
        }
    }

    /// Forward pass of a batch `x` (`N × in`): the output and what the backward pass needs.
    pub fn forward(&self, index: usize, x: &Matrix, par: Par) -> Result<(Matrix, Cache)> {
        let mut out = Matrix::zeros(0, 0);
        let mut cache = Cache::None;
        self.forward_into(index, x, &mut out, &mut cache, par)?;
        if let Cache::Act(f) = &mut cache {
            f.out = out.clone();
        }
        Ok((out, cache))
    }

    /// [`Layer::forward`] into reusable buffers: the output into `out`, the backward state
    /// into `cache` (for an activation, only its auxiliary state: the output stays in
    /// `out`). Linear layers and activations allocate nothing once the shapes are stable.
    pub fn forward_into(
        &self,
        index: usize,
        x: &Matrix,
        out: &mut Matrix,
        cache: &mut Cache,
        par: Par,
    ) -> Result<()> {
        self.forward_into_t(index, x, out, cache, None, par)
    }

    /// [`Layer::forward_into`] given, for a linear layer, the trainer's working weights
    /// `wt` ([`WorkWeights`], with row blocks, see `TrainConfig::row_blocks`): `X·Wᵀ` then
    /// runs as the product `X·wt`, whose large-shape path copies `wt` instead of
    /// transposing `W`, or reads its panels in place.
    pub(crate) fn forward_into_t(
        &self,
        index: usize,
        x: &Matrix,
        out: &mut Matrix,
        cache: &mut Cache,
        wt: Option<&WorkWeights>,
        par: Par,
    ) -> Result<()> {
        if x.cols() != self.input_width() {
            return Err(TrainError::Shape {
                layer: index,
                detail: format!(
                    "{} expects width {}, got {}",
                    self.name(),
                    self.input_width(),
                    x.cols()
                ),
            });
        }
        let n = x.rows();
        match self {
            Layer::Linear { w, b } => {
                out.resize(n, w.rows());
                let g = match wt {
                    Some(t) if t.panels => {
                        let (o, i) = w.shape();
                        debug_assert_eq!(t.t.shape(), (i, o), "layer {index}: Wᵀ");
                        let (x, out) = (x.as_slice(), out.as_mut_slice());
                        panel::matmul(x, n, i, t.t.as_slice(), o, Some(b), out, par);
                        *cache = Cache::None;
                        return Ok(());
                    }
                    Some(t) => {
                        debug_assert_eq!(t.t.shape(), (w.cols(), w.rows()), "layer {index}: Wᵀ");
                        Gemm::nn(n, w.cols(), w.rows(), x.as_slice(), t.t.as_slice())
                    }
                    None => Gemm::nt(n, w.cols(), w.rows(), x.as_slice(), w.as_slice()),
                };
                g.with_bias(b).run(out.as_mut_slice(), par);
                *cache = Cache::None;
                Ok(())
            }
            Layer::Act { act, params, .. } => {
                if !matches!(cache, Cache::Act(_)) {
                    *cache =
                        Cache::Act(Forward { out: Matrix::zeros(0, 0), aux: Matrix::zeros(0, 0) });
                }
                let Cache::Act(f) = cache else { unreachable!("set just above") };
                f.out.resize(0, 0);
                act.forward_parts(params, x, out, &mut f.aux, par)
                    .map_err(|e| TrainError::Config(format!("layer {index}: {e}")))
            }
            _ => {
                (*out, *cache) = self.forward_other(index, x, par)?;
                Ok(())
            }
        }
    }

    /// The forward pass of the layers without a buffer-reusing path.
    fn forward_other(&self, index: usize, x: &Matrix, par: Par) -> Result<(Matrix, Cache)> {
        let n = x.rows();
        match self {
            Layer::Linear { .. } | Layer::Act { .. } => {
                unreachable!("linear layers and activations have their own path")
            }
            Layer::WnLinear { v, b, .. } => {
                let w = self.effective_weights().expect("WnLinear has weights");
                let mut y = Matrix::zeros(n, v.rows());
                Gemm::nt(n, w.cols(), w.rows(), x.as_slice(), w.as_slice())
                    .with_bias(b)
                    .run(y.as_mut_slice(), par);
                Ok((y, Cache::None))
            }
            Layer::Euclidean { mu, tau } => Ok((euclidean(x, mu, *tau, par), Cache::None)),
            Layer::Distance(d) => {
                let out = d
                    .forward(x.as_slice())
                    .map_err(|e| TrainError::Loss(format!("layer {index}: {e}")))?;
                Ok((
                    Matrix::from_vec(n, d.dims().0, out)
                        .map_err(|e| TrainError::Loss(e.to_string()))?,
                    Cache::None,
                ))
            }
            Layer::ProtoAttention { mu, v, tau } => {
                let d = euclidean(x, mu, *tau, par);
                let neg = d.map(|v| -v);
                let mut r = Matrix::zeros(n, mu.rows());
                iem_simd::rows::softmax(neg.as_slice(), mu.rows(), 1.0, r.as_mut_slice(), par);
                let mut out = Matrix::zeros(n, v.cols());
                Gemm::nn(n, mu.rows(), v.cols(), r.as_slice(), v.as_slice())
                    .run(out.as_mut_slice(), par);
                Ok((out, Cache::Resp(r)))
            }
        }
    }

    /// Backward pass: from `g = ∂L/∂y` returns `∂L/∂x` and the parameter gradients (in the
    /// order of [`Layer::params`]).
    pub fn backward(
        &self,
        index: usize,
        x: &Matrix,
        cache: &Cache,
        g: &Matrix,
        par: Par,
    ) -> Result<(Matrix, Vec<Vec<f32>>)> {
        let empty = Matrix::zeros(0, 0);
        let y = if let Cache::Act(f) = cache { &f.out } else { &empty };
        let (mut dx, mut pg) = (Matrix::zeros(0, 0), Vec::new());
        self.backward_into(
            index,
            x,
            y,
            cache,
            g,
            &mut dx,
            &mut pg,
            true,
            None,
            &mut Vec::new(),
            par,
        )?;
        Ok((dx, pg))
    }

    /// [`Layer::backward`] into reusable buffers, given the layer's output `y` (read by
    /// activations). `∂L/∂x` goes to `dx`, or is skipped (`dx` left `0 × 0`) when `need_dx`
    /// is false — the first trained layer, whose input is data or frozen: linear layers then
    /// skip their largest product; other kinds compute it anyway. Linear layers and
    /// activations allocate nothing once the shapes are stable. `wt` as for
    /// [`Layer::forward_into_t`]: given working weights, a linear layer writes its weight
    /// gradient in their layout too (`Xᵀ·G`, `in × out`, row-major or in panels, which
    /// `pack` holds `G` repacked for) and computes `∂L/∂x = G·W` from `W`. An
    /// activation given an empty `x` (`0 × 0`) was computed in place by the trainer's
    /// forward pass (`Model::forward_trace` with `fuse`) and takes its gradient from `y`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn backward_into(
        &self,
        index: usize,
        x: &Matrix,
        y: &Matrix,
        cache: &Cache,
        g: &Matrix,
        dx: &mut Matrix,
        pg: &mut Vec<Vec<f32>>,
        need_dx: bool,
        wt: Option<&WorkWeights>,
        pack: &mut Vec<f32>,
        par: Par,
    ) -> Result<()> {
        let n = x.rows();
        match (self, cache) {
            (Layer::Linear { w, .. }, _) => {
                let (o, i) = w.shape();
                pg.resize_with(2, Vec::new);
                pg[0].resize(o * i, 0.0);
                // With `wt` the weight gradient is produced in its layout too (`Xᵀ·G`).
                match wt {
                    Some(t) if t.panels => {
                        let (x, g) = (x.as_slice(), g.as_slice());
                        panel::matmul_tn(x, n, i, g, o, &mut pg[0], pack, par);
                    }
                    Some(_) => Gemm::tn(i, n, o, x.as_slice(), g.as_slice()).run(&mut pg[0], par),
                    None => Gemm::tn(o, n, i, g.as_slice(), x.as_slice()).run(&mut pg[0], par),
                }
                g.col_sums_into(&mut pg[1]);
                if need_dx {
                    dx.resize(n, i);
                    // `G·W` from `W` (or its panels) even when `Wᵀ` is given: the caller
                    // keeps them current for every layer whose input gradient it asks for,
                    // and the product runs faster from `W` than from `Wᵀ` (`BENCHMARKS.md`).
                    if let Some(wp) = wt.and_then(|t| t.wp.as_ref()) {
                        let (g, dx) = (g.as_slice(), dx.as_mut_slice());
                        panel::matmul(g, n, o, wp.as_slice(), i, None, dx, par);
                    } else {
                        Gemm::nn(n, o, i, g.as_slice(), w.as_slice()).run(dx.as_mut_slice(), par);
                    }
                } else {
                    dx.resize(0, 0);
                }
                Ok(())
            }
            // Computed in place by `Model::forward_trace` (its input slot left empty).
            (Layer::Act { act, params, .. }, Cache::Act(_))
                if x.shape() == (0, 0) && y.rows() > 0 && params.is_empty() && act.in_place() =>
            {
                pg.clear();
                act.vjp_from_output(y, g, dx, par)
                    .map_err(|e| TrainError::Config(format!("layer {index}: {e}")))
            }
            (Layer::Act { act, params, .. }, Cache::Act(f)) => {
                pg.resize_with(usize::from(!params.is_empty()), Vec::new);
                let mut none = Vec::new();
                let dparams = pg.first_mut().unwrap_or(&mut none);
                act.vjp_parts(params, x, y, &f.aux, g, dx, dparams, par)
                    .map_err(|e| TrainError::Config(format!("layer {index}: {e}")))
            }
            _ => {
                (*dx, *pg) = self.backward_other(index, x, cache, g, need_dx, par)?;
                Ok(())
            }
        }
    }

    /// The backward pass of the layers without a buffer-reusing path (`need_dx` as for
    /// [`Layer::backward_into`]).
    fn backward_other(
        &self,
        index: usize,
        x: &Matrix,
        cache: &Cache,
        g: &Matrix,
        need_dx: bool,
        par: Par,
    ) -> Result<(Matrix, Vec<Vec<f32>>)> {
        let n = x.rows();
        let gr = g;
        match (self, cache) {
            (Layer::WnLinear { v, g, .. }, _) => {
                let w = self.effective_weights().expect("WnLinear has weights");
                let (o, i) = w.shape();
                let mut dw = vec![0.0f32; o * i];
                Gemm::tn(o, n, i, gr.as_slice(), x.as_slice()).run(&mut dw, par);
                let db = gr.col_sums();
                let (dv, dg) = iem_losses::volume::weight_norm_backward(v.as_slice(), g, &dw, i);
                if !need_dx {
                    return Ok((Matrix::zeros(0, 0), vec![dv, dg, db]));
                }
                let mut dx = Matrix::zeros(n, i);
                Gemm::nn(n, o, i, gr.as_slice(), w.as_slice()).run(dx.as_mut_slice(), par);
                Ok((dx, vec![dv, dg, db]))
            }
            (Layer::Distance(d), _) => {
                let g2 = d
                    .backward(x.as_slice(), g.as_slice())
                    .map_err(|e| TrainError::Loss(format!("layer {index}: {e}")))?;
                let dx = Matrix::from_vec(n, x.cols(), g2.d_x)
                    .map_err(|e| TrainError::Loss(e.to_string()))?;
                Ok((dx, g2.d_params))
            }
            (Layer::Euclidean { mu, tau }, _) => {
                let (dx, dmu) = euclidean_backward(x, mu, *tau, g, par);
                Ok((dx, vec![dmu]))
            }
            (Layer::ProtoAttention { mu, v, tau }, Cache::Resp(r)) => {
                let (k, dout) = v.shape();
                // dV = rᵀ g ; dr = g Vᵀ ; dlogits = softmax backward ; dd = −dlogits.
                let mut dv = vec![0.0f32; k * dout];
                Gemm::tn(k, n, dout, r.as_slice(), g.as_slice()).run(&mut dv, par);
                let mut dr = Matrix::zeros(n, k);
                Gemm::nt(n, dout, k, g.as_slice(), v.as_slice()).run(dr.as_mut_slice(), par);
                let mut dl = Matrix::zeros(n, k);
                iem_simd::rows::softmax_backward(
                    r.as_slice(),
                    dr.as_slice(),
                    k,
                    1.0,
                    dl.as_mut_slice(),
                    par,
                );
                let dd = dl.map(|v| -v);
                let (dx, dmu) = euclidean_backward(x, mu, *tau, &dd, par);
                Ok((dx, vec![dmu, dv]))
            }
            _ => Err(TrainError::Config(format!(
                "layer {index}: backward called with a cache from another layer kind"
            ))),
        }
    }
}

/// `‖x − μ_j‖²/(2τ)` through one GEMM (clamped at 0).
fn euclidean(x: &Matrix, mu: &Matrix, tau: f32, par: Par) -> Matrix {
    let (n, d, k) = (x.rows(), x.cols(), mu.rows());
    let mut out = Matrix::zeros(n, k);
    iem_simd::distance::sq_distances(x.as_slice(), mu.as_slice(), n, d, k, out.as_mut_slice(), par);
    let c = 1.0 / (2.0 * tau);
    out.as_mut_slice().iter_mut().for_each(|v| *v *= c);
    out
}

/// `dX = (diag(rowsum G) X − G μ)/τ`, `dμ = (diag(colsum G) μ − Gᵀ X)/τ`.
fn euclidean_backward(
    x: &Matrix,
    mu: &Matrix,
    tau: f32,
    g: &Matrix,
    par: Par,
) -> (Matrix, Vec<f32>) {
    let (n, d, k) = (x.rows(), x.cols(), mu.rows());
    let it = 1.0 / tau;
    let mut dx = Matrix::zeros(n, d);
    Gemm::nn(n, k, d, g.as_slice(), mu.as_slice()).scaled(-it, 0.0).run(dx.as_mut_slice(), par);
    for i in 0..n {
        let s: f32 = g.row(i).iter().sum::<f32>() * it;
        let xi = x.row(i).to_vec();
        for (o, xv) in dx.row_mut(i).iter_mut().zip(xi) {
            *o += s * xv;
        }
    }
    let mut dmu = vec![0.0f32; k * d];
    Gemm::tn(k, n, d, g.as_slice(), x.as_slice()).scaled(-it, 0.0).run(&mut dmu, par);
    let cs = g.col_sums();
    for j in 0..k {
        for c in 0..d {
            dmu[j * d + c] += cs[j] * it * mu.get(j, c);
        }
    }
    (dx, dmu)
}

/// Serialises an [`Activation`] as its JSON text, so formats without self-description
/// (bincode) can carry the internally tagged spec enum.
mod act_as_json {
    use iem_activations::Activation;
    use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error};

    pub fn serialize<S: Serializer>(a: &Activation, s: S) -> Result<S::Ok, S::Error> {
        serde_json::to_string(a).map_err(serde::ser::Error::custom)?.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Activation, D::Error> {
        let text = String::deserialize(d)?;
        serde_json::from_str(&text).map_err(D::Error::custom)
    }
}
