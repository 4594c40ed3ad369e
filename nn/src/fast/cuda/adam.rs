//! Adam and the gradient norm on CUDA.

use super::*;
use cudarc::driver::{DeviceRepr, DeviceSlice};

/// Adam's scalars of one tensor for [`AdamBatch`] (the `Coeffs` of gadms' `src/train/optim.rs`; the
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

/// The size of `p` and the device addresses of `p`, `g`, `m` and `v`, written in place by the
/// update (a shared buffer is copied first, as for any in-place write); `None` unless `g`, `m`
/// and `v` hold exactly `p`'s values and all three tensors are dense.
fn pointers<S: Shape>(
    p: &mut Tensor<S, f32, Cuda>,
    g: &CudaVec,
    m: &mut Tensor<S, f32, Cuda>,
    v: &mut Tensor<S, f32, Cuda>,
) -> Option<(usize, [u64; 4])> {
    let n = p.shape().num_elements();
    let dense =
        |t: &Tensor<S, f32, Cuda>| Tensorlike::len(t) == n && t.strides() == t.shape().strides();
    if g.len() != n || !dense(p) || !dense(m) || !dense(v) {
        return None;
    }
    let ptr = |t: &mut Tensor<S, f32, Cuda>| *t.storage_mut().device_ptr();
    Some((n, [ptr(p), *g.device_ptr(), ptr(m), ptr(v)]))
}

/// Elements per block of `adam_multi` (`ADAM_CHUNK` in `kernels/fused.cu`).
const ADAM_CHUNK: u64 = 4096;

/// One tensor of [`AdamBatch`] (the kernel's `AdamTensor`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct AdamTensor {
    n: u64,
    first_block: u64,
    p: u64,
    g: u64,
    m: u64,
    v: u64,
    k: AdamCoeffs,
}

// SAFETY: a plain `repr(C)` struct of `u64` and `f32` fields, laid out as the kernel's
// `AdamTensor` (six 8-byte fields, then `AdamK`, padded to 88 bytes in both).
unsafe impl DeviceRepr for AdamTensor {}

/// Adam updates of many tensors gathered for one kernel launch (`adam_multi`), the way
/// PyTorch's multi-tensor (`foreach`) Adam updates every parameter at once: the table of
/// tensors goes to the device in one copy, and each block updates one chunk of one tensor,
/// every element with the operations of gadms' host update in the same order. Holds raw
/// device pointers: [`AdamBatch::launch`]
/// must run while every pushed tensor and gradient is alive and unmoved on the device (the
/// optimiser pushes during its walk over the model and launches right after it).
#[derive(Default)]
pub struct AdamBatch {
    dev: Option<Cuda>,
    rows: Vec<AdamTensor>,
    blocks: u64,
}

impl AdamBatch {
    /// Adds the in-place update of the dense `f32` parameter `p` from its gradient `g` with its
    /// moments `m`, `v` (dense, `p`'s size); `None` (nothing added) when a size differs.
    pub fn push<S: Shape>(
        &mut self,
        p: &mut Tensor<S, f32, Cuda>,
        g: &CudaVec,
        m: &mut Tensor<S, f32, Cuda>,
        v: &mut Tensor<S, f32, Cuda>,
        k: AdamCoeffs,
    ) -> Option<()> {
        let (n, [p_ptr, g_ptr, m_ptr, v_ptr]) = pointers(p, g, m, v)?;
        if n == 0 {
            return Some(());
        }
        if self.dev.is_none() {
            self.dev = Some(p.device().clone());
        }
        self.rows.push(AdamTensor {
            n: n as u64,
            first_block: self.blocks,
            p: p_ptr,
            g: g_ptr,
            m: m_ptr,
            v: v_ptr,
            k,
        });
        self.blocks += (n as u64).div_ceil(ADAM_CHUNK);
        Some(())
    }

    /// Runs every pushed update in one launch and empties the batch.
    pub fn launch(&mut self) {
        let (Some(dev), false) = (self.dev.take(), self.rows.is_empty()) else {
            return;
        };
        let rows = std::mem::take(&mut self.rows);
        let count = rows.len() as i32;
        let table = to_device(&dev, rows, "the Adam update table");
        let cfg = LaunchConfig {
            grid_dim: (self.blocks as u32, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        self.blocks = 0;
        launch(&dev, "adam_multi", cfg, (&table, count));
    }
}

/// Blocks per tensor of the sum-of-squares kernel (`SQ_BLOCKS` in `kernels/fused.cu`: a fixed
/// grid, so the summation order never changes).
const SQ_BLOCKS: usize = 256;

/// `Σ g²` in f64 of each of `grads` on `dev`, in one launch: per-block partial sums on the
/// device, one copy of all of them to the host, added there in order.
pub fn sum_squares(dev: &Cuda, grads: &[&CudaVec]) -> Vec<f64> {
    if grads.is_empty() {
        return Vec::new();
    }
    let mut part = dev
        .cuda_device()
        .alloc_zeros::<f64>(grads.len() * SQ_BLOCKS)
        .unwrap_or_else(|e| panic!("CUDA allocation of the gradient-norm sums: {}", code(&e)));
    let sizes: Vec<u64> = grads.iter().map(|g| g.len() as u64).collect();
    let ptrs: Vec<u64> = grads.iter().map(|g| *g.device_ptr()).collect();
    let sizes = to_device(dev, sizes, "the gradient sizes");
    let ptrs = to_device(dev, ptrs, "the gradient addresses");
    let cfg = LaunchConfig {
        grid_dim: ((grads.len() * SQ_BLOCKS) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    launch(dev, "sum_squares_multi", cfg, (&sizes, &ptrs, &mut part));
    let host = to_host(dev, &part, "the gradient-norm sums");
    host.chunks_exact(SQ_BLOCKS)
        .map(|c| c.iter().sum())
        .collect()
}
