//! The vocabulary head and its cross entropy in one op: `L = Σ_i w_i · CE(x_i·Wᵀ + b, y_i)`
//! for hidden rows `x` [N, I] and a `Linear<I, V>` (the MTP / MLM head's `fc`, V = 49,408),
//! without the [N, V] logits in memory.
//!
//! The plain path (`linear2` then [`super::cross_entropy`]) writes the logits (N·V·4 bytes:
//! 50 MB for 256 masked tokens), reads them three times (max, `Σ exp`, then `softmax − 1` in the
//! backward), zero-fills and writes their gradient, and reads it twice more for the two
//! backward products. On 2 cores those passes over main memory were 16 % of the `tiny` GA-DMS
//! step (docs/performance.md). Here the vocabulary is cut into blocks of [`BLOCK`] columns
//! (N × 1024 floats, in L2/L3): the forward computes each block's logits, keeps per row only
//! its max and `Σ exp`, and merges the blocks; the backward recomputes each block's logits
//! (one more product of the forward's size, cheap next to the memory traffic it saves), turns
//! them into `a_i (softmax − onehot)` and feeds `dW`, `db` and `dx` from the cache.
//!
//! Deterministic: the blocks are fixed (not chosen by thread count), each block's products run
//! on one thread, and every cross-block sum (row statistics, `dx`) is taken in block order.
//! The same function as the plain path up to rounding (`nn/tests/nn/fast_loss.rs` compares
//! values and all three gradients, and checks against finite differences in f64).

use super::gemm::{MatRef, gemm_serial_raw};
use super::host::{Kind, contiguous, data, kind, put_grad, take_grad, tensor};
use super::real::Real;
use dfdx::nn::modules::Linear;
use dfdx::prelude::*;
use rayon::prelude::*;

/// Vocabulary columns per block.
pub const BLOCK: usize = 1024;

/// Hidden rows [N, I].
type Hidden<const I: usize, E, D, T> = Tensor<(usize, Const<I>), E, D, T>;

/// `Σ_i weights[i] · (logsumexp(z_i) − z_i[labels[i]])` with `z = x·Wᵀ + b` (`lin`'s weight
/// [V, I] and bias [V]), a scalar; rows with weight 0 add nothing and get no gradient. Gives
/// `x` back when the fast path does not apply (not the CPU, not f32/f64, not contiguous).
///
/// # Panics
/// If `labels` or `weights` do not have one entry per row, or a label is ≥ V.
pub fn linear_cross_entropy<const I: usize, const V: usize, E, D, T>(
    x: Hidden<I, E, D, T>,
    lin: &Linear<I, V, E, D>,
    labels: &[usize],
    weights: &[f64],
) -> Result<Tensor<Rank0, E, D, T>, Hidden<I, E, D, T>>
where
    E: Dtype,
    D: Device<E>,
    T: Tape<E, D>,
{
    let n = x.shape().0;
    assert_eq!(labels.len(), n, "linear_cross_entropy: one label per row");
    assert_eq!(weights.len(), n, "linear_cross_entropy: one weight per row");
    assert!(
        labels.iter().all(|&l| l < V),
        "linear_cross_entropy: label out of range (V = {V})"
    );
    let ok = n > 0 && contiguous(&x) && contiguous(&lin.weight) && contiguous(&lin.bias);
    match kind::<E, D>() {
        Some(Kind::F32) if ok => Ok(run::<f32, I, V, E, D, T>(x, lin, labels, weights)),
        Some(Kind::F64) if ok => Ok(run::<f64, I, V, E, D, T>(x, lin, labels, weights)),
        _ => Err(x),
    }
}

/// The head's sizes and inputs as slices.
struct Head<'a, R> {
    n: usize,
    i: usize,
    v: usize,
    x: &'a [R],
    w: &'a [R],
    b: &'a [R],
}

impl<R: Real> Head<'_, R> {
    fn blocks(&self) -> usize {
        self.v.div_ceil(BLOCK)
    }

    /// Columns `c0..c1` of block `j`.
    fn cols(&self, j: usize) -> (usize, usize) {
        (j * BLOCK, ((j + 1) * BLOCK).min(self.v))
    }

    /// The logits of block `j`, [N, c1 − c0] row-major, on this thread.
    fn logits(&self, j: usize) -> Vec<R> {
        let (c0, c1) = self.cols(j);
        let vb = c1 - c0;
        let mut z = Vec::with_capacity(self.n * vb);
        for _ in 0..self.n {
            z.extend_from_slice(&self.b[c0..c1]);
        }
        // SAFETY: `z` holds the N×vb region (initialised with the bias) and is owned here.
        unsafe {
            gemm_serial_raw(
                (self.n, vb, self.i),
                MatRef::rows(self.x, 0, self.i),
                MatRef::cols(self.w, c0 * self.i, self.i),
                z.as_mut_ptr(),
                vb,
                true,
            );
        }
        z
    }
}

/// Per row of one block: its max, `Σ exp(z − max)` (f64), and the label's logit if the label
/// falls in the block.
type BlockStats<R> = Vec<(R, f64, Option<R>)>;

fn block_stats<R: Real>(h: &Head<R>, j: usize, labels: &[usize], weights: &[f64]) -> BlockStats<R> {
    let (c0, c1) = h.cols(j);
    let z = h.logits(j);
    z.chunks_exact(c1 - c0)
        .enumerate()
        .map(|(r, row)| {
            if weights[r] == 0.0 {
                return (R::zero(), 1.0, None);
            }
            let m = row.iter().copied().fold(R::neg_infinity(), R::max);
            let pick = (c0..c1).contains(&labels[r]).then(|| row[labels[r] - c0]);
            (m, R::exp_sum(row, m), pick)
        })
        .collect()
}

