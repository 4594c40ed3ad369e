//! The model types of one preset, for the training loops of `pretrain` and `finetune`.
//!
//! A training command picks its preset at run time and calls a loop monomorphised for it:
//! `run_on::<D, M>` with `D` the device ([`crate::device::BuildDevice`]) and `M` the full
//! GA-DMS model type of the preset, [`GaDmsTiny`] or [`GaDmsViTB16`] (CLIP plus the matching
//! MTP decoder, `MtpTiny` / `MtpViTB16`), chosen once by [`with_train_model!`]. [`TrainModel`]
//! gives the loops what depends on the compile-time sizes:
//!
//! | item | Tiny | ViT-B/16 |
//! |---|---|---|
//! | `M::Clip` (image `[3, H, W]`) | `Tiny` (`[3, 64, 32]`) | `ViTB16` (`[3, 384, 128]`) |
//! | `M::Mtp` | `MtpTiny` (32 wide) | `MtpViTB16` (512 wide) |
//! | `M::Classifier` | `IdClassifier<32>` | `IdClassifier<512>` |
//!
//! It is implemented once, for every `GaDms<Clip<VisionTower, TextTower>, MtpDecoder>` whose
//! decoder width is the joint embedding width, so both presets run exactly the same code.

use crate::finetune::{FtReport, FtWeights, irra_group};
use crate::gadms_step::{GaDms, GaDmsForward};
use crate::optim::Adam;
use crate::pretrain::text_features_trimmed;
use dfdx::nn::BuildModule;
use dfdx::nn::tensor_collection::TensorCollection;
use dfdx::prelude::*;
use gadms_data::TokenIds;
use gadms_data::loader::Batch;
use gadms_nn::loss::{SDM_EPS, SDM_LOGIT_SCALE, masked_rows_ce, sdm_loss};
use gadms_nn::{
    Clip, ClipInference, HasClipSpec, IdClassifier, MtpDecoder, TextInput, TextTower, VisionTower,
    cls_token, tape_with,
};

/// The GA-DMS model type of a preset (CLIP + MTP decoder), with the CLIP and ID-classifier
/// types that go with it and the two training steps that need the compile-time sizes.
pub trait TrainModel<D: Device<f32>>:
    GaDmsForward<f32, D> + BuildModule<D, f32> + TensorCollection<f32, D> + 'static
{
    /// The CLIP towers (what `--objective sdm` trains, evaluates and saves).
    type Clip: ClipInference<f32, D>
        + HasClipSpec
        + BuildModule<D, f32>
        + TensorCollection<f32, D>
        + 'static;
    /// The MTP decoder.
    type Mtp: TensorCollection<f32, D> + 'static;
    /// The ID classifier over the joint embedding `[C, EMBED]`.
    type Classifier: IdHead<D>;

    /// The CLIP part.
    fn clip(&self) -> &Self::Clip;

    /// Both parts, mutably (for `--init`).
    fn parts_mut(&mut self) -> (&mut Self::Clip, &mut Self::Mtp);

    /// The SDM loss of the CLIP towers on a batch (the `--objective sdm` step): `pixels` are
    /// `B × [3, H, W]` CLIP-normalised images (H×W the preset's), `rows` the paired captions,
    /// `pids` their identities. The image tape carries `grads` (from `alloc_grads()`); the
    /// text tape is merged into it.
    ///
    /// # Panics
    /// If `pixels.len() != B·3·H·W`.
    fn sdm_loss(
        clip: &Self::Clip,
        pixels: Vec<f32>,
        rows: &[TokenIds],
        pids: &[usize],
        grads: Gradients<f32, D>,
    ) -> Tensor<Rank0, f32, D, OwnedTape<f32, D>>;

    /// One IRRA fine-tuning step ([`crate::finetune::finetune_step`]).
    fn finetune_step(
        &mut self,
        classifier: &mut Self::Classifier,
        opt: &mut Adam,
        batch: &Batch,
        w: FtWeights,
        lr: f32,
    ) -> FtReport;
}

