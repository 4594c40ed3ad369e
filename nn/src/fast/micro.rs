//! The GEMM micro-kernels of [`super::gemm`]: the `MR×NR` register tile (portable, and AVX2+FMA
//! for `f32` on x86-64) and packing's transposing copy. A leaf module: generic over
//! `num_traits::Float` only, so the [`super::real::Real`] trait can dispatch to these kernels
//! without a module cycle.

use num_traits::Float;

/// Rows of the micro-tile.
pub const MR: usize = 6;
/// Columns of the micro-tile (two 8-lane vectors).
pub const NR: usize = 16;

/// The portable micro-kernel: an `MR×NR` tile from packed panels, stored to its `mr×nr` part.
///
/// # Safety
/// The `mr×nr` tile at `c` with row stride `ldc` must be writable.
pub(crate) unsafe fn micro_portable<R: Float>(
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

unsafe fn store_tile<R: Float>(
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
pub(crate) fn interleave_portable<R: Float>(
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
