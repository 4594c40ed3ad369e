//! Fused losses: IRRA's Similarity Distribution Matching ([`sdm`]; IRRA `model/objectives.py`
//! `compute_sdm`) and a weighted row-wise softmax cross entropy ([`cross_entropy`]; PyTorch
//! `F.cross_entropy`, IRRA `compute_mlm` / `compute_id`). Each is one forward over the raw
//! slices and one closed-form backward closure; nothing goes through dfdx's softmax, so its
//! gradient bug on permuted inputs (docs/dfdx.md §1.4) cannot occur here.
//!
//! Every sum runs in a fixed order (rows may be computed in parallel, but each row is
//! independent and the row results are summed on one thread in row order): the loss and the
//! gradients repeat bit for bit.

use super::host::{
    Kind, contiguous, data, grad_mut, kind, par_chunks, put_grad, take_grad, tensor,
};
use super::real::Real;
use dfdx::prelude::*;
use dfdx::tensor::Tensorlike;

/// A matrix with a run-time row count: features [B, K] or logits [N, C].
type Rows<C, E, D, T> = Tensor<(usize, C), E, D, T>;

/// A loss.
type Scalar<E, D, T> = Tensor<Rank0, E, D, T>;

/// The fused loss, or the inputs `X` handed back for the plain path.
type Fused<E, D, T, X> = Result<Scalar<E, D, T>, X>;

/// Image and text features [B, K].
type Pair<K, E, D, T> = (Rows<K, E, D, T>, Rows<K, E, D, T>);

/// Logit elements per parallel cross-entropy task (whole rows, at least one).
const CE_TASK: usize = 1 << 15;

/// SDM loss of image and text features [B, K] (both with the same tape type), a scalar:
///
/// ```text
/// v = x / ‖x‖, t = y / ‖y‖ (rows)     G = v tᵀ   [B, B]
/// S_i2t = s·G, S_t2i = s·Gᵀ            p = softmax over each row
/// L = (1/B) Σ_rows KL(p ‖ q) over both, KL = Σ_j p_j (log p_j − lq_j)
/// ```
///
/// `log_q` [B·B] row-major holds `lq = log(q + ε)` (see `loss::sdm_targets`), `logit_scale`
/// is `s`. Backward: `dL/dz_j = p_j (log p_j − lq_j − KL)/B` per row `z`, then
/// `dG = s·(dS_i2t + dS_t2iᵀ)`, `dv = dG t`, `dt = dGᵀ v`, `dx = (dv − v (v·dv))/‖x‖`.
/// Computed in f64. Gives the features back when the fast path does not apply.
pub fn sdm<K: Dim, E: Dtype, D: Device<E>, T: Tape<E, D>>(
    image: Rows<K, E, D, T>,
    text: Rows<K, E, D, T>,
    log_q: &[f64],
    logit_scale: f64,
) -> Fused<E, D, T, Pair<K, E, D, T>> {
    let b = image.shape().0;
    let ok = b > 0
        && image.shape() == text.shape()
        && log_q.len() == b * b
        && image.id() != text.id()
        && contiguous(&image)
        && contiguous(&text);
    match kind::<E, D>() {
        Some(Kind::F32) if ok => Ok(sdm_run::<f32, K, E, D, T>(image, text, log_q, logit_scale)),
        Some(Kind::F64) if ok => Ok(sdm_run::<f64, K, E, D, T>(image, text, log_q, logit_scale)),
        #[cfg(feature = "cuda")]
        Some(Kind::CudaF32) if ok && image.shape().1.size() <= 6_000 => {
            Ok(super::cuda::sdm(image, text, log_q, logit_scale))
        }
        _ => Err((image, text)),
    }
}

fn sdm_run<R: Real, K: Dim, E: Dtype, D: Device<E>, T: Tape<E, D>>(
    image: Rows<K, E, D, T>,
    text: Rows<K, E, D, T>,
    log_q: &[f64],
    scale: f64,
) -> Scalar<E, D, T> {
    let k = image.shape().1.size();
    let (image, ti) = image.split_tape();
    let (text, tt) = text.split_tape();
    let mut tape = ti.merge(tt);
    let v = Unit::new(data::<R, _, _, _, _>(&image), k);
    let t = Unit::new(data::<R, _, _, _, _>(&text), k);
    let (loss, dg) = sdm_forward(&v, &t, log_q, scale);
    let out = tensor::<R, _, E, D>(image.dev(), vec![R::from(loss).unwrap()], ());
    if T::OWNS_TAPE {
        let (dv, dt) = sdm_input_grads(&v, &t, &dg);
        let (gi, gt, ghost) = (image.ghost(), text.ghost(), out.ghost());
        tape.add_backward_op(move |grads| {
            let up = take_grad::<R, _, _, _>(grads, &ghost)?;
            let u = up[0].to_f64().unwrap();
            add_scaled(grad_mut::<R, _, _, _>(grads, &gi)?, &dv, u);
            add_scaled(grad_mut::<R, _, _, _>(grads, &gt)?, &dt, u);
            put_grad::<R, _, _, _>(grads, &ghost, up)
        });
    }
    out.put_tape(tape)
}

