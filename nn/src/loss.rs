//! Training losses. For now: IRRA's Similarity Distribution Matching (SDM), the contrastive
//! loss of GA-DMS pretraining (docs/method.md §5.1; IRRA `model/objectives.py`
//! `compute_sdm`, which GA-DMS ships unchanged).
//!
//! # Why there is no `permute` before a softmax here
//!
//! dfdx 0.13's `softmax` / `log_softmax` / `logsumexp` return **wrong gradients on a permuted
//! (non-contiguous) input** on the CPU (docs/dfdx.md §1.4: `logsumexp` resets its
//! result's id to the input's id, so the gradient of a transposed view lands transposed in the
//! source's buffer). The forward value is right, so the bug is silent. IRRA writes
//! `i2t = t2i.t()`; here the image→text similarity gets **its own matmul**
//! (`img_n @ txt_nᵀ`) and both softmaxes see contiguous `[B, B]` tensors.
//! `ckpt/tests/reference/sdm.rs` checks the gradient against finite differences and shows that the naive
//! transposed variant fails that check.
//!
//! On the CPU (f32/f64) both losses run as fused ops ([`crate::fast::loss`]), which never call
//! dfdx's softmax; the composition here stays for CUDA, other element types and
//! `GADMS_FUSED=0`. `nn/tests/nn/fast_loss.rs` compares the two.

use crate::layers::Float;
use dfdx::prelude::*;

/// Default SDM logit scale `1/τ` with GA-DMS' τ = 0.02 (IRRA `--temperature 0.02`).
pub const SDM_LOGIT_SCALE: f64 = 50.0;

/// The ε inside `log(q + ε)` of IRRA's `compute_sdm`.
pub const SDM_EPS: f64 = 1e-8;

/// Row-wise L2 normalisation `x / ‖x‖₂` of features [B, K], as IRRA's
/// `x / x.norm(dim=1, keepdim=True)` (no ε: an all-zero row gives NaN, as in PyTorch).
pub fn l2_normalize<K: Dim, E: Float, D: Device<E>, T: Tape<E, D>>(
    x: Tensor<(usize, K), E, D, T>,
) -> Tensor<(usize, K), E, D, T> {
    let shape = *x.shape();
    // `with_empty_tape` keeps x's id; the norm is a new tensor, so the two operands of the
    // division have different ids (a shared id on both sides panics in dfdx's backward).
    let norm = x
        .with_empty_tape()
        .square()
        .sum::<(usize,), Axis<1>>()
        .sqrt()
        .broadcast_like::<_, Axis<1>>(&shape);
    x / norm
}

/// The true matching distribution of SDM, row-major [B, B], in f64:
/// `q_ij = y_ij / Σ_k y_jk` with `y_ij = [pid_i == pid_j]`.
///
/// This is IRRA's `labels / labels.sum(dim=1)` literally (the sum broadcasts along columns, so
/// it divides by the count of *column* j's pid). Because `y` is symmetric and `y_ij = 1` only
/// when rows i and j have the same pid, this equals the row normalisation of docs/method.md
/// §5.1. With unique pids (GA-DMS pretraining: one pid per caption) it is the identity.
pub fn sdm_targets(pids: &[usize]) -> Vec<f64> {
    let b = pids.len();
    let counts: Vec<f64> = pids
        .iter()
        .map(|p| pids.iter().filter(|q| *q == p).count() as f64)
        .collect();
    let mut q = vec![0.0; b * b];
    for i in 0..b {
        for j in 0..b {
            if pids[i] == pids[j] {
                q[i * b + j] = 1.0 / counts[j];
            }
        }
    }
    q
}

