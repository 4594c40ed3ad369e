//! The GA-DMS step over K micro-batches (`gadms pretrain --objective ga-dms --accum-steps K`),
//! exactly (to float rounding) the step of [`super::gadms::train_step`] on the whole batch of
//! `N = B·K` pairs ([`super::accum`] for the scheme; docs/architecture.md, "Gradient
//! accumulation").
//!
//! ```text
//! pass 1, per micro-batch j (no tape):
//!   cls_j   = visual(images_j)[:, 0]                 [B, EMBED]   → cached image rows
//!   t_j     = eos(text(ids_noise_j))  (trimmed)      [B, EMBED]   → cached text rows
//!   E_j     = GASS map of (ids_clean_j, cls_j)       [B, 77]      (before the batch min–max)
//! scores    = min–max of [E_1; …; E_K] over the whole N×77 batch (docs/method.md §3.2 C)
//! pass 2, per micro-batch j (taped, one gradient store):
//!   L_sdm   = SDM(cached cls with rows j live, cached t with rows j live, pids [N])
//!   L_mtp,j = Σ_{masked tokens of j} CE / (masked tokens of the whole batch)
//!   backward(L_sdm + β·L_mtp,j)
//! Σ_j gradients = ∇(L_sdm + β·L_mtp) of the whole batch; one Adam update
//! ```
//!
//! The tapes are those of [`super::gadms::GaDmsForward::forward_losses`]: the image tokens
//! carry the gradient store into MTP, the CLS row (empty tape, same id) goes to SDM, each text
//! pass starts from an empty leaky tape. The score table is written once, after the last
//! micro-batch, with the rows of the whole batch; a non-finite loss changes nothing.

use super::accum::{Cached, Whole, global, micro_batches, splice};
use super::gadms::{GaDmsForward, LossParts, StepConfig, StepReport, mtp_loss, rows};
use super::optim::{Adam, Group};
use crate::dist::grads::all_reduce_grads;
use anyhow::Result;
use dfdx::prelude::*;
use gadms_data::loader::Batch;
use gadms_data::scores::{SCORE_CTX, ScoreTable};
use gadms_nn::gass::{batch_min_max, gass_emap};
use gadms_nn::loss::{SDM_EPS, sdm_loss};
use gadms_nn::{
    Clip, GaDms, MtpDecoder, TextInput, TextTower, VisionTower, cls_token, tape_with,
    text_features_trimmed,
};

/// A GA-DMS model whose step can run over micro-batches. Implemented for every model that has
/// [`GaDmsForward`] (both presets).
pub trait GaDmsAccum<D: Device<f32>>: GaDmsForward<f32, D> {
    /// Pass 1 on the micro-batch `micro` (no tape): the image CLS and noise-masked text
    /// features `(image [B·EMBED], text [B·EMBED])` and, with `gass`, the GASS map `E`
    /// [B·77] of its clean captions before the batch min–max.
    ///
    /// # Panics
    /// As [`GaDmsForward::forward_losses`].
    fn micro_features(
        &self,
        micro: &Batch,
        cfg: &StepConfig,
        gass: bool,
    ) -> (Vec<f32>, Vec<f32>, Option<Vec<f64>>);

    /// Pass 2 on the micro-batch `micro`, rows `at..at + B` of the whole batch:
    /// `L_sdm + β·L_mtp,j` (module docs) with the gradient store `grads` on its tape. The
    /// parts are `L_sdm` of the whole batch, this micro-batch's share of `L_mtp` and its
    /// masked tokens.
    fn micro_loss(
        &self,
        micro: &Batch,
        cfg: &StepConfig,
        whole: &Whole,
        at: usize,
        grads: Gradients<f32, D>,
    ) -> (Tensor<Rank0, f32, D, OwnedTape<f32, D>>, LossParts);
}

