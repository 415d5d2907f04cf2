//! Optimisers (SGD with momentum and weight decay, Adam, AdamW), learning-rate schedules and
//! gradient clipping, on the `iem-simd` update loops.

use crate::{Model, ParamGrads};
use iem_simd::Par;
use iem_simd::elementwise::{AdamStep, adam_update_par, sgd_update};
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
        self.apply(model, layers, grads, norm, Par::Seq);
        norm
    }

    /// [`Optimizer::step`] given the global gradient norm `norm` (the trainer has it
    /// already), with the Adam loops split over `par` (same result for any thread count).
    pub(crate) fn apply(
        &mut self,
        model: &mut Model,
        layers: std::ops::Range<usize>,
        grads: &mut ParamGrads,
        norm: f32,
        par: Par,
    ) {
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
        for (gi, li) in layers.enumerate() {
            let params = model.layers[li].params_mut();
            for (pi, p) in params.into_iter().enumerate() {
                let g = &grads[gi][pi];
                let (m, v) = (&mut self.m[li][pi], &mut self.v[li][pi]);
                // Adam adds L2 decay to the gradient; AdamW decays the weights directly.
                let (beta1, beta2, eps, l2, decoupled) = match self.cfg.method {
                    Method::Sgd { momentum, weight_decay } => {
                        sgd_update(lr, momentum, weight_decay, p, g, m);
                        continue;
                    }
                    Method::Adam { beta1, beta2, eps, weight_decay } => {
                        (beta1, beta2, eps, weight_decay, 0.0)
                    }
                    Method::AdamW { beta1, beta2, eps, weight_decay } => {
                        (beta1, beta2, eps, 0.0, weight_decay)
                    }
                };
                let h = AdamStep {
                    lr,
                    beta1,
                    beta2,
                    eps,
                    bias_correction1: 1.0 - beta1.powi(t),
                    bias_correction2: 1.0 - beta2.powi(t),
                    l2,
                    decoupled,
                };
                adam_update_par(h, p, g, m, v, par);
            }
        }
    }
}
