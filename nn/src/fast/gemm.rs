//! Matrix product for the CPU fast path, BLIS-style: packed `MR×KC` panels of A and `KC×NR`
//! panels of B, a 6×16 register-blocked micro-kernel (x86-64 AVX2+FMA for `f32`: 12 ymm
//! accumulators, 2 loads and 6 broadcasts per step; a portable kernel otherwise, which is also
//! the `f64` path of the gradient checks), threaded over row blocks × column panels with rayon.
//!
//! `C[m×n] (+)= A[m×k] · B[k×n]`. A and B are read through arbitrary element strides, so a
//! transposed weight or one attention head inside a `[B, S, W]` activation costs no copy.
//! C has unit column stride and row stride `ldc`.
//!
//! Why not the `gemm` crate dfdx calls: on the project's 2-core AMD EPYC (Zen 3, AVX2) it
//! runs ViT-B/16's shapes at about 45 GFLOP/s per core, 58 % of the FMA peak; this kernel
//! reaches 66–72 GFLOP/s per core (85–92 %). Numbers: `benches/RESULTS.md`.

use super::Real;
use rayon::prelude::*;

/// Rows of the micro-tile.
pub const MR: usize = 6;
/// Columns of the micro-tile (two 8-lane vectors).
pub const NR: usize = 16;
/// Depth of one packed block (A panel 6×256, B panel 256×16 = 16 KiB: both in L1).
const KC: usize = 256;
/// Rows of one packed A block (120×256×4 = 120 KiB, in L2).
const MC: usize = 120;
/// Columns of one packed B block (256×3072×4 = 3 MiB, in L3).
const NC: usize = 3072;
/// Below this many multiply-adds a call stays on the calling thread.
const PAR_MIN: usize = 1 << 21;

/// A read-only matrix view: element `(i, j)` is `data[off + i*rs + j*cs]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a, R> {
    /// The backing slice (every addressed element lies inside it; checked).
    pub data: &'a [R],
    /// Offset of element (0, 0).
    pub off: usize,
    /// Row stride in elements.
    pub rs: usize,
    /// Column stride in elements.
    pub cs: usize,
}

impl<'a, R: Real> MatRef<'a, R> {
    /// Row-major matrix starting at `off` with row stride `ld`.
    pub fn rows(data: &'a [R], off: usize, ld: usize) -> Self {
        MatRef {
            data,
            off,
            rs: ld,
            cs: 1,
        }
    }
    /// The transpose of a row-major matrix with row stride `ld`: `(i, j)` = `data[off+j*ld+i]`.
    pub fn cols(data: &'a [R], off: usize, ld: usize) -> Self {
        MatRef {
            data,
            off,
            rs: 1,
            cs: ld,
        }
    }
    fn check(&self, r: usize, c: usize, what: &str) {
        if r > 0 && c > 0 {
            let last = self.off + (r - 1) * self.rs + (c - 1) * self.cs;
            assert!(last < self.data.len(), "gemm: {what} view out of bounds");
        }
    }
}

/// `C = A·B` (`acc = false`) or `C += A·B`; `A` [m, k], `B` [k, n], `C` [m, n] at `c_off`
/// with row stride `ldc`. Threaded when the product is large.
#[allow(clippy::too_many_arguments)]
pub fn gemm<R: Real>(
    (m, n, k): (usize, usize, usize),
    a: MatRef<R>,
    b: MatRef<R>,
    c: &mut [R],
    c_off: usize,
    ldc: usize,
    acc: bool,
) {
    if m > 0 && n > 0 {
        assert!(
            c_off + (m - 1) * ldc + n <= c.len(),
            "gemm: C view out of bounds"
        );
    }
    // SAFETY: the C region was checked against `c`, which is borrowed mutably (and so is
    // initialised).
    unsafe { gemm_uninit((m, n, k), a, b, c.as_mut_ptr().add(c_off), ldc, acc) }
}

