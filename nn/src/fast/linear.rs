//! Fused linear layer `y = x·Wᵀ + b` (PyTorch `nn.Linear`) on the own GEMM: the bias is the
//! GEMM's initial C, the weight is read transposed in place, and the backward is two GEMMs
//! (`dx += dy·W`, `dW += dyᵀ·x`) plus a column sum for `db`.

use super::gemm::{MatRef, gemm, gemm_uninit};
use super::host::{Kind, contiguous, data, grad_mut, kind, put_grad, take_grad, tensor};
use super::real::Real;
use dfdx::nn::modules::{Linear, UnbiasedLinear};
use dfdx::prelude::*;

/// `x` [B, S, I] → [B, S, O] through `lin` (weight [O, I], bias [O]); fused on the CPU, the
/// dfdx module otherwise.
pub fn linear<B: Dim, S: Dim, const I: usize, const O: usize, E, D, T>(
    lin: &Linear<I, O, E, D>,
    x: Tensor<(B, S, Const<I>), E, D, T>,
) -> Tensor<(B, S, Const<O>), E, D, T>
where
    E: Dtype,
    D: Device<E>,
    T: Tape<E, D>,
    Linear<I, O, E, D>:
        Module<Tensor<(B, S, Const<I>), E, D, T>, Output = Tensor<(B, S, Const<O>), E, D, T>>,
{
    let (b, s, _) = *x.shape();
    match try_linear(x, &lin.weight, Some(&lin.bias), (b, s, Const::<O>)) {
        Ok(y) => y,
        Err(x) => lin.forward(x),
    }
}

/// As [`linear`] for a matrix: `x` [N, I] → [N, O] (e.g. the MTP head on gathered rows).
pub fn linear2<N: Dim, const I: usize, const O: usize, E, D, T>(
    lin: &Linear<I, O, E, D>,
    x: Tensor<(N, Const<I>), E, D, T>,
) -> Tensor<(N, Const<O>), E, D, T>
where
    E: Dtype,
    D: Device<E>,
    T: Tape<E, D>,
    Linear<I, O, E, D>:
        Module<Tensor<(N, Const<I>), E, D, T>, Output = Tensor<(N, Const<O>), E, D, T>>,
{
    let n = x.shape().0;
    match try_linear(x, &lin.weight, Some(&lin.bias), (n, Const::<O>)) {
        Ok(y) => y,
        Err(x) => lin.forward(x),
    }
}

/// As [`linear`] without a bias (`UnbiasedLinear`, e.g. the patch embedding).
pub fn linear_unbiased<B: Dim, S: Dim, const I: usize, const O: usize, E, D, T>(
    lin: &UnbiasedLinear<I, O, E, D>,
    x: Tensor<(B, S, Const<I>), E, D, T>,
) -> Tensor<(B, S, Const<O>), E, D, T>
where
    E: Dtype,
    D: Device<E>,
    T: Tape<E, D>,
    UnbiasedLinear<I, O, E, D>:
        Module<Tensor<(B, S, Const<I>), E, D, T>, Output = Tensor<(B, S, Const<O>), E, D, T>>,
{
    let (b, s, _) = *x.shape();
    match try_linear(x, &lin.weight, None, (b, s, Const::<O>)) {
        Ok(y) => y,
        Err(x) => lin.forward(x),
    }
}

/// `residual + lin(x)` for `x` [B, S, I] and `residual` [B, S, O]: on CUDA one GEMM and one
/// kernel for the bias and the residual (forward and backward); elsewhere [`linear`] and
/// dfdx's add, in that order (`residual + y`, as the blocks always computed it).
pub fn linear_residual<B: Dim, S: Dim, const I: usize, const O: usize, E, D, T>(
    lin: &Linear<I, O, E, D>,
    x: Tensor<(B, S, Const<I>), E, D, T>,
    residual: Tensor<(B, S, Const<O>), E, D, T>,
) -> Tensor<(B, S, Const<O>), E, D, T>
where
    E: Dtype,
    D: Device<E>,
    T: Tape<E, D>,
    Linear<I, O, E, D>:
        Module<Tensor<(B, S, Const<I>), E, D, T>, Output = Tensor<(B, S, Const<O>), E, D, T>>,
{
    #[cfg(feature = "cuda")]
    {
        let ok = contiguous(&x)
            && contiguous(&residual)
            && contiguous(&lin.weight)
            && contiguous(&lin.bias)
            && x.shape().0.size() == residual.shape().0.size()
            && x.shape().1.size() == residual.shape().1.size();
        if ok && kind::<E, D>() == Some(Kind::CudaF32) {
            return super::cuda::linear_residual(x, &lin.weight, &lin.bias, residual);
        }
    }
    residual + linear(lin, x)
}