/// The ID classifier of a preset, behind a size-free interface (build, save, load).
pub trait IdHead<D: Device<f32>>: Sized {
    /// A fresh classifier over `classes` identities (IRRA's init from `dev`'s RNG).
    fn create(dev: &D, classes: usize) -> Self;
    /// Number of classes `C`.
    fn num_classes(&self) -> usize;
    /// Feature width `EMBED`.
    fn width(&self) -> usize;
    /// (`classifier.weight` [C·EMBED] row-major, `classifier.bias` [C]).
    fn to_vecs(&self) -> (Vec<f32>, Vec<f32>);
    /// Overwrites the weights; the lengths must be `C·EMBED` and `C`.
    fn copy_from_vecs(&mut self, weight: &[f32], bias: &[f32]);
}

impl<const EMBED: usize, D: Device<f32>> IdHead<D> for IdClassifier<EMBED, f32, D> {
    fn create(dev: &D, classes: usize) -> Self {
        IdClassifier::new(dev, classes)
    }
    fn num_classes(&self) -> usize {
        self.classes()
    }
    fn width(&self) -> usize {
        EMBED
    }
    fn to_vecs(&self) -> (Vec<f32>, Vec<f32>) {
        (self.weight.as_vec(), self.bias.as_vec())
    }
    fn copy_from_vecs(&mut self, weight: &[f32], bias: &[f32]) {
        self.weight.copy_from(weight);
        self.bias.copy_from(bias);
    }
}

