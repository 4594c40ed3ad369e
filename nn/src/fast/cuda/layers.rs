//! QuickGELU, LayerNorm and linear layers (bias, residual) on CUDA.

use super::bf16::{keeps_bf16, quick_gelu_bf16, rows_product_bf16};
use super::*;

/// QuickGELU `x·σ(1.702x)` on CUDA (`x` contiguous `f32`).
pub(crate) fn quick_gelu<S: Shape, E: Dtype, D: Device<E>, T: Tape<E, D>>(
    x: Tensor<S, E, D, T>,
) -> Tensor<S, E, D, T> {
    if T::OWNS_TAPE && keeps_bf16(cuda(x.dev())) {
        return quick_gelu_bf16(x);
    }
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
    let y = rows_product(x, w);
    let y = match b {
        Some(b) => bias_add(y, b),
        None => y,
    };
    y.reshape_like(&out_shape)
}

/// `x·Wᵀ` for `x` [.., I] seen as [rows, I]: dfdx's product, one cuBLAS GEMM for all rows;
/// when a traced product runs in bf16, the op that keeps `bf16(x)` for the backward.
fn rows_product<S1: Shape, const I: usize, const O: usize, E, D, T>(
    x: Tensor<S1, E, D, T>,
    w: &Tensor<Rank2<O, I>, E, D>,
) -> Tensor<(usize, Const<O>), E, D, T>
where
    E: Dtype,
    D: Device<E>,
    T: Tape<E, D>,
{
    if T::OWNS_TAPE && keeps_bf16(cuda(x.dev())) {
        return rows_product_bf16(x, w);
    }
    let rows = x.shape().num_elements() / I;
    let x = x.reshape_like(&(rows, Const::<I>));
    x.matmul(w.retaped::<T>().permute::<_, Axes2<1, 0>>())
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
    let y = rows_product(x, w);
    let (rows, n) = (y.shape().0, y.shape().num_elements());
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
    let g = ColChunks::new(rows, m);
    let (_part, pp) = scratch(dev, g.chunks * m);
    let (r, mi) = (rows as i32, m as i32);
    launch(
        dev,
        "col_sum_partial",
        g.partial,
        (r, mi, g.chunk as i32, src, pp),
    );
    launch(
        dev,
        "col_sum_reduce",
        g.reduce,
        (g.chunks as i32, mi, pp, dst),
    );
}

/// The grids of a column sum over `rows` rows of `m` columns in two passes: per-chunk
/// partial sums (one thread per column and chunk), then their sum in chunk order.
struct ColChunks {
    /// Rows per chunk (at least [`LN_CHUNK`]; at most 65,535 chunks, the grid's y limit).
    chunk: usize,
    chunks: usize,
    partial: LaunchConfig,
    reduce: LaunchConfig,
}

impl ColChunks {
    fn new(rows: usize, m: usize) -> Self {
        let chunk = LN_CHUNK.max(rows.div_ceil(65_535));
        let chunks = rows.div_ceil(chunk).max(1);
        let cols = m.div_ceil(THREADS as usize) as u32;
        let partial = LaunchConfig {
            grid_dim: (cols, chunks as u32, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let reduce = LaunchConfig {
            grid_dim: (cols, 1, 1),
            ..partial
        };
        ColChunks {
            chunk,
            chunks,
            partial,
            reduce,
        }
    }
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
            let g = ColChunks::new(rows, M);
            let (_part, pp) = scratch(&dev, 2 * g.chunks * M);
            let params = (r, m, g.chunk as i32, xp, sp, gy, pp);
            launch(&dev, "layer_norm_bwd_params", g.partial, params);
            let params = (g.chunks as i32, m, pp, gw, gb);
            launch(&dev, "layer_norm_bwd_reduce", g.reduce, params);
            Ok(())
        });
    }
    out.put_tape(tape)
}
