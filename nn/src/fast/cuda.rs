//! The CUDA arm of the fused ops on dfdx's `Cuda` device (`kernels/fused.cu`, compiled to PTX
//! by `build.rs`): QuickGELU, LayerNorm, linear layers (one GEMM for all rows and a bias
//! kernel), the attention core (flash-style: no `[B, H, S, S]` probabilities kept), each with
//! its backward, and GASS's per-layer maps. The wrappers in [`super`] call these when the tensors are
//! contiguous `f32` on CUDA and the switch is on ([`super::set_fused`], `GADMS_FUSED=0`);
//! otherwise dfdx's composition runs, and `tests/cuda.rs` compares the two.
//!
//! The kernels run on the device's stream, like dfdx's own, so they are ordered with cuBLAS
//! and dfdx's kernels. Backward kernels add into the gradient buffers. A failed launch is a
//! panic with the kernel's name, as in dfdx's own infallible ops: it means a broken device.

use super::attn::Qkv;
use cudarc::driver::{
    CudaFunction, DevicePtr, DevicePtrMut, DeviceRepr, DeviceSlice, LaunchAsync, LaunchConfig,
};
use dfdx::prelude::*;
use dfdx::tensor::{Cuda, Tensorlike};
use std::any::Any;
use std::sync::Mutex;