/// The fused op on any input shape whose last dimension is `I`; gives `x` back when the fast
/// path does not apply.
pub fn try_linear<S1: Shape, S2: Shape, const I: usize, const O: usize, E, D, T>(
    x: Tensor<S1, E, D, T>,
    w: &Tensor<Rank2<O, I>, E, D>,
    b: Option<&Tensor<Rank1<O>, E, D>>,
    out_shape: S2,
) -> Result<Tensor<S2, E, D, T>, Tensor<S1, E, D, T>>
where
    E: Dtype,
    D: Device<E>,
    T: Tape<E, D>,
{
    let ok = contiguous(&x) && contiguous(w) && b.is_none_or(|b| contiguous(b));
    match kind::<E, D>() {
        Some(Kind::F32) if ok => Ok(run::<f32, _, _, I, O, E, D, T>(x, w, b, out_shape)),
        Some(Kind::F64) if ok => Ok(run::<f64, _, _, I, O, E, D, T>(x, w, b, out_shape)),
        #[cfg(feature = "cuda")]
        Some(Kind::CudaF32) if ok => Ok(super::cuda::linear(x, w, b, out_shape)),
        _ => Err(x),
    }
}

fn run<R: Real, S1: Shape, S2: Shape, const I: usize, const O: usize, E, D, T>(
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
    assert_eq!(rows * O, out_shape.num_elements(), "linear: output shape");
    let (x, mut tape) = x.split_tape();
    let y = forward::<R>(
        rows,
        (I, O),
        data(&x),
        data(w),
        b.map(|b| data::<R, _, _, _, _>(b)),
    );
    let out = tensor::<R, _, E, D>(x.dev(), y, out_shape);
    if T::OWNS_TAPE {
        let (w, b, ghost) = (w.clone(), b.cloned(), out.ghost());
        tape.add_backward_op(move |grads| {
            let gy = take_grad::<R, _, _, _>(grads, &ghost)?;
            let (xs, ws) = (data::<R, _, _, _, _>(&x), data::<R, _, _, _, _>(&w));
            let gx = grad_mut::<R, _, _, _>(grads, &x)?;
            gemm(
                (rows, I, O),
                MatRef::rows(&gy, 0, O),
                MatRef::rows(ws, 0, I),
                gx,
                0,
                I,
                true,
            );
            let gw = grad_mut::<R, _, _, _>(grads, &w)?;
            gemm(
                (O, I, rows),
                MatRef::cols(&gy, 0, O),
                MatRef::rows(xs, 0, I),
                gw,
                0,
                I,
                true,
            );
            if let Some(b) = &b {
                let gb = grad_mut::<R, _, _, _>(grads, b)?;
                for row in gy.chunks_exact(O) {
                    gb.iter_mut().zip(row).for_each(|(g, &d)| *g = *g + d);
                }
            }
            put_grad::<R, _, _, _>(grads, &ghost, gy)
        });
    }
    out.put_tape(tape)
}

/// `y[r, o] = b[o] + Σ_i x[r, i]·w[o, i]`, rows × O.
fn forward<R: Real>(
    rows: usize,
    (i, o): (usize, usize),
    x: &[R],
    w: &[R],
    b: Option<&[R]>,
) -> Vec<R> {
    let n = rows * o;
    let mut y: Vec<R> = Vec::with_capacity(n);
    let (xm, wm) = (MatRef::rows(x, 0, i), MatRef::cols(w, 0, i));
    // The output is written once, without a zero-fill first: bias rows into the spare
    // capacity and then `C += x·Wᵀ`, or `C = x·Wᵀ` straight away.
    // SAFETY: `y` has capacity `n`; every one of the `rows×o` elements is written (bias copy,
    // or the overwriting product, which stores every element of C) before `set_len`.
    unsafe {
        let c = y.as_mut_ptr();
        if let Some(b) = b {
            for r in 0..rows {
                std::ptr::copy_nonoverlapping(b.as_ptr(), c.add(r * o), o);
            }
        }
        gemm_uninit((rows, o, i), xm, wm, c, o, b.is_some());
        y.set_len(n);
    }
    y
}
