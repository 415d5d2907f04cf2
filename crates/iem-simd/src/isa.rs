//! Instruction-set detection, the `IEM_SIMD` override, and the [`Par`] argument.
//!
//! The instruction set is detected once per process and cached. The environment variable
//! `IEM_SIMD` forces one path: `scalar`, `avx2`, `avx512` or `neon`. Forcing a path the
//! machine does not have is an error reported by [`Isa::try_current`] (and a panic with a
//! clear message from [`Isa::current`], which the kernels use): a silent fallback would let a
//! test claim to have exercised a path it never ran.

use std::fmt;
use std::sync::OnceLock;

/// One compiled code path of the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Portable scalar Rust: always compiled, the reference every other path is tested against.
    Scalar,
    /// x86-64 AVX2 with FMA (8 f32 lanes).
    Avx2,
    /// x86-64 AVX-512 F/BW/DQ/VL (16 f32 lanes).
    Avx512,
    /// AArch64 NEON. Detected and accepted; its kernels currently run the scalar code,
    /// which LLVM auto-vectorises for NEON (see ARCHITECTURE.md).
    Neon,
}

/// Error from [`Isa::try_current`] / [`Isa::parse`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IsaError {
    /// `IEM_SIMD` named something that is not an instruction set.
    Unknown(String),
    /// `IEM_SIMD` forced an instruction set this machine does not have.
    Unavailable(Isa),
}

impl fmt::Display for IsaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IsaError::Unknown(s) => write!(
                f,
                "IEM_SIMD={s:?} is not an instruction set (use scalar, avx2, avx512 or neon)"
            ),
            IsaError::Unavailable(isa) => write!(
                f,
                "IEM_SIMD forces {isa} but this machine does not support it (available: {:?})",
                Isa::available()
            ),
        }
    }
}

impl std::error::Error for IsaError {}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Isa {
    /// The name accepted by `IEM_SIMD`.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Neon => "neon",
        }
    }

    /// Parses an `IEM_SIMD` value.
    pub fn parse(s: &str) -> Result<Isa, IsaError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "scalar" => Ok(Isa::Scalar),
            "avx2" => Ok(Isa::Avx2),
            "avx512" => Ok(Isa::Avx512),
            "neon" => Ok(Isa::Neon),
            other => Err(IsaError::Unknown(other.to_string())),
        }
    }

    /// Whether this machine can run the path.
    pub fn is_available(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512dq")
                    && is_x86_feature_detected!("avx512vl")
                    && is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Every path this machine can run, best last.
    pub fn available() -> Vec<Isa> {
        [Isa::Scalar, Isa::Neon, Isa::Avx2, Isa::Avx512]
            .into_iter()
            .filter(|i| i.is_available())
            .collect()
    }

    /// The best path on this machine, ignoring `IEM_SIMD`.
    pub fn best() -> Isa {
        *Isa::available().last().unwrap_or(&Isa::Scalar)
    }

    /// The path in use: `IEM_SIMD` if set (and valid and available), else [`Isa::best`].
    /// Detected once per process.
    pub fn try_current() -> Result<Isa, IsaError> {
        static CURRENT: OnceLock<Result<Isa, IsaError>> = OnceLock::new();
        CURRENT
            .get_or_init(|| match std::env::var("IEM_SIMD") {
                Ok(v) if !v.trim().is_empty() => {
                    let isa = Isa::parse(&v)?;
                    if isa.is_available() { Ok(isa) } else { Err(IsaError::Unavailable(isa)) }
                }
                _ => Ok(Isa::best()),
            })
            .clone()
    }

    /// As [`Isa::try_current`], panicking with the error's message when `IEM_SIMD` is
    /// invalid. This is a configuration mistake of the person running the program, reported
    /// at the first kernel call.
    pub fn current() -> Isa {
        match Isa::try_current() {
            Ok(i) => i,
            Err(e) => panic!("{e}"),
        }
    }

    /// Number of f32 lanes of this path's vectors.
    pub fn lanes(self) -> usize {
        match self {
            Isa::Scalar | Isa::Neon => 1,
            Isa::Avx2 => 8,
            Isa::Avx512 => 16,
        }
    }
}

/// How much parallelism a kernel may use: an explicit argument, never ambient state.
///
/// Every kernel splits its work into blocks whose boundaries do not depend on the thread
/// count, and no reduction is split across threads, so results are bit-identical for
/// `Par::Seq` and `Par::Rayon(n)` for any `n`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Par {
    /// Run on the calling thread.
    #[default]
    Seq,
    /// Run on the current rayon pool, using at most this many tasks at once.
    Rayon(usize),
}

impl Par {
    /// `Rayon(n)` with the current rayon pool's thread count.
    pub fn rayon() -> Par {
        Par::Rayon(rayon::current_num_threads())
    }

    /// The number of tasks worth creating.
    pub fn degree(self) -> usize {
        match self {
            Par::Seq => 1,
            Par::Rayon(n) => n.max(1),
        }
    }
}
