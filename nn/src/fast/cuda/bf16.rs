//! What the backward pass keeps under `--precision bf16`, stored in bf16 as PyTorch's autocast
//! stores it: the input of every linear layer (for `dW`) and the input of QuickGELU.
//!
//! A linear layer's product already rounds its inputs to bf16 in this mode
//! (`CUBLAS_COMPUTE_32F_FAST_16BF`), so keeping `bf16(x)` instead of `x` changes nothing in
//! `dW = dyᵀ·x`: the backward rounds `dy` the same way and runs `cublasGemmEx` on the two bf16
//! copies with `f32` sums. QuickGELU's derivative is taken at `bf16(x)`, as under autocast,
//! where QuickGELU's input is the bf16 output of the product before it. The `f32` tensors are
//! freed as soon as the forward pass has used them, which halves the memory of these
//! activations (the MLP's and every product input's); projections of one input (q, k, v)
//! share one copy. Everything else the backward keeps stays `f32` (LayerNorm's inputs, the
//! attention core's q, k, v and output), so the attention output is kept twice: `f32` by the
//! attention core and bf16 by the output projection.
//!
//! Per token and layer of a tower of width `W`, the backward keeps about `16·W` floats' worth
//! in `f32` and `11.5·W` with these copies.

use super::*;
use cudarc::cublas::result::gemm_ex;
use cudarc::cublas::sys::{
    cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType_t,
};
use dfdx::tensor::{MatmulPrecision, UniqueId};
use std::sync::{Arc, Weak};

/// Whether the backward pass keeps bf16 copies on `dev`: its products run in bf16, and the
/// environment does not say `GADMS_BF16_COPIES=0` (which keeps `f32` inputs as under `f32`
/// and `tf32`, for comparing the two on a GPU).
pub(crate) fn keeps_bf16(dev: &Cuda) -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let on = *ON.get_or_init(|| std::env::var("GADMS_BF16_COPIES").map_or(true, |v| v != "0"));
    on && dev.matmul_precision() == MatmulPrecision::Bf16
}

/// bf16 bits on the device (`u16`, as cuBLAS's `CUDA_R_16BF` reads them).
type Bf16Slice = cudarc::driver::CudaSlice<u16>;

/// A new buffer of `n` bf16 values (and its device pointer), for a kernel that writes every
/// element before anything reads it.
fn empty_bf16(dev: &Cuda, n: usize) -> (Bf16Slice, u64) {
    // SAFETY: the callers' kernels write all `n` elements before anything reads them.
    let s = unsafe { dev.cuda_device().alloc::<u16>(n.max(1)) }
        .unwrap_or_else(|e| panic!("CUDA allocation of {n} bf16 values: {}", code(&e)));
    let p = *s.device_ptr();
    (s, p)
}

/// `bf16(src)` for the `n` floats at `src`, in a new buffer (and its device pointer).
fn to_bf16(dev: &Cuda, src: u64, n: usize) -> (Bf16Slice, u64) {
    let (s, p) = empty_bf16(dev, n);
    launch(dev, "to_bf16", linear_cfg(n), (n as u64, src, p));
    (s, p)
}

/// The bf16 copy of `x` (`n` floats) for the backward: the last copy made when it copies the
/// same tensor (the q, k and v projections read one input and keep one copy of it, as
/// PyTorch's packed in-projection of `nn.MultiheadAttention` does), a new one otherwise.
fn kept_copy<S: Shape, E: Dtype, D: Storage<E>>(
    dev: &Cuda,
    x: &impl Tensorlike<S, E, D>,
    n: usize,
) -> Arc<Bf16Slice> {
    type Last = Option<(UniqueId, u64, usize, Weak<Bf16Slice>)>;
    static LAST: Mutex<Last> = Mutex::new(None);
    let key = (x.id(), ptr(x), n);
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((id, p, len, copy)) = last.as_ref()
        && (*id, *p, *len) == key
        && let Some(copy) = copy.upgrade()
    {
        return copy;
    }
    let copy = Arc::new(to_bf16(dev, key.1, n).0);
    *last = Some((key.0, key.1, n, Arc::downgrade(&copy)));
    copy
}

/// One operand of [`gemm`]: a row-major matrix at `ptr` with row stride `ld`, used as stored
/// (`trans = false`) or transposed.
#[derive(Clone, Copy)]
struct Operand {
    ptr: u64,
    bf16: bool,
    ld: usize,
    trans: bool,
}

