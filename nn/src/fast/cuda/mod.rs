//! The CUDA arm of the fused ops on dfdx's `Cuda` device (`kernels/fused.cu`, compiled to PTX
//! by `build.rs`), each with its backward: QuickGELU, LayerNorm and linear layers (one GEMM for
//! all rows, the bias and the residual in one kernel) in [`layers`]; the attention core
//! (flash-style: no `[B, H, S, S]` probabilities kept) in [`attn`]; the masked-token cross
//! entropy and the SDM loss in [`loss`]; GASS's per-layer maps in [`gass`]; Adam and the
//! gradient norm in [`adam`]; the bf16 copies the backward keeps under `--precision bf16`
//! (linear layers' and QuickGELU's inputs) in [`bf16`]. This module loads and launches them. The wrappers in [`super`]
//! call these when the tensors are contiguous `f32` on CUDA and the switch is on
//! ([`super::set_fused`], `GADMS_FUSED=0`); otherwise dfdx's composition runs, and
//! `tests/cuda/kernels.rs` compares the two with the CPU.
//!
//! The kernels run on the device's stream, like dfdx's own, so they are ordered with cuBLAS
//! and dfdx's kernels. Backward kernels add into the gradient buffers. A failed launch is a
//! panic with the kernel's name, as in dfdx's own infallible ops: it means a broken device.

use cudarc::driver::{CudaFunction, DevicePtr, LaunchAsync, LaunchConfig};
use dfdx::prelude::*;
use dfdx::tensor::{Cuda, Tensorlike};
use std::any::Any;
use std::sync::Mutex;

/// The kernels' PTX (empty in a `ci-check` build, which never runs them).
const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/fused.ptx"));
const MODULE: &str = "gadms_fused";
const NAMES: [&str; 28] = [
    "quick_gelu_fwd",
    "quick_gelu_fwd_bf16",
    "quick_gelu_bwd_bf16",
    "to_bf16",
    "bias_add_fwd",
    "bias_residual_fwd",
    "add_assign",
    "col_sum_partial",
    "col_sum_reduce",
    "quick_gelu_bwd",
    "layer_norm_fwd",
    "layer_norm_bwd_x",
    "layer_norm_bwd_params",
    "layer_norm_bwd_reduce",
    "attn_fwd",
    "attn_bwd_q",
    "attn_bwd_kv",
    "gass_layer_map",
    "adam_multi",
    "sum_squares_multi",
    "ce_fwd",
    "ce_sum",
    "ce_bwd",
    "sdm_unit",
    "sdm_gram",
    "sdm_kl",
    "sdm_loss_dg",
    "sdm_back",
];
/// Threads per block of the elementwise and row kernels.
const THREADS: u32 = 256;
/// Warps per block of the attention kernels (one query or key row per warp).
const ATTN_WARPS: u32 = 4;
/// Largest key count of the fused attention (its rows of scores live in shared memory).
pub(crate) const ATTN_MAX_KEYS: usize = 1024;
/// Largest head width of the fused attention (`ATTN_HD_LANES` · 32 in the kernel; GASS's
/// single head over all of `W` = 512 fits).
pub(crate) const ATTN_MAX_HEAD: usize = 512;
/// Rows per partial column sum (LayerNorm's `dγ`, `dβ`; a bias's gradient).
const LN_CHUNK: usize = 64;

type Vec32 = <Cuda as Storage<f32>>::Vec;

/// Whether `D` is dfdx's `Cuda` and `E` is `f32`.
pub(crate) fn is_cuda_f32<E: 'static, D: 'static>() -> bool {
    use std::any::TypeId;
    TypeId::of::<D>() == TypeId::of::<Cuda>() && TypeId::of::<E>() == TypeId::of::<f32>()
}

/// A driver error as its code: cudarc's `Debug` asks the driver for a description and panics
/// where the driver has none.
fn code(e: &cudarc::driver::DriverError) -> String {
    format!("{:?}", e.0)
}

/// A dfdx CUDA error, driver errors as their code ([`code`]).
fn cuda_code(e: &dfdx::tensor::CudaError) -> String {
    match e {
        dfdx::tensor::CudaError::Driver(d) => code(d),
        other => format!("{other:?}"),
    }
}

/// The kernel `name`, loading the module into the device's context on first use.
fn func(dev: &Cuda, name: &'static str) -> CudaFunction {
    static LOAD: Mutex<()> = Mutex::new(());
    let d = dev.cuda_device();
    if !d.has_func(MODULE, name) {
        let _once = LOAD.lock().unwrap_or_else(|e| e.into_inner());
        if !d.has_func(MODULE, name) {
            d.load_ptx(PTX.into(), MODULE, &NAMES)
                .unwrap_or_else(|e| panic!("loading the fused CUDA kernels: {}", code(&e)));
        }
    }
    d.get_func(MODULE, name)
        .expect("the module holds every kernel of NAMES")
}

