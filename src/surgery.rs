//! Model surgery for experiments: [`gadms_nn::surgery`] (re-exported here), the run-time half
//! in [`gadms_ckpt::surgery`], plus what needs this crate's training pieces — attaching an MTP
//! decoder with a compile-time width check ([`attach_decoder`]), an SDM training step that
//! works on any CLIP type, frozen towers included ([`sdm_step`]), and the bodies of the
//! `examples/surgery_*.rs` experiments ([`experiments`]), kept here so that `cargo test`
//! runs them (`tests/surgery.rs`).

pub use gadms_nn::surgery::*;

use crate::preset::Dev;
use crate::train::optim::{Adam, Group};
use dfdx::prelude::*;
use gadms_data::loader::Batch;
use gadms_nn::GaDms;
use gadms_nn::loss::{SDM_EPS, SDM_LOGIT_SCALE};
use gadms_nn::text_features_trimmed;
use gadms_nn::{Clip, MtpDecoder, TextTower, VisionTower, cls_token, sdm_loss};

pub mod experiments;

/// GA-DMS model from a CLIP model and an MTP decoder (IRRA's cross-modal decoder reads the
/// projected tokens, so its width must be the joint width): checked at compile time,
/// `"surgery: the MTP decoder's width must equal the towers' joint embedding width (EMBED)"`,
/// and its vocabulary must be the text tower's. The result is the type
/// `train::gadms::train_step` trains (`GaDmsForward`). The check is
/// [`gadms_nn::surgery::check_decoder`].
#[allow(clippy::type_complexity)]
pub fn attach_decoder<
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
    const MW: usize,
    const MH: usize,
    const MHD: usize,
    const MF: usize,
    const ML: usize,
    const MV: usize,
    E: Dtype,
    D: Storage<E>,
>(
    clip: Clip<
        VisionTower<IMG_H, IMG_W, PATCH, PATCH_DIM, SEQ, VW, VH, VHD, VF, VL, EMBED, E, D>,
        TextTower<VOCAB, CTX, TW, TH, THD, TF, TL, EMBED, E, D>,
    >,
    mtp: MtpDecoder<MW, MH, MHD, MF, ML, MV, E, D>,
) -> GaDms<
    Clip<
        VisionTower<IMG_H, IMG_W, PATCH, PATCH_DIM, SEQ, VW, VH, VHD, VF, VL, EMBED, E, D>,
        TextTower<VOCAB, CTX, TW, TH, THD, TF, TL, EMBED, E, D>,
    >,
    MtpDecoder<MW, MH, MHD, MF, ML, MV, E, D>,
> {
    gadms_nn::surgery::check_decoder(&clip, &mtp);
    GaDms { clip, mtp }
}

/// One SDM step (IRRA's `compute_sdm`, logit scale 50, as `gadms pretrain`'s default objective)
/// on `batch` for any CLIP model whose towers may be [`Frozen`]: image CLS features [B, EMBED]
/// and text EOS features [B, EMBED] (the text tower runs on the first `max EOS + 1` positions,
/// [`text_features_trimmed`]), backward, then [`Adam::update`] with one parameter group at
/// learning rate `lr` and the per-name multipliers of `rule` (`&|_| Group::PLAIN` for one
/// group). Frozen tensors get no gradient buffer and no update. Returns the loss
/// before the update.
///
/// # Panics
/// If the batch's images are not `IMG_H × IMG_W` or it is empty.
#[allow(clippy::type_complexity)]
pub fn sdm_step<
    V: Tower<
        Plain = VisionTower<
            IMG_H,
            IMG_W,
            PATCH,
            PATCH_DIM,
            SEQ,
            VW,
            VH,
            VHD,
            VF,
            VL,
            EMBED,
            f32,
            Dev,
        >,
    >,
    T: Tower<Plain = TextTower<VOCAB, CTX, TW, TH, THD, TF, TL, EMBED, f32, Dev>>,
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
>(
    model: &mut Clip<V, T>,
    opt: &mut Adam,
    batch: &Batch,
    lr: f32,
    rule: &dyn Fn(&str) -> Group,
) -> f32
where
    Clip<V, T>: TensorCollection<f32, Dev>,
{
    let b = batch.len();
    assert!(b > 0, "sdm_step: empty batch");
    assert_eq!(
        (batch.height, batch.width),
        (IMG_H, IMG_W),
        "sdm_step: the model takes {IMG_H}x{IMG_W} images"
    );
    let dev = model.visual.plain().proj.device().clone();
    let grads = model.alloc_grads();
    let images = dev.tensor_from_vec(
        batch.images.clone(),
        (b, Const::<3>, Const::<IMG_H>, Const::<IMG_W>),
    );
    let img = cls_token(model.visual.plain().forward(images.traced(grads), None));
    let rows: Vec<[u32; CTX]> = batch
        .ids_clean
        .iter()
        .map(|r| {
            r.as_slice()
                .try_into()
                .unwrap_or_else(|_| panic!("sdm_step: the model's context is {CTX}, not 77"))
        })
        .collect();
    let txt = text_features_trimmed(model.text.plain(), &dev, &rows, OwnedTape::default());
    let pids: Vec<usize> = batch.pids.iter().map(|&p| p as usize).collect();
    let loss = sdm_loss(img, txt, &pids, SDM_LOGIT_SCALE, SDM_EPS);
    let value = loss.array();
    let grads = loss.backward();
    opt.update(model, &grads, lr, rule);
    value
}
