//! # iem-spec — experiments as data, and the one runner
//!
//! An experiment is a TOML file deserialised into a strict [`Experiment`] (unknown fields
//! are rejected with the field's name). [`Experiment::runs`] expands its grid (datasets ×
//! widths × activations × controls × seeds) into resolved [`RunSpec`]s, each with a stable
//! identifier; [`run::execute`] executes one of them and returns its metrics and artefacts.
//! [`stats`] holds the statistics the report uses.
//!
//! ```
//! let exp: iem_spec::Experiment = toml::from_str(r#"
//!     name = "demo"
//!     title = "A demo"
//!     question = "Q0"
//!     runner = "identity"
//!     seeds = 2
//!     widths = [2, 7]
//! "#).unwrap();
//! assert_eq!(exp.runs(false).len(), 4);
//! let bad = toml::from_str::<iem_spec::Experiment>("name = 'x'\ntitel = 'typo'");
//! assert!(bad.unwrap_err().to_string().contains("titel"));
//! ```
#![forbid(unsafe_code)]

pub mod run;
pub mod stats;

use iem_activations::Activation;
use iem_data::synth::Synth;
use serde::{Deserialize, Serialize};

/// Which runner executes the experiment's runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Runner {
    /// E0a: the implicit-EM identity `∂L/∂d = r` over random distances, per width.
    Identity,
    /// E0b: gradient descent on the LSE loss against explicit EM on 2-D blobs.
    EmCompare,
    /// E1 (the seed author's design): a 2 → K → 2 autoencoder on 2-D data.
    Autoencoder,
    /// E1 (the protocol's design): a 2 → K → classes classifier on 2-D data.
    Classifier,
}

/// A data set of an experiment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DataSpec {
    /// A seeded 2-D generator.
    Synth(Synth),
}

impl DataSpec {
    /// A short name for run identifiers.
    pub fn name(&self) -> String {
        match self {
            DataSpec::Synth(s) => match s {
                Synth::Blobs { k, .. } => format!("blobs{k}"),
                Synth::AnisoBlobs { k, .. } => format!("aniso_blobs{k}"),
                Synth::Moons { .. } => "moons".into(),
                Synth::Circles { .. } => "circles".into(),
                Synth::Spirals { .. } => "spirals".into(),
                Synth::Checkerboard { cells, .. } => {
                    if *cells == 2 {
                        "xor".into()
                    } else {
                        format!("checkerboard{cells}")
                    }
                }
                Synth::UniformSquare { .. } => "square".into(),
                Synth::Polygon { sides, .. } => format!("polygon{sides}"),
            },
        }
    }
}

/// A volume control of the E1 grid.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Control {
    /// No control.
    None,
    /// Weight normalisation of the hidden layer (`w = γ v/‖v‖`).
    WeightNorm,
    /// Decoupled weight decay (AdamW) of strength `lambda`.
    WeightDecay {
        /// λ.
        lambda: f64,
    },
    /// Usage balance `λ·KL(r̄ ‖ u)` of `r = softmax(hidden pre-activations)`.
    Balance {
        /// λ.
        lambda: f64,
    },
    /// Weight orthogonality `λ‖ŴŴᵀ − I‖²` of the hidden layer.
    Orthogonality {
        /// λ.
        lambda: f64,
    },
}

impl Control {
    /// A short name for run identifiers.
    pub fn name(&self) -> &'static str {
        match self {
            Control::None => "none",
            Control::WeightNorm => "weight_norm",
            Control::WeightDecay { .. } => "weight_decay",
            Control::Balance { .. } => "balance",
            Control::Orthogonality { .. } => "orthogonality",
        }
    }
}

fn default_controls() -> Vec<Control> {
    vec![Control::None]
}

/// Overrides for `--quick` (smoke scale).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Quick {
    /// Seeds.
    pub seeds: Option<usize>,
    /// Epochs.
    pub epochs: Option<usize>,
    /// Widths.
    pub widths: Option<Vec<usize>>,
    /// Keep only the first `n` datasets.
    pub datasets: Option<usize>,
    /// Keep only these controls (by name).
    pub controls: Option<Vec<String>>,
}

