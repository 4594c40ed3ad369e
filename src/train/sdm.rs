//! The SDM recipe (`gadms pretrain --objective sdm`): the two CLIP towers trained with the SDM
//! loss alone (docs/method.md §5.1) on the clean captions. No caption masking, no GASS, no
//! decoder.

use super::accum::{Cached, global, micro_size, splice};
use super::optim::{Adam, Group, adam_config};
use super::recipe::{Recipe, StepOut};
use super::run_dir::{self, LAST_FILE};
use crate::dist::grads::all_reduce_grads;
use crate::preset::Dev;
use anyhow::{Result, bail};
use dfdx::nn::tensor_collection::TensorCollection;
use dfdx::nn::{BuildModule, ZeroGrads};
use dfdx::prelude::*;
use gadms_data::TokenIds;
use gadms_data::loader::Batch;
use gadms_nn::loss::{SDM_EPS, SDM_LOGIT_SCALE, sdm_loss};
use gadms_nn::{
    Clip, ClipInference, HasClipSpec, TextTower, Tiny, VisionTower, cls_token,
    text_features_trimmed,
};
use std::path::{Path, PathBuf};

/// The CLIP model of the default (`Tiny`) preset.
pub type Model<D = Dev> = Tiny<f32, D>;

/// CLIP towers that have an SDM training loss.
pub trait SdmLoss<D: Device<f32>>:
    ClipInference<f32, D> + HasClipSpec + BuildModule<D, f32> + TensorCollection<f32, D> + 'static
{
    /// The SDM loss on a batch: `pixels` are `B × [3, H, W]` CLIP-normalised images (H×W the
    /// preset's), `rows` the paired captions, `pids` their identities. The image tape carries
    /// `grads` (from `alloc_grads()`); the text tape is merged into it.
    ///
    /// # Panics
    /// If `pixels.len() != B·3·H·W`.
    fn sdm_loss(
        &self,
        pixels: Vec<f32>,
        rows: &[TokenIds],
        pids: &[usize],
        grads: Gradients<f32, D>,
    ) -> Tensor<Rank0, f32, D, OwnedTape<f32, D>>;

    /// Pass 1 of gradient accumulation ([`super::accum`]): the image and text features of a
    /// micro-batch (`pixels` `B × [3, H, W]`, `rows` its B captions) without a tape, as
    /// `(image [B·EMBED], text [B·EMBED])` row-major.
    fn sdm_features(&self, pixels: Vec<f32>, rows: &[TokenIds]) -> (Vec<f32>, Vec<f32>);

    /// Pass 2: the SDM loss of the whole batch of `N` pairs (`pids` [N], `cached` its pass-1
    /// features) with rows `at..at + B` replaced by the live features of the micro-batch
    /// `pixels`, `rows` ([`super::accum::splice`]); the image tape carries `grads`.
    fn sdm_loss_spliced(
        &self,
        pixels: Vec<f32>,
        rows: &[TokenIds],
        pids: &[usize],
        cached: &Cached,
        at: usize,
        grads: Gradients<f32, D>,
    ) -> Tensor<Rank0, f32, D, OwnedTape<f32, D>>;
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
    D: Device<f32>,
> SdmLoss<D>
    for Clip<
        VisionTower<IMG_H, IMG_W, PATCH, PATCH_DIM, SEQ, VW, VH, VHD, VF, VL, EMBED, f32, D>,
        TextTower<VOCAB, CTX, TW, TH, THD, TF, TL, EMBED, f32, D>,
    >
where
    Self: BuildModule<D, f32> + ClipInference<f32, D> + HasClipSpec,
{
    fn sdm_loss(
        &self,
        pixels: Vec<f32>,
        rows: &[TokenIds],
        pids: &[usize],
        grads: Gradients<f32, D>,
    ) -> Tensor<Rank0, f32, D, OwnedTape<f32, D>> {
        let b = rows.len();
        let dev = self.text.text_projection.device().clone();
        let images = dev.tensor_from_vec(pixels, (b, Const::<3>, Const::<IMG_H>, Const::<IMG_W>));
        // The image tape carries the model's gradient buffers; the text tape is merged into it.
        let img = cls_token(self.visual.forward(images.traced(grads), None));
        let rows: Vec<[u32; CTX]> = rows.iter().map(ctx_row).collect();
        let txt = text_features_trimmed(&self.text, &dev, &rows, OwnedTape::default());
        sdm_loss(img, txt, pids, SDM_LOGIT_SCALE, SDM_EPS)
    }

    fn sdm_features(&self, pixels: Vec<f32>, rows: &[TokenIds]) -> (Vec<f32>, Vec<f32>) {
        let b = rows.len();
        let dev = self.text.text_projection.device().clone();
        let images = dev.tensor_from_vec(pixels, (b, Const::<3>, Const::<IMG_H>, Const::<IMG_W>));
        let img = cls_token(self.visual.forward(images, None));
        let rows: Vec<[u32; CTX]> = rows.iter().map(ctx_row).collect();
        let txt = text_features_trimmed(&self.text, &dev, &rows, NoneTape);
        (img.as_vec(), txt.as_vec())
    }

    fn sdm_loss_spliced(
        &self,
        pixels: Vec<f32>,
        rows: &[TokenIds],
        pids: &[usize],
        cached: &Cached,
        at: usize,
        grads: Gradients<f32, D>,
    ) -> Tensor<Rank0, f32, D, OwnedTape<f32, D>> {
        let b = rows.len();
        let dev = self.text.text_projection.device().clone();
        let images = dev.tensor_from_vec(pixels, (b, Const::<3>, Const::<IMG_H>, Const::<IMG_W>));
        let img = cls_token(self.visual.forward(images.traced(grads), None));
        let rows: Vec<[u32; CTX]> = rows.iter().map(ctx_row).collect();
        let txt = text_features_trimmed(&self.text, &dev, &rows, OwnedTape::default());
        let img = splice(&cached.image, img, at);
        let txt = splice(&cached.text, txt, at);
        sdm_loss(img, txt, pids, SDM_LOGIT_SCALE, SDM_EPS)
    }
}

/// A 77-token caption row as the model's `[u32; CTX]`.
///
/// # Panics
/// If the model's context is not 77 (every preset's is).
pub(crate) fn ctx_row<const CTX: usize>(r: &TokenIds) -> [u32; CTX] {
    r.as_slice()
        .try_into()
        .unwrap_or_else(|_| panic!("the model's text context is {CTX}, not 77"))
}

/// One SDM training step's worth of state: CLIP towers `C` (default Tiny), Adam
/// ([`super::optim::Adam`], PyTorch semantics, saveable for exact resume) and the gradient
/// buffers.
pub struct Trainer<D: Device<f32> = Dev, C: SdmLoss<D> = Model<D>> {
    /// The model.
    pub model: C,
    opt: Adam,
    lr: f64,
    grads: Option<Gradients<f32, D>>,
}

impl<D: Device<f32>> Trainer<D> {
    /// A randomly initialised Tiny model (from `dev`'s RNG) with a fresh optimizer.
    pub fn new(dev: &D, lr: f64) -> Self {
        Self::build(dev, lr)
    }
}

impl<D: Device<f32>, C: SdmLoss<D>> Trainer<D, C> {
    /// A randomly initialised model `C` (from `dev`'s RNG) with a fresh optimizer.
    pub fn build(dev: &D, lr: f64) -> Self {
        Self::from_model(C::build(dev), lr)
    }

    /// Trains `model` with a fresh optimizer.
    pub fn from_model(model: C, lr: f64) -> Self {
        let grads = Some(model.alloc_grads());
        Trainer {
            model,
            opt: Adam::new(adam_config()),
            lr,
            grads,
        }
    }

    /// Sets the learning rate of the next steps.
    pub fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    /// The current learning rate.
    pub fn lr(&self) -> f64 {
        self.lr
    }

    /// The optimiser (step count, moments).
    pub fn optimizer(&self) -> &Adam {
        &self.opt
    }

    /// One step on a batch: `pixels` are `B × [3, H, W]` CLIP-normalised images (the
    /// preset's H×W: 64×32 for Tiny, 384×128 for ViT-B/16), `rows` the paired captions' ids,
    /// `pids` their identities. Returns the SDM loss before the update. A non-finite loss is
    /// returned without any update (the model and optimiser are unchanged); the caller stops
    /// the run.
    pub fn step(&mut self, pixels: Vec<f32>, rows: &[TokenIds], pids: &[usize]) -> Result<f32> {
        let b = rows.len();
        let v = C::SPEC.vision;
        let img_len = 3 * v.image_h * v.image_w;
        if pixels.len() != b * img_len || pids.len() != b || b == 0 {
            bail!(
                "step: batch sizes disagree ({} images of {}x{}, {b} captions, {} pids)",
                pixels.len() / img_len,
                v.image_h,
                v.image_w,
                pids.len()
            );
        }
        let mut grads = self
            .grads
            .take()
            .expect("gradients are returned after every step");
        self.model.zero_grads(&mut grads);
        let loss = self.model.sdm_loss(pixels, rows, pids, grads);
        let value = loss.as_vec()[0];
        let grads = loss.backward();
        if value.is_finite() {
            self.opt
                .update(&mut self.model, &grads, self.lr as f32, &|_| Group::PLAIN);
        }
        self.grads = Some(grads);
        Ok(value)
    }

    /// [`Trainer::step`] over `k` micro-batches of `B = N / k` pairs, exactly (to float
    /// rounding) the step on the whole batch of `N` ([`accum_grads`]). Returns the whole
    /// batch's SDM loss; nothing is updated when a micro-batch's loss is not finite.
    pub fn step_accum(
        &mut self,
        pixels: Vec<f32>,
        rows: &[TokenIds],
        pids: &[usize],
        k: usize,
    ) -> Result<f32> {
        micro_pixels::<D, C>(pixels.len(), rows.len(), pids.len(), k)?;
        let mut grads = self
            .grads
            .take()
            .expect("gradients are returned after every step");
        self.model.zero_grads(&mut grads);
        let (grads, value) = accum_grads(&self.model, &pixels, rows, pids, k, grads)?;
        if value.is_finite() {
            self.opt
                .update(&mut self.model, &grads, self.lr as f32, &|_| Group::PLAIN);
        }
        self.grads = Some(grads);
        Ok(value)
    }
}

/// The gradient of the SDM loss of the whole batch (`pixels` `N × [3, H, W]`, `rows` and
/// `pids` [N]) over `k` micro-batches of `B = N / k` ([`super::accum`]): the features of every
/// micro-batch without a tape, then per micro-batch the whole batch's loss with its rows live,
/// backward, adding into `grads` (from `alloc_grads()`, zeroed by the caller). Returns the
/// gradients and the loss (not finite if any micro-batch's is).
///
/// # Errors
/// On sizes that disagree or a batch that `k` does not divide (`grads` is then dropped).
pub fn accum_grads<D: Device<f32>, C: SdmLoss<D>>(
    model: &C,
    pixels: &[f32],
    rows: &[TokenIds],
    pids: &[usize],
    k: usize,
    grads: Gradients<f32, D>,
) -> Result<(Gradients<f32, D>, f32)> {
    let (b, img_len) = micro_pixels::<D, C>(pixels.len(), rows.len(), pids.len(), k)?;
    let px = |j: usize| pixels[j * b * img_len..(j + 1) * b * img_len].to_vec();
    let mut cached = Cached::default();
    for j in 0..k {
        let (img, txt) = model.sdm_features(px(j), &rows[j * b..(j + 1) * b]);
        cached.push(img, txt);
    }
    // Data-parallel: the features and identities of the whole global batch.
    let cached = global::features(cached);
    let local: Vec<u64> = pids.iter().map(|&p| p as u64).collect();
    let all: Vec<usize> = global::rows(&local).iter().map(|&p| p as usize).collect();
    let base = global::offset(rows.len());
    let (mut grads, mut value) = (grads, f32::NAN);
    for j in 0..k {
        let r = &rows[j * b..(j + 1) * b];
        let loss = model.sdm_loss_spliced(px(j), r, &all, &cached, base + j * b, grads);
        let l = loss.as_vec()[0];
        // Every micro-batch's loss is the whole batch's (its other rows are the cached ones).
        if j == 0 || !l.is_finite() {
            value = l;
        }
        grads = loss.backward();
    }
    all_reduce_grads(model, &mut grads)?;
    Ok((grads, global::agree_finite(value)))
}

/// The micro-batch size and the values of one image for `pixels` values, `n` captions and
/// `pids` identities split into `k` micro-batches.
fn micro_pixels<D: Device<f32>, C: SdmLoss<D>>(
    pixels: usize,
    n: usize,
    pids: usize,
    k: usize,
) -> Result<(usize, usize)> {
    let v = C::SPEC.vision;
    let img_len = 3 * v.image_h * v.image_w;
    if pixels != n * img_len || pids != n {
        bail!(
            "step: batch sizes disagree ({} images of {}x{}, {n} captions, {pids} pids)",
            pixels / img_len,
            v.image_h,
            v.image_w
        );
    }
    Ok((micro_size(n, k)?, img_len))
}

/// The SDM recipe: a [`Trainer`] whose SDM identities are the person ids, or with
/// `caption_pids` every caption its own identity (GA-DMS pretraining, docs/method.md §5.1).
pub struct SdmRecipe<D: Device<f32>, C: SdmLoss<D>> {
    /// The towers and their optimiser.
    pub trainer: Trainer<D, C>,
    /// SDM identities = sample indices (every caption its own pid).
    pub caption_pids: bool,
    /// Micro-batches per step (`--accum-steps`; 1: the plain step).
    pub accum_steps: usize,
}

impl<D: Device<f32>, C: SdmLoss<D>> Recipe<D> for SdmRecipe<D, C> {
    type Clip = C;

    fn clip(&self) -> &C {
        &self.trainer.model
    }

    fn step(&mut self, batch: Batch, lr: f64) -> Result<StepOut> {
        let ids = if self.caption_pids {
            &batch.sample_index
        } else {
            &batch.pids
        };
        let pids: Vec<usize> = ids.iter().map(|&p| p as usize).collect();
        self.trainer.set_lr(lr);
        let loss = match self.accum_steps {
            k if global::two_pass(k) => {
                self.trainer
                    .step_accum(batch.images, &batch.ids_clean, &pids, k)?
            }
            _ => self.trainer.step(batch.images, &batch.ids_clean, &pids)?,
        };
        Ok(StepOut {
            loss,
            parts: vec![("sdm", loss)],
            masked_tokens: None,
            grad_norm: None,
        })
    }

    fn save_checkpoint(&self, dir: &Path) -> Result<()> {
        run_dir::save_model_file(&self.trainer.model, vec![], &dir.join(run_dir::MODEL_FILE))?;
        self.trainer.opt.save(&dir.join(run_dir::ADAM_FILE))
    }

    fn load_checkpoint(&mut self, dir: &Path) -> Result<()> {
        run_dir::load_model_file(&mut self.trainer.model, &dir.join(run_dir::MODEL_FILE))?;
        self.trainer.opt = Adam::load(&dir.join(run_dir::ADAM_FILE))?;
        Ok(())
    }

    fn save_final(&self, out: &Path) -> Result<Vec<PathBuf>> {
        Ok(vec![run_dir::save_clip(
            &self.trainer.model,
            &out.join(LAST_FILE),
        )?])
    }
}
