//! Optimisers (SGD with momentum and weight decay, Adam, AdamW), learning-rate schedules and
//! gradient clipping, on the `iem-simd` update loops.

use crate::{Model, ParamGrads};
use iem_simd::Par;
use iem_simd::elementwise::{
    AdamStep, adam_update_finite, adam_update_finite_stream, all_finite, sgd_update,
};
use serde::{Deserialize, Serialize};

/// Which update rule.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Method {
    /// SGD with momentum `μ` and L2 weight decay (PyTorch's form).
    Sgd {
        /// Momentum μ.
        momentum: f32,
        /// L2 weight decay.
        weight_decay: f32,
    },
    /// Adam with L2 weight decay added to the gradient.
    Adam {
        /// β₁.
        beta1: f32,
        /// β₂.
        beta2: f32,
        /// ε.
        eps: f32,
        /// L2 weight decay.
        weight_decay: f32,
    },
    /// AdamW: decoupled weight decay.
    AdamW {
        /// β₁.
        beta1: f32,
        /// β₂.
        beta2: f32,
        /// ε.
        eps: f32,
        /// Decoupled weight decay.
        weight_decay: f32,
    },
}

/// Learning-rate schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// Constant.
    #[default]
    Constant,
    /// Cosine decay from `lr` to 0 over the run.
    Cosine,
}

/// Optimiser configuration.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    /// Update rule.
    pub method: Method,
    /// Base learning rate.
    pub lr: f32,
    /// Schedule.
    #[serde(default)]
    pub schedule: Schedule,
    /// Clip the global gradient norm to this value (`None`: no clipping).
    #[serde(default)]
    pub clip_norm: Option<f32>,
}

impl OptimConfig {
    /// Adam with PyTorch's defaults (β = (0.9, 0.999), ε = 1e-8), constant rate.
    pub fn adam(lr: f32) -> Self {
        OptimConfig {
            method: Method::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 },
            lr,
            schedule: Schedule::Constant,
            clip_norm: None,
        }
    }
    /// Plain SGD.
    pub fn sgd(lr: f32, momentum: f32) -> Self {
        OptimConfig {
            method: Method::Sgd { momentum, weight_decay: 0.0 },
            lr,
            schedule: Schedule::Constant,
            clip_norm: None,
        }
    }

    /// Checks the ranges PyTorch's optimisers accept: a finite `lr ≥ 0`, finite momentum and
    /// weight decay `≥ 0`, `0 ≤ β₁, β₂ < 1`, a finite `ε ≥ 0`, and a finite clipping norm
    /// `> 0`. The trainers call it before the first step, so that a bad value is a
    /// [`TrainError::Config`](crate::TrainError::Config) naming the field rather than
    /// NaN weights a step later.
    ///
    /// ```
    /// use iem_train::optim::OptimConfig;
    /// assert!(OptimConfig::adam(1e-3).validate().is_ok());
    /// let err = OptimConfig::adam(f32::NAN).validate().unwrap_err();
    /// assert!(err.contains("lr"), "{err}");
    /// ```
    pub fn validate(&self) -> Result<(), String> {
        let finite_nonneg = |name: &str, v: f32| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(format!("{name} must be a finite number ≥ 0, got {v}"))
            }
        };
        let beta = |name: &str, v: f32| {
            if (0.0..1.0).contains(&v) {
                Ok(())
            } else {
                Err(format!("{name} must be in [0, 1), got {v}"))
            }
        };
        finite_nonneg("lr", self.lr)?;
        match self.method {
            Method::Sgd { momentum, weight_decay } => {
                finite_nonneg("momentum", momentum)?;
                finite_nonneg("weight_decay", weight_decay)?;
            }
            Method::Adam { beta1, beta2, eps, weight_decay }
            | Method::AdamW { beta1, beta2, eps, weight_decay } => {
                beta("beta1", beta1)?;
                beta("beta2", beta2)?;
                finite_nonneg("eps", eps)?;
                finite_nonneg("weight_decay", weight_decay)?;
            }
        }
        match self.clip_norm {
            Some(c) if !(c.is_finite() && c > 0.0) => {
                Err(format!("clip_norm must be a finite number > 0, got {c}"))
            }
            _ => Ok(()),
        }
    }
}

/// Optimiser state for one model.
#[derive(Clone, Debug)]
pub struct Optimizer {
    cfg: OptimConfig,
    m: Vec<Vec<Vec<f32>>>,
    v: Vec<Vec<Vec<f32>>>,
    t: usize,
    total_steps: usize,
}

impl Optimizer {
    /// Fresh state shaped like `model`'s parameters, for a run of `total_steps` (used by the
    /// cosine schedule).
    pub fn new(cfg: OptimConfig, model: &Model, total_steps: usize) -> Self {
        let zeros = |m: &Model| {
            m.layers
                .iter()
                .map(|l| l.params().iter().map(|p| vec![0.0f32; p.len()]).collect())
                .collect()
        };
        Optimizer { cfg, m: zeros(model), v: zeros(model), t: 0, total_steps: total_steps.max(1) }
    }

    /// The learning rate of the next step.
    pub fn lr(&self) -> f32 {
        match self.cfg.schedule {
            Schedule::Constant => self.cfg.lr,
            Schedule::Cosine => {
                let p = (self.t as f32 / self.total_steps as f32).min(1.0);
                self.cfg.lr * 0.5 * (1.0 + (std::f32::consts::PI * p).cos())
            }
        }
    }