/// `g += u·d`.
fn add_scaled<R: Real>(g: &mut [R], d: &[f64], u: f64) {
    g.iter_mut()
        .zip(d)
        .for_each(|(g, &d)| *g = *g + R::from(u * d).unwrap());
}

/// Rows of a [B, K] matrix divided by their L2 norms (IRRA `x / x.norm(dim=1)`, no ε), in f64.
struct Unit {
    rows: Vec<f64>,
    norms: Vec<f64>,
    k: usize,
}

impl Unit {
    fn new<R: Real>(x: &[R], k: usize) -> Self {
        let mut rows: Vec<f64> = x.iter().map(|v| v.to_f64().unwrap()).collect();
        let norms = rows
            .chunks_exact_mut(k)
            .map(|r| {
                let n = dot(r, r).sqrt();
                r.iter_mut().for_each(|v| *v /= n);
                n
            })
            .collect();
        Unit { rows, norms, k }
    }

    fn row(&self, i: usize) -> &[f64] {
        &self.rows[i * self.k..][..self.k]
    }

    /// Gradient through the normalisation, in place: `d ← (d − u (u·d)) / ‖x‖` per row.
    fn backward(&self, d: &mut [f64]) {
        for (i, dr) in d.chunks_exact_mut(self.k).enumerate() {
            let (u, n) = (self.row(i), self.norms[i]);
            let c = dot(u, dr);
            dr.iter_mut()
                .zip(u)
                .for_each(|(d, &u)| *d = (*d - u * c) / n);
        }
    }
}

/// `Σ a_i b_i`, in index order.
fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).fold(0.0, |s, (x, y)| s + x * y)
}

/// The SDM loss and `dL/dG` [B, B] for the unit features `v`, `t`.
fn sdm_forward(v: &Unit, t: &Unit, log_q: &[f64], s: f64) -> (f64, Vec<f64>) {
    let b = v.norms.len();
    let mut g = vec![0.0; b * b];
    par_chunks(&mut g, b, |i, row| {
        row.iter_mut()
            .enumerate()
            .for_each(|(j, x)| *x = dot(v.row(i), t.row(j)))
    });
    let (mut d_i2t, mut d_t2i) = (vec![0.0; b * b], vec![0.0; b * b]);
    let mut z = vec![0.0; b];
    let mut loss = 0.0;
    for i in 0..b {
        z.iter_mut().zip(&g[i * b..]).for_each(|(z, &x)| *z = s * x);
        loss += kl_row(&z, &log_q[i * b..][..b], &mut d_i2t[i * b..][..b]);
    }
    for j in 0..b {
        z.iter_mut()
            .enumerate()
            .for_each(|(i, z)| *z = s * g[i * b + j]);
        loss += kl_row(&z, &log_q[j * b..][..b], &mut d_t2i[j * b..][..b]);
    }
    let c = s / b as f64;
    for (i, dg) in g.chunks_exact_mut(b).enumerate() {
        for (j, x) in dg.iter_mut().enumerate() {
            *x = c * (d_i2t[i * b + j] + d_t2i[j * b + i]);
        }
    }
    (loss / b as f64, g)
}

/// `KL(softmax(z) ‖ q) = Σ_j p_j (log p_j − lq_j)` of one row of logits; writes
/// `dKL/dz_j = p_j (log p_j − lq_j − KL)` into `dz`.
fn kl_row(z: &[f64], lq: &[f64], dz: &mut [f64]) -> f64 {
    let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let lse = m + z.iter().map(|&x| (x - m).exp()).sum::<f64>().ln();
    let mut kl = 0.0;
    for ((d, &x), &q) in dz.iter_mut().zip(z).zip(lq) {
        *d = x - lse - q;
        kl += (x - lse).exp() * *d;
    }
    for (d, &x) in dz.iter_mut().zip(z) {
        *d = (x - lse).exp() * (*d - kl);
    }
    kl
}

/// `dL/dx` and `dL/dy` [B, K] from `dL/dG`: `dv = dG t`, `dt = dGᵀ v`, then the normalisation.
fn sdm_input_grads(v: &Unit, t: &Unit, dg: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let (b, k) = (v.norms.len(), v.k);
    let product = |other: &Unit, coef: &(dyn Fn(usize, usize) -> f64 + Sync)| {
        let mut out = vec![0.0; b * k];
        par_chunks(&mut out, k, |i, row| {
            for j in 0..b {
                let c = coef(i, j);
                row.iter_mut()
                    .zip(other.row(j))
                    .for_each(|(o, &x)| *o += c * x);
            }
        });
        out
    };
    let mut dv = product(t, &|i, j| dg[i * b + j]);
    let mut dt = product(v, &|j, i| dg[i * b + j]);
    v.backward(&mut dv);
    t.backward(&mut dt);
    (dv, dt)
}

