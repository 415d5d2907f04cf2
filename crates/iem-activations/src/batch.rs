//! The batched `f32` API: forward, vector-Jacobian product (backward), Jacobian-vector
//! product, per-sample Jacobians for inspection, and the `f64` reference path.

use crate::kind::{Activation, ConfigError, Temperature};
use crate::row;
use iem_simd::{Par, elementwise as ew, rows};
use iem_tensor::{Matrix, TensorError};
use rayon::prelude::*;
use std::fmt;

/// Errors from the batched API: a bad configuration or shapes that do not fit.
#[derive(Clone, Debug, PartialEq)]
pub enum ActivationError {
    /// The activation cannot be used at this width.
    Config(ConfigError),
    /// Operands' shapes do not fit.
    Shape(TensorError),
    /// The parameter slice has the wrong length.
    Params {
        /// Activation name.
        activation: String,
        /// Expected count.
        expected: usize,
        /// Given count.
        got: usize,
    },
}

impl fmt::Display for ActivationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ActivationError::Config(e) => e.fmt(f),
            ActivationError::Shape(e) => e.fmt(f),
            ActivationError::Params { activation, expected, got } => {
                write!(f, "activation {activation}: expected {expected} parameters, got {got}")
            }
        }
    }
}

impl std::error::Error for ActivationError {}

impl From<ConfigError> for ActivationError {
    fn from(e: ConfigError) -> Self {
        ActivationError::Config(e)
    }
}

/// Result alias.
pub type Result<T> = std::result::Result<T, ActivationError>;

/// What the forward pass keeps for the backward pass.
#[derive(Clone, Debug, PartialEq)]
pub struct Forward {
    /// The activation's output (`rows × output_width`).
    pub out: Matrix,
    /// SoLU / grouped SoLU: the softmax `s` (the backward pass needs it); otherwise empty.
    pub aux: Matrix,
}

/// Gradients from a vector-Jacobian product.
#[derive(Clone, Debug, PartialEq)]
pub struct Grads {
    /// `∂L/∂z`, the same shape as the input.
    pub dz: Matrix,
    /// `∂L/∂p` for the activation's own parameters, summed over the batch.
    pub dparams: Vec<f32>,
}

const BLOCK_ROWS: usize = 64;

impl Activation {
    fn check_params(&self, k: usize, p_len: usize) -> Result<()> {
        self.validate(k)?;
        let expected = self.num_params(k);
        if p_len != expected {
            return Err(ActivationError::Params { activation: self.name(), expected, got: p_len });
        }
        Ok(())
    }

    fn same_shape(op: &'static str, a: &Matrix, b: &Matrix) -> Result<()> {
        if a.shape() != b.shape() {
            return Err(ActivationError::Shape(TensorError::Shape {
                op,
                left: a.shape(),
                right: b.shape(),
            }));
        }
        Ok(())
    }

    /// Forward pass over a batch `z` (`rows × K`).
    ///
    /// ```
    /// use iem_activations::Activation;
    /// use iem_tensor::{Matrix, Par};
    /// let z = Matrix::from_vec(1, 3, vec![1.0, 2.0, 3.0]).unwrap();
    /// let f = Activation::Solu.forward(&[], &z, Par::Seq).unwrap();
    /// assert!((f.out.get(0, 2) - 3.0 * 0.665_240_9).abs() < 1e-5);
    /// ```
    pub fn forward(&self, params: &[f32], z: &Matrix, par: Par) -> Result<Forward> {
        let mut fwd = Forward { out: Matrix::zeros(0, 0), aux: Matrix::zeros(0, 0) };
        self.forward_into(params, z, &mut fwd, par)?;
        Ok(fwd)
    }

    /// As [`Activation::forward`], writing into `fwd` and reusing its buffers (no allocation
    /// once the shapes are stable): what a training loop calls.
    pub fn forward_into(
        &self,
        params: &[f32],
        z: &Matrix,
        fwd: &mut Forward,
        par: Par,
    ) -> Result<()> {
        let Forward { out, aux } = fwd;
        self.forward_parts(params, z, out, aux, par)
    }

