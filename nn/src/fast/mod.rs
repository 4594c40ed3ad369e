//! Fused CPU kernels, added to dfdx as custom ops (each a forward over raw slices plus one
//! backward closure on the tape): linear layers on an own GEMM ([`gemm`]), LayerNorm,
//! QuickGELU, the attention core `softmax(q kᵀ/√d + mask) v` on per-head strided views, and the
//! SDM and cross-entropy losses ([`loss`]).
//!
//! The towers call these through small wrappers that fall back to the plain dfdx composition
//! when the fast path does not apply: a device other than [`Cpu`] (CUDA), an element type other
//! than `f32`/`f64`, a non-contiguous input, attention probabilities requested by the caller
//! (GASS, the MTP decoder), or the switch turned off ([`set_fused`], [`with_fused`], or the
//! environment variable `GADMS_FUSED=0`). Both paths compute the same function; the tests in
//! `nn/tests/fast_ops.rs` and `nn/tests/fast_loss.rs` compare them (forward and every
//! gradient) and check the fused backward against finite differences in `f64`.
//!
//! Why: on 2 AVX2 cores dfdx 0.13 spends about a third of a ViT-B/16 step outside GEMM
//! (LayerNorm ≈ 10 passes, broadcasts, the permute copies of attention, sigmoid through
//! `expf`) and its `gemm` crate reaches about 58 % of the FMA peak; see `benches/RESULTS.md`.

pub mod attn;
pub mod elementwise;
pub mod gemm;
pub mod linear;
pub mod loss;
pub mod norm;

pub use attn::attention;
pub use elementwise::quick_gelu;
pub use linear::{linear, linear_unbiased, linear2};
pub use loss::{cross_entropy, sdm};
pub use norm::layer_norm;

use dfdx::prelude::*;
use dfdx::tensor::Tensorlike;
use std::any::{Any, TypeId};
use std::cell::Cell;
use std::sync::OnceLock;

/// Element types of the fast path: `f32` (AVX2 kernels) and `f64` (portable kernels, used by
/// the finite-difference checks).
pub trait Real: Unit + num_traits::Float + Send + Sync + std::iter::Sum {
    /// The GEMM micro-kernel for this type (see [`gemm`]).
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
    /// GEMM packing's transposing copy (see [`gemm::interleave_portable`]).
    fn interleave(src: &[Self], ld: usize, rows_kc: (usize, usize), dst: &mut [Self]) {
        gemm::interleave_portable(src, ld, rows_kc, dst)
    }
    /// QuickGELU forward over a slice (see [`elementwise`]).
    fn gelu_fwd(x: &[Self], y: &mut [Self]) {
        elementwise::gelu_fwd_generic(x, y)
    }
    /// QuickGELU backward over a slice, accumulating into `dx`.
    fn gelu_bwd(x: &[Self], dy: &[Self], dx: &mut [Self]) {
        elementwise::gelu_bwd_generic(x, dy, dx)
    }
    /// One attention row in place: `softmax(s·scale + mask)`.
    fn softmax_row(s: &mut [Self], scale: Self, mask: Option<&[Self]>) {
        elementwise::softmax_row_generic(s, scale, mask)
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
        unsafe { gemm::micro_f32(kc, a, b, c, ldc, mrn, acc) }
    }
    fn interleave(src: &[f32], ld: usize, rows_kc: (usize, usize), dst: &mut [f32]) {
        gemm::interleave_f32(src, ld, rows_kc, dst)
    }
    fn gelu_fwd(x: &[f32], y: &mut [f32]) {
        elementwise::gelu_fwd_f32(x, y)
    }
    fn gelu_bwd(x: &[f32], dy: &[f32], dx: &mut [f32]) {
        elementwise::gelu_bwd_f32(x, dy, dx)
    }
    fn softmax_row(s: &mut [f32], scale: f32, mask: Option<&[f32]>) {
        elementwise::softmax_row_f32(s, scale, mask)
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
        unsafe { gemm::micro_portable(kc, a, b, c, ldc, mrn, acc) }
    }
}

thread_local! {
    static FUSED: Cell<Option<bool>> = const { Cell::new(None) };
}

fn env_default() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("GADMS_FUSED").map_or(true, |v| v != "0"))
}

/// Whether this thread builds graphs with the fused kernels (default: on, unless the
/// environment has `GADMS_FUSED=0`).
pub fn fused_enabled() -> bool {
    FUSED.with(|f| f.get()).unwrap_or_else(env_default)
}

