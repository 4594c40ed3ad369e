//! The attention core on CUDA: one warp per query row, no `[B, H, S, S]` probabilities.

use super::*;
use cudarc::driver::DeviceRepr;

use super::super::attn::Qkv;

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
