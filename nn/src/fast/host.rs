//! Host-side plumbing of the fused ops: which fast-path element type a tensor has, its CPU
//! data and gradient buffers as plain slices, and chunked parallel loops.

use super::real::Real;
use super::switch::fused_enabled;
use dfdx::prelude::*;
use dfdx::tensor::Tensorlike;
use std::any::{Any, TypeId};

/// Which fast-path element type `(E, D)` is, if any (and the switch is on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    F32,
    F64,
    /// `f32` on dfdx's `Cuda` (the kernels of [`super::cuda`]).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    CudaF32,
}

pub(crate) fn kind<E: 'static, D: 'static>() -> Option<Kind> {
    #[cfg(feature = "cuda")]
    if super::cuda::is_cuda_f32::<E, D>() && fused_enabled() {
        return Some(Kind::CudaF32);
    }
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