/// Launches `name` with `params` on the device's stream.
fn launch<P>(dev: &Cuda, name: &'static str, cfg: LaunchConfig, params: P)
where
    CudaFunction: LaunchAsync<P>,
{
    // SAFETY: every caller passes the kernel's parameter list in order, with device
    // pointers to buffers of the sizes the kernel reads and writes.
    unsafe { func(dev, name).launch(cfg, params) }
        .unwrap_or_else(|e| panic!("CUDA kernel {name}: {}", code(&e)));
}

/// A 1-D launch of `n` threads' work in blocks of [`THREADS`] (grid-stride kernels).
fn linear_cfg(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(THREADS as usize).clamp(1, 1 << 20) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// The `Cuda` device behind `dev` (the caller checked [`is_cuda_f32`]).
fn cuda<D: 'static>(dev: &D) -> &Cuda {
    (dev as &dyn Any)
        .downcast_ref::<Cuda>()
        .expect("fused CUDA path on a device that is not Cuda")
}

/// The device pointer of a CUDA `f32` tensor's data.
fn ptr<S: Shape, E: Dtype, D: Storage<E>>(t: &impl Tensorlike<S, E, D>) -> u64 {
    let v: &D::Vec = t.data().expect("a tensor always has data");
    let v = (v as &dyn Any).downcast_ref::<Vec32>();
    *v.expect("fused CUDA path: not an f32 CUDA tensor")
        .device_ptr()
}

/// The device pointer of `t`'s gradient (allocated, zeroed, on first use).
fn grad_ptr<S: Shape, E: Dtype, D: Storage<E>>(
    grads: &mut Gradients<E, D>,
    t: &impl Tensorlike<S, E, D>,
) -> Result<u64, D::Err> {
    let g = grads.get_or_alloc_mut(t)?;
    let g = (g as &mut dyn Any).downcast_mut::<Vec32>();
    Ok(*g
        .expect("fused CUDA path: gradient is not f32 CUDA storage")
        .device_ptr())
}

/// A new uninitialised CUDA tensor of `shape` (every element is written by the caller's
/// kernel) and its device pointer.
fn empty<S: Shape, E: Dtype, D: Device<E>>(dev: &Cuda, shape: S) -> (Tensor<S, E, D>, u64) {
    let n = shape.num_elements();
    // SAFETY: the launching kernel writes all `n` elements before anything reads them.
    let slice = unsafe { dev.alloc_empty::<f32>(n) }
        .unwrap_or_else(|e| panic!("CUDA allocation of {n} floats: {}", cuda_code(&e)));
    let t = dev.build_tensor(shape, shape.strides(), slice);
    let p = ptr(&t);
    let t = *(Box::new(t) as Box<dyn Any>)
        .downcast::<Tensor<S, E, D>>()
        .expect("fused CUDA path: element type mismatch");
    (t, p)
}

/// Scratch memory of `n` floats that lives as long as the returned slice.
fn scratch(dev: &Cuda, n: usize) -> (cudarc::driver::CudaSlice<f32>, u64) {
    // SAFETY: the kernels write every element before reading it.
    let s = unsafe { dev.cuda_device().alloc::<f32>(n.max(1)) }
        .unwrap_or_else(|e| panic!("CUDA allocation of {n} floats: {}", code(&e)));
    let p = *s.device_ptr();
    (s, p)
}

/// Scratch memory of `n` doubles that lives as long as the returned slice.
fn scratch_f64(dev: &Cuda, n: usize) -> (cudarc::driver::CudaSlice<f64>, u64) {
    // SAFETY: the kernels write every element before reading it.
    let s = unsafe { dev.cuda_device().alloc::<f64>(n.max(1)) }
        .unwrap_or_else(|e| panic!("CUDA allocation of {n} doubles: {}", code(&e)));
    let p = *s.device_ptr();
    (s, p)
}

/// `v` copied to a new buffer on `dev`, counted in dfdx's transfer counters (`what` names the
/// data in the error).
fn to_device<T: cudarc::driver::DeviceRepr + Unpin>(
    dev: &Cuda,
    v: Vec<T>,
    what: &str,
) -> cudarc::driver::CudaSlice<T> {
    dfdx::tensor::count_to_device(std::mem::size_of_val(v.as_slice()));
    dev.cuda_device()
        .htod_copy(v)
        .unwrap_or_else(|e| panic!("copying {what} to the GPU: {}", code(&e)))
}

/// `s` copied to the host (a wait for the GPU), counted in dfdx's transfer counters.
fn to_host<T: cudarc::driver::DeviceRepr + Default + Clone>(
    dev: &Cuda,
    s: &cudarc::driver::CudaSlice<T>,
    what: &str,
) -> Vec<T> {
    use cudarc::driver::DeviceSlice;
    dfdx::tensor::count_to_host(s.len() * std::mem::size_of::<T>());
    dev.cuda_device()
        .dtoh_sync_copy(s)
        .unwrap_or_else(|e| panic!("copying {what} from the GPU: {}", code(&e)))
}

mod adam;
mod attn;
mod bf16;
mod gass;
mod layers;
mod loss;

pub use adam::{AdamBatch, AdamCoeffs, CudaVec, sum_squares};
pub(crate) use attn::{attention, attention_fits};
pub(crate) use gass::{GassLayerTensors, gass_maps, gass_on_device};
pub(crate) use layers::{layer_norm, linear, linear_residual, quick_gelu};
pub(crate) use loss::{cross_entropy, sdm};
