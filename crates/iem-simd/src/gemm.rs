//! Single-precision matrix multiply `C = α·op(A)·op(B) + β·C + 1·biasᵀ`.
//!
//! Three paths, chosen by shape and instruction set only (never by thread count):
//! - **small**: when `op(B)` fits in about 64 KiB, it is copied once into a zero-padded
//!   row-major buffer (padded to 1, 2 or 4 vectors, as `n` needs) and each block of rows of
//!   `C` (16, 8 or 4 on AVX-512, 8 or 4 elsewhere) is computed straight from `A` (no packing
//!   of `A`). Tiny layer shapes such as 256×2×64 are pure call overhead in
//!   general-purpose GEMMs; this path has almost none. On AVX-512, outputs at most 16
//!   wide with a transposed `A` (a 10-class head's weight gradient) instead keep one
//!   column of `C` per register, reading `B` in place (same bits, 1.6–2.9× faster).
//! - **packed**: the BLIS loop nest. `op(B)` is packed in `KC × NC` blocks of `NR`-wide
//!   panels, `op(A)` in `MC × KC` blocks of `MR`-high panels, and an `MR × NR` register-tile
//!   micro-kernel (AVX2: 6×16, scalar: 4×4) runs over them. (Its 12×32 AVX-512 tile is
//!   compiled but large AVX-512 shapes take the next path.)
//! - **gemm crate** (AVX-512, large shapes): the `gemm` crate's AVX-512 kernels, which
//!   measured 1.5–2× faster than our packed kernel here, called single-threaded on fixed
//!   128×256 tiles of `C` that rayon distributes (see `BENCHMARKS.md`).
//!
//! # Determinism
//! Every element of `C` is one FMA chain over `k` in `KC` blocks, accumulated into `C`
//! block by block in increasing `k`. Threads split the rows of `C` (and nothing else), so
//! the result is bit-identical for any [`Par`].

use crate::isa::{Isa, Par};
use crate::simd::{self, Kernel, Simd};
use rayon::prelude::*;

/// One GEMM call. `op(A)` is `m × k`, `op(B)` is `k × n`; all storage is row-major.
#[derive(Clone, Copy, Debug)]
pub struct Gemm<'a> {
    /// Rows of `C`.
    pub m: usize,
    /// Columns of `C`.
    pub n: usize,
    /// Inner dimension.
    pub k: usize,
    /// `A`: `m × k` when `!trans_a`, else stored `k × m` and used transposed.
    pub a: &'a [f32],
    /// Use `Aᵀ`.
    pub trans_a: bool,
    /// `B`: `k × n` when `!trans_b`, else stored `n × k` and used transposed.
    pub b: &'a [f32],
    /// Use `Bᵀ`.
    pub trans_b: bool,
    /// Scale of the product.
    pub alpha: f32,
    /// Scale of the old `C`; `0` overwrites `C` (old values, even NaN, are ignored).
    pub beta: f32,
    /// Optional row vector of length `n` added to every row of `C`.
    pub bias: Option<&'a [f32]>,
}

impl<'a> Gemm<'a> {
    /// `C = A·B` with `A: m × k`, `B: k × n`.
    pub fn nn(m: usize, k: usize, n: usize, a: &'a [f32], b: &'a [f32]) -> Self {
        Gemm { m, n, k, a, trans_a: false, b, trans_b: false, alpha: 1.0, beta: 0.0, bias: None }
    }
    /// `C = Aᵀ·B` with `A` stored `k × m`, `B: k × n` (weight gradients `Xᵀ·G`).
    pub fn tn(m: usize, k: usize, n: usize, a: &'a [f32], b: &'a [f32]) -> Self {
        Gemm { trans_a: true, ..Gemm::nn(m, k, n, a, b) }
    }
    /// `C = A·Bᵀ` with `A: m × k`, `B` stored `n × k` (a layer `X·Wᵀ`).
    pub fn nt(m: usize, k: usize, n: usize, a: &'a [f32], b: &'a [f32]) -> Self {
        Gemm { trans_b: true, ..Gemm::nn(m, k, n, a, b) }
    }
    /// Sets `β = 1`: accumulate into `C`.
    pub fn accumulate(self) -> Self {
        Gemm { beta: 1.0, ..self }
    }
    /// Adds `bias` to every row.
    pub fn with_bias(self, bias: &'a [f32]) -> Self {
        Gemm { bias: Some(bias), ..self }
    }
    /// Sets `α` and `β`.
    pub fn scaled(self, alpha: f32, beta: f32) -> Self {
        Gemm { alpha, beta, ..self }
    }

    /// Runs the product into `c` (`m × n`, row-major).
    ///
    /// # Panics
    /// If a slice is shorter than its shape says (a programmer error; `iem-tensor` checks
    /// shapes and returns typed errors before calling this).
    pub fn run(&self, c: &mut [f32], par: Par) {
        gemm(self, c, par)
    }
}

