//! Seeded 2-D generators. Every data set records its generating parameters in
//! [`Dataset::params`], and blobs also their true centres.

use crate::Dataset;
use iem_tensor::Matrix;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::f64::consts::PI;

/// A 2-D generator and its parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Synth {
    /// `k` isotropic Gaussian blobs of standard deviation `std`, centres evenly on a circle
    /// of `radius`.
    Blobs {
        /// Clusters.
        k: usize,
        /// Samples per cluster.
        per_class: usize,
        /// Standard deviation.
        std: f64,
        /// Radius of the circle of centres.
        radius: f64,
    },
    /// As `Blobs`, each stretched 3:1 along a different angle.
    AnisoBlobs {
        /// Clusters.
        k: usize,
        /// Samples per cluster.
        per_class: usize,
        /// Standard deviation along the short axis.
        std: f64,
        /// Radius of the circle of centres.
        radius: f64,
    },
    /// Two interleaved half circles with Gaussian noise.
    Moons {
        /// Samples per class.
        per_class: usize,
        /// Noise standard deviation.
        noise: f64,
    },
    /// Two concentric circles (radii 1 and `factor`).
    Circles {
        /// Samples per class.
        per_class: usize,
        /// Inner radius.
        factor: f64,
        /// Noise.
        noise: f64,
    },
    /// Two interleaved spirals.
    Spirals {
        /// Samples per class.
        per_class: usize,
        /// Noise.
        noise: f64,
        /// Turns.
        turns: f64,
    },
    /// A `cells × cells` checkerboard on `[-1, 1]²` (cells = 2 is XOR).
    Checkerboard {
        /// Total samples.
        n: usize,
        /// Cells per side.
        cells: usize,
    },
    /// Uniform on `[-1, 1]²` (one class).
    UniformSquare {
        /// Samples.
        n: usize,
    },
    /// Uniform inside a regular polygon with `sides` vertices on the unit circle (one class).
    Polygon {
        /// Samples.
        n: usize,
        /// Vertices.
        sides: usize,
    },
}

fn normal(r: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = r.random_range(f64::MIN_POSITIVE..1.0);
    let u2: f64 = r.random_range(0.0..1.0);
    (-2.0 * u1.ln()).sqrt() * (2.0 * PI * u2).cos()
}

