//! The IRRA fine-tuning step over K micro-batches (`gadms finetune --accum-steps K`), exactly
//! (to float rounding) [`super::irra::IrraStep::finetune_step`] on the whole batch of
//! `N = B·K` pairs ([`super::accum`] for the scheme; docs/architecture.md, "Gradient
//! accumulation").
//!
//! ```text
//! pass 1, per micro-batch j (no tape):
//!   v_j = visual(images_j)[:, 0],  t_j = eos(text(ids_clean_j))     [B, EMBED] → cached rows
//! pass 2, per micro-batch j (taped, one gradient store):
//!   L_sdm   = SDM(cached v with rows j live, cached t with rows j live, pids [N])
//!   L_id,j  = (B/N)·L_id(v_j, t_j)             (the whole batch's mean over its N pairs)
//!   L_mlm,j = Σ_{masked tokens of j} CE / (masked tokens of the whole batch)
//!   backward(L_sdm + w_id·L_id,j + w_mlm·L_mlm,j);  classifier gradients += (B/N)·dW_j, db_j
//! one Adam update of the model and the classifier (IRRA groups)
//! ```

use super::accum::{Cached, Whole, global, micro_batches, splice};
use super::gadms::mtp_loss;
use super::irra::{FtReport, FtWeights, IrraStep, update};
use super::optim::Adam;
use super::sdm::ctx_row;
use crate::dist::grads::all_reduce_grads;
use anyhow::Result;
use dfdx::prelude::*;
use gadms_data::loader::Batch;
use gadms_nn::loss::{SDM_EPS, SDM_LOGIT_SCALE, sdm_loss};
use gadms_nn::{
    Clip, GaDms, IdClassifier, IdGrads, MtpDecoder, TextTower, VisionTower, cls_token, tape_with,
    text_features_trimmed,
};

/// One micro-batch's pass 2: its loss (with the tape), its loss terms and the classifier's
/// gradients of its ID share.
pub struct MicroLoss<D: Storage<f32>> {
    /// `L_sdm + w_id·L_id,j + w_mlm·L_mlm,j`.
    pub loss: Tensor<Rank0, f32, D, OwnedTape<f32, D>>,
    /// `(L_sdm, L_id,j, L_mlm,j)` (`L_sdm` of the whole batch).
    pub parts: (f32, f32, f32),
    /// Labelled MLM tokens of the micro-batch.
    pub masked: usize,
    /// dL_id,j / d(W, b), host.
    pub id_grads: IdGrads,
}

/// A model whose fine-tuning step can run over micro-batches (both presets).
pub trait IrraAccum<D: Device<f32>>: IrraStep<D> {
    /// Pass 1 on `micro` (no tape): image CLS and clean-caption EOS features
    /// `(image [B·EMBED], text [B·EMBED])`.
    fn micro_features(&self, micro: &Batch) -> (Vec<f32>, Vec<f32>);