/// Runs `g` into `c`; see [`Gemm`].
pub fn gemm(g: &Gemm<'_>, c: &mut [f32], par: Par) {
    let (m, n, k) = (g.m, g.n, g.k);
    assert!(g.a.len() >= m * k, "gemm: A has {} elements, needs {m}×{k}", g.a.len());
    assert!(g.b.len() >= k * n, "gemm: B has {} elements, needs {k}×{n}", g.b.len());
    assert!(c.len() >= m * n, "gemm: C has {} elements, needs {m}×{n}", c.len());
    if let Some(b) = g.bias {
        assert_eq!(b.len(), n, "gemm: bias has {} elements, C has {n} columns", b.len());
    }
    if m == 0 || n == 0 {
        return;
    }
    let c = &mut c[..m * n];
    if k == 0 {
        epilogue_first(g, c, n);
        return;
    }
    let isa = Isa::current();
    let (mr, nv) = tile_shape(isa.lanes());
    let nr = nv * isa.lanes();
    if g.k * g.n.next_multiple_of(SMALL_NV * isa.lanes()) <= SMALL_B_FLOATS {
        small(isa, g, c, par);
    } else if isa == Isa::Avx512 {
        tiled_gemm_crate(g, c, par);
    } else {
        packed(isa, mr, nr, g, c, par);
    }
}

/// `C ← β·C + bias` (each row; `β = 0` ignores what `C` held, NaN included), the part of
/// the epilogue applied before the product is accumulated. One loop per case, so that each
/// vectorises (with a branch per element it compiled to scalar code); the arithmetic is
/// that of the per-element form (`0 + b`, `β·c + 0`).
#[inline(always)]
fn epilogue_first(g: &Gemm<'_>, c: &mut [f32], n: usize) {
    let beta = g.beta;
    for row in c.chunks_exact_mut(n) {
        match (beta == 0.0, g.bias) {
            (true, Some(b)) => row.iter_mut().zip(b).for_each(|(x, &bj)| *x = 0.0 + bj),
            (true, None) => row.fill(0.0),
            (false, Some(b)) => row.iter_mut().zip(b).for_each(|(x, &bj)| *x = beta * *x + bj),
            (false, None) => row.iter_mut().for_each(|x| *x = beta * *x + 0.0),
        }
    }
}

/// [`epilogue_first`] compiled for AVX-512 (the default build's code for it is SSE: a
/// 128 KB pass of stores per layer output at 16 bytes a store).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn epilogue_first_avx512(g: &Gemm<'_>, c: &mut [f32], n: usize) {
    epilogue_first(g, c, n)
}

/// Tile of `C` handed to one call of the `gemm` crate: fixed, so thread count never changes
/// which call computes an element.
const TILE_M: usize = 128;
const TILE_N: usize = 256;

/// The AVX-512 large-shape path: the `gemm` crate (built with `x86-v4`), single-threaded,
/// on fixed `TILE_M × TILE_N` tiles of `C` that rayon distributes. The epilogue (β, bias)
/// is applied to `C` first and the product accumulated into it.
fn tiled_gemm_crate(g: &Gemm<'_>, c: &mut [f32], par: Par) {
    let (m, n, k) = (g.m, g.n, g.k);
    let read_dst = g.beta != 0.0 || g.bias.is_some();
    // Without β or bias the `gemm` crate overwrites C (`read_dst` false): no pass over C
    // first (for a weight gradient of 784 inputs that pass alone wrote 800 KB a step).
    if read_dst {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: this path runs only when `Isa::current()` is AVX-512.
        unsafe {
            epilogue_first_avx512(g, c, n)
        };
        #[cfg(not(target_arch = "x86_64"))]
        epilogue_first(g, c, n);
    }
    // Strides (in elements) of op(A)[i, p] and op(B)[p, j].
    let (a_rs, a_cs) = if g.trans_a { (1isize, m as isize) } else { (k as isize, 1isize) };
    let (b_rs, b_cs) = if g.trans_b { (1isize, k as isize) } else { (n as isize, 1isize) };
    let call = CrateCall { g, read_dst, a_rs, a_cs, b_rs, b_cs };
    let tiles_n = n.div_ceil(TILE_N);
    let run_tile = |i0: usize, rows: &mut [f32]| {
        let mt = rows.len() / n;
        for tj in 0..tiles_n {
            let j0 = tj * TILE_N;
            let nt = (n - j0).min(TILE_N);
            // SAFETY: `rows` holds rows `i0..i0+mt` of `C` (row stride n), so the tile's
            // columns `j0..j0+nt` start at `rows[j0]` and stay inside it.
            unsafe { call.tile(i0, mt, j0, nt, rows.as_mut_ptr().add(j0)) };
        }
    };
    let parallel = par.degree() > 1 && m * n * k >= PAR_MIN_FLOPS;
    // One row tile (a row block's forward or input-gradient product in training) of a
    // product worth splitting: two column halves, so that a thread left idle — its own
    // work done, or the other's vCPU descheduled — can take one. The crate packs each
    // half's share of `B` only. Chosen by the shape alone, never by the thread count: the
    // halves do not always give one call's bits (the crate's edge kernels round
    // differently), but they are the same calls on 1 thread or 2.
    if m <= TILE_M && n >= 2 * COL_HALF_MIN && m * n * k >= PAR_MIN_FLOPS {
        let half = (n / 2).next_multiple_of(16).min(n - 1);
        let cp = SendPtr(c.as_mut_ptr());
        let run_cols = |j0: usize, nt: usize| {
            let cp = &cp;
            // SAFETY: the two calls write the disjoint column ranges `0..half` and
            // `half..n` of the m × n matrix `C` (row stride n), which `c` holds.
            unsafe { call.tile(0, m, j0, nt, cp.0.add(j0)) };
        };
        if parallel {
            rayon::join(|| run_cols(0, half), || run_cols(half, n - half));
        } else {
            run_cols(0, half);
            run_cols(half, n - half);
        }
        return;
    }
    for_row_blocks(c, n, TILE_M, parallel, run_tile);
}

