//! # iem-spec — experiments as data, and the one runner
//!
//! An experiment is a TOML file deserialised into a strict [`Experiment`] (unknown fields
//! are rejected with the field's name). [`Experiment::runs`] expands its grid (datasets ×
//! widths × blocks × controls × depths × methods × seeds) into resolved [`RunSpec`]s, each with a stable
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

mod network;
pub mod run;
pub mod stats;
mod volume;

use iem_activations::Activation;
use iem_data::synth::Synth;
use iem_losses::volume::VolumeControl;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};

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
    /// E2, E3, E5, E6, E7: a classifier of `depth` competitive blocks of width K, trained
    /// end to end, greedily, or greedily then fine-tuned, with per-layer measurements.
    Network,
    /// E4, E8: one distance layer trained on the LSE loss plus volume controls (no labels),
    /// with competition and collapse measured over training.
    Volume,
    /// E7: measured cost per sample of a competitive block as K grows.
    Cost,
}

/// A data set of an experiment: a seeded 2-D generator, or real images.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum DataSpec {
    /// A seeded 2-D generator.
    Synth(Synth),
    /// Real data: the embedded digits, or MNIST / Fashion-MNIST from a directory.
    Real(RealData),
}

/// Real image data sets (pixels in `[0, 1]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum RealData {
    /// The UCI optical digits (8×8, 1,797 samples) shipped in the repository; a seeded
    /// 75/25 split.
    Digits,
    /// MNIST from `--mnist DIR` / `IEM_MNIST_DIR`: its train and t10k splits.
    Mnist {
        /// Use only the first `train` training images.
        #[serde(default)]
        train: Option<usize>,
    },
    /// Fashion-MNIST from `--fashion-mnist DIR` / `IEM_FASHION_MNIST_DIR`.
    FashionMnist {
        /// Use only the first `train` training images.
        #[serde(default)]
        train: Option<usize>,
    },
}

/// Deserialises a value tagged by `kind` as `A` when the kind is one of `a_kinds`, else as
/// `B`, so that each keeps its own precise error message (an untagged enum would only say
/// that nothing matched).
fn by_kind<'de, D, A, B, T>(
    d: D,
    a_kinds: &[&str],
    a: impl FnOnce(A) -> T,
    b: impl FnOnce(B) -> T,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    A: serde::de::DeserializeOwned,
    B: serde::de::DeserializeOwned,
{
    let v = serde_json::Value::deserialize(d)?;
    let kind = v.get("kind").and_then(|k| k.as_str()).unwrap_or("");
    if a_kinds.contains(&kind) {
        serde_json::from_value::<A>(v).map(a).map_err(D::Error::custom)
    } else {
        serde_json::from_value::<B>(v).map(b).map_err(D::Error::custom)
    }
}

impl<'de> Deserialize<'de> for DataSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        by_kind(d, &["digits", "mnist", "fashion_mnist"], DataSpec::Real, DataSpec::Synth)
    }
}

/// A competitive block: an activation after a linear map, or prototype attention.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Block {
    /// `act(W x + b)`.
    Act(Activation),
    /// Prototype attention.
    Attention(Attention),
}

/// Prototype attention as a block: `r = softmax(−‖x − μ_j‖²/(2τ))`, output `Σ_j r_j v_j`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Attention {
    /// K prototypes and K values.
    ProtoAttention {
        /// Temperature τ, in units of the block input's mean per-coordinate variance.
        tau: f64,
        /// Width of the values (the block's output width).
        #[serde(default)]
        values: ValueWidth,
    },
}

/// The width of prototype attention's values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueWidth {
    /// K, so the block's output is as wide as an activation block's.
    #[default]
    Width,
    /// The number of classes C: then a block and its head have `K·D + K·C + C² + C`
    /// parameters, nearly a linear block's `K·D + K + K·C + C`.
    Classes,
}