/// [`gemm`] into memory that may be uninitialised when `acc` is false (every element of the
/// `m×n` region is then written), threaded when large: for outputs built in a `Vec`'s spare
/// capacity, which saves the zero-fill pass.
///
/// # Safety
/// `c` must be valid for writes of the `m×n` region with row stride `ldc`, and no other
/// thread may access that region during the call; with `acc` it must also be initialised.
pub unsafe fn gemm_uninit<R: Real>(
    (m, n, k): (usize, usize, usize),
    a: MatRef<R>,
    b: MatRef<R>,
    c: *mut R,
    ldc: usize,
    acc: bool,
) {
    let par = m * n * k >= PAR_MIN && rayon::current_num_threads() > 1;
    unsafe { gemm_raw((m, n, k), a, b, c, ldc, acc, par) }
}

/// The same product on the calling thread, writing through a raw pointer: for callers that
/// run many small products in parallel into disjoint parts of one buffer (attention heads).
///
/// # Safety
/// `c` must be valid for writes of the `m×n` region with row stride `ldc`, and no other
/// thread may access that region during the call.
pub unsafe fn gemm_serial_raw<R: Real>(
    dims: (usize, usize, usize),
    a: MatRef<R>,
    b: MatRef<R>,
    c: *mut R,
    ldc: usize,
    acc: bool,
) {
    unsafe { gemm_raw(dims, a, b, c, ldc, acc, false) }
}

unsafe fn gemm_raw<R: Real>(
    (m, n, k): (usize, usize, usize),
    a: MatRef<R>,
    b: MatRef<R>,
    c: *mut R,
    ldc: usize,
    acc: bool,
    par: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    a.check(m, k, "A");
    b.check(k, n, "B");
    if k == 0 {
        if !acc {
            for i in 0..m {
                for j in 0..n {
                    unsafe { *c.add(i * ldc + j) = R::zero() };
                }
            }
        }
        return;
    }
    let cp = SendPtr(c);
    let mut bpack = take_buf::<R>(0, (KC + NR) * NC.min(n.div_ceil(NR) * NR));
    let mut apack = take_buf::<R>(1, (KC + NR) * m.div_ceil(MR) * MR);
    // Equal depth blocks: 772 = 3 × 258 rather than 3 × 256 + 4 (a whole pass over C for 4).
    let kstep = k.div_ceil(k.div_ceil(KC));
    for jc in (0..n).step_by(NC) {
        let nc = NC.min(n - jc);
        for pc in (0..k).step_by(kstep) {
            let kc = kstep.min(k - pc);
            pack_b(&b, (pc, kc), (jc, nc), &mut bpack, par);
            pack_a(&a, m, (pc, kc), &mut apack, par);
            let tile = Tile {
                kc,
                jc,
                nc,
                ldc,
                acc: acc || pc > 0,
            };
            // Row blocks of near-equal height (772 rows: 6 × 114 + 88, not 6 × 120 + 52), so the
            // tasks are of about one size and the threads finish together.
            let blocks = m.div_ceil(MC);
            let mcb = m.div_ceil(blocks).div_ceil(MR) * MR;
            let blocks = m.div_ceil(mcb);
            let panels = nc.div_ceil(NR);
            let threads = if par { rayon::current_num_threads() } else { 1 };
            // About 8 tasks per thread (row blocks × column splits) for balance.
            let nsplit = (8 * threads).div_ceil(blocks).clamp(1, panels);
            let per = panels.div_ceil(nsplit);
            let run = |t: usize| {
                let (ib, js) = (t / nsplit, t % nsplit);
                let (ic, mc) = (ib * mcb, mcb.min(m - ib * mcb));
                let (p0, p1) = (js * per, ((js + 1) * per).min(panels));
                if p0 < p1 {
                    let cp = cp;
                    let ap = &apack[ic * kc..(ic + mc.div_ceil(MR) * MR) * kc];
                    macro_block(&tile, (ic, mc), ap, &bpack, (p0, p1), cp.0);
                }
            };
            if par {
                (0..blocks * nsplit).into_par_iter().for_each(run);
            } else {
                (0..blocks * nsplit).for_each(run);
            }
        }
    }
    put_buf(0, bpack);
    put_buf(1, apack);
}