/// One product of [`tiled_gemm_crate`] as calls of the `gemm` crate on tiles of `C`:
/// `op(A)[i, p]` at `a[i·a_rs + p·a_cs]`, `op(B)[p, j]` at `b[p·b_rs + j·b_cs]`.
struct CrateCall<'g, 'a> {
    g: &'g Gemm<'a>,
    read_dst: bool,
    a_rs: isize,
    a_cs: isize,
    b_rs: isize,
    b_cs: isize,
}

impl CrateCall<'_, '_> {
    /// Rows `i0..i0+mt`, columns `j0..j0+nt` of `C` (row stride `n`), at `dst`.
    ///
    /// # Safety
    /// `dst` points at element `(i0, j0)` of a buffer holding that tile with row stride `n`,
    /// and no other thread writes the tile meanwhile. `A` and `B` stay inside `g.a` and
    /// `g.b`, whose lengths `gemm` asserted (≥ m·k and k·n).
    unsafe fn tile(&self, i0: usize, mt: usize, j0: usize, nt: usize, dst: *mut f32) {
        let g = self.g;
        // SAFETY: the caller's contract, and tile bounds inside `m × n`.
        unsafe {
            gemm::gemm(
                mt,
                nt,
                g.k,
                dst,
                1,
                g.n as isize,
                self.read_dst,
                g.a.as_ptr().offset(i0 as isize * self.a_rs),
                self.a_cs,
                self.a_rs,
                g.b.as_ptr().offset(j0 as isize * self.b_cs),
                self.b_cs,
                self.b_rs,
                1.0,
                g.alpha,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    }
}

/// Products with a single row tile and at least twice this many columns run as two column
/// halves (see [`tiled_gemm_crate`]).
const COL_HALF_MIN: usize = 64;

/// `C`'s base pointer, shared by the calls that write its disjoint column halves.
pub(crate) struct SendPtr(pub(crate) *mut f32);
// SAFETY: only used to hand disjoint tiles of one `&mut [f32]` to rayon's threads, which
// `rayon::join` finishes before the slice's borrow ends.
unsafe impl Send for SendPtr {}
// SAFETY: as for `Send`; the tiles never overlap.
unsafe impl Sync for SendPtr {}

/// Register tile `(MR, NV)` for a lane count (NR = NV · lanes).
fn tile_shape(lanes: usize) -> (usize, usize) {
    match lanes {
        16 => (12, 2),
        8 => (6, 2),
        _ => (4, 4),
    }
}

/// Vectors per row of the small path's widest tile.
const SMALL_NV: usize = 4;
/// Rows of that tile on AVX-512.
const SMALL_MR_WIDE: usize = 4;

/// `op(B)` up to this many floats (after padding) takes the small path.
const SMALL_B_FLOATS: usize = 16 * 1024;
const KC: usize = 512;
const NC: usize = 2048;
const MC_MAX: usize = 144;
/// Below this many multiply-adds a call stays on one thread.
pub(crate) const PAR_MIN_FLOPS: usize = 1 << 22;

/// Element `(i, p)` of `op(A)`: pointer strides (row, k).
#[inline(always)]
fn a_strides(g: &Gemm<'_>) -> (usize, usize) {
    if g.trans_a { (1, g.m) } else { (g.k, 1) }
}

/// The `MR × NV·LANES` register tile: `acc += Σ_p a(i, p) · b(p, j)`.
///
/// # Safety
/// For `p < kc`, `i < MR`, `a.add(i*a_rs + p*a_ks)` and `b.add(p*b_ks .. p*b_ks + NV*LANES)`
/// must be readable.
#[inline(always)]
unsafe fn micro<S: Simd, const MR: usize, const NV: usize>(
    s: S,
    kc: usize,
    a: *const f32,
    a_rs: usize,
    a_ks: usize,
    b: *const f32,
    b_ks: usize,
) -> [[S::V; NV]; MR] {
    let mut acc = [[s.zero(); NV]; MR];
    for p in 0..kc {
        // SAFETY: in bounds by this function's contract.
        unsafe {
            let bp = b.add(p * b_ks);
            let mut bv = [s.zero(); NV];
            for v in 0..NV {
                bv[v] = s.load_ptr(bp.add(v * S::LANES));
            }
            let ap = a.add(p * a_ks);
            for i in 0..MR {
                let av = s.splat(*ap.add(i * a_rs));
                for v in 0..NV {
                    acc[i][v] = s.fma(av, bv[v], acc[i][v]);
                }
            }
        }
    }
    acc
}

/// Writes a tile into `c` rows `[0, rows)`, columns `[col0, col0 + cols)`.
/// `first`: this is the first `k` block (apply `β`, bias); otherwise accumulate.
#[inline(always)]
fn store_tile<S: Simd, const MR: usize, const NV: usize>(
    s: S,
    acc: &[[S::V; NV]; MR],
    c: &mut [f32],
    ldc: usize,
    rows: usize,
    col0: usize,
    cols: usize,
    g: &Gemm<'_>,
    first: bool,
) {
    let l = S::LANES;
    let alpha = s.splat(g.alpha);
    let beta = s.splat(g.beta);
    if first && rows >= MR && cols == NV * l {
        // A whole tile on its first k block: no partial vectors, no branches per vector.
        // The same operations, in the same order, as the general path below.
        let mut bias_v = [s.zero(); NV];
        if let Some(bias) = g.bias {
            for (v, b) in bias_v.iter_mut().enumerate() {
                *b = s.load(&bias[col0 + v * l..]);
            }
        }
        for (i, acc_row) in acc.iter().enumerate() {
            let row = &mut c[i * ldc + col0..i * ldc + col0 + cols];
            for v in 0..NV {
                let mut base =
                    if g.beta == 0.0 { s.zero() } else { s.mul(beta, s.load(&row[v * l..])) };
                if g.bias.is_some() {
                    base = s.add(base, bias_v[v]);
                }
                s.store(&mut row[v * l..], s.fma(alpha, acc_row[v], base));
            }
        }
        return;
    }
    for i in 0..rows.min(MR) {
        let row = &mut c[i * ldc + col0..i * ldc + col0 + cols];
        for v in 0..NV {
            let j = v * l;
            if j >= cols {
                break;
            }
            let w = (cols - j).min(l);
            let full = w == l;
            let old = if full { s.load(&row[j..]) } else { s.load_partial(&row[j..j + w], 0.0) };
            let base = if first {
                let mut b = if g.beta == 0.0 { s.zero() } else { s.mul(beta, old) };
                if let Some(bias) = g.bias {
                    let bb = &bias[col0 + j..col0 + j + w];
                    b = s.add(b, if full { s.load(bb) } else { s.load_partial(bb, 0.0) });
                }
                b
            } else {
                old
            };
            let out = s.fma(alpha, acc[i][v], base);
            if full {
                s.store(&mut row[j..], out);
            } else {
                s.store_partial(&mut row[j..j + w], out);
            }
        }
    }
}

/// Splits the rows of `c` into blocks of `block_rows` (whole rows) and runs `f(first_row,
/// block)` on each, in parallel when `par` and the work allow. Block boundaries depend only
/// on `block_rows`, and each row's arithmetic only on its own data.
fn for_row_blocks(
    c: &mut [f32],
    ldc: usize,
    block_rows: usize,
    parallel: bool,
    f: impl Fn(usize, &mut [f32]) + Sync + Send,
) {
    if parallel {
        c.par_chunks_mut(block_rows * ldc)
            .enumerate()
            .for_each(|(bi, blk)| f(bi * block_rows, blk));
    } else {
        for (bi, blk) in c.chunks_mut(block_rows * ldc).enumerate() {
            f(bi * block_rows, blk);
        }
    }
}

fn small(isa: Isa, g: &Gemm<'_>, c: &mut [f32], par: Par) {
    let (m, n, k) = (g.m, g.n, g.k);
    // As few vectors per tile row as cover `n` (up to SMALL_NV), so that narrow outputs
    // (a 4-class head, a 2-D input's weight gradient) are not padded to 4 vectors. The
    // tile width never changes the order of any element's sum.
    let nv = match n.div_ceil(isa.lanes()) {
        0 | 1 => 1,
        2 => 2,
        _ => SMALL_NV,
    };
    let parallel = par.degree() > 1 && m * n * k >= PAR_MIN_FLOPS;
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 && nv == 1 && g.trans_a {
        // SAFETY: AVX-512 is the running instruction set; `A`, `B` and `C` hold what
        // `gemm` asserted, `n ≤ 16`, `A` is transposed.
        for_row_blocks(c, n, 64, parallel, |row0, cblk| unsafe { narrow(g, row0, cblk) });
        return;
    }
    small_tiles(isa, g, c, parallel, nv);
}

/// The small path's row tiles (every shape [`narrow`] does not take).
fn small_tiles(isa: Isa, g: &Gemm<'_>, c: &mut [f32], parallel: bool, nv: usize) {
    let (n, k) = (g.n, g.k);
    let nr = nv * isa.lanes();
    let n_pad = n.next_multiple_of(nr);
    // op(B) as a zero-padded k × n_pad row-major block.
    let mut bp = vec![0.0f32; k * n_pad];
    if g.trans_b {
        // B is stored n × k: transpose it in 16 × 16 blocks, so that both the reads and
        // the writes of a block stay within a few cache lines.
        const T: usize = 16;
        for j0 in (0..n).step_by(T) {
            for p0 in (0..k).step_by(T) {
                for j in j0..(j0 + T).min(n) {
                    let src = &g.b[j * k + p0..j * k + (p0 + T).min(k)];
                    for (dp, &v) in src.iter().enumerate() {
                        bp[(p0 + dp) * n_pad + j] = v;
                    }
                }
            }
        }
    } else {
        // Row by row in vectors (a `copy_from_slice` per row was a `memcpy` call each:
        // most of a 16×256×10 product).
        simd::run_with(isa, PadRows { src: &g.b[..k * n], n, dst: &mut bp, n_pad });
    }
    let bp = &bp[..];
    // Rows per register tile: enough independent accumulators to hide the FMA latency
    // (AVX-512 has 32 vector registers, the others 16).
    let wide = isa == Isa::Avx512;
    for_row_blocks(c, n, 64, parallel, |row0, cblk| match (nv, wide) {
        (1, true) => simd::run_with(isa, SmallBlock::<16, 1> { g, bp, n_pad, row0, c: cblk }),
        (1, false) => simd::run_with(isa, SmallBlock::<8, 1> { g, bp, n_pad, row0, c: cblk }),
        (2, true) => simd::run_with(isa, SmallBlock::<8, 2> { g, bp, n_pad, row0, c: cblk }),
        (2, false) => simd::run_with(isa, SmallBlock::<4, 2> { g, bp, n_pad, row0, c: cblk }),
        (_, true) => simd::run_with(
            isa,
            SmallBlock::<SMALL_MR_WIDE, SMALL_NV> { g, bp, n_pad, row0, c: cblk },
        ),
        (_, false) => {
            simd::run_with(isa, SmallBlock::<4, SMALL_NV> { g, bp, n_pad, row0, c: cblk })
        }
    });
}

/// Copies the rows of `src` (`n` wide) into the rows of `dst` (`n_pad` wide), in vectors.
struct PadRows<'a> {
    src: &'a [f32],
    n: usize,
    dst: &'a mut [f32],
    n_pad: usize,
}

impl Kernel for PadRows<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let PadRows { src, n, dst, n_pad } = self;
        let l = S::LANES;
        for (d, r) in dst.chunks_exact_mut(n_pad).zip(src.chunks_exact(n)) {
            let mut j = 0;
            while j + l <= n {
                s.store(&mut d[j..], s.load(&r[j..]));
                j += l;
            }
            if j < n {
                s.store_partial(&mut d[j..n], s.load_partial(&r[j..], 0.0));
            }
        }
    }
}