/// Calls `$f::<$D, M>($args…)` with `M` the GA-DMS model type of `$preset` on device `$D`
/// ([`GaDmsTiny`] or [`GaDmsViTB16`], f32; a [`TrainModel`]).
///
/// [`GaDmsTiny`]: crate::gadms_step::GaDmsTiny
/// [`GaDmsViTB16`]: crate::gadms_step::GaDmsViTB16
#[macro_export]
macro_rules! with_train_model {
    ($preset:expr, $D:ty, $f:ident($($arg:expr),*)) => {
        match $preset {
            $crate::preset::Preset::Tiny => {
                $f::<$D, $crate::gadms_step::GaDmsTiny<f32, $D>>($($arg),*)
            }
            $crate::preset::Preset::VitB16 => {
                $f::<$D, $crate::gadms_step::GaDmsViTB16<f32, $D>>($($arg),*)
            }
        }
    };
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
> TrainModel<D>
    for GaDms<
        Clip<
            VisionTower<IMG_H, IMG_W, PATCH, PATCH_DIM, SEQ, VW, VH, VHD, VF, VL, EMBED, f32, D>,
            TextTower<VOCAB, CTX, TW, TH, THD, TF, TL, EMBED, f32, D>,
        >,
        MtpDecoder<EMBED, MH, MHD, MF, ML, VOCAB, f32, D>,
    >
where
    Self: BuildModule<D, f32>,
    Clip<
        VisionTower<IMG_H, IMG_W, PATCH, PATCH_DIM, SEQ, VW, VH, VHD, VF, VL, EMBED, f32, D>,
        TextTower<VOCAB, CTX, TW, TH, THD, TF, TL, EMBED, f32, D>,
    >: BuildModule<D, f32>,
{
    type Clip = Clip<
        VisionTower<IMG_H, IMG_W, PATCH, PATCH_DIM, SEQ, VW, VH, VHD, VF, VL, EMBED, f32, D>,
        TextTower<VOCAB, CTX, TW, TH, THD, TF, TL, EMBED, f32, D>,
    >;
    type Mtp = MtpDecoder<EMBED, MH, MHD, MF, ML, VOCAB, f32, D>;
    type Classifier = IdClassifier<EMBED, f32, D>;

    fn clip(&self) -> &Self::Clip {
        &self.clip
    }

    fn parts_mut(&mut self) -> (&mut Self::Clip, &mut Self::Mtp) {
        (&mut self.clip, &mut self.mtp)
    }

    fn sdm_loss(
        clip: &Self::Clip,
        pixels: Vec<f32>,
        rows: &[TokenIds],
        pids: &[usize],
        grads: Gradients<f32, D>,
    ) -> Tensor<Rank0, f32, D, OwnedTape<f32, D>> {
        let b = rows.len();
        let dev = clip.text.text_projection.device().clone();
        let images = dev.tensor_from_vec(pixels, (b, Const::<3>, Const::<IMG_H>, Const::<IMG_W>));
        // The image tape carries the model's gradient buffers; the text tape is merged into it.
        let img = cls_token(clip.visual.forward(images.traced(grads), None));
        let rows: Vec<[u32; CTX]> = rows.iter().map(|r| ctx_row(r)).collect();
        let txt = text_features_trimmed(&clip.text, &dev, &rows, OwnedTape::default());
        sdm_loss(img, txt, pids, SDM_LOGIT_SCALE, SDM_EPS)
    }

    fn finetune_step(
        &mut self,
        classifier: &mut Self::Classifier,
        opt: &mut Adam,
        batch: &Batch,
        w: FtWeights,
        lr: f32,
    ) -> FtReport {
        let b = batch.len();
        assert!(b > 0, "finetune_step: empty batch");
        assert_eq!(batch.ids_info.len(), b, "finetune_step: no MLM captions");
        let text = &self.clip.text;
        let dev = text.text_projection.device().clone();
        let pids: Vec<usize> = batch.pids.iter().map(|&p| p as usize).collect();
        let images = dev.tensor_from_vec(
            batch.images.clone(),
            (b, Const::<3>, Const::<IMG_H>, Const::<IMG_W>),
        );
        let grads = self.alloc_grads();
        // Image tokens carry the parameter gradients into the MLM branch; the CLS row (a
        // second use, empty tape, same id) feeds SDM and ID.
        let tokens = self.clip.visual.forward(images.traced(grads), None);
        let v = cls_token(tokens.with_empty_tape());
        let clean: Vec<[u32; CTX]> = batch.ids_clean.iter().map(|r| ctx_row(r)).collect();
        let t = text_features_trimmed(text, &dev, &clean, tape_with(&dev, Gradients::leaky()));
        let l_sdm = sdm_loss(
            v.with_empty_tape(),
            t.with_empty_tape(),
            &pids,
            SDM_LOGIT_SCALE,
            SDM_EPS,
        );
        let (l_id, id_grads) = classifier.loss(v, t, &pids);
        let info: Vec<[u32; CTX]> = batch.ids_info.iter().map(|r| ctx_row(r)).collect();
        let ids = TextInput::<CTX, D>::new(&dev, &info).ids;
        let labels: Vec<u32> = batch.info_labels.iter().flatten().copied().collect();
        let tm = text.forward(ids, tape_with(&dev, Gradients::leaky()), None);
        let (logits, targets) = self.mtp.forward_masked(tm, tokens, &labels);
        let masked = targets.iter().filter(|&&l| l != 0).count();
        let l_mlm = masked_rows_ce(logits, &targets);
        let (s, i, m) = (l_sdm.as_vec()[0], l_id.as_vec()[0], l_mlm.as_vec()[0]);
        let loss = l_sdm + l_id * (w.id as f32) + l_mlm * (w.mlm as f32);
        let total = loss.as_vec()[0];
        let mut report = FtReport {
            loss: total,
            loss_sdm: s,
            loss_id: i,
            loss_mlm: m,
            masked_tokens: masked,
            grad_norm: 0.0,
            applied: false,
        };
        if !total.is_finite() {
            return report;
        }
        let grads = loss.backward();
        let stats = opt.update(self, &grads, lr, &irra_group);
        let scale = w.id as f32;
        let mut p = classifier.weight.as_vec();
        let g: Vec<f32> = id_grads.weight.iter().map(|x| x * scale).collect();
        let name = "classifier.weight";
        opt.update_slice(name, &mut p, &g, lr, irra_group(name));
        classifier.weight.copy_from(&p);
        let mut p = classifier.bias.as_vec();
        let g: Vec<f32> = id_grads.bias.iter().map(|x| x * scale).collect();
        let name = "classifier.bias";
        opt.update_slice(name, &mut p, &g, lr, irra_group(name));
        classifier.bias.copy_from(&p);
        report.grad_norm = stats.grad_norm;
        report.applied = true;
        report
    }
}

/// A 77-token caption row as the model's `[u32; CTX]`.
///
/// # Panics
/// If the model's context is not 77 (every preset's is).
fn ctx_row<const CTX: usize>(r: &TokenIds) -> [u32; CTX] {
    r.as_slice()
        .try_into()
        .unwrap_or_else(|_| panic!("the model's text context is {CTX}, not 77"))
}