impl<
    const IMG_H: usize,
    const IMG_W: usize,
    const PATCH: usize,
    const PATCH_DIM: usize,
    const SEQ: usize,
    const VW: usize,
    const VH: usize,
    const VHD: usize,
    const VF: usize,
    const VL: usize,
    const VOCAB: usize,
    const CTX: usize,
    const TW: usize,
    const TH: usize,
    const THD: usize,
    const TF: usize,
    const TL: usize,
    const EMBED: usize,
    const MH: usize,
    const MHD: usize,
    const MF: usize,
    const ML: usize,
    D: Device<f32>,
> GaDmsAccum<D>
    for GaDms<
        Clip<
            VisionTower<IMG_H, IMG_W, PATCH, PATCH_DIM, SEQ, VW, VH, VHD, VF, VL, EMBED, f32, D>,
            TextTower<VOCAB, CTX, TW, TH, THD, TF, TL, EMBED, f32, D>,
        >,
        MtpDecoder<EMBED, MH, MHD, MF, ML, VOCAB, f32, D>,
    >
{
    fn micro_features(
        &self,
        micro: &Batch,
        cfg: &StepConfig,
        gass: bool,
    ) -> (Vec<f32>, Vec<f32>, Option<Vec<f64>>) {
        let b = micro.len();
        let text = &self.clip.text;
        let dev = text.text_projection.device().clone();
        let shape = (b, Const::<3>, Const::<IMG_H>, Const::<IMG_W>);
        let images = dev.tensor_from_vec(micro.images.clone(), shape);
        let cls = cls_token(self.clip.visual.forward(images, None));
        let emap = gass.then(|| {
            let clean = TextInput::<CTX, D>::new(&dev, &rows::<CTX>("clean", &micro.ids_clean, b));
            gass_emap(text, cls.clone(), &clean, &cfg.gass)
                .unwrap_or_else(|e| panic!("train_step: {e}"))
        });
        let noise = rows::<CTX>("noise-masked", &micro.ids_noise, b);
        let t = text_features_trimmed(text, &dev, &noise, NoneTape);
        (cls.as_vec(), t.as_vec(), emap)
    }

    fn micro_loss(
        &self,
        micro: &Batch,
        cfg: &StepConfig,
        whole: &Whole,
        at: usize,
        grads: Gradients<f32, D>,
    ) -> (Tensor<Rank0, f32, D, OwnedTape<f32, D>>, LossParts) {
        let b = micro.len();
        let text = &self.clip.text;
        let dev = text.text_projection.device().clone();
        let shape = (b, Const::<3>, Const::<IMG_H>, Const::<IMG_W>);
        let images = dev.tensor_from_vec(micro.images.clone(), shape);
        let tokens = self.clip.visual.forward(images.traced(grads), None);
        // SDM of the whole batch, this micro-batch's rows live (§4.3, §5.1).
        let cls = splice(&whole.cached.image, cls_token(tokens.with_empty_tape()), at);
        let noise = rows::<CTX>("noise-masked", &micro.ids_noise, b);
        let t = text_features_trimmed(text, &dev, &noise, tape_with(&dev, Gradients::leaky()));
        let t = splice(&whole.cached.text, t, at);
        let l_sdm = sdm_loss(cls, t, &whole.pids, cfg.logit_scale, SDM_EPS);
        // This micro-batch's share of the whole batch's MTP mean (§4.3, §5.2).
        let (l_mtp, masked) = mtp_loss(text, &self.mtp, micro, tokens, Some(whole.masked));
        let (s, m) = (l_sdm.as_vec()[0], l_mtp.as_vec()[0]);
        let loss = l_sdm + l_mtp * cfg.beta as f32;
        let parts = LossParts {
            loss: s + m * cfg.beta as f32,
            sdm: s,
            mtp: m,
            masked_tokens: masked,
        };
        (loss, parts)
    }
}

/// The result of [`accum_forward`].
pub struct Accumulated<D: Storage<f32>> {
    /// The summed gradients of the K micro-batches (the whole batch's gradient).
    pub grads: Gradients<f32, D>,
    /// `L = L_sdm + β·L_mtp` of the whole batch and its parts.
    pub parts: LossParts,
    /// GASS scores of the whole batch, [N·77], when requested.
    pub scores: Option<Vec<f32>>,
    /// The score-table rows (sample indices) of the whole global batch, `[N]`.
    pub rows: Vec<u64>,
}