/// The kernels' PTX (empty in a `ci-check` build, which never runs them).
const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/fused.ptx"));
const MODULE: &str = "gadms_fused";
const NAMES: [&str; 25] = [
    "quick_gelu_fwd",
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
    "adam_step",
    "sum_squares_partial",
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

/// QuickGELU `x·σ(1.702x)` on CUDA (`x` contiguous `f32`).
pub(crate) fn quick_gelu<S: Shape, E: Dtype, D: Device<E>, T: Tape<E, D>>(
    x: Tensor<S, E, D, T>,
) -> Tensor<S, E, D, T> {
    let shape = *x.shape();
    let n = shape.num_elements();
    let (x, mut tape) = x.split_tape();
    let dev = cuda(x.dev()).clone();
    let (out, yp) = empty::<S, E, D>(&dev, shape);
    launch(
        &dev,
        "quick_gelu_fwd",
        linear_cfg(n),
        (n as u64, ptr(&x), yp),
    );
    if T::OWNS_TAPE {
        let ghost = out.ghost();
        tape.add_backward_op(move |grads| {
            let gy = grad_ptr(grads, &ghost)?;
            let gx = grad_ptr(grads, &x)?;
            launch(
                &dev,
                "quick_gelu_bwd",
                linear_cfg(n),
                (n as u64, ptr(&x), gy, gx),
            );
            Ok(())
        });
    }
    out.put_tape(tape)
}

/// A linear layer `y = x·Wᵀ + b` on CUDA for any input `[.., I]`: dfdx's product of all rows
/// at once (`[rows, I]·[I, O]`, one cuBLAS GEMM forward, two backward), then the bias as one
/// kernel whose backward sums `dy` over the rows in a fixed order.
pub(crate) fn linear<S1: Shape, S2: Shape, const I: usize, const O: usize, E, D, T>(
    x: Tensor<S1, E, D, T>,
    w: &Tensor<Rank2<O, I>, E, D>,
    b: Option<&Tensor<Rank1<O>, E, D>>,
    out_shape: S2,
) -> Tensor<S2, E, D, T>
where
    E: Dtype,
    D: Device<E>,
    T: Tape<E, D>,
{
    let rows = x.shape().num_elements() / I;
    let x = x.reshape_like(&(rows, Const::<I>));
    let y = x.matmul(w.retaped::<T>().permute::<_, Axes2<1, 0>>());
    let y = match b {
        Some(b) => bias_add(y, b),
        None => y,
    };
    y.reshape_like(&out_shape)
}

/// `y + b` over the rows of `y` [rows, O].
fn bias_add<const O: usize, E: Dtype, D: Device<E>, T: Tape<E, D>>(
    y: Tensor<(usize, Const<O>), E, D, T>,
    b: &Tensor<Rank1<O>, E, D>,
) -> Tensor<(usize, Const<O>), E, D, T> {
    let shape = *y.shape();
    let (rows, n) = (shape.0, shape.num_elements());
    let (y, mut tape) = y.split_tape();
    let dev = cuda(y.dev()).clone();
    let (out, op) = empty::<_, E, D>(&dev, shape);
    let params = (n as u64, O as i32, ptr(&y), ptr(b), op);
    launch(&dev, "bias_add_fwd", linear_cfg(n), params);
    if T::OWNS_TAPE {
        // Ghosts only: the backward needs no values, so `y`'s buffer is freed now.
        let (b, ghost, y) = (b.clone(), out.ghost(), y.ghost());
        tape.add_backward_op(move |grads| {
            let go = grad_ptr(grads, &ghost)?;
            let gy = grad_ptr(grads, &y)?;
            let gb = grad_ptr(grads, &b)?;
            launch(&dev, "add_assign", linear_cfg(n), (n as u64, go, gy));
            col_sum_add(&dev, (rows, O), go, gb);
            Ok(())
        });
    }
    out.put_tape(tape)
}

/// `residual + x·Wᵀ + b` on CUDA (see [`super::linear_residual`]): one GEMM for all rows,
/// then one kernel for the bias and the residual; the backward passes `dy` to the product and
/// to the residual and sums it over the rows for `db`.
pub(crate) fn linear_residual<B: Dim, S: Dim, const I: usize, const O: usize, E, D, T>(
    x: Tensor<(B, S, Const<I>), E, D, T>,
    w: &Tensor<Rank2<O, I>, E, D>,
    b: &Tensor<Rank1<O>, E, D>,
    residual: Tensor<(B, S, Const<O>), E, D, T>,
) -> Tensor<(B, S, Const<O>), E, D, T>
where
    E: Dtype,
    D: Device<E>,
    T: Tape<E, D>,
{
    let out_shape = *residual.shape();
    let rows = x.shape().num_elements() / I;
    let n = rows * O;
    let x = x.reshape_like(&(rows, Const::<I>));
    let y = x.matmul(w.retaped::<T>().permute::<_, Axes2<1, 0>>());
    let (y, ty) = y.split_tape();
    let (r, tr) = residual.split_tape();
    let mut tape = ty.merge(tr);
    let dev = cuda(y.dev()).clone();
    let (out, op) = empty::<_, E, D>(&dev, out_shape);
    let params = (n as u64, O as i32, ptr(&y), ptr(b), ptr(&r), op);
    launch(&dev, "bias_residual_fwd", linear_cfg(n), params);
    if T::OWNS_TAPE {
        // Ghosts only: the backward needs no values.
        let (b, ghost, y, r) = (b.clone(), out.ghost(), y.ghost(), r.ghost());
        tape.add_backward_op(move |grads| {
            let go = grad_ptr(grads, &ghost)?;
            let (gy, gr) = (grad_ptr(grads, &y)?, grad_ptr(grads, &r)?);
            let gb = grad_ptr(grads, &b)?;
            launch(&dev, "add_assign", linear_cfg(n), (n as u64, go, gy));
            launch(&dev, "add_assign", linear_cfg(n), (n as u64, go, gr));
            col_sum_add(&dev, (rows, O), go, gb);
            Ok(())
        });
    }
    out.put_tape(tape)
}

/// `dst[j] += Σ_r src[r, j]` for `src` [rows, m] on the device: partial sums of
/// [`LN_CHUNK`]-row chunks, then their sum in chunk order (no atomics).
fn col_sum_add(dev: &Cuda, (rows, m): (usize, usize), src: u64, dst: u64) {
    let chunk = LN_CHUNK.max(rows.div_ceil(65_535));
    let chunks = rows.div_ceil(chunk).max(1);
    let (_part, pp) = scratch(dev, chunks * m);
    let cols = m.div_ceil(THREADS as usize) as u32;
    let cfg = LaunchConfig {
        grid_dim: (cols, chunks as u32, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    let (r, mi) = (rows as i32, m as i32);
    launch(dev, "col_sum_partial", cfg, (r, mi, chunk as i32, src, pp));
    let cfg = LaunchConfig {
        grid_dim: (cols, 1, 1),
        ..cfg
    };
    launch(dev, "col_sum_reduce", cfg, (chunks as i32, mi, pp, dst));
}

/// Weighted softmax cross entropy over the rows of `logits` [N, C] on CUDA (see
/// [`super::cross_entropy`]; labels and weights checked there): one block per row forward,
/// the row losses summed in row order on the device, one block per row backward. The labels
/// and weights are copied to the device (N values each); nothing comes back.
pub(crate) fn cross_entropy<C: Dim, E: Dtype, D: Device<E>, T: Tape<E, D>>(
    logits: Tensor<(usize, C), E, D, T>,
    labels: &[usize],
    weights: &[f64],
) -> Tensor<Rank0, E, D, T> {
    let (n, c) = (logits.shape().0, logits.shape().1.size());
    let (z, mut tape) = logits.split_tape();
    let dev = cuda(z.dev()).clone();
    let d = dev.cuda_device();
    let what = "copying the cross entropy's labels and weights to the GPU";
    let labels = d.htod_copy(labels.iter().map(|&l| l as i64).collect::<Vec<_>>());
    let labels = labels.unwrap_or_else(|e| panic!("{what}: {}", code(&e)));
    let weights = d.htod_copy(weights.to_vec());
    let weights = weights.unwrap_or_else(|e| panic!("{what}: {}", code(&e)));
    let (stats, sp) = scratch_f64(&dev, 2 * n);
    let (rows, rp) = scratch_f64(&dev, n);
    let (out, op) = empty::<_, E, D>(&dev, ());
    let row_cfg = LaunchConfig {
        grid_dim: (n.max(1) as u32, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    let (lp, wp, zp) = (*labels.device_ptr(), *weights.device_ptr(), ptr(&z));
    let (ni, ci) = (n as i32, c as i32);
    launch(&dev, "ce_fwd", row_cfg, (ni, ci, zp, lp, wp, sp, rp));
    launch(&dev, "ce_sum", linear_cfg(1), (ni, rp, op));
    drop(rows);
    if T::OWNS_TAPE {
        let ghost = out.ghost();
        tape.add_backward_op(move |grads| {
            let _keep = (&labels, &weights, &stats);
            let gu = grad_ptr(grads, &ghost)?;
            let gz = grad_ptr(grads, &z)?;
            launch(
                &dev,
                "ce_bwd",
                row_cfg,
                (ni, ci, ptr(&z), lp, wp, sp, gu, gz),
            );
            Ok(())
        });
    }
    out.put_tape(tape)
}

/// The SDM loss of image and text features [B, K] on CUDA (see [`super::sdm`]; sizes checked
/// there), in f64 like the CPU kernel: row norms, the Gram matrix, the KL rows of both
/// directions and `dL/dG` in the forward, the two input gradients in the backward. `log_q` is
/// copied to the device (B² values); nothing comes back.
pub(crate) fn sdm<K: Dim, E: Dtype, D: Device<E>, T: Tape<E, D>>(
    image: Tensor<(usize, K), E, D, T>,
    text: Tensor<(usize, K), E, D, T>,
    log_q: &[f64],
    scale: f64,
) -> Tensor<Rank0, E, D, T> {
    let (b, k) = (image.shape().0, image.shape().1.size());
    let (image, ti) = image.split_tape();
    let (text, tt) = text.split_tape();
    let mut tape = ti.merge(tt);
    let dev = cuda(image.dev()).clone();
    let lq = dev.cuda_device().htod_copy(log_q.to_vec());
    let lq = lq.unwrap_or_else(|e| panic!("copying SDM's targets to the GPU: {}", code(&e)));
    let (uv, uvp) = scratch_f64(&dev, b * k);
    let (ut, utp) = scratch_f64(&dev, b * k);
    let (nv, nvp) = scratch_f64(&dev, b);
    let (nt, ntp) = scratch_f64(&dev, b);
    let (g, gp) = scratch_f64(&dev, b * b);
    let (d1, d1p) = scratch_f64(&dev, b * b);
    let (d2, d2p) = scratch_f64(&dev, b * b);
    let (kl1, kl1p) = scratch_f64(&dev, b);
    let (kl2, kl2p) = scratch_f64(&dev, b);
    let (dg, dgp) = scratch_f64(&dev, b * b);
    let (out, op) = empty::<_, E, D>(&dev, ());
    let (bi, ki) = (b as i32, k as i32);
    let rows = LaunchConfig {
        grid_dim: (b.max(1) as u32, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    launch(&dev, "sdm_unit", rows, (bi, ki, ptr(&image), uvp, nvp));
    launch(&dev, "sdm_unit", rows, (bi, ki, ptr(&text), utp, ntp));
    launch(&dev, "sdm_gram", linear_cfg(b * b), (bi, ki, uvp, utp, gp));
    let lqp = *lq.device_ptr();
    launch(
        &dev,
        "sdm_kl",
        linear_cfg(b),
        (bi, scale, gp, lqp, 0i32, d1p, kl1p),
    );
    launch(
        &dev,
        "sdm_kl",
        linear_cfg(b),
        (bi, scale, gp, lqp, 1i32, d2p, kl2p),
    );
    let c = scale / b as f64;
    let params = (bi, c, kl1p, kl2p, d1p, d2p, op, dgp);
    launch(&dev, "sdm_loss_dg", linear_cfg(b * b), params);
    drop((lq, g, d1, d2, kl1, kl2));
    if T::OWNS_TAPE {
        let (gi, gt, ghost) = (image.ghost(), text.ghost(), out.ghost());
        tape.add_backward_op(move |grads| {
            let _keep = (&uv, &ut, &nv, &nt, &dg);
            let up = grad_ptr(grads, &ghost)?;
            let (gx, gy) = (grad_ptr(grads, &gi)?, grad_ptr(grads, &gt)?);
            let cfg = LaunchConfig {
                shared_mem_bytes: (k * 8) as u32,
                ..rows
            };
            launch(
                &dev,
                "sdm_back",
                cfg,
                (bi, ki, dgp, utp, uvp, nvp, 0i32, up, gx),
            );
            launch(
                &dev,
                "sdm_back",
                cfg,
                (bi, ki, dgp, uvp, utp, ntp, 1i32, up, gy),
            );
            Ok(())
        });
    }
    out.put_tape(tape)
}

/// Scratch memory of `n` doubles that lives as long as the returned slice.
fn scratch_f64(dev: &Cuda, n: usize) -> (cudarc::driver::CudaSlice<f64>, u64) {
    // SAFETY: the kernels write every element before reading it.
    let s = unsafe { dev.cuda_device().alloc::<f64>(n.max(1)) }
        .unwrap_or_else(|e| panic!("CUDA allocation of {n} doubles: {}", code(&e)));
    let p = *s.device_ptr();
    (s, p)
}

/// LayerNorm over the last dimension `M` on CUDA (all three tensors contiguous `f32`).
pub(crate) fn layer_norm<S: Shape, const M: usize, E: Dtype, D: Device<E>, T: Tape<E, D>>(
    x: Tensor<S, E, D, T>,
    weight: &Tensor<Rank1<M>, E, D>,
    bias: &Tensor<Rank1<M>, E, D>,
    eps: f64,
) -> Tensor<S, E, D, T> {
    let shape = *x.shape();
    let rows = shape.num_elements() / M;
    let (x, mut tape) = x.split_tape();
    let dev = cuda(x.dev()).clone();
    let (out, yp) = empty::<S, E, D>(&dev, shape);
    let (stats, sp) = scratch(&dev, 2 * rows);
    let row_cfg = LaunchConfig {
        grid_dim: (rows.max(1) as u32, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    let (r, m) = (rows as i32, M as i32);
    let (wp, bp) = (ptr(weight), ptr(bias));
    let params = (r, m, eps as f32, ptr(&x), wp, bp, yp, sp);
    launch(&dev, "layer_norm_fwd", row_cfg, params);
    if T::OWNS_TAPE {
        let (w, b, ghost) = (weight.clone(), bias.clone(), out.ghost());
        tape.add_backward_op(move |grads| {
            let _keep = &stats;
            let gy = grad_ptr(grads, &ghost)?;
            let gx = grad_ptr(grads, &x)?;
            let (gw, gb) = (grad_ptr(grads, &w)?, grad_ptr(grads, &b)?);
            let xp = ptr(&x);
            launch(
                &dev,
                "layer_norm_bwd_x",
                row_cfg,
                (r, m, xp, ptr(&w), sp, gy, gx),
            );
            let chunk = LN_CHUNK.max(rows.div_ceil(65_535));
            let chunks = rows.div_ceil(chunk).max(1);
            let (_part, pp) = scratch(&dev, 2 * chunks * M);
            let cols = M.div_ceil(THREADS as usize) as u32;
            let cfg = LaunchConfig {
                grid_dim: (cols, chunks as u32, 1),
                block_dim: (THREADS, 1, 1),
                shared_mem_bytes: 0,
            };
            let params = (r, m, chunk as i32, xp, sp, gy, pp);
            launch(&dev, "layer_norm_bwd_params", cfg, params);
            let cfg = LaunchConfig {
                grid_dim: (cols, 1, 1),
                ..cfg
            };
            launch(
                &dev,
                "layer_norm_bwd_reduce",
                cfg,
                (chunks as i32, m, pp, gw, gb),
            );
            Ok(())
        });
    }
    out.put_tape(tape)
}

/// The attention kernels' sizes (the `Attn` struct of `kernels/fused.cu`).
#[repr(C)]
#[derive(Clone, Copy)]
struct Attn {
    sq: i32,
    sk: i32,
    w: i32,
    heads: i32,
    hd: i32,
    scale: f32,
}

// SAFETY: a plain `repr(C)` struct of 4-byte fields, laid out as the kernel's `Attn`.
unsafe impl DeviceRepr for Attn {}

/// The grid of the attention kernels over `rows` query or key rows.
fn attn_cfg(rows: usize, heads: usize, batch: usize, shared_floats: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (
            rows.div_ceil(ATTN_WARPS as usize).max(1) as u32,
            heads as u32,
            batch as u32,
        ),
        block_dim: (32 * ATTN_WARPS, 1, 1),
        shared_mem_bytes: (shared_floats * ATTN_WARPS as usize * 4) as u32,
    }
}

/// Whether the fused CUDA attention takes these sizes.
pub(crate) fn attention_fits(batch: usize, sk: usize, w: usize, heads: usize) -> bool {
    heads > 0
        && w.is_multiple_of(heads)
        && w / heads <= ATTN_MAX_HEAD
        && sk <= ATTN_MAX_KEYS
        && batch <= 65_535
        && heads <= 65_535
}

/// The attention core on CUDA (see [`super::attention`]); `q`, `k`, `v` and `mask`
/// contiguous `f32`, sizes checked by [`attention_fits`].
pub(crate) fn attention<B: Dim, Sq: Dim, Sk: Dim, const W: usize, E, D, T>(
    (q, k, v): Qkv<B, Sq, Sk, W, E, D, T>,
    mask: Option<&Tensor<(Sq, Sk), E, D>>,
    heads: usize,
) -> Tensor<(B, Sq, Const<W>), E, D, T>
where
    E: Dtype,
    D: Device<E>,
    T: Tape<E, D> + Merge<T>,
{
    let shape = *q.shape();
    let (b, sq, sk) = (shape.0.size(), shape.1.size(), k.shape().1.size());
    let hd = W / heads;
    let p = Attn {
        sq: sq as i32,
        sk: sk as i32,
        w: W as i32,
        heads: heads as i32,
        hd: hd as i32,
        scale: (1.0 / (hd as f64).sqrt()) as f32,
    };
    let (q, tq) = q.split_tape();
    let (k, tk) = k.split_tape();
    let (v, tv) = v.split_tape();
    let mut tape = tq.merge(tk).merge(tv);
    let dev = cuda(q.dev()).clone();
    let (out, op) = empty::<_, E, D>(&dev, shape);
    let (lse, lp) = scratch(&dev, b * heads * sq);
    let mask = mask.cloned();
    let mp = mask.as_ref().map_or(0, |m| ptr(m));
    let (qp, kp, vp) = (ptr(&q), ptr(&k), ptr(&v));
    let cfg = attn_cfg(sq, heads, b, sk);
    launch(&dev, "attn_fwd", cfg, (p, qp, kp, vp, mp, op, lp));
    if T::OWNS_TAPE {
        let ghost = out.ghost();
        tape.add_backward_op(move |grads| {
            let _keep = (&lse, &mask);
            let gy = grad_ptr(grads, &ghost)?;
            let (gq, gk, gv) = (
                grad_ptr(grads, &q)?,
                grad_ptr(grads, &k)?,
                grad_ptr(grads, &v)?,
            );
            let (_delta, dp) = scratch(&dev, b * heads * sq);
            let cfg = attn_cfg(sq, heads, b, 2 * sk);
            launch(&dev, "attn_bwd_q", cfg, (p, qp, kp, vp, mp, lp, gy, dp, gq));
            let cfg = attn_cfg(sk, heads, b, 0);
            let params = (p, qp, kp, vp, mp, lp, dp, gy, gk, gv);
            launch(&dev, "attn_bwd_kv", cfg, params);
            Ok(())
        });
    }
    out.put_tape(tape)
}

/// Most MSP scales the GASS kernel takes (`GASS_MAX_SCALES`).
pub(crate) const GASS_MAX_SCALES: usize = 4;

/// The GASS kernel's sizes (the `Gass` struct of `kernels/fused.cu`).
#[repr(C)]
#[derive(Clone, Copy)]
struct Gass {
    b: i32,
    s: i32,
    w: i32,
    nscales: i32,
    official: i32,
    scales: [i32; GASS_MAX_SCALES],
}

// SAFETY: a plain `repr(C)` struct of 4-byte fields, laid out as the kernel's `Gass`.
unsafe impl DeviceRepr for Gass {}

/// One re-run layer's device tensors for GASS: `q`, `k`, `v` and `g = ∂trace(C)/∂o_l`, each
/// `[B, S, W]`.
pub(crate) type GassLayerTensors<S, E, D> = [Tensor<S, E, D>; 4];

/// GASS step B on the device (nn/src/gass.rs, `gass_layer_map` in `kernels/fused.cu`): the sum
/// over `layers` of the per-layer maps, `[B·S]` in f64, the only copy back to the host; `None`
/// when a tensor is not contiguous. `eos` [B] must be `< s`, `scales` 1..=[`GASS_MAX_SCALES`]
/// values ≥ 1 (the caller checked).
pub(crate) fn gass_maps<S: Shape, E: Dtype, D: Device<E>>(
    layers: &[GassLayerTensors<S, E, D>],
    eos: &[usize],
    (s, w): (usize, usize),
    scales: &[usize],
    official: bool,
) -> Option<Vec<f64>> {
    let b = eos.len();
    if !layers.iter().flatten().all(|t| super::host::contiguous(t)) {
        return None;
    }
    let Some(first) = layers.first() else {
        return Some(vec![0.0; b * s]);
    };
    let dev = cuda(first[0].dev()).clone();
    let d = dev.cuda_device();
    let eos32: Vec<i32> = eos.iter().map(|&e| e as i32).collect();
    let eos_dev = d
        .htod_copy(eos32)
        .unwrap_or_else(|e| panic!("copying GASS's EOS indices to the GPU: {}", code(&e)));
    let mut total = d
        .alloc_zeros::<f64>(b * s)
        .unwrap_or_else(|e| panic!("CUDA allocation of GASS's map: {}", code(&e)));
    let mut sc = [1i32; GASS_MAX_SCALES];
    sc.iter_mut().zip(scales).for_each(|(d, &c)| *d = c as i32);
    let p = Gass {
        b: b as i32,
        s: s as i32,
        w: w as i32,
        nscales: scales.len() as i32,
        official: i32::from(official),
        scales: sc,
    };
    let cfg = LaunchConfig {
        grid_dim: (b as u32, 1, 1),
        block_dim: (128, 1, 1),
        shared_mem_bytes: ((w + 3 * s) * 8) as u32,
    };
    let (ep, tp) = (*eos_dev.device_ptr(), *total.device_ptr_mut());
    for [q, k, v, g] in layers {
        let params = (p, ptr(q), ptr(k), ptr(v), ptr(g), ep, tp);
        launch(&dev, "gass_layer_map", cfg, params);
    }
    let total = d
        .dtoh_sync_copy(&total)
        .unwrap_or_else(|e| panic!("copying GASS's map from the GPU: {}", code(&e)));
    Some(total)
}

/// Whether [`gass_maps`] takes this configuration on `(E, D)`.
pub(crate) fn gass_on_device<E: 'static, D: 'static>(scales: &[usize], keep_layers: bool) -> bool {
    is_cuda_f32::<E, D>()
        && super::fused_enabled()
        && !keep_layers
        && (1..=GASS_MAX_SCALES).contains(&scales.len())
}

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