/// Similarity Distribution Matching loss (IRRA `compute_sdm`; docs/method.md §5.1, PAPER
/// Eq. 6–8), a scalar:
///
/// ```text
/// v = l2n(image_feats), t = l2n(text_feats)              # [B, K] each
/// S_t2i = s · t vᵀ,  S_i2t = s · v tᵀ                     # s = logit_scale (50 = 1/τ)
/// q_ij  = [pid_i == pid_j] / #{k : pid_k == pid_j}
/// L_i2t = mean_i Σ_j p_ij (log p_ij − log(q_ij + ε)),  p = softmax_j(S_i2t)   # KL(p ‖ q)
/// L_t2i = the same with S_t2i
/// L     = L_i2t + L_t2i
/// ```
///
/// Generic over the element type and device; both feature tensors must carry the same tape
/// type (their tapes are merged). `eps` is IRRA's ε = [`SDM_EPS`].
///
/// On the CPU in f32/f64 (fused kernels on) this is one fused op, [`crate::fast::sdm`]
/// (closed-form backward, computed in f64). Otherwise a dfdx composition, where `S_i2t` is
/// computed with its own matmul rather than as a transpose of `S_t2i` (see the module docs:
/// dfdx's log-softmax of a permuted tensor has a wrong gradient).
///
/// # Panics
/// If the batch is empty, the two batches differ in size, or `pids.len()` is not the batch size.
pub fn sdm_loss<K: Dim, E: Float, D: Device<E>, T: Tape<E, D>>(
    image_feats: Tensor<(usize, K), E, D, T>,
    text_feats: Tensor<(usize, K), E, D, T>,
    pids: &[usize],
    logit_scale: f64,
    eps: f64,
) -> Tensor<Rank0, E, D, T> {
    let b = image_feats.shape().0;
    assert!(b > 0, "sdm_loss: empty batch");
    assert_eq!(
        text_feats.shape().0,
        b,
        "sdm_loss: image and text batch sizes differ"
    );
    assert_eq!(pids.len(), b, "sdm_loss: need one pid per pair");
    let log_q: Vec<f64> = sdm_targets(pids)
        .into_iter()
        .map(|q| (q + eps).ln())
        .collect();
    match crate::fast::sdm(image_feats, text_feats, &log_q, logit_scale) {
        Ok(loss) => loss,
        Err((image_feats, text_feats)) => {
            sdm_loss_plain(image_feats, text_feats, &log_q, logit_scale)
        }
    }
}

/// [`sdm_loss`] as a dfdx composition (CUDA, other element types, `GADMS_FUSED=0`);
/// `log_q` [B·B] row-major is `log(q + ε)`.
fn sdm_loss_plain<K: Dim, E: Float, D: Device<E>, T: Tape<E, D>>(
    image_feats: Tensor<(usize, K), E, D, T>,
    text_feats: Tensor<(usize, K), E, D, T>,
    log_q: &[f64],
    logit_scale: f64,
) -> Tensor<Rank0, E, D, T> {
    let b = image_feats.shape().0;
    let dev = image_feats.device().clone();
    let scale = E::from_f64(logit_scale).unwrap();

    let v = l2_normalize(image_feats);
    let t = l2_normalize(text_feats);

    // S_i2t = s · v tᵀ on fresh tapes (same ids, so gradients still reach v and t) …
    let s_i2t = v
        .with_empty_tape()
        .matmul(t.with_empty_tape().permute::<_, Axes2<1, 0>>())
        * scale;
    // … and S_t2i = s · t vᵀ, which carries (and merges) both input tapes.
    let s_t2i = t.matmul(v.permute::<_, Axes2<1, 0>>()) * scale;

    let log_q: Vec<E> = log_q.iter().map(|&l| E::from_f64(l).unwrap()).collect();
    let log_q = dev.tensor_from_vec(log_q, (b, b));

    let inv_b = E::from_f64(1.0 / b as f64).unwrap();
    let l_i2t = kl_rows(s_i2t, log_q.clone()) * inv_b;
    let l_t2i = kl_rows(s_t2i, log_q) * inv_b;
    l_i2t + l_t2i
}

/// `Σ_ij p_ij (log p_ij − log_q_ij)` with `p = softmax` over each row of the contiguous `logits`.
fn kl_rows<E: Float, D: Device<E>, T: Tape<E, D>>(
    logits: Tensor<(usize, usize), E, D, T>,
    log_q: Tensor<(usize, usize), E, D>,
) -> Tensor<Rank0, E, D, T> {
    let log_p = logits.log_softmax::<Axis<1>>();
    let p = log_p.with_empty_tape().exp();
    (p * (log_p - log_q)).sum()
}

/// IRRA's MTP / MLM loss (`objectives.compute_mlm`: `nn.CrossEntropyLoss(ignore_index=0)` on
/// `logits.reshape(-1, V)` against `labels.reshape(-1)`; docs/method.md §5.2): the mean over
/// the positions whose label is not 0 of `−log softmax(logits)[label]`.
///
/// `logits` [B, S, V]; `labels` [B·S], row-major (b·S + s), 0 = not masked. The log-softmax
/// runs over the last axis of the contiguous logits (no permute: see the module docs).
///
/// With no labelled position the result is 0 (and every gradient 0) instead of PyTorch's NaN.
///
/// # Panics
/// If `labels.len() != B·S` or a label is ≥ V.
pub fn masked_token_ce<B: Dim, S: Dim, const V: usize, E: Float, D: Device<E>, T: Tape<E, D>>(
    logits: Tensor<(B, S, Const<V>), E, D, T>,
    labels: &[u32],
) -> Tensor<Rank0, E, D, T> {
    let (b, s, _) = *logits.shape();
    let n = b.size() * s.size();
    assert_eq!(
        labels.len(),
        n,
        "masked_token_ce: need one label per position"
    );
    // Reshaping a contiguous tensor keeps its memory order, so the log-softmax below still
    // sees a contiguous input.
    masked_rows_ce(logits.reshape_like(&(n, Const::<V>)), labels)
}

