//! The vector abstraction every kernel is written against, once.
//!
//! A kernel is a type implementing [`Kernel`]; [`run`] calls its generic body with the
//! vector type of the current [`Isa`], inside a function compiled with that instruction set
//! enabled (the pattern of `pulp`). All lane operations are `#[inline(always)]` so they are
//! inlined into the feature-enabled caller.

use crate::isa::Isa;

/// f32 vector operations of one instruction set. `V` holds `LANES` f32 values.
///
/// # Safety
/// Implementations for an instruction set may only be constructed (via [`run`]) when the
/// machine supports it.
pub unsafe trait Simd: Copy + Send + Sync {
    /// The vector type.
    type V: Copy;
    /// Lanes per vector.
    const LANES: usize;

    /// All lanes `x`.
    fn splat(self, x: f32) -> Self::V;
    /// Loads `LANES` values; `s.len() >= LANES`.
    fn load(self, s: &[f32]) -> Self::V;
    /// Stores `LANES` values; `s.len() >= LANES`.
    fn store(self, s: &mut [f32], v: Self::V);
    /// Loads `LANES` values from a raw pointer.
    ///
    /// # Safety
    /// `p..p + LANES` must be readable.
    unsafe fn load_ptr(self, p: *const f32) -> Self::V;
    /// Square root per lane.
    fn sqrt(self, a: Self::V) -> Self::V;
    /// `a + b`.
    fn add(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a - b`.
    fn sub(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a * b`.
    fn mul(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a / b`.
    fn div(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a * b + c` (fused where the hardware has FMA; the scalar path rounds twice).
    fn fma(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// Lane-wise maximum (if either is NaN, the result is `b`).
    fn max(self, a: Self::V, b: Self::V) -> Self::V;
    /// Lane-wise minimum (if either is NaN, the result is `b`).
    fn min(self, a: Self::V, b: Self::V) -> Self::V;
    /// `if a > b { x } else { y }` per lane.
    fn select_gt(self, a: Self::V, b: Self::V, x: Self::V, y: Self::V) -> Self::V;
    /// `x` in the lanes where `x` is NaN, `r` elsewhere.
    fn keep_nan(self, x: Self::V, r: Self::V) -> Self::V;
    /// Round to nearest integer (ties to even).
    fn round(self, a: Self::V) -> Self::V;
    /// `2^n` for integer-valued `n` in `[-126, 127]`.
    fn pow2i(self, n: Self::V) -> Self::V;
    /// For a normal positive `x`: `(m, e)` with `x = m · 2^e`, `m ∈ [1, 2)`, `e` integral.
    fn frexp(self, x: Self::V) -> (Self::V, Self::V);
    /// Sum of lanes (fixed order per instruction set).
    fn reduce_sum(self, a: Self::V) -> f32;
    /// Maximum of lanes.
    fn reduce_max(self, a: Self::V) -> f32;

    /// Loads the first `n < LANES` values of `s`, the other lanes `fill`.
    #[inline(always)]
    fn load_partial(self, s: &[f32], fill: f32) -> Self::V {
        let mut buf = [fill; 16];
        buf[..s.len()].copy_from_slice(s);
        self.load(&buf)
    }
    /// Stores the first `s.len() < LANES` lanes of `v`.
    #[inline(always)]
    fn store_partial(self, s: &mut [f32], v: Self::V) {
        let mut buf = [0.0f32; 16];
        self.store(&mut buf, v);
        let n = s.len();
        s.copy_from_slice(&buf[..n]);
    }
    /// Stores `LANES` values like [`Simd::store`], with a non-temporal hint where the
    /// instruction set has one (x86: the line goes to memory instead of this core's
    /// caches, without first being read). `s` must start at a multiple of
    /// [`Simd::STREAM_ALIGN`] bytes.
    #[inline(always)]
    fn store_stream(self, s: &mut [f32], v: Self::V) {
        self.store(s, v)
    }
    /// Alignment in bytes that [`Simd::store_stream`] needs (1: none).
    const STREAM_ALIGN: usize = 1;
    /// Orders the streaming stores before it before every later store (x86 `sfence`), so
    /// that another thread that synchronises with this one sees them.
    #[inline(always)]
    fn stream_fence(self) {}
    /// `0`.
    #[inline(always)]
    fn zero(self) -> Self::V {
        self.splat(0.0)
    }
}

/// A kernel body generic over the instruction set.
pub trait Kernel {
    /// What the kernel returns.
    type Output;
    /// Runs the kernel with vector operations `s`.
    fn run<S: Simd>(self, s: S) -> Self::Output;
}

/// Runs `k` with the instruction set `isa`.
///
/// # Panics
/// If `isa` is not available on this machine (callers pass [`Isa::current`]).
#[inline]
pub fn run_with<K: Kernel>(isa: Isa, k: K) -> K::Output {
    assert!(isa.is_available(), "instruction set {isa} is not available on this machine");
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: availability checked just above.
        Isa::Avx512 => unsafe { x86::run_avx512(k) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: availability checked just above.
        Isa::Avx2 => unsafe { x86::run_avx2(k) },
        _ => k.run(Scalar),
    }
}

/// Hints the CPU to fetch the cache line holding `p` into L1 (a no-op off x86-64).
/// Never faults, whatever `p` is.
#[inline(always)]
pub fn prefetch(p: *const f32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch is a hint that never faults, even on invalid addresses; SSE is part of
    // the x86-64 baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Runs `k` with [`Isa::current`].
#[inline]
pub fn run<K: Kernel>(k: K) -> K::Output {
    run_with(Isa::current(), k)
}

/// The portable one-lane path.
#[derive(Clone, Copy, Debug)]
pub struct Scalar;

// SAFETY: needs no instruction-set extension.
unsafe impl Simd for Scalar {
    type V = f32;
    const LANES: usize = 1;
    #[inline(always)]
    fn splat(self, x: f32) -> f32 {
        x
    }
    #[inline(always)]
    fn load(self, s: &[f32]) -> f32 {
        s[0]
    }
    #[inline(always)]
    fn store(self, s: &mut [f32], v: f32) {
        s[0] = v;
    }
    #[inline(always)]
    unsafe fn load_ptr(self, p: *const f32) -> f32 {
        // SAFETY: the caller guarantees `p` is readable.
        unsafe { *p }
    }
    #[inline(always)]
    fn sqrt(self, a: f32) -> f32 {
        a.sqrt()
    }
    #[inline(always)]
    fn add(self, a: f32, b: f32) -> f32 {
        a + b
    }
    #[inline(always)]
    fn sub(self, a: f32, b: f32) -> f32 {
        a - b
    }
    #[inline(always)]
    fn mul(self, a: f32, b: f32) -> f32 {
        a * b
    }
    #[inline(always)]
    fn div(self, a: f32, b: f32) -> f32 {
        a / b
    }
    #[inline(always)]
    fn fma(self, a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
    #[inline(always)]
    fn max(self, a: f32, b: f32) -> f32 {
        if a > b { a } else { b }
    }
    #[inline(always)]
    fn min(self, a: f32, b: f32) -> f32 {
        if a < b { a } else { b }
    }
    #[inline(always)]
    fn select_gt(self, a: f32, b: f32, x: f32, y: f32) -> f32 {
        if a > b { x } else { y }
    }
    #[inline(always)]
    fn keep_nan(self, x: f32, r: f32) -> f32 {
        if x.is_nan() { x } else { r }
    }
    #[inline(always)]
    fn round(self, a: f32) -> f32 {
        a.round_ties_even()
    }
    #[inline(always)]
    fn pow2i(self, n: f32) -> f32 {
        f32::from_bits((((n as i32) + 127) as u32) << 23)
    }
    #[inline(always)]
    fn frexp(self, x: f32) -> (f32, f32) {
        let b = x.to_bits();
        let e = ((b >> 23) & 0xff) as i32 - 127;
        let m = f32::from_bits((b & 0x007f_ffff) | 0x3f80_0000);
        (m, e as f32)
    }
    #[inline(always)]
    fn reduce_sum(self, a: f32) -> f32 {
        a
    }
    #[inline(always)]
    fn reduce_max(self, a: f32) -> f32 {
        a
    }
    #[inline(always)]
    fn load_partial(self, s: &[f32], fill: f32) -> f32 {
        if s.is_empty() { fill } else { s[0] }
    }
    #[inline(always)]
    fn store_partial(self, s: &mut [f32], v: f32) {
        if let Some(x) = s.first_mut() {
            *x = v;
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub use x86::{Avx2, Avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Kernel, Simd};
    use std::arch::x86_64::*;

    /// AVX2 + FMA, 8 lanes. Only constructed by [`run`](super::run) / [`run_with`](super::run_with).
    #[derive(Clone, Copy, Debug)]
    pub struct Avx2(());
    /// AVX-512 F/BW/DQ/VL, 16 lanes. Only constructed by [`run`](super::run) / [`run_with`](super::run_with).
    #[derive(Clone, Copy, Debug)]
    pub struct Avx512(());

    /// Lanes `0..len` set (all bits) in an AVX2 mask vector, `len < 8`.
    #[inline(always)]
    fn avx2_mask(len: usize) -> __m256i {
        const ONES: [i32; 16] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];
        // SAFETY: `8 − len ≥ 1` and the 8 values read from there stay inside ONES.
        unsafe { _mm256_loadu_si256(ONES[8 - len..].as_ptr() as *const __m256i) }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn run_avx2<K: Kernel>(k: K) -> K::Output {
        k.run(Avx2(()))
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
    pub(super) unsafe fn run_avx512<K: Kernel>(k: K) -> K::Output {
        k.run(Avx512(()))
    }

    // SAFETY (for every `unsafe` block in this impl): an `Avx2` value exists only inside
    // `run_avx2`, which is entered after checking AVX2+FMA; loads and stores are bounds-checked
    // by the slice length assertions.
    unsafe impl Simd for Avx2 {
        type V = __m256;
        const LANES: usize = 8;
        #[inline(always)]
        fn splat(self, x: f32) -> __m256 {
            unsafe { _mm256_set1_ps(x) }
        }
        #[inline(always)]
        fn load(self, s: &[f32]) -> __m256 {
            assert!(s.len() >= 8);
            unsafe { _mm256_loadu_ps(s.as_ptr()) }
        }
        #[inline(always)]
        fn store(self, s: &mut [f32], v: __m256) {
            assert!(s.len() >= 8);
            unsafe { _mm256_storeu_ps(s.as_mut_ptr(), v) }
        }
        const STREAM_ALIGN: usize = 32;
        #[inline(always)]
        fn store_stream(self, s: &mut [f32], v: __m256) {
            assert!(s.len() >= 8 && (s.as_ptr() as usize).is_multiple_of(32));
            unsafe { _mm256_stream_ps(s.as_mut_ptr(), v) }
        }
        #[inline(always)]
        fn stream_fence(self) {
            unsafe { _mm_sfence() }
        }
        // Masked loads and stores touch only the lanes in the slice (masked-off lanes never
        // fault), instead of copying through a buffer.
        #[inline(always)]
        fn load_partial(self, s: &[f32], fill: f32) -> __m256 {
            assert!(s.len() < 8);
            unsafe {
                let m = avx2_mask(s.len());
                let v = _mm256_maskload_ps(s.as_ptr(), m);
                _mm256_blendv_ps(_mm256_set1_ps(fill), v, _mm256_castsi256_ps(m))
            }
        }
        #[inline(always)]
        fn store_partial(self, s: &mut [f32], v: __m256) {
            assert!(s.len() < 8);
            unsafe { _mm256_maskstore_ps(s.as_mut_ptr(), avx2_mask(s.len()), v) }
        }
        #[inline(always)]
        unsafe fn load_ptr(self, p: *const f32) -> __m256 {
            unsafe { _mm256_loadu_ps(p) }
        }
        #[inline(always)]
        fn sqrt(self, a: __m256) -> __m256 {
            unsafe { _mm256_sqrt_ps(a) }
        }
        #[inline(always)]
        fn add(self, a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_add_ps(a, b) }
        }
        #[inline(always)]
        fn sub(self, a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_sub_ps(a, b) }
        }
        #[inline(always)]
        fn mul(self, a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_mul_ps(a, b) }
        }
        #[inline(always)]
        fn div(self, a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_div_ps(a, b) }
        }
        #[inline(always)]
        fn fma(self, a: __m256, b: __m256, c: __m256) -> __m256 {
            unsafe { _mm256_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        fn max(self, a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_max_ps(a, b) }
        }
        #[inline(always)]
        fn min(self, a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_min_ps(a, b) }
        }
        #[inline(always)]
        fn select_gt(self, a: __m256, b: __m256, x: __m256, y: __m256) -> __m256 {
            unsafe { _mm256_blendv_ps(y, x, _mm256_cmp_ps::<_CMP_GT_OQ>(a, b)) }
        }
        #[inline(always)]
        fn keep_nan(self, x: __m256, r: __m256) -> __m256 {
            unsafe { _mm256_blendv_ps(r, x, _mm256_cmp_ps::<_CMP_UNORD_Q>(x, x)) }
        }
        #[inline(always)]
        fn round(self, a: __m256) -> __m256 {
            unsafe { _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(a) }
        }
        #[inline(always)]
        fn pow2i(self, n: __m256) -> __m256 {
            unsafe {
                let i = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
                _mm256_castsi256_ps(_mm256_slli_epi32::<23>(i))
            }
        }
        #[inline(always)]
        fn frexp(self, x: __m256) -> (__m256, __m256) {
            unsafe {
                let b = _mm256_castps_si256(x);
                let e = _mm256_sub_epi32(
                    _mm256_and_si256(_mm256_srli_epi32::<23>(b), _mm256_set1_epi32(0xff)),
                    _mm256_set1_epi32(127),
                );
                let m = _mm256_or_si256(
                    _mm256_and_si256(b, _mm256_set1_epi32(0x007f_ffff)),
                    _mm256_set1_epi32(0x3f80_0000),
                );
                (_mm256_castsi256_ps(m), _mm256_cvtepi32_ps(e))
            }
        }
        #[inline(always)]
        fn reduce_sum(self, a: __m256) -> f32 {
            unsafe {
                let lo = _mm256_castps256_ps128(a);
                let hi = _mm256_extractf128_ps::<1>(a);
                let s = _mm_add_ps(lo, hi);
                let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
                let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
                _mm_cvtss_f32(s)
            }
        }
        #[inline(always)]
        fn reduce_max(self, a: __m256) -> f32 {
            unsafe {
                let lo = _mm256_castps256_ps128(a);
                let hi = _mm256_extractf128_ps::<1>(a);
                let s = _mm_max_ps(lo, hi);
                let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
                let s = _mm_max_ss(s, _mm_shuffle_ps::<0b01>(s, s));
                _mm_cvtss_f32(s)
            }
        }
    }

    // SAFETY (for every `unsafe` block in this impl): an `Avx512` value exists only inside
    // `run_avx512`, entered after checking AVX-512 F/BW/DQ/VL; slice lengths are asserted.
    unsafe impl Simd for Avx512 {
        type V = __m512;
        const LANES: usize = 16;
        #[inline(always)]
        fn splat(self, x: f32) -> __m512 {
            unsafe { _mm512_set1_ps(x) }
        }
        #[inline(always)]
        fn load(self, s: &[f32]) -> __m512 {
            assert!(s.len() >= 16);
            unsafe { _mm512_loadu_ps(s.as_ptr()) }
        }
        #[inline(always)]
        fn store(self, s: &mut [f32], v: __m512) {
            assert!(s.len() >= 16);
            unsafe { _mm512_storeu_ps(s.as_mut_ptr(), v) }
        }
        const STREAM_ALIGN: usize = 64;
        #[inline(always)]
        fn store_stream(self, s: &mut [f32], v: __m512) {
            assert!(s.len() >= 16 && (s.as_ptr() as usize).is_multiple_of(64));
            unsafe { _mm512_stream_ps(s.as_mut_ptr(), v) }
        }
        #[inline(always)]
        fn stream_fence(self) {
            unsafe { _mm_sfence() }
        }
        // Masked loads and stores touch only the lanes in the slice (masked-off lanes never
        // fault), instead of copying through a buffer.
        #[inline(always)]
        fn load_partial(self, s: &[f32], fill: f32) -> __m512 {
            assert!(s.len() < 16);
            let m = ((1u32 << s.len()) - 1) as __mmask16;
            unsafe { _mm512_mask_loadu_ps(_mm512_set1_ps(fill), m, s.as_ptr()) }
        }
        #[inline(always)]
        fn store_partial(self, s: &mut [f32], v: __m512) {
            assert!(s.len() < 16);
            let m = ((1u32 << s.len()) - 1) as __mmask16;
            unsafe { _mm512_mask_storeu_ps(s.as_mut_ptr(), m, v) }
        }
        #[inline(always)]
        unsafe fn load_ptr(self, p: *const f32) -> __m512 {
            unsafe { _mm512_loadu_ps(p) }
        }
        #[inline(always)]
        fn sqrt(self, a: __m512) -> __m512 {
            unsafe { _mm512_sqrt_ps(a) }
        }
        #[inline(always)]
        fn add(self, a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_add_ps(a, b) }
        }
        #[inline(always)]
        fn sub(self, a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_sub_ps(a, b) }
        }
        #[inline(always)]
        fn mul(self, a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_mul_ps(a, b) }
        }
        #[inline(always)]
        fn div(self, a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_div_ps(a, b) }
        }
        #[inline(always)]
        fn fma(self, a: __m512, b: __m512, c: __m512) -> __m512 {
            unsafe { _mm512_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        fn max(self, a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_max_ps(a, b) }
        }
        #[inline(always)]
        fn min(self, a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_min_ps(a, b) }
        }
        #[inline(always)]
        fn select_gt(self, a: __m512, b: __m512, x: __m512, y: __m512) -> __m512 {
            unsafe { _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_GT_OQ>(a, b), y, x) }
        }
        #[inline(always)]
        fn keep_nan(self, x: __m512, r: __m512) -> __m512 {
            unsafe { _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x), r, x) }
        }
        #[inline(always)]
        fn round(self, a: __m512) -> __m512 {
            unsafe { _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(a) }
        }
        #[inline(always)]
        fn pow2i(self, n: __m512) -> __m512 {
            unsafe {
                let i = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
                _mm512_castsi512_ps(_mm512_slli_epi32::<23>(i))
            }
        }
        #[inline(always)]
        fn frexp(self, x: __m512) -> (__m512, __m512) {
            unsafe {
                let b = _mm512_castps_si512(x);
                let e = _mm512_sub_epi32(
                    _mm512_and_si512(_mm512_srli_epi32::<23>(b), _mm512_set1_epi32(0xff)),
                    _mm512_set1_epi32(127),
                );
                let m = _mm512_or_si512(
                    _mm512_and_si512(b, _mm512_set1_epi32(0x007f_ffff)),
                    _mm512_set1_epi32(0x3f80_0000),
                );
                (_mm512_castsi512_ps(m), _mm512_cvtepi32_ps(e))
            }
        }
        #[inline(always)]
        fn reduce_sum(self, a: __m512) -> f32 {
            unsafe {
                let lo = _mm512_castps512_ps256(a);
                let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(a)));
                Avx2(()).reduce_sum(_mm256_add_ps(lo, hi))
            }
        }
        #[inline(always)]
        fn reduce_max(self, a: __m512) -> f32 {
            unsafe {
                let lo = _mm512_castps512_ps256(a);
                let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(a)));
                Avx2(()).reduce_max(_mm256_max_ps(lo, hi))
            }
        }
    }
}

/// Measures this machine's single-thread f32 FMA throughput with the current [`Isa`]:
/// 24 independent FMA chains, `iters` steps each. Returns GFLOP/s (2 flops per lane per FMA).
/// Used by benchmarks to express results as a fraction of peak.
pub fn fma_peak_gflops(iters: usize) -> f64 {
    struct Peak(usize);
    impl Kernel for Peak {
        type Output = f64;
        #[inline(always)]
        fn run<S: Simd>(self, s: S) -> f64 {
            let mut acc = [s.zero(); 24];
            let a = s.splat(std::hint::black_box(0.999_999));
            let b = s.splat(std::hint::black_box(1e-7));
            let t = std::time::Instant::now();
            for _ in 0..self.0 {
                for v in acc.iter_mut() {
                    *v = s.fma(*v, a, b);
                }
            }
            let secs = t.elapsed().as_secs_f64();
            let mut out = [0.0f32; 16];
            let mut tot = s.zero();
            for v in acc {
                tot = s.add(tot, v);
            }
            s.store(&mut out, tot);
            std::hint::black_box(out);
            (self.0 * 24 * S::LANES * 2) as f64 / secs / 1e9
        }
    }
    run(Peak(iters))
}