thread_local! {
    /// Packing buffers kept between calls (slot 0: B, slot 1: A), per thread and type.
    static BUFS: std::cell::RefCell<Vec<(std::any::TypeId, usize, Box<dyn std::any::Any>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// A buffer of at least `len` elements from this thread's cache (or a new one). Taken out of
/// the cache, so a nested call on the same thread (rayon work stealing) gets its own.
fn take_buf<R: Real>(slot: usize, len: usize) -> Vec<R> {
    let id = std::any::TypeId::of::<R>();
    let cached = BUFS.with(|b| {
        let mut b = b.borrow_mut();
        let i = b.iter().position(|(t, s, _)| *t == id && *s == slot)?;
        b.swap_remove(i).2.downcast::<Vec<R>>().ok()
    });
    let mut v = cached.map(|v| *v).unwrap_or_default();
    if v.len() < len {
        v.resize(len, R::zero());
    }
    v
}

fn put_buf<R: Real>(slot: usize, v: Vec<R>) {
    let id = std::any::TypeId::of::<R>();
    BUFS.with(|b| b.borrow_mut().push((id, slot, Box::new(v))));
}

#[derive(Clone, Copy)]
struct SendPtr<R>(*mut R);
// SAFETY: tasks write disjoint C tiles (see `macro_block`).
unsafe impl<R> Send for SendPtr<R> {}
unsafe impl<R> Sync for SendPtr<R> {}

struct Tile {
    kc: usize,
    jc: usize,
    nc: usize,
    ldc: usize,
    acc: bool,
}

/// Packs `A[0..m, pc..pc+kc]` as MR-row panels, `[panel][p][MR]`, zero-padded: contiguous
/// writes, reading MR rows (or, for a transposed A, MR neighbouring elements) per step.
fn pack_a<R: Real>(a: &MatRef<R>, m: usize, (pc, kc): (usize, usize), out: &mut [R], par: bool) {
    let work = |(pi, panel): (usize, &mut [R])| {
        let r0 = pi * MR;
        let rows = MR.min(m - r0);
        let base = a.off + r0 * a.rs + pc * a.cs;
        if rows == MR && a.cs == 1 {
            R::interleave(&a.data[base..], a.rs, (MR, kc), panel);
        } else if rows == MR && a.rs == 1 {
            for (p, dst) in panel.chunks_exact_mut(MR).enumerate() {
                dst.copy_from_slice(&a.data[base + p * a.cs..][..MR]);
            }
        } else {
            for (p, dst) in panel.chunks_exact_mut(MR).enumerate() {
                for (r, d) in dst.iter_mut().enumerate() {
                    *d = if r < rows {
                        a.data[base + r * a.rs + p * a.cs]
                    } else {
                        R::zero()
                    };
                }
            }
        }
    };
    let out = &mut out[..m.div_ceil(MR) * MR * kc];
    if par {
        out.par_chunks_exact_mut(MR * kc).enumerate().for_each(work);
    } else {
        out.chunks_exact_mut(MR * kc).enumerate().for_each(work);
    }
}

/// Packs `B[pc..pc+kc, jc..jc+nc]` as NR-column panels, `[panel][p][NR]`, zero-padded.
fn pack_b<R: Real>(
    b: &MatRef<R>,
    (pc, kc): (usize, usize),
    (jc, nc): (usize, usize),
    out: &mut [R],
    par: bool,
) {
    let panels = nc.div_ceil(NR);
    let work = |(pj, panel): (usize, &mut [R])| {
        let c0 = jc + pj * NR;
        let cols = NR.min(nc - pj * NR);
        if b.cs == 1 {
            for p in 0..kc {
                let base = b.off + (pc + p) * b.rs + c0;
                let dst: &mut [R; NR] = (&mut panel[p * NR..p * NR + NR]).try_into().unwrap();
                if cols == NR {
                    *dst = b.data[base..base + NR].try_into().unwrap();
                } else {
                    dst[..cols].copy_from_slice(&b.data[base..base + cols]);
                    dst[cols..].fill(R::zero());
                }
            }
        } else if cols == NR && b.rs == 1 {
            let base = b.off + pc + c0 * b.cs;
            R::interleave(&b.data[base..], b.cs, (NR, kc), panel);
        } else {
            for (p, dst) in panel.chunks_exact_mut(NR).enumerate() {
                for (j, d) in dst.iter_mut().enumerate() {
                    let at = b.off + (pc + p) * b.rs + (c0 + j) * b.cs;
                    *d = if j < cols { b.data[at] } else { R::zero() };
                }
            }
        }
    };
    let chunks = out[..panels * NR * kc]
        .par_chunks_exact_mut(NR * kc)
        .enumerate();
    if par {
        chunks.for_each(work);
    } else {
        out[..panels * NR * kc]
            .chunks_exact_mut(NR * kc)
            .enumerate()
            .for_each(work);
    }
}

/// Runs the micro-kernel over one packed A block and B panels `p0..p1`.
fn macro_block<R: Real>(
    t: &Tile,
    (ic, mc): (usize, usize),
    apack: &[R],
    bpack: &[R],
    (p0, p1): (usize, usize),
    c: *mut R,
) {
    for pj in p0..p1 {
        let nr = NR.min(t.nc - pj * NR);
        let bp = &bpack[pj * NR * t.kc..(pj + 1) * NR * t.kc];
        for pi in 0..mc.div_ceil(MR) {
            let mr = MR.min(mc - pi * MR);
            let ap = &apack[pi * MR * t.kc..(pi + 1) * MR * t.kc];
            let off = (ic + pi * MR) * t.ldc + t.jc + pj * NR;
            // SAFETY: the tile lies in the C region the caller vouched for, and concurrent
            // tasks own disjoint (row block, column panel) tiles.
            unsafe { R::micro(t.kc, ap, bp, c.add(off), t.ldc, (mr, nr), t.acc) };
        }
    }
}

/// The portable micro-kernel: an `MR×NR` tile from packed panels, stored to its `mr×nr` part.
///
/// # Safety
/// The `mr×nr` tile at `c` with row stride `ldc` must be writable.
pub(crate) unsafe fn micro_portable<R: Real>(
    kc: usize,
    a: &[R],
    b: &[R],
    c: *mut R,
    ldc: usize,
    (mr, nr): (usize, usize),
    acc: bool,
) {
    let mut t = [[R::zero(); NR]; MR];
    for p in 0..kc {
        let bv = &b[p * NR..p * NR + NR];
        for (i, row) in t.iter_mut().enumerate() {
            let av = a[p * MR + i];
            for (x, &bj) in row.iter_mut().zip(bv) {
                *x = *x + av * bj;
            }
        }
    }
    unsafe { store_tile(&t, c, ldc, (mr, nr), acc) }
}

unsafe fn store_tile<R: Real>(
    t: &[[R; NR]; MR],
    c: *mut R,
    ldc: usize,
    (mr, nr): (usize, usize),
    acc: bool,
) {
    for (i, row) in t.iter().enumerate().take(mr) {
        for (j, &v) in row.iter().enumerate().take(nr) {
            unsafe {
                let p = c.add(i * ldc + j);
                *p = if acc { *p + v } else { v };
            }
        }
    }
}

/// Packing's transposing copy: `rows` source rows of `kc` elements, row `r` starting at
/// `src[r*ld]`, written interleaved, `dst[p*rows + r] = src[r*ld + p]` (a panel of A from a
/// row-major matrix, or of B from a transposed one).
///
/// # Panics
/// If a source row or the destination is too short.
pub(crate) fn interleave_portable<R: Real>(
    src: &[R],
    ld: usize,
    (rows, kc): (usize, usize),
    dst: &mut [R],
) {
    let src: Vec<&[R]> = (0..rows).map(|r| &src[r * ld..][..kc]).collect();
    for (p, d) in dst[..rows * kc].chunks_exact_mut(rows).enumerate() {
        for (x, s) in d.iter_mut().zip(&src) {
            *x = s[p];
        }
    }
}

/// [`interleave_portable`] for `f32`, with 8×8 AVX2 register transposes for the two panel
/// heights the packers use (6 and 16 rows).
pub(crate) fn interleave_f32(src: &[f32], ld: usize, (rows, kc): (usize, usize), dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() && (rows == MR || rows == NR) && kc > 0 {
        assert!(
            (rows - 1) * ld + kc <= src.len(),
            "interleave: source too short"
        );
        assert!(rows * kc <= dst.len(), "interleave: destination too short");
        // SAFETY: both ranges were checked just above.
        return unsafe { x86::interleave(src.as_ptr(), ld, (rows, kc), dst.as_mut_ptr()) };
    }
    interleave_portable(src, ld, (rows, kc), dst)
}

/// Whether the AVX2+FMA micro-kernel runs on this CPU (checked once).
pub fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static YES: OnceLock<bool> = OnceLock::new();
        *YES.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The f32 micro-kernel: AVX2+FMA where the CPU has it.
///
/// # Safety
/// As [`micro_portable`].
pub(crate) unsafe fn micro_f32(
    kc: usize,
    a: &[f32],
    b: &[f32],
    c: *mut f32,
    ldc: usize,
    mrn: (usize, usize),
    acc: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        return unsafe { x86::micro_6x16(kc, a.as_ptr(), b.as_ptr(), c, ldc, mrn, acc) };
    }
    unsafe { micro_portable(kc, a, b, c, ldc, mrn, acc) }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{MR, NR, store_tile};
    use std::arch::x86_64::*;

    /// `out[i]` = column `i` of the 8×8 block whose rows are `r`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn transpose8(r: &[__m256; 8]) -> [__m256; 8] {
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        [
            _mm256_permute2f128_ps::<0x20>(s0, s4),
            _mm256_permute2f128_ps::<0x20>(s1, s5),
            _mm256_permute2f128_ps::<0x20>(s2, s6),
            _mm256_permute2f128_ps::<0x20>(s3, s7),
            _mm256_permute2f128_ps::<0x31>(s0, s4),
            _mm256_permute2f128_ps::<0x31>(s1, s5),
            _mm256_permute2f128_ps::<0x31>(s2, s6),
            _mm256_permute2f128_ps::<0x31>(s3, s7),
        ]
    }

    /// `dst[p*rows + r] = src[r*ld + p]` for `rows` = 6 or 16, eight `p` at a time.
    ///
    /// # Safety
    /// `src` readable for `(rows-1)*ld + kc` elements, `dst` writable for `rows*kc`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn interleave(
        src: *const f32,
        ld: usize,
        (rows, kc): (usize, usize),
        dst: *mut f32,
    ) {
        let full = kc - kc % 8;
        let keep6 = _mm256_setr_epi32(-1, -1, -1, -1, -1, -1, 0, 0);
        for p in (0..full).step_by(8) {
            for g in (0..rows).step_by(8) {
                let mut r = [_mm256_setzero_ps(); 8];
                for (j, v) in r.iter_mut().enumerate().take(rows - g) {
                    *v = unsafe { _mm256_loadu_ps(src.add((g + j) * ld + p)) };
                }
                let c = transpose8(&r);
                unsafe {
                    if rows == NR {
                        for (i, v) in c.iter().enumerate() {
                            _mm256_storeu_ps(dst.add((p + i) * rows + g), *v);
                        }
                    } else {
                        // 6 values per step: each full store spills 2 lanes into the next
                        // step's slot, which the next store overwrites; the last one is masked.
                        for (i, v) in c.iter().enumerate().take(7) {
                            _mm256_storeu_ps(dst.add((p + i) * MR), *v);
                        }
                        _mm256_maskstore_ps(dst.add((p + 7) * MR), keep6, c[7]);
                    }
                }
            }
        }
        for p in full..kc {
            for r in 0..rows {
                unsafe { *dst.add(p * rows + r) = *src.add(r * ld + p) };
            }
        }
    }

    /// The 6×16 AVX2/FMA micro-kernel.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn micro_6x16(
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        (mr, nr): (usize, usize),
        acc: bool,
    ) {
        let z = _mm256_setzero_ps();
        let (mut c00, mut c01, mut c10, mut c11, mut c20, mut c21) = (z, z, z, z, z, z);
        let (mut c30, mut c31, mut c40, mut c41, mut c50, mut c51) = (z, z, z, z, z, z);
        unsafe {
            // C rows are read back at the end; start fetching them now.
            for i in 0..mr {
                _mm_prefetch::<_MM_HINT_T0>(c.add(i * ldc) as *const i8);
                _mm_prefetch::<_MM_HINT_T0>(c.add(i * ldc + NR - 1) as *const i8);
            }
            let (mut ap, mut bp) = (a, b);
            for _ in 0..kc {
                _mm_prefetch::<_MM_HINT_T0>(bp.add(NR * 8) as *const i8);
                let b0 = _mm256_loadu_ps(bp);
                let b1 = _mm256_loadu_ps(bp.add(8));
                let a0 = _mm256_broadcast_ss(&*ap);
                c00 = _mm256_fmadd_ps(a0, b0, c00);
                c01 = _mm256_fmadd_ps(a0, b1, c01);
                let a1 = _mm256_broadcast_ss(&*ap.add(1));
                c10 = _mm256_fmadd_ps(a1, b0, c10);
                c11 = _mm256_fmadd_ps(a1, b1, c11);
                let a2 = _mm256_broadcast_ss(&*ap.add(2));
                c20 = _mm256_fmadd_ps(a2, b0, c20);
                c21 = _mm256_fmadd_ps(a2, b1, c21);
                let a3 = _mm256_broadcast_ss(&*ap.add(3));
                c30 = _mm256_fmadd_ps(a3, b0, c30);
                c31 = _mm256_fmadd_ps(a3, b1, c31);
                let a4 = _mm256_broadcast_ss(&*ap.add(4));
                c40 = _mm256_fmadd_ps(a4, b0, c40);
                c41 = _mm256_fmadd_ps(a4, b1, c41);
                let a5 = _mm256_broadcast_ss(&*ap.add(5));
                c50 = _mm256_fmadd_ps(a5, b0, c50);
                c51 = _mm256_fmadd_ps(a5, b1, c51);
                ap = ap.add(MR);
                bp = bp.add(NR);
            }
            let rows = [
                [c00, c01],
                [c10, c11],
                [c20, c21],
                [c30, c31],
                [c40, c41],
                [c50, c51],
            ];
            if mr == MR && nr == NR {
                for (i, [lo, hi]) in rows.into_iter().enumerate() {
                    let p = c.add(i * ldc);
                    let (lo, hi) = if acc {
                        (
                            _mm256_add_ps(lo, _mm256_loadu_ps(p)),
                            _mm256_add_ps(hi, _mm256_loadu_ps(p.add(8))),
                        )
                    } else {
                        (lo, hi)
                    };
                    _mm256_storeu_ps(p, lo);
                    _mm256_storeu_ps(p.add(8), hi);
                }
            } else {
                let mut t = [[0f32; NR]; MR];
                for (i, [lo, hi]) in rows.into_iter().enumerate() {
                    _mm256_storeu_ps(t[i].as_mut_ptr(), lo);
                    _mm256_storeu_ps(t[i].as_mut_ptr().add(8), hi);
                }
                store_tile(&t, c, ldc, (mr, nr), acc);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive<R: Real>(m: usize, n: usize, k: usize, a: &MatRef<R>, b: &MatRef<R>) -> Vec<f64> {
        let mut c = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k)
                    .map(|p| {
                        let x = a.data[a.off + i * a.rs + p * a.cs].to_f64().unwrap();
                        x * b.data[b.off + p * b.rs + j * b.cs].to_f64().unwrap()
                    })
                    .sum();
            }
        }
        c
    }

    fn values<R: Real>(n: usize, seed: u64) -> Vec<R> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                R::from((s >> 33) as f64 / (1u64 << 31) as f64 - 0.5).unwrap()
            })
            .collect()
    }

    /// Every edge: tiles smaller than 6×16, depth blocks of several sizes, transposed and
    /// offset operands, overwrite and accumulate, threaded and serial.
    fn check<R: Real>(tol: f64) {
        let shapes = [
            (1, 1, 1),
            (7, 17, 3),
            (13, 33, 300),
            (130, 70, 513),
            (6, 16, 256),
            (61, 50, 0),
        ];
        for (si, &(m, n, k)) in shapes.iter().enumerate() {
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                let ad = values::<R>(m * k + 5, si as u64 * 7 + 1);
                let bd = values::<R>(k * n + 3, si as u64 * 7 + 2);
                let a = if ta {
                    MatRef::cols(&ad, 5, m)
                } else {
                    MatRef::rows(&ad, 5, k)
                };
                let b = if tb {
                    MatRef::cols(&bd, 3, k)
                } else {
                    MatRef::rows(&bd, 3, n)
                };
                let want = naive(m, n, k, &a, &b);
                let ldc = n + 2;
                let mut c = vec![R::from(9.0).unwrap(); m * ldc + 1];
                gemm((m, n, k), a, b, &mut c, 1, ldc, false);
                let mut c2 = vec![R::one(); m * ldc];
                unsafe { gemm_serial_raw((m, n, k), a, b, c2.as_mut_ptr(), ldc, true) };
                for i in 0..m {
                    for j in 0..n {
                        let w = want[i * n + j];
                        let got = c[1 + i * ldc + j].to_f64().unwrap();
                        let acc = c2[i * ldc + j].to_f64().unwrap();
                        assert!((got - w).abs() < tol, "{m}x{n}x{k} {ta} {tb}: {got} vs {w}");
                        assert!((acc - 1.0 - w).abs() < tol, "accumulate {m}x{n}x{k}: {acc}");
                    }
                    // Columns between rows (ldc > n) are untouched.
                    if i + 1 < m {
                        assert_eq!(c[1 + i * ldc + n].to_f64().unwrap(), 9.0);
                    }
                }
            }
        }
    }

    /// The AVX2 transposing copy equals the portable one for both panel heights, every tail
    /// length and a padded row stride, and writes nothing past its `rows*kc` elements.
    #[test]
    fn interleave_f32_matches_portable() {
        for rows in [MR, NR] {
            for kc in [1, 7, 8, 9, 16, 23, 256] {
                let ld = kc + 3;
                let src = values::<f32>((rows - 1) * ld + kc, (rows * kc) as u64);
                let mut want = vec![-1f32; rows * kc + 4];
                let mut got = want.clone();
                interleave_portable(&src, ld, (rows, kc), &mut want);
                interleave_f32(&src, ld, (rows, kc), &mut got);
                assert_eq!(got, want, "rows {rows}, kc {kc}");
                assert_eq!(&got[rows * kc..], &[-1.0; 4]);
            }
        }
    }

    #[test]
    fn f32_matches_naive_product() {
        check::<f32>(1e-3);
    }

    #[test]
    fn f64_matches_naive_product() {
        check::<f64>(1e-10);
    }

    #[test]
    #[should_panic(expected = "view out of bounds")]
    fn out_of_bounds_view_panics() {
        let a = vec![1f32; 10];
        let mut c = vec![0f32; 100];
        gemm(
            (3, 3, 4),
            MatRef::rows(&a, 0, 4),
            MatRef::rows(&a, 0, 3),
            &mut c,
            0,
            3,
            false,
        );
    }
}