    /// As [`Activation::forward_into`], with the output and the auxiliary state (the
    /// fields of [`Forward`]) in separate buffers — for callers that keep the output
    /// elsewhere (a model's trace) and so need not copy it.
    pub fn forward_parts(
        &self,
        params: &[f32],
        z: &Matrix,
        out: &mut Matrix,
        aux: &mut Matrix,
        par: Par,
    ) -> Result<()> {
        let (n, k) = z.shape();
        self.check_params(k, params.len())?;
        let kout = self.output_width(k);
        out.resize(n, kout);
        aux.resize(0, 0);
        let (zs, os) = (z.as_slice(), out.as_mut_slice());
        match self {
            Activation::Relu => ew::relu(zs, os, par),
            Activation::Abs => ew::abs(zs, os, par),
            Activation::Softmax { temperature } => {
                rows::softmax(zs, k, 1.0 / self.tau(params, temperature), os, par)
            }
            Activation::LogSoftmax => rows::log_softmax(zs, k, os, par),
            Activation::Nls => rows::nls(zs, k, os, par),
            Activation::Solu | Activation::GroupedSolu { .. } => {
                let g = if let Activation::GroupedSolu { group } = self { *group } else { k };
                aux.resize(n, k);
                rows::grouped_solu(zs, k, g, os, aux.as_mut_slice(), par);
            }
            Activation::GroupedSoftmax { group, tau } => {
                rows::grouped_softmax(zs, k, *group, 1.0 / tau, os, par)
            }
            Activation::LayerNorm { eps } => crate::fast::layer_norm(zs, k, params, *eps, os, par),
            Activation::TopK { k: kk } => crate::fast::top_k(zs, k, *kk, os, par),
            _ => {
                let run = |z: &[f32], o: &mut [f32]| {
                    for (zr, or) in z.chunks_exact(k).zip(o.chunks_exact_mut(kout)) {
                        row::forward(self, params, zr, or);
                    }
                };
                if par.degree() > 1 {
                    zs.par_chunks(BLOCK_ROWS * k)
                        .zip(os.par_chunks_mut(BLOCK_ROWS * kout))
                        .for_each(|(z, o)| run(z, o));
                } else {
                    run(zs, os);
                }
            }
        }
        Ok(())
    }

    fn tau(&self, params: &[f32], t: &Temperature) -> f32 {
        match t {
            Temperature::Fixed(t) => *t,
            Temperature::Learned(_) => params[0].exp(),
        }
    }

    /// Backward pass: `dz = Jᵀ g` per row, and the parameter gradients summed over rows.
    /// `fwd` is what [`Activation::forward`] returned for the same `z` and `params`.
    /// Never builds a `K × K` matrix.
    pub fn vjp(
        &self,
        params: &[f32],
        z: &Matrix,
        fwd: &Forward,
        g: &Matrix,
        par: Par,
    ) -> Result<Grads> {
        let mut grads = Grads { dz: Matrix::zeros(0, 0), dparams: Vec::new() };
        self.vjp_into(params, z, fwd, g, &mut grads, par)?;
        Ok(grads)
    }

    /// As [`Activation::vjp`], writing into `grads` and reusing its buffers.
    pub fn vjp_into(
        &self,
        params: &[f32],
        z: &Matrix,
        fwd: &Forward,
        g: &Matrix,
        grads: &mut Grads,
        par: Par,
    ) -> Result<()> {
        let Grads { dz, dparams } = grads;
        self.vjp_parts(params, z, &fwd.out, &fwd.aux, g, dz, dparams, par)
    }

