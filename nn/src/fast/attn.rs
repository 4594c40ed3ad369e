//! Fused attention core `out = softmax(q·kᵀ/√d + mask)·v` for all heads at once (PyTorch
//! `nn.MultiheadAttention` after its input projections), on strided per-head views of the
//! `[B, S, W]` projections: no permute copies. One parallel task per (sample, head).
//!
//! Backward per head, with `P` the saved probabilities and `dO` the output gradient:
//! `dV += Pᵀ·dO`, `dP = dO·Vᵀ`, `dS = P ⊙ (dP − rowsum(dP ⊙ P))/√d`, `dQ += dS·K`,
//! `dK += dSᵀ·Q`.

use super::gemm::{MatRef, gemm_serial_raw};
use super::host::{Kind, contiguous, data, kind, put_grad, take_grad, tensor};
use super::real::Real;
use dfdx::prelude::*;
use dfdx::tensor::Tensorlike;
use rayon::prelude::*;

/// The three projections `q` [B, Sq, W], `k`, `v` [B, Sk, W].
pub(crate) type Qkv<B, Sq, Sk, const W: usize, E, D, T> = (
    Tensor<(B, Sq, Const<W>), E, D, T>,
    Tensor<(B, Sk, Const<W>), E, D, T>,
    Tensor<(B, Sk, Const<W>), E, D, T>,
);

/// `q` [B, Sq, W], `k`, `v` [B, Sk, W] → [B, Sq, W] with `heads` heads of `W/heads`;
/// `mask` [Sq, Sk] is added to the scaled scores. Gives the inputs back when the fast path
/// does not apply.
#[allow(clippy::type_complexity)]
pub fn attention<B: Dim, Sq: Dim, Sk: Dim, const W: usize, E, D, T>(
    (q, k, v): Qkv<B, Sq, Sk, W, E, D, T>,
    mask: Option<&Tensor<(Sq, Sk), E, D>>,
    heads: usize,
) -> Result<Tensor<(B, Sq, Const<W>), E, D, T>, Qkv<B, Sq, Sk, W, E, D, T>>
where
    E: Dtype,
    D: Device<E>,
    T: Tape<E, D> + Merge<T>,
{
    let distinct = q.id() != k.id() && k.id() != v.id() && q.id() != v.id();
    let ok = distinct
        && contiguous(&q)
        && contiguous(&k)
        && contiguous(&v)
        && mask.is_none_or(|m| contiguous(m))
        && heads > 0
        && W.is_multiple_of(heads);
    match kind::<E, D>() {
        Some(Kind::F32) if ok => Ok(run::<f32, B, Sq, Sk, W, E, D, T>((q, k, v), mask, heads)),
        Some(Kind::F64) if ok => Ok(run::<f64, B, Sq, Sk, W, E, D, T>((q, k, v), mask, heads)),
        #[cfg(feature = "cuda")]
        Some(Kind::CudaF32)
            if ok
                && super::cuda::attention_fits(
                    q.shape().0.size(),
                    k.shape().1.size(),
                    W,
                    heads,
                ) =>
        {
            Ok(super::cuda::attention((q, k, v), mask, heads))
        }
        _ => Err((q, k, v)),
    }
}

/// Sizes of one call.
#[derive(Clone, Copy)]
struct Dims {
    sq: usize,
    sk: usize,
    w: usize,
    heads: usize,
    hd: usize,
}

impl Dims {
    /// Offsets of head `h` of sample `b` in q and in k/v.
    fn offs(&self, t: usize) -> (usize, usize) {
        let (b, h) = (t / self.heads, t % self.heads);
        (
            b * self.sq * self.w + h * self.hd,
            b * self.sk * self.w + h * self.hd,
        )
    }
}

#[derive(Clone, Copy)]
struct Ptr<R>(*mut R);
// SAFETY: each (sample, head) task writes only its own rows × head columns.
unsafe impl<R> Send for Ptr<R> {}
unsafe impl<R> Sync for Ptr<R> {}

