//! Fused LayerNorm over the last dimension (PyTorch `nn.LayerNorm(M)`, biased variance,
//! `ε` inside the square root): one pass for the row statistics, one for the output; the
//! backward is one pass per row plus per-thread partial sums for `dγ`, `dβ`.
//!
//! Forward: `x̂ = (x − μ)·r`, `r = 1/√(σ² + ε)`, `y = x̂·γ + β`.
//! Backward: `g = dy·γ`, `dx = r·(g − mean(g) − x̂·mean(g·x̂))`, `dγ = Σ dy·x̂`, `dβ = Σ dy`.

use super::host::{Kind, contiguous, data, grad_mut, kind, put_grad, take_grad, tensor};
use super::real::Real;
use dfdx::prelude::*;
use rayon::prelude::*;

/// Rows per parallel task.
const ROWS: usize = 16;

/// `x` [.., M] normalised per row with `weight`, `bias` [M]; gives `x` back when the fast
/// path does not apply.
pub fn layer_norm<S: Shape, const M: usize, E, D, T>(
    x: Tensor<S, E, D, T>,
    weight: &Tensor<Rank1<M>, E, D>,
    bias: &Tensor<Rank1<M>, E, D>,
    eps: f64,
) -> Result<Tensor<S, E, D, T>, Tensor<S, E, D, T>>
where
    E: Dtype,
    D: Device<E>,
    T: Tape<E, D>,
{
    let ok = contiguous(&x) && contiguous(weight) && contiguous(bias);
    match kind::<E, D>() {
        Some(Kind::F32) if ok => Ok(run::<f32, S, M, E, D, T>(x, weight, bias, eps)),
        Some(Kind::F64) if ok => Ok(run::<f64, S, M, E, D, T>(x, weight, bias, eps)),
        #[cfg(feature = "cuda")]
        Some(Kind::CudaF32) if ok => Ok(super::cuda::layer_norm(x, weight, bias, eps)),
        _ => Err(x),
    }
}

fn run<R: Real, S: Shape, const M: usize, E: Dtype, D: Device<E>, T: Tape<E, D>>(
    x: Tensor<S, E, D, T>,
    weight: &Tensor<Rank1<M>, E, D>,
    bias: &Tensor<Rank1<M>, E, D>,
    eps: f64,
) -> Tensor<S, E, D, T> {
    let shape = *x.shape();
    let (x, mut tape) = x.split_tape();
    let (xs, ws, bs) = (
        data::<R, _, _, _, _>(&x),
        data::<R, _, _, _, _>(weight),
        data(bias),
    );
    let rows = xs.len() / M;
    let eps = R::from(eps).unwrap();
    let mut stats = vec![R::zero(); 2 * rows];
    let mut y = vec![R::zero(); xs.len()];
    y.par_chunks_mut(ROWS * M)
        .zip(stats.par_chunks_mut(2 * ROWS))
        .enumerate()
        .for_each(|(t, (yc, sc))| {
            for (r, (yr, st)) in yc
                .chunks_exact_mut(M)
                .zip(sc.chunks_exact_mut(2))
                .enumerate()
            {
                let xr = &xs[(t * ROWS + r) * M..][..M];
                let (mean, rstd) = row_stats(xr, eps);
                st.copy_from_slice(&[mean, rstd]);
                for (((o, &v), &g), &b) in yr.iter_mut().zip(xr).zip(ws).zip(bs) {
                    *o = (v - mean) * rstd * g + b;
                }
            }
        });
    let out = tensor::<R, _, E, D>(x.dev(), y, shape);
    if T::OWNS_TAPE {
        let (w, b, ghost) = (weight.clone(), bias.clone(), out.ghost());
        tape.add_backward_op(move |grads| {
            let gy = take_grad::<R, _, _, _>(grads, &ghost)?;
            let (xs, ws) = (data::<R, _, _, _, _>(&x), data::<R, _, _, _, _>(&w));
            let partial = backward_x(xs, ws, &stats, &gy, grad_mut::<R, _, _, _>(grads, &x)?);
            let gw = grad_mut::<R, _, _, _>(grads, &w)?;
            gw.iter_mut()
                .zip(&partial[..M])
                .for_each(|(g, &d)| *g = *g + d);
            let gb = grad_mut::<R, _, _, _>(grads, &b)?;
            gb.iter_mut()
                .zip(&partial[M..])
                .for_each(|(g, &d)| *g = *g + d);
            put_grad::<R, _, _, _>(grads, &ghost, gy)
        });
    }
    out.put_tape(tape)
}

/// Mean and `1/√(var + ε)` of one row (two passes, biased variance).
fn row_stats<R: Real>(x: &[R], eps: R) -> (R, R) {
    let n = R::from(x.len()).unwrap();
    let mean = x.iter().copied().sum::<R>() / n;
    let var = x.iter().map(|&v| (v - mean) * (v - mean)).sum::<R>() / n;
    (mean, (var + eps).sqrt().recip())
}

/// Adds `dx` into `gx`; returns `[dγ; dβ]` (2M) summed over the rows.
fn backward_x<R: Real>(xs: &[R], ws: &[R], stats: &[R], gy: &[R], gx: &mut [R]) -> Vec<R> {
    let m = ws.len();
    let inv_m = R::from(m).unwrap().recip();
    gx.par_chunks_mut(ROWS * m)
        .enumerate()
        .map(|(t, gxc)| {
            let mut part = vec![R::zero(); 2 * m];
            for (r, gxr) in gxc.chunks_exact_mut(m).enumerate() {
                let row = t * ROWS + r;
                let (xr, dy) = (&xs[row * m..][..m], &gy[row * m..][..m]);
                let (mean, rstd) = (stats[2 * row], stats[2 * row + 1]);
                let (mut sg, mut sgx) = (R::zero(), R::zero());
                for j in 0..m {
                    let xh = (xr[j] - mean) * rstd;
                    let g = dy[j] * ws[j];
                    sg = sg + g;
                    sgx = sgx + g * xh;
                    part[j] = part[j] + dy[j] * xh;
                    part[m + j] = part[m + j] + dy[j];
                }
                let (sg, sgx) = (sg * inv_m, sgx * inv_m);
                for j in 0..m {
                    let xh = (xr[j] - mean) * rstd;
                    gxr[j] = gxr[j] + rstd * (dy[j] * ws[j] - sg - xh * sgx);
                }
            }
            part
        })
        .collect::<Vec<_>>()
        // Summed in chunk order on one thread: the result does not depend on how rayon
        // scheduled the chunks (a parallel `reduce` would, and training would not repeat).
        .into_iter()
        .fold(vec![R::zero(); 2 * m], |mut a, b| {
            a.iter_mut().zip(&b).for_each(|(x, &y)| *x = *x + y);
            a
        })
}
