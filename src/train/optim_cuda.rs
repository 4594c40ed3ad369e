//! The fused CUDA arm of [`super`]'s tensor path (gadms-nn's `AdamBatch` and `sum_squares`):
//! every parameter's update is gathered during the walk over the model and run as one kernel
//! launch (`adam_multi`) that reads each gradient in place and updates the parameter and both
//! moments in place, where the tensor path runs about a dozen dfdx ops per tensor, each with a
//! buffer of its own; the gradient norm is one launch and one copy of per-block partial sums
//! for all tensors, where the tensor path copied one scalar back per tensor. Taken on
//! `(f32, Cuda)` when the fused switch is on (`GADMS_FUSED=0` turns it off); `tests/cuda.rs`
//! checks it against the host update.

use super::{Adam, Coeffs, moments_on_device};
use dfdx::prelude::*;
use gadms_nn::fast::{AdamBatch, AdamCoeffs, CudaVec};
use std::any::Any;

/// The gradient of `t` as CUDA `f32` storage, read in place; `None` off that path.
pub(super) fn cuda_grad<'g, S: Shape, E: Dtype, D: Storage<E>>(
    grads: &'g Gradients<E, D>,
    t: &Tensor<S, E, D>,
) -> Option<&'g CudaVec> {
    if !gadms_nn::fast::fused_enabled() {
        return None;
    }
    let g = grads.get_ref_checked(t)?;
    (g as &dyn Any).downcast_ref::<CudaVec>()
}

/// The gradients of the norm pass that take the fused path, and their device.
#[derive(Default)]
pub(super) struct NormGrads<'a> {
    dev: Option<Cuda>,
    grads: Vec<&'a CudaVec>,
}

impl<'a> NormGrads<'a> {
    /// Takes `t`'s gradient when it is CUDA `f32` storage; `false` otherwise.
    pub(super) fn take<S: Shape, E: Dtype, D: Storage<E>>(
        &mut self,
        grads: &'a Gradients<E, D>,
        t: &Tensor<S, E, D>,
    ) -> bool {
        let Some(g) = cuda_grad(grads, t) else {
            return false;
        };
        if self.dev.is_none() {
            self.dev = (t.device() as &dyn Any).downcast_ref::<Cuda>().cloned();
        }
        self.grads.push(g);
        true
    }

    /// `Σ g²` over every taken gradient (one host copy for all of them).
    pub(super) fn sum(&self) -> f64 {
        match &self.dev {
            Some(dev) => gadms_nn::fast::sum_squares(dev, &self.grads).iter().sum(),
            None => 0.0,
        }
    }
}

/// The fused update of one parameter, added to `batch` (launched by the caller after the walk
/// over the model): `true` when taken, `false` to take the other paths.
pub(super) fn update<S: Shape, E: Dtype, D: Storage<E>>(
    opt: &mut Adam,
    t: &mut Tensor<S, E, D>,
    grads: &Gradients<E, D>,
    name: &str,
    k: &Coeffs,
    batch: &mut AdamBatch,
) -> bool {
    let Some(g) = cuda_grad(grads, t) else {
        return false;
    };
    let Some(t) = (t as &mut dyn Any).downcast_mut::<Tensor<S, f32, Cuda>>() else {
        return false;
    };
    let (m, v) = moments_on_device::<S, Cuda>(opt, name, t);
    let k = AdamCoeffs {
        b1: k.b1,
        b2: k.b2,
        eps: k.eps,
        bc1: k.bc1,
        bc2_sqrt: k.bc2_sqrt,
        lr: k.lr,
        l2: k.l2,
        decoupled: k.decoupled,
        scale: k.scale,
    };
    batch.push(t, g, m, v, k).is_some()
}