/// Rows `row0..` of `C` (the block `c`) from unpacked `A` and the padded copy of `op(B)`.
struct SmallBlock<'a, 'b, const MR: usize, const NV: usize> {
    g: &'a Gemm<'a>,
    bp: &'a [f32],
    n_pad: usize,
    row0: usize,
    c: &'b mut [f32],
}

impl<const MR: usize, const NV: usize> Kernel for SmallBlock<'_, '_, MR, NV> {
    type Output = ();
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let SmallBlock { g, bp, n_pad, row0, c } = self;
        let (n, k) = (g.n, g.k);
        let nr = NV * S::LANES;
        let (a_rs, a_ks) = a_strides(g);
        let rows_here = c.len() / n;
        let mut a_tail = Vec::new();
        let mut i = 0;
        while i < rows_here {
            let r = (rows_here - i).min(MR);
            let gi = row0 + i;
            // Pointer to A(gi, 0) with strides, or a zero-padded copy of the last rows.
            let (ap, rs, ks) = if r == MR {
                (g.a[gi * a_rs..].as_ptr(), a_rs, a_ks)
            } else {
                a_tail.clear();
                a_tail.resize(MR * k, 0.0);
                for ii in 0..r {
                    for p in 0..k {
                        a_tail[ii * k + p] = g.a[(gi + ii) * a_rs + p * a_ks];
                    }
                }
                (a_tail.as_ptr(), k, 1)
            };
            let mut j = 0;
            while j < n {
                let w = (n - j).min(nr);
                // SAFETY: A rows gi..gi+MR exist (or the padded copy); B rows are n_pad wide
                // and j + nr <= n_pad.
                let acc = unsafe { micro::<S, MR, NV>(s, k, ap, rs, ks, bp[j..].as_ptr(), n_pad) };
                store_tile::<S, MR, NV>(s, &acc, &mut c[i * n..], n, r, j, w, g, true);
                j += nr;
            }
            i += MR;
        }
    }
}