impl<'de> Deserialize<'de> for Block {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        by_kind(d, &["proto_attention"], Block::Attention, Block::Act)
    }
}

impl Block {
    /// A short name for run identifiers.
    pub fn name(&self) -> String {
        match self {
            Block::Act(a) => a.name(),
            Block::Attention(Attention::ProtoAttention { values: ValueWidth::Width, .. }) => {
                "proto_attention".into()
            }
            Block::Attention(Attention::ProtoAttention { values: ValueWidth::Classes, .. }) => {
                "proto_attention_c".into()
            }
        }
    }

    /// The activation, when the block is one.
    pub fn act(&self) -> Option<&Activation> {
        match self {
            Block::Act(a) => Some(a),
            Block::Attention(_) => None,
        }
    }
}

impl From<Activation> for Block {
    fn from(a: Activation) -> Block {
        Block::Act(a)
    }
}

/// How a [`Runner::Network`] run is trained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Approach 2: every layer trained end to end on cross-entropy for the whole budget.
    E2e,
    /// Approach 1: the first half of the budget trains each block greedily on the LSE of
    /// its prototype distances (soft k-means of its input, then frozen); the second half
    /// trains only the classifier head.
    Greedy,
    /// Approach 1, then the second half fine-tunes every layer end to end.
    GreedyFinetune,
}

impl Method {
    /// A short name for run identifiers.
    pub fn name(self) -> &'static str {
        match self {
            Method::E2e => "e2e",
            Method::Greedy => "greedy",
            Method::GreedyFinetune => "greedy_finetune",
        }
    }
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
            DataSpec::Real(RealData::Digits) => "digits".into(),
            DataSpec::Real(RealData::Mnist { train }) => {
                train.map_or("mnist".into(), |n| format!("mnist{n}"))
            }
            DataSpec::Real(RealData::FashionMnist { train }) => {
                train.map_or("fashion_mnist".into(), |n| format!("fashion_mnist{n}"))
            }
        }
    }

    /// The data directory the data set needs (`"mnist"` or `"fashion_mnist"`), if any.
    pub fn needs_dir(&self) -> Option<&'static str> {
        match self {
            DataSpec::Real(RealData::Mnist { .. }) => Some("mnist"),
            DataSpec::Real(RealData::FashionMnist { .. }) => Some("fashion_mnist"),
            _ => None,
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
    /// For [`Runner::Volume`]: the objective `lse · LSE(d) + Σ controls` of a distance
    /// layer, named for the report. `weight_norm` among the controls reparameterises the
    /// layer; `log_det` replaces it by full-covariance Gaussian distances (whose
    /// log-determinant is the exact volume term).
    Volume {
        /// Name in run identifiers and tables.
        name: String,
        /// Weight of the LSE term.
        #[serde(default = "one")]
        lse: f64,
        /// Sum the LSE over the batch rather than average it.
        #[serde(default)]
        sum: bool,
        /// Volume controls (each with its weight).
        #[serde(default)]
        controls: Vec<VolumeControl>,
    },
    /// For [`Runner::Volume`]: the standard sparse autoencoder baseline `D → K → D`, ReLU,
    /// trained on mean-per-element squared error plus `l1 · mean_n Σ_j |a_nj|` (the L1
    /// summed over units), or plus `l1 · mean_{n,j} |a_nj|` with `l1_mean_units`.
    Sae {
        /// L1 weight.
        l1: f64,
        /// Average the L1 over units as well as over the batch.
        #[serde(default)]
        l1_mean_units: bool,
    },
}

fn one() -> f64 {
    1.0
}

