//! Fused QuickGELU (OpenAI CLIP `x·σ(1.702x)`) as a dfdx op; its slice kernels (and the row
//! softmax of attention) are in [`super::rowwise`].

use super::host::{
    Kind, contiguous, data, grad_mut, kind, par_chunks, put_grad, take_grad, tensor,
};
use super::real::Real;
use dfdx::prelude::*;

/// Elements per parallel task.
const CHUNK: usize = 1 << 14;

/// QuickGELU `x·σ(1.702x)`, one pass forward and one backward; gives `x` back when the fast
/// path does not apply.
pub fn quick_gelu<S: Shape, E: Dtype, D: Device<E>, T: Tape<E, D>>(
    x: Tensor<S, E, D, T>,
) -> Result<Tensor<S, E, D, T>, Tensor<S, E, D, T>> {
    match kind::<E, D>() {
        Some(Kind::F32) if contiguous(&x) => Ok(run::<f32, S, E, D, T>(x)),
        Some(Kind::F64) if contiguous(&x) => Ok(run::<f64, S, E, D, T>(x)),
        #[cfg(feature = "cuda")]
        Some(Kind::CudaF32) if contiguous(&x) => Ok(super::cuda::quick_gelu(x)),
        _ => Err(x),
    }
}

fn run<R: Real, S: Shape, E: Dtype, D: Device<E>, T: Tape<E, D>>(
    x: Tensor<S, E, D, T>,
) -> Tensor<S, E, D, T> {
    let shape = *x.shape();
    let (x, mut tape) = x.split_tape();
    let xs = data::<R, _, _, _, _>(&x);
    let mut y = vec![R::zero(); xs.len()];
    par_chunks(&mut y, CHUNK, |i, c| {
        R::gelu_fwd(&xs[i * CHUNK..][..c.len()], c)
    });
    let out = tensor::<R, _, E, D>(x.dev(), y, shape);
    if T::OWNS_TAPE {
        let ghost = out.ghost();
        tape.add_backward_op(move |grads| {
            let gy = take_grad::<R, _, _, _>(grads, &ghost)?;
            let xs = data::<R, _, _, _, _>(&x);
            let gx = grad_mut::<R, _, _, _>(grads, &x)?;
            par_chunks(gx, CHUNK, |i, c| {
                R::gelu_bwd(&xs[i * CHUNK..][..c.len()], &gy[i * CHUNK..][..c.len()], c)
            });
            put_grad::<R, _, _, _>(grads, &ghost, gy)
        });
    }
    out.put_tape(tape)
}