/// The small path on AVX-512 for narrow outputs (`n ≤ 16`, such as a 10-class head) of a
/// transposed `A` (`A` stored `k × m`: a weight gradient `Xᵀ·G`): rows `row0..` of `C`
/// (the block `c`).
///
/// With one output vector per row, the row-tile kernel fills `n` of 16 lanes and loads one
/// element of `A` per FMA. Here a register holds one *column* of `C` for 16 rows instead:
/// the 16 consecutive values of `op(A)`'s column `p` (one load) meet one broadcast
/// `op(B)[p, j]` per output column, every lane useful, and `op(B)` is read where it lies
/// (no padded copy). The 16 × `n` result is transposed in registers for the epilogue. Each
/// element is the same FMA chain over `p` from zero, then the same epilogue, as [`micro`]
/// and [`store_tile`] compute: the bits do not change. (For a row-major `A` the same idea
/// needs a 16 × 16 transpose per 16 steps of `p`, which measured no faster than the
/// row tiles.)
///
/// # Safety
/// AVX-512F must be available; `g.trans_a`, `g.n ≤ 16`; `c` holds whole rows of `C`
/// starting at row `row0`, and `g`'s slices hold their shapes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn narrow(g: &Gemm<'_>, row0: usize, c: &mut [f32]) {
    // One copy per column count, so that the accumulators live in registers.
    macro_rules! by_n {
        ($($nj:literal)*) => {
            match g.n {
                $($nj => unsafe { narrow_n::<$nj>(g, row0, c) },)*
                _ => unreachable!("narrow: n = {} > 16", g.n),
            }
        };
    }
    by_n!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16)
}