/// Generates the data set from `seed`.
pub fn generate(s: &Synth, seed: u64) -> Dataset {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    let mut x: Vec<f32> = Vec::new();
    let mut labels = Vec::new();
    let mut params = BTreeMap::new();
    let mut centres = None;
    let (name, classes) = match *s {
        Synth::Blobs { k, per_class, std, radius }
        | Synth::AnisoBlobs { k, per_class, std, radius } => {
            let aniso = matches!(s, Synth::AnisoBlobs { .. });
            let c: Vec<(f64, f64)> = (0..k)
                .map(|j| {
                    let a = 2.0 * PI * j as f64 / k as f64;
                    (radius * a.cos(), radius * a.sin())
                })
                .collect();
            for (j, &(cx, cy)) in c.iter().enumerate() {
                let th = PI * j as f64 / k as f64;
                for _ in 0..per_class {
                    let (mut u, v) = (normal(&mut r) * std, normal(&mut r) * std);
                    if aniso {
                        u *= 3.0;
                    }
                    let (dx, dy) = if aniso {
                        (u * th.cos() - v * th.sin(), u * th.sin() + v * th.cos())
                    } else {
                        (u, v)
                    };
                    x.extend([(cx + dx) as f32, (cy + dy) as f32]);
                    labels.push(j);
                }
            }
            centres =
                Some(Matrix::from_fn(
                    k,
                    2,
                    |i, j| if j == 0 { c[i].0 as f32 } else { c[i].1 as f32 },
                ));
            params.extend([
                ("k".into(), k as f64),
                ("per_class".into(), per_class as f64),
                ("std".into(), std),
                ("radius".into(), radius),
            ]);
            (if aniso { "aniso_blobs" } else { "blobs" }, k)
        }
        Synth::Moons { per_class, noise } => {
            for c in 0..2 {
                for _ in 0..per_class {
                    let t = r.random_range(0.0..PI);
                    let (px, py) =
                        if c == 0 { (t.cos(), t.sin()) } else { (1.0 - t.cos(), 0.5 - t.sin()) };
                    x.extend([
                        (px + noise * normal(&mut r)) as f32,
                        (py + noise * normal(&mut r)) as f32,
                    ]);
                    labels.push(c);
                }
            }
            params.extend([("per_class".into(), per_class as f64), ("noise".into(), noise)]);
            ("moons", 2)
        }
        Synth::Circles { per_class, factor, noise } => {
            for c in 0..2 {
                let rad = if c == 0 { 1.0 } else { factor };
                for _ in 0..per_class {
                    let t = r.random_range(0.0..2.0 * PI);
                    x.extend([
                        (rad * t.cos() + noise * normal(&mut r)) as f32,
                        (rad * t.sin() + noise * normal(&mut r)) as f32,
                    ]);
                    labels.push(c);
                }
            }
            params.extend([
                ("per_class".into(), per_class as f64),
                ("factor".into(), factor),
                ("noise".into(), noise),
            ]);
            ("circles", 2)
        }
        Synth::Spirals { per_class, noise, turns } => {
            for c in 0..2 {
                for _ in 0..per_class {
                    let t: f64 = r.random_range(0.05f64..1.0).sqrt();
                    let a = 2.0 * PI * turns * t + PI * c as f64;
                    x.extend([
                        (t * a.cos() + noise * normal(&mut r)) as f32,
                        (t * a.sin() + noise * normal(&mut r)) as f32,
                    ]);
                    labels.push(c);
                }
            }
            params.extend([
                ("per_class".into(), per_class as f64),
                ("noise".into(), noise),
                ("turns".into(), turns),
            ]);
            ("spirals", 2)
        }
        Synth::Checkerboard { n, cells } => {
            for _ in 0..n {
                let (px, py): (f64, f64) = (r.random_range(-1.0..1.0), r.random_range(-1.0..1.0));
                let ix = (((px + 1.0) / 2.0 * cells as f64) as usize).min(cells - 1);
                let iy = (((py + 1.0) / 2.0 * cells as f64) as usize).min(cells - 1);
                x.extend([px as f32, py as f32]);
                labels.push((ix + iy) % 2);
            }
            params.extend([("n".into(), n as f64), ("cells".into(), cells as f64)]);
            (if cells == 2 { "xor" } else { "checkerboard" }, 2)
        }
        Synth::UniformSquare { n } => {
            for _ in 0..n {
                x.extend([r.random_range(-1.0f32..1.0), r.random_range(-1.0f32..1.0)]);
            }
            labels.resize(n, 0);
            params.insert("n".into(), n as f64);
            ("uniform_square", 1)
        }
        Synth::Polygon { n, sides } => {
            // Uniform in the polygon: a triangle fan from the centre, triangles chosen
            // equally (they have equal area), uniform inside each triangle.
            for _ in 0..n {
                let t = r.random_range(0..sides.max(3));
                let a0 = 2.0 * PI * t as f64 / sides as f64;
                let a1 = 2.0 * PI * (t + 1) as f64 / sides as f64;
                let (mut u, mut v): (f64, f64) =
                    (r.random_range(0.0..1.0), r.random_range(0.0..1.0));
                if u + v > 1.0 {
                    u = 1.0 - u;
                    v = 1.0 - v;
                }
                x.extend([
                    (u * a0.cos() + v * a1.cos()) as f32,
                    (u * a0.sin() + v * a1.sin()) as f32,
                ]);
                labels.push(0);
            }
            params.extend([("n".into(), n as f64), ("sides".into(), sides as f64)]);
            ("polygon", 1)
        }
    };
    let n = labels.len();
    Dataset {
        name: name.into(),
        x: Matrix::from_vec(n, 2, x).expect("two columns per sample"),
        labels,
        classes,
        centres,
        params,
    }
}
