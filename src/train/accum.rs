//! Gradient accumulation (`--accum-steps K`) that is exact for the contrastive SDM loss
//! (docs/architecture.md, "Gradient accumulation").
//!
//! One optimiser step takes a batch of `N = B·K` pairs from the loader (the batch a run with
//! `--batch-size B·K` takes) and splits it into K micro-batches of B rows ([`micro_batches`]).
//! SDM compares every caption with every image of the batch, so the sum of K micro-batch SDM
//! losses is not the batch's loss. As open_clip's `--accum-freq` (`src/training/train.py`,
//! `train_one_epoch`, the `accum_freq > 1` branch), a step runs in two passes:
//!
//! 1. every micro-batch is encoded without a tape; its features are cached
//!    ([`Cached`]: image and text features of the whole batch, `[N, EMBED]` each);
//! 2. every micro-batch is encoded again with the tape, and the loss of the **whole** batch is
//!    computed on the cached features with the micro-batch's own rows replaced by its live
//!    (taped) features ([`splice`]). Its gradient reaches the parameters only through these
//!    rows, so the sum over the K micro-batches of the parameter gradients is the gradient of
//!    the whole-batch loss (the chain rule summed over the rows of the batch).
//!
//! Losses that are means over the batch (MTP / MLM over the masked tokens, ID over the pairs)
//! are per row: each micro-batch adds its rows' terms divided by the whole batch's count.
//! Gradients accumulate in one `Gradients` store (every backward adds into it); the
//! optimiser steps once, after the K-th micro-batch, and not at all when a loss is not finite.

use anyhow::{Result, bail};
use dfdx::prelude::*;
use gadms_data::loader::Batch;

/// Features of the whole batch computed without a tape (pass 1), row-major on the host:
/// `image` and `text` are `[N, EMBED]` (`N·EMBED` values each), rows in batch order.
#[derive(Clone, Debug, Default)]
pub struct Cached {
    /// Image features (the projected CLS token).
    pub image: Vec<f32>,
    /// Text features (the projected EOS token).
    pub text: Vec<f32>,
}

impl Cached {
    /// Appends the features of the next micro-batch (`[B, EMBED]` each).
    pub fn push(&mut self, image: Vec<f32>, text: Vec<f32>) {
        self.image.extend(image);
        self.text.extend(text);
    }
}

/// What pass 2 needs of the whole batch (of every rank, in a data-parallel job).
pub struct Whole {
    /// Pass-1 features of every micro-batch, `[N, EMBED]` each.
    pub cached: Cached,
    /// SDM identities (fine-tuning: ID classes) of the whole batch, `[N]`.
    pub pids: Vec<usize>,
    /// Labelled tokens of the whole batch (the MTP / MLM mean's divisor).
    pub masked: usize,
}

impl Whole {
    /// The whole batch's features, identities and labelled-token count from this rank's
    /// pass-1 features `cached` and its part `batch` ([`global`]; in one process, `batch` is
    /// the whole batch).
    pub fn gather(cached: Cached, batch: &Batch) -> Self {
        Whole {
            cached: global::features(cached),
            pids: global::rows(&batch.pids)
                .iter()
                .map(|&p| p as usize)
                .collect(),
            masked: global::count(labelled(&batch.info_labels)),
        }
    }
}

/// The default `--accum-steps` (no accumulation); also what a run recorded before the flag
/// existed resumes with.
pub fn default_steps() -> usize {
    1
}

/// Checks `--batch-size` and `--accum-steps`; returns the loader's batch `N = B·K`.
///
/// # Errors
/// `K = 0`, `B = 0`, `N < 2` (SDM contrasts the pairs of a batch) or `B·K` overflowing.
pub fn loader_batch(batch_size: usize, steps: usize) -> Result<usize> {
    if steps == 0 {
        bail!("--accum-steps must be at least 1 (1: no accumulation)");
    }
    let Some(n) = batch_size.checked_mul(steps) else {
        bail!("--batch-size {batch_size} x --accum-steps {steps} pairs per step is too large");
    };
    if steps == 1 && n < 2 {
        bail!("--batch-size must be at least 2 (SDM contrasts the pairs of a batch)");
    }
    if batch_size == 0 || n < 2 {
        bail!(
            "--batch-size {batch_size} x --accum-steps {steps}: a step needs at least 2 pairs \
             (SDM contrasts the pairs of a batch) and a micro-batch at least 1"
        );
    }
    Ok(n)
}

/// The micro-batch size `N / k` of a batch of `n` pairs.
///
/// # Errors
/// If `k` is 0 or does not divide `n` (the loader's batch is `B·K`, so it always does).
pub fn micro_size(n: usize, k: usize) -> Result<usize> {
    if k == 0 || n == 0 || !n.is_multiple_of(k) {
        bail!("gradient accumulation: a batch of {n} pairs does not split into {k} micro-batches");
    }
    Ok(n / k)
}