/// [`narrow`] for `n = NJ`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn narrow_n<const NJ: usize>(g: &Gemm<'_>, row0: usize, c: &mut [f32]) {
    use std::arch::x86_64::*;
    let (m, k) = (g.m, g.k);
    assert!(g.trans_a && g.n == NJ && c.len().is_multiple_of(NJ));
    let rows_here = c.len() / NJ;
    assert!(row0 + rows_here <= m && g.a.len() >= m * k && g.b.len() >= k * NJ);
    let mask = |w: usize| -> __mmask16 { ((1u32 << w) - 1) as __mmask16 };
    // op(B)[p, j] at b[p·b_ps + j·b_js].
    let (b_ps, b_js) = if g.trans_b { (1, k) } else { (NJ, 1) };
    let (a, b) = (g.a.as_ptr(), g.b.as_ptr());
    let (alpha, beta) = (_mm512_set1_ps(g.alpha), _mm512_set1_ps(g.beta));
    let nm = mask(NJ);
    // SAFETY: `gemm` asserted the bias holds n floats.
    let bias = g.bias.map(|v| unsafe { _mm512_maskz_loadu_ps(nm, v.as_ptr()) });
    for i in (0..rows_here).step_by(16) {
        let r = (rows_here - i).min(16);
        let gi = row0 + i;
        let mut acc = [_mm512_setzero_ps(); NJ];
        for p in 0..k {
            // SAFETY: row p < k of A (stored k × m), columns gi .. gi + r ≤ m (the lanes
            // past r masked); op(B)[p, j] for j < NJ lies inside B (k · NJ floats).
            unsafe {
                let col = _mm512_maskz_loadu_ps(mask(r), a.add(p * m + gi));
                for (j, acc_j) in acc.iter_mut().enumerate() {
                    let bj = _mm512_set1_ps(*b.add(p * b_ps + j * b_js));
                    *acc_j = _mm512_fmadd_ps(col, bj, *acc_j);
                }
            }
        }
        // Back to rows, then store_tile's epilogue: α·acc + (β·old or 0) + bias.
        let mut cols = [_mm512_setzero_ps(); 16];
        cols[..NJ].copy_from_slice(&acc);
        let rows = transpose16(cols);
        for (q, v) in rows.iter().enumerate().take(r) {
            let dst = c[(i + q) * NJ..(i + q + 1) * NJ].as_mut_ptr();
            let mut base = if g.beta == 0.0 {
                _mm512_setzero_ps()
            } else {
                // SAFETY: `dst` starts a row of NJ floats of `c`.
                _mm512_mul_ps(beta, unsafe { _mm512_maskz_loadu_ps(nm, dst) })
            };
            if let Some(bv) = bias {
                base = _mm512_add_ps(base, bv);
            }
            // SAFETY: as above.
            unsafe { _mm512_mask_storeu_ps(dst, nm, _mm512_fmadd_ps(alpha, *v, base)) };
        }
    }
}

fn packed(isa: Isa, mr: usize, nr: usize, g: &Gemm<'_>, c: &mut [f32], par: Par) {
    let (m, n, k) = (g.m, g.n, g.k);
    let threads = par.degree();
    let parallel = threads > 1 && m * n * k >= PAR_MIN_FLOPS;
    // Row blocks: at most MC_MAX, and at least `threads` of them when the rows allow.
    let mc = if parallel {
        m.div_ceil(threads).next_multiple_of(mr).clamp(mr, MC_MAX.next_multiple_of(mr))
    } else {
        MC_MAX.next_multiple_of(mr)
    };
    let nc_max = NC.min(n.next_multiple_of(nr));
    let mut bpack = vec![0.0f32; KC * nc_max];
    let mut jc = 0;
    while jc < n {
        let nc = (n - jc).min(NC);
        let panels = nc.div_ceil(nr);
        let mut pc = 0;
        while pc < k {
            let kc = (k - pc).min(KC);
            pack_b(g, &mut bpack[..panels * kc * nr], jc, nc, pc, kc, nr);
            let bpack = &bpack[..panels * kc * nr];
            for_row_blocks(c, n, mc, parallel, |row0, cblk| {
                simd::run_with(isa, PackedBlock { g, bpack, jc, nc, pc, kc, row0, c: cblk })
            });
            pc += kc;
        }
        jc += nc;
    }
}

/// One `MC`-row block of `C` for one `(jc, pc)` step: packs its `A` block, then runs the
/// micro-kernel over every `(NR panel, MR panel)` pair.
struct PackedBlock<'a, 'b> {
    g: &'a Gemm<'a>,
    bpack: &'a [f32],
    jc: usize,
    nc: usize,
    pc: usize,
    kc: usize,
    row0: usize,
    c: &'b mut [f32],
}

impl Kernel for PackedBlock<'_, '_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        if S::LANES == 16 {
            self.go::<S, 12, 2>(s)
        } else if S::LANES == 8 {
            self.go::<S, 6, 2>(s)
        } else {
            self.go::<S, 4, 4>(s)
        }
    }
}

impl PackedBlock<'_, '_> {
    #[inline(always)]
    fn go<S: Simd, const MR: usize, const NV: usize>(self, s: S) {
        let PackedBlock { g, bpack, jc, nc, pc, kc, row0, c } = self;
        let n = g.n;
        let nr = NV * S::LANES;
        let (a_rs, a_ks) = a_strides(g);
        let rows = c.len() / n;
        let apanels = rows.div_ceil(MR);
        let mut apack = vec![0.0f32; apanels * kc * MR];
        for ip in 0..apanels {
            let dst = &mut apack[ip * kc * MR..(ip + 1) * kc * MR];
            let r = (rows - ip * MR).min(MR);
            let base = (row0 + ip * MR) * a_rs + pc * a_ks;
            for p in 0..kc {
                let d = &mut dst[p * MR..p * MR + r];
                for (ii, x) in d.iter_mut().enumerate() {
                    *x = g.a[base + ii * a_rs + p * a_ks];
                }
            }
        }
        let panels = nc.div_ceil(nr);
        for jp in 0..panels {
            let bpanel = &bpack[jp * kc * nr..(jp + 1) * kc * nr];
            let w = (nc - jp * nr).min(nr);
            for ip in 0..apanels {
                let apanel = &apack[ip * kc * MR..(ip + 1) * kc * MR];
                let r = (rows - ip * MR).min(MR);
                let c0 = ip * MR * n + jc + jp * nr;
                for ii in 0..r {
                    simd::prefetch(c[c0 + ii * n..].as_ptr());
                    simd::prefetch(c[c0 + ii * n + w - 1..].as_ptr());
                }
                // SAFETY: both panels hold exactly kc steps of MR / nr values.
                let acc = unsafe {
                    micro::<S, MR, NV>(s, kc, apanel.as_ptr(), 1, MR, bpanel.as_ptr(), nr)
                };
                store_tile::<S, MR, NV>(
                    s,
                    &acc,
                    &mut c[ip * MR * n..],
                    n,
                    r,
                    jc + jp * nr,
                    w,
                    g,
                    pc == 0,
                );
            }
        }
    }
}