/// [`masked_rows_ce_over`] of the logits `fc(x)` [N, V], taken from the hidden rows `x`
/// [N, W] and the head's last layer `fc` (the MTP / MLM head's vocabulary projection): on the
/// CPU in f32/f64 the fused [`crate::fast::linear_cross_entropy`], which never holds the
/// [N, V] logits; else `fc` and then [`masked_rows_ce_over`]. Same value and gradients (for
/// `x`, `fc.weight` and `fc.bias`) up to rounding.
///
/// # Panics
/// If `labels.len() != N` or a label is ≥ V.
pub fn masked_rows_linear_ce_over<const W: usize, const V: usize, E: Float, D: Device<E>, T>(
    x: Tensor<(usize, Const<W>), E, D, T>,
    fc: &dfdx::nn::modules::Linear<W, V, E, D>,
    labels: &[u32],
    count: usize,
) -> Tensor<Rank0, E, D, T>
where
    T: Tape<E, D>,
{
    let (rows, row_w) = label_rows(labels, count);
    match crate::fast::linear_cross_entropy(x, fc, &rows, &row_w) {
        Ok(loss) => loss,
        Err(x) => masked_rows_ce_over(crate::fast::linear2(fc, x), labels, count),
    }
}

/// The fused cross entropies' targets and row weights for masked-token `labels` (0 =
/// unlabelled): every label as a class index, weight `1/count` on labelled rows and 0 on the
/// others (`count = 0`: all 0).
fn label_rows(labels: &[u32], count: usize) -> (Vec<usize>, Vec<f64>) {
    let w = if count == 0 { 0.0 } else { 1.0 / count as f64 };
    let rows = labels.iter().map(|&l| l as usize).collect();
    let row_w = labels
        .iter()
        .map(|&l| if l == 0 { 0.0 } else { w })
        .collect();
    (rows, row_w)
}

/// [`masked_token_ce`] on logits already flattened to rows, [N, V] with `labels` [N]
/// (0 = ignored); e.g. the output of `MtpDecoder::forward_masked`.
///
/// On the CPU in f32/f64 this is the fused [`crate::fast::cross_entropy`] with weight
/// `1/#labelled` on labelled rows and 0 on the others (which it does not read); else a dfdx
/// composition.
///
/// # Panics
/// If `labels.len() != N` or a label is ≥ V.
pub fn masked_rows_ce<const V: usize, E: Float, D: Device<E>, T: Tape<E, D>>(
    logits: Tensor<(usize, Const<V>), E, D, T>,
    labels: &[u32],
) -> Tensor<Rank0, E, D, T> {
    let count = labels.iter().filter(|&&l| l != 0).count();
    masked_rows_ce_over(logits, labels, count)
}

/// [`masked_rows_ce`] with the sum of the labelled rows' cross entropies divided by `count`
/// instead of by their own number: the part of a larger batch's mean that these rows carry,
/// when that batch has `count` labelled rows in all (gradient accumulation over micro-batches:
/// the parts of the micro-batches add up to the whole batch's mean). `count = 0` gives 0.
///
/// # Panics
/// If `labels.len() != N` or a label is ≥ V.
pub fn masked_rows_ce_over<const V: usize, E: Float, D: Device<E>, T: Tape<E, D>>(
    logits: Tensor<(usize, Const<V>), E, D, T>,
    labels: &[u32],
    count: usize,
) -> Tensor<Rank0, E, D, T> {
    let n = logits.shape().0;
    assert_eq!(labels.len(), n, "masked_rows_ce: need one label per row");
    assert!(
        labels.iter().all(|&l| (l as usize) < V),
        "masked_rows_ce: label out of the vocabulary (V = {V})"
    );
    let (rows, row_w) = label_rows(labels, count);
    let logits = match crate::fast::cross_entropy(logits, &rows, &row_w) {
        Ok(loss) => return loss,
        Err(logits) => logits,
    };
    let dev = logits.device().clone();
    let weights: Vec<E> = row_w
        .iter()
        .map(|&w| E::from_f64(0.0 - w).unwrap())
        .collect();
    let weights = dev.tensor_from_vec(weights, (n,));
    let idx = dev.tensor_from_vec(rows, (n,));
    let log_p = logits.log_softmax::<Axis<1>>(); // [N, V], contiguous input
    let picked = log_p.select(idx); // [N]: log p(label) per row
    (picked * weights).sum()
}
