//! # iem-simd — the SIMD CPU backend of implicit-em
//!
//! A leaf crate of kernels over `f32` slices (row-major blocks), each with a scalar path that
//! is always compiled and AVX2+FMA / AVX-512 paths chosen at run time ([`Isa`]). Set
//! `IEM_SIMD=scalar|avx2|avx512|neon` to force one path; forcing one the machine lacks is an
//! error, never a silent fallback.
//!
//! - [`gemm`]: `C = α·op(A)·op(B) + β·C + bias` in the layouts training needs (`A·B`, `Aᵀ·B`,
//!   `A·Bᵀ`).
//! - [`rows`]: row max / sum / log-sum-exp, softmax (with temperature), grouped softmax,
//!   log-softmax, SoLU, and their backward passes; in-place softmax, grouped softmax and
//!   log-softmax (the same bits).
//! - [`elementwise`]: ReLU (also in place), |·|, exp, ln and their backward passes; `axpy`,
//!   `scale`, `dot`, Adam/AdamW and SGD update loops.
//! - [`panel`]: products with a matrix kept in 64-column panels, the AVX-512 micro-kernel's
//!   own layout (no per-call packing), for a trainer's weights.
//! - [`distance`]: batch-by-prototype squared distances through one GEMM.
//! - [`math`]: the vectorised `exp`/`ln` with their tested error bounds.
//! - [`reference`](mod@reference): plain f64 implementations every kernel is tested against.
//!
//! Parallelism is an explicit [`Par`] argument; work is split into blocks whose boundaries do
//! not depend on the thread count and no reduction crosses blocks, so results are
//! bit-identical for 1 and N threads.
//!
//! ```
//! use iem_simd::{Par, rows};
//! let x = [1.0f32, 2.0, 3.0, 0.0, 0.0, 0.0];
//! let mut s = [0.0f32; 6];
//! rows::softmax(&x, 3, 1.0, &mut s, Par::Seq);
//! assert!((s[..3].iter().sum::<f32>() - 1.0).abs() < 1e-6);
//! assert!((s[3] - 1.0 / 3.0).abs() < 1e-6);
//! ```

pub mod distance;
pub mod elementwise;
pub mod gemm;
mod isa;
pub mod math;
pub mod panel;
pub mod reference;
pub mod rows;
pub mod simd;
pub mod timing;

pub use gemm::Gemm;
pub use isa::{Isa, IsaError, Par};