/// `(max, Σ exp(z − max))` over the whole vocabulary per row, and the loss, from the blocks'
/// statistics (merged in block order).
fn merge<R: Real>(stats: &[BlockStats<R>], weights: &[f64]) -> (Vec<(R, f64)>, f64) {
    let mut loss = 0.0;
    let rows = (0..weights.len())
        .map(|r| {
            if weights[r] == 0.0 {
                return (R::zero(), 1.0);
            }
            let m = stats.iter().map(|s| s[r].0).fold(R::neg_infinity(), R::max);
            let m64 = m.to_f64().unwrap();
            let sum: f64 = stats
                .iter()
                .map(|s| s[r].1 * (s[r].0.to_f64().unwrap() - m64).exp())
                .sum();
            let picked = stats.iter().find_map(|s| s[r].2).unwrap();
            loss += weights[r] * (m64 + sum.ln() - picked.to_f64().unwrap());
            (m, sum)
        })
        .collect();
    (rows, loss)
}

fn run<R: Real, const I: usize, const V: usize, E, D, T>(
    x: Hidden<I, E, D, T>,
    lin: &Linear<I, V, E, D>,
    labels: &[usize],
    weights: &[f64],
) -> Tensor<Rank0, E, D, T>
where
    E: Dtype,
    D: Device<E>,
    T: Tape<E, D>,
{
    let n = x.shape().0;
    let (x, mut tape) = x.split_tape();
    let h = Head {
        n,
        i: I,
        v: V,
        x: data::<R, _, _, _, _>(&x),
        w: data::<R, _, _, _, _>(&lin.weight),
        b: data::<R, _, _, _, _>(&lin.bias),
    };
    let stats: Vec<BlockStats<R>> = (0..h.blocks())
        .into_par_iter()
        .map(|j| block_stats(&h, j, labels, weights))
        .collect();
    let (rows, loss) = merge(&stats, weights);
    let out = tensor::<R, _, E, D>(x.dev(), vec![R::from(loss).unwrap()], ());
    if T::OWNS_TAPE {
        let (w, b, ghost) = (lin.weight.clone(), lin.bias.clone(), out.ghost());
        let (labels, weights) = (labels.to_vec(), weights.to_vec());
        tape.add_backward_op(move |grads| {
            let up = take_grad::<R, _, _, _>(grads, &ghost)?;
            let u = up[0].to_f64().unwrap();
            let h = Head {
                n,
                i: I,
                v: V,
                x: data::<R, _, _, _, _>(&x),
                w: data::<R, _, _, _, _>(&w),
                b: data::<R, _, _, _, _>(&b),
            };
            let coef: Vec<f64> = weights.iter().map(|&a| u * a).collect();
            let mut gw = take_grad::<R, _, _, _>(grads, &w)?;
            let mut gb = take_grad::<R, _, _, _>(grads, &b)?;
            let dx: Vec<Vec<R>> = gw
                .par_chunks_mut(BLOCK * I)
                .zip(gb.par_chunks_mut(BLOCK))
                .enumerate()
                .map(|(j, (gw, gb))| block_backward(&h, j, (&rows, &labels, &coef), gw, gb))
                .collect();
            put_grad::<R, _, _, _>(grads, &w, gw)?;
            put_grad::<R, _, _, _>(grads, &b, gb)?;
            let mut gx = take_grad::<R, _, _, _>(grads, &x)?;
            for d in &dx {
                gx.iter_mut().zip(d).for_each(|(g, &d)| *g = *g + d);
            }
            put_grad::<R, _, _, _>(grads, &x, gx)?;
            put_grad::<R, _, _, _>(grads, &ghost, up)
        });
    }
    out.put_tape(tape)
}

/// Block `j` of the backward: `g = a_i (softmax(z_i) − onehot(y_i))` over the block's columns,
/// then `gw += gᵀ x` (the block's rows of dW), `gb += Σ_rows g`, and returns this block's
/// part of `dx = g W_block` [N, I].
fn block_backward<R: Real>(
    h: &Head<R>,
    j: usize,
    (rows, labels, coef): (&[(R, f64)], &[usize], &[f64]),
    gw: &mut [R],
    gb: &mut [R],
) -> Vec<R> {
    let (c0, c1) = h.cols(j);
    let vb = c1 - c0;
    let z = h.logits(j);
    let mut g = vec![R::zero(); h.n * vb];
    for (r, (gr, zr)) in g.chunks_exact_mut(vb).zip(z.chunks_exact(vb)).enumerate() {
        if coef[r] == 0.0 {
            continue;
        }
        let (m, sum) = rows[r];
        R::add_exp(gr, zr, m, R::from(coef[r] / sum).unwrap());
        if (c0..c1).contains(&labels[r]) {
            let k = labels[r] - c0;
            gr[k] = gr[k] - R::from(coef[r]).unwrap();
        }
    }
    // SAFETY: `gw` is this block's [vb, I] rows of dW (a disjoint chunk) and `dx` is owned
    // here; both are initialised.
    let mut dx = vec![R::zero(); h.n * h.i];
    unsafe {
        gemm_serial_raw(
            (vb, h.i, h.n),
            MatRef::cols(&g, 0, vb),
            MatRef::rows(h.x, 0, h.i),
            gw.as_mut_ptr(),
            h.i,
            true,
        );
        gemm_serial_raw(
            (h.n, h.i, vb),
            MatRef::rows(&g, 0, vb),
            MatRef::rows(h.w, c0 * h.i, h.i),
            dx.as_mut_ptr(),
            h.i,
            false,
        );
    }
    for gr in g.chunks_exact(vb) {
        gb.iter_mut().zip(gr).for_each(|(b, &d)| *b = *b + d);
    }
    dx
}