/// Weighted softmax cross entropy over the rows of `logits` [N, C], a scalar:
/// `L = Σ_i w_i (logsumexp(z_i) − z_i[label_i])` (PyTorch `F.cross_entropy` with
/// `reduction='sum'` and per-row weights; `w_i = 1/N` is the mean, `w_i = 0` ignores row `i`
/// without reading it). Backward: `dz_i = u·w_i (softmax(z_i) − onehot(label_i))` for the
/// upstream gradient `u`. Row sums of `exp` accumulate in f64. Gives `logits` back when the
/// fast path does not apply (or `N = 0`).
///
/// # Panics
/// If `labels` or `weights` do not have `N` entries, or a label is `≥ C`.
pub fn cross_entropy<C: Dim, E: Dtype, D: Device<E>, T: Tape<E, D>>(
    logits: Rows<C, E, D, T>,
    labels: &[usize],
    weights: &[f64],
) -> Fused<E, D, T, Rows<C, E, D, T>> {
    let (n, c) = (logits.shape().0, logits.shape().1.size());
    assert_eq!(labels.len(), n, "cross_entropy: one label per row");
    assert_eq!(weights.len(), n, "cross_entropy: one weight per row");
    assert!(
        labels.iter().all(|&l| l < c),
        "cross_entropy: label out of range (C = {c})"
    );
    let ok = n > 0 && c > 0 && contiguous(&logits);
    match kind::<E, D>() {
        Some(Kind::F32) if ok => Ok(ce_run::<f32, C, E, D, T>(logits, labels, weights)),
        Some(Kind::F64) if ok => Ok(ce_run::<f64, C, E, D, T>(logits, labels, weights)),
        #[cfg(feature = "cuda")]
        Some(Kind::CudaF32) if ok => Ok(super::cuda::cross_entropy(logits, labels, weights)),
        _ => Err(logits),
    }
}

fn ce_run<R: Real, C: Dim, E: Dtype, D: Device<E>, T: Tape<E, D>>(
    logits: Rows<C, E, D, T>,
    labels: &[usize],
    weights: &[f64],
) -> Scalar<E, D, T> {
    let c = logits.shape().1.size();
    let rows = (CE_TASK / c).max(1);
    let (x, mut tape) = logits.split_tape();
    let xs = data::<R, _, _, _, _>(&x);
    let mut stats = vec![(R::zero(), 1.0); weights.len()];
    par_chunks(&mut stats, rows, |t, st| {
        for (r, s) in st.iter_mut().enumerate() {
            if weights[t * rows + r] != 0.0 {
                *s = row_stats(&xs[(t * rows + r) * c..][..c]);
            }
        }
    });
    // In row order on this thread.
    let loss: f64 = (0..weights.len())
        .filter(|&i| weights[i] != 0.0)
        .map(|i| {
            let (m, sum) = stats[i];
            let z = xs[i * c + labels[i]];
            weights[i] * (m.to_f64().unwrap() - z.to_f64().unwrap() + sum.ln())
        })
        .sum();
    let out = tensor::<R, _, E, D>(x.dev(), vec![R::from(loss).unwrap()], ());
    if T::OWNS_TAPE {
        let (labels, weights, ghost) = (labels.to_vec(), weights.to_vec(), out.ghost());
        tape.add_backward_op(move |grads| {
            let up = take_grad::<R, _, _, _>(grads, &ghost)?;
            let u = up[0].to_f64().unwrap();
            let xs = data::<R, _, _, _, _>(&x);
            let gx = grad_mut::<R, _, _, _>(grads, &x)?;
            par_chunks(gx, rows * c, |t, chunk| {
                for (r, g) in chunk.chunks_exact_mut(c).enumerate() {
                    let i = t * rows + r;
                    let z = &xs[i * c..][..c];
                    ce_row_grad(z, stats[i], labels[i], u * weights[i], g);
                }
            });
            put_grad::<R, _, _, _>(grads, &ghost, up)
        });
    }
    out.put_tape(tape)
}

/// Max `m` and `Σ exp(z − m)` (f64) of one row; `logsumexp(z) = m + ln Σ`.
fn row_stats<R: Real>(z: &[R]) -> (R, f64) {
    let m = z.iter().copied().fold(R::neg_infinity(), R::max);
    (m, R::exp_sum(z, m))
}

/// `g += a (softmax(z) − onehot(label))` for one row with its `(max, Σ exp)`; nothing if `a = 0`.
fn ce_row_grad<R: Real>(z: &[R], (m, sum): (R, f64), label: usize, a: f64, g: &mut [R]) {
    if a == 0.0 {
        return;
    }
    let coef = R::from(a / sum).unwrap();
    R::add_exp(g, z, m, coef);
    g[label] = g[label] - R::from(a).unwrap();
}