    /// Applies one step to the layers in `layers` (others are frozen), clipping the global
    /// norm of their gradients first if configured. `grads[i]` belongs to `layers[i]`.
    /// Returns the gradient norm before clipping.
    pub fn step(
        &mut self,
        model: &mut Model,
        layers: std::ops::Range<usize>,
        grads: &mut ParamGrads,
    ) -> f32 {
        let norm =
            grads.iter().flatten().map(|g| iem_simd::elementwise::sum_sq(g)).sum::<f64>().sqrt()
                as f32;
        self.apply(model, layers, grads, norm, &mut [], Par::Seq);
        norm
    }

    /// [`Optimizer::step`] given the global gradient norm `norm` (the trainer has it
    /// already). The updates of all trained parameters run as fixed chunks of [`CHUNK`]
    /// elements, in one parallel region under `par` (each element's update is independent,
    /// so the result is the same for any thread count), and each chunk is checked for
    /// NaN/Inf while it is still in the updating core's cache. Returns whether every updated
    /// parameter is finite. `wt[i]`, when present, stands for the weight matrix of linear
    /// layer `layers.start + i` (the trainer's working copy — transposed, possibly in
    /// panels — updated instead of `W`, with its gradient and this optimiser's state in the
    /// same layout: each element's update is independent of the layout).
    pub(crate) fn apply(
        &mut self,
        model: &mut Model,
        layers: std::ops::Range<usize>,
        grads: &mut ParamGrads,
        norm: f32,
        wt: &mut [Option<crate::layer::WorkWeights>],
        par: Par,
    ) -> bool {
        use rayon::prelude::*;
        if let Some(c) = self.cfg.clip_norm
            && norm > c
            && norm > 0.0
        {
            let s = c / norm;
            grads.iter_mut().flatten().flatten().for_each(|g| *g *= s);
        }
        let lr = self.lr();
        self.t += 1;
        let t = self.t as i32;
        // Adam adds L2 decay to the gradient; AdamW decays the weights directly.
        let rule = match self.cfg.method {
            Method::Sgd { momentum, weight_decay } => Rule::Sgd { lr, momentum, weight_decay },
            Method::Adam { beta1, beta2, eps, weight_decay } => {
                Rule::Adam(adam_step(lr, t, beta1, beta2, eps, weight_decay, 0.0))
            }
            Method::AdamW { beta1, beta2, eps, weight_decay } => {
                Rule::Adam(adam_step(lr, t, beta1, beta2, eps, 0.0, weight_decay))
            }
        };
        // (parameter, gradient, first state, second state) chunks of every trained tensor,
        // and whether to write the parameters with streaming stores; SGD keeps its momentum
        // buffer in the first state.
        let mut jobs: Vec<(Job<'_>, bool)> = Vec::new();
        let states = self.m[layers.clone()].iter_mut().zip(self.v[layers.clone()].iter_mut());
        let mut wt = wt.iter_mut();
        for ((layer, (ms, vs)), gs) in model.layers[layers].iter_mut().zip(states).zip(grads) {
            let mut params = layer.params_mut();
            // With row blocks both cores read a working weight matrix between updates, and
            // a store to a line that the other core has read waits for its copy to be
            // invalidated: Adam writes such weights with streaming stores (same bits) —
            // unless the trainer reads them again at once to refresh `W`'s panels.
            let mut stream = false;
            if let Some(Some(t)) = wt.next() {
                params[0] = t.t.as_mut_slice();
                stream = t.wp.is_none();
            }
            for (k, (((p, g), m), v)) in params.into_iter().zip(gs).zip(ms).zip(vs).enumerate() {
                let chunks = p.chunks_mut(CHUNK).zip(g.chunks(CHUNK));
                let chunks = chunks.zip(m.chunks_mut(CHUNK)).zip(v.chunks_mut(CHUNK));
                jobs.extend(chunks.map(|j| (j, stream && k == 0)));
            }
        }
        let run = |((((p, g), m), v), stream): (Job<'_>, bool)| match rule {
            Rule::Sgd { lr, momentum, weight_decay } => {
                sgd_update(lr, momentum, weight_decay, p, g, m);
                all_finite(p)
            }
            // The finiteness check runs on the new values in registers.
            Rule::Adam(h) if stream => adam_update_finite_stream(h, p, g, m, v),
            Rule::Adam(h) => adam_update_finite(h, p, g, m, v),
        };
        let total: usize = jobs.iter().map(|j| j.0.0.0.0.len()).sum();
        if par.degree() > 1 && total > CHUNK {
            jobs.into_par_iter().map(run).reduce(|| true, |a, b| a && b)
        } else {
            // Every chunk is updated (no short circuit on a non-finite one).
            let mut finite = true;
            for j in jobs {
                finite &= run(j);
            }
            finite
        }
    }
}

/// Elements per chunk of the parameter updates and of the trainer's block-gradient sum (a
/// fixed split: results never depend on the thread count).
pub(crate) const CHUNK: usize = 32 * 1024;

/// Chunks of (parameter, gradient, first state, second state) of one update.
type Job<'a> = (((&'a mut [f32], &'a [f32]), &'a mut [f32]), &'a mut [f32]);

/// One step's update rule with its constants.
#[derive(Clone, Copy)]
enum Rule {
    Sgd { lr: f32, momentum: f32, weight_decay: f32 },
    Adam(AdamStep),
}

fn adam_step(
    lr: f32,
    t: i32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    l2: f32,
    decoupled: f32,
) -> AdamStep {
    AdamStep {
        lr,
        beta1,
        beta2,
        eps,
        bias_correction1: 1.0 - beta1.powi(t),
        bias_correction2: 1.0 - beta2.powi(t),
        l2,
        decoupled,
    }
}
