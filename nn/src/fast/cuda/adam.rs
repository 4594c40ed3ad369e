//! Adam and the gradient norm on CUDA.

use super::*;
use cudarc::driver::{DevicePtrMut, DeviceRepr, DeviceSlice};

/// Adam's scalars for [`adam_step`] (the `Coeffs` of gadms' `src/train/optim.rs`; the
/// `AdamK` struct of `kernels/fused.cu`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct AdamCoeffs {
    /// β₁.
    pub b1: f32,
    /// β₂.
    pub b2: f32,
    /// ε.
    pub eps: f32,
    /// `1 − β₁ᵗ`.
    pub bc1: f32,
    /// `√(1 − β₂ᵗ)`.
    pub bc2_sqrt: f32,
    /// The learning rate.
    pub lr: f32,
    /// Coupled L2 coefficient (0 when decoupled).
    pub l2: f32,
    /// Decoupled decay coefficient (0 when coupled).
    pub decoupled: f32,
    /// Gradient scale from norm clipping.
    pub scale: f32,
}

// SAFETY: a plain `repr(C)` struct of `f32` fields, laid out as the kernel's `AdamK`.
unsafe impl DeviceRepr for AdamCoeffs {}

/// The CUDA storage of an `f32` tensor.
pub type CudaVec = <Cuda as Storage<f32>>::Vec;

/// One Adam update of a dense `f32` CUDA parameter `p` in place, with its gradient `g` and
/// moments `m`, `v` (dense, `p`'s size), as one kernel (`adam_step`): the operations of
/// gadms' host update in the same order. `None` (nothing done) when a size differs.
pub fn adam_step<S: Shape>(
    p: &mut Tensor<S, f32, Cuda>,
    g: &CudaVec,
    m: &mut Tensor<S, f32, Cuda>,
    v: &mut Tensor<S, f32, Cuda>,
    k: AdamCoeffs,
) -> Option<()> {
    let n = p.shape().num_elements();
    let dense =
        |t: &Tensor<S, f32, Cuda>| Tensorlike::len(t) == n && t.strides() == t.shape().strides();
    if g.len() != n || !dense(p) || !dense(m) || !dense(v) {
        return None;
    }
    let dev = p.device().clone();
    let pp = *p.storage_mut().device_ptr();
    let (mp, vp) = (*m.storage_mut().device_ptr(), *v.storage_mut().device_ptr());
    launch(
        &dev,
        "adam_step",
        linear_cfg(n),
        (n as u64, k, pp, *g.device_ptr(), mp, vp),
    );
    Some(())
}

/// Blocks of the sum-of-squares kernel (a fixed grid: the summation order never changes).
const SQ_BLOCKS: usize = 256;

/// `Σ g²` in f64 of each of `grads` on `dev`: per-block partial sums on the device, one copy
/// of all of them to the host, added there in order.
pub fn sum_squares(dev: &Cuda, grads: &[&CudaVec]) -> Vec<f64> {
    if grads.is_empty() {
        return Vec::new();
    }
    let d = dev.cuda_device();
    let mut part = d
        .alloc_zeros::<f64>(grads.len() * SQ_BLOCKS)
        .unwrap_or_else(|e| panic!("CUDA allocation of the gradient-norm sums: {}", code(&e)));
    let base = *part.device_ptr_mut();
    let cfg = LaunchConfig {
        grid_dim: (SQ_BLOCKS as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    for (i, g) in grads.iter().enumerate() {
        let slot = base + (i * SQ_BLOCKS * 8) as u64;
        launch(
            dev,
            "sum_squares_partial",
            cfg,
            (g.len() as u64, *g.device_ptr(), slot),
        );
    }
    let host = d
        .dtoh_sync_copy(&part)
        .unwrap_or_else(|e| panic!("copying the gradient-norm sums from the GPU: {}", code(&e)));
    host.chunks_exact(SQ_BLOCKS)
        .map(|c| c.iter().sum())
        .collect()
}
