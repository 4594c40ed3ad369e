//! The element types of the fast path and their kernels: `f32` dispatches to the AVX2 kernels
//! where the CPU has them, `f64` (the finite-difference checks) to the portable ones.

use super::{micro, rowwise};
use dfdx::prelude::*;

/// Element types of the fast path: `f32` (AVX2 kernels) and `f64` (portable kernels, used by
/// the finite-difference checks).
pub trait Real: Unit + num_traits::Float + Send + Sync + std::iter::Sum {
    /// The GEMM micro-kernel for this type (see [`super::micro`]).
    ///
    /// # Safety
    /// The `mr×nr` tile at `c` with row stride `ldc` must be writable.
    unsafe fn micro(
        kc: usize,
        a: &[Self],
        b: &[Self],
        c: *mut Self,
        ldc: usize,
        mrn: (usize, usize),
        acc: bool,
    );
    /// GEMM packing's transposing copy (see [`super::micro::interleave_portable`]).
    fn interleave(src: &[Self], ld: usize, rows_kc: (usize, usize), dst: &mut [Self]) {
        micro::interleave_portable(src, ld, rows_kc, dst)
    }
    /// QuickGELU forward over a slice (see [`super::rowwise`]).
    fn gelu_fwd(x: &[Self], y: &mut [Self]) {
        rowwise::gelu_fwd_generic(x, y)
    }
    /// QuickGELU backward over a slice, accumulating into `dx`.
    fn gelu_bwd(x: &[Self], dy: &[Self], dx: &mut [Self]) {
        rowwise::gelu_bwd_generic(x, dy, dx)
    }
    /// One attention row in place: `softmax(s·scale + mask)`.
    fn softmax_row(s: &mut [Self], scale: Self, mask: Option<&[Self]>) {
        rowwise::softmax_row_generic(s, scale, mask)
    }
    /// `Σ exp(z − m)` of a row, accumulated in f64 (cross entropy's normaliser).
    fn exp_sum(z: &[Self], m: Self) -> f64 {
        rowwise::exp_sum_generic(z, m)
    }
    /// `g += coef·exp(z − m)` over a row (cross entropy's backward).
    fn add_exp(g: &mut [Self], z: &[Self], m: Self, coef: Self) {
        rowwise::add_exp_generic(g, z, m, coef)
    }
}

impl Real for f32 {
    unsafe fn micro(
        kc: usize,
        a: &[f32],
        b: &[f32],
        c: *mut f32,
        ldc: usize,
        mrn: (usize, usize),
        acc: bool,
    ) {
        unsafe { micro::micro_f32(kc, a, b, c, ldc, mrn, acc) }
    }
    fn interleave(src: &[f32], ld: usize, rows_kc: (usize, usize), dst: &mut [f32]) {
        micro::interleave_f32(src, ld, rows_kc, dst)
    }
    fn gelu_fwd(x: &[f32], y: &mut [f32]) {
        rowwise::gelu_fwd_f32(x, y)
    }
    fn gelu_bwd(x: &[f32], dy: &[f32], dx: &mut [f32]) {
        rowwise::gelu_bwd_f32(x, dy, dx)
    }
    fn softmax_row(s: &mut [f32], scale: f32, mask: Option<&[f32]>) {
        rowwise::softmax_row_f32(s, scale, mask)
    }
    fn exp_sum(z: &[f32], m: f32) -> f64 {
        rowwise::exp_sum_f32(z, m)
    }
    fn add_exp(g: &mut [f32], z: &[f32], m: f32, coef: f32) {
        rowwise::add_exp_f32(g, z, m, coef)
    }
}

impl Real for f64 {
    unsafe fn micro(
        kc: usize,
        a: &[f64],
        b: &[f64],
        c: *mut f64,
        ldc: usize,
        mrn: (usize, usize),
        acc: bool,
    ) {
        unsafe { micro::micro_portable(kc, a, b, c, ldc, mrn, acc) }
    }
}