    /// Pass 2 on `micro`, rows `at..at + B` of the whole batch (module docs), with the
    /// gradient store `grads` on its tape.
    ///
    /// # Panics
    /// As [`IrraStep::finetune_step`].
    fn micro_loss(
        &self,
        classifier: &<Self as IrraStep<D>>::Classifier,
        micro: &Batch,
        w: FtWeights,
        whole: &Whole,
        at: usize,
        grads: Gradients<f32, D>,
    ) -> MicroLoss<D>;
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
> IrraAccum<D>
    for GaDms<
        Clip<
            VisionTower<IMG_H, IMG_W, PATCH, PATCH_DIM, SEQ, VW, VH, VHD, VF, VL, EMBED, f32, D>,
            TextTower<VOCAB, CTX, TW, TH, THD, TF, TL, EMBED, f32, D>,
        >,
        MtpDecoder<EMBED, MH, MHD, MF, ML, VOCAB, f32, D>,
    >
{
    fn micro_features(&self, micro: &Batch) -> (Vec<f32>, Vec<f32>) {
        let b = micro.len();
        let text = &self.clip.text;
        let dev = text.text_projection.device().clone();
        let shape = (b, Const::<3>, Const::<IMG_H>, Const::<IMG_W>);
        let images = dev.tensor_from_vec(micro.images.clone(), shape);
        let v = cls_token(self.clip.visual.forward(images, None));
        let clean: Vec<[u32; CTX]> = micro.ids_clean.iter().map(ctx_row).collect();
        let t = text_features_trimmed(text, &dev, &clean, NoneTape);
        (v.as_vec(), t.as_vec())
    }

    fn micro_loss(
        &self,
        classifier: &IdClassifier<EMBED, f32, D>,
        micro: &Batch,
        w: FtWeights,
        whole: &Whole,
        at: usize,
        grads: Gradients<f32, D>,
    ) -> MicroLoss<D> {
        let b = micro.len();
        assert_eq!(micro.ids_info.len(), b, "finetune_step: no MLM captions");
        let text = &self.clip.text;
        let dev = text.text_projection.device().clone();
        let shape = (b, Const::<3>, Const::<IMG_H>, Const::<IMG_W>);
        let images = dev.tensor_from_vec(micro.images.clone(), shape);
        // As finetune_step: the tokens carry the store into MLM, the CLS row feeds SDM and ID.
        let tokens = self.clip.visual.forward(images.traced(grads), None);
        let v = cls_token(tokens.with_empty_tape());
        let clean: Vec<[u32; CTX]> = micro.ids_clean.iter().map(ctx_row).collect();
        let t = text_features_trimmed(text, &dev, &clean, tape_with(&dev, Gradients::leaky()));
        let l_sdm = sdm_loss(
            splice(&whole.cached.image, v.with_empty_tape(), at),
            splice(&whole.cached.text, t.with_empty_tape(), at),
            &whole.pids,
            SDM_LOGIT_SCALE,
            SDM_EPS,
        );
        // The micro-batch's share B/N of the whole batch's ID mean.
        let share = b as f32 / whole.pids.len() as f32;
        let (l_id, g) = classifier.loss(v, t, &whole.pids[at..at + b]);
        let l_id = l_id * share;
        let (l_mlm, masked) = mtp_loss(text, &self.mtp, micro, tokens, Some(whole.masked));
        let parts = (l_sdm.as_vec()[0], l_id.as_vec()[0], l_mlm.as_vec()[0]);
        let loss = l_sdm + l_id * (w.id as f32) + l_mlm * (w.mlm as f32);
        let scale = |x: Vec<f32>| x.into_iter().map(|x| x * share).collect();
        MicroLoss {
            loss,
            parts,
            masked,
            id_grads: IdGrads {
                weight: scale(g.weight),
                bias: scale(g.bias),
            },
        }
    }
}

/// The whole batch's gradients over `k` micro-batches of `batch` (module docs): the model's
/// (in a store from `alloc_grads()`), the classifier's (host, of `L_id` unweighted) and the
/// report of the losses (not applied, no gradient norm).
///
/// # Errors
/// If `k` does not divide the batch.
///
/// # Panics
/// As [`IrraStep::finetune_step`].
pub fn accum_grads<D: Device<f32>, M: IrraAccum<D>>(
    model: &M,
    classifier: &M::Classifier,
    batch: &Batch,
    w: FtWeights,
    k: usize,
) -> Result<(Gradients<f32, D>, IdGrads, FtReport)> {
    let micro = micro_batches(batch, k)?;
    let mut cached = Cached::default();
    for m in &micro {
        let (v, t) = model.micro_features(m);
        cached.push(v, t);
    }
    let whole = Whole::gather(cached, batch);
    let base = global::offset(batch.len());
    let mut grads = model.alloc_grads();
    let mut id = IdGrads {
        weight: Vec::new(),
        bias: Vec::new(),
    };
    let mut r = FtReport {
        loss: 0.0,
        loss_sdm: f32::NAN,
        loss_id: 0.0,
        loss_mlm: 0.0,
        masked_tokens: 0,
        grad_norm: 0.0,
        applied: false,
    };
    for (j, m) in micro.iter().enumerate() {
        let out = model.micro_loss(classifier, m, w, &whole, base + j * m.len(), grads);
        grads = out.loss.backward();
        let (s, i, l) = out.parts;
        // Every micro-batch's L_sdm is the whole batch's; a non-finite one is kept.
        if j == 0 || !s.is_finite() {
            r.loss_sdm = s;
        }
        r.loss_id += i;
        r.loss_mlm += l;
        r.masked_tokens += out.masked;
        add(&mut id.weight, &out.id_grads.weight);
        add(&mut id.bias, &out.id_grads.bias);
    }
    all_reduce_grads(model, &mut grads)?;
    global::sum_in_place(&mut id.weight);
    global::sum_in_place(&mut id.bias);
    r.loss_sdm = global::agree_finite(r.loss_sdm);
    r.loss_id = global::sum(r.loss_id);
    r.loss_mlm = global::sum(r.loss_mlm);
    r.masked_tokens = global::count(r.masked_tokens);
    r.loss = r.loss_sdm + w.id as f32 * r.loss_id + w.mlm as f32 * r.loss_mlm;
    Ok((grads, id, r))
}

/// [`IrraStep::finetune_step`] over `k` micro-batches of `batch` ([`accum_grads`]), then one
/// update of the model and the classifier. A non-finite loss changes nothing (`applied`
/// false).
///
/// # Errors
/// If `k` does not divide the batch.
///
/// # Panics
/// As [`IrraStep::finetune_step`].
pub fn finetune_step_accum<D: Device<f32>, M: IrraAccum<D>>(
    model: &mut M,
    classifier: &mut M::Classifier,
    opt: &mut Adam,
    batch: &Batch,
    w: FtWeights,
    lr: f32,
    k: usize,
) -> Result<FtReport> {
    let (grads, id, mut r) = accum_grads(model, classifier, batch, w, k)?;
    if r.loss.is_finite() {
        r.grad_norm = update(model, classifier, opt, &grads, &id, w.id as f32, lr);
        r.applied = true;
    }
    Ok(r)
}

/// `acc += x` (an empty `acc` becomes `x`).
fn add(acc: &mut Vec<f32>, x: &[f32]) {
    if acc.is_empty() {
        acc.extend_from_slice(x);
    } else {
        acc.iter_mut().zip(x).for_each(|(a, b)| *a += b);
    }
}