    /// Whether [`Activation::forward_in_place`] and [`Activation::vjp_from_output`] serve
    /// this activation: its backward pass needs only its output, which has the input's
    /// shape, and it has no parameters or auxiliary state. ReLU (`1[y > 0]` is `1[z > 0]`),
    /// softmax at a fixed temperature, log-softmax (the softmax is `exp y`) and grouped
    /// softmax; not SoLU (`z ⊙ softmax(z)` needs `z`) nor a learned temperature (its
    /// gradient needs `z`). A training loop then keeps one buffer per such layer instead
    /// of two.
    pub fn in_place(&self) -> bool {
        matches!(
            self,
            Activation::Relu
                | Activation::Softmax { temperature: Temperature::Fixed(_) }
                | Activation::LogSoftmax
                | Activation::GroupedSoftmax { .. }
        )
    }

    /// The forward pass over `zy` in place: `zy ← f(zy)`, the bits of
    /// [`Activation::forward_parts`]. An activation without [`Activation::in_place`] is a
    /// [`ActivationError::Config`].
    ///
    /// ```
    /// use iem_activations::Activation;
    /// use iem_tensor::{Matrix, Par};
    /// let mut zy = Matrix::from_vec(1, 3, vec![-1.0, 0.5, 2.0]).unwrap();
    /// Activation::Relu.forward_in_place(&mut zy, Par::Seq).unwrap();
    /// assert_eq!(zy.as_slice(), &[0.0, 0.5, 2.0]);
    /// ```
    pub fn forward_in_place(&self, zy: &mut Matrix, par: Par) -> Result<()> {
        if !self.in_place() {
            return Err(self.not_in_place(zy.cols()));
        }
        self.check_params(zy.cols(), 0)?;
        let k = zy.cols();
        let x = zy.as_mut_slice();
        match self {
            Activation::Relu => ew::relu_in_place(x, par),
            Activation::Softmax { temperature: Temperature::Fixed(t) } => {
                rows::softmax_in_place(x, k, 1.0 / t, par)
            }
            Activation::LogSoftmax => rows::log_softmax_in_place(x, k, par),
            Activation::GroupedSoftmax { group, tau } => {
                rows::grouped_softmax_in_place(x, k, *group, 1.0 / tau, par)
            }
            _ => return Err(self.not_in_place(k)),
        }
        Ok(())
    }

    /// The vector-Jacobian product from the forward output `y` alone (see
    /// [`Activation::in_place`]): `dz` gets the bits [`Activation::vjp_parts`] gives with the
    /// input that produced `y`.
    ///
    /// ```
    /// use iem_activations::Activation;
    /// use iem_tensor::{Matrix, Par};
    /// let y = Matrix::from_vec(1, 3, vec![0.0, 0.5, 2.0]).unwrap();
    /// let g = Matrix::from_vec(1, 3, vec![1.0, 1.0, -3.0]).unwrap();
    /// let mut dz = Matrix::zeros(0, 0);
    /// Activation::Relu.vjp_from_output(&y, &g, &mut dz, Par::Seq).unwrap();
    /// assert_eq!(dz.as_slice(), &[0.0, 1.0, -3.0]);
    /// ```
    pub fn vjp_from_output(&self, y: &Matrix, g: &Matrix, dz: &mut Matrix, par: Par) -> Result<()> {
        if !self.in_place() {
            return Err(self.not_in_place(y.cols()));
        }
        self.check_params(y.cols(), 0)?;
        Self::same_shape("vjp_from_output (g vs forward output)", g, y)?;
        dz.resize(y.rows(), y.cols());
        let (k, ys, gs, ds) = (y.cols(), y.as_slice(), g.as_slice(), dz.as_mut_slice());
        match self {
            // z > 0 exactly where y = max(z, 0) > 0 (NaN maps to 0 and gets a zero gradient).
            Activation::Relu => ew::relu_backward(ys, gs, ds, par),
            Activation::Softmax { temperature: Temperature::Fixed(t) } => {
                rows::softmax_backward(ys, gs, k, 1.0 / t, ds, par)
            }
            Activation::LogSoftmax => rows::log_softmax_backward(ys, gs, k, ds, par),
            Activation::GroupedSoftmax { group, tau } => {
                rows::grouped_softmax_backward(ys, gs, k, *group, 1.0 / tau, ds, par)
            }
            _ => return Err(self.not_in_place(k)),
        }
        Ok(())
    }