/// One experiment file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    /// Identifier (folder name of its runs).
    pub name: String,
    /// Title in the report.
    pub title: String,
    /// The seed question it answers (`Q1`…).
    pub question: String,
    /// Which runner executes it.
    pub runner: Runner,
    /// Seeds per cell (full mode).
    pub seeds: usize,
    /// Epochs (or EM/GD iterations for `em_compare`).
    #[serde(default)]
    pub epochs: usize,
    /// Mini-batch size.
    #[serde(default)]
    pub batch: usize,
    /// Adam learning rate.
    #[serde(default)]
    pub lr: f64,
    /// Data sets.
    #[serde(default)]
    pub datasets: Vec<DataSpec>,
    /// Hidden widths K.
    #[serde(default)]
    pub widths: Vec<usize>,
    /// Hidden activations.
    #[serde(default)]
    pub activations: Vec<Activation>,
    /// Volume controls.
    #[serde(default = "default_controls")]
    pub controls: Vec<Control>,
    /// Smoke-scale overrides.
    #[serde(default)]
    pub quick: Quick,
}

/// One fully resolved run: everything needed to execute it, nothing ambient.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    /// Experiment name.
    pub experiment: String,
    /// Runner.
    pub runner: Runner,
    /// Cell identifier (`dataset/K/activation/control`), seeds excluded.
    pub cell: String,
    /// Data set.
    pub dataset: Option<DataSpec>,
    /// Hidden width.
    pub width: usize,
    /// Activation.
    pub activation: Option<Activation>,
    /// Control.
    pub control: Control,
    /// Epochs.
    pub epochs: usize,
    /// Batch.
    pub batch: usize,
    /// Learning rate.
    pub lr: f64,
    /// Seed index (0-based); all randomness of the run derives from it.
    pub seed: u64,
}

impl RunSpec {
    /// The run's folder, relative to the output root: `experiment/cell/seed-N`.
    pub fn rel_dir(&self) -> String {
        format!("{}/{}/seed-{}", self.experiment, self.cell, self.seed)
    }
}

impl Experiment {
    /// Expands the grid into runs, in a stable order (cells in file order, then seeds).
    pub fn runs(&self, quick: bool) -> Vec<RunSpec> {
        let q = &self.quick;
        let seeds = if quick { q.seeds.unwrap_or(2) } else { self.seeds };
        let epochs = if quick { q.epochs.unwrap_or(self.epochs) } else { self.epochs };
        let widths = if quick {
            q.widths.clone().unwrap_or(self.widths.clone())
        } else {
            self.widths.clone()
        };
        let datasets: Vec<Option<DataSpec>> = {
            let mut d: Vec<Option<DataSpec>> = self.datasets.iter().cloned().map(Some).collect();
            if quick && let Some(n) = q.datasets {
                d.truncate(n);
            }
            if d.is_empty() { vec![None] } else { d }
        };
        let acts: Vec<Option<Activation>> = if self.activations.is_empty() {
            vec![None]
        } else {
            self.activations.iter().cloned().map(Some).collect()
        };
        let controls: Vec<Control> = self
            .controls
            .iter()
            .filter(|c| {
                !quick || q.controls.as_ref().is_none_or(|keep| keep.iter().any(|k| k == c.name()))
            })
            .cloned()
            .collect();
        let widths = if widths.is_empty() { vec![0] } else { widths };
        let mut out = Vec::new();
        for ds in &datasets {
            for &w in &widths {
                for act in &acts {
                    for ctl in &controls {
                        let cell = format!(
                            "{}/K{w}/{}/{}",
                            ds.as_ref().map_or("none".into(), |d| d.name()),
                            act.as_ref().map_or("none".into(), |a| a.name()),
                            ctl.name()
                        );
                        for seed in 0..seeds as u64 {
                            out.push(RunSpec {
                                experiment: self.name.clone(),
                                runner: self.runner,
                                cell: cell.clone(),
                                dataset: ds.clone(),
                                width: w,
                                activation: act.clone(),
                                control: ctl.clone(),
                                epochs,
                                batch: self.batch,
                                lr: self.lr,
                                seed,
                            });
                        }
                    }
                }
            }
        }
        out
    }
}