/// Packs `op(B)[pc..pc+kc, jc..jc+nc]` into `nr`-wide panels, zero-padded.
fn pack_b(g: &Gemm<'_>, dst: &mut [f32], jc: usize, nc: usize, pc: usize, kc: usize, nr: usize) {
    let (n, k) = (g.n, g.k);
    for (jp, panel) in dst.chunks_exact_mut(kc * nr).enumerate() {
        let j0 = jc + jp * nr;
        let w = (nc - jp * nr).min(nr);
        for p in 0..kc {
            let row = &mut panel[p * nr..(p + 1) * nr];
            if g.trans_b {
                for jj in 0..w {
                    row[jj] = g.b[(j0 + jj) * k + pc + p];
                }
            } else {
                row[..w].copy_from_slice(&g.b[(pc + p) * n + j0..(pc + p) * n + j0 + w]);
            }
            row[w..].fill(0.0);
        }
    }
}

/// Scalar f64 reference `C = α·op(A)·op(B) + β·C + bias`, for tests.
pub fn gemm_reference(g: &Gemm<'_>, c: &mut [f64]) {
    let (m, n, k) = (g.m, g.n, g.k);
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0f64;
            for p in 0..k {
                let a = if g.trans_a { g.a[p * m + i] } else { g.a[i * k + p] };
                let b = if g.trans_b { g.b[j * k + p] } else { g.b[p * n + j] };
                acc += a as f64 * b as f64;
            }
            let old = if g.beta == 0.0 { 0.0 } else { g.beta as f64 * c[i * n + j] };
            c[i * n + j] = g.alpha as f64 * acc + old + g.bias.map_or(0.0, |b| b[j] as f64);
        }
    }
}

/// Output rows per task of [`transpose`] times the row length, in elements.
const TRANSPOSE_CHUNK: usize = 1 << 15;

/// `dst = srcᵀ` for a row-major `rows × cols` matrix `src` (`dst` is `cols × rows`).
///
/// A layer computes `X·Wᵀ` as an `nt` product, whose large-shape path transposes `W`
/// into its packing buffer on every call; a trainer that keeps `Wᵀ` runs it as `nn`, which
/// only copies (`iem-train` does so with row blocks). On AVX-512, 16 × 16 blocks are
/// transposed in registers.
///
/// Output rows are split into fixed chunks over threads; the result is a copy, so it is the
/// same for any [`Par`].
///
/// # Panics
/// If `src` or `dst` does not hold `rows · cols` elements.
///
/// # Examples
/// ```
/// use iem_simd::{gemm::transpose, Par};
/// let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]; // 2 × 3
/// let mut t = [0.0; 6];
/// transpose(&a, 2, 3, &mut t, Par::Seq);
/// assert_eq!(t, [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]); // 3 × 2
/// ```
pub fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32], par: Par) {
    assert_eq!(
        src.len(),
        rows * cols,
        "transpose: src has {} elements, not {rows}×{cols}",
        src.len()
    );
    assert_eq!(
        dst.len(),
        rows * cols,
        "transpose: dst has {} elements, not {cols}×{rows}",
        dst.len()
    );
    if rows == 0 || cols == 0 {
        return;
    }
    let isa = Isa::current();
    // Whole 16-row groups per task (the AVX-512 path transposes 16 × 16 blocks).
    let per_task = ((TRANSPOSE_CHUNK / rows) / 16 * 16).max(16) * rows;
    let body = |(i, out): (usize, &mut [f32])| {
        transpose_rows(isa, src, rows, cols, i * (per_task / rows), out)
    };
    if par.degree() > 1 && dst.len() > per_task {
        dst.par_chunks_mut(per_task).enumerate().for_each(body);
    } else {
        dst.chunks_mut(per_task).enumerate().for_each(body);
    }
}

/// Rows `p0..p0 + out.len() / rows` of `srcᵀ` into `out`.
fn transpose_rows(isa: Isa, src: &[f32], rows: usize, cols: usize, p0: usize, out: &mut [f32]) {
    let np = out.len() / rows;
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 && cols <= (i32::MAX as usize) / 16 {
        // SAFETY: AVX-512 is available (`isa` is the running one); the bounds are the
        // function's contract, checked by `transpose`.
        unsafe { transpose_rows_avx512(src, rows, cols, p0, out) };
        return;
    }
    let _ = isa;
    // 16 source rows at a time: 16 sequential read streams, contiguous writes.
    for j0 in (0..rows).step_by(16) {
        let je = (j0 + 16).min(rows);
        for p in 0..np {
            for j in j0..je {
                out[p * rows + j] = src[j * cols + p0 + p];
            }
        }
    }
}