    fn not_in_place(&self, k: usize) -> ActivationError {
        ActivationError::Config(ConfigError {
            activation: self.name(),
            width: k,
            reason: "its backward pass needs its input: no in-place form".into(),
        })
    }

    /// As [`Activation::vjp_into`], with the forward output `out` and auxiliary state `aux`
    /// (what [`Activation::forward_parts`] wrote) and the gradients in separate buffers.
    #[allow(clippy::too_many_arguments)]
    pub fn vjp_parts(
        &self,
        params: &[f32],
        z: &Matrix,
        out: &Matrix,
        aux: &Matrix,
        g: &Matrix,
        dz: &mut Matrix,
        dparams: &mut Vec<f32>,
        par: Par,
    ) -> Result<()> {
        let (n, k) = z.shape();
        self.check_params(k, params.len())?;
        Self::same_shape("vjp (g vs forward output)", g, out)?;
        if out.rows() != n {
            return Err(ActivationError::Shape(TensorError::Shape {
                op: "vjp (z vs forward)",
                left: z.shape(),
                right: out.shape(),
            }));
        }
        let kout = self.output_width(k);
        dz.resize(n, k);
        dparams.clear();
        dparams.resize(params.len(), 0.0);
        let (zs, os, gs) = (z.as_slice(), out.as_slice(), g.as_slice());
        let ds = dz.as_mut_slice();
        match self {
            Activation::Relu => ew::relu_backward(zs, gs, ds, par),
            Activation::Abs => ew::abs_backward(zs, gs, ds, par),
            Activation::Softmax { temperature } => {
                let t = self.tau(params, temperature);
                rows::softmax_backward(os, gs, k, 1.0 / t, ds, par);
                if let Temperature::Learned(_) = temperature {
                    dparams[0] = rows::temperature_grad(zs, os, gs, k, t);
                }
            }
            Activation::LogSoftmax => rows::log_softmax_backward(os, gs, k, ds, par),
            Activation::Nls => rows::nls_backward(os, gs, k, ds, par),
            Activation::Solu | Activation::GroupedSolu { .. } => {
                let grp = if let Activation::GroupedSolu { group } = self { *group } else { k };
                if aux.shape() != (n, k) {
                    return Err(ActivationError::Shape(TensorError::Shape {
                        op: "vjp (SoLU needs forward's softmax)",
                        left: aux.shape(),
                        right: (n, k),
                    }));
                }
                rows::grouped_solu_backward(zs, aux.as_slice(), gs, k, grp, ds, par);
            }
            Activation::GroupedSoftmax { group, tau } => {
                rows::grouped_softmax_backward(os, gs, k, *group, 1.0 / tau, ds, par)
            }
            Activation::LayerNorm { eps } => {
                crate::fast::layer_norm_backward(zs, k, params, *eps, gs, ds, dparams, par)
            }
            Activation::TopK { k: kk } => crate::fast::top_k_backward(zs, k, *kk, gs, ds, par),
            _ => {
                // Generic rows; parameter gradients per fixed block, summed in block order.
                let run = |z: &[f32], o: &[f32], g: &[f32], d: &mut [f32]| {
                    let mut dp = vec![0.0f32; params.len()];
                    for (((zr, or), gr), dr) in z
                        .chunks_exact(k)
                        .zip(o.chunks_exact(kout))
                        .zip(g.chunks_exact(kout))
                        .zip(d.chunks_exact_mut(k))
                    {
                        row::vjp(self, params, zr, or, gr, dr, &mut dp);
                    }
                    dp
                };
                let parts: Vec<Vec<f32>> = if par.degree() > 1 {
                    zs.par_chunks(BLOCK_ROWS * k)
                        .zip(os.par_chunks(BLOCK_ROWS * kout))
                        .zip(gs.par_chunks(BLOCK_ROWS * kout))
                        .zip(ds.par_chunks_mut(BLOCK_ROWS * k))
                        .map(|(((z, o), g), d)| run(z, o, g, d))
                        .collect()
                } else {
                    zs.chunks(BLOCK_ROWS * k)
                        .zip(os.chunks(BLOCK_ROWS * kout))
                        .zip(gs.chunks(BLOCK_ROWS * kout))
                        .zip(ds.chunks_mut(BLOCK_ROWS * k))
                        .map(|(((z, o), g), d)| run(z, o, g, d))
                        .collect()
                };
                for p in parts {
                    dparams.iter_mut().zip(p).for_each(|(a, b)| *a += b);
                }
            }
        }
        Ok(())
    }