fn run<R: Real, B: Dim, Sq: Dim, Sk: Dim, const W: usize, E, D, T>(
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
    let d = Dims {
        sq,
        sk,
        w: W,
        heads,
        hd: W / heads,
    };
    let (q, tq) = q.split_tape();
    let (k, tk) = k.split_tape();
    let (v, tv) = v.split_tape();
    let mut tape = tq.merge(tk).merge(tv);
    let (qs, ks, vs) = (
        data::<R, _, _, _, _>(&q),
        data::<R, _, _, _, _>(&k),
        data(&v),
    );
    let mask = mask.map(|m| data::<R, _, _, _, _>(m));
    let mut probs = vec![R::zero(); b * heads * sq * sk];
    let mut out = vec![R::zero(); b * sq * W];
    let op = Ptr(out.as_mut_ptr());
    let scale = R::from(1.0 / (d.hd as f64).sqrt()).unwrap();
    probs
        .par_chunks_mut(sq * sk)
        .enumerate()
        .for_each(|(t, p)| {
            let (qo, ko) = d.offs(t);
            #[allow(clippy::redundant_locals)] // capture the Send wrapper, not its raw field
            let op = op;
            // SAFETY: `p` is this task's own buffer; `out` rows × head columns are this task's.
            unsafe {
                let a = MatRef::rows(qs, qo, W);
                gemm_serial_raw(
                    (sq, sk, d.hd),
                    a,
                    MatRef::cols(ks, ko, W),
                    p.as_mut_ptr(),
                    sk,
                    false,
                );
                for (i, row) in p.chunks_exact_mut(sk).enumerate() {
                    R::softmax_row(row, scale, mask.map(|m| &m[i * sk..][..sk]));
                }
                let pr = MatRef::rows(&*p, 0, sk);
                gemm_serial_raw(
                    (sq, d.hd, sk),
                    pr,
                    MatRef::rows(vs, ko, W),
                    op.0.add(qo),
                    W,
                    false,
                );
            }
        });
    let out = tensor::<R, _, E, D>(q.dev(), out, shape);
    if T::OWNS_TAPE {
        let ghost = out.ghost();
        tape.add_backward_op(move |grads| {
            let gy = take_grad::<R, _, _, _>(grads, &ghost)?;
            let mut gq = take_grad::<R, _, _, _>(grads, &q)?;
            let mut gk = take_grad::<R, _, _, _>(grads, &k)?;
            let mut gv = take_grad::<R, _, _, _>(grads, &v)?;
            let (qs, ks, vs) = (
                data::<R, _, _, _, _>(&q),
                data::<R, _, _, _, _>(&k),
                data(&v),
            );
            let g = (
                Ptr(gq.as_mut_ptr()),
                Ptr(gk.as_mut_ptr()),
                Ptr(gv.as_mut_ptr()),
            );
            (0..b * heads).into_par_iter().for_each(|t| {
                let p = &probs[t * sq * sk..][..sq * sk];
                #[allow(clippy::redundant_locals)] // capture the Send wrapper, not its fields
                let g = g;
                // SAFETY: the three gradient buffers have the q/k/v sizes and each task
                // writes its own (sample, head) block.
                unsafe { backward_head(&d, t, p, (qs, ks, vs), &gy, (g.0.0, g.1.0, g.2.0), scale) };
            });
            put_grad::<R, _, _, _>(grads, &q, gq)?;
            put_grad::<R, _, _, _>(grads, &k, gk)?;
            put_grad::<R, _, _, _>(grads, &v, gv)?;
            put_grad::<R, _, _, _>(grads, &ghost, gy)
        });
    }
    out.put_tape(tape)
}

/// The gradients of one (sample, head) task `t`, accumulated into `gq`, `gk`, `gv`.
///
/// # Safety
/// `gq` must hold `B·Sq·W` elements and `gk`, `gv` `B·Sk·W`; no other thread may touch this
/// task's block.
#[allow(clippy::type_complexity)]
unsafe fn backward_head<R: Real>(
    d: &Dims,
    t: usize,
    p: &[R],
    (qs, ks, vs): (&[R], &[R], &[R]),
    gy: &[R],
    (gq, gk, gv): (*mut R, *mut R, *mut R),
    scale: R,
) {
    let (qo, ko) = d.offs(t);
    let (sq, sk, hd, w) = (d.sq, d.sk, d.hd, d.w);
    let dout = MatRef::rows(gy, qo, w);
    let mut ds = vec![R::zero(); sq * sk];
    unsafe {
        gemm_serial_raw(
            (sk, hd, sq),
            MatRef::cols(p, 0, sk),
            dout,
            gv.add(ko),
            w,
            true,
        );
        gemm_serial_raw(
            (sq, sk, hd),
            dout,
            MatRef::cols(vs, ko, w),
            ds.as_mut_ptr(),
            sk,
            false,
        );
    }
    for (dr, pr) in ds.chunks_exact_mut(sk).zip(p.chunks_exact(sk)) {
        let dot = dr.iter().zip(pr).map(|(&a, &b)| a * b).sum::<R>();
        dr.iter_mut()
            .zip(pr)
            .for_each(|(g, &p)| *g = p * (*g - dot) * scale);
    }
    let dsr = MatRef::rows(&ds, 0, sk);
    unsafe {
        gemm_serial_raw(
            (sq, hd, sk),
            dsr,
            MatRef::rows(ks, ko, w),
            gq.add(qo),
            w,
            true,
        );
        gemm_serial_raw(
            (sk, hd, sq),
            MatRef::cols(&ds, 0, sk),
            MatRef::rows(qs, qo, w),
            gk.add(ko),
            w,
            true,
        );
    }
}