/// `C = A·B`, or `C += A·B` with `acc`, row-major: `A` [m, k], `B` [k, n] (each as
/// [`Operand`] says), `C` [m, n] `f32` with row stride `n`. Both operands `f32` run in the
/// device's precision ([`MatmulPrecision`]); both bf16 run with `f32` sums
/// (`CUBLAS_COMPUTE_32F`). cuBLAS is column-major, so it computes `Cᵀ = Bᵀ·Aᵀ`.
fn gemm(dev: &Cuda, (m, n, k): (usize, usize, usize), a: Operand, b: Operand, c: u64, acc: bool) {
    assert_eq!(a.bf16, b.bf16, "gemm: both operands bf16 or both f32");
    if m == 0 || n == 0 {
        return;
    }
    let (f32_t, bf16_t) = (cudaDataType_t::CUDA_R_32F, cudaDataType_t::CUDA_R_16BF);
    let input_t = if a.bf16 { bf16_t } else { f32_t };
    let compute = match (a.bf16, dev.matmul_precision()) {
        (true, _) | (false, MatmulPrecision::F32) => cublasComputeType_t::CUBLAS_COMPUTE_32F,
        (false, MatmulPrecision::Tf32) => cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32,
        (false, MatmulPrecision::Bf16) => cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_16BF,
    };
    let op = |t: bool| {
        if t {
            cublasOperation_t::CUBLAS_OP_T
        } else {
            cublasOperation_t::CUBLAS_OP_N
        }
    };
    let dim = |v: usize| i32::try_from(v).expect("gemm: a dimension over i32::MAX");
    let (alpha, beta) = (1.0f32, if acc { 1.0f32 } else { 0.0 });
    // SAFETY: the callers pass pointers to live buffers of the sizes the shapes and leading
    // dimensions describe; alpha and beta are host scalars (cuBLAS's default pointer mode).
    unsafe {
        gemm_ex(
            *dev.blas().handle(),
            op(b.trans),
            op(a.trans),
            dim(n),
            dim(m),
            dim(k),
            &alpha as *const f32 as *const _,
            b.ptr as *const _,
            input_t,
            dim(b.ld),
            a.ptr as *const _,
            input_t,
            dim(a.ld),
            &beta as *const f32 as *const _,
            c as *mut _,
            f32_t,
            dim(n),
            compute,
            cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        )
    }
    .unwrap_or_else(|e| panic!("cublasGemmEx ({m}×{k}·{k}×{n}): {e:?}"));
}

/// `x·Wᵀ` for `x` [.., I] seen as [rows, I], keeping `bf16(x)` (not `x`) for the backward:
/// one GEMM forward in the device's precision; backward `dx += dy·W` (`f32` operands) and
/// `dW += bf16(dy)ᵀ·bf16(x)` (`f32` sums).
pub(crate) fn rows_product_bf16<S1: Shape, const I: usize, const O: usize, E, D, T>(
    x: Tensor<S1, E, D, T>,
    w: &Tensor<Rank2<O, I>, E, D>,
) -> Tensor<(usize, Const<O>), E, D, T>
where
    E: Dtype,
    D: Device<E>,
    T: Tape<E, D>,
{
    let rows = x.shape().num_elements() / I;
    let (x, mut tape) = x.split_tape();
    let dev = cuda(x.dev()).clone();
    let (out, yp) = empty::<_, E, D>(&dev, (rows, Const::<O>));
    let f32_rows = |ptr, ld| Operand {
        ptr,
        bf16: false,
        ld,
        trans: false,
    };
    let wt = Operand {
        trans: true,
        ..f32_rows(ptr(w), I)
    };
    gemm(&dev, (rows, O, I), f32_rows(ptr(&x), I), wt, yp, false);
    if T::OWNS_TAPE {
        let xb = kept_copy(&dev, &x, rows * I);
        let xbp = *xb.device_ptr();
        // Ghosts only from here: `x`'s f32 buffer is freed when the caller drops its tensor.
        let (w, ghost, x) = (w.clone(), out.ghost(), x.ghost());
        tape.add_backward_op(move |grads| {
            let gy = grad_ptr(grads, &ghost)?;
            let gx = grad_ptr(grads, &x)?;
            let gw = grad_ptr(grads, &w)?;
            let wp = ptr(&w);
            gemm(
                &dev,
                (rows, I, O),
                f32_rows(gy, O),
                f32_rows(wp, I),
                gx,
                true,
            );
            let (_gyb, gybp) = to_bf16(&dev, gy, rows * O);
            let dy_t = Operand {
                ptr: gybp,
                bf16: true,
                ld: O,
                trans: true,
            };
            let xs = Operand {
                ptr: xbp,
                bf16: true,
                ld: I,
                trans: false,
            };
            gemm(&dev, (O, I, rows), dy_t, xs, gw, true);
            let _keep = &xb;
            Ok(())
        });
    }
    out.put_tape(tape)
}

/// QuickGELU keeping `bf16(x)` for the backward (see the module doc); `x` contiguous `f32`,
/// traced ([`super::layers::quick_gelu`] sends untraced tensors to the plain kernel).
pub(crate) fn quick_gelu_bf16<S: Shape, E: Dtype, D: Device<E>, T: Tape<E, D>>(
    x: Tensor<S, E, D, T>,
) -> Tensor<S, E, D, T> {
    let shape = *x.shape();
    let n = shape.num_elements();
    let (x, mut tape) = x.split_tape();
    let dev = cuda(x.dev()).clone();
    let (out, yp) = empty::<S, E, D>(&dev, shape);
    let (xb, xbp) = empty_bf16(&dev, n);
    let params = (n as u64, ptr(&x), yp, xbp);
    launch(&dev, "quick_gelu_fwd_bf16", linear_cfg(n), params);
    let (ghost, x) = (out.ghost(), x.ghost());
    tape.add_backward_op(move |grads| {
        let gy = grad_ptr(grads, &ghost)?;
        let gx = grad_ptr(grads, &x)?;
        let params = (n as u64, xbp, gy, gx);
        launch(&dev, "quick_gelu_bwd_bf16", linear_cfg(n), params);
        let _keep = &xb;
        Ok(())
    });
    out.put_tape(tape)
}