/// Both passes over the `k` micro-batches of `batch` (module docs): the whole batch's
/// gradient (in a store from `alloc_grads()`), loss parts and, with `gass`, GASS scores.
///
/// # Errors
/// If `k` does not divide the batch.
///
/// # Panics
/// As [`GaDmsForward::forward_losses`].
pub fn accum_forward<D: Device<f32>, M: GaDmsAccum<D>>(
    model: &M,
    batch: &Batch,
    cfg: &StepConfig,
    k: usize,
    gass: bool,
) -> Result<Accumulated<D>> {
    let micro = micro_batches(batch, k)?;
    let mut cached = Cached::default();
    let mut emap = Vec::new();
    for m in &micro {
        let (img, txt, e) = model.micro_features(m, cfg, gass);
        cached.push(img, txt);
        emap.extend(e.unwrap_or_default());
    }
    let whole = Whole::gather(cached, batch);
    let base = global::offset(batch.len());
    let mut grads = model.alloc_grads();
    let mut parts = LossParts {
        loss: 0.0,
        sdm: f32::NAN,
        mtp: 0.0,
        masked_tokens: 0,
    };
    for (j, m) in micro.iter().enumerate() {
        let (loss, p) = model.micro_loss(m, cfg, &whole, base + j * m.len(), grads);
        grads = loss.backward();
        // Every micro-batch's L_sdm is the whole batch's; a non-finite one is kept.
        if j == 0 || !p.sdm.is_finite() {
            parts.sdm = p.sdm;
        }
        parts.mtp += p.mtp;
        parts.masked_tokens += p.masked_tokens;
    }
    all_reduce_grads(model, &mut grads)?;
    parts.sdm = global::agree_finite(parts.sdm);
    parts.mtp = global::sum(parts.mtp);
    parts.masked_tokens = global::count(parts.masked_tokens);
    parts.loss = parts.sdm + cfg.beta as f32 * parts.mtp;
    // The batch min–max runs over the whole global batch's maps (§3.2 C), on every rank.
    let scores = gass.then(|| batch_min_max(&global::rows_f64(&emap)));
    Ok(Accumulated {
        grads,
        parts,
        scores,
        rows: global::rows(&batch.sample_index),
    })
}

/// [`super::gadms::train_step`] over `k` micro-batches of `batch` ([`accum_forward`]): GASS
/// scores of the whole batch into `scores`, the summed gradients, one Adam update. A
/// non-finite loss changes nothing (`applied` false).
///
/// # Errors
/// If `k` does not divide the batch.
///
/// # Panics
/// As [`super::gadms::train_step`].
pub fn train_step_accum<D: Device<f32>, M: GaDmsAccum<D>>(
    model: &mut M,
    opt: &mut Adam,
    batch: &Batch,
    scores: &ScoreTable,
    cfg: &StepConfig,
    lr: f32,
    k: usize,
) -> Result<StepReport> {
    let a = accum_forward(model, batch, cfg, k, true)?;
    let mut report = StepReport {
        loss: a.parts.loss,
        loss_sdm: a.parts.sdm,
        loss_mtp: a.parts.mtp,
        grad_norm: 0.0,
        masked_tokens: a.parts.masked_tokens,
        applied: false,
    };
    if !a.parts.loss.is_finite() {
        return Ok(report);
    }
    let s = a.scores.expect("GASS was requested");
    assert_eq!(
        s.len(),
        a.rows.len() * SCORE_CTX,
        "GASS context vs score table"
    );
    // Every rank writes the rows of the whole global batch: the tables stay identical.
    for (row, s) in a.rows.iter().zip(s.chunks_exact(SCORE_CTX)) {
        let s: &[f32; SCORE_CTX] = s.try_into().expect("a row of SCORE_CTX scores");
        scores.set(*row as usize, s);
    }
    let stats = opt.update(model, &a.grads, lr, &|_| Group::PLAIN);
    report.grad_norm = stats.grad_norm;
    report.applied = true;
    Ok(report)
}
