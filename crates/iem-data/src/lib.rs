//! # iem-data — the data sets of the implicit-em experiments
//!
//! - [`synth`]: seeded 2-D generators (isotropic and anisotropic Gaussian blobs with known
//!   centres, two moons, concentric circles, two spirals, XOR/checkerboard, a uniform square,
//!   a uniform regular polygon), each recording its generating parameters.
//! - [`digits`]: the UCI optical handwritten digits (8×8, 1,797 samples, 10 classes; Alpaydin
//!   & Kaynak, CC BY 4.0), shipped inside this crate and embedded in the binary.
//! - [`idx`]: a reader for MNIST / Fashion-MNIST IDX files (gzip or raw) from a directory the
//!   caller names; missing, truncated or malformed files are typed errors naming the file.
//! - [`prep`]: standardisation and seeded train/test splits.
//!
//! ```
//! use iem_data::synth::{self, Synth};
//! let d = synth::generate(&Synth::Blobs { k: 3, per_class: 50, std: 0.3, radius: 3.0 }, 7);
//! assert_eq!(d.x.shape(), (150, 2));
//! assert_eq!(d.centres.as_ref().unwrap().rows(), 3);
//! let digits = iem_data::digits::load().unwrap();
//! assert_eq!((digits.x.rows(), digits.x.cols(), digits.classes), (1797, 64, 10));
//! ```
#![forbid(unsafe_code)]

pub mod digits;
pub mod idx;
pub mod prep;
pub mod synth;

use iem_tensor::Matrix;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A labelled data set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Dataset {
    /// Name, e.g. `blobs` or `digits`.
    pub name: String,
    /// Samples, `N × D`.
    pub x: Matrix,
    /// Labels in `0..classes`.
    pub labels: Vec<usize>,
    /// Number of classes.
    pub classes: usize,
    /// Known generating centres (`classes × D`), when there are any.
    pub centres: Option<Matrix>,
    /// The generating parameters, recorded for the report.
    pub params: BTreeMap<String, f64>,
}

/// Why a data set could not be read.
#[derive(Debug)]
pub enum DataError {
    /// A file is missing or unreadable.
    Io {
        /// The file.
        path: String,
        /// The OS error.
        error: String,
    },
    /// A file's content is not what its format says.
    Format {
        /// The file.
        path: String,
        /// What is wrong.
        problem: String,
    },
}

impl std::fmt::Display for DataError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataError::Io { path, error } => write!(f, "{path}: {error}"),
            DataError::Format { path, problem } => write!(f, "{path}: {problem}"),
        }
    }
}

impl std::error::Error for DataError {}