/// [`transpose_rows`] on AVX-512: 16 × 16 blocks transposed in registers, the ragged
/// edges element by element.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transpose_rows_avx512(src: &[f32], rows: usize, cols: usize, p0: usize, out: &mut [f32]) {
    use std::arch::x86_64::*;
    let np = out.len() / rows;
    assert!(p0 + np <= cols && src.len() == rows * cols && out.len() == np * rows);
    let (full_j, full_p) = (rows / 16 * 16, np / 16 * 16);
    for pb in (0..full_p).step_by(16) {
        for j0 in (0..full_j).step_by(16) {
            let mut r = [_mm512_setzero_ps(); 16];
            for (i, v) in r.iter_mut().enumerate() {
                // SAFETY: row j0 + i < rows, columns p0 + pb .. + 16 ≤ p0 + np ≤ cols.
                *v = unsafe { _mm512_loadu_ps(src.as_ptr().add((j0 + i) * cols + p0 + pb)) };
            }
            let t = transpose16(r);
            for (i, v) in t.into_iter().enumerate() {
                // SAFETY: output row pb + i < np, columns j0 .. j0 + 16 ≤ rows.
                unsafe { _mm512_storeu_ps(out.as_mut_ptr().add((pb + i) * rows + j0), v) };
            }
        }
    }
    // The ragged edges: output rows past full_p for every column, and columns past full_j.
    for p in 0..np {
        let js = if p < full_p { full_j } else { 0 };
        for j in js..rows {
            out[p * rows + j] = src[j * cols + p0 + p];
        }
    }
}

/// Transposes the 16 × 16 block held in `r` (row i in `r[i]`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn transpose16(r: [std::arch::x86_64::__m512; 16]) -> [std::arch::x86_64::__m512; 16] {
    use std::arch::x86_64::*;
    // Interleave pairs of rows, then pairs of pairs, then 128-bit lanes twice.
    let mut t = [_mm512_setzero_ps(); 16];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    let mut u = [_mm512_setzero_ps(); 16];
    for i in 0..4 {
        let (a, b, c, d) = (t[4 * i], t[4 * i + 1], t[4 * i + 2], t[4 * i + 3]);
        let lo = |x: __m512, y: __m512| {
            _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(x), _mm512_castps_pd(y)))
        };
        let hi = |x: __m512, y: __m512| {
            _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(x), _mm512_castps_pd(y)))
        };
        u[4 * i] = lo(a, c);
        u[4 * i + 1] = hi(a, c);
        u[4 * i + 2] = lo(b, d);
        u[4 * i + 3] = hi(b, d);
    }
    let mut v = [_mm512_setzero_ps(); 16];
    for h in 0..2 {
        for i in 0..4 {
            v[8 * h + i] = _mm512_shuffle_f32x4::<0x88>(u[8 * h + i], u[8 * h + 4 + i]);
            v[8 * h + 4 + i] = _mm512_shuffle_f32x4::<0xdd>(u[8 * h + i], u[8 * h + 4 + i]);
        }
    }
    let mut o = [_mm512_setzero_ps(); 16];
    for i in 0..8 {
        o[i] = _mm512_shuffle_f32x4::<0x88>(v[i], v[8 + i]);
        o[8 + i] = _mm512_shuffle_f32x4::<0xdd>(v[i], v[8 + i]);
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value stream spread over several binades, so that any change in the order of an
    /// element's sum shows in its bits.
    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let u = (x >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
                u * [1.0, 3.7e-3, 41.0, 0.37][(x & 3) as usize]
            })
            .collect()
    }

    /// The narrow-output kernel gives the row tiles' bits: every `n ≤ 16`, ragged row
    /// counts, both layouts of `B`, `α`, `β` (with NaN in `C` when `β = 0`) and bias.
    #[test]
    fn narrow_matches_the_row_tiles_bit_for_bit() {
        if Isa::current() != Isa::Avx512 {
            return; // the narrow kernel is AVX-512 only
        }
        let mut seed = 0;
        for m in [1usize, 5, 15, 16, 17, 33, 64, 65, 130] {
            for k in [1usize, 2, 7, 16, 31, 128] {
                for n in 1..=16 {
                    for (tb, alpha, beta, bias) in
                        [(false, 1.0, 0.0, false), (true, -0.7, 0.5, true), (false, 1.3, 1.0, true)]
                    {
                        seed += 1;
                        let a = values(m * k, seed);
                        let b = values(k * n, seed + 7);
                        let bv = values(n, seed + 11);
                        let mut c0 = values(m * n, seed + 13);
                        if beta == 0.0 {
                            c0[0] = f32::NAN;
                        }
                        let g = Gemm {
                            m,
                            n,
                            k,
                            a: &a,
                            trans_a: true,
                            b: &b,
                            trans_b: tb,
                            alpha,
                            beta,
                            bias: bias.then_some(&bv[..]),
                        };
                        let mut want = c0.clone();
                        small_tiles(Isa::Avx512, &g, &mut want, false, 1);
                        let mut got = c0.clone();
                        small(Isa::Avx512, &g, &mut got, Par::Seq);
                        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                        assert_eq!(
                            bits(&got),
                            bits(&want),
                            "{m}×{k}×{n} tb={tb} α={alpha} β={beta} bias={bias}"
                        );
                    }
                }
            }
        }
    }
}