impl Control {
    /// A short name for run identifiers.
    pub fn name(&self) -> String {
        match self {
            Control::None => "none".into(),
            Control::WeightNorm => "weight_norm".into(),
            Control::WeightDecay { .. } => "weight_decay".into(),
            Control::Balance { .. } => "balance".into(),
            Control::Orthogonality { .. } => "orthogonality".into(),
            Control::Volume { name, .. } => name.clone(),
            Control::Sae { l1_mean_units: false, .. } => "sae".into(),
            Control::Sae { l1_mean_units: true, .. } => "sae_l1_mean".into(),
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
    /// Depths.
    pub depths: Option<Vec<usize>>,
    /// Keep only the first `n` activations.
    pub activations: Option<usize>,
    /// Replace the data sets (e.g. digits standing in for MNIST in smoke runs).
    pub data: Option<Vec<DataSpec>>,
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
    /// Hidden blocks (activations, or prototype attention).
    #[serde(default)]
    pub activations: Vec<Block>,
    /// Volume controls.
    #[serde(default = "default_controls")]
    pub controls: Vec<Control>,
    /// Numbers of competitive blocks ([`Runner::Network`]); empty means 1 and leaves the
    /// depth out of run identifiers.
    #[serde(default)]
    pub depths: Vec<usize>,
    /// Training methods ([`Runner::Network`]); empty means end to end and leaves the
    /// method out of run identifiers.
    #[serde(default)]
    pub methods: Vec<Method>,
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
    /// Block (activation or attention).
    pub activation: Option<Block>,
    /// Control.
    pub control: Control,
    /// Number of competitive blocks (0 when the runner has no depth).
    #[serde(default)]
    pub depth: usize,
    /// Training method ([`Runner::Network`]).
    #[serde(default)]
    pub method: Option<Method>,
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
            let src = match (quick, &q.data) {
                (true, Some(d)) => d,
                _ => &self.datasets,
            };
            let mut d: Vec<Option<DataSpec>> = src.iter().cloned().map(Some).collect();
            if quick && let Some(n) = q.datasets {
                d.truncate(n);
            }
            if d.is_empty() { vec![None] } else { d }
        };
        let mut acts: Vec<Option<Block>> = if self.activations.is_empty() {
            vec![None]
        } else {
            self.activations.iter().cloned().map(Some).collect()
        };
        if quick && let Some(n) = q.activations {
            acts.truncate(n.max(1));
        }
        let depths: Vec<Option<usize>> = match (quick, &q.depths) {
            (true, Some(d)) => d.iter().copied().map(Some).collect(),
            _ if self.depths.is_empty() => vec![None],
            _ => self.depths.iter().copied().map(Some).collect(),
        };
        let methods: Vec<Option<Method>> = if self.methods.is_empty() {
            vec![None]
        } else {
            self.methods.iter().copied().map(Some).collect()
        };
        let controls: Vec<Control> = self
            .controls
            .iter()
            .filter(|c| {
                !quick || q.controls.as_ref().is_none_or(|keep| keep.iter().any(|k| *k == c.name()))
            })
            .cloned()
            .collect();
        let widths = if widths.is_empty() { vec![0] } else { widths };
        let mut out = Vec::new();
        for ds in &datasets {
            for &w in &widths {
                for act in &acts {
                    for ctl in &controls {
                        for &depth in &depths {
                            for &method in &methods {
                                let mut cell = format!(
                                    "{}/K{w}/{}/{}",
                                    ds.as_ref().map_or("none".into(), |d| d.name()),
                                    act.as_ref().map_or("none".into(), |a| a.name()),
                                    ctl.name()
                                );
                                if let Some(d) = depth {
                                    cell.push_str(&format!("/D{d}"));
                                }
                                if let Some(m) = method {
                                    cell.push_str(&format!("/{}", m.name()));
                                }
                                for seed in 0..seeds as u64 {
                                    out.push(RunSpec {
                                        experiment: self.name.clone(),
                                        runner: self.runner,
                                        cell: cell.clone(),
                                        dataset: ds.clone(),
                                        width: w,
                                        activation: act.clone(),
                                        control: ctl.clone(),
                                        depth: depth.unwrap_or(0),
                                        method,
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
            }
        }
        out
    }
}