/// The `k` micro-batches of `batch`, in order: micro-batch `j` holds rows `j·B..(j+1)·B`
/// (`B = N / k`) of every per-sample field (images `[B, 3, H, W]`, captions, masks, ids);
/// fields the loader left empty (masked copies without masking) stay empty.
///
/// # Errors
/// As [`micro_size`].
pub fn micro_batches(batch: &Batch, k: usize) -> Result<Vec<Batch>> {
    let b = micro_size(batch.len(), k)?;
    let px = batch.images.len() / batch.len();
    Ok((0..k)
        .map(|j| Batch {
            epoch: batch.epoch,
            step: batch.step,
            height: batch.height,
            width: batch.width,
            images: batch.images[j * b * px..(j + 1) * b * px].to_vec(),
            ids_clean: rows(&batch.ids_clean, j, b),
            ids_noise: rows(&batch.ids_noise, j, b),
            ids_info: rows(&batch.ids_info, j, b),
            info_labels: rows(&batch.info_labels, j, b),
            pids: rows(&batch.pids, j, b),
            image_ids: rows(&batch.image_ids, j, b),
            caption_idx: rows(&batch.caption_idx, j, b),
            sample_index: rows(&batch.sample_index, j, b),
        })
        .collect())
}

/// Rows `j·b..(j+1)·b` of `v`, or nothing when `v` is empty.
fn rows<T: Clone>(v: &[T], j: usize, b: usize) -> Vec<T> {
    if v.is_empty() {
        Vec::new()
    } else {
        v[j * b..(j + 1) * b].to_vec()
    }
}

/// Labelled (masked) tokens of caption label rows: the whole batch's count that the MTP / MLM
/// mean divides by.
pub fn labelled<const S: usize>(labels: &[[u32; S]]) -> usize {
    labels.iter().flatten().filter(|&&l| l != 0).count()
}

/// The whole batch's features `[N, EMBED]` with rows `at..at + B` the live features `live`
/// `[B, EMBED]` (with their tape) and every other row the cached `cached` (`N·EMBED` values,
/// constants). The rows are concatenated along axis 0 (dfdx `concat_along`, whose backward
/// adds), so the gradient reaches `live` and, through its tape, the parameters; the constant
/// rows' gradients go nowhere.
///
/// # Panics
/// If `cached` is not a whole number of rows or the live rows do not fit inside it.
pub fn splice<const EMBED: usize, D: Device<f32>>(
    cached: &[f32],
    live: Tensor<(usize, Const<EMBED>), f32, D, OwnedTape<f32, D>>,
    at: usize,
) -> Tensor<(usize, Const<EMBED>), f32, D, OwnedTape<f32, D>> {
    assert_eq!(cached.len() % EMBED, 0, "splice: cached rows of {EMBED}");
    let (n, b) = (cached.len() / EMBED, live.shape().0);
    assert!(at + b <= n, "splice: rows {at}..{} outside {n}", at + b);
    let dev = live.device().clone();
    let constant = |lo: usize, hi: usize| {
        let x = cached[lo * EMBED..hi * EMBED].to_vec();
        dev.tensor_from_vec(x, (hi - lo, Const::<EMBED>))
            .retaped::<OwnedTape<f32, D>>()
    };
    let mut x = live;
    if at > 0 {
        x = (constant(0, at), x).concat_along(Axis::<0>);
    }
    if at + b < n {
        x = (x, constant(at + b, n)).concat_along(Axis::<0>);
    }
    x
}

/// The data-parallel side of a step ([`crate::dist`]): a rank holds `N_r` rows of the global
/// batch of `N = N_r · ranks` rows, rows `rank·N_r..(rank+1)·N_r`. In a one-process world
/// every function here returns its input.
pub mod global {
    use super::Cached;
    use crate::dist::{grads::timed, world};

    /// The first global row of this rank's `local` rows.
    pub fn offset(local: usize) -> usize {
        world().rank() * local
    }

    /// The whole global batch's features from every rank's pass-1 cache.
    pub fn features(local: Cached) -> Cached {
        if world().size() == 1 {
            return local;
        }
        timed(|| Cached {
            image: world().all_gather_f32(&local.image),
            text: world().all_gather_f32(&local.text),
        })
    }

    /// Every rank's `local` values in global row order (ids, sample indices).
    pub fn rows(local: &[u64]) -> Vec<u64> {
        timed(|| world().all_gather_u64(local))
    }

    /// Every rank's `local` f64 values in global row order (GASS maps).
    pub fn rows_f64(local: &[f64]) -> Vec<f64> {
        timed(|| world().all_gather_f64(local))
    }

    /// The sum over the ranks of `x` (counts).
    pub fn count(x: usize) -> usize {
        let mut v = [x as f64];
        timed(|| world().all_reduce_f64(&mut v));
        v[0] as usize
    }

    /// The sum over the ranks of `x` (a rank's share of a mean).
    pub fn sum(x: f32) -> f32 {
        let mut v = [x as f64];
        timed(|| world().all_reduce_f64(&mut v));
        v[0] as f32
    }

    /// The sum over the ranks of `v`, in place (host gradients, e.g. the ID classifier's).
    pub fn sum_in_place(v: &mut [f32]) {
        timed(|| world().all_reduce_f32(v));
    }

    /// `x` where every rank's value is finite, else NaN on every rank (so every rank makes
    /// the same apply-or-stop decision).
    pub fn agree_finite(x: f32) -> f32 {
        let bad = if x.is_finite() { 0.0 } else { 1.0 };
        let mut v = [bad];
        timed(|| world().all_reduce_f64(&mut v));
        if v[0] == 0.0 { x } else { f32::NAN }
    }

    /// True when a step must take the two-pass path (accumulation or several ranks).
    pub fn two_pass(k: usize) -> bool {
        k > 1 || world().size() > 1
    }
}