    /// Jacobian-vector product `J v` per row (with respect to `z`, parameters fixed).
    pub fn jvp(&self, params: &[f32], z: &Matrix, fwd: &Forward, v: &Matrix) -> Result<Matrix> {
        let (n, k) = z.shape();
        self.check_params(k, params.len())?;
        Self::same_shape("jvp (v vs z)", v, z)?;
        let kout = self.output_width(k);
        let mut jv = Matrix::zeros(n, kout);
        for i in 0..n {
            let (zr, or, vr) = (z.row(i), fwd.out.row(i), v.row(i));
            row::jvp(self, params, zr, or, vr, jv.row_mut(i));
        }
        Ok(jv)
    }

    /// The full Jacobian `∂a/∂z` of one sample, `output_width × K`, row-major, in f64 — for
    /// inspection and tests only (training never builds it). Built column by column from
    /// exact Jacobian-vector products.
    ///
    /// ```
    /// use iem_activations::Activation;
    /// let j = Activation::Softmax { temperature: Default::default() }
    ///     .jacobian(&[], &[0.0, 0.0]).unwrap();
    /// assert_eq!(j, vec![0.25, -0.25, -0.25, 0.25]);
    /// ```
    pub fn jacobian(&self, params: &[f64], z: &[f64]) -> Result<Vec<f64>> {
        let k = z.len();
        self.check_params(k, params.len())?;
        let kout = self.output_width(k);
        let out = self.forward_f64(params, z)?;
        let mut j = vec![0.0; kout * k];
        let mut e = vec![0.0; k];
        let mut col = vec![0.0; kout];
        for c in 0..k {
            e[c] = 1.0;
            row::jvp(self, params, z, &out, &e, &mut col);
            e[c] = 0.0;
            for r in 0..kout {
                j[r * k + c] = col[r];
            }
        }
        Ok(j)
    }

    /// The f64 reference forward pass of one sample.
    pub fn forward_f64(&self, params: &[f64], z: &[f64]) -> Result<Vec<f64>> {
        self.check_params(z.len(), params.len())?;
        let mut out = vec![0.0; self.output_width(z.len())];
        row::forward(self, params, z, &mut out);
        Ok(out)
    }

    /// The f64 reference vector-Jacobian product of one sample: `(Jᵀg, ∂⟨g, f⟩/∂p)`.
    pub fn vjp_f64(&self, params: &[f64], z: &[f64], g: &[f64]) -> Result<(Vec<f64>, Vec<f64>)> {
        let out = self.forward_f64(params, z)?;
        if g.len() != out.len() {
            return Err(ActivationError::Shape(TensorError::Shape {
                op: "vjp_f64 (g)",
                left: (1, g.len()),
                right: (1, out.len()),
            }));
        }
        let mut dz = vec![0.0; z.len()];
        let mut dp = vec![0.0; params.len()];
        row::vjp(self, params, z, &out, g, &mut dz, &mut dp);
        Ok((dz, dp))
    }

    /// The f64 reference Jacobian-vector product of one sample.
    pub fn jvp_f64(&self, params: &[f64], z: &[f64], v: &[f64]) -> Result<Vec<f64>> {
        let out = self.forward_f64(params, z)?;
        if v.len() != z.len() {
            return Err(ActivationError::Shape(TensorError::Shape {
                op: "jvp_f64 (v)",
                left: (1, v.len()),
                right: (1, z.len()),
            }));
        }
        let mut jv = vec![0.0; out.len()];
        row::jvp(self, params, z, &out, v, &mut jv);
        Ok(jv)
    }
}