/// Turns the fused kernels on or off for graphs built on this thread from now on.
pub fn set_fused(on: bool) {
    FUSED.with(|f| f.set(Some(on)));
}

/// Runs `f` with the fused kernels on or off on this thread, then restores the setting.
pub fn with_fused<R>(on: bool, f: impl FnOnce() -> R) -> R {
    let old = FUSED.with(|c| c.replace(Some(on)));
    let out = f();
    FUSED.with(|c| c.set(old));
    out
}

/// Which fast-path element type `(E, D)` is, if any (and the switch is on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    F32,
    F64,
}

pub(crate) fn kind<E: 'static, D: 'static>() -> Option<Kind> {
    if TypeId::of::<D>() != TypeId::of::<Cpu>() || !fused_enabled() {
        return None;
    }
    if TypeId::of::<E>() == TypeId::of::<f32>() {
        Some(Kind::F32)
    } else if TypeId::of::<E>() == TypeId::of::<f64>() {
        Some(Kind::F64)
    } else {
        None
    }
}

/// Whether a tensor is laid out densely in row-major order (no broadcast, no permute).
pub(crate) fn contiguous<S: Shape, E: Dtype, D: Storage<E>, T>(t: &Tensor<S, E, D, T>) -> bool {
    Tensorlike::strides(t) == t.shape().strides()
}

/// The CPU storage of `R`.
type CpuVec<R> = <Cpu as Storage<R>>::Vec;

/// A CPU tensor's elements as `&[R]` (the caller checked [`kind`]).
pub(crate) fn data<R: Real, S: Shape, E: Dtype, D: Storage<E>, T>(t: &Tensor<S, E, D, T>) -> &[R] {
    let v: &D::Vec = Tensorlike::data(t).expect("a tensor always has data");
    let v = (v as &dyn Any).downcast_ref::<CpuVec<R>>();
    v.expect("fast path: not a CPU tensor of this element type")
}

/// The gradient buffer of `t` (allocated on first use), as `&mut Vec<R>`.
pub(crate) fn grad_mut<'g, R: Real, S: Shape, E: Dtype, D: Storage<E>>(
    grads: &'g mut Gradients<E, D>,
    t: &impl Tensorlike<S, E, D>,
) -> Result<&'g mut Vec<R>, D::Err> {
    let g = grads.get_or_alloc_mut(t)?;
    let g = (g as &mut dyn Any).downcast_mut::<CpuVec<R>>();
    Ok(g.expect("fast path: gradient is not CPU storage of this element type"))
}

/// Moves the gradient of `t` out of the store (to be put back with [`put_grad`]), so it can
/// be read while the inputs' gradients are written.
pub(crate) fn take_grad<R: Real, S: Shape, E: Dtype, D: Storage<E>>(
    grads: &mut Gradients<E, D>,
    t: &impl Tensorlike<S, E, D>,
) -> Result<Vec<R>, D::Err> {
    Ok(std::mem::take(grad_mut::<R, S, E, D>(grads, t)?))
}

/// Puts back a gradient taken with [`take_grad`] (callers that read intermediate gradients,
/// such as GASS, still find it).
pub(crate) fn put_grad<R: Real, S: Shape, E: Dtype, D: Storage<E>>(
    grads: &mut Gradients<E, D>,
    t: &impl Tensorlike<S, E, D>,
    g: Vec<R>,
) -> Result<(), D::Err> {
    *grad_mut::<R, S, E, D>(grads, t)? = g;
    Ok(())
}

/// A new tensor on `dev` holding `v` (no copy).
pub(crate) fn tensor<R: Real, S: Shape, E: Dtype, D: Device<E>>(
    dev: &D,
    v: Vec<R>,
    shape: S,
) -> Tensor<S, E, D> {
    let v = *(Box::new(v) as Box<dyn Any>)
        .downcast::<Vec<E>>()
        .expect("fast path: element type mismatch");
    dev.tensor_from_vec(v, shape)
}

/// Runs `f(chunk_index, chunk)` over `chunk`-sized pieces of `v` on the rayon pool when `v` is
/// large, else on this thread.
pub(crate) fn par_chunks<R: Send>(v: &mut [R], chunk: usize, f: impl Fn(usize, &mut [R]) + Sync) {
    use rayon::prelude::*;
    if v.len() > chunk && rayon::current_num_threads() > 1 {
        v.par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(i, c)| f(i, c));
    } else {
        v.chunks_mut(chunk.max(1))
            .enumerate()
            .for_each(|(i, c)| f(i, c));
    }
}
