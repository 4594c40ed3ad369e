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

use super::micro::{MR, NR};
use super::real::Real;
use rayon::prelude::*;

// Re-exported: the micro-kernels moved to `fast::micro`, their public items keep these paths.
pub use super::micro::has_avx2_fma;

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
                    #[allow(clippy::redundant_locals)] // capture the Send wrapper, not its field
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fast::micro::{interleave_f32, interleave_portable};

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
